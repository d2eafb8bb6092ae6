// Text views of a typed Config for operators: the running config re-emitted as TOML with every
// secret redacted (AdminService.GetConfig), and a readable diff between two configs by name
// (AdminService.ApplyConfig). Neither ever contains a provider key, a header value or a user
// token. Both are derived from the key tables in common/config/schema.h. Pure functions; any
// thread.
#pragma once

#include <string>
#include <vector>

#include "common/config/config.h"

namespace berry::admin {

// The config as TOML (config::EmitToml, redacted) under a comment line. It loads back, with no
// warnings, into an equal config except for secrets and keys that have no effect: provider
// `api_key` and every `headers` value read "<redacted>", each user's `token` reads
// "<redacted:ID>" (tokens must be unique).
std::string RedactedToml(const config::Config& config);

// One line per change, sorted by section: "+ provider x", "- model y",
// "~ model chat: backend chat/a/up-a weight 1 -> 3", "~ provider a: api_key changed". `before`
// may be null (everything is added). Empty when nothing an operator sees changed.
std::vector<std::string> ConfigDiff(const config::Config* before, const config::Config& after);

}  // namespace berry::admin
