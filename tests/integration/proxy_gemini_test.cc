// The Gemini dialect end to end: clients speak OpenAI's /v1/chat/completions to berry-proxy,
// which speaks the Gemini API to a provider with backend_type = "gemini" (here MockGemini):
// requests and answers translated both ways, streams included, provider errors mapped and failed
// over to an OpenAI backend of the same model, streams cut in the middle, and the endpoints
// Gemini has no equivalent for.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/proxy_test_util.h"
#include "tests/support/mock_gemini.h"

namespace berry::itest::proxy_gemini_test {
namespace {

using test_support::GeminiBehavior;
using test_support::MockGemini;

std::unique_ptr<MockGemini> StartGemini() {
  auto mock = MockGemini::Start();
  if (!mock.ok()) {
    Fatal("mock Gemini did not start: " + mock.status().ToString());
  }
  return *std::move(mock);
}

// Provider "google" (backend_type "gemini") with key gm-test-key serving model "chat" as
// "gemini-up".
std::string GeminiProvider(const MockGemini& mock) {
  return absl::StrCat("[providers.google]\nbase_url = \"", mock.base_url(),
                      "\"\napi_key = \"gm-test-key\"\nbackend_type = \"gemini\"\n"
                      "models = [\"gemini-up\"]\n\n");
}

std::string GeminiOnlyConfig(const MockGemini& mock) {
  return GeminiProvider(mock) + ModelToml("chat") + BackendToml("chat", "google", "gemini-up");
}

// "chat" over the Gemini provider (priority 1) and an OpenAI one (priority 2), failover.
std::string MixedFailoverConfig(const MockGemini& gemini, const MockUpstream& openai) {
  return GeminiProvider(gemini) + ProviderToml("acme", openai.base_url()) +
         ModelToml("chat", R"(strategy = "failover")") +
         BackendToml("chat", "google", "gemini-up", 1, "priority = 1") +
         BackendToml("chat", "acme", "up-model", 1, "priority = 2");
}

const boost::json::value& Choice(const boost::json::value& completion) {
  return completion.at("choices").at(0);
}

TEST(ProxyGemini, ChatIsTranslatedBothWays) {
  auto mock = StartGemini();
  auto proxy = StartProxy(GeminiOnlyConfig(*mock));
  const HttpResponse response = Post(*proxy, "/v1/chat/completions",
                                     R"({"model":"chat","messages":[
      {"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
      "temperature":0.2,"stop":"END","max_tokens":64})",
                                     {{"Authorization", "Bearer client-token"}});
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(response.Header("Content-Type").value_or(""), "application/json");
  const boost::json::value completion = ParseJson(response.body);
  EXPECT_EQ(StringAt(completion, "object"), "chat.completion");
  EXPECT_EQ(StringAt(completion, "model"), "chat") << "the client's model, not modelVersion";
  EXPECT_EQ(StringAt(completion, "id"), "chatcmpl-resp_mock_1");
  EXPECT_EQ(Choice(completion).at("message").at("content"), "Hello from the mock Gemini provider.");
  EXPECT_EQ(Choice(completion).at("finish_reason"), "stop");
  EXPECT_EQ(completion.at("usage").at("prompt_tokens"), 11);
  EXPECT_EQ(completion.at("usage").at("completion_tokens"), 7);

  const test_support::GeminiRequest sent = mock->requests().back();
  EXPECT_EQ(sent.method, "POST");
  EXPECT_EQ(sent.target, "/v1beta/models/gemini-up:generateContent");
  EXPECT_EQ(sent.Header("x-goog-api-key").value_or(""), "gm-test-key");
  EXPECT_FALSE(sent.Header("authorization").has_value()) << "no bearer token to Gemini";
  const boost::json::value body = ParseJson(sent.body);
  EXPECT_FALSE(body.as_object().contains("model"));
  EXPECT_EQ(body.at("systemInstruction").at("parts").at(0).at("text"), "Be brief.");
  EXPECT_EQ(body.at("contents").at(0).at("role"), "user");
  EXPECT_EQ(body.at("generationConfig").at("stopSequences").at(0), "END");
  EXPECT_EQ(body.at("generationConfig").at("maxOutputTokens"), 64);
  EXPECT_EQ(body.at("generationConfig").at("temperature"), 0.2);

