// Arbitrary bytes through the Anthropic dialect (data-plane/dialect/anthropic.h). The first byte
// picks the translation: an OpenAI request body to a Messages request, a provider body to a
// chat.completion, a provider error body (status from the next byte) to an OpenAI error, or a
// provider stream (the rest split at '\n' into `data` payloads) to chunk events.
//
// Properties: whatever comes in, what goes out is valid JSON of the promised shape — a Messages
// request for the upstream model with `messages` and a positive `max_tokens`, or a refusal
// naming a field; a chat.completion with at least one choice, each with a string finish_reason;
// an OpenAI error object with the status kept (529 as 503); whole `data: ...\n\n` events, each a
// JSON object or a [DONE] that comes last and exactly when the stream finished, and nothing
// after an error.
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "data-plane/dialect/anthropic.h"
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
      const auto error = berry::dialect::ToAnthropicRequest(input, "m", out);
      if (error) {
        berry::fuzz::CheckRefusal(*error, input);
      } else {
        const bj::value request = ParseOrAbort(out);
        FUZZ_CHECK(request.is_object());
        const bj::object& object = request.as_object();
        FUZZ_CHECK(object.contains("model") && object.at("model") == "m");
        FUZZ_CHECK(object.contains("messages") && object.at("messages").is_array());
        const bj::value* max_tokens = object.if_contains("max_tokens");
        FUZZ_CHECK(max_tokens != nullptr && max_tokens->is_number() &&
                   max_tokens->to_number<double>() > 0);
      }
      break;
    }
    case 1: {
      if (berry::dialect::FromAnthropicResponse(input, 1, out)) {
        berry::fuzz::ParseCompletion(out);
      }
      break;
    }
    case 2: {
      const int status = 400 + berry::fuzz::TakeByte(input) % 200;
      const berry::dialect::TranslatedError error =
          berry::dialect::FromAnthropicError(status, input);
      FUZZ_CHECK(error.status == berry::dialect::NormalizeAnthropicStatus(status));
      berry::fuzz::CheckErrorBody(error.body);
      break;
    }
    default: {
      berry::dialect::AnthropicStream stream(mode & 4, 1);
      bool done = false;
      berry::fuzz::ForEachLine(input, [&](std::string_view event) {
        const bool over_before = stream.failed() || stream.finished();
        out.clear();
        stream.OnData(event, out);
        FUZZ_CHECK(!over_before || out.empty());
        CheckChunkEvents(out, done);
      });
      FUZZ_CHECK(done == stream.finished());
      break;
    }
  }
  return 0;
}
