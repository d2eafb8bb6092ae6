// Anthropic's Messages API in front, end to end: clients built for Anthropic call berry-proxy's
// POST /v1/messages, served by an Anthropic backend (passed through, model rewritten), an OpenAI
// backend or a Gemini backend (translated both ways), streams included; tool use; failover before
// the first byte; streams cut in the middle; x-api-key auth; Anthropic-shaped errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/dialect_test_util.h"

namespace berry::itest::proxy_messages_test {
namespace {

using test_support::AnthropicBehavior;
using test_support::GeminiBehavior;
using test_support::MockAnthropic;
using test_support::MockGemini;

constexpr char kToken[] = "berry-msg-0123456789abcdef";

std::string AnthropicProvider(const MockAnthropic& mock) {
  return AnthropicProviderToml("claude", mock);
}

std::string GeminiProvider(const MockGemini& mock) {
  return GeminiProviderToml("google", mock, "gemini-up");
}

std::string Users() { return absl::StrCat("[users.ann]\ntoken = \"", kToken, "\"\n\n"); }

HttpHeaders ApiKey() { return {{"x-api-key", std::string(kToken)}}; }

std::string MessagesBody(std::string_view extra = "") {
  return absl::StrCat(R"({"model":"chat","max_tokens":256,)",
                      R"("messages":[{"role":"user","content":"Hi"}])", std::string(extra), "}");
}

HttpResponse PostMessages(const TestProxy& proxy, std::string body,
                          HttpHeaders headers = ApiKey()) {
  return Post(proxy, "/v1/messages", std::move(body), std::move(headers));
}

StreamedResponse StreamMessages(const TestProxy& proxy, std::string body,
                                HttpHeaders headers = ApiKey()) {
  HttpRequest request = PostRequest(proxy, "/v1/messages", std::move(body), std::move(headers));
  auto response = test_support::FetchStreaming(request, {});
  if (!response.ok()) {
    Fatal("streaming request failed: " + response.status().ToString());
  }
  return *std::move(response);
}

// The `type` of every event's data, in order.
std::vector<std::string> EventTypes(const StreamedResponse& response) {
  std::vector<std::string> types;
  for (const test_support::SseEvent& event : response.events) {
    types.push_back(StringAt(ParseJson(event.data), "type"));
  }
  return types;
}

// The text of every text_delta, joined.
std::string StreamedText(const StreamedResponse& response) {
  std::string text;
  for (const test_support::SseEvent& event : response.events) {
    const boost::json::value data = ParseJson(event.data);
    if (StringAt(data, "type") == "content_block_delta" &&
        StringAt(data.at("delta"), "type") == "text_delta") {
      text += StringAt(data.at("delta"), "text");
    }
  }
  return text;
}

// Checks the Anthropic error shape, its status and type.
void ExpectAnthropicError(const HttpResponse& response, int status, std::string_view type) {
  EXPECT_EQ(response.status, status) << response.body;
  EXPECT_EQ(response.Header("Content-Type").value_or(""), "application/json");
  const boost::json::value body = ParseJson(response.body);
  ASSERT_TRUE(body.is_object()) << response.body;
  EXPECT_EQ(StringAt(body, "type"), "error") << response.body;
  ASSERT_TRUE(body.as_object().contains("error")) << response.body;
  EXPECT_EQ(StringAt(body.at("error"), "type"), type) << response.body;
  EXPECT_FALSE(StringAt(body.at("error"), "message").empty()) << response.body;
}

TEST(ProxyMessages, AnthropicBackendGetsTheBodyAsItIsWithTheModelRewritten) {
  auto mock = StartAnthropicMock();
  auto proxy = StartProxy(Users() + AnthropicProvider(*mock) + ModelToml("chat") +
                          BackendToml("chat", "claude", "claude-up"));
  const std::string body = MessagesBody(R"(,"top_k":3,"system":"Be brief.")");
  HttpHeaders headers = ApiKey();
  headers.emplace_back("anthropic-version", "2023-01-01");
  headers.emplace_back("anthropic-beta", "tools-2024");
  const HttpResponse response = PostMessages(*proxy, body, headers);
  ASSERT_EQ(response.status, 200) << response.body;
  const boost::json::value message = ParseJson(response.body);
  EXPECT_EQ(StringAt(message, "type"), "message");
  EXPECT_EQ(StringAt(message, "model"), "claude-up") << "the answer is relayed as it is";
  EXPECT_EQ(StringAt(message.at("content").at(0), "text"),
            "Hello from the mock Anthropic provider.");

  const test_support::AnthropicRequest sent = mock->requests().back();
  EXPECT_EQ(sent.target, "/v1/messages");
  std::string expected = body;
  expected.replace(expected.find(R"("chat")"), 6, R"("claude-up")");
  EXPECT_EQ(sent.body, expected);
  EXPECT_EQ(sent.Header("x-api-key").value_or(""), "sk-ant-test") << "never the client's token";
  EXPECT_EQ(sent.Header("anthropic-version").value_or(""), "2023-01-01");
  EXPECT_EQ(sent.Header("anthropic-beta").value_or(""), "tools-2024");

  const Metrics metrics = Scrape(*proxy);
  const std::string backend = BackendId("chat", "claude", "claude-up");
  EXPECT_EQ(metrics.Value("berry_tokens_total", {{"backend", backend}, {"kind", "prompt"}}), 11);
  EXPECT_EQ(metrics.Value("berry_tokens_total", {{"backend", backend}, {"kind", "completion"}}), 7);
}

TEST(ProxyMessages, AnthropicBackendWithoutClientVersionGetsTheConfiguredOne) {
  auto mock = StartAnthropicMock();
  auto proxy = StartProxy(AnthropicProvider(*mock) + ModelToml("chat") +
                          BackendToml("chat", "claude", "claude-up"));
  ASSERT_EQ(PostMessages(*proxy, MessagesBody(), {}).status, 200);
  EXPECT_EQ(mock->requests().back().Header("anthropic-version").value_or(""), "2023-06-01");
}

TEST(ProxyMessages, AnthropicStreamIsRelayedAsItIs) {
  auto mock = StartAnthropicMock();
  mock->SetBehavior(AnthropicBehavior::ToolUse());
  auto proxy = StartProxy(AnthropicProvider(*mock) + ModelToml("chat") +
                          BackendToml("chat", "claude", "claude-up"));
  const StreamedResponse response = StreamMessages(*proxy, MessagesBody(R"(,"stream":true)"));
  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(response.body_status.ok()) << response.body_status;
  const std::vector<std::string> types = EventTypes(response);
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.front(), "message_start");
  EXPECT_EQ(types.back(), "message_stop");
  EXPECT_NE(response.body.find("event: content_block_delta"), std::string::npos);
  EXPECT_NE(response.body.find("input_json_delta"), std::string::npos);
  const Metrics metrics = Scrape(*proxy);
  EXPECT_EQ(
      metrics.Value("berry_tokens_total", {{"backend", BackendId("chat", "claude", "claude-up")},
                                           {"kind", "completion"}}),
      7);
}

TEST(ProxyMessages, AnthropicStreamCutMidwayEndsWithAnErrorEvent) {
  auto mock = StartAnthropicMock();
  mock->SetBehavior(AnthropicBehavior::CutMidStream(4));
  auto proxy = StartProxy(AnthropicProvider(*mock) + ModelToml("chat") +
                          BackendToml("chat", "claude", "claude-up"));
  const StreamedResponse response = StreamMessages(*proxy, MessagesBody(R"(,"stream":true)"));
  EXPECT_EQ(response.status, 200);
  EXPECT_FALSE(response.body_status.ok()) << "no chunked terminator after a broken stream";
  ASSERT_FALSE(response.events.empty());
  const boost::json::value last = ParseJson(response.events.back().data);
  EXPECT_EQ(StringAt(last, "type"), "error");
  EXPECT_EQ(StringAt(last.at("error"), "type"), "api_error");
  EXPECT_NE(response.body.find("event: error\ndata: "), std::string::npos) << response.body;
}

TEST(ProxyMessages, OpenAiBackendIsTranslatedBothWays) {
  auto openai = StartMock("acme");
  auto proxy = StartProxy(ProviderToml("acme", openai->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme", "up-model"));
  const HttpResponse response = PostMessages(
      *proxy, MessagesBody(R"(,"system":"Be brief.","stop_sequences":["END"],"temperature":0.3)"),
      {});
  ASSERT_EQ(response.status, 200) << response.body;
  const boost::json::value message = ParseJson(response.body);
  EXPECT_EQ(StringAt(message, "type"), "message");
  EXPECT_EQ(StringAt(message, "role"), "assistant");
  EXPECT_EQ(StringAt(message, "model"), "chat");
  EXPECT_EQ(StringAt(message, "stop_reason"), "end_turn");
  EXPECT_EQ(StringAt(message.at("content").at(0), "type"), "text");
  EXPECT_EQ(StringAt(message.at("content").at(0), "text"), "Hello from the mock upstream.");
  EXPECT_EQ(message.at("usage"), ParseJson(R"({"input_tokens":10,"output_tokens":20})"));

  const test_support::RecordedRequest sent = openai->requests().back();
  EXPECT_EQ(sent.target, "/v1/chat/completions");
  const boost::json::value body = ParseJson(sent.body);
  EXPECT_EQ(StringAt(body, "model"), "up-model");
  EXPECT_EQ(body.at("messages").at(0), ParseJson(R"({"role":"system","content":"Be brief."})"));
  EXPECT_EQ(body.at("max_tokens"), 256);
  EXPECT_EQ(body.at("stop").at(0), "END");

  const Metrics metrics = Scrape(*proxy);
  EXPECT_EQ(metrics.Value("berry_tokens_total",
                          {{"backend", BackendId("chat", "acme", "up-model")}, {"kind", "prompt"}}),
            10);
}

TEST(ProxyMessages, OpenAiToolCallsBecomeToolUse) {
  auto openai = StartMock("acme");
  test_support::Behavior behavior = test_support::Behavior::Json();
  behavior.json_body = R"({"id":"chatcmpl-9","object":"chat.completion","model":"up-model",
      "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",
        "content":null,"tool_calls":[{"id":"call_7","type":"function",
          "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}}],
      "usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}})";
  openai->SetDefaultBehavior(behavior);
  auto proxy = StartProxy(ProviderToml("acme", openai->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme", "up-model"));
  const HttpResponse response = PostMessages(
      *proxy, MessagesBody(R"(,"tools":[{"name":"get_weather","input_schema":{"type":"object"}}],
          "tool_choice":{"type":"any"})"),
      {});
  ASSERT_EQ(response.status, 200) << response.body;
  const boost::json::value message = ParseJson(response.body);
  EXPECT_EQ(StringAt(message, "stop_reason"), "tool_use");
  EXPECT_EQ(message.at("content").at(0),
            ParseJson(R"({"type":"tool_use","id":"call_7","name":"get_weather",
                          "input":{"city":"Paris"}})"));
  const boost::json::value sent = ParseJson(openai->requests().back().body);
  EXPECT_EQ(sent.at("tool_choice"), "required");
  EXPECT_EQ(StringAt(sent.at("tools").at(0).at("function"), "name"), "get_weather");
}

TEST(ProxyMessages, OpenAiStreamBecomesAnthropicEventsWithUsage) {
  auto openai = StartMock("acme");
  auto proxy = StartProxy(ProviderToml("acme", openai->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme", "up-model"));
  const StreamedResponse response = StreamMessages(*proxy, MessagesBody(R"(,"stream":true)"), {});
  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(response.body_status.ok()) << response.body_status;
  const std::vector<std::string> types = EventTypes(response);
  ASSERT_GE(types.size(), 6u) << response.body;
  EXPECT_EQ(types[0], "message_start");
  EXPECT_EQ(types[1], "content_block_start");
  EXPECT_EQ(types[types.size() - 3], "content_block_stop");
  EXPECT_EQ(types[types.size() - 2], "message_delta");
  EXPECT_EQ(types.back(), "message_stop");
  EXPECT_NE(response.body.find("event: message_stop\ndata: "), std::string::npos);
  EXPECT_FALSE(StreamedText(response).empty());
  const boost::json::value delta = ParseJson(response.events[response.events.size() - 2].data);
  EXPECT_EQ(StringAt(delta.at("delta"), "stop_reason"), "end_turn");
  EXPECT_EQ(delta.at("usage").at("output_tokens"), 20);
  const boost::json::value sent = ParseJson(openai->requests().back().body);
  EXPECT_EQ(sent.at("stream_options"), ParseJson(R"({"include_usage":true})"));
  const Metrics metrics = Scrape(*proxy);
  EXPECT_EQ(metrics.Value("berry_tokens_total", {{"backend", BackendId("chat", "acme", "up-model")},
                                                 {"kind", "completion"}}),
            20);
}

TEST(ProxyMessages, OpenAiStreamCutMidwayEndsWithAnErrorEvent) {
  auto openai = StartMock("acme");
  openai->SetDefaultBehavior(test_support::Behavior::CloseMidStream(2));
  auto proxy = StartProxy(ProviderToml("acme", openai->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme", "up-model"));
  const StreamedResponse response = StreamMessages(*proxy, MessagesBody(R"(,"stream":true)"), {});
  EXPECT_EQ(response.status, 200);
  EXPECT_FALSE(response.body_status.ok());
  const std::vector<std::string> types = EventTypes(response);
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.front(), "message_start");
  EXPECT_EQ(types.back(), "error");
  EXPECT_EQ(std::count(types.begin(), types.end(), "message_stop"), 0);
}

TEST(ProxyMessages, GeminiBackendIsTranslatedBothWays) {
  auto gemini = StartGeminiMock();
  auto proxy = StartProxy(GeminiProvider(*gemini) + ModelToml("chat") +
                          BackendToml("chat", "google", "gemini-up"));
  const HttpResponse response = PostMessages(*proxy, MessagesBody(R"(,"system":"Be brief.")"), {});
  ASSERT_EQ(response.status, 200) << response.body;
  const boost::json::value message = ParseJson(response.body);
  EXPECT_EQ(StringAt(message, "type"), "message");
  EXPECT_EQ(StringAt(message, "model"), "chat");
  EXPECT_EQ(StringAt(message, "stop_reason"), "end_turn");
  EXPECT_EQ(StringAt(message.at("content").at(0), "type"), "text");
  EXPECT_FALSE(StringAt(message.at("content").at(0), "text").empty());
  const boost::json::value sent = ParseJson(gemini->requests().back().body);
  EXPECT_TRUE(sent.as_object().contains("systemInstruction")) << gemini->requests().back().body;
}

TEST(ProxyMessages, GeminiStreamedFunctionCallBecomesToolUseEvents) {
  auto gemini = StartGeminiMock();
  gemini->SetBehavior(GeminiBehavior::FunctionCall());
  auto proxy = StartProxy(GeminiProvider(*gemini) + ModelToml("chat") +
                          BackendToml("chat", "google", "gemini-up"));
  const StreamedResponse response = StreamMessages(
      *proxy,
      MessagesBody(R"(,"stream":true,"tools":[{"name":"get_weather","input_schema":{"type":"object",
          "properties":{"city":{"type":"string"}}}}])"),
      {});
  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(response.body_status.ok()) << response.body_status;
  const std::vector<std::string> types = EventTypes(response);
  ASSERT_FALSE(types.empty()) << response.body;
  EXPECT_EQ(types.back(), "message_stop");
  bool saw_tool_use = false;
  std::string input;
  for (const test_support::SseEvent& event : response.events) {
    const boost::json::value data = ParseJson(event.data);
    if (StringAt(data, "type") == "content_block_start" &&
        StringAt(data.at("content_block"), "type") == "tool_use") {
      saw_tool_use = true;
      EXPECT_EQ(StringAt(data.at("content_block"), "name"), "get_weather");
    }
    if (StringAt(data, "type") == "content_block_delta" &&
        StringAt(data.at("delta"), "type") == "input_json_delta") {
      input += StringAt(data.at("delta"), "partial_json");
    }
    if (StringAt(data, "type") == "message_delta") {
      EXPECT_EQ(StringAt(data.at("delta"), "stop_reason"), "tool_use");
    }
  }
  EXPECT_TRUE(saw_tool_use) << response.body;
  EXPECT_TRUE(ParseJson(input).is_object()) << input;
}

TEST(ProxyMessages, ErrorBeforeTheFirstByteFailsOverToAnotherBackend) {
  auto anthropic = StartAnthropicMock();
  anthropic->SetBehavior(AnthropicBehavior::Error(529, "overloaded_error", "Overloaded"));
  auto openai = StartMock("acme");
  auto proxy = StartProxy(AnthropicProvider(*anthropic) + ProviderToml("acme", openai->base_url()) +
                          ModelToml("chat", R"(strategy = "failover")") +
                          BackendToml("chat", "claude", "claude-up", 1, "priority = 1") +
                          BackendToml("chat", "acme", "up-model", 1, "priority = 2"));
  const StreamedResponse response = StreamMessages(*proxy, MessagesBody(R"(,"stream":true)"), {});
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(EventTypes(response).back(), "message_stop");
  EXPECT_EQ(StreamedText(response),
            "Hello from the mock upstream.Hello from the mock upstream."
            "Hello from the mock upstream.");
  EXPECT_EQ(anthropic->requests().size(), 1u);
  EXPECT_EQ(openai->requests().size(), 1u);
}

TEST(ProxyMessages, EveryBackendFailingAnswersTheLastErrorInAnthropicShape) {
  auto anthropic = StartAnthropicMock();
  anthropic->SetBehavior(AnthropicBehavior::Error(529, "overloaded_error", "Overloaded"));
  auto proxy = StartProxy(AnthropicProvider(*anthropic) + ModelToml("chat") +
                          BackendToml("chat", "claude", "claude-up"));
  const HttpResponse passed = PostMessages(*proxy, MessagesBody(), {});
  ExpectAnthropicError(passed, 529, "overloaded_error");

  auto openai = StartMock("acme");
  openai->SetDefaultBehavior(test_support::Behavior::Fail(503));
  auto proxy2 = StartProxy(ProviderToml("acme", openai->base_url()) + ModelToml("chat") +
                           BackendToml("chat", "acme", "up-model"));
  ExpectAnthropicError(PostMessages(*proxy2, MessagesBody(), {}), 503, "overloaded_error");
}

TEST(ProxyMessages, XApiKeyAuthenticatesOnEveryRoute) {
  auto openai = StartMock("acme");
  auto proxy = StartProxy(Users() + ProviderToml("acme", openai->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme", "up-model"));
  EXPECT_EQ(PostMessages(*proxy, MessagesBody()).status, 200);
  EXPECT_EQ(Chat(*proxy, "chat", ApiKey()).status, 200);
  EXPECT_EQ(Get(*proxy, "/v1/models", ApiKey()).status, 200);
  EXPECT_FALSE(openai->requests().back().Header("x-api-key").has_value())
      << "the client's key never reaches a provider";

  ExpectAnthropicError(PostMessages(*proxy, MessagesBody(), {}), 401, "authentication_error");
  const HttpResponse wrong = PostMessages(*proxy, MessagesBody(), {{"x-api-key", "nope-key-123"}});
  ExpectAnthropicError(wrong, 401, "authentication_error");
  EXPECT_EQ(wrong.body.find("nope-key-123"), std::string::npos);
}

TEST(ProxyMessages, ProxyErrorsAreAnthropicShaped) {
  auto openai = StartMock("acme");
  auto proxy = StartProxy(Users() + ProviderToml("acme", openai->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme", "up-model"));
  ExpectAnthropicError(PostMessages(*proxy, "{not json"), 400, "invalid_request_error");
  ExpectAnthropicError(PostMessages(*proxy, R"({"model":"nope","max_tokens":5,"messages":[]})"),
                       404, "not_found_error");
  const HttpResponse refused = PostMessages(*proxy, MessagesBody(R"(,"mcp_servers":[])"));
  ExpectAnthropicError(refused, 400, "invalid_request_error");
  EXPECT_NE(refused.body.find("mcp_servers"), std::string::npos) << refused.body;
  EXPECT_TRUE(openai->requests().empty()) << "a refused field never reaches the provider";
}

TEST(ProxyMessages, RateLimitIsA429WithRetryAfterInAnthropicShape) {
  auto openai = StartMock("acme");
  auto proxy = StartProxy(absl::StrCat("[users.ann]\ntoken = \"", kToken,
                                       "\"\n[users.ann.rate_limit]\nrequests_per_minute = 1\n\n") +
                          ProviderToml("acme", openai->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme", "up-model"));
  ASSERT_EQ(PostMessages(*proxy, MessagesBody()).status, 200);
  const HttpResponse limited = PostMessages(*proxy, MessagesBody());
  ExpectAnthropicError(limited, 429, "rate_limit_error");
  EXPECT_TRUE(limited.Header("Retry-After").has_value());
}

}  // namespace
}  // namespace berry::itest::proxy_messages_test
