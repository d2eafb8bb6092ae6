#include "common/http/read_message.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstring>
#include <deque>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include "common/http/server.h"

namespace berry::wire::read_message_test {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using server::ClassifyReadError;
using server::ReadFailure;
using server::RequestPhase;

// A connection's read side without a socket: each Fill delivers the next piece, then eof (or
// the error set in `end`).
struct FakeSource {
  beast::flat_buffer buffer_;
  std::deque<std::string> pieces;
  beast::error_code end = net::error::eof;
  bool deadline_expired = false;  // every error then reads as a timeout
  int fills = 0;

  beast::flat_buffer& buffer() { return buffer_; }
  net::awaitable<beast::error_code> Fill() {
    ++fills;
    if (pieces.empty()) {
      co_return end;
    }
    const std::string piece = std::move(pieces.front());
    pieces.pop_front();
    const auto room = buffer_.prepare(piece.size());
    std::memcpy(room.data(), piece.data(), piece.size());
    buffer_.commit(piece.size());
    co_return beast::error_code{};
  }
  beast::error_code Translate(beast::error_code ec) const {
    return ec && deadline_expired ? beast::error::timeout : ec;
  }

  void Buffer(std::string_view text) {
    const auto room = buffer_.prepare(text.size());
    std::memcpy(room.data(), text.data(), text.size());
    buffer_.commit(text.size());
  }
  void ByteAtATime(std::string_view text) {
    for (const char c : text) {
      pieces.emplace_back(1, c);
    }
  }
};

template <class T>
T Run(net::awaitable<T> op) {
  net::io_context io;
  std::optional<T> result;
  net::co_spawn(io, std::move(op), [&](const std::exception_ptr& e, T value) {
    if (e) std::rethrow_exception(e);
    result = std::move(value);
  });
  io.run();
  return *result;
}

template <class Parser, class Hook = NoHook>
ReadResult Read(FakeSource& source, Parser& parser, ReadUntil until, Hook hook = {}) {
  return Run(ReadMessage(source, parser, until, hook));
}

constexpr std::string_view kRequest =
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}";

TEST(ReadMessage, ARequestFedOneByteAtATimeIsReadWhole) {
  FakeSource source;
  source.ByteAtATime(kRequest);
  http::request_parser<http::string_body> parser;
  const ReadResult result = Read(source, parser, ReadUntil::kMessage);
  ASSERT_FALSE(result.ec) << result.ec.message();
  EXPECT_TRUE(parser.is_done());
  EXPECT_EQ(parser.get().body(), "{\"a\":\"bcd\"}");
  EXPECT_EQ(source.fills, static_cast<int>(kRequest.size()));
  EXPECT_EQ(source.buffer().size(), 0u);
}

TEST(ReadMessage, ABufferedRequestIsParsedWithoutAFillOrTheHook) {
  FakeSource source;
  source.Buffer(kRequest);
  http::request_parser<http::string_body> parser;
  int hooked = 0;
  const ReadResult result =
      Read(source, parser, ReadUntil::kMessage, [&]() -> net::awaitable<beast::error_code> {
        ++hooked;
        co_return beast::error_code{};
      });
  ASSERT_FALSE(result.ec);
  EXPECT_TRUE(parser.is_done());
  EXPECT_EQ(source.fills, 0);
  EXPECT_EQ(hooked, 0);
}

TEST(ReadMessage, TheHookRunsBeforeEveryFillAndItsErrorEndsTheRead) {
  FakeSource source;
  source.Buffer(kRequest.substr(0, 10));
  source.pieces = {std::string(kRequest.substr(10, 20)), std::string(kRequest.substr(30))};
  http::request_parser<http::string_body> parser;
  int hooked = 0;
  const auto count = [&]() -> net::awaitable<beast::error_code> {
    ++hooked;
    co_return beast::error_code{};
  };
  ASSERT_FALSE(Read(source, parser, ReadUntil::kMessage, count).ec);
  EXPECT_EQ(hooked, 2);
  EXPECT_EQ(source.fills, 2);

  FakeSource refused;
  refused.ByteAtATime(kRequest);
  http::request_parser<http::string_body> second;
  const ReadResult result =
      Read(refused, second, ReadUntil::kMessage,
           []() -> net::awaitable<beast::error_code> { co_return net::error::broken_pipe; });
  EXPECT_EQ(result.ec, net::error::broken_pipe);
  EXPECT_EQ(refused.fills, 0);
}

