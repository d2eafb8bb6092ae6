// Anthropic's Messages API in front of OpenAI-shaped backends: request bodies (every mapped,
// dropped and refused field), whole responses, streams of chat chunks turned into Anthropic's
// event sequence (cut anywhere) and error bodies.
#include "data-plane/dialect/messages_front.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace berry::dialect::messages_front_test {
namespace {

namespace bj = boost::json;
using ::testing::HasSubstr;

bj::value Json(std::string_view text) { return bj::parse(text); }

bj::value Translate(std::string_view body, std::string_view model = "gpt-up") {
  std::string out;
  const std::optional<RequestError> error = MessagesToChatRequest(body, model, out);
  EXPECT_FALSE(error.has_value()) << (error ? error->message : "");
  return error ? bj::value() : Json(out);
}

RequestError Refused(std::string_view body) {
  std::string out;
  std::optional<RequestError> error = MessagesToChatRequest(body, "m", out);
  EXPECT_TRUE(error.has_value()) << "translated to " << out;
  return error.value_or(RequestError{});
}

TEST(MessagesRequestTest, SystemAndTextTurnsBecomeChatMessages) {
  const bj::value out = Translate(R"({"model":"custom","max_tokens":100,
      "system":[{"type":"text","text":"Be brief."},{"type":"text","text":"No emoji."}],
      "messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},
                  {"role":"user","content":[{"type":"text","text":"Again"}]}],
      "temperature":0.5,"top_p":0.9,"stop_sequences":["END"],"metadata":{"user_id":"u1"}})");
  EXPECT_EQ(out, Json(R"({"model":"gpt-up","max_tokens":100,"temperature":0.5,"top_p":0.9,
      "stop":["END"],"user":"u1","messages":[
        {"role":"system","content":"Be brief.\n\nNo emoji."},
        {"role":"user","content":"Hi"},
        {"role":"assistant","content":"Hello"},
        {"role":"user","content":[{"type":"text","text":"Again"}]}]})"));
}

TEST(MessagesRequestTest, ImagesBecomeImageUrlParts) {
  const bj::value out = Translate(R"({"model":"c","max_tokens":5,"messages":[{"role":"user",
      "content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAA"}},
                 {"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]})");
  EXPECT_EQ(out.at("messages").at(0).at("content"),
            Json(R"([{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA"}},
                     {"type":"image_url","image_url":{"url":"https://x/y.png"}}])"));
}

TEST(MessagesRequestTest, ToolUseAndToolResultBecomeToolCallsAndToolMessages) {
  const bj::value out = Translate(R"({"model":"c","max_tokens":5,"messages":[
      {"role":"user","content":"Weather?"},
      {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},
        {"type":"text","text":"Let me check."},
        {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
      {"role":"user","content":[
        {"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"sunny"}]},
        {"type":"tool_result","tool_use_id":"toolu_2","content":"boom","is_error":true},
        {"type":"text","text":"Thanks"}]}],
      "tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object"},
                "cache_control":{"type":"ephemeral"}}],
      "tool_choice":{"type":"tool","name":"get_weather","disable_parallel_tool_use":true}})");
  const bj::array& messages = out.at("messages").as_array();
  ASSERT_EQ(messages.size(), 5u);
  EXPECT_EQ(messages[1], Json(R"({"role":"assistant","content":"Let me check.","tool_calls":[
      {"id":"toolu_1","type":"function",
       "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]})"));
  EXPECT_EQ(messages[2], Json(R"({"role":"tool","tool_call_id":"toolu_1","content":"sunny"})"));
  EXPECT_EQ(messages[3],
            Json(R"({"role":"tool","tool_call_id":"toolu_2","content":"Error: boom"})"));
  EXPECT_EQ(messages[4], Json(R"({"role":"user","content":[{"type":"text","text":"Thanks"}]})"));
  EXPECT_EQ(out.at("tools"), Json(R"([{"type":"function","function":{"name":"get_weather",
      "description":"Weather","parameters":{"type":"object"}}}])"));
  EXPECT_EQ(out.at("tool_choice"),
            Json(R"({"type":"function","function":{"name":"get_weather"}})"));
  EXPECT_EQ(out.at("parallel_tool_calls"), false);
}

