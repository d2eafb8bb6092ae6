// Checks the dialect fuzzers (anthropic_, gemini_, messages_fuzzer) share: output that must be
// JSON, a refusal that names its field, a chat.completion's choices, an error body, output that
// must be whole chat.completion.chunk SSE events, and feeding a stream line by line.
#pragma once

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <string_view>

#include "tests/fuzz/byte_source.h"

namespace berry::fuzz {

// `text` parsed; a parse error is a finding.
inline boost::json::value ParseOrAbort(std::string_view text) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(text, ec);
  FUZZ_CHECK(!ec);
  return value;
}

// A translation refused `input`: the refusal names the field, whose name may be empty
// (`"": ...` is valid JSON), and says why.
template <typename Refusal>
void CheckRefusal(const Refusal& refusal, std::string_view input) {
  FUZZ_CHECK(!refusal.param.empty() || input.find(R"("":)") != std::string_view::npos);
  FUZZ_CHECK(!refusal.message.empty());
}

// `out` is a chat.completion with at least one choice, each with a string finish_reason.
inline boost::json::value ParseCompletion(std::string_view out) {
  boost::json::value completion = ParseOrAbort(out);
  FUZZ_CHECK(completion.is_object());
  const boost::json::value* choices = completion.as_object().if_contains("choices");
  FUZZ_CHECK(choices != nullptr && choices->is_array() && !choices->as_array().empty());
  for (const boost::json::value& choice : choices->as_array()) {
    FUZZ_CHECK(choice.is_object() && choice.as_object().at("finish_reason").is_string());
  }
  return completion;
}

// `body` is a JSON object whose `error` is an object.
inline void CheckErrorBody(std::string_view body) {
  const boost::json::value parsed = ParseOrAbort(body);
  FUZZ_CHECK(parsed.is_object() && parsed.as_object().at("error").is_object());
}

// Calls `on_line` with each '\n'-separated piece of `input` (a stream's `data` payloads).
template <typename OnLine>
void ForEachLine(std::string_view input, OnLine on_line) {
  while (!input.empty()) {
    const size_t newline = input.find('\n');
    on_line(input.substr(0, newline));
    input.remove_prefix(newline == std::string_view::npos ? input.size() : newline + 1);
  }
}

// Checks that `out` is whole SSE events, each a JSON chunk or error, or a last [DONE]
// (`done_seen` carries that across calls).
inline void CheckChunkEvents(std::string_view out, bool& done_seen) {
  while (!out.empty()) {
    FUZZ_CHECK(!done_seen);  // nothing after [DONE]
    FUZZ_CHECK(out.starts_with("data: "));
    const size_t end = out.find("\n\n");
    FUZZ_CHECK(end != std::string_view::npos);
    const std::string_view payload = out.substr(6, end - 6);
    if (payload == "[DONE]") {
      done_seen = true;
    } else {
      const boost::json::value chunk = ParseOrAbort(payload);
      FUZZ_CHECK(chunk.is_object());
      FUZZ_CHECK(chunk.as_object().contains("choices") || chunk.as_object().contains("error"));
    }
    out.remove_prefix(end + 2);
  }
}

}  // namespace berry::fuzz
