// The Anthropic dialect's translations, both ways: request bodies (every mapped, dropped and
// refused OpenAI field), whole responses, streams (the Messages API's real event sequence, cut
// anywhere) and error bodies.
#include "data-plane/dialect/anthropic.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace berry::dialect::anthropic_test {
namespace {

namespace bj = boost::json;
using ::testing::HasSubstr;

bj::value Json(std::string_view text) { return bj::parse(text); }

// The translated request, parsed; fails the test on a translation error.
bj::value Translate(std::string_view body, std::string_view model = "claude-up") {
  std::string out;
  const std::optional<RequestError> error = ToAnthropicRequest(body, model, out);
  EXPECT_FALSE(error.has_value()) << (error ? error->message : "");
  return error ? bj::value() : Json(out);
}

RequestError Refused(std::string_view body) {
  std::string out;
  std::optional<RequestError> error = ToAnthropicRequest(body, "m", out);
  EXPECT_TRUE(error.has_value()) << "translated to " << out;
  return error.value_or(RequestError{});
}

TEST(AnthropicRequestTest, SystemMessagesBecomeSystemAndTheModelIsRewritten) {
  const bj::value out = Translate(R"({"model":"custom","messages":[
      {"role":"system","content":"Be brief."},
      {"role":"developer","content":[{"type":"text","text":"No emoji."}]},
      {"role":"user","content":"Hi"}]})");
  EXPECT_EQ(out.at("model"), "claude-up");
  EXPECT_EQ(out.at("system"), Json(R"([{"type":"text","text":"Be brief."},
                                         {"type":"text","text":"No emoji."}])"));
  EXPECT_EQ(out.at("messages"),
            Json(R"([{"role":"user","content":[{"type":"text","text":"Hi"}]}])"));
  EXPECT_EQ(out.at("max_tokens"), kAnthropicDefaultMaxTokens) << "the documented default";
  EXPECT_FALSE(out.as_object().contains("stream"));
}

TEST(AnthropicRequestTest, ConsecutiveTurnsOfOneRoleAreMerged) {
  const bj::value out = Translate(R"({"model":"m","messages":[
      {"role":"user","content":"one"},{"role":"user","content":"two"},
      {"role":"assistant","content":"three"},{"role":"assistant","content":""},
      {"role":"user","content":"four"}]})");
  EXPECT_EQ(out.at("messages"), Json(R"([
      {"role":"user","content":[{"type":"text","text":"one"},{"type":"text","text":"two"}]},
      {"role":"assistant","content":[{"type":"text","text":"three"}]},
      {"role":"user","content":[{"type":"text","text":"four"}]}])"));
}

