// The server's request reading through real sockets: ClientSession, ReadMessage and the
// (phase, error) -> answer mapping as a client sees them.
#include "common/http/server.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace berry::server::server_test {
namespace {

using namespace std::chrono_literals;

// Answers every request with its method, target and body size; bad requests with their status
// and reason.
class EchoHandler : public Handler {
 public:
  uint64_t body_limit() override { return 1024; }
  net::awaitable<void> Handle(Request& request, Downstream& downstream) override {
    Response response{http::status::ok, 11};
    response.body() = std::string(request.method_string()) + " " + std::string(request.target()) +
                      " " + std::to_string(request.body().size());
    co_await downstream.Write(response);
  }
  net::awaitable<void> HandleBadRequest(http::status status, std::string_view reason,
                                        Downstream& downstream) override {
    Response response{status, 11};
    response.body() = std::string(reason);
    co_await downstream.Write(response);
  }
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.port = 0;
    options.header_timeout = 200ms;
    options.body_timeout = 200ms;
    options.header_limit_bytes = 1024;
    auto created = HttpServer::Create(
        options, [](int, net::io_context&) { return std::make_unique<EchoHandler>(); });
    ASSERT_TRUE(created.ok()) << created.status();
    server_ = *std::move(created);
    server_->Start();
    socket_.connect({net::ip::make_address("127.0.0.1"), server_->port()});
  }
  void TearDown() override { server_->Stop(); }

  void Send(std::string_view text) { net::write(socket_, net::buffer(text)); }
  void SendByteAtATime(std::string_view text) {
    for (const char c : text) {
      net::write(socket_, net::buffer(&c, 1));
    }
  }
  // Everything the server sends until it closes the connection.
  std::string ReceiveAll() {
    std::string out;
    beast::error_code ec;
    net::read(socket_, net::dynamic_buffer(out), ec);
    return out;
  }
  net::io_context io_;
  net::ip::tcp::socket socket_{io_};
  std::unique_ptr<HttpServer> server_;
};

constexpr std::string_view kRequest =
    "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
    "{\"a\":\"bcd\"}";

TEST_F(ServerTest, ARequestSentOneByteAtATimeIsAnswered) {
  SendByteAtATime(kRequest);
  const std::string received = ReceiveAll();
  EXPECT_TRUE(received.starts_with("HTTP/1.1 200")) << received;
  EXPECT_TRUE(received.ends_with("POST /echo 11")) << received;
}

TEST_F(ServerTest, APipelinedSecondRequestInTheSameWriteIsAnsweredInOrder) {
  Send(
      "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\nConnection: "
      "close\r\n\r\n");
  const std::string received = ReceiveAll();
  const size_t one = received.find("GET /one 0");
  const size_t two = received.find("GET /two 0");
  ASSERT_NE(one, std::string::npos) << received;
  ASSERT_NE(two, std::string::npos) << received;
  EXPECT_LT(one, two);
}

TEST_F(ServerTest, HeadersOverTheLimitAre431) {
  Send("GET / HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
  const std::string received = ReceiveAll();
  EXPECT_TRUE(received.starts_with("HTTP/1.1 431")) << received;
  EXPECT_TRUE(received.ends_with("request headers are too large")) << received;
}

TEST_F(ServerTest, ABodyOverTheLimitIs413) {
  Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
  std::string received = ReceiveAll();
  EXPECT_TRUE(received.starts_with("HTTP/1.1 413")) << received;
}

TEST_F(ServerTest, AChunkedBodyGrowingOverTheLimitIs413) {
  // One write: the server reads all of it, so closing after its answer does not reset.
  Send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" +
       std::string(0x400, 'a') + "\r\n400\r\n" + std::string(0x400, 'b') + "\r\n");
  const std::string received = ReceiveAll();
  EXPECT_TRUE(received.starts_with("HTTP/1.1 413")) << received;
}

TEST_F(ServerTest, HeadersThatStopComingAre408) {
  Send("POST / HTTP/1.1\r\nHo");
  const std::string received = ReceiveAll();  // the 200 ms header timeout closes it
  EXPECT_TRUE(received.starts_with("HTTP/1.1 408")) << received;
  EXPECT_TRUE(received.ends_with("timed out reading the request headers")) << received;
}

TEST_F(ServerTest, ABodyThatStopsComingIs408) {
  Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01");
  const std::string received = ReceiveAll();
  EXPECT_TRUE(received.starts_with("HTTP/1.1 408")) << received;
  EXPECT_TRUE(received.ends_with("timed out reading the request body")) << received;
}

TEST_F(ServerTest, GarbageIs400) {
  Send("NOT HTTP AT ALL\r\n\r\n");
  const std::string received = ReceiveAll();
  EXPECT_TRUE(received.starts_with("HTTP/1.1 400")) << received;
  EXPECT_TRUE(received.ends_with("malformed HTTP request")) << received;
}

TEST_F(ServerTest, AClientWaitingForContinueGetsItBeforeSendingItsBody) {
  Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
      "Connection: close\r\n\r\n");
  std::string interim(25, '\0');
  net::read(socket_, net::buffer(interim));
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  Send("abc");
  const std::string received = ReceiveAll();
  EXPECT_TRUE(received.starts_with("HTTP/1.1 200")) << received;
  EXPECT_TRUE(received.ends_with("POST /echo 3")) << received;
}

TEST_F(ServerTest, ABodySentWithTheHeaderGetsNoContinue) {
  Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
      "Connection: close\r\n\r\nabc");
  const std::string received = ReceiveAll();
  EXPECT_TRUE(received.starts_with("HTTP/1.1 200")) << received;
}

}  // namespace
}  // namespace berry::server::server_test
