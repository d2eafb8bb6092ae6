// Reads the token counts an upstream reports in `usage`, for per-backend load reports. Called on
// the worker thread for every non-streaming response body and every SSE `data:` payload of a
// stream; a pure function, safe on any thread, never throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace berry::openai {

struct Usage {
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;  // 0 for embeddings, which report only prompt/total tokens
};

// The top-level `usage` object of a chat/completions/embeddings response or stream chunk.
// nullopt when `json` is not one well-formed JSON value, when it has no top-level `usage`, when
// `usage` is null or not an object, or when `usage` holds neither `prompt_tokens` nor
// `completion_tokens` as a non-negative integer. `usage` keys nested deeper (inside messages,
// tool arguments, ...) are ignored. Text that does not contain `"usage"` at all is rejected
// without parsing, so the many stream chunks before the last cost one substring search each.
std::optional<Usage> ExtractUsage(std::string_view json);

// True when `json` is a stream chunk that carries `usage` and no choice (`choices` absent or
// empty): the chunk stream_options.include_usage adds at the end, which the proxy strips when
// it asked for it on the client's behalf. False for anything else (a content chunk that also
// carries usage is relayed). Parses the whole chunk: call it only where ExtractUsage found one.
bool IsUsageOnlyChunk(std::string_view json);

}  // namespace berry::openai
