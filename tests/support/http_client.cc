#include "tests/support/http_client.h"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>

#include "common/http/sse.h"
#include "tests/support/text.h"

namespace berry::test_support {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr auto kUseTuple = net::as_tuple(net::use_awaitable);
constexpr uint64_t kMaxResponseBody = 256ull * 1024 * 1024;

struct Target {
  bool tls = false;
  std::string host;
  uint16_t port = 0;
  std::string target;  // path and query
};

absl::StatusOr<Target> ParseUrl(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) {
    return absl::InvalidArgumentError(text::Cat("bad URL '", url, "': ", parsed.error().message()));
  }
  const boost::urls::url_view& u = *parsed;
  Target t;
  std::string_view scheme = u.scheme();
  if (scheme == "https") {
    t.tls = true;
  } else if (scheme != "http") {
    return absl::InvalidArgumentError(text::Cat("unsupported scheme in '", url, "'"));
  }
  t.host = u.host_address();
  if (t.host.empty()) {
    return absl::InvalidArgumentError(text::Cat("no host in '", url, "'"));
  }
  t.port = u.has_port() ? u.port_number() : (t.tls ? 443 : 80);
  t.target = std::string_view(u.encoded_target());
  if (t.target.empty()) {
    t.target = "/";
  }
  return t;
}

absl::Status FromError(std::string_view what, const boost::system::error_code& ec) {
  if (ec == beast::error::timeout) {
    return absl::DeadlineExceededError(text::Cat(what, ": timed out"));
  }
  return absl::UnavailableError(text::Cat(what, ": ", ec.message()));
}

HttpHeaders CopyHeaders(const http::fields& fields) {
  HttpHeaders out;
  for (const auto& f : fields) {
    out.emplace_back(std::string(f.name_string()), std::string(f.value()));
  }
  return out;
}

std::optional<std::string> FindHeader(const HttpHeaders& headers, std::string_view name) {
  for (const auto& [k, v] : headers) {
    if (text::EqualsIgnoreCase(k, name)) {
      return v;
    }
  }
  return std::nullopt;
}

bool HasHeader(const HttpHeaders& headers, std::string_view name) {
  return FindHeader(headers, name).has_value();
}

// Runs `op` to completion on `io` (which nothing else runs) and returns its result.
template <class T>
T RunSync(net::io_context& io, net::awaitable<T> op) {
  std::optional<T> result;
  net::co_spawn(io, std::move(op), [&result](const std::exception_ptr& e, T value) {
    if (e) {
      result.emplace(absl::InternalError("http client: unexpected exception"));
    } else {
      result.emplace(std::move(value));
    }
  });
  io.restart();
  io.run();
  if (!result) {
    return T(absl::InternalError("http client: operation did not complete"));
  }
  return *std::move(result);
}

}  // namespace

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  return FindHeader(headers, name);
}

std::optional<std::string> StreamedResponse::Header(std::string_view name) const {
  return FindHeader(headers, name);
}

