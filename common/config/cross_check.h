// Internal to berry_config: the checks that need the whole config at once — backend references
// to providers and their models, unique custom model names and user tokens, `allowed_models`.
// One load, one thread.
#pragma once

#include "common/config/diagnostics.h"
#include "common/config/document_reader.h"

namespace berry::config::internal {

// Reports every cross-reference problem in `draft`. A value already reported as broken is
// not reported again as a consequence (a dangling reference to a provider that failed to
// parse, say).
void CrossCheck(const Draft& draft, Diagnostics& diagnostics);

}  // namespace berry::config::internal