TEST(AnthropicRequestTest, ImagesFromDataAndHttpUrls) {
  const bj::value out = Translate(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"text","text":"What is this?"},
      {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
      {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg","detail":"low"}}]}]})");
  EXPECT_EQ(out.at("messages").at(0).at("content"), Json(R"([
      {"type":"text","text":"What is this?"},
      {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
      {"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}}])"));
}

TEST(AnthropicRequestTest, ToolsToolChoiceToolCallsAndToolResults) {
  const bj::value out = Translate(R"({"model":"m",
      "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather",
                "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
               {"type":"function","function":{"name":"now"}}],
      "tool_choice":{"type":"function","function":{"name":"get_weather"}},
      "parallel_tool_calls":false,
      "messages":[{"role":"user","content":"Weather in Paris and Rome?"},
        {"role":"assistant","content":null,"tool_calls":[
          {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
          {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},
        {"role":"tool","tool_call_id":"call_1","content":"18C"},
        {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"21C"}]}]})");
  EXPECT_EQ(out.at("tools"), Json(R"([
      {"name":"get_weather","description":"Weather",
       "input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},
      {"name":"now","input_schema":{"type":"object","properties":{}}}])"));
  EXPECT_EQ(out.at("tool_choice"),
            Json(R"({"type":"tool","name":"get_weather","disable_parallel_tool_use":true})"));
  EXPECT_EQ(out.at("messages"), Json(R"([
      {"role":"user","content":[{"type":"text","text":"Weather in Paris and Rome?"}]},
      {"role":"assistant","content":[
        {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},
        {"type":"tool_use","id":"call_2","name":"get_weather","input":{"city":"Rome"}}]},
      {"role":"user","content":[
        {"type":"tool_result","tool_use_id":"call_1","content":[{"type":"text","text":"18C"}]},
        {"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"21C"}]}]}])"))
      << "tool results are one user turn";
}

TEST(AnthropicRequestTest, ToolChoiceModes) {
  const std::string tools =
      R"("tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}])";
  EXPECT_EQ(Translate(R"({"model":"m","tool_choice":"auto",)" + tools + "}").at("tool_choice"),
            Json(R"({"type":"auto"})"));
  EXPECT_EQ(Translate(R"({"model":"m","tool_choice":"none",)" + tools + "}").at("tool_choice"),
            Json(R"({"type":"none"})"));
  EXPECT_EQ(Translate(R"({"model":"m","tool_choice":"required",)" + tools + "}").at("tool_choice"),
            Json(R"({"type":"any"})"));
}

TEST(AnthropicRequestTest, SamplingLimitsStopStreamAndUser) {
  const bj::value out = Translate(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "max_tokens":100,"max_completion_tokens":200,"temperature":0.5,"top_p":0.9,
      "stop":["END","STOP"],"stream":true,"stream_options":{"include_usage":true},
      "user":"u-1","seed":7,"n":1,"logprobs":false,"presence_penalty":0})");
  EXPECT_EQ(out.at("max_tokens"), 200) << "max_completion_tokens wins over the deprecated one";
  EXPECT_EQ(out.at("temperature"), 0.5);
  EXPECT_EQ(out.at("top_p"), 0.9);
  EXPECT_EQ(out.at("stop_sequences"), Json(R"(["END","STOP"])"));
  EXPECT_EQ(out.at("stream"), true);
  EXPECT_EQ(out.at("metadata"), Json(R"({"user_id":"u-1"})"));
  EXPECT_FALSE(out.as_object().contains("seed")) << "dropped by the documented rule";
  EXPECT_FALSE(out.as_object().contains("stream_options"));
  EXPECT_EQ(Translate(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":"END",
                          "max_tokens":50})")
                .at("stop_sequences"),
            Json(R"(["END"])"));
}

TEST(AnthropicRequestTest, FieldsWithNoEquivalentAreRefusedNamingTheField) {
  const std::string messages = R"("messages":[{"role":"user","content":"x"}])";
  struct Case {
    std::string extra;
    std::string param;
  };
  const std::vector<Case> cases = {
      {R"("n":2)", "n"},
      {R"("logprobs":true)", "logprobs"},
      {R"("top_logprobs":3)", "top_logprobs"},
      {R"("presence_penalty":0.5)", "presence_penalty"},
      {R"("frequency_penalty":1)", "frequency_penalty"},
      {R"("logit_bias":{"50256":-100})", "logit_bias"},
      {R"("response_format":{"type":"json_object"})", "response_format"},
      {R"("modalities":["text","audio"])", "modalities"},
      {R"("audio":{"voice":"alloy"})", "audio"},
      {R"("max_tokens":0)", "max_tokens"},
      {R"("tools":[{"type":"web_search"}])", "tools[0].type"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.extra);
    const RequestError error = Refused(R"({"model":"m",)" + messages + "," + c.extra + "}");
    EXPECT_EQ(error.param, c.param);
    EXPECT_THAT(error.message, HasSubstr("'" + c.param + "'"));
  }
  const RequestError audio = Refused(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]})");
  EXPECT_EQ(audio.param, "messages[0].content[0].type");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[]})").param, "messages");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"system","content":"only"}]})").param,
            "messages");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"assistant","tool_calls":[
      {"id":"c","type":"function","function":{"name":"f","arguments":"not json"}}]}]})")
                .param,
            "messages[0].tool_calls[0].function.arguments");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]})")
                .param,
            "messages[0].content[0].image_url");
}

