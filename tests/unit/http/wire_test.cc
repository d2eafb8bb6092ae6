#include "common/http/wire.h"

#include <boost/beast/http/string_body.hpp>
#include <string>

#include "gtest/gtest.h"

namespace berry::wire::wire_test {
namespace {

TEST(AppendStatusLine, WritesCodeAndReason) {
  std::string out;
  AppendStatusLine(out, 200);
  AppendStatusLine(out, 429);
  AppendStatusLine(out, 503);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nHTTP/1.1 429 Too Many Requests\r\n"
            "HTTP/1.1 503 Service Unavailable\r\n");
}

TEST(AppendStatusLine, UnknownCodeKeepsTheCode) {
  std::string out;
  AppendStatusLine(out, 599);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 599 ")) << out;
  EXPECT_TRUE(out.ends_with("\r\n")) << out;
}

TEST(AppendRequestLine, MethodTargetVersion) {
  std::string out;
  AppendRequestLine(out, "POST", {"/v1/chat/completions?x=1"});
  EXPECT_EQ(out, "POST /v1/chat/completions?x=1 HTTP/1.1\r\n");
}

TEST(AppendRequestLine, TargetInPiecesIsJoined) {
  std::string out;
  AppendRequestLine(out, "POST", {"/openai/v1", "/chat/completions", "?api-version=2", ""});
  EXPECT_EQ(out, "POST /openai/v1/chat/completions?api-version=2 HTTP/1.1\r\n");
}

TEST(AppendField, NameColonValue) {
  std::string out = "x";
  AppendField(out, "Content-Type", "application/json");
  EXPECT_EQ(out, "xContent-Type: application/json\r\n");
}

TEST(AppendContentLength, Decimal) {
  std::string out;
  AppendContentLength(out, 0);
  AppendContentLength(out, 1234567890123ULL);
  EXPECT_EQ(out, "Content-Length: 0\r\nContent-Length: 1234567890123\r\n");
}

TEST(AppendFieldsExceptFraming, DropsFramingAndTheNamedField) {
  http::fields fields;
  fields.insert("Content-Type", "application/json");
  fields.insert(http::field::connection, "close");
  fields.insert(http::field::content_length, "12");
  fields.insert(http::field::transfer_encoding, "chunked");
  fields.insert("X-Request-Id", "abc");
  fields.insert("x-custom", "1");
  fields.insert("x-custom", "2");
  std::string out;
  AppendFieldsExceptFraming(out, fields, "x-request-id");
  EXPECT_EQ(out, "Content-Type: application/json\r\nx-custom: 1\r\nx-custom: 2\r\n");
}

TEST(AppendFieldsExceptFraming, EmptySkipNameKeepsEverythingElse) {
  http::fields fields;
  fields.insert("x-request-id", "abc");
  std::string out;
  AppendFieldsExceptFraming(out, fields);
  EXPECT_EQ(out, "x-request-id: abc\r\n");
}

TEST(AppendRequestHead, SerializesABeastRequestAsIs) {
  http::request<http::string_body> request{http::verb::get, "/v1/models", 11};
  request.set(http::field::host, "api.example.com");
  request.set("Authorization", "Bearer k");
  request.keep_alive(false);
  std::string out;
  AppendRequestHead(out, request);
  EXPECT_EQ(out,
            "GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer k\r\n"
            "Connection: close\r\n\r\n");
}

TEST(StatusHasNoBody, InformationalNoContentNotModified) {
  EXPECT_TRUE(StatusHasNoBody(100));
  EXPECT_TRUE(StatusHasNoBody(101));
  EXPECT_TRUE(StatusHasNoBody(204));
  EXPECT_TRUE(StatusHasNoBody(304));
  EXPECT_FALSE(StatusHasNoBody(200));
  EXPECT_FALSE(StatusHasNoBody(205));
  EXPECT_FALSE(StatusHasNoBody(404));
  EXPECT_FALSE(StatusHasNoBody(500));
}

TEST(ChunkSizeLine, LowercaseHexWithCrLf) {
  ChunkLineStorage storage;
  EXPECT_EQ(ChunkSizeLine(1, storage), "1\r\n");
  EXPECT_EQ(ChunkSizeLine(500, storage), "1f4\r\n");
  EXPECT_EQ(ChunkSizeLine(0xffffffffffffffffULL, storage), "ffffffffffffffff\r\n");
}

}  // namespace
}  // namespace berry::wire::wire_test
