// A small blocking HTTP/1.1 client for tests: one request and its whole response, or a streamed
// response whose Server-Sent Events are reported one by one with their arrival time. Works over
// HTTP and HTTPS (trusting a given CA, optionally presenting a client certificate), with a
// deadline on every step, and never throws. Tests of the mock upstream and of the proxy use it;
// it is not meant to be fast.
//
// Threads: an HttpConnection belongs to one thread at a time (it runs its own private
// io_context inside each call). The free functions are independent and may run concurrently.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace berry::test_support {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct ClientTlsOptions {
  // PEM trust anchors; empty = the system's default store (which does not know test CAs).
  std::string ca_pem;
  // Name sent as SNI (when it is not an IP address) and checked against the certificate;
  // empty = the URL's host.
  std::string server_name;
  bool verify = true;
  // Client certificate and key (PEM) for mTLS; both or neither.
  std::string cert_pem;
  std::string key_pem;
};

struct HttpRequest {
  std::string method = "GET";
  // "http://host:port/path?query" or "https://...". HttpConnection::Send also takes a bare
  // target ("/v1/models") and sends it to the host it is connected to.
  std::string url;
  // Sent as given; Host, and Content-Length for a body, are added unless present, and
  // Content-Type: application/json when there is a body and no Content-Type.
  HttpHeaders headers;
  std::string body;
  // Limit for connecting (incl. TLS handshake), for writing the request, and for each read
  // (the whole response, or, when streaming, the gap between two reads).
  std::chrono::milliseconds timeout = std::chrono::seconds(10);
  ClientTlsOptions tls;

  static HttpRequest Get(std::string url) {
    HttpRequest r;
    r.url = std::move(url);
    return r;
  }
  static HttpRequest Post(std::string url, std::string body) {
    HttpRequest r;
    r.method = "POST";
    r.url = std::move(url);
    r.body = std::move(body);
    return r;
  }
};

struct HttpResponse {
  int status = 0;
  HttpHeaders headers;  // arrival order, names as sent
  std::string body;
  // The server asked to close, or the response was delimited by closing.
  bool connection_close = false;

  // The first value of header `name` (case-insensitive), if present.
  std::optional<std::string> Header(std::string_view name) const;
};

// One Server-Sent Event: its `data:` lines joined by '\n' (e.g. a JSON chunk or "[DONE]"), as
// common/http/sse.h splits them (events without `data` are not reported).
struct SseEvent {
  std::string data;
  std::chrono::steady_clock::time_point arrived_at;  // when the read that completed it returned
};

struct StreamedResponse {
  int status = 0;
  HttpHeaders headers;
  bool connection_close = false;
  // Parsed when the response is text/event-stream; `body` always holds the raw bytes.
  std::vector<SseEvent> events;
  std::string body;
  std::chrono::steady_clock::time_point headers_at;
  // OK when the body ended as the framing said it would; an error when the connection broke
  // or timed out mid-body (the events before that are kept), Cancelled when `on_event` said
  // stop (the connection is then closed).
  absl::Status body_status;

  std::optional<std::string> Header(std::string_view name) const;
  // True when the last event is `data: [DONE]`.
  bool done() const { return !events.empty() && events.back().data == "[DONE]"; }
};

// Called for each event as it arrives; return false to stop reading and close the connection.
using SseCallback = std::function<bool(const SseEvent&)>;

// A kept-alive connection to one host: several requests in turn over one TCP (TLS) connection.
class HttpConnection {
 public:
  // Connects to the scheme, host and port of `url` (its path is ignored).
  static absl::StatusOr<std::unique_ptr<HttpConnection>> Connect(
      std::string_view url, const ClientTlsOptions& tls = {},
      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;
  ~HttpConnection();

  // Sends `request` (its url may be a full URL for this host or a bare target) and reads the
  // response. Transport failures are errors: DeadlineExceeded on a timeout, Unavailable when
  // the connection failed or was closed; an HTTP error status is a normal response.
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request);
  // Like Send, but reads the body incrementally and reports SSE events as they arrive.
  absl::StatusOr<StreamedResponse> SendStreaming(const HttpRequest& request,
                                                 const SseCallback& on_event = {});

  // False once the server closed the connection, asked to close it, or a call failed.
  bool is_open() const;
  void Close();

 private:
  class Impl;
  explicit HttpConnection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One request on a fresh connection, closed afterwards.
absl::StatusOr<HttpResponse> Fetch(const HttpRequest& request);
absl::StatusOr<StreamedResponse> FetchStreaming(const HttpRequest& request,
                                                const SseCallback& on_event = {});

}  // namespace berry::test_support
