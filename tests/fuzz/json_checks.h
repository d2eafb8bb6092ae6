// Checks the dialect fuzzers (anthropic_, gemini_, messages_fuzzer) share: output that must be
// JSON, and output that must be whole chat.completion.chunk SSE events.
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
