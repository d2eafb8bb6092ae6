// An in-process berry-proxy for integration tests, wired exactly like data-plane/proxy_main.cc
// (RouteStore, ProxyMetrics, AccessLog, TlsContexts, HttpServer with a ProxyHandler per worker)
// and served from a TOML string, plus the small tools the tests need around it: reading the
// Prometheus text back, reading the access log back, a raw TCP client for what the HTTP client
// cannot do (pipelining, trickling headers, chunked uploads), and polling with a deadline.
//
// Threads: a TestProxy is driven from the test's thread (Start, Reload, Stop, the accessors);
// the proxy itself runs on its own worker threads. Everything else here is used from one thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/http/server.h"
#include "data-plane/proxy/access_log.h"
#include "data-plane/proxy/clock.h"
#include "data-plane/proxy/proxy_handler.h"
#include "data-plane/proxy/proxy_metrics.h"
#include "data-plane/proxy/route_store.h"
#include "data-plane/upstream/upstream_pool.h"

namespace berry::itest {

using namespace std::chrono_literals;

struct TestProxyOptions {
  int threads = 2;
  // ServerOptions deadlines; the defaults are proxy_main's.
  std::chrono::milliseconds header_timeout = 10s;
  std::chrono::milliseconds idle_timeout = 75s;
  std::chrono::milliseconds write_timeout = 60s;
  // PEM trusted for HTTPS upstreams besides the system store (proxy_main's --upstream-ca).
  std::string extra_ca_pem;
  // The access log goes to a temporary file that access_log_text() reads back; off = disabled.
  bool access_log = true;
  // The request path's clock (must outlive the proxy); null = the system clocks.
  const proxy::Clock* clock = nullptr;
  // Seeds every worker's selection generator (each worker then draws the same sequence); unset =
  // random.
  std::optional<uint64_t> rng_seed;
  // proxy_main's --metrics-user-labels.
  bool metrics_user_labels = false;
  // Managed mode's fleet-wide limits (RouteStore::set_fleet_status): the test plays the control
  // plane with a fleet::QuotaClient over routes().Current()->fleet. Null = standalone.
  std::shared_ptr<fleet::FleetStatus> fleet_status;
};

class TestProxy {
 public:
  // Parses, validates and compiles `toml` (config::Parse + route_table::Compile), applies it and
  // starts serving on 127.0.0.1:0.
  static absl::StatusOr<std::unique_ptr<TestProxy>> Start(std::string_view toml,
                                                          TestProxyOptions options = {});
  // A proxy that has no route table yet (what a managed proxy is before its first table).
  static absl::StatusOr<std::unique_ptr<TestProxy>> StartWithoutRoutes(
      TestProxyOptions options = {});

  TestProxy(const TestProxy&) = delete;
  TestProxy& operator=(const TestProxy&) = delete;
  ~TestProxy();

  // What a SIGHUP does in proxy_main: a config that does not load or apply changes nothing.
  absl::Status Reload(std::string_view toml);

  uint16_t port() const { return server_->port(); }
  // "http://127.0.0.1:PORT" + `path` (which may carry a query string).
  std::string url(std::string_view path = "") const;

  proxy::HttpServer& server() { return *server_; }
  proxy::RouteStore& routes() { return *routes_; }
  // The version_info of the route table in force ("" before the first one).
  std::string version() const;

  // GET /metrics through the proxy itself, as Prometheus would scrape it.
  absl::StatusOr<std::string> ScrapeMetrics() const;
  // Everything the access log has written so far ("" when disabled).
  std::string access_log_text() const;

  // Stops the server (cancels whatever is in flight) and joins its workers. Idempotent.
  void Stop();

 private:
  TestProxy() = default;
  absl::Status Init(TestProxyOptions options);

  TestProxyOptions options_;
  std::string temp_dir_;
  std::string access_log_path_;
  int access_log_fd_ = -1;
  // Declared in dependency order: the server (and its handlers) go first on destruction.
  std::unique_ptr<proxy::RouteStore> routes_;
  std::unique_ptr<proxy::ProxyMetrics> metrics_;
  std::unique_ptr<proxy::AccessLog> access_log_;
  std::shared_ptr<const upstream::TlsContexts> tls_;
  std::unique_ptr<proxy::HttpServer> server_;
};

// Parses and compiles `toml` into the RouteTable a standalone proxy serves; the error lists
// every config problem.
absl::StatusOr<berry::v1::RouteTable> CompileToml(std::string_view toml);

// One Prometheus text-format scrape, parsed.
class Metrics {
 public:
  using Labels = std::map<std::string, std::string>;
  struct Sample {
    std::string name;
    Labels labels;
    double value = 0;
  };

  static Metrics Parse(std::string_view text);

  // Sum of the samples called `name` whose labels include every pair of `labels`; nullopt when
  // there is none.
  std::optional<double> Find(std::string_view name, const Labels& labels = {}) const;
  // Find() or 0.
  double Value(std::string_view name, const Labels& labels = {}) const;
  const std::vector<Sample>& samples() const { return samples_; }

 private:
  std::vector<Sample> samples_;
};

// A plain TCP connection to the proxy for the cases the HTTP client does not cover.
class RawConnection {
 public:
  static absl::StatusOr<std::unique_ptr<RawConnection>> Connect(
      uint16_t port, std::chrono::milliseconds timeout = 5s);

  absl::Status Write(std::string_view bytes, std::chrono::milliseconds timeout = 5s);
  // Reads one HTTP response (bodies de-chunked).
  absl::StatusOr<boost::beast::http::response<boost::beast::http::string_body>> ReadResponse(
      std::chrono::milliseconds timeout = 10s);
  // Reads until the peer closes (true) or `timeout` passes (false); bytes read go to `received`.
  bool WaitForClose(std::chrono::milliseconds timeout, std::string* received = nullptr);

 private:
  RawConnection() : stream_(io_) {}

  boost::asio::io_context io_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
};

// Polls `condition` every 5 ms until it holds (true) or `timeout` passes (false).
bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 5s);

// A TCP port on 127.0.0.1 that nothing listens on (bound, read and released).
uint16_t UnusedPort();

// Parses JSON; a parse failure yields null (and the caller's expectations then fail loudly).
boost::json::value ParseJson(std::string_view text);

// A chat-completions body for `model` with one user message; `extra` is appended verbatim after
// the messages (e.g. R"(,"stream":true)").
std::string ChatBody(std::string_view model, std::string_view extra = "");

}  // namespace berry::itest
