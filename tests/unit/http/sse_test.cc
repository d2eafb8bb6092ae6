#include "common/http/sse.h"

#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

namespace berry::sse::sse_test {
namespace {

using Events = std::vector<std::string>;

// Feeds `pieces` in order and returns every delivered payload.
Events FeedPieces(SseEventSplitter& splitter, const std::vector<std::string_view>& pieces) {
  Events events;
  for (const std::string_view piece : pieces) {
    splitter.Feed(piece, [&](std::string_view data) { events.emplace_back(data); });
  }
  return events;
}

Events FeedWhole(std::string_view stream,
                 size_t max_event_bytes = SseEventSplitter::kDefaultMaxEventBytes) {
  SseEventSplitter splitter(max_event_bytes);
  return FeedPieces(splitter, {stream});
}

// Every kind of line ending, comments, other fields, multi-line and empty data, and [DONE].
constexpr std::string_view kMixedStream =
    ": keep-alive comment\n\n"
    "data: {\"a\":1}\n\n"
    "event: message\r\nid: 7\r\ndata: line1\r\ndata: line2\r\n\r\n"
    "data:no-space\r\r"
    "retry: 10\ndata\n\n"
    "data: x\n: comment inside an event\ndata:  two spaces\n\n"
    "data: [DONE]\n\n";

const Events& MixedStreamEvents() {
  static const auto* events = new Events{
      "{\"a\":1}", "line1\nline2", "no-space", "", "x\n two spaces", "[DONE]",
  };
  return *events;
}

TEST(SseEventSplitter, SplitsEventsFedAtOnce) {
  SseEventSplitter splitter;
  EXPECT_EQ(FeedPieces(splitter, {kMixedStream}), MixedStreamEvents());
  EXPECT_EQ(splitter.events(), MixedStreamEvents().size());
  EXPECT_TRUE(splitter.AtEventBoundary());
  EXPECT_TRUE(splitter.IsDone());
}

TEST(SseEventSplitter, GivesTheSameEventsWhereverTheStreamIsCutOnce) {
  for (size_t cut = 0; cut <= kMixedStream.size(); ++cut) {
    SseEventSplitter splitter;
    EXPECT_EQ(FeedPieces(splitter, {kMixedStream.substr(0, cut), kMixedStream.substr(cut)}),
              MixedStreamEvents())
        << "cut at " << cut;
    EXPECT_TRUE(splitter.AtEventBoundary()) << "cut at " << cut;
  }
}

TEST(SseEventSplitter, GivesTheSameEventsWhereverTheStreamIsCutTwice) {
  for (size_t first = 0; first <= kMixedStream.size(); ++first) {
    for (size_t second = first; second <= kMixedStream.size(); ++second) {
      SseEventSplitter splitter;
      ASSERT_EQ(FeedPieces(splitter, {kMixedStream.substr(0, first),
                                      kMixedStream.substr(first, second - first),
                                      kMixedStream.substr(second)}),
                MixedStreamEvents())
          << "cuts at " << first << " and " << second;
    }
  }
}

TEST(SseEventSplitter, GivesTheSameEventsFedOneByteAtATime) {
  SseEventSplitter splitter;
  std::vector<std::string_view> bytes;
  for (size_t i = 0; i < kMixedStream.size(); ++i) {
    bytes.push_back(kMixedStream.substr(i, 1));
  }
  EXPECT_EQ(FeedPieces(splitter, bytes), MixedStreamEvents());
}

TEST(SseEventSplitter, AcceptsCrLfLineEndings) {
  EXPECT_EQ(FeedWhole("data: a\r\n\r\ndata: b\r\ndata: c\r\n\r\n"), (Events{"a", "b\nc"}));
}

TEST(SseEventSplitter, AcceptsBareCrLineEndings) {
  EXPECT_EQ(FeedWhole("data: a\r\rdata: b\rdata: c\r\r"), (Events{"a", "b\nc"}));
}

TEST(SseEventSplitter, TreatsACrLfCutBetweenPiecesAsOneLineEnding) {
  SseEventSplitter splitter;
  EXPECT_EQ(FeedPieces(splitter, {"data: a\r", "\n", "data: b\r", "\n"}), Events{});
  EXPECT_EQ(FeedPieces(splitter, {"\r", "\n"}), (Events{"a\nb"}));
}

TEST(SseEventSplitter, IgnoresCommentLines) {
  EXPECT_EQ(FeedWhole(": ping\n\n:\n\ndata: a\n:data: not data\n\n"), (Events{"a"}));
}

TEST(SseEventSplitter, IgnoresOtherFields) {
  EXPECT_EQ(FeedWhole("event: delta\nid: 1\nretry: 5\nfoo: bar\ndatum: no\ndata: a\n\n"
                      "event: only-an-event\n\n"),
            (Events{"a"}));
}

TEST(SseEventSplitter, JoinsMultiLineDataWithNewlines) {
  EXPECT_EQ(FeedWhole("data: {\"a\":\ndata: 1}\ndata:\ndata: end\n\n"),
            (Events{"{\"a\":\n1}\n\nend"}));
}

TEST(SseEventSplitter, StripsOnlyOneSpaceAfterTheColon) {
  EXPECT_EQ(FeedWhole("data:   indented\n\n"), (Events{"  indented"}));
}

TEST(SseEventSplitter, DeliversNothingForABlockWithoutData) {
  EXPECT_EQ(FeedWhole("\n\n\nevent: x\n\n: c\n\n"), Events{});
}

TEST(SseEventSplitter, KeepsAnUnfinishedEventUntilItsBlankLine) {
  SseEventSplitter splitter;
  EXPECT_EQ(FeedPieces(splitter, {"data: a\n"}), Events{});
  EXPECT_EQ(FeedPieces(splitter, {"\n"}), (Events{"a"}));
}

TEST(SseEventSplitter, DropsAnEventTheStreamNeverFinished) {
  SseEventSplitter splitter;
  EXPECT_EQ(FeedPieces(splitter, {"data: a\n\ndata: partial"}), (Events{"a"}));
  EXPECT_EQ(splitter.events(), 1u);
}

TEST(SseEventSplitter, SkipsALeadingByteOrderMarkWhereverItIsCut) {
  const std::string_view stream =
      "\xEF\xBB\xBF"
      "data: a\n\n";
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    SseEventSplitter splitter;
    EXPECT_EQ(FeedPieces(splitter, {stream.substr(0, cut), stream.substr(cut)}), (Events{"a"}))
        << "cut at " << cut;
  }
}

TEST(SseEventSplitter, KeepsBytesThatOnlyLookLikeTheStartOfAByteOrderMark) {
  SseEventSplitter splitter;
  // "\xEF\xBB" then a newline: the two bytes are a (junk) line of their own, not a BOM.
  EXPECT_EQ(FeedPieces(splitter, {"\xEF", "\xBB\n", "data: a\n\n"}), (Events{"a"}));
  EXPECT_TRUE(splitter.AtEventBoundary());
}

TEST(SseEventSplitter, IsDoneAfterADonePayload) {
  SseEventSplitter splitter;
  FeedPieces(splitter, {"data: {\"choices\":[]}\n\n"});
  EXPECT_FALSE(splitter.IsDone());
  FeedPieces(splitter, {"data: [DONE]\n"});
  EXPECT_FALSE(splitter.IsDone()) << "the event is not finished yet";
  FeedPieces(splitter, {"\n"});
  EXPECT_TRUE(splitter.IsDone());
}

TEST(SseEventSplitter, IsDoneWithoutTheOptionalSpace) {
  SseEventSplitter splitter;
  FeedPieces(splitter, {"data:[DONE]\n\n"});
  EXPECT_TRUE(splitter.IsDone());
}

TEST(SseEventSplitter, IsNotDoneForDoneInsideOtherData) {
  SseEventSplitter splitter;
  FeedPieces(splitter, {"data: {\"content\":\"[DONE]\"}\n\ndata: [DONE]\ndata: more\n\n"});
  EXPECT_FALSE(splitter.IsDone());
}

TEST(SseEventSplitter, IsAtEventBoundaryBeforeAnyByte) {
  EXPECT_TRUE(SseEventSplitter().AtEventBoundary());
}

TEST(SseEventSplitter, IsNotAtEventBoundaryMidLine) {
  SseEventSplitter splitter;
  FeedPieces(splitter, {"data: {\"choi"});
  EXPECT_FALSE(splitter.AtEventBoundary());
}

TEST(SseEventSplitter, IsNotAtEventBoundaryAfterALineWithoutTheBlankLine) {
  SseEventSplitter splitter;
  FeedPieces(splitter, {"data: a\n"});
  EXPECT_FALSE(splitter.AtEventBoundary());
  FeedPieces(splitter, {": comment\n"});
  EXPECT_FALSE(splitter.AtEventBoundary());
}

TEST(SseEventSplitter, IsAtEventBoundaryAfterTheBlankLine) {
  for (const std::string_view stream :
       {"data: a\n\n", "data: a\r\n\r\n", "data: a\r\r", ": ping\n\n", "data: a\n\n\n"}) {
    SseEventSplitter splitter;
    FeedPieces(splitter, {stream});
    EXPECT_TRUE(splitter.AtEventBoundary()) << stream;
  }
}

TEST(SseEventSplitter, IsAtEventBoundaryExactlyAtEveryEventEndWhenFedByteByByte) {
  SseEventSplitter splitter;
  const std::string_view stream = "data: a\n\ndata: b\r\n\r\n";
  std::string boundaries;
  for (size_t i = 0; i < stream.size(); ++i) {
    FeedPieces(splitter, {stream.substr(i, 1)});
    boundaries.push_back(splitter.AtEventBoundary() ? 'B' : '.');
  }
  EXPECT_EQ(boundaries, "........B.........BB");
}

TEST(SseEventSplitter, SkipsAnEventLargerThanTheLimitAndCountsIt) {
  const std::string big(100, 'x');
  SseEventSplitter splitter(64);
  EXPECT_EQ(FeedPieces(splitter, {"data: small\n\ndata: " + big + "\n\ndata: after\n\n"}),
            (Events{"small", "after"}));
  EXPECT_EQ(splitter.skipped_events(), 1u);
  EXPECT_EQ(splitter.events(), 2u);
  EXPECT_TRUE(splitter.AtEventBoundary());
}

TEST(SseEventSplitter, SkipsAnEventWhoseLinesTogetherExceedTheLimit) {
  const std::string line = "data: " + std::string(30, 'y') + "\n";  // 36 bytes without '\n'
  SseEventSplitter splitter(64);
  EXPECT_EQ(FeedPieces(splitter, {line + line + "\ndata: ok\n\n"}), (Events{"ok"}));
  EXPECT_EQ(splitter.skipped_events(), 1u);
}

TEST(SseEventSplitter, AcceptsAnEventExactlyAtTheLimit) {
  const std::string line = "data: " + std::string(58, 'z');  // 64 bytes
  EXPECT_EQ(FeedWhole(line + "\n\n", 64), (Events{std::string(58, 'z')}));
  EXPECT_EQ(FeedWhole(line + "z\n\n", 64), Events{});
}

TEST(SseEventSplitter, SkipsOversizeEventsTheSameWayWhereverTheStreamIsCut) {
  const std::string stream = "data: " + std::string(50, 'a') + "\n\n" +      // 56: kept
                             "data: " + std::string(30, 'b') + "\ndata: " +  // 36 + 36: skipped
                             std::string(30, 'c') + "\r\n\r\n" +             //
                             ": " + std::string(70, 'd') + "\n\n" +          // 72: skipped
                             "data: end\r\r";
  const Events expected = {std::string(50, 'a'), "end"};
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    SseEventSplitter splitter(64);
    const std::string_view view = stream;
    EXPECT_EQ(FeedPieces(splitter, {view.substr(0, cut), view.substr(cut)}), expected)
        << "cut at " << cut;
    EXPECT_EQ(splitter.skipped_events(), 2u) << "cut at " << cut;
    EXPECT_LE(splitter.buffer_capacity(), 64u);
  }
}

