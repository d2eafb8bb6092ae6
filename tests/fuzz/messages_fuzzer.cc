// Arbitrary bytes through the Messages front (data-plane/dialect/messages_front.h). The first
// byte picks the translation: a Messages request body to a chat request, a chat.completion to a
// message, an OpenAI error body (status from the next byte) to an Anthropic error, or a chat
// chunk stream (the rest split at '\n' into `data` payloads, then its end) to Anthropic's events.
//
// Properties: whatever comes in, what goes out is valid JSON of the promised shape — a chat
// request with `messages` or a refusal naming a field; a message with content blocks, a stop
// reason and usage; an Anthropic error; whole `event: <type>\ndata: <json>\n\n` events whose
// data's type is the event's name, message_start first, message_stop last and only when
// finished, block starts and stops paired, nothing after an error.
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "data-plane/dialect/messages_front.h"
#include "tests/fuzz/byte_source.h"
#include "tests/fuzz/json_checks.h"

namespace {

namespace bj = boost::json;

using berry::fuzz::ParseOrAbort;

struct StreamState {
  bool started = false;
  bool stopped = false;
  bool errored = false;
  int64_t open_block = -1;
};

// Checks that `out` is whole Anthropic events in a valid order.
void CheckEvents(std::string_view out, StreamState& state) {
  while (!out.empty()) {
    FUZZ_CHECK(!state.stopped && !state.errored);  // nothing after message_stop or an error
    FUZZ_CHECK(out.starts_with("event: "));
    const size_t newline = out.find('\n');
    FUZZ_CHECK(newline != std::string_view::npos);
    const std::string_view name = out.substr(7, newline - 7);
    out.remove_prefix(newline + 1);
    FUZZ_CHECK(out.starts_with("data: "));
    const size_t end = out.find("\n\n");
    FUZZ_CHECK(end != std::string_view::npos);
    const bj::value data = ParseOrAbort(out.substr(6, end - 6));
    out.remove_prefix(end + 2);
    FUZZ_CHECK(data.is_object());
    FUZZ_CHECK(data.as_object().at("type") == bj::string_view(name.data(), name.size()));
    if (name == "error") {
      state.errored = true;
      continue;
    }
    FUZZ_CHECK(state.started || name == "message_start");
    if (name == "message_start") {
      FUZZ_CHECK(!state.started);
      state.started = true;
    } else if (name == "content_block_start") {
      FUZZ_CHECK(state.open_block < 0);
      state.open_block = data.as_object().at("index").as_int64();
    } else if (name == "content_block_delta") {
      FUZZ_CHECK(data.as_object().at("delta").is_object());
    } else if (name == "content_block_stop") {
      FUZZ_CHECK(state.open_block == data.as_object().at("index").as_int64());
      state.open_block = -1;
    } else if (name == "message_delta") {
      FUZZ_CHECK(state.open_block < 0);
      FUZZ_CHECK(data.as_object().at("delta").as_object().at("stop_reason").is_string());
    } else {
      FUZZ_CHECK(name == "message_stop");
      state.stopped = true;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const uint8_t mode = berry::fuzz::TakeByte(input);
  std::string out;
  switch (mode % 4) {
    case 0: {
      const auto error = berry::dialect::MessagesToChatRequest(input, "up", out);
      if (error) {
        berry::fuzz::CheckRefusal(*error, input);
      } else {
        const bj::value request = ParseOrAbort(out);
        FUZZ_CHECK(request.as_object().at("model") == "up");
        FUZZ_CHECK(request.as_object().at("messages").is_array());
      }
      break;
    }
    case 1: {
      if (berry::dialect::ChatToMessagesResponse(input, "m", out)) {
        const bj::value message = ParseOrAbort(out);
        FUZZ_CHECK(message.as_object().at("type") == "message");
        FUZZ_CHECK(message.as_object().at("model") == "m");
        FUZZ_CHECK(message.as_object().at("content").is_array());
        FUZZ_CHECK(message.as_object().at("stop_reason").is_string());
        FUZZ_CHECK(message.as_object().at("usage").is_object());
      }
      break;
    }
    case 2: {
      const int status = 400 + berry::fuzz::TakeByte(input) % 200;
      const bj::value body = ParseOrAbort(berry::dialect::MessagesErrorFromOpenAi(status, input));
      FUZZ_CHECK(body.as_object().at("type") == "error");
      FUZZ_CHECK(body.as_object().at("error").as_object().at("message").is_string());
      break;
    }
    default: {
      berry::dialect::MessagesStream stream("m");
      StreamState state;
      berry::fuzz::ForEachLine(input, [&](std::string_view event) {
        out.clear();
        stream.OnData(event, out);
        CheckEvents(out, state);
      });
      out.clear();
      stream.OnEnd(out);
      CheckEvents(out, state);
      FUZZ_CHECK(state.stopped == stream.finished());
      FUZZ_CHECK(state.errored == stream.failed());
      break;
    }
  }
  return 0;
}