class HttpConnection::Impl {
 public:
  absl::Status Connect(const Target& t, const ClientTlsOptions& tls,
                       std::chrono::milliseconds timeout) {
    host_header_ = t.host.find(':') != std::string::npos ? text::Cat("[", t.host, "]") : t.host;
    if ((t.tls && t.port != 443) || (!t.tls && t.port != 80)) {
      text::Append(host_header_, ":", t.port);
    }
    return RunSync(io_, DoConnect(t, tls, timeout));
  }

  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) {
    absl::StatusOr<std::string> target = TargetOf(request);
    if (!target.ok()) {
      return target.status();
    }
    if (tls_) {
      return RunSync(io_, DoSend(*tls_, request, *target));
    }
    return RunSync(io_, DoSend(*plain_, request, *target));
  }

  absl::StatusOr<StreamedResponse> SendStreaming(const HttpRequest& request,
                                                 const SseCallback& on_event) {
    absl::StatusOr<std::string> target = TargetOf(request);
    if (!target.ok()) {
      return target.status();
    }
    if (tls_) {
      return RunSync(io_, DoStream(*tls_, request, *target, on_event));
    }
    return RunSync(io_, DoStream(*plain_, request, *target, on_event));
  }

  bool is_open() const { return open_; }

  void Close() {
    boost::system::error_code ec;
    if (tls_) {
      beast::get_lowest_layer(*tls_).socket().close(ec);
    } else if (plain_) {
      plain_->socket().close(ec);
    }
    open_ = false;
  }

 private:
  absl::StatusOr<std::string> TargetOf(const HttpRequest& request) const {
    if (!open_) {
      return absl::FailedPreconditionError("http client: the connection is closed");
    }
    if (!request.url.empty() && request.url.front() == '/') {
      return request.url;
    }
    absl::StatusOr<Target> t = ParseUrl(request.url);
    if (!t.ok()) {
      return t.status();
    }
    return t->target;
  }

  net::awaitable<absl::Status> DoConnect(Target t, ClientTlsOptions tls,
                                         std::chrono::milliseconds timeout) {
    tcp::resolver resolver(io_);
    auto [rec, results] =
        co_await resolver.async_resolve(t.host, std::to_string(t.port), kUseTuple);
    if (rec) {
      co_return FromError(text::Cat("resolve ", t.host), rec);
    }
    beast::tcp_stream stream(io_);
    stream.expires_after(timeout);
    auto [cec, endpoint] = co_await stream.async_connect(results, kUseTuple);
    if (cec) {
      co_return FromError(text::Cat("connect ", t.host, ":", t.port), cec);
    }
    boost::system::error_code ignored;
    stream.socket().set_option(tcp::no_delay(true), ignored);
    if (!t.tls) {
      plain_.emplace(std::move(stream));
      open_ = true;
      co_return absl::OkStatus();
    }

    ssl_ctx_.emplace(net::ssl::context::tls_client);
    boost::system::error_code ec;
    if (!tls.ca_pem.empty()) {
      ssl_ctx_->add_certificate_authority(net::buffer(tls.ca_pem), ec);
    } else {
      ssl_ctx_->set_default_verify_paths(ec);
    }
    if (!ec && !tls.cert_pem.empty()) {
      ssl_ctx_->use_certificate_chain(net::buffer(tls.cert_pem), ec);
      if (!ec) {
        ssl_ctx_->use_private_key(net::buffer(tls.key_pem), net::ssl::context::pem, ec);
      }
    }
    if (ec) {
      co_return absl::InvalidArgumentError(text::Cat("TLS client setup: ", ec.message()));
    }
    tls_.emplace(std::move(stream), *ssl_ctx_);
    const std::string name = tls.server_name.empty() ? t.host : tls.server_name;
    boost::system::error_code addr_ec;
    net::ip::make_address(name, addr_ec);
    if (addr_ec && !SSL_set_tlsext_host_name(tls_->native_handle(), name.c_str())) {
      co_return absl::InternalError("TLS client: cannot set SNI");
    }
    if (tls.verify) {
      tls_->set_verify_mode(net::ssl::verify_peer, ec);
      tls_->set_verify_callback(net::ssl::host_name_verification(name), ec);
    } else {
      tls_->set_verify_mode(net::ssl::verify_none, ec);
    }
    beast::get_lowest_layer(*tls_).expires_after(timeout);
    auto [hec] = co_await tls_->async_handshake(net::ssl::stream_base::client, kUseTuple);
    if (hec) {
      co_return FromError(text::Cat("TLS handshake with ", name), hec);
    }
    open_ = true;
    co_return absl::OkStatus();
  }

  // Writes the request; on failure marks the connection closed.
  template <class Stream>
  net::awaitable<absl::Status> WriteRequest(Stream& stream, const HttpRequest& r,
                                            const std::string& target) {
    http::request<http::string_body> req;
    req.version(11);
    req.method_string(r.method);
    req.target(target);
    for (const auto& [name, value] : r.headers) {
      req.insert(name, value);
    }
    if (!HasHeader(r.headers, "Host")) {
      req.set(http::field::host, host_header_);
    }
    if (!r.body.empty() && !HasHeader(r.headers, "Content-Type")) {
      req.set(http::field::content_type, "application/json");
    }
    req.body() = r.body;
    if (!HasHeader(r.headers, "Content-Length") && !HasHeader(r.headers, "Transfer-Encoding")) {
      req.prepare_payload();
    }
    beast::get_lowest_layer(stream).expires_after(r.timeout);
    auto [ec, n] = co_await http::async_write(stream, req, kUseTuple);
    if (ec) {
      open_ = false;
      co_return FromError("write request", ec);
    }
    co_return absl::OkStatus();
  }

  template <class Stream>
  net::awaitable<absl::StatusOr<HttpResponse>> DoSend(Stream& stream, const HttpRequest& r,
                                                      const std::string& target) {
    if (absl::Status s = co_await WriteRequest(stream, r, target); !s.ok()) {
      co_return s;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxResponseBody);
    if (r.method == "HEAD") {
      parser.skip(true);
    }
    beast::get_lowest_layer(stream).expires_after(r.timeout);
    auto [ec, n] = co_await http::async_read(stream, buffer_, parser, kUseTuple);
    if (ec) {
      open_ = false;
      co_return FromError("read response", ec);
    }
    HttpResponse out;
    auto& res = parser.get();
    out.status = static_cast<int>(res.result_int());
    out.headers = CopyHeaders(res.base());
    out.body = std::move(res.body());
    out.connection_close = !res.keep_alive();
    if (out.connection_close) {
      open_ = false;
    }
    co_return out;
  }

  template <class Stream>
  net::awaitable<absl::StatusOr<StreamedResponse>> DoStream(Stream& stream, const HttpRequest& r,
                                                            const std::string& target,
                                                            const SseCallback& on_event) {
    if (absl::Status s = co_await WriteRequest(stream, r, target); !s.ok()) {
      co_return s;
    }
    auto& lowest = beast::get_lowest_layer(stream);
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(kMaxResponseBody);
    lowest.expires_after(r.timeout);
    auto [hec, hn] = co_await http::async_read_header(stream, buffer_, parser, kUseTuple);
    if (hec) {
      open_ = false;
      co_return FromError("read response header", hec);
    }
    StreamedResponse out;
    out.headers_at = Clock::now();
    out.status = static_cast<int>(parser.get().result_int());
    out.headers = CopyHeaders(parser.get().base());
    out.connection_close = !parser.get().keep_alive();
    const bool event_stream = text::StartsWithIgnoreCase(
        std::string_view(parser.get()[http::field::content_type]), "text/event-stream");

    sse::SseEventSplitter splitter;
    std::array<char, 16384> chunk;
    size_t reported = 0;
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      lowest.expires_after(r.timeout);
      auto [ec, n] = co_await http::async_read_some(stream, buffer_, parser, kUseTuple);
      if (ec == http::error::need_buffer) {
        ec = {};
      }
      const size_t got = chunk.size() - parser.get().body().size;
      const Clock::time_point now = Clock::now();
      if (got > 0) {
        std::string_view bytes(chunk.data(), got);
        out.body.append(bytes);
        if (event_stream) {
          splitter.Feed(bytes, [&out, now](std::string_view data) {
            out.events.push_back(SseEvent{std::string(data), now});
          });
        }
      }
      for (; reported < out.events.size(); ++reported) {
        if (on_event && !on_event(out.events[reported])) {
          Close();
          out.body_status = absl::CancelledError("stopped by the caller");
          co_return out;
        }
      }
      if (ec) {
        open_ = false;
        out.body_status = FromError("read response body", ec);
        co_return out;
      }
    }
    if (out.connection_close) {
      open_ = false;
    }
    co_return out;
  }

  net::io_context io_{1};
  std::optional<net::ssl::context> ssl_ctx_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
  std::string host_header_;
  bool open_ = false;
};

