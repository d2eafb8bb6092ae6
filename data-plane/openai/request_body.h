// Reads what the proxy needs from an OpenAI request body — the top-level `model` and `stream`
// fields — and rewrites `model` for the chosen upstream without re-serialising the document.
// Runs on every proxied request on the worker's event-loop thread; pure functions, no shared
// state, safe on any thread. Nothing here throws.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace berry::openai {

// Deepest nesting of arrays and objects a request body may have. Boost.JSON's default (32) is too
// shallow for tool definitions carrying JSON Schemas; the parser recurses, so it stays bounded.
inline constexpr size_t kMaxRequestDepth = 128;

struct RequestFields {
  // The top-level `model`, JSON escapes decoded. Never empty.
  std::string model;
  // The top-level `stream`; false when absent.
  bool stream = false;
  // True when the top-level `stream_options` is an object whose `include_usage` is `true`.
  bool include_usage = false;
  // True when the top-level `stream_options` is an object (whatever it holds).
  bool has_stream_options = false;
  // The larger of the top-level `max_tokens` and `max_completion_tokens` when either is a
  // positive integer; 0 when neither is (what the token-limit reservation falls back from).
  uint64_t max_tokens = 0;
  // Byte range [model_begin, model_end) of the `model` value token in the scanned body, both
  // quotes included, so body.substr(model_begin, model_end - model_begin) is the raw literal.
  size_t model_begin = 0;
  size_t model_end = 0;
};

// Checks that `body` is exactly one well-formed JSON object (RFC 8259, UTF-8, surrounding
// whitespace allowed, nesting at most kMaxRequestDepth) and extracts its top-level fields; keys of
// the same name nested deeper are ignored. Errors are InvalidArgument with a message meant for the
// client's 400 response:
//   "request body is not valid JSON: <reason> at byte N"   (N = 0-based offset of the problem)
//   "request body must be a JSON object"
//   "missing required field 'model'"
//   "'model' must be a non-empty string"
//   "'stream' must be a boolean"
//   "duplicate field 'model'" / "duplicate field 'stream'"  (the upstream might read the other one)
// A validity error wins over the others; among field errors the first in document order wins.
absl::StatusOr<RequestFields> ScanRequestBody(std::string_view body);

// Returns `body` with the `model` value token replaced by `upstream_model` as a JSON string;
// every other byte is unchanged. `fields` must come from ScanRequestBody(body) on this very body
// (checked: a range that does not hold a string literal in `body` aborts, as a programming error).
std::string RewriteModel(std::string_view body, const RequestFields& fields,
                         std::string_view upstream_model);

// As above, writing into `out` (cleared first) so a worker can reuse one buffer across requests.
// `out` must not alias `body`.
void RewriteModel(std::string_view body, const RequestFields& fields,
                  std::string_view upstream_model, std::string& out);

// Makes `body` (an object ScanRequestBody accepted, with no `stream_options`, possibly with
// `model` rewritten since) ask for a stream's usage: "stream_options":{"include_usage":true}
// becomes its first member. For a token-limited user whose client did not ask: the proxy needs
// the usage to charge the tokens (and strips that chunk before the client sees it).
void AddIncludeUsage(std::string& body);

}  // namespace berry::openai
