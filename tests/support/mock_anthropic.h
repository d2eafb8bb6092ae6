// MockAnthropic: a provider speaking Anthropic's Messages API on 127.0.0.1, written from the
// public API reference, for tests of berry's Anthropic dialect. It serves
//
//   POST /v1/messages   checks `x-api-key` (401 authentication_error), `anthropic-version`
//                       and the required body fields `model`, `max_tokens`, `messages` (400
//                       invalid_request_error), then answers a `message` as JSON, or as SSE
//                       with the API's event sequence when the body says "stream": true:
//                       message_start, content_block_start, ping, content_block_delta
//                       (text_delta / input_json_delta), content_block_stop, message_delta,
//                       message_stop; each event as `event: <type>` plus `data: <json>`.
//   GET /v1/models      the model list ({"data":[{"type":"model","id",...}],"has_more":false}).
//
// What it does per request is programmable (AnthropicBehavior): a text answer, a tool_use
// answer, an error with a chosen status and type (e.g. 529 overloaded_error), a stream cut after
// k events (connection closed, no terminator) or a stream that ends with an `error` event. It
// records every request (method, target, headers, body).
//
// Threads: one event loop of its own; every public method is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace berry::test_support {

struct AnthropicBehavior {
  enum class Kind {
    kText,          // a text answer (stop_reason end_turn)
    kToolUse,       // a short text, then a tool_use block (stop_reason tool_use)
    kError,         // `status` with {"type":"error","error":{"type":error_type,...}}
    kCutMidStream,  // streams: the first `cut_after_events` events, then the connection closes
    kErrorEvent,    // streams: message_start, then an `error` event (overloaded_error)
  };
  Kind kind = Kind::kText;
  // The answer's text, streamed in `text_pieces` deltas.
  std::string text = "Hello from the mock Anthropic provider.";
  int text_pieces = 3;
  // kToolUse: the tool called and its input (a JSON object), streamed in two partial_json pieces.
  std::string tool_name = "get_weather";
  std::string tool_input = R"({"city":"Paris"})";
  // kError.
  int status = 529;
  std::string error_type = "overloaded_error";
  std::string error_message = "Overloaded";
  int cut_after_events = 3;
  int input_tokens = 11;
  int output_tokens = 7;

  static AnthropicBehavior Text() { return {}; }
  static AnthropicBehavior ToolUse() { return {.kind = Kind::kToolUse}; }
  static AnthropicBehavior Error(int status, std::string type, std::string message) {
    return {.kind = Kind::kError,
            .status = status,
            .error_type = std::move(type),
            .error_message = std::move(message)};
  }
  static AnthropicBehavior CutMidStream(int after_events) {
    return {.kind = Kind::kCutMidStream, .cut_after_events = after_events};
  }
  static AnthropicBehavior ErrorEvent() { return {.kind = Kind::kErrorEvent}; }
};

struct AnthropicRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The first value of header `name` (case-insensitive), if present.
  std::optional<std::string> Header(std::string_view name) const;
};

class MockAnthropic {
 public:
  struct Options {
    // Non-empty: every request must carry `x-api-key: <api_key>`.
    std::string api_key = "sk-ant-test";
    std::vector<std::string> models = {"claude-mock"};
  };

  static absl::StatusOr<std::unique_ptr<MockAnthropic>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<MockAnthropic>> Start() { return Start(Options{}); }
  ~MockAnthropic();

  uint16_t port() const;
  // "http://127.0.0.1:PORT/v1": what a provider's base_url says (Anthropic's is
  // https://api.anthropic.com/v1).
  std::string base_url() const;

  // The behaviour of every request with no queued one.
  void SetBehavior(AnthropicBehavior behavior);
  // One-shot behaviours, consumed in order by the next /v1/messages requests.
  void Enqueue(AnthropicBehavior behavior);
  std::vector<AnthropicRequest> requests() const;
  // Requests to /v1/messages answered so far.
  int messages_served() const;

  void Stop();

  struct State;

 private:
  MockAnthropic() = default;
  std::shared_ptr<State> state_;
};

}  // namespace berry::test_support