TEST(MessagesRequestTest, ToolChoiceModes) {
  for (const auto& [anthropic, openai] :
       std::vector<std::pair<std::string, std::string>>{{R"({"type":"auto"})", R"("auto")"},
                                                        {R"({"type":"any"})", R"("required")"},
                                                        {R"({"type":"none"})", R"("none")"}}) {
    const bj::value out = Translate(
        R"({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":)" +
        anthropic + "}");
    EXPECT_EQ(out.at("tool_choice"), Json(openai)) << anthropic;
  }
}

TEST(MessagesRequestTest, StreamAsksForUsage) {
  const bj::value out = Translate(R"({"model":"c","max_tokens":5,"stream":true,
                    "messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(out.at("stream"), true);
  EXPECT_EQ(out.at("stream_options"), Json(R"({"include_usage":true})"));
}

TEST(MessagesRequestTest, HintsWithNoEquivalentAreDropped) {
  const bj::value out = Translate(R"({"model":"c","max_tokens":5,"top_k":5,
      "thinking":{"type":"enabled","budget_tokens":1024},"service_tier":"auto",
      "messages":[{"role":"user","content":"x"}]})");
  EXPECT_FALSE(out.as_object().contains("top_k"));
  EXPECT_FALSE(out.as_object().contains("thinking"));
  EXPECT_FALSE(out.as_object().contains("service_tier"));
}

TEST(MessagesRequestTest, FieldsWithNoEquivalentAreRefusedByName) {
  EXPECT_EQ(Refused(R"({"model":"c","max_tokens":5,"mcp_servers":[],
                       "messages":[{"role":"user","content":"x"}]})")
                .param,
            "mcp_servers");
  const RequestError server_tool = Refused(R"({"model":"c","max_tokens":5,
      "tools":[{"type":"web_search_20250305","name":"web_search"}],
      "messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(server_tool.param, "tools[0].type");
  EXPECT_THAT(server_tool.message, HasSubstr("web_search_20250305"));
  EXPECT_EQ(Refused(R"({"model":"c","max_tokens":5,"messages":[{"role":"user","content":[
                       {"type":"document","source":{}}]}]})")
                .param,
            "messages[0].content[0].type");
  EXPECT_EQ(
      Refused(R"({"model":"c","max_tokens":"5","messages":[{"role":"user","content":"x"}]})").param,
      "max_tokens");
  EXPECT_EQ(Refused(R"({"model":"c","messages":[{"role":"system","content":"x"}]})").param,
            "messages[0].role");
  EXPECT_EQ(Refused(R"({"model":"c","messages":[]})").param, "messages");
}

TEST(MessagesResponseTest, TextAndToolCallsBecomeContentBlocks) {
  std::string out;
  ASSERT_TRUE(ChatToMessagesResponse(R"({"id":"chatcmpl-1","object":"chat.completion",
      "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",
        "content":"Checking.","tool_calls":[{"id":"call_1","type":"function",
          "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}}],
      "usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}})",
                                     "chat", out));
  EXPECT_EQ(Json(out), Json(R"({"id":"msg_chatcmpl-1","type":"message","role":"assistant",
      "model":"chat","content":[{"type":"text","text":"Checking."},
        {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}}],
      "stop_reason":"tool_use","stop_sequence":null,
      "usage":{"input_tokens":12,"output_tokens":5}})"));
}

TEST(MessagesResponseTest, FinishReasonsBecomeStopReasons) {
  for (const auto& [finish, stop] :
       std::vector<std::pair<std::string, std::string>>{{"stop", "end_turn"},
                                                        {"length", "max_tokens"},
                                                        {"tool_calls", "tool_use"},
                                                        {"content_filter", "refusal"}}) {
    std::string out;
    ASSERT_TRUE(ChatToMessagesResponse(
        R"({"id":"x","choices":[{"message":{"content":"a"},"finish_reason":")" + finish + "\"}]}",
        "m", out));
    EXPECT_EQ(Json(out).at("stop_reason"), stop.c_str()) << finish;
  }
}

