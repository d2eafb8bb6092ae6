// berry-bench-client's own parts: the figures of `make bench` are only as good as its response
// decoding, event timing and percentiles.
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "bench/bench_client_http.h"
#include "bench/bench_client_stats.h"
#include "gtest/gtest.h"

namespace berry::bench {
namespace {

using Step = ResponseDecoder::Step;

struct Decoded {
  std::vector<int> statuses;  // one per complete response
  std::string body;           // every body, concatenated
  bool error = false;
  std::string error_text;
};

// Feeds `wire` to a decoder in pieces of `piece` bytes (the last one shorter), as reads would.
Decoded Decode(std::string_view wire, size_t piece, bool eof_at_end = false) {
  ResponseDecoder decoder(64, /*keep_body=*/true);
  Decoded out;
  size_t at = 0;
  const auto drain = [&]() {
    for (;;) {
      const Step step = decoder.Decode();
      out.body.append(decoder.body());
      decoder.Consume(decoder.body().size());
      if (step == Step::kDone) {
        out.statuses.push_back(decoder.head().status);
        decoder.Next();
        continue;
      }
      if (step == Step::kError) {
        out.error = true;
        out.error_text = decoder.error();
      }
      if (step != Step::kHead) {
        return step;
      }
    }
  };
  while (at < wire.size() && !out.error) {
    const std::span<char> space = decoder.ReadSpace();
    if (space.empty()) {
      out.error = true;
      out.error_text = decoder.error();
      break;
    }
    const size_t n = std::min({piece, space.size(), wire.size() - at});
    std::memcpy(space.data(), wire.data() + at, n);
    decoder.Commit(n);
    at += n;
    drain();
  }
  if (eof_at_end && !out.error) {
    const Step step = decoder.Eof();
    out.body.append(decoder.body());
    if (step == Step::kDone) {
      out.statuses.push_back(decoder.head().status);
    } else if (step == Step::kError) {
      out.error = true;
      out.error_text = decoder.error();
    }
  }
  return out;
}

constexpr std::string_view kChunked =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    "b\r\ndata: one\n\n\r\n"
    "5;ext=1\r\ndata:\r\n"
    "6\r\n two\n\n\r\n"
    "0\r\nX-Trailer: t\r\n\r\n";

TEST(ResponseDecoder, ChunkedBodyIsTheSameWhereverTheReadsAreCut) {
  for (size_t piece = 1; piece <= kChunked.size(); ++piece) {
    const Decoded d = Decode(kChunked, piece);
    ASSERT_FALSE(d.error) << "piece " << piece << ": " << d.error_text;
    EXPECT_EQ(d.statuses, std::vector<int>{200}) << "piece " << piece;
    EXPECT_EQ(d.body, "data: one\n\ndata: two\n\n") << "piece " << piece;
  }
}

TEST(ResponseDecoder, ContentLengthResponsesBackToBackOnOneConnection) {
  const std::string wire =
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
      "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\nno";
  for (size_t piece : {1, 7, 1000}) {
    const Decoded d = Decode(wire, piece);
    ASSERT_FALSE(d.error) << d.error_text;
    EXPECT_EQ(d.statuses, (std::vector<int>{200, 429})) << "piece " << piece;
    EXPECT_EQ(d.body, "hellono");
  }
}

TEST(ResponseDecoder, SkipsInterimResponses) {
  const Decoded d =
      Decode("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 3);
  ASSERT_FALSE(d.error) << d.error_text;
  EXPECT_EQ(d.statuses, std::vector<int>{200});
  EXPECT_EQ(d.body, "ok");
}

TEST(ResponseDecoder, CloseDelimitedBodyEndsAtEof) {
  const Decoded d = Decode("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\ndata: x\n\n", 4,
                           /*eof_at_end=*/true);
  ASSERT_FALSE(d.error) << d.error_text;
  EXPECT_EQ(d.statuses, std::vector<int>{200});
  EXPECT_EQ(d.body, "data: x\n\n");
}

TEST(ResponseDecoder, EofInsideALengthBodyIsAnError) {
  const Decoded d =
      Decode("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 100, /*eof_at_end=*/true);
  EXPECT_TRUE(d.error);
  EXPECT_TRUE(d.statuses.empty());
}

TEST(ResponseDecoder, MalformedChunkSizeIsAnError) {
  const Decoded d =
      Decode("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", 100);
  EXPECT_TRUE(d.error);
}

TEST(MockSentNs, ReadsTheStamp) {
  EXPECT_EQ(MockSentNs("{\"a\":1,\"mock_sent_ns\":123456789}"), 123456789);
  EXPECT_EQ(MockSentNs("{\"mock_sent_ns\": 42,\"b\":2}"), 42);
}

TEST(MockSentNs, IsMinusOneWithoutAUsableStamp) {
  EXPECT_EQ(MockSentNs("[DONE]"), -1);
  EXPECT_EQ(MockSentNs("{\"mock_sent_ns\":\"x\"}"), -1);
  EXPECT_EQ(MockSentNs("{\"mock_sent_ns\":-5}"), -1);
}

TEST(ParseTarget, HostPortAndPath) {
  auto target = ParseTarget("http://127.0.0.1:8080/v1/chat/completions?x=1");
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->host, "127.0.0.1");
  EXPECT_EQ(target->port, 8080);
  EXPECT_EQ(target->path, "/v1/chat/completions?x=1");
  EXPECT_FALSE(ParseTarget("https://127.0.0.1/").ok()) << "plain HTTP only";
  EXPECT_FALSE(ParseTarget("http://127.0.0.1:99999/").ok());
}

TEST(BuildRequest, PostWithBodyAndHeaders) {
  auto target = ParseTarget("http://127.0.0.1:8080/v1/chat/completions");
  ASSERT_TRUE(target.ok());
  const std::string body = R"({"model":"m"})";
  const std::string request =
      BuildRequest(*target, {"Authorization: Bearer t", "x-portkey-config: {\"a\":1}"}, &body);
  EXPECT_TRUE(request.starts_with("POST /v1/chat/completions HTTP/1.1\r\n")) << request;
  EXPECT_NE(request.find("\r\nAuthorization: Bearer t\r\n"), std::string::npos) << request;
  EXPECT_NE(request.find("\r\nx-portkey-config: {\"a\":1}\r\n"), std::string::npos) << request;
  EXPECT_NE(request.find("\r\nContent-Length: 13\r\n"), std::string::npos) << request;
  EXPECT_TRUE(request.ends_with("\r\n\r\n" + body)) << request;
  EXPECT_FALSE(CheckHeaderLine("Bad Name: x").ok());
  EXPECT_FALSE(CheckHeaderLine("x: a\r\nInjected: b").ok());
}

TEST(Summarize, NearestRankPercentiles) {
  std::vector<int64_t> samples;
  for (int64_t i = 1000; i >= 1; --i) {
    samples.push_back(i);
  }
  const Distribution d = Summarize(samples);
  EXPECT_EQ(d.count, 1000u);
  EXPECT_EQ(d.p50, 500);
  EXPECT_EQ(d.p90, 900);
  EXPECT_EQ(d.p99, 990);
  EXPECT_EQ(d.p999, 999);
  EXPECT_EQ(d.max, 1000);
  EXPECT_DOUBLE_EQ(d.mean, 500.5);
  std::vector<int64_t> none;
  EXPECT_EQ(Summarize(none).count, 0u);
}

TEST(JsonLine, KeysInOrderAndEscapedStrings) {
  JsonLine json;
  json.String("mode", "rate")
      .Int("n", 3)
      .Double("x", 1.26, 1)
      .Number("r", 5000)
      .String("e", "a\"b");
  EXPECT_EQ(std::move(json).Finish(), R"({"mode":"rate","n":3,"x":1.3,"r":5000,"e":"a\"b"})");
}

}  // namespace
}  // namespace berry::bench
