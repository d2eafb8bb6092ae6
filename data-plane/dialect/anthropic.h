// The Anthropic dialect: a provider with backend_type "anthropic" (or "claude") is spoken to in
// Anthropic's Messages API (POST {base_url}/messages) while the client speaks OpenAI's
// /v1/chat/completions. These are the translations both ways: the request body, the whole
// response, the SSE stream (event by event, nothing buffered beyond one event) and the error
// bodies. The README's "Backend dialects" table is the contract for each OpenAI field.
//
// Pure functions over Boost.JSON plus one small per-stream state machine; no I/O, nothing
// shared, any thread. Nothing here throws.
#pragma once

#include <boost/json/fwd.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data-plane/openai/usage.h"

namespace berry::dialect {

// max_tokens is required by the Messages API; a request with neither max_tokens nor
// max_completion_tokens gets this.
inline constexpr int64_t kAnthropicDefaultMaxTokens = 4096;

// Why a request cannot be translated: a 400 invalid_request_error with `param` naming the field.
struct RequestError {
  std::string message;
  std::string param;
};

// Translates an OpenAI chat-completions body (already checked by openai::ScanRequestBody) into
// a Messages API body for `upstream_model`, written into `out` (cleared first). nullopt on
// success.
std::optional<RequestError> ToAnthropicRequest(std::string_view openai_body,
                                               std::string_view upstream_model, std::string& out);

// The prompt tokens of an Anthropic `usage` object: input_tokens plus the cached ones (OpenAI's
// prompt_tokens counts every prompt token).
uint64_t AnthropicInputTokens(const boost::json::object& usage);

// Translates a Messages API response (`{"type":"message",...}`) into a chat.completion with
// `created` (Unix seconds); false when `body` is not one.
bool FromAnthropicResponse(std::string_view body, int64_t created, std::string& out);

// An upstream error answer in OpenAI's shape.
struct TranslatedError {
  int status;        // the client's status: Anthropic's, except 529 (overloaded) -> 503
  std::string body;  // {"error":{"message","type","param","code"}}
};

// The status an Anthropic answer counts as for retries, failover and outlier detection: 529
// (overloaded_error) counts as 503; anything else as itself.
inline int NormalizeAnthropicStatus(int status) { return status == 529 ? 503 : status; }

// Translates an Anthropic error answer (`{"type":"error","error":{"type","message"}}`, or
// anything else a gateway in between may send) with HTTP `status`.
TranslatedError FromAnthropicError(int status, std::string_view body);

// Translates one Messages API SSE stream into chat.completion.chunk events, one event at a time.
class AnthropicStream {
 public:
  // `include_usage`: the client asked for stream_options.include_usage, so a last chunk with
  // empty `choices` and `usage` precedes [DONE]. `created`: Unix seconds for every chunk.
  AnthropicStream(bool include_usage, int64_t created)
      : include_usage_(include_usage), created_(created) {}

  // Takes the `data` payload of one upstream event and appends the client's SSE events (whole
  // events, "data: ...\n\n") to `out`. Events after the end or an error are ignored.
  void OnData(std::string_view data, std::string& out);

  // message_stop arrived: the stream ended well, [DONE] was written.
  bool finished() const { return finished_; }
  // An `error` event arrived: an OpenAI error event was written, the stream is over.
  bool failed() const { return failed_; }
  // The token counts seen so far (input from message_start, output from message_delta).
  std::optional<openai::Usage> usage() const;

 private:
  void AppendChunk(std::string_view delta_json, std::string_view finish_reason, std::string& out);

  bool include_usage_;
  int64_t created_;
  bool started_ = false;
  bool finished_ = false;
  bool failed_ = false;
  std::string id_;
  std::string model_;
  std::optional<uint64_t> input_tokens_;
  std::optional<uint64_t> output_tokens_;
  std::string finish_reason_;
  // tool_use content blocks, in order: their Anthropic block index, which is the position
  // here; tool_calls[].index is the position in this list.
  std::vector<int64_t> tool_blocks_;
};

}  // namespace berry::dialect