HttpConnection::HttpConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpConnection::~HttpConnection() = default;

absl::StatusOr<std::unique_ptr<HttpConnection>> HttpConnection::Connect(
    std::string_view url, const ClientTlsOptions& tls, std::chrono::milliseconds timeout) {
  absl::StatusOr<Target> t = ParseUrl(url);
  if (!t.ok()) {
    return t.status();
  }
  auto impl = std::make_unique<Impl>();
  if (absl::Status s = impl->Connect(*t, tls, timeout); !s.ok()) {
    return s;
  }
  return std::unique_ptr<HttpConnection>(new HttpConnection(std::move(impl)));
}

absl::StatusOr<HttpResponse> HttpConnection::Send(const HttpRequest& request) {
  return impl_->Send(request);
}

absl::StatusOr<StreamedResponse> HttpConnection::SendStreaming(const HttpRequest& request,
                                                               const SseCallback& on_event) {
  return impl_->SendStreaming(request, on_event);
}

bool HttpConnection::is_open() const { return impl_->is_open(); }

void HttpConnection::Close() { impl_->Close(); }

absl::StatusOr<HttpResponse> Fetch(const HttpRequest& request) {
  absl::StatusOr<std::unique_ptr<HttpConnection>> conn =
      HttpConnection::Connect(request.url, request.tls, request.timeout);
  if (!conn.ok()) {
    return conn.status();
  }
  return (*conn)->Send(request);
}

absl::StatusOr<StreamedResponse> FetchStreaming(const HttpRequest& request,
                                                const SseCallback& on_event) {
  absl::StatusOr<std::unique_ptr<HttpConnection>> conn =
      HttpConnection::Connect(request.url, request.tls, request.timeout);
  if (!conn.ok()) {
    return conn.status();
  }
  return (*conn)->SendStreaming(request, on_event);
}

}  // namespace berry::test_support
