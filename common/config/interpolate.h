// Internal to berry_config: `${VAR}` expansion of config string values from the environment,
// so secrets can stay out of the file. Pure function; any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/config/config.h"

namespace berry::config::internal {

struct Interpolated {
  std::string value;
  // Why expansion failed, one entry per problem. Never contains any part of the text or of a
  // variable's value (either may be a secret), only variable names.
  std::vector<std::string> problems;
};

// Replaces each `${NAME}` (NAME = [A-Za-z_][A-Za-z0-9_]*) with the variable's value; `$${` is a
// literal `${`. A `$` not followed by `{` is kept as is.
Interpolated Interpolate(std::string_view text, const EnvLookup& env);

// The process environment, for LoadOptions without an injected lookup.
EnvLookup ProcessEnvironment();

}  // namespace berry::config::internal