  const std::string backend = BackendId("chat", "google", "gemini-up");
  EXPECT_EQ(
      WaitForMetric(*proxy, "berry_tokens_total", {{"backend", backend}, {"kind", "prompt"}}, 11),
      11);
  EXPECT_EQ(
      Scrape(*proxy).Value("berry_tokens_total", {{"backend", backend}, {"kind", "completion"}}),
      7);
}

TEST(ProxyGemini, FunctionCallsBecomeToolCallsAndResultsGoBack) {
  auto mock = StartGemini();
  mock->SetBehavior(GeminiBehavior::FunctionCall());
  auto proxy = StartProxy(GeminiOnlyConfig(*mock));
  const std::string tools = R"("tools":[{"type":"function","function":{"name":"get_weather",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])";
  const HttpResponse response = Post(*proxy, "/v1/chat/completions",
                                     R"({"model":"chat",
      "messages":[{"role":"user","content":"Weather in Paris?"}],)" +
                                         tools + R"(,"tool_choice":"required"})");
  ASSERT_EQ(response.status, 200) << response.body;
  const boost::json::value completion = ParseJson(response.body);
  EXPECT_EQ(Choice(completion).at("finish_reason"), "tool_calls");
  EXPECT_EQ(Choice(completion).at("message").at("content"), "Let me check.");
  const boost::json::value& call = Choice(completion).at("message").at("tool_calls").at(0);
  const std::string id = StringAt(call, "id");
  EXPECT_EQ(id.rfind("call_", 0), 0u) << id;
  EXPECT_EQ(call.at("function").at("name"), "get_weather");
  EXPECT_EQ(ParseJson(call.at("function").at("arguments").as_string()),
            ParseJson(R"({"city":"Paris"})"));
  boost::json::value sent = ParseJson(mock->requests().back().body);
  EXPECT_EQ(sent.at("toolConfig"), ParseJson(R"({"functionCallingConfig":{"mode":"ANY"}})"));
  EXPECT_EQ(sent.at("tools").at(0).at("functionDeclarations").at(0).at("name"), "get_weather");

  // The client sends the call back with its result: Gemini gets functionCall and
  // functionResponse parts, the name found through the call id.
  mock->SetBehavior(GeminiBehavior::Text());
  const std::string follow_up = absl::StrCat(
      R"({"model":"chat","messages":[{"role":"user","content":"Weather in Paris?"},
      {"role":"assistant","content":null,"tool_calls":[)",
      boost::json::serialize(call), R"(]},
      {"role":"tool","tool_call_id":")",
      id, R"(","content":"{\"temp_c\":21}"}],)", tools, "}");
  const HttpResponse answered = Post(*proxy, "/v1/chat/completions", follow_up);
  ASSERT_EQ(answered.status, 200) << answered.body;
  sent = ParseJson(mock->requests().back().body);
  EXPECT_EQ(sent.at("contents").at(1),
            ParseJson(R"({"role":"model","parts":[{"functionCall":{"name":"get_weather",
                "args":{"city":"Paris"}}}]})"));
  EXPECT_EQ(sent.at("contents").at(2),
            ParseJson(R"({"role":"user","parts":[{"functionResponse":{"name":"get_weather",
                "response":{"temp_c":21}}}]})"));
}

TEST(ProxyGemini, StreamIsTranslatedIncrementallyWithUsage) {
  auto mock = StartGemini();
  auto proxy = StartProxy(GeminiOnlyConfig(*mock));
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
  bool saw_role = false;
  for (const test_support::SseEvent& event : response.events) {
    if (event.data == "[DONE]") {
      continue;
    }
    const boost::json::value chunk = ParseJson(event.data);
    ASSERT_EQ(StringAt(chunk, "object"), "chat.completion.chunk") << event.data;
    EXPECT_EQ(StringAt(chunk, "model"), "chat");
    const boost::json::array& choices = chunk.at("choices").as_array();
    if (choices.empty()) {
      saw_usage = true;
      EXPECT_EQ(chunk.at("usage").at("prompt_tokens"), 11);
      EXPECT_EQ(chunk.at("usage").at("completion_tokens"), 7);
      continue;
    }
    const boost::json::object& delta = choices[0].at("delta").as_object();
    saw_role |= delta.contains("role");
    if (const auto* content = delta.if_contains("content")) {
      text += content->as_string();
    }
    if (!choices[0].at("finish_reason").is_null()) {
      finish = choices[0].at("finish_reason").as_string();
    }
  }
  EXPECT_TRUE(saw_role);
  EXPECT_EQ(text, "Hello from the mock Gemini provider.");
  EXPECT_EQ(finish, "stop");
  EXPECT_TRUE(saw_usage);
  EXPECT_EQ(mock->requests().back().target,
            "/v1beta/models/gemini-up:streamGenerateContent?alt=sse");
  const std::string backend = BackendId("chat", "google", "gemini-up");
  EXPECT_EQ(WaitForMetric(*proxy, "berry_tokens_total",
                          {{"backend", backend}, {"kind", "completion"}}, 7),
            7);
}

