// The official `@anthropic-ai/sdk` npm SDK against berry-proxy's /v1/messages, with custom model
// "chat" spread (round robin) over an Anthropic mock (passed through), an OpenAI mock and a
// Gemini mock (translated), "tools" on an Anthropic mock that answers with tool_use,
// "gemini-tools" on a Gemini mock that answers with a functionCall and "openai-tools" on an
// OpenAI mock that answers with tool_calls: plain messages, streams, tool use plain and streamed,
// an error. The SDK authenticates with x-api-key. It is installed with npm into the build tree on
// the first run; the test skips, saying so, only when npm cannot install it (no registry).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/integration/child_process.h"
#include "tests/integration/dialect_test_util.h"
#include "tests/integration/npm_package.h"

namespace berry::itest::anthropic_sdk_test {
namespace {

using test_support::AnthropicBehavior;
using test_support::GeminiBehavior;

constexpr char kToken[] = "berry-sdk-0123456789abcdef";

TEST(AnthropicSdk, MessagesStreamsAndToolUseOverAnthropicOpenAiAndGeminiBackends) {
  if (system("command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "node and npm are not installed: the @anthropic-ai/sdk test cannot run";
  }
  if (const absl::Status installed =
          InstallNpmPackage(BERRY_NPM_DIR, "@anthropic-ai/sdk", "@anthropic-ai/sdk@1");
      !installed.ok()) {
    GTEST_SKIP() << "the npm registry is unreachable, skipping the @anthropic-ai/sdk test: "
                 << installed.message();
  }
  auto openai = StartMock("acme");
  auto openai_tools = StartMock("acmetools");
  test_support::Behavior tool_calls = test_support::Behavior::Json();
  tool_calls.json_body = R"({"id":"chatcmpl-t","object":"chat.completion","model":"m",
      "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",
        "content":null,"tool_calls":[{"id":"call_1","type":"function",
          "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}}],
      "usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}})";
  openai_tools->SetDefaultBehavior(tool_calls);
  auto anthropic = StartAnthropicMock(AnthropicBehavior::Text());
  auto tools = StartAnthropicMock(AnthropicBehavior::ToolUse());
  auto gemini = StartGeminiMock(GeminiBehavior::Text());
  auto gemini_tools = StartGeminiMock(GeminiBehavior::FunctionCall());
  const std::string config =
      absl::StrCat("[users.sdk]\ntoken = \"", kToken, "\"\n\n") +
      ProviderToml("acme", openai->base_url()) +
      ProviderToml("acmetools", openai_tools->base_url()) +
      AnthropicProviderToml("claude", *anthropic) + AnthropicProviderToml("claudetools", *tools) +
      GeminiProviderToml("google", *gemini, "gemini-mock") +
      GeminiProviderToml("googletools", *gemini_tools, "gemini-mock") +
      ModelToml("chat", R"(strategy = "round_robin")") + BackendToml("chat", "acme") +
      BackendToml("chat", "claude", "claude-up") + BackendToml("chat", "google", "gemini-mock") +
      ModelToml("tools") + BackendToml("tools", "claudetools", "claude-up") +
      ModelToml("gemini-tools") + BackendToml("gemini-tools", "googletools", "gemini-mock") +
      ModelToml("openai-tools") + BackendToml("openai-tools", "acmetools");
  // One worker: round robin is per worker thread, and the SDK may spread its requests over
  // connections, so only one worker makes three requests meet all three providers.
  TestProxyOptions options;
  options.threads = 1;
  auto proxy = StartProxy(config, options);

  auto node =
      ChildProcess::Spawn({"/usr/bin/env", "node", BERRY_TESTDATA_DIR "/anthropic_sdk_client.cjs",
                           BERRY_NPM_DIR, proxy->url(""), std::string(kToken)});
  ASSERT_NE(node, nullptr);
  const std::optional<int> code = node->Wait(std::chrono::seconds(60));
  ASSERT_EQ(code, 0) << node->out() << node->err();
  const size_t at = node->out().find("RESULT ");
  ASSERT_NE(at, std::string::npos) << node->out();
  const boost::json::value result = ParseJson(node->out().substr(at + 7));
  ASSERT_TRUE(result.is_object()) << node->out();
  SCOPED_TRACE(boost::json::serialize(result));

  // Round robin over the three providers: each served a third, each answer whole.
  const std::string openai_text = MockUpstream::Options().default_behavior.content;
  const std::string anthropic_text = AnthropicBehavior::Text().text;
  const std::string gemini_text = GeminiBehavior::Text().text;
  std::set<std::string> texts;
  for (const auto& text : result.at("texts").as_array()) {
    texts.insert(std::string(text.at("text").as_string()));
    EXPECT_EQ(text.at("type"), "message");
    EXPECT_EQ(text.at("stop"), "end_turn");
    EXPECT_GT(text.at("usage").at("output_tokens").to_number<int64_t>(), 0);
  }
  EXPECT_EQ(texts, (std::set<std::string>{openai_text, anthropic_text, gemini_text}));
  std::set<std::string> streamed;
  for (const auto& stream : result.at("streams").as_array()) {
    streamed.insert(std::string(stream.at("text").as_string()));
    EXPECT_EQ(stream.at("text"), stream.at("deltas")) << "text events add up to the message";
    EXPECT_EQ(stream.at("stop"), "end_turn");
    EXPECT_GT(stream.at("usage").at("output_tokens").to_number<int64_t>(), 0);
  }
  EXPECT_EQ(streamed.size(), 3u);
  EXPECT_TRUE(streamed.count(anthropic_text));
  EXPECT_TRUE(streamed.count(gemini_text));

  // Tool use from Anthropic's tool_use, Gemini's functionCall and OpenAI's tool_calls.
  ASSERT_EQ(result.at("tools").as_array().size(), 3u);
  for (const auto& tool : result.at("tools").as_array()) {
    EXPECT_EQ(tool.at("stop"), "tool_use");
    EXPECT_EQ(tool.at("block").at("name"), "get_weather");
    EXPECT_EQ(tool.at("block").at("input"), ParseJson(R"({"city":"Paris"})"));
  }
  ASSERT_EQ(result.at("toolStreams").as_array().size(), 2u);
  for (const auto& tool : result.at("toolStreams").as_array()) {
    EXPECT_EQ(tool.at("stop"), "tool_use");
    EXPECT_EQ(tool.at("block").at("name"), "get_weather");
    EXPECT_EQ(tool.at("block").at("input"), ParseJson(R"({"city":"Paris"})"));
  }
  EXPECT_EQ(result.at("error").at("status"), 404);
  EXPECT_EQ(result.at("error").at("type"), "not_found_error");
}

}  // namespace
}  // namespace berry::itest::anthropic_sdk_test
