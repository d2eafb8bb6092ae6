#include "common/http/client.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/url/parse.hpp>
#include <string_view>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/http/inline_io.h"

namespace berry::upstream {
namespace {

constexpr auto kNoThrow = net::as_tuple(net::use_awaitable);

bool IsIpLiteral(const std::string& host) {
  beast::error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

absl::StatusOr<Endpoint> Endpoint::Parse(std::string_view base_url, bool verify) {
  auto url = boost::urls::parse_uri(base_url);
  if (!url) {
    return absl::InvalidArgumentError(
        absl::StrCat("base_url is not a valid URL: ", url.error().message()));
  }
  Endpoint endpoint;
  const std::string scheme = absl::AsciiStrToLower(std::string(url->scheme()));
  if (scheme == "https") {
    endpoint.tls = true;
  } else if (scheme != "http") {
    return absl::InvalidArgumentError("base_url scheme must be http or https");
  }
  endpoint.host = std::string(url->host_address());
  if (endpoint.host.empty()) {
    return absl::InvalidArgumentError("base_url has no host");
  }
  const uint16_t default_port = endpoint.tls ? 443 : 80;
  endpoint.port = url->has_port() ? url->port_number() : default_port;
  if (endpoint.port == 0) {
    return absl::InvalidArgumentError("base_url port must be 1-65535");
  }
  // IPv6 literals keep their brackets in the Host header only.
  const std::string host_for_header = url->host_type() == boost::urls::host_type::ipv6
                                          ? absl::StrCat("[", endpoint.host, "]")
                                          : endpoint.host;
  endpoint.host_header = endpoint.port == default_port
                             ? host_for_header
                             : absl::StrCat(host_for_header, ":", endpoint.port);
  std::string path(url->encoded_path());
  while (!path.empty() && path.back() == '/') {
    path.pop_back();
  }
  endpoint.path_prefix = std::move(path);
  endpoint.verify = verify;
  endpoint.pool_key = absl::StrCat(endpoint.tls ? "https://" : "http://", host_for_header, ":",
                                   endpoint.port, endpoint.tls && !verify ? "#insecure" : "");
  return endpoint;
}

absl::StatusOr<std::shared_ptr<const TlsContexts>> TlsContexts::Create(
    const std::string& extra_ca_file) {
  std::shared_ptr<TlsContexts> contexts(new TlsContexts());
  contexts->verifying_ = std::make_unique<net::ssl::context>(net::ssl::context::tls_client);
  contexts->insecure_ = std::make_unique<net::ssl::context>(net::ssl::context::tls_client);
  beast::error_code ec;
  contexts->verifying_->set_default_verify_paths(ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot load the system CA store: ", ec.message()));
  }
  if (!extra_ca_file.empty()) {
    contexts->verifying_->load_verify_file(extra_ca_file, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load CA file '", extra_ca_file, "': ", ec.message()));
    }
  }
  contexts->verifying_->set_verify_mode(net::ssl::verify_peer);
  contexts->insecure_->set_verify_mode(net::ssl::verify_none);
  for (net::ssl::context* context : {contexts->verifying_.get(), contexts->insecure_.get()}) {
    SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
    // Session resumption makes re-connects to a provider cheap.
    SSL_CTX_set_session_cache_mode(context->native_handle(), SSL_SESS_CACHE_CLIENT);
  }
  return std::shared_ptr<const TlsContexts>(std::move(contexts));
}

Connection::Connection(net::io_context& io_context, const Endpoint& endpoint,
                       const TlsContexts& tls_contexts)
    : pool_key_(endpoint.pool_key) {
  // One read takes up to the buffer's spare capacity (ReadRoom): room for a whole typical
  // response, or for many stream events at once when the relay has fallen behind.
  buffer_.reserve(kReadBufferBytes);
  if (endpoint.tls) {
    secure_.emplace(io_context,
                    endpoint.verify ? tls_contexts.verifying() : tls_contexts.insecure());
  } else {
    plain_.emplace(io_context);
  }
  deadline_.emplace(tcp(), deadline::SocketDeadline::OnExpiry::kClose);
}

net::ip::tcp::socket& Connection::tcp() {
  return secure_ ? beast::get_lowest_layer(*secure_) : *plain_;
}

void Connection::Cancel() {
  beast::error_code ignored;
  tcp().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  tcp().close(ignored);
}

namespace {

// Room for one read into a connection's buffer: its spare capacity (kReadBufferBytes reserved
// up front), at least 4 KiB.
size_t ReadRoom(const beast::flat_buffer& buffer) {
  return std::max<size_t>(4096, buffer.capacity() - buffer.size());
}

}  // namespace

net::awaitable<beast::error_code> Connection::Fill() {
  beast::error_code ec;
  size_t n = 0;
  // (if/else, not a conditional expression: GCC 12 miscompiles co_await inside `?:`.)
  if (secure_) {
    std::tie(ec, n) =
        co_await secure_->async_read_some(buffer_.prepare(ReadRoom(buffer_)), kNoThrow);
  } else {
    std::tie(ec, n) =
        co_await plain_->async_read_some(buffer_.prepare(ReadRoom(buffer_)), kNoThrow);
  }
  buffer_.commit(n);
  co_return ec;
}

net::awaitable<beast::error_code> Connection::RoundTrip(std::string_view head,
                                                        std::string_view body,
                                                        ResponseParser& parser) {
  const std::array<net::const_buffer, 2> buffers{net::buffer(head), net::buffer(body)};
  beast::error_code ec;
  if (secure_) {
    std::tie(ec, std::ignore) = co_await net::async_write(*secure_, buffers, kNoThrow);
  } else {
    // The request usually fits the socket's send buffer: written at once (inline_io.h).
    const size_t written = wire::WriteNow(*plain_, buffers, ec);
    if (!ec && written < head.size() + body.size()) {
      beast::buffers_suffix<std::array<net::const_buffer, 2>> rest(buffers);
      rest.consume(written);
      std::tie(ec, std::ignore) = co_await net::async_write(*plain_, rest, kNoThrow);
    }
  }
  if (ec) {
    co_return deadline_->Translate(ec);
  }
  // The header: plain reads into the connection's buffer, parsed from there (no Beast read
  // operation around each read).
  co_return (co_await wire::ReadMessage(*this, parser, wire::ReadUntil::kHeader)).ec;
}

net::awaitable<beast::error_code> Connection::ReadHeader(ResponseParser& parser) {
  co_return (co_await wire::ReadMessage(*this, parser, wire::ReadUntil::kHeader)).ec;
}

// Not a coroutine: the read's own awaitable is returned, so reading costs one coroutine frame.
net::awaitable<wire::ReadResult> Connection::ReadSome(ResponseParser& parser, char* data,
                                                      size_t size) {
  auto& body = parser.get().body();
  body.data = data;
  body.size = size;
  // Bytes already buffered (they came with the header, or with the previous read) first.
  return wire::ReadMessage(*this, parser, wire::ReadUntil::kSomeBody);
}

net::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connection::Open(
    net::io_context& io_context, const TlsContexts& tls_contexts, const Endpoint& endpoint,
    std::chrono::steady_clock::duration timeout, ConnectError* error_kind) {
  auto connection = std::make_unique<Connection>(io_context, endpoint, tls_contexts);
  net::ip::tcp::socket& tcp = connection->tcp();
  deadline::SocketDeadline& deadline = *connection->deadline_;
  const auto expiry = std::chrono::steady_clock::now() + timeout;

  net::ip::tcp::resolver resolver(io_context);
  auto [resolve_ec, results] =
      co_await resolver.async_resolve(endpoint.host, std::to_string(endpoint.port), kNoThrow);
  if (resolve_ec) {
    *error_kind = ConnectError::kResolve;
    co_return absl::UnavailableError(
        absl::StrCat("cannot resolve ", endpoint.host, ": ", resolve_ec.message()));
  }
  deadline.ExpiresAt(expiry);
  auto [connect_error, connected] = co_await net::async_connect(tcp, results, kNoThrow);
  const beast::error_code connect_ec = deadline.Translate(connect_error);
  if (connect_ec) {
    *error_kind =
        connect_ec == beast::error::timeout ? ConnectError::kTimeout : ConnectError::kConnect;
    co_return absl::UnavailableError(
        absl::StrCat("cannot connect to ", endpoint.host_header, ": ", connect_ec.message()));
  }
  beast::error_code ignored;
  tcp.set_option(net::ip::tcp::no_delay(true), ignored);
  if (!connection->secure_) {
    // For the writes done at once (inline_io.h): a blocking socket would stall the worker.
    beast::error_code ec;
    tcp.non_blocking(true, ec);
    if (ec) {
      *error_kind = ConnectError::kConnect;
      co_return absl::UnavailableError(absl::StrCat(
          "cannot make the connection to ", endpoint.host_header, " non-blocking: ", ec.message()));
    }
  }
  if (connection->secure_) {
    auto& secure = *connection->secure_;
    if (!IsIpLiteral(endpoint.host)) {
      SSL_set_tlsext_host_name(secure.native_handle(), endpoint.host.c_str());  // SNI
    }
    if (endpoint.verify) {
      secure.set_verify_callback(net::ssl::host_name_verification(endpoint.host));
    }
    auto [handshake_ec] = co_await secure.async_handshake(net::ssl::stream_base::client, kNoThrow);
    const beast::error_code tls_ec = deadline.Translate(handshake_ec);
    if (tls_ec) {
      *error_kind = tls_ec == beast::error::timeout ? ConnectError::kTimeout : ConnectError::kTls;
      co_return absl::UnavailableError(
          absl::StrCat("TLS handshake with ", endpoint.host_header, " failed: ", tls_ec.message()));
    }
  }
  deadline.ExpiresNever();
  *error_kind = ConnectError::kNone;
  co_return connection;
}

}  // namespace berry::upstream