TEST(MessagesResponseTest, NotAChatCompletionIsRefused) {
  std::string out;
  EXPECT_FALSE(ChatToMessagesResponse("not json", "m", out));
  EXPECT_FALSE(ChatToMessagesResponse(R"({"choices":[]})", "m", out));
}

TEST(MessagesErrorTest, OpenAiErrorsKeepTheirMessageWithAnthropicTypes) {
  EXPECT_EQ(Json(MessagesErrorFromOpenAi(429, R"({"error":{"message":"slow down","type":"x"}})")),
            Json(R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})"));
  EXPECT_EQ(Json(MessagesErrorFromOpenAi(502, "<html>")).at("error").at("type"), "api_error");
  EXPECT_EQ(MessagesErrorType(401), "authentication_error");
  EXPECT_EQ(MessagesErrorType(404), "not_found_error");
  EXPECT_EQ(MessagesErrorType(503), "overloaded_error");
  EXPECT_EQ(MessagesErrorType(504), "timeout_error");
}

TEST(MessagesUsageTest, ReadsInputWithCachedAndOutputTokens) {
  const auto usage = MessagesUsage(
      R"({"type":"message","usage":{"input_tokens":3,"cache_read_input_tokens":4,"output_tokens":5}})");
  ASSERT_TRUE(usage.has_value());
  EXPECT_EQ(usage->prompt_tokens, 7u);
  EXPECT_EQ(usage->completion_tokens, 5u);
  EXPECT_FALSE(MessagesUsage(R"({"type":"message"})").has_value());
}

// The events of a translated stream as (event name, parsed data).
std::vector<std::pair<std::string, bj::value>> Events(std::string_view sse) {
  std::vector<std::pair<std::string, bj::value>> events;
  size_t at = 0;
  while (at < sse.size()) {
    const size_t end = sse.find("\n\n", at);
    EXPECT_NE(end, std::string_view::npos) << "not whole events: " << sse;
    if (end == std::string_view::npos) {
      break;
    }
    const std::string_view event = sse.substr(at, end - at);
    const size_t newline = event.find('\n');
    EXPECT_TRUE(event.starts_with("event: ")) << event;
    EXPECT_TRUE(event.substr(newline + 1).starts_with("data: ")) << event;
    const std::string name(event.substr(7, newline - 7));
    const bj::value data = Json(event.substr(newline + 7));
    EXPECT_EQ(data.at("type"), name.c_str());
    events.emplace_back(name, data);
    at = end + 2;
  }
  return events;
}

std::vector<std::string> Names(const std::vector<std::pair<std::string, bj::value>>& events) {
  std::vector<std::string> names;
  names.reserve(events.size());
  for (const auto& event : events) {
    names.push_back(event.first);
  }
  return names;
}

TEST(MessagesStreamTest, TextChunksBecomeTheEventSequenceWithUsage) {
  MessagesStream stream("chat");
  std::string out;
  stream.OnData(R"({"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})",
                out);
  stream.OnData(R"({"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]})", out);
  stream.OnData(R"({"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}}]})", out);
  stream.OnData(R"({"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"length"}]})", out);
  stream.OnData(R"({"id":"c1","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}})",
                out);
  EXPECT_FALSE(stream.finished());
  stream.OnData("[DONE]", out);
  EXPECT_TRUE(stream.finished());

  const auto events = Events(out);
  EXPECT_THAT(Names(events),
              ::testing::ElementsAre("message_start", "content_block_start", "content_block_delta",
                                     "content_block_delta", "content_block_stop", "message_delta",
                                     "message_stop"));
  EXPECT_EQ(events[0].second.at("message").at("id"), "msg_c1");
  EXPECT_EQ(events[0].second.at("message").at("model"), "chat");
  EXPECT_EQ(events[1].second.at("content_block"), Json(R"({"type":"text","text":""})"));
  EXPECT_EQ(events[2].second.at("delta"), Json(R"({"type":"text_delta","text":"Hel"})"));
  EXPECT_EQ(events[5].second.at("delta").at("stop_reason"), "max_tokens");
  EXPECT_EQ(events[5].second.at("usage"), Json(R"({"input_tokens":4,"output_tokens":2})"));
  ASSERT_TRUE(stream.usage().has_value());
  EXPECT_EQ(stream.usage()->completion_tokens, 2u);
}

