#include "data-plane/openai/usage.h"

#include <optional>
#include <string>

#include "gtest/gtest.h"

namespace berry::openai::usage_test {
namespace {

void ExpectUsage(const std::optional<Usage>& usage, uint64_t prompt, uint64_t completion) {
  ASSERT_TRUE(usage.has_value());
  EXPECT_EQ(usage->prompt_tokens, prompt);
  EXPECT_EQ(usage->completion_tokens, completion);
}

TEST(ExtractUsage, ReadsAChatCompletionResponse) {
  const std::string body = R"({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
              "prompt_tokens_details": {"cached_tokens": 0}}
  })";
  ExpectUsage(ExtractUsage(body), 12, 3);
}

TEST(ExtractUsage, ReadsALegacyCompletionResponse) {
  ExpectUsage(
      ExtractUsage(R"({"object":"text_completion","choices":[{"text":"x","index":0}],)"
                   R"("usage":{"completion_tokens":7,"prompt_tokens":5,"total_tokens":12}})"),
      5, 7);
}

TEST(ExtractUsage, ReadsAnEmbeddingsResponseWithOnlyPromptTokens) {
  ExpectUsage(ExtractUsage(R"({"object":"list","data":[{"object":"embedding","index":0,)"
                           R"("embedding":[0.0023,-0.0093,1e-3]}],"model":"e",)"
                           R"("usage":{"prompt_tokens":8,"total_tokens":8}})"),
              8, 0);
}

TEST(ExtractUsage, ReadsTheFinalChunkOfAStream) {
  ExpectUsage(
      ExtractUsage(R"({"id":"c","object":"chat.completion.chunk","choices":[],)"
                   R"("usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}})"),
      9, 12);
}

TEST(ExtractUsage, ReturnsNulloptForNullUsage) {
  EXPECT_FALSE(ExtractUsage(R"({"object":"chat.completion.chunk","choices":[{"delta":{}}],)"
                            R"("usage":null})"));
}

TEST(ExtractUsage, FindsUsageWithWhitespaceAroundTheColon) {
  ExpectUsage(ExtractUsage("{\"usage\" \n:\t {\"prompt_tokens\":3,\"completion_tokens\":4}}"), 3,
              4);
}

TEST(ExtractUsage, FindsTheObjectAfterAnEarlierNullUsage) {
  // A "usage" key mentioned as a string value first, then the real object.
  ExpectUsage(ExtractUsage(R"({"note":"usage","x":{"usage":null},)"
                           R"("usage":{"prompt_tokens":5,"completion_tokens":6}})"),
              5, 6);
}

TEST(ExtractUsage, ReturnsNulloptWithoutUsage) {
  EXPECT_FALSE(ExtractUsage(R"({"object":"chat.completion.chunk","choices":[]})"));
}

TEST(ExtractUsage, IgnoresUsageNestedInsideMessages) {
  EXPECT_FALSE(ExtractUsage(
      R"({"choices":[{"message":{"content":"x","usage":{"prompt_tokens":1,"completion_tokens":2}}}]})"));
  EXPECT_FALSE(ExtractUsage(R"({"metadata":{"usage":{"prompt_tokens":1}}})"));
}

TEST(ExtractUsage, PicksTheTopLevelUsageOverNestedOnes) {
  ExpectUsage(
      ExtractUsage(R"({"choices":[{"usage":{"prompt_tokens":100,"completion_tokens":200}}],)"
                   R"("usage":{"prompt_tokens":1,"completion_tokens":2,)"
                   R"("details":{"prompt_tokens":300}}})"),
      1, 2);
}

TEST(ExtractUsage, IgnoresTheWordUsageInsideStrings) {
  EXPECT_FALSE(ExtractUsage(R"({"choices":[{"delta":{"content":"the \"usage\" field"}}]})"));
}

TEST(ExtractUsage, ReturnsNulloptForNonJson) {
  EXPECT_FALSE(ExtractUsage(R"(not json "usage")"));
  EXPECT_FALSE(ExtractUsage(R"({"usage":{"prompt_tokens":1})"));  // truncated
  EXPECT_FALSE(ExtractUsage(R"({"usage":{"prompt_tokens":1}} trailing)"));
  EXPECT_FALSE(ExtractUsage(""));
}

TEST(ExtractUsage, ReturnsNulloptWhenUsageIsNotAnObject) {
  EXPECT_FALSE(ExtractUsage(R"({"usage":5})"));
  EXPECT_FALSE(ExtractUsage(R"({"usage":"lots"})"));
  EXPECT_FALSE(ExtractUsage(R"({"usage":[{"prompt_tokens":1}]})"));
}

TEST(ExtractUsage, ReturnsNulloptWhenUsageHasNoTokenCounts) {
  EXPECT_FALSE(ExtractUsage(R"({"usage":{}})"));
  EXPECT_FALSE(ExtractUsage(R"({"usage":{"total_tokens":4}})"));
  EXPECT_FALSE(ExtractUsage(R"({"usage":{"prompt_tokens":-1,"completion_tokens":"2"}})"));
}

TEST(ExtractUsage, ReadsCountsBeyondInt64) {
  ExpectUsage(ExtractUsage(R"({"usage":{"prompt_tokens":18446744073709551615}})"),
              18446744073709551615u, 0);
}

TEST(IsUsageOnlyChunk, TheIncludeUsageChunkIsUsageOnly) {
  EXPECT_TRUE(
      IsUsageOnlyChunk(R"({"id":"c","object":"chat.completion.chunk","choices":[],)"
                       R"("usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})"));
  EXPECT_TRUE(IsUsageOnlyChunk(R"({"usage":{"prompt_tokens":5}})"));
}

TEST(IsUsageOnlyChunk, ContentChunksAndNullUsageAreNot) {
  EXPECT_FALSE(IsUsageOnlyChunk(
      R"({"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":{"prompt_tokens":5}})"));
  EXPECT_FALSE(IsUsageOnlyChunk(R"({"choices":[],"usage":null})"));
  EXPECT_FALSE(IsUsageOnlyChunk("[DONE]"));
  EXPECT_FALSE(IsUsageOnlyChunk(R"({"choices":[]})"));
}

}  // namespace
}  // namespace berry::openai::usage_test