TEST(SseEventSplitter, NeverBuffersMoreThanTheLimitForAHugeUnfinishedEvent) {
  SseEventSplitter splitter(4096);
  const std::string piece(1000, 'q');
  FeedPieces(splitter, {"data: "});
  for (int i = 0; i < 1000; ++i) {  // a 1 MB line that never ends
    FeedPieces(splitter, {piece});
    ASSERT_LE(splitter.buffer_capacity(), 4096u);
  }
  EXPECT_FALSE(splitter.AtEventBoundary());
  EXPECT_EQ(FeedPieces(splitter, {"\n\ndata: next\n\n"}), (Events{"next"}));
  EXPECT_EQ(splitter.skipped_events(), 1u);
  EXPECT_LE(splitter.buffer_capacity(), 4096u);
}

TEST(SseEventSplitter, DoesNotGrowItsBufferForEventsOfARepeatedSize) {
  SseEventSplitter splitter;
  const std::string event = "data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\n";
  FeedPieces(splitter, {event.substr(0, 10), event.substr(10)});
  const size_t capacity = splitter.buffer_capacity();
  EXPECT_GT(capacity, 0u) << "an event cut in two is put together in the buffer";
  for (int i = 0; i < 1000; ++i) {
    FeedPieces(splitter, {event.substr(0, 10), event.substr(10)});
  }
  EXPECT_EQ(splitter.buffer_capacity(), capacity);
  EXPECT_EQ(splitter.events(), 1001u);
}