TEST(AnthropicResponseTest, TextMessageBecomesChatCompletion) {
  std::string out;
  ASSERT_TRUE(FromAnthropicResponse(R"({"id":"msg_01","type":"message","role":"assistant",
      "model":"claude-up","content":[{"type":"text","text":"Hello"},{"type":"text","text":"!"}],
      "stop_reason":"end_turn","stop_sequence":null,
      "usage":{"input_tokens":12,"output_tokens":5,"cache_read_input_tokens":3}})",
                                    1700000000, out));
  EXPECT_EQ(Json(out), Json(R"({"id":"msg_01","object":"chat.completion","created":1700000000,
      "model":"claude-up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},
      "logprobs":null,"finish_reason":"stop"}],
      "usage":{"prompt_tokens":15,"completion_tokens":5,"total_tokens":20}})"));
}

TEST(AnthropicResponseTest, ToolUseBecomesToolCalls) {
  std::string out;
  ASSERT_TRUE(FromAnthropicResponse(R"({"id":"msg_02","type":"message","role":"assistant",
      "model":"c","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather",
      "input":{"city":"Paris"}}],"stop_reason":"tool_use",
      "usage":{"input_tokens":1,"output_tokens":2}})",
                                    1, out));
  const bj::value v = Json(out);
  const bj::value& choice = v.at("choices").at(0);
  EXPECT_EQ(choice.at("finish_reason"), "tool_calls");
  EXPECT_TRUE(choice.at("message").at("content").is_null());
  EXPECT_EQ(choice.at("message").at("tool_calls"), Json(R"([{"id":"toolu_1","type":"function",
      "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}])"));
}

TEST(AnthropicResponseTest, StopReasonsMapToFinishReasons) {
  const std::vector<std::pair<std::string, std::string>> cases = {{"end_turn", "stop"},
                                                                  {"stop_sequence", "stop"},
                                                                  {"max_tokens", "length"},
                                                                  {"tool_use", "tool_calls"},
                                                                  {"refusal", "content_filter"}};
  for (const auto& [stop, finish] : cases) {
    std::string out;
    ASSERT_TRUE(FromAnthropicResponse(
        R"({"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":")" + stop +
            R"("})",
        1, out));
    EXPECT_EQ(Json(out).at("choices").at(0).at("finish_reason"), bj::value(finish)) << stop;
  }
}

TEST(AnthropicResponseTest, AnythingElseIsNotAMessage) {
  std::string out;
  EXPECT_FALSE(FromAnthropicResponse("", 1, out));
  EXPECT_FALSE(FromAnthropicResponse("<html>", 1, out));
  EXPECT_FALSE(FromAnthropicResponse(R"({"type":"error","error":{}})", 1, out));
  EXPECT_FALSE(FromAnthropicResponse(R"({"type":"message","content":"x"})", 1, out));
}

TEST(AnthropicErrorTest, ErrorsKeepTheirStatusAndOverloadedCountsAs503) {
  TranslatedError e = FromAnthropicError(
      400, R"({"type":"error","error":{"type":"invalid_request_error","message":"bad temp"}})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(Json(e.body).at("error").at("type"), "invalid_request_error");
  EXPECT_EQ(Json(e.body).at("error").at("code"), "invalid_request_error");
  EXPECT_THAT(std::string(Json(e.body).at("error").at("message").as_string()),
              HasSubstr("bad temp"));

  e = FromAnthropicError(
      529, R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})");
  EXPECT_EQ(e.status, 503);
  EXPECT_EQ(Json(e.body).at("error").at("type"), "server_error");
  EXPECT_EQ(Json(e.body).at("error").at("code"), "overloaded_error");
  EXPECT_EQ(NormalizeAnthropicStatus(529), 503);

  e = FromAnthropicError(
      429, R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})");
  EXPECT_EQ(e.status, 429);
  EXPECT_EQ(Json(e.body).at("error").at("type"), "rate_limit_error");

  e = FromAnthropicError(502, "<html>Bad Gateway</html>");
  EXPECT_EQ(e.status, 502);
  EXPECT_EQ(Json(e.body).at("error").at("type"), "server_error");
  EXPECT_TRUE(Json(e.body).at("error").at("code").is_null());
}

