// The Anthropic dialect end to end: clients speak OpenAI's /v1/chat/completions to berry-proxy,
// which speaks Anthropic's Messages API to a provider with backend_type = "anthropic" (here
// MockAnthropic): requests and answers translated both ways, streams included, provider errors
// mapped and failed over to an OpenAI backend of the same model, streams cut in the middle, and
// the endpoints Anthropic has no equivalent for.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/proxy_test_util.h"
#include "tests/support/mock_anthropic.h"

namespace berry::itest::proxy_anthropic_test {
namespace {

using test_support::AnthropicBehavior;
using test_support::MockAnthropic;

std::unique_ptr<MockAnthropic> StartAnthropic() {
  auto mock = MockAnthropic::Start();
  if (!mock.ok()) {
    Fatal("mock Anthropic did not start: " + mock.status().ToString());
  }
  return *std::move(mock);
}

// Provider "claude" (backend_type `type`) with key sk-ant-test serving model "chat" as
// "claude-up".
std::string AnthropicProvider(const MockAnthropic& mock, std::string_view type = "anthropic",
                              std::string_view extra = "") {
  return absl::StrCat("[providers.claude]\nbase_url = \"", mock.base_url(),
                      "\"\napi_key = \"sk-ant-test\"\nbackend_type = \"", std::string(type),
                      "\"\nmodels = [\"claude-up\"]\n", std::string(extra), "\n");
}

std::string AnthropicOnlyConfig(const MockAnthropic& mock, std::string_view type = "anthropic",
                                std::string_view settings = "") {
  return SettingsToml(settings) + AnthropicProvider(mock, type) + ModelToml("chat") +
         BackendToml("chat", "claude", "claude-up");
}

// "chat" over the Anthropic provider (priority 1) and an OpenAI one (priority 2), failover.
std::string MixedFailoverConfig(const MockAnthropic& anthropic, const MockUpstream& openai) {
  return AnthropicProvider(anthropic) + ProviderToml("acme", openai.base_url()) +
         ModelToml("chat", R"(strategy = "failover")") +
         BackendToml("chat", "claude", "claude-up", 1, "priority = 1") +
         BackendToml("chat", "acme", "up-model", 1, "priority = 2");
}

const boost::json::value& Choice(const boost::json::value& completion) {
  return completion.at("choices").at(0);
}

TEST(ProxyAnthropic, ChatIsTranslatedBothWays) {
  auto mock = StartAnthropic();
  for (const std::string_view type : {"anthropic", "claude"}) {
    SCOPED_TRACE(type);
    auto proxy = StartProxy(AnthropicOnlyConfig(*mock, type));
    const HttpResponse response = Post(*proxy, "/v1/chat/completions",
                                       R"({"model":"chat","messages":[
        {"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
        "temperature":0.2,"stop":"END"})",
                                       {{"Authorization", "Bearer client-token"}});
    ASSERT_EQ(response.status, 200) << response.body;
    const boost::json::value completion = ParseJson(response.body);
    EXPECT_EQ(StringAt(completion, "object"), "chat.completion");
    EXPECT_EQ(StringAt(completion, "model"), "claude-up");
    EXPECT_EQ(Choice(completion).at("message").at("content"),
              "Hello from the mock Anthropic provider.");
    EXPECT_EQ(Choice(completion).at("finish_reason"), "stop");
    EXPECT_EQ(completion.at("usage").at("prompt_tokens"), 11);
    EXPECT_EQ(completion.at("usage").at("completion_tokens"), 7);

    const test_support::AnthropicRequest sent = mock->requests().back();
    EXPECT_EQ(sent.method, "POST");
    EXPECT_EQ(sent.target, "/v1/messages");
    EXPECT_EQ(sent.Header("x-api-key").value_or(""), "sk-ant-test");
    EXPECT_EQ(sent.Header("anthropic-version").value_or(""), "2023-06-01");
    EXPECT_FALSE(sent.Header("authorization").has_value()) << "no bearer token to Anthropic";
    const boost::json::value body = ParseJson(sent.body);
    EXPECT_EQ(StringAt(body, "model"), "claude-up");
    EXPECT_EQ(body.at("max_tokens"), 4096);
    EXPECT_EQ(body.at("system").at(0).at("text"), "Be brief.");
    EXPECT_EQ(body.at("stop_sequences").at(0), "END");

    const Metrics metrics = Scrape(*proxy);
    const std::string backend = BackendId("chat", "claude", "claude-up");
    EXPECT_EQ(metrics.Value("berry_tokens_total", {{"backend", backend}, {"kind", "prompt"}}), 11);
    EXPECT_EQ(metrics.Value("berry_tokens_total", {{"backend", backend}, {"kind", "completion"}}),
              7);
  }
}

TEST(ProxyAnthropic, ToolUseBecomesToolCalls) {
  auto mock = StartAnthropic();
  mock->SetBehavior(AnthropicBehavior::ToolUse());
  auto proxy = StartProxy(AnthropicOnlyConfig(*mock));
  const HttpResponse response = Post(*proxy, "/v1/chat/completions", R"({"model":"chat",
      "messages":[{"role":"user","content":"Weather in Paris?"}],
      "tools":[{"type":"function","function":{"name":"get_weather",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
      "tool_choice":"required"})");
  ASSERT_EQ(response.status, 200) << response.body;
  const boost::json::value completion = ParseJson(response.body);
  EXPECT_EQ(Choice(completion).at("finish_reason"), "tool_calls");
  const boost::json::value& call = Choice(completion).at("message").at("tool_calls").at(0);
  EXPECT_EQ(call.at("function").at("name"), "get_weather");
  EXPECT_EQ(ParseJson(call.at("function").at("arguments").as_string()),
            ParseJson(R"({"city":"Paris"})"));
  const boost::json::value sent = ParseJson(mock->requests().back().body);
  EXPECT_EQ(sent.at("tool_choice"), ParseJson(R"({"type":"any"})"));
  EXPECT_EQ(StringAt(sent.at("tools").at(0), "name"), "get_weather");
}

TEST(ProxyAnthropic, StreamIsTranslatedIncrementallyWithUsage) {
  auto mock = StartAnthropic();
  auto proxy = StartProxy(AnthropicOnlyConfig(*mock));
  HttpRequest request =
      PostRequest(*proxy, "/v1/chat/completions",
                  ChatBody("chat", R"(,"stream":true,"stream_options":{"include_usage":true})"));
  auto streamed = test_support::FetchStreaming(request, {});
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  const StreamedResponse& response = *streamed;
  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(response.body_status.ok()) << response.body_status;
  ASSERT_TRUE(response.done()) << response.body;
  std::string text;
  std::string finish;
  bool saw_usage = false;
  for (const test_support::SseEvent& event : response.events) {
    if (event.data == "[DONE]") {
      continue;
    }
    const boost::json::value chunk = ParseJson(event.data);
    ASSERT_EQ(StringAt(chunk, "object"), "chat.completion.chunk") << event.data;
    const boost::json::array& choices = chunk.at("choices").as_array();
    if (choices.empty()) {
      saw_usage = true;
      EXPECT_EQ(chunk.at("usage").at("prompt_tokens"), 11);
      EXPECT_EQ(chunk.at("usage").at("completion_tokens"), 7);
      continue;
    }
    const boost::json::object& delta = choices[0].at("delta").as_object();
    if (const auto* content = delta.if_contains("content")) {
      text += content->as_string();
    }
    if (!choices[0].at("finish_reason").is_null()) {
      finish = choices[0].at("finish_reason").as_string();
    }
  }
  EXPECT_EQ(text, "Hello from the mock Anthropic provider.");
  EXPECT_EQ(finish, "stop");
  EXPECT_TRUE(saw_usage);
  EXPECT_TRUE(ParseJson(mock->requests().back().body).at("stream").as_bool());
  const std::string backend = BackendId("chat", "claude", "claude-up");
  EXPECT_EQ(WaitForMetric(*proxy, "berry_tokens_total",
                          {{"backend", backend}, {"kind", "completion"}}, 7),
            7);
}

TEST(ProxyAnthropic, StreamedToolUseBecomesArgumentDeltas) {
  auto mock = StartAnthropic();
  mock->SetBehavior(AnthropicBehavior::ToolUse());
  auto proxy = StartProxy(AnthropicOnlyConfig(*mock));
  const StreamedResponse response = StreamChat(*proxy, "chat");
  ASSERT_TRUE(response.done()) << response.body;
  std::string arguments;
  std::string name;
  for (const test_support::SseEvent& event : response.events) {
    if (event.data == "[DONE]") {
      continue;
    }
    const boost::json::value chunk = ParseJson(event.data);
    const auto* calls = chunk.at("choices").at(0).at("delta").as_object().if_contains("tool_calls");
    if (calls != nullptr) {
      const boost::json::object& function = calls->at(0).at("function").as_object();
      if (const auto* n = function.if_contains("name")) {
        name = n->as_string();
      }
      arguments += function.at("arguments").as_string();
    }
  }
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(ParseJson(arguments), ParseJson(R"({"city":"Paris"})"));
}

TEST(ProxyAnthropic, StreamCutMidwayEndsWithAnErrorEventAndNoDone) {
  auto mock = StartAnthropic();
  mock->SetBehavior(AnthropicBehavior::CutMidStream(4));  // message_start .. first text delta
  auto proxy = StartProxy(AnthropicOnlyConfig(*mock));
  const StreamedResponse response = StreamChat(*proxy, "chat");
  EXPECT_EQ(response.status, 200);
  EXPECT_FALSE(response.body_status.ok()) << "no chunked terminator";
  EXPECT_FALSE(response.done());
  ASSERT_GE(response.events.size(), 2u) << response.body;
  EXPECT_EQ(StringAt(ParseJson(response.events[0].data), "object"), "chat.completion.chunk");
  const boost::json::value last = ParseJson(response.events.back().data);
  ASSERT_TRUE(last.is_object()) << response.body;
  EXPECT_EQ(StringAt(last.at("error"), "type"), "upstream_error");
  EXPECT_EQ(
      WaitForMetric(*proxy, "berry_stream_broken_total",
                    {{"model", "chat"}, {"backend", BackendId("chat", "claude", "claude-up")}}, 1),
      1);
}

TEST(ProxyAnthropic, ErrorEventInTheStreamEndsItWithAnOpenAiError) {
  auto mock = StartAnthropic();
  mock->SetBehavior(AnthropicBehavior::ErrorEvent());
  auto proxy = StartProxy(AnthropicOnlyConfig(*mock));
  const StreamedResponse response = StreamChat(*proxy, "chat");
  EXPECT_FALSE(response.done());
  EXPECT_FALSE(response.body_status.ok());
  ASSERT_FALSE(response.events.empty());
  const boost::json::value last = ParseJson(response.events.back().data);
  EXPECT_EQ(StringAt(last.at("error"), "code"), "overloaded_error") << response.body;
}

TEST(ProxyAnthropic, ErrorsAreOpenAiShapedWithTheirStatus) {
  auto mock = StartAnthropic();
  auto proxy = StartProxy(AnthropicOnlyConfig(*mock));
  mock->Enqueue(AnthropicBehavior::Error(400, "invalid_request_error", "temperature: too hot"));
  HttpResponse response = Chat(*proxy, "chat");
  ExpectOpenAiError(response, 400, "invalid_request_error", "invalid_request_error");
  EXPECT_NE(response.body.find("too hot"), std::string::npos) << response.body;

  mock->SetBehavior(AnthropicBehavior::Error(529, "overloaded_error", "Overloaded"));
  response = Chat(*proxy, "chat");
  ExpectOpenAiError(response, 503, "server_error", "overloaded_error");
}

TEST(ProxyAnthropic, FieldsWithNoEquivalentAreRefusedWithoutCallingTheProvider) {
  auto mock = StartAnthropic();
  auto proxy = StartProxy(AnthropicOnlyConfig(*mock));
  const HttpResponse response = Post(*proxy, "/v1/chat/completions", ChatBody("chat", R"(,"n":3)"));
  ExpectOpenAiError(response, 400, "invalid_request_error", nullptr);
  EXPECT_EQ(StringAt(ParseJson(response.body).at("error"), "param"), "n");
  EXPECT_EQ(mock->messages_served(), 0);
}

// A backend whose dialect cannot express the request was never sent it: the next backend is
// tried even with no retries allowed, and nothing counts as a retry.
TEST(ProxyAnthropic, AFieldAnthropicCannotExpressGoesToAnOpenAiBackendWithoutSpendingARetry) {
  auto anthropic = StartAnthropic();
  auto openai = StartMock("acme");
  auto proxy =
      StartProxy(SettingsToml("max_retries = 0") + MixedFailoverConfig(*anthropic, *openai));

  const HttpResponse response = Post(*proxy, "/v1/chat/completions", ChatBody("chat", R"(,"n":3)"));
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(anthropic->requests().size(), 0u);
  ASSERT_EQ(openai->requests().size(), 1u);
  EXPECT_EQ(openai->requests()[0].model, "up-model");
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 0);

  // Without the field, Anthropic (first in the failover order) serves it.
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
  EXPECT_EQ(anthropic->messages_served(), 1);
  EXPECT_EQ(openai->requests().size(), 1u);
}

TEST(ProxyAnthropic, OverloadedAnthropicFailsOverToAnOpenAiBackend) {
  auto anthropic = StartAnthropic();
  anthropic->SetBehavior(AnthropicBehavior::Error(529, "overloaded_error", "Overloaded"));
  auto openai = StartMock("acme");
  auto proxy = StartProxy(MixedFailoverConfig(*anthropic, *openai));

  const HttpResponse response = Chat(*proxy, "chat");
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(anthropic->messages_served(), 1);
  ASSERT_EQ(openai->requests().size(), 1u);
  EXPECT_EQ(openai->requests()[0].model, "up-model");
  EXPECT_EQ(openai->requests()[0].Header("Authorization").value_or(""), "Bearer sk-acme-secret");

  // A stream fails over too: the error came before the first byte.
  const StreamedResponse streamed = StreamChat(*proxy, "chat");
  EXPECT_TRUE(streamed.done()) << streamed.body;
  EXPECT_EQ(anthropic->messages_served(), 2);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 2);
}

TEST(ProxyAnthropic, EmbeddingsAndCompletionsSkipAnthropicBackends) {
  auto anthropic = StartAnthropic();
  auto openai = StartMock("acme");
  // Anthropic first in the failover order: selection must still skip it.
  auto proxy = StartProxy(MixedFailoverConfig(*anthropic, *openai));
  for (const std::string_view path : {"/v1/embeddings", "/v1/completions"}) {
    SCOPED_TRACE(path);
    const HttpResponse response =
        Post(*proxy, path, R"({"model":"chat","input":"x","prompt":"x"})");
    EXPECT_EQ(response.status, 200) << response.body;
  }
  EXPECT_EQ(anthropic->requests().size(), 0u);
  EXPECT_EQ(openai->requests().size(), 2u);
}

TEST(ProxyAnthropic, EmbeddingsToAnAnthropicOnlyModelAreA400) {
  auto anthropic = StartAnthropic();
  auto proxy = StartProxy(AnthropicOnlyConfig(*anthropic));
  for (const std::string_view path : {"/v1/embeddings", "/v1/completions"}) {
    SCOPED_TRACE(path);
    const HttpResponse response = Post(*proxy, path, R"({"model":"chat","input":"x"})");
    ExpectOpenAiError(response, 400, "invalid_request_error", nullptr);
    EXPECT_NE(response.body.find("/v1/chat/completions"), std::string::npos) << response.body;
  }
  EXPECT_EQ(anthropic->requests().size(), 0u);
}

}  // namespace
}  // namespace berry::itest::proxy_anthropic_test
