// Arbitrary bytes through the Gemini dialect (data-plane/dialect/gemini.h). The first byte picks
// the translation: an OpenAI request body to a GenerateContentRequest, a provider body to a
// chat.completion, a provider error body (status from the next byte) to an OpenAI error, or a
// provider stream (the rest split at '\n' into `data` payloads, then its end) to chunk events.
//
// Properties: whatever comes in, what goes out is valid JSON of the promised shape — a request
// with non-empty `contents` or a refusal naming a field; a chat.completion with at least one
// choice, each with a string finish_reason; an OpenAI error object with the status kept; whole
// `data: ...\n\n` events, each a JSON object or a [DONE] that comes last, only once the stream
// finished, and nothing after an error.
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "data-plane/dialect/gemini.h"
#include "tests/fuzz/byte_source.h"
#include "tests/fuzz/json_checks.h"

namespace bj = boost::json;
using berry::fuzz::CheckChunkEvents;
using berry::fuzz::ParseOrAbort;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const uint8_t mode = berry::fuzz::TakeByte(input);
  std::string out;
  switch (mode % 4) {
    case 0: {
      const auto error = berry::dialect::ToGeminiRequest(input, out);
      if (error) {
        berry::fuzz::CheckRefusal(*error, input);
      } else {
        const bj::value request = ParseOrAbort(out);
        FUZZ_CHECK(request.is_object());
        const bj::value* contents = request.as_object().if_contains("contents");
        FUZZ_CHECK(contents != nullptr && contents->is_array() && !contents->as_array().empty());
        FUZZ_CHECK(!request.as_object().contains("model"));
      }
      break;
    }
    case 1: {
      if (berry::dialect::FromGeminiResponse(input, "m", 1, out)) {
        const bj::value completion = berry::fuzz::ParseCompletion(out);
        FUZZ_CHECK(completion.as_object().at("model") == "m");
      }
      break;
    }
    case 2: {
      const int status = 400 + berry::fuzz::TakeByte(input) % 200;
      const berry::dialect::TranslatedError error = berry::dialect::FromGeminiError(status, input);
      FUZZ_CHECK(error.status == status);
      berry::fuzz::CheckErrorBody(error.body);
      break;
    }
    default: {
      berry::dialect::GeminiStream stream(mode & 4, "m", 1);
      bool done = false;
      berry::fuzz::ForEachLine(input, [&](std::string_view event) {
        const bool failed_before = stream.failed();
        out.clear();
        stream.OnData(event, out);
        FUZZ_CHECK(!failed_before || out.empty());
        CheckChunkEvents(out, done);
      });
      out.clear();
      stream.OnEnd(out);
      CheckChunkEvents(out, done);
      FUZZ_CHECK(done == stream.finished());
      break;
    }
  }
  return 0;
}
