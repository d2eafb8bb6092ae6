#include "common/json/json_escape.h"

#include <string>

#include "gtest/gtest.h"

namespace berry::json::json_escape_test {
namespace {

std::string Escape(std::string_view text) {
  std::string out = "prefix:";
  AppendJsonString(out, text);
  return out.substr(7);
}

TEST(AppendJsonString, QuotesPlainText) { EXPECT_EQ(Escape("gpt-4o/mini"), "\"gpt-4o/mini\""); }

TEST(AppendJsonString, AppendsWithoutTouchingWhatIsThere) {
  std::string out = "x";
  AppendJsonString(out, "y");
  EXPECT_EQ(out, "x\"y\"");
}

TEST(AppendJsonString, EscapesQuoteAndBackslash) { EXPECT_EQ(Escape(R"(a"b\c)"), R"("a\"b\\c")"); }

TEST(AppendJsonString, EscapesEveryControlCharacter) {
  EXPECT_EQ(Escape("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(Escape(std::string_view("\x00\x01\x1f", 3)), R"("\u0000\u0001\u001f")");
  EXPECT_EQ(Escape("\x7f"), "\"\x7f\"");
}

TEST(AppendJsonString, CopiesWellFormedUtf8) {
  const std::string text = "\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x8D\x93 \xED\x9F\xBF \xF4\x8F\xBF\xBF";
  EXPECT_EQ(Escape(text), "\"" + text + "\"");
}

TEST(AppendJsonString, ReplacesMalformedUtf8) {
  EXPECT_EQ(Escape("\xFF"), R"("\ufffd")");
  EXPECT_EQ(Escape("a\xC3"), R"("a\ufffd")");                              // truncated
  EXPECT_EQ(Escape("\xC0\xAF"), R"("\ufffd\ufffd")");                      // overlong
  EXPECT_EQ(Escape("\xED\xA0\x80"), R"("\ufffd\ufffd\ufffd")");            // surrogate
  EXPECT_EQ(Escape("\xF4\x90\x80\x80"), R"("\ufffd\ufffd\ufffd\ufffd")");  // > U+10FFFF
  EXPECT_EQ(Escape("\x80z"), R"("\ufffdz")");                              // stray continuation
}

}  // namespace
}  // namespace berry::json::json_escape_test
