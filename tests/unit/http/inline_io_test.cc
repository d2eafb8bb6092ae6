#include "common/http/inline_io.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstring>
#include <string>
#include <string_view>

namespace berry::wire::inline_io_test {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

void Fill(beast::flat_buffer& buffer, std::string_view text) {
  const auto room = buffer.prepare(text.size());
  std::memcpy(room.data(), text.data(), text.size());
  buffer.commit(text.size());
}

constexpr std::string_view kRequest =
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}";

TEST(ParseBuffered, AWholeRequestInTheBufferIsParsedWithoutReading) {
  beast::flat_buffer buffer;
  Fill(buffer, kRequest);
  http::request_parser<http::string_body> parser;
  ASSERT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/true));
  EXPECT_TRUE(parser.is_header_done());
  EXPECT_FALSE(parser.is_done());  // the header only, as asked
  ASSERT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/false));
  EXPECT_TRUE(parser.is_done());
  EXPECT_EQ(parser.get().body(), "{\"a\":\"bcd\"}");
  EXPECT_EQ(buffer.size(), 0u);
}

TEST(ParseBuffered, StopsWhereTheBufferEndsAndLeavesTheRestToAReader) {
  beast::flat_buffer buffer;
  Fill(buffer, kRequest.substr(0, 20));  // in the middle of the header
  http::request_parser<http::string_body> parser;
  EXPECT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/true));  // need_more: no error
  EXPECT_FALSE(parser.is_header_done());
  Fill(buffer, kRequest.substr(20, kRequest.size() - 20 - 4));  // all but 4 body bytes
  EXPECT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/false));
  EXPECT_TRUE(parser.is_header_done());
  EXPECT_FALSE(parser.is_done());
  Fill(buffer, kRequest.substr(kRequest.size() - 4));
  EXPECT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/false));
  EXPECT_TRUE(parser.is_done());
  EXPECT_EQ(parser.get().body(), "{\"a\":\"bcd\"}");
}

TEST(ParseBuffered, LeavesAPipelinedNextRequestInTheBuffer) {
  beast::flat_buffer buffer;
  Fill(buffer, std::string(kRequest) + "GET /healthz HTTP/1.1\r\n\r\n");
  http::request_parser<http::string_body> parser;
  ASSERT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/false));
  EXPECT_TRUE(parser.is_done());
  EXPECT_EQ(std::string_view(static_cast<const char*>(buffer.data().data()), buffer.size()),
            "GET /healthz HTTP/1.1\r\n\r\n");
}

TEST(ParseBuffered, TakesAChunkedBodyAsFarAsItHasArrived) {
  beast::flat_buffer buffer;
  Fill(buffer,
       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5\r\nhello\r\n3\r\nabc");  // the second chunk is not complete
  http::request_parser<http::string_body> parser;
  ASSERT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/false));
  EXPECT_FALSE(parser.is_done());
  Fill(buffer, "\r\n0\r\n\r\n");
  ASSERT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/false));
  EXPECT_TRUE(parser.is_done());
  EXPECT_EQ(parser.get().body(), "helloabc");
}

TEST(ParseBuffered, ReportsWhatTheParserRejects) {
  beast::flat_buffer buffer;
  Fill(buffer, "NOT HTTP AT ALL\r\n\r\n");
  http::request_parser<http::string_body> parser;
  EXPECT_TRUE(ParseBuffered(parser, buffer, /*header_only=*/true));

  beast::flat_buffer big;
  Fill(big, kRequest);
  http::request_parser<http::string_body> limited;
  limited.body_limit(5);
  EXPECT_EQ(ParseBuffered(limited, big, /*header_only=*/true), http::error::body_limit);
}

TEST(ParseBuffered, FillsABufferBodyAsFarAsItsRoomGoes) {
  beast::flat_buffer buffer;
  Fill(buffer, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789");
  http::response_parser<http::buffer_body> parser;
  ASSERT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/true));
  char room[4];
  parser.get().body().data = room;
  parser.get().body().size = sizeof room;
  EXPECT_FALSE(ParseBuffered(parser, buffer, /*header_only=*/false));  // need_buffer: no error
  EXPECT_EQ(parser.get().body().size, 0u);
  EXPECT_EQ(std::string_view(room, sizeof room), "0123");
  EXPECT_FALSE(parser.is_done());
}

TEST(WriteNow, WritesWhatTheSocketTakesAndSaysHowMuch) {
  net::io_context io;
  net::ip::tcp::acceptor acceptor(io, {net::ip::make_address("127.0.0.1"), 0});
  net::ip::tcp::socket writer(io);
  net::ip::tcp::socket reader(io);
  writer.connect(acceptor.local_endpoint());
  acceptor.accept(reader);
  writer.non_blocking(true);

  boost::system::error_code ec;
  EXPECT_EQ(WriteNow(writer, net::buffer(std::string_view("hello")), ec), 5u);
  EXPECT_FALSE(ec);
  char got[5];
  net::read(reader, net::buffer(got));
  EXPECT_EQ(std::string_view(got, 5), "hello");

  // Nobody reads: the socket's buffers fill up, and then it takes nothing (no error, no wait).
  const std::string block(1 << 20, 'x');
  size_t total = 0;
  size_t last = 1;
  for (int i = 0; i < 256 && last > 0; ++i) {
    last = WriteNow(writer, net::buffer(block), ec);
    ASSERT_FALSE(ec) << ec.message();
    total += last;
  }
  EXPECT_EQ(last, 0u);
  EXPECT_GT(total, 0u);
}

}  // namespace
}  // namespace berry::wire::inline_io_test