// The Messages API's event sequence for a text answer, as its reference documents it.
constexpr std::string_view kTextStream[] = {
    R"({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-up","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}})",
    R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})",
    R"({"type":"ping"})",
    R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}})",
    R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}})",
    R"({"type":"content_block_stop","index":0})",
    R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}})",
    R"({"type":"message_stop"})",
};

// The `data:` payloads of `sse` (whole events only).
std::vector<std::string> Payloads(std::string_view sse) {
  std::vector<std::string> payloads;
  size_t pos = 0;
  while (pos < sse.size()) {
    const size_t end = sse.find("\n\n", pos);
    EXPECT_NE(end, std::string_view::npos) << "an event is not complete";
    if (end == std::string_view::npos) {
      break;
    }
    std::string_view event = sse.substr(pos, end - pos);
    EXPECT_TRUE(event.starts_with("data: ")) << event;
    payloads.emplace_back(event.substr(6));
    pos = end + 2;
  }
  return payloads;
}

TEST(AnthropicStreamTest, TextStreamBecomesChunksAndDone) {
  AnthropicStream stream(/*include_usage=*/true, 1700000000);
  std::string out;
  for (std::string_view event : kTextStream) {
    EXPECT_FALSE(stream.finished());
    stream.OnData(event, out);
  }
  EXPECT_TRUE(stream.finished());
  EXPECT_FALSE(stream.failed());
  const std::vector<std::string> payloads = Payloads(out);
  ASSERT_EQ(payloads.size(), 6u);
  const bj::value first = Json(payloads[0]);
  EXPECT_EQ(first.at("id"), "msg_1");
  EXPECT_EQ(first.at("object"), "chat.completion.chunk");
  EXPECT_EQ(first.at("model"), "claude-up");
  EXPECT_EQ(first.at("created"), 1700000000);
  EXPECT_EQ(first.at("choices").at(0).at("delta"), Json(R"({"role":"assistant","content":""})"));
  EXPECT_EQ(Json(payloads[1]).at("choices").at(0).at("delta").at("content"), "Hello");
  EXPECT_EQ(Json(payloads[2]).at("choices").at(0).at("delta").at("content"), " world");
  EXPECT_TRUE(Json(payloads[2]).at("choices").at(0).at("finish_reason").is_null());
  EXPECT_EQ(Json(payloads[3]).at("choices").at(0).at("finish_reason"), "stop");
  EXPECT_EQ(Json(payloads[4]).at("choices"), bj::array());
  EXPECT_EQ(Json(payloads[4]).at("usage"),
            Json(R"({"prompt_tokens":25,"completion_tokens":15,"total_tokens":40})"));
  EXPECT_EQ(payloads[5], "[DONE]");
  ASSERT_TRUE(stream.usage().has_value());
  EXPECT_EQ(stream.usage()->prompt_tokens, 25u);
  EXPECT_EQ(stream.usage()->completion_tokens, 15u);
}

TEST(AnthropicStreamTest, NoUsageChunkUnlessAsked) {
  AnthropicStream stream(/*include_usage=*/false, 1);
  std::string out;
  for (std::string_view event : kTextStream) {
    stream.OnData(event, out);
  }
  const std::vector<std::string> payloads = Payloads(out);
  ASSERT_EQ(payloads.size(), 5u);
  EXPECT_EQ(payloads.back(), "[DONE]");
  EXPECT_THAT(out, ::testing::Not(HasSubstr("\"usage\"")));
  EXPECT_TRUE(stream.usage().has_value()) << "berry still counts the tokens";
}