TEST(MessagesStreamTest, ToolCallsBecomeToolUseBlocksWithInputJsonDeltas) {
  MessagesStream stream("chat");
  std::string out;
  stream.OnData(R"({"id":"c","choices":[{"delta":{"content":"Let me see."}}]})", out);
  stream.OnData(R"({"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1",
      "type":"function","function":{"name":"get_weather","arguments":""}}]}}]})",
                out);
  stream.OnData(R"({"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,
      "function":{"arguments":"{\"city\":"}}]}}]})",
                out);
  stream.OnData(R"({"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,
      "function":{"arguments":"\"Paris\"}"}}]}}]})",
                out);
  stream.OnData(R"({"id":"c","choices":[{"delta":{},"finish_reason":"tool_calls"}]})", out);
  stream.OnData("[DONE]", out);

  const auto events = Events(out);
  EXPECT_THAT(Names(events),
              ::testing::ElementsAre("message_start", "content_block_start", "content_block_delta",
                                     "content_block_stop", "content_block_start",
                                     "content_block_delta", "content_block_delta",
                                     "content_block_stop", "message_delta", "message_stop"));
  EXPECT_EQ(events[4].second.at("index"), 1);
  EXPECT_EQ(events[4].second.at("content_block"),
            Json(R"({"type":"tool_use","id":"call_1","name":"get_weather","input":{}})"));
  std::string json;
  for (size_t i : {5u, 6u}) {
    EXPECT_EQ(events[i].second.at("delta").at("type"), "input_json_delta");
    json += events[i].second.at("delta").at("partial_json").as_string();
  }
  EXPECT_EQ(Json(json), Json(R"({"city":"Paris"})"));
  EXPECT_EQ(events[8].second.at("delta").at("stop_reason"), "tool_use");
}

TEST(MessagesStreamTest, AnErrorChunkEndsTheStreamWithAnErrorEvent) {
  MessagesStream stream("chat");
  std::string out;
  stream.OnData(R"({"id":"c","choices":[{"delta":{"content":"a"}}]})", out);
  out.clear();
  stream.OnData(R"({"error":{"message":"boom","type":"server_error"}})", out);
  EXPECT_TRUE(stream.failed());
  const auto events = Events(out);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].second.at("error").at("type"), "api_error");
  EXPECT_THAT(std::string(events[0].second.at("error").at("message").as_string()),
              HasSubstr("boom"));
  out.clear();
  stream.OnData("[DONE]", out);
  EXPECT_EQ(out, "");
}

TEST(MessagesStreamTest, ACutStreamIsNotFinishedButAnEndAfterTheFinishReasonIs) {
  MessagesStream cut("chat");
  std::string out;
  cut.OnData(R"({"id":"c","choices":[{"delta":{"content":"a"}}]})", out);
  out.clear();
  cut.OnEnd(out);
  EXPECT_FALSE(cut.finished());
  EXPECT_EQ(out, "");

  MessagesStream no_done("chat");
  no_done.OnData(R"({"id":"c","choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]})", out);
  no_done.OnEnd(out);
  EXPECT_TRUE(no_done.finished());
  EXPECT_EQ(Names(Events(out)).back(), "message_stop");
}

TEST(MessagesErrorTest, SseErrorEventIsAnAnthropicErrorEvent) {
  const auto events = Events(MessagesSseErrorEvent("broke off"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].second,
            Json(R"({"type":"error","error":{"type":"api_error","message":"broke off"}})"));
}

}  // namespace
}  // namespace berry::dialect::messages_front_test