TEST(SseEventSplitter, WholeOneLineEventsAreDeliveredWithoutBuffering) {
  SseEventSplitter splitter;
  const std::string events = "data: {\"n\":1}\n\nid: 7\ndata: {\"n\":2}\r\n\r\ndata: [DONE]\n\n";
  std::vector<std::string> seen;
  splitter.Feed(events, [&seen](std::string_view data) { seen.emplace_back(data); });
  EXPECT_EQ(seen, (std::vector<std::string>{R"({"n":1})", R"({"n":2})", "[DONE]"}));
  EXPECT_TRUE(splitter.IsDone());
  EXPECT_EQ(splitter.buffer_capacity(), 0u);
}

TEST(SseEventSplitter, HeldFirstLineIsKeptWhenTheEventContinuesInTheNextPiece) {
  // The first data line completes inside the first piece, the event ends in the second: the
  // line must survive the first piece going away.
  SseEventSplitter splitter;
  std::string first = "data: first line\ndata: sec";
  std::vector<std::string> seen;
  const auto collect = [&seen](std::string_view data) { seen.emplace_back(data); };
  splitter.Feed(first, collect);
  first.assign(first.size(), 'X');  // the caller reuses its buffer
  splitter.Feed("ond line\n\n", collect);
  EXPECT_EQ(seen, (std::vector<std::string>{"first line\nsecond line"}));
}

