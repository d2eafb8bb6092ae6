// The Gemini dialect: a provider with backend_type "gemini" is spoken to in the Gemini API
// (POST {base_url}/models/{model}:generateContent, or :streamGenerateContent?alt=sse for a
// stream, key in `x-goog-api-key`) while the client speaks OpenAI's /v1/chat/completions. These
// are the translations both ways: the request body, the whole response, the SSE stream (chunk by
// chunk, nothing buffered beyond one event) and the error bodies. The README's "Backend dialects"
// table is the contract for each OpenAI field.
//
// Pure functions over Boost.JSON plus one small per-stream state machine; no I/O, nothing
// shared, any thread. Nothing here throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "data-plane/dialect/anthropic.h"  // RequestError, TranslatedError
#include "data-plane/openai/usage.h"

namespace berry::dialect {

// The request target below the provider's base_url: "/models/{upstream_model}:generateContent",
// or ":streamGenerateContent" when `stream`, with the model percent-encoded (anything but
// letters, digits, "-", ".", "_" and "~"). A stream also needs kGeminiStreamQuery.
std::string GeminiPath(std::string_view upstream_model, bool stream);
inline constexpr std::string_view kGeminiStreamQuery = "?alt=sse";

// Translates an OpenAI chat-completions body (already checked by openai::ScanRequestBody) into
// a GenerateContentRequest, written into `out` (cleared first). The model goes in the path
// (GeminiPath), not the body. nullopt on success.
std::optional<RequestError> ToGeminiRequest(std::string_view openai_body, std::string& out);

// Translates a GenerateContentResponse into a chat.completion reporting `model` (the client's
// model name; Gemini's `modelVersion` is not passed on) and `created` (Unix seconds); false when
// `body` is not one.
bool FromGeminiResponse(std::string_view body, std::string_view model, int64_t created,
                        std::string& out);

// Translates a Gemini error answer (`{"error":{"code","message","status"}}`, the same wrapped in
// an array, or anything else a gateway in between may send) with HTTP `status`. The status is
// kept: Gemini already answers RESOURCE_EXHAUSTED with 429 and UNAVAILABLE with 503, which count
// for retries and failover as they are.
TranslatedError FromGeminiError(int status, std::string_view body);

// Translates one streamGenerateContent SSE stream into chat.completion.chunk events. Gemini ends
// its stream by closing it (no end marker): the caller calls OnEnd when the upstream body ended
// cleanly.
class GeminiStream {
 public:
  // `include_usage`: the client asked for stream_options.include_usage, so a last chunk with
  // empty `choices` and `usage` precedes [DONE]. `model`: the model every chunk reports.
  // `created`: Unix seconds for every chunk.
  GeminiStream(bool include_usage, std::string model, int64_t created);

  // Takes the `data` payload of one upstream event (a GenerateContentResponse, or an error
  // object) and appends the client's SSE events (whole events, "data: ...\n\n") to `out`.
  // Events after the end or an error are ignored.
  void OnData(std::string_view data, std::string& out);

  // The upstream body ended cleanly. If a chunk carried a finishReason, the usage chunk (when
  // asked for) and [DONE] are appended and finished() turns true; otherwise nothing is written
  // (the stream was cut: the caller ends it with an error event).
  void OnEnd(std::string& out);

  // OnEnd wrote [DONE].
  bool finished() const { return finished_; }
  // An error object arrived: an OpenAI error event was written, the stream is over.
  bool failed() const { return failed_; }
  // The token counts of the last usageMetadata seen (Gemini's counts are running totals).
  std::optional<openai::Usage> usage() const { return usage_; }

 private:
  void AppendChunk(std::string_view delta_json, std::string_view finish_reason, std::string& out);

  bool include_usage_;
  std::string model_;
  int64_t created_;
  std::string id_;
  bool started_ = false;
  bool finish_seen_ = false;
  bool finished_ = false;
  bool failed_ = false;
  int tool_calls_ = 0;  // tool_call deltas written; the next one's index
  std::optional<openai::Usage> usage_;
};

}  // namespace berry::dialect
