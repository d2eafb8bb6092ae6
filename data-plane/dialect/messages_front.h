// Anthropic's Messages API in front: a client built for Anthropic calls Berry's POST
// /v1/messages with a custom model name. An Anthropic backend gets the body as it is (model
// rewritten) and its answer goes back as it is; every other backend is reached through OpenAI's
// chat.completions shape: these are the translations between the two (request, whole response,
// SSE stream event by event, errors). A Gemini backend is the same OpenAI-shaped middle composed
// with dialect/gemini.h. The README's "/v1/messages" table is the contract for each field.
//
// Pure functions over Boost.JSON plus one small per-stream state machine; no I/O, nothing
// shared, any thread. Nothing here throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data-plane/dialect/anthropic.h"  // RequestError
#include "data-plane/openai/usage.h"

namespace berry::dialect {

// Translates a Messages API request body (already checked by openai::ScanRequestBody) into a
// chat.completions body for `upstream_model`, written into `out` (cleared first). A streamed
// request asks for stream_options.include_usage (Anthropic's stream ends with the counts).
// nullopt on success; a field with no equivalent is a RequestError naming it.
std::optional<RequestError> MessagesToChatRequest(std::string_view messages_body,
                                                  std::string_view upstream_model,
                                                  std::string& out);

// Translates a chat.completion into a Messages API message reporting `model` (the client's
// model name); false when `body` is not a chat.completion with a choice.
bool ChatToMessagesResponse(std::string_view body, std::string_view model, std::string& out);

// Anthropic's error type for an HTTP status (400 invalid_request_error, 401
// authentication_error, 403 permission_error, 404 not_found_error, 413 request_too_large,
// 429 rate_limit_error, 503/529 overloaded_error, 504 timeout_error, other 5xx api_error).
std::string_view MessagesErrorType(int status);

// `{"type":"error","error":{"type":...,"message":...}}` for `status`.
std::string MessagesErrorJson(int status, std::string_view message);

// An OpenAI error body (`{"error":{"message",...}}`, or anything else) answered with `status`,
// in Anthropic's shape: its message kept, the type from the status.
std::string MessagesErrorFromOpenAi(int status, std::string_view openai_body);

// The event that ends a Messages stream broken after it started: `event: error` with an
// api_error (or overloaded_error, `overloaded`) carrying `message`.
std::string MessagesSseErrorEvent(std::string_view message, bool overloaded = false);

// The token counts of a Messages API message (`usage.input_tokens` with the cached ones, and
// `output_tokens`); nullopt when `body` is not a JSON object with a `usage` object.
std::optional<openai::Usage> MessagesUsage(std::string_view body);

// Translates one chat.completion.chunk SSE stream (OpenAI's, or what GeminiStream writes) into
// Anthropic's event sequence: message_start, content_block_start / content_block_delta
// (text_delta, input_json_delta) / content_block_stop per block, message_delta (stop_reason,
// usage), message_stop. Nothing is buffered beyond the open block's index.
class MessagesStream {
 public:
  // `model`: the model every message reports (the client's).
  explicit MessagesStream(std::string model) : model_(std::move(model)) {}

  // Takes the `data` payload of one upstream event (a chunk, `[DONE]` or an error object) and
  // appends the client's events (whole events, "event: ...\ndata: ...\n\n") to `out`. Events
  // after the end or an error are ignored.
  void OnData(std::string_view data, std::string& out);
  // The upstream body ended cleanly. After a finish_reason the message is closed even without
  // `[DONE]`; otherwise nothing is written (the stream was cut: the caller ends it with an error
  // event).
  void OnEnd(std::string& out);

  // message_stop was written: the stream ended well.
  bool finished() const { return finished_; }
  // An error object arrived: an error event was written, the stream is over.
  bool failed() const { return failed_; }
  // The token counts of the last `usage` seen.
  std::optional<openai::Usage> usage() const { return usage_; }

 private:
  void Start(std::string& out);
  void OpenText(std::string& out);
  void OpenTool(int64_t tool_index, std::string_view id, std::string_view name, std::string& out);
  void CloseBlock(std::string& out);
  void Finish(std::string& out);

  std::string model_;
  std::string id_;
  bool started_ = false;
  bool finished_ = false;
  bool failed_ = false;
  int64_t blocks_ = 0;       // content blocks started; the next one's index
  int64_t open_block_ = -1;  // the index of the block not yet stopped, or -1
  bool open_is_text_ = false;
  // OpenAI tool_calls[].index -> content block index, in order of appearance.
  std::vector<std::pair<int64_t, int64_t>> tool_blocks_;
  std::string stop_reason_;
  std::optional<openai::Usage> usage_;
};

}  // namespace berry::dialect