TEST(SseEventSplitter, HeldFirstLineIsKeptWhenOnlyTheBlankLineComesLater) {
  SseEventSplitter splitter;
  std::string first = "data: only line\n";
  std::vector<std::string> seen;
  const auto collect = [&seen](std::string_view data) { seen.emplace_back(data); };
  splitter.Feed(first, collect);
  first.assign(first.size(), 'X');
  EXPECT_FALSE(splitter.AtEventBoundary());
  splitter.Feed("\n", collect);
  EXPECT_EQ(seen, (std::vector<std::string>{"only line"}));
  EXPECT_TRUE(splitter.AtEventBoundary());
}

TEST(AppendDataEvent, FramesEachLineAndEndsTheEvent) {
  std::string out;
  AppendDataEvent(R"({"a":1})", out);
  AppendDataEvent("two\nlines", out);
  EXPECT_EQ(out, "data: {\"a\":1}\n\ndata: two\ndata: lines\n\n");
  SseEventSplitter splitter;
  std::vector<std::string> seen;
  splitter.Feed(out, [&seen](std::string_view data) { seen.emplace_back(data); });
  EXPECT_EQ(seen, (std::vector<std::string>{R"({"a":1})", "two\nlines"}));
}

}  // namespace
}  // namespace berry::sse::sse_test
