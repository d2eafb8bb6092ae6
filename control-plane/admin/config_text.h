// Text views of a typed Config for operators: the running config re-emitted as TOML with every
// secret replaced by "<redacted>" (AdminService.GetConfig), and a readable diff between two
// configs by name (AdminService.ApplyConfig). Neither ever contains a provider key, a header
// value or a user token. Pure functions; any thread.
#pragma once

#include <string>
#include <vector>

#include "common/config/config.h"

namespace berry::admin {

// What every secret is replaced with.
inline constexpr char kRedacted[] = "<redacted>";

// The config as TOML that loads back into an equal config except for secrets: provider
// `api_key`, every `headers` value and user `token` read "<redacted>".
std::string RedactedToml(const config::Config& config);

// One line per change, sorted by section: "+ provider x", "- model y",
// "~ model chat: backend chat/a/up-a weight 1 -> 3", "~ provider a: api_key changed". `before`
// may be null (everything is added). Empty when nothing an operator sees changed.
std::vector<std::string> ConfigDiff(const config::Config* before, const config::Config& after);

}  // namespace berry::admin