TEST(AnthropicStreamTest, ToolUseInputJsonDeltasBecomeArgumentDeltas) {
  constexpr std::string_view kEvents[] = {
      R"({"type":"message_start","message":{"id":"msg_2","model":"c","usage":{"input_tokens":5,"output_tokens":1}}})",
      R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})",
      R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}})",
      R"({"type":"content_block_stop","index":0})",
      R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"get_weather","input":{}}})",
      R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}})",
      R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}})",
      R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\"}"}})",
      R"({"type":"content_block_stop","index":1})",
      R"({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":30}})",
      R"({"type":"message_stop"})",
  };
  AnthropicStream stream(false, 1);
  std::string out;
  for (std::string_view event : kEvents) {
    stream.OnData(event, out);
  }
  const std::vector<std::string> payloads = Payloads(out);
  std::string arguments;
  bool saw_start = false;
  std::string finish;
  for (const std::string& payload : payloads) {
    if (payload == "[DONE]") {
      continue;
    }
    const bj::value chunk = Json(payload);
    const bj::value& choice = chunk.at("choices").at(0);
    if (!choice.at("finish_reason").is_null()) {
      finish = choice.at("finish_reason").as_string();
    }
    const bj::object& delta = choice.at("delta").as_object();
    if (const bj::value* calls = delta.if_contains("tool_calls")) {
      const bj::value& call = calls->at(0);
      EXPECT_EQ(call.at("index"), 0);
      if (call.as_object().contains("id")) {
        saw_start = true;
        EXPECT_EQ(call.at("id"), "toolu_9");
        EXPECT_EQ(call.at("type"), "function");
        EXPECT_EQ(call.at("function").at("name"), "get_weather");
      }
      arguments += call.at("function").at("arguments").as_string();
    }
  }
  EXPECT_TRUE(saw_start);
  EXPECT_EQ(Json(arguments), Json(R"({"city":"Paris"})"));
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(payloads.back(), "[DONE]");
}

TEST(AnthropicStreamTest, ErrorEventEndsTheStreamWithAnOpenAiError) {
  AnthropicStream stream(false, 1);
  std::string out;
  stream.OnData(kTextStream[0], out);
  stream.OnData(kTextStream[1], out);
  out.clear();
  stream.OnData(R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})",
                out);
  EXPECT_TRUE(stream.failed());
  EXPECT_FALSE(stream.finished());
  const std::vector<std::string> payloads = Payloads(out);
  ASSERT_EQ(payloads.size(), 1u);
  EXPECT_EQ(Json(payloads[0]).at("error").at("code"), "overloaded_error");
  EXPECT_THAT(payloads[0], HasSubstr("Overloaded"));
  out.clear();
  stream.OnData(kTextStream[7], out);
  EXPECT_TRUE(out.empty()) << "nothing after the error";
}

TEST(AnthropicStreamTest, GarbageIsIgnoredAndOutputStaysValidJson) {
  AnthropicStream stream(true, 1);
  std::string out;
  for (
      std::string_view junk :
      {"", "{", "[1,2]", R"({"type":"content_block_delta"})",
       R"({"type":"content_block_delta","index":7,"delta":{"type":"input_json_delta","partial_json":"x"}})",
       R"({"type":"message_delta","usage":{"output_tokens":-3}})", "\xff\xfe"}) {
    stream.OnData(junk, out);
  }
  for (const std::string& payload : Payloads(out)) {
    boost::system::error_code ec;
    bj::parse(payload, ec);
    EXPECT_FALSE(ec) << payload;
  }
  EXPECT_FALSE(stream.finished());
}

}  // namespace
}  // namespace berry::dialect::anthropic_test