TEST(ReadMessage, APipelinedSecondRequestStaysBufferedAndIsReadWithoutAFill) {
  FakeSource source;
  source.Buffer(std::string(kRequest) + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  http::request_parser<http::string_body> first;
  ASSERT_FALSE(Read(source, first, ReadUntil::kMessage).ec);
  EXPECT_EQ(first.get().target(), "/v1/chat/completions");
  EXPECT_GT(source.buffer().size(), 0u);
  http::request_parser<http::string_body> second;
  ASSERT_FALSE(Read(source, second, ReadUntil::kMessage).ec);
  EXPECT_EQ(second.get().target(), "/healthz");
  EXPECT_EQ(source.fills, 0);
  EXPECT_EQ(source.buffer().size(), 0u);
}

TEST(ReadMessage, HeaderStopsAtTheEndOfTheHeaderAndLeavesTheBody) {
  FakeSource source;
  source.Buffer(kRequest);
  http::request_parser<http::string_body> parser;
  ASSERT_FALSE(Read(source, parser, ReadUntil::kHeader).ec);
  EXPECT_TRUE(parser.is_header_done());
  EXPECT_FALSE(parser.is_done());
  EXPECT_EQ(source.buffer().size(), 11u);
}

TEST(ReadMessage, SomeBodyReturnsOnceBytesArePlaced) {
  FakeSource source;
  source.Buffer("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234");
  source.pieces = {"56789"};
  http::response_parser<http::buffer_body> parser;
  ASSERT_FALSE(Read(source, parser, ReadUntil::kHeader).ec);
  char room[64];
  parser.get().body().data = room;
  parser.get().body().size = sizeof room;
  ReadResult result = Read(source, parser, ReadUntil::kSomeBody);
  ASSERT_FALSE(result.ec);
  EXPECT_EQ(result.body_bytes, 5u);
  EXPECT_EQ(source.fills, 0);
  parser.get().body().data = room;
  parser.get().body().size = sizeof room;
  result = Read(source, parser, ReadUntil::kSomeBody);
  ASSERT_FALSE(result.ec);
  EXPECT_EQ(result.body_bytes, 5u);
  EXPECT_EQ(std::string_view(room, 5), "56789");
  EXPECT_TRUE(parser.is_done());
}

TEST(ReadMessage, ABodyEndedByTheCloseIsCompleteAtEndOfStream) {
  FakeSource source;
  source.Buffer("HTTP/1.1 200 OK\r\n\r\nall of it");
  http::response_parser<http::string_body> parser;
  const ReadResult result = Read(source, parser, ReadUntil::kMessage);
  ASSERT_FALSE(result.ec) << result.ec.message();
  EXPECT_TRUE(parser.is_done());
  EXPECT_EQ(parser.get().body(), "all of it");
}

TEST(ReadMessage, EndOfStreamBeforeAnyByteIsEndOfStreamAndMidMessageIsPartial) {
  FakeSource nothing;
  http::request_parser<http::string_body> empty;
  EXPECT_EQ(Read(nothing, empty, ReadUntil::kHeader).ec, http::error::end_of_stream);

  FakeSource cut;
  cut.Buffer(kRequest.substr(0, kRequest.size() - 3));
  http::request_parser<http::string_body> parser;
  EXPECT_EQ(Read(cut, parser, ReadUntil::kMessage).ec, http::error::partial_message);
}

TEST(ReadMessage, AnErrorCausedByTheDeadlineIsATimeout) {
  FakeSource source;
  source.Buffer("POST / HTTP/1.1\r\nHo");
  source.end = net::error::operation_aborted;  // what the deadline's cancel makes of the read
  source.deadline_expired = true;
  http::request_parser<http::string_body> parser;
  EXPECT_EQ(Read(source, parser, ReadUntil::kMessage).ec, beast::error::timeout);
}

// The (phase, error) -> answer mapping, through ReadMessage as the server uses it.
ReadFailure ReadRequest(FakeSource& source, uint64_t body_limit = 1024,
                        uint32_t header_limit = 1024) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(body_limit);
  parser.header_limit(header_limit);
  const ReadResult result = Read(source, parser, ReadUntil::kMessage);
  EXPECT_TRUE(result.ec);
  return ClassifyReadError(parser.is_header_done() ? RequestPhase::kBody : RequestPhase::kHeader,
                           result.ec);
}

