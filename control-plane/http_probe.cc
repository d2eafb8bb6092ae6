#include "control-plane/http_probe.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>

#include "absl/strings/str_cat.h"

namespace berry::berryctl {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// One probe: resolve, connect, write, read the head. Every step is an asynchronous operation on
// a private io_context that runs for at most the timeout, so a server that accepts and never
// answers cannot hold the probe past it.
class Probe {
 public:
  Probe(std::string host, std::string port, std::string target)
      : host_(std::move(host)), port_(std::move(port)), target_(std::move(target)) {}

  absl::StatusOr<ProbeResult> Run(std::chrono::milliseconds timeout) {
    resolver_.async_resolve(host_, port_, [this](beast::error_code ec, tcp::resolver::results_type results) {
      if (ec) return Fail(absl::UnavailableError(absl::StrCat("cannot resolve ", host_, ": ",
                                                              ec.message())));
      stream_.async_connect(results, [this](beast::error_code ec, const tcp::endpoint&) {
        if (ec) return Fail(absl::UnavailableError(absl::StrCat("cannot connect to ", host_, ":",
                                                                port_, ": ", ec.message())));
        request_.version(11);
        request_.method(http::verb::get);
        request_.target(target_);
        request_.set(http::field::host, host_);
        request_.set(http::field::user_agent, "berryctl-probe");
        request_.set(http::field::connection, "close");
        http::async_write(stream_, request_, [this](beast::error_code ec, size_t) {
          if (ec) return Fail(absl::UnavailableError(absl::StrCat("write: ", ec.message())));
          parser_.body_limit(64 * 1024);
          http::async_read_header(stream_, buffer_, parser_, [this](beast::error_code ec, size_t) {
            if (ec) return Fail(absl::UnavailableError(absl::StrCat("read: ", ec.message())));
            result_ = ProbeResult{static_cast<int>(parser_.get().result_int()),
                                  std::string(parser_.get().reason())};
          });
        });
      });
    });
    io_context_.run_for(timeout);
    if (!result_.ok() && result_.status().code() == absl::StatusCode::kUnknown) {
      return absl::DeadlineExceededError(
          absl::StrCat("no answer within ", timeout.count(), " ms"));
    }
    return result_;
  }

 private:
  void Fail(absl::Status status) { result_ = std::move(status); }

  std::string host_;
  std::string port_;
  std::string target_;
  net::io_context io_context_;
  tcp::resolver resolver_{io_context_};
  beast::tcp_stream stream_{io_context_};
  beast::flat_buffer buffer_;
  http::request<http::empty_body> request_;
  http::response_parser<http::empty_body> parser_;
  absl::StatusOr<ProbeResult> result_ = absl::UnknownError("pending");
};

}  // namespace

absl::StatusOr<ProbeResult> ProbeHttp(const std::string& url, std::chrono::milliseconds timeout) {
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed) {
    return absl::InvalidArgumentError(absl::StrCat("'", url, "' is not an absolute URL"));
  }
  if (parsed->scheme() != "http") {
    return absl::InvalidArgumentError("probe speaks plain http:// only (probes are local)");
  }
  if (parsed->encoded_host().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", url, "' has no host"));
  }
  std::string host(parsed->encoded_host());
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // an IPv6 literal
  }
  const std::string port = parsed->has_port() ? std::string(parsed->port()) : "80";
  std::string target(parsed->encoded_path());
  if (target.empty()) target = "/";
  if (parsed->has_query()) absl::StrAppend(&target, "?", std::string(parsed->encoded_query()));
  Probe probe(std::move(host), port, std::move(target));
  return probe.Run(timeout);
}

}  // namespace berry::berryctl