TEST(ProxyGemini, StreamedFunctionCallBecomesAToolCallDelta) {
  auto mock = StartGemini();
  mock->SetBehavior(GeminiBehavior::FunctionCall());
  auto proxy = StartProxy(GeminiOnlyConfig(*mock));
  const StreamedResponse response = StreamChat(*proxy, "chat");
  ASSERT_TRUE(response.done()) << response.body;
  std::string arguments;
  std::string name;
  std::string finish;
  for (const test_support::SseEvent& event : response.events) {
    if (event.data == "[DONE]") {
      continue;
    }
    const boost::json::value chunk = ParseJson(event.data);
    const boost::json::value& choice = chunk.at("choices").at(0);
    if (!choice.at("finish_reason").is_null()) {
      finish = choice.at("finish_reason").as_string();
    }
    const auto* calls = choice.at("delta").as_object().if_contains("tool_calls");
    if (calls != nullptr) {
      EXPECT_EQ(calls->at(0).at("index"), 0);
      const boost::json::object& function = calls->at(0).at("function").as_object();
      if (const auto* n = function.if_contains("name")) {
        name = n->as_string();
      }
      arguments += function.at("arguments").as_string();
    }
  }
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(ParseJson(arguments), ParseJson(R"({"city":"Paris"})"));
  EXPECT_EQ(finish, "tool_calls");
}

TEST(ProxyGemini, StreamCutMidwayEndsWithAnErrorEventAndNoDone) {
  auto mock = StartGemini();
  mock->SetBehavior(GeminiBehavior::CutMidStream(1));  // the first text chunk only
  auto proxy = StartProxy(GeminiOnlyConfig(*mock));
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
                    {{"model", "chat"}, {"backend", BackendId("chat", "google", "gemini-up")}}, 1),
      1);
}

TEST(ProxyGemini, ErrorInTheStreamEndsItWithAnOpenAiError) {
  auto mock = StartGemini();
  mock->SetBehavior(GeminiBehavior::ErrorEvent());
  auto proxy = StartProxy(GeminiOnlyConfig(*mock));
  const StreamedResponse response = StreamChat(*proxy, "chat");
  EXPECT_FALSE(response.done());
  EXPECT_FALSE(response.body_status.ok());
  ASSERT_FALSE(response.events.empty());
  const boost::json::value last = ParseJson(response.events.back().data);
  EXPECT_EQ(StringAt(last.at("error"), "code"), "UNAVAILABLE") << response.body;
}

