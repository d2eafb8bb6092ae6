// MockGemini: a provider speaking the Gemini API (generativelanguage.googleapis.com/v1beta) on
// 127.0.0.1, written from the public API reference, for tests of berry's Gemini dialect. It
// serves
//
//   POST /v1beta/models/{model}:generateContent
//        checks `x-goog-api-key` (403 PERMISSION_DENIED when missing, 400 INVALID_ARGUMENT when
//        wrong) and the body: a GenerateContentRequest whose `contents` is a non-empty array of
//        {role: user|model, parts: [...]} and which has no field the API does not know (400
//        INVALID_ARGUMENT "Invalid JSON payload received. Unknown name ..."), then answers a
//        GenerateContentResponse (candidates, usageMetadata, modelVersion, responseId).
//   POST /v1beta/models/{model}:streamGenerateContent?alt=sse
//        the same checks, then the answer as SSE: one GenerateContentResponse chunk per
//        `data:` event, lines ending in "\r\n" as Google's servers send them; the last chunk
//        carries finishReason and the final usageMetadata; the stream ends by ending the body.
//        Without alt=sse: 400 (the JSON-array form is not served).
//   GET  /v1beta/models  the model list ({"models":[{"name":"models/...",...}]}).
//
// What it does per request is programmable (GeminiBehavior): a text answer, a function-call
// answer, an error with a chosen HTTP status and google.rpc status (e.g. 429
// RESOURCE_EXHAUSTED), a stream cut after k chunks (connection closed, no terminator) or a
// stream whose second event is an error object. It records every request (method, target,
// headers, body).
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

struct GeminiBehavior {
  enum class Kind {
    kText,          // a text answer (finishReason STOP)
    kFunctionCall,  // a short text, then a functionCall part (finishReason STOP)
    kError,         // `status` with {"error":{"code":status,"message","status":status_name}}
    kCutMidStream,  // streams: the first `cut_after_chunks` chunks, then the connection closes
    kErrorEvent,    // streams: one text chunk, then a `data:` event holding an error object
  };
  Kind kind = Kind::kText;
  // The answer's text, streamed in `text_pieces` chunks.
  std::string text = "Hello from the mock Gemini provider.";
  int text_pieces = 3;
  // kFunctionCall: the function called and its args (a JSON object).
  std::string function_name = "get_weather";
  std::string function_args = R"({"city":"Paris"})";
  // kError.
  int status = 503;
  std::string status_name = "UNAVAILABLE";
  std::string error_message = "The model is overloaded. Please try again later.";
  int cut_after_chunks = 1;
  std::string finish_reason = "STOP";
  int prompt_tokens = 11;
  int candidates_tokens = 7;

  static GeminiBehavior Text() { return {}; }
  static GeminiBehavior FunctionCall() { return {.kind = Kind::kFunctionCall}; }
  static GeminiBehavior Error(int status, std::string status_name, std::string message) {
    return {.kind = Kind::kError,
            .status = status,
            .status_name = std::move(status_name),
            .error_message = std::move(message)};
  }
  static GeminiBehavior CutMidStream(int after_chunks) {
    return {.kind = Kind::kCutMidStream, .cut_after_chunks = after_chunks};
  }
  static GeminiBehavior ErrorEvent() { return {.kind = Kind::kErrorEvent}; }
};

struct GeminiRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The first value of header `name` (case-insensitive), if present.
  std::optional<std::string> Header(std::string_view name) const;
};

class MockGemini {
 public:
  struct Options {
    // Non-empty: every request must carry `x-goog-api-key: <api_key>`.
    std::string api_key = "gm-test-key";
    std::vector<std::string> models = {"gemini-mock"};
  };

  static absl::StatusOr<std::unique_ptr<MockGemini>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<MockGemini>> Start() { return Start(Options{}); }
  ~MockGemini();

  uint16_t port() const;
  // "http://127.0.0.1:PORT/v1beta": what a provider's base_url says (Google's is
  // https://generativelanguage.googleapis.com/v1beta).
  std::string base_url() const;

  // The behaviour of every request with no queued one.
  void SetBehavior(GeminiBehavior behavior);
  // One-shot behaviours, consumed in order by the next generate requests.
  void Enqueue(GeminiBehavior behavior);
  std::vector<GeminiRequest> requests() const;
  // generateContent and streamGenerateContent requests that passed the checks so far.
  int generations_served() const;

  void Stop();

  struct State;

 private:
  MockGemini() = default;
  std::shared_ptr<State> state_;
};

}  // namespace berry::test_support
