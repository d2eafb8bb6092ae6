#include "tests/integration/proxy_fixture.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/json/parse.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/config/config.h"
#include "common/route_table/compile.h"
#include "tests/support/certs.h"
#include "tests/support/http_client.h"

namespace berry::itest {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

absl::StatusOr<berry::v1::RouteTable> CompileToml(std::string_view toml) {
  const config::LoadResult result = config::Parse(toml, "test");
  if (!result.config) {
    std::string all = "invalid test config:";
    for (const config::ConfigError& error : result.errors) {
      absl::StrAppend(&all, "\n  ", error.ToString());
    }
    return absl::InvalidArgumentError(all);
  }
  return route_table::Compile(*result.config);
}

absl::StatusOr<std::unique_ptr<TestProxy>> TestProxy::Start(std::string_view toml,
                                                            TestProxyOptions options) {
  auto table = CompileToml(toml);
  if (!table.ok()) {
    return table.status();
  }
  std::unique_ptr<TestProxy> proxy(new TestProxy());
  proxy->routes_ = std::make_unique<proxy::RouteStore>();
  if (options.fleet_status != nullptr) {
    proxy->routes_->set_fleet_status(options.fleet_status);
  }
  if (absl::Status status = proxy->routes_->Apply(*std::move(table)); !status.ok()) {
    return status;
  }
  if (absl::Status status = proxy->Init(std::move(options)); !status.ok()) {
    return status;
  }
  return proxy;
}

absl::StatusOr<std::unique_ptr<TestProxy>> TestProxy::StartWithoutRoutes(TestProxyOptions options) {
  std::unique_ptr<TestProxy> proxy(new TestProxy());
  proxy->routes_ = std::make_unique<proxy::RouteStore>();
  if (absl::Status status = proxy->Init(std::move(options)); !status.ok()) {
    return status;
  }
  return proxy;
}

absl::Status TestProxy::Init(TestProxyOptions options) {
  options_ = std::move(options);
  auto dir = test_support::MakeTempDir("berry-itest-");
  if (!dir.ok()) {
    return dir.status();
  }
  temp_dir_ = *dir;

  std::string ca_file;
  if (!options_.extra_ca_pem.empty()) {
    ca_file = temp_dir_ + "/upstream-ca.pem";
    std::ofstream out(ca_file, std::ios::binary);
    out << options_.extra_ca_pem;
    if (!out) {
      return absl::InternalError("cannot write " + ca_file);
    }
  }
  auto tls = upstream::TlsContexts::Create(ca_file);
  if (!tls.ok()) {
    return tls.status();
  }
  tls_ = *std::move(tls);

  if (options_.access_log) {
    access_log_path_ = temp_dir_ + "/access.log";
    access_log_fd_ =
        ::open(access_log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (access_log_fd_ < 0) {
      return absl::InternalError("cannot open " + access_log_path_);
    }
  }
  access_log_ = std::make_unique<proxy::AccessLog>(access_log_fd_);
  metrics_ = std::make_unique<proxy::ProxyMetrics>(
      *routes_, proxy::MetricsExposure{.user_labels = options_.metrics_user_labels});

  proxy::ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = options_.threads;
  server_options.header_timeout = options_.header_timeout;
  server_options.idle_timeout = options_.idle_timeout;
  server_options.write_timeout = options_.write_timeout;
  auto server = proxy::HttpServer::Create(server_options, [this](int, net::io_context& io_context) {
    proxy::ProxyOptions proxy_options;
    proxy_options.clock = options_.clock;
    proxy_options.rng_seed = options_.rng_seed;
    return std::make_unique<proxy::ProxyHandler>(io_context, *routes_, *metrics_, tls_,
                                                 *access_log_, proxy_options);
  });
  if (!server.ok()) {
    return server.status();
  }
  server_ = *std::move(server);
  server_->Start();
  return absl::OkStatus();
}

TestProxy::~TestProxy() {
  Stop();
  server_.reset();
  access_log_.reset();  // its writer thread writes to access_log_fd_ until then
  if (access_log_fd_ >= 0) {
    ::close(access_log_fd_);
  }
  if (!temp_dir_.empty()) {
    std::remove((temp_dir_ + "/upstream-ca.pem").c_str());
    std::remove(access_log_path_.c_str());
    ::rmdir(temp_dir_.c_str());
  }
}

void TestProxy::Stop() {
  if (server_ != nullptr) {
    server_->Stop();
  }
}

absl::Status TestProxy::Reload(std::string_view toml) {
  auto table = CompileToml(toml);
  absl::Status status = table.ok() ? routes_->Apply(*std::move(table)) : table.status();
  (status.ok() ? metrics_->route_table_reloads_ok : metrics_->route_table_reloads_failed)
      ->Increment();
  return status;
}

std::string TestProxy::url(std::string_view path) const {
  return absl::StrCat("http://127.0.0.1:", port(), std::string(path));
}

std::string TestProxy::version() const {
  const auto current = routes_->Current();
  return current != nullptr ? current->version() : std::string();
}

absl::StatusOr<std::string> TestProxy::ScrapeMetrics() const {
  auto response = test_support::Fetch(test_support::HttpRequest::Get(url("/metrics")));
  if (!response.ok()) {
    return response.status();
  }
  if (response->status != 200) {
    return absl::InternalError(absl::StrCat("GET /metrics answered ", response->status));
  }
  return response->body;
}

std::string TestProxy::access_log_text() const {
  if (access_log_path_.empty()) {
    return {};
  }
  access_log_->Flush();  // what the workers have logged so far, not only what the writer wrote
  std::ifstream in(access_log_path_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// --- Metrics ---------------------------------------------------------------------------------

namespace {

// Reads a label value after its opening quote; `pos` ends past the closing quote.
std::string ReadLabelValue(std::string_view line, size_t& pos) {
  std::string value;
  while (pos < line.size() && line[pos] != '"') {
    char c = line[pos++];
    if (c == '\\' && pos < line.size()) {
      const char escaped = line[pos++];
      c = escaped == 'n' ? '\n' : escaped;
    }
    value.push_back(c);
  }
  ++pos;  // the closing quote
  return value;
}

}  // namespace

Metrics Metrics::Parse(std::string_view text) {
  Metrics metrics;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line.front() == '#') {
      continue;
    }
    Sample sample;
    size_t pos = line.find_first_of("{ ");
    if (pos == std::string_view::npos) {
      continue;
    }
    sample.name = std::string(line.substr(0, pos));
    if (line[pos] == '{') {
      ++pos;
      while (pos < line.size() && line[pos] != '}') {
        const size_t eq = line.find('=', pos);
        if (eq == std::string_view::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          break;
        }
        std::string name(line.substr(pos, eq - pos));
        pos = eq + 2;
        sample.labels[name] = ReadLabelValue(line, pos);
        if (pos < line.size() && line[pos] == ',') {
          ++pos;
        }
      }
      ++pos;  // '}'
    }
    while (pos < line.size() && line[pos] == ' ') {
      ++pos;
    }
    const std::string value(line.substr(pos, line.find(' ', pos) - pos));
    sample.value = std::strtod(value.c_str(), nullptr);  // also reads +Inf and NaN
    metrics.samples_.push_back(std::move(sample));
  }
  return metrics;
}

std::optional<double> Metrics::Find(std::string_view name, const Labels& labels) const {
  std::optional<double> sum;
  for (const Sample& sample : samples_) {
    if (sample.name != name) {
      continue;
    }
    bool match = true;
    for (const auto& [key, value] : labels) {
      auto it = sample.labels.find(key);
      if (it == sample.labels.end() || it->second != value) {
        match = false;
        break;
      }
    }
    if (match) {
      sum = sum.value_or(0) + sample.value;
    }
  }
  return sum;
}

double Metrics::Value(std::string_view name, const Labels& labels) const {
  return Find(name, labels).value_or(0);
}

// --- RawConnection ---------------------------------------------------------------------------

namespace {

// Runs the io_context until the operation started on it completes (every operation carries a
// tcp_stream deadline, so this returns).
void RunToCompletion(net::io_context& io) {
  io.restart();
  io.run();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RawConnection>> RawConnection::Connect(
    uint16_t port, std::chrono::milliseconds timeout) {
  std::unique_ptr<RawConnection> connection(new RawConnection());
  beast::error_code result;
  connection->stream_.expires_after(timeout);
  connection->stream_.async_connect(
      net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port),
      [&result](beast::error_code ec) { result = ec; });
  RunToCompletion(connection->io_);
  if (result) {
    return absl::UnavailableError("connect: " + result.message());
  }
  return connection;
}

absl::Status RawConnection::Write(std::string_view bytes, std::chrono::milliseconds timeout) {
  beast::error_code result;
  stream_.expires_after(timeout);
  net::async_write(stream_, net::buffer(bytes.data(), bytes.size()),
                   [&result](beast::error_code ec, size_t) { result = ec; });
  RunToCompletion(io_);
  if (result) {
    return absl::UnavailableError("write: " + result.message());
  }
  return absl::OkStatus();
}

absl::StatusOr<http::response<http::string_body>> RawConnection::ReadResponse(
    std::chrono::milliseconds timeout) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  beast::error_code result;
  stream_.expires_after(timeout);
  http::async_read(stream_, buffer_, parser,
                   [&result](beast::error_code ec, size_t) { result = ec; });
  RunToCompletion(io_);
  if (result) {
    return absl::UnavailableError("read response: " + result.message());
  }
  return parser.release();
}

bool RawConnection::WaitForClose(std::chrono::milliseconds timeout, std::string* received) {
  if (received != nullptr) {
    received->append(beast::buffers_to_string(buffer_.data()));
  }
  buffer_.consume(buffer_.size());
  stream_.expires_after(timeout);
  for (;;) {
    std::array<char, 4096> piece;
    beast::error_code result;
    size_t n = 0;
    stream_.async_read_some(net::buffer(piece), [&](beast::error_code ec, size_t bytes) {
      result = ec;
      n = bytes;
    });
    RunToCompletion(io_);
    if (received != nullptr) {
      received->append(piece.data(), n);
    }
    if (result == beast::error::timeout) {
      return false;
    }
    if (result) {
      return true;  // EOF or reset: closed
    }
  }
}

// --- helpers ---------------------------------------------------------------------------------

bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(5ms);
  }
}

uint16_t UnusedPort() {
  net::io_context io;
  net::ip::tcp::acceptor acceptor(io,
                                  net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint().port();
}

boost::json::value ParseJson(std::string_view text) {
  boost::json::error_code ec;
  boost::json::value value =
      boost::json::parse(boost::json::string_view(text.data(), text.size()), ec);
  if (ec) {
    return nullptr;
  }
  return value;
}

std::string ChatBody(std::string_view model, std::string_view extra) {
  return absl::StrCat(R"({"model":")", std::string(model),
                      R"(","messages":[{"role":"user","content":"Say hello."}])",
                      std::string(extra), "}");
}

}  // namespace berry::itest