TEST(ProxyGemini, ErrorsAreOpenAiShapedWithTheirStatus) {
  auto mock = StartGemini();
  auto proxy = StartProxy(GeminiOnlyConfig(*mock));
  mock->Enqueue(GeminiBehavior::Error(400, "INVALID_ARGUMENT", "temperature: too hot"));
  HttpResponse response = Chat(*proxy, "chat");
  ExpectOpenAiError(response, 400, "invalid_request_error", "INVALID_ARGUMENT");
  EXPECT_NE(response.body.find("too hot"), std::string::npos) << response.body;

  mock->SetBehavior(GeminiBehavior::Error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"));
  response = Chat(*proxy, "chat");
  ExpectOpenAiError(response, 429, "rate_limit_error", "RESOURCE_EXHAUSTED");

  mock->SetBehavior(GeminiBehavior::Error(503, "UNAVAILABLE", "The model is overloaded."));
  response = Chat(*proxy, "chat");
  ExpectOpenAiError(response, 503, "server_error", "UNAVAILABLE");
  EXPECT_EQ(response.body.find("gm-test-key"), std::string::npos) << "no key in errors";
}

TEST(ProxyGemini, FieldsWithNoEquivalentAreRefusedWithoutCallingTheProvider) {
  auto mock = StartGemini();
  auto proxy = StartProxy(GeminiOnlyConfig(*mock));
  const HttpResponse response = Post(*proxy, "/v1/chat/completions", ChatBody("chat", R"(,"n":3)"));
  ExpectOpenAiError(response, 400, "invalid_request_error", nullptr);
  EXPECT_EQ(StringAt(ParseJson(response.body).at("error"), "param"), "n");
  EXPECT_EQ(mock->generations_served(), 0);
  EXPECT_TRUE(mock->requests().empty());
}

TEST(ProxyGemini, OverloadedOrRateLimitedGeminiFailsOverToAnOpenAiBackend) {
  for (const GeminiBehavior& failure :
       {GeminiBehavior::Error(503, "UNAVAILABLE", "The model is overloaded."),
        GeminiBehavior::Error(429, "RESOURCE_EXHAUSTED", "Quota exceeded")}) {
    SCOPED_TRACE(failure.status_name);
    auto gemini = StartGemini();
    gemini->SetBehavior(failure);
    auto openai = StartMock("acme");
    auto proxy = StartProxy(MixedFailoverConfig(*gemini, *openai));

    const HttpResponse response = Chat(*proxy, "chat");
    ASSERT_EQ(response.status, 200) << response.body;
    EXPECT_EQ(gemini->generations_served(), 1);
    ASSERT_EQ(openai->requests().size(), 1u);
    EXPECT_EQ(openai->requests()[0].model, "up-model");
    EXPECT_EQ(openai->requests()[0].Header("Authorization").value_or(""), "Bearer sk-acme-secret");

    // A stream fails over too: the error came before the first byte.
    const StreamedResponse streamed = StreamChat(*proxy, "chat");
    EXPECT_TRUE(streamed.done()) << streamed.body;
    EXPECT_EQ(gemini->generations_served(), 2);
    EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 2);
  }
}

TEST(ProxyGemini, AFieldGeminiCannotExpressGoesToAnOpenAiBackendWithoutSpendingARetry) {
  auto gemini = StartGemini();
  auto openai = StartMock("acme");
  auto proxy = StartProxy(SettingsToml("max_retries = 0") + MixedFailoverConfig(*gemini, *openai));
  const HttpResponse response =
      Post(*proxy, "/v1/chat/completions", ChatBody("chat", R"(,"logit_bias":{"1":5})"));
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_TRUE(gemini->requests().empty());
  ASSERT_EQ(openai->requests().size(), 1u);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 0);
}

TEST(ProxyGemini, EmbeddingsAndCompletionsSkipGeminiBackends) {
  auto gemini = StartGemini();
  auto openai = StartMock("acme");
  // Gemini first in the failover order: selection must still skip it.
  auto proxy = StartProxy(MixedFailoverConfig(*gemini, *openai));
  for (const std::string_view path : {"/v1/embeddings", "/v1/completions"}) {
    SCOPED_TRACE(path);
    const HttpResponse response =
        Post(*proxy, path, R"({"model":"chat","input":"x","prompt":"x"})");
    EXPECT_EQ(response.status, 200) << response.body;
  }
  EXPECT_TRUE(gemini->requests().empty());
  EXPECT_EQ(openai->requests().size(), 2u);
}

TEST(ProxyGemini, EmbeddingsToAGeminiOnlyModelAreA400) {
  auto gemini = StartGemini();
  auto proxy = StartProxy(GeminiOnlyConfig(*gemini));
  for (const std::string_view path : {"/v1/embeddings", "/v1/completions"}) {
    SCOPED_TRACE(path);
    const HttpResponse response = Post(*proxy, path, R"({"model":"chat","input":"x"})");
    ExpectOpenAiError(response, 400, "invalid_request_error", nullptr);
    EXPECT_NE(response.body.find("/v1/chat/completions"), std::string::npos) << response.body;
    EXPECT_NE(response.body.find("gemini"), std::string::npos) << response.body;
  }
  EXPECT_TRUE(gemini->requests().empty());
}

}  // namespace
}  // namespace berry::itest::proxy_gemini_test
