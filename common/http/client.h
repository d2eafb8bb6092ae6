// Outbound (provider-side, "upstream") HTTP/1.1 connections, plain or TLS (OpenSSL through Asio:
// SNI, certificate and host-name verification against the system store unless a provider turns
// `tls_verify` off): where a provider lives (Endpoint), the shared TLS settings, opening a
// connection within a deadline, one request/response round trip and reading a body. The proxy
// keeps them alive in its pool (data-plane/upstream); the control plane's health checker opens
// one per probe.
//
// Threads: a Connection belongs to one io_context and is used only on its thread. The TLS
// contexts are shared read-only by every thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/http/deadline.h"
#include "common/http/read_message.h"

namespace berry::upstream {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// An upstream response's parser. Its fields are allocated with the allocator it is made with:
// the proxy gives it the request's arena (common/http/request_arena.h).
using MessageAllocator = std::pmr::polymorphic_allocator<char>;
using ResponseFields = http::basic_fields<MessageAllocator>;
using ResponseParser = http::response_parser<http::buffer_body, MessageAllocator>;

// Where a provider lives, parsed once per route table from its base_url.
struct Endpoint {
  bool tls = false;
  std::string host;  // name or IP literal (no brackets)
  uint16_t port = 0;
  std::string host_header;  // "host" or "host:port" when the port is not the scheme's default
  std::string path_prefix;  // base_url's path without a trailing '/', e.g. "/v1"
  bool verify = true;       // tls_verify
  std::string pool_key;     // identifies interchangeable connections

  // Parses "http(s)://host[:port][/path]". `verify` is the provider's tls_verify.
  static absl::StatusOr<Endpoint> Parse(std::string_view base_url, bool verify);
};

// TLS settings shared by every worker.
class TlsContexts {
 public:
  // `extra_ca_file`: PEM bundle trusted in addition to the system store (private CAs, tests).
  static absl::StatusOr<std::shared_ptr<const TlsContexts>> Create(
      const std::string& extra_ca_file = {});

  net::ssl::context& verifying() const { return *verifying_; }
  net::ssl::context& insecure() const { return *insecure_; }

 private:
  TlsContexts() = default;
  std::unique_ptr<net::ssl::context> verifying_;
  std::unique_ptr<net::ssl::context> insecure_;
};

// How a connection attempt failed, for retries and outlier detection.
enum class ConnectError { kNone, kResolve, kConnect, kTimeout, kTls };

// One upstream connection, plain or TLS, with its read buffer (bytes read past one response
// belong to the connection, not to the request).
class Connection {
 public:
  static constexpr size_t kReadBufferBytes = size_t{16} * 1024;

  Connection(net::io_context& io_context, const Endpoint& endpoint,
             const TlsContexts& tls_contexts);

  // A fresh connection to `endpoint`: resolved, connected (and TLS-handshaken) within
  // `timeout`. On failure `error_kind` says which step failed.
  static net::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Open(
      net::io_context& io_context, const TlsContexts& tls_contexts, const Endpoint& endpoint,
      std::chrono::steady_clock::duration timeout, ConnectError* error_kind);

  // Whether it served a response before (a pool handed it out again).
  bool reused() const { return reused_; }
  void set_reused() { reused_ = true; }
  // When it last became idle (the pool's bookkeeping).
  std::chrono::steady_clock::time_point idle_since() const { return idle_since_; }
  void set_idle_since(std::chrono::steady_clock::time_point when) { idle_since_ = when; }
  // A deadline closed it; it must not be used again, even if its last read succeeded.
  bool expired() const { return deadline_->expired(); }
  const std::string& pool_key() const { return pool_key_; }
  net::ip::tcp::socket& tcp();
  beast::flat_buffer& buffer() { return buffer_; }
  // Closes the socket; a pending operation completes with an error. Safe to call twice.
  void Cancel();

  // Deadline for everything that follows (until the next call); an operation it cuts off fails
  // with beast::error::timeout.
  void ExpiresAfter(std::chrono::steady_clock::duration timeout) {
    deadline_->ExpiresAfter(timeout);
  }
  void ExpiresNever() { deadline_->ExpiresNever(); }

  // Sends a request, `head` (request line and fields, ending in an empty line, see
  // common/http/wire.h) and `body` in one gather write, and reads the response's header into
  // `parser`. The header may be an interim one (1xx, e.g. 100 Continue or 103 Early Hints):
  // the caller skips it with ReadHeader into a fresh parser.
  net::awaitable<beast::error_code> RoundTrip(std::string_view head, std::string_view body,
                                              ResponseParser& parser);
  // Reads the next response header into `parser` (after an interim one).
  net::awaitable<beast::error_code> ReadHeader(ResponseParser& parser);
  // Reads some body bytes into `data`/`size` (bytes already buffered first, then at most as
  // many socket reads as it takes to place one byte or finish the message); returns the error
  // and the number of body bytes placed (`auto [ec, n] = co_await ReadSome(...)`).
  net::awaitable<wire::ReadResult> ReadSome(ResponseParser& parser, char* data, size_t size);

  // The read side wire::ReadMessage reads through (read_message.h); RoundTrip and ReadSome are
  // how everyone else reads.
  // One read of whatever the socket has into buffer() (end of stream comes back as eof).
  net::awaitable<beast::error_code> Fill();
  beast::error_code Translate(beast::error_code ec) const { return deadline_->Translate(ec); }

 private:
  std::string pool_key_;
  bool reused_ = false;
  std::chrono::steady_clock::time_point idle_since_;
  std::optional<net::ip::tcp::socket> plain_;
  std::optional<beast::ssl_stream<net::ip::tcp::socket>> secure_;
  std::optional<deadline::SocketDeadline> deadline_;  // on whichever socket is in use
  beast::flat_buffer buffer_;
};

}  // namespace berry::upstream
