// OpenAI-shaped error bodies, `{"error":{"message","type","param","code"}}`, for every error the
// proxy answers itself, and the SSE event that ends a stream broken after it started. Pure
// functions and constant tables; any thread.
#pragma once

#include <string>
#include <string_view>

namespace berry::openai {

// The errors the proxy reports, one per distinct (HTTP status, type, code).
enum class ErrorKind {
  kInvalidRequest,      // 400 malformed JSON, missing or bad `model`/`stream`
  kInvalidApiKey,       // 401 missing or unknown bearer token
  kModelNotAllowed,     // 403 the key may not use this model
  kModelNotFound,       // 404 no such custom model
  kUnknownUrl,          // 404 no such endpoint
  kMethodNotAllowed,    // 405
  kRequestTooLarge,     // 413 body over the limit
  kRateLimited,         // 429 per-user rate limit
  kInternal,            // 500 a bug in the proxy
  kBadGateway,          // 502 every tried backend failed
  kNoBackendAvailable,  // 503 no usable backend (all ejected or disabled)
  kUpstreamTimeout,     // 504 every tried backend timed out
};

struct ErrorSpec {
  int http_status;
  std::string_view type;
  std::string_view code;  // empty: JSON null
};

// The status, type and code for `kind`.
ErrorSpec SpecFor(ErrorKind kind);

// `{"error":{"message":...,"type":...,"param":...,"code":...}}`; `param` and `code` are null when
// empty. Strings are JSON-escaped; bytes that are not well-formed UTF-8 become U+FFFD.
std::string ErrorJson(std::string_view message, std::string_view type, std::string_view param = {},
                      std::string_view code = {});

// ErrorJson with the type and code of `kind` (its status is SpecFor(kind).http_status).
std::string ErrorJson(ErrorKind kind, std::string_view message, std::string_view param = {});

// `data: {"error":{"message":...,"type":"upstream_error"}}\n\n` — the last event of a stream that
// broke after its first byte reached the client. It starts a new event, so when the bytes relayed
// so far do not end at an event boundary the caller must end the pending event first.
std::string SseErrorEvent(std::string_view message);

}  // namespace berry::openai