TEST(ClassifyReadError, HeadersOverTheLimitAre431) {
  FakeSource source;
  source.ByteAtATime("GET / HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
  const ReadFailure failure = ReadRequest(source);
  EXPECT_TRUE(failure.answer);
  EXPECT_EQ(failure.status, http::status::request_header_fields_too_large);
}

TEST(ClassifyReadError, AContentLengthOverTheLimitIs413AtTheEndOfTheHeader) {
  FakeSource source;
  source.Buffer("POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
  const ReadFailure failure = ReadRequest(source);
  EXPECT_TRUE(failure.answer);
  EXPECT_EQ(failure.status, http::status::payload_too_large);
  EXPECT_EQ(source.fills, 0);  // refused before any body byte is waited for
}

TEST(ClassifyReadError, AChunkedBodyGrowingOverTheLimitIs413) {
  FakeSource source;
  source.Buffer("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  source.pieces = {"200\r\n" + std::string(0x200, 'a') + "\r\n",
                   "400\r\n" + std::string(0x400, 'b') + "\r\n"};
  const ReadFailure failure = ReadRequest(source);
  EXPECT_TRUE(failure.answer);
  EXPECT_EQ(failure.status, http::status::payload_too_large);
}

TEST(ClassifyReadError, ATimeoutIs408WithTheReasonOfItsPhase) {
  FakeSource head;
  head.Buffer("POST / HTTP/1.1\r\nHo");
  head.end = net::error::operation_aborted;
  head.deadline_expired = true;
  ReadFailure failure = ReadRequest(head);
  EXPECT_TRUE(failure.answer);
  EXPECT_EQ(failure.status, http::status::request_timeout);
  EXPECT_EQ(failure.reason, "timed out reading the request headers");

  FakeSource body;
  body.Buffer("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01");
  body.end = net::error::operation_aborted;
  body.deadline_expired = true;
  failure = ReadRequest(body);
  EXPECT_EQ(failure.status, http::status::request_timeout);
  EXPECT_EQ(failure.reason, "timed out reading the request body");
}

TEST(ClassifyReadError, GarbageIs400) {
  FakeSource source;
  source.Buffer("NOT HTTP AT ALL\r\n\r\n");
  const ReadFailure failure = ReadRequest(source);
  EXPECT_TRUE(failure.answer);
  EXPECT_EQ(failure.status, http::status::bad_request);
  EXPECT_EQ(failure.reason, "malformed HTTP request");

  FakeSource chunks;
  chunks.Buffer("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  EXPECT_EQ(ReadRequest(chunks).reason, "malformed HTTP request body");
}

TEST(ClassifyReadError, AClientThatGoesAwayMidRequestGetsNoAnswer) {
  FakeSource head;
  head.Buffer("POST / HTTP/1.1\r\nHo");
  EXPECT_FALSE(ReadRequest(head).answer);  // partial_message

  FakeSource body;
  body.Buffer("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01");
  body.end = net::error::connection_reset;
  EXPECT_FALSE(ReadRequest(body).answer);

  EXPECT_FALSE(ClassifyReadError(RequestPhase::kHeader, http::error::end_of_stream).answer);
}

}  // namespace
}  // namespace berry::wire::read_message_test
