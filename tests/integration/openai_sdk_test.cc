// The official `openai` npm SDK against berry-proxy, with custom model "chat" spread (round
// robin) over an OpenAI mock, an Anthropic mock and a Gemini mock, "tools" on an Anthropic mock
// that answers with tool_use and "gemini-tools" on a Gemini mock that answers with a
// functionCall: plain chats, streams with usage, tool calls plain and streamed. The SDK
// is installed with npm into the build tree on the first run; the test skips, saying so, only
// when npm cannot install it (no registry).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/integration/child_process.h"
#include "tests/integration/dialect_test_util.h"
#include "tests/integration/npm_package.h"

namespace berry::itest::openai_sdk_test {
namespace {

using test_support::AnthropicBehavior;
using test_support::GeminiBehavior;

TEST(OpenAiSdk, ChatStreamAndToolsOverOpenAiAnthropicAndGeminiBackends) {
  if (system("command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "node and npm are not installed: the openai SDK test cannot run";
  }
  if (const absl::Status installed = InstallNpmPackage(BERRY_NPM_DIR, "openai", "openai@4");
      !installed.ok()) {
    GTEST_SKIP() << "the npm registry is unreachable, skipping the openai SDK test: "
                 << installed.message();
  }
  auto openai = StartMock("acme");
  auto anthropic = StartAnthropicMock(AnthropicBehavior::Text());
  auto tools = StartAnthropicMock(AnthropicBehavior::ToolUse());
  auto gemini = StartGeminiMock(GeminiBehavior::Text());
  auto gemini_tools = StartGeminiMock(GeminiBehavior::FunctionCall());
  const std::string config =
      ProviderToml("acme", openai->base_url()) + AnthropicProviderToml("claude", *anthropic) +
      AnthropicProviderToml("claudetools", *tools) +
      GeminiProviderToml("google", *gemini, "gemini-mock") +
      GeminiProviderToml("googletools", *gemini_tools, "gemini-mock") +
      ModelToml("chat", R"(strategy = "round_robin")") + BackendToml("chat", "acme") +
      BackendToml("chat", "claude", "claude-up") + BackendToml("chat", "google", "gemini-mock") +
      ModelToml("tools") + BackendToml("tools", "claudetools", "claude-up") +
      ModelToml("gemini-tools") + BackendToml("gemini-tools", "googletools", "gemini-mock");
  auto proxy = StartProxy(config);

  auto node =
      ChildProcess::Spawn({"/usr/bin/env", "node", BERRY_TESTDATA_DIR "/openai_sdk_client.cjs",
                           BERRY_NPM_DIR, proxy->url("/v1")});
  ASSERT_NE(node, nullptr);
  const std::optional<int> code = node->Wait(std::chrono::seconds(60));
  ASSERT_EQ(code, 0) << node->out() << node->err();
  const size_t at = node->out().find("RESULT ");
  ASSERT_NE(at, std::string::npos) << node->out();
  const boost::json::value result = ParseJson(node->out().substr(at + 7));
  ASSERT_TRUE(result.is_object()) << node->out();

  // Round robin over the three providers: each served a third, each answer whole.
  const std::string openai_text = MockUpstream::Options().default_behavior.content;
  const std::string anthropic_text = AnthropicBehavior::Text().text;
  const std::string gemini_text = GeminiBehavior::Text().text;
  std::set<std::string> texts;
  for (const auto& text : result.at("texts").as_array()) {
    texts.insert(std::string(text.at("content").as_string()));
    EXPECT_EQ(text.at("finish"), "stop");
    EXPECT_GT(text.at("usage").at("completion_tokens").to_number<int64_t>(), 0);
  }
  EXPECT_EQ(texts, (std::set<std::string>{openai_text, anthropic_text, gemini_text}));
  std::set<std::string> streamed;
  for (const auto& stream : result.at("streams").as_array()) {
    streamed.insert(std::string(stream.at("text").as_string()));
    EXPECT_EQ(stream.at("finish"), "stop");
    EXPECT_TRUE(stream.at("usage").is_object()) << "include_usage honoured by every dialect";
  }
  EXPECT_EQ(streamed.size(), 3u);
  EXPECT_TRUE(streamed.count(anthropic_text)) << boost::json::serialize(result);
  EXPECT_TRUE(streamed.count(gemini_text)) << boost::json::serialize(result);
  EXPECT_EQ(anthropic->messages_served(), 4);
  EXPECT_EQ(gemini->generations_served(), 4);

  // Tool calls from Anthropic's tool_use and from Gemini's functionCall, plain and streamed.
  ASSERT_EQ(result.at("tools").as_array().size(), 2u);
  ASSERT_EQ(result.at("toolStreams").as_array().size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const boost::json::value& tool = result.at("tools").at(i);
    SCOPED_TRACE(boost::json::serialize(tool));
    EXPECT_EQ(tool.at("finish"), "tool_calls");
    const boost::json::value& call = tool.at("calls").at(0);
    EXPECT_EQ(call.at("function").at("name"), "get_weather");
    EXPECT_EQ(ParseJson(call.at("function").at("arguments").as_string()),
              ParseJson(R"({"city":"Paris"})"));
    const boost::json::value& streamed_call = result.at("toolStreams").at(i);
    EXPECT_EQ(streamed_call.at("name"), "get_weather");
    EXPECT_EQ(streamed_call.at("finish"), "tool_calls");
    EXPECT_EQ(ParseJson(streamed_call.at("args").as_string()), ParseJson(R"({"city":"Paris"})"));
  }
  EXPECT_EQ(gemini_tools->generations_served(), 2);
}

}  // namespace
}  // namespace berry::itest::openai_sdk_test
