#include "control-plane/http_probe.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/url/parse.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/http/client.h"
#include "common/http/wire.h"

namespace berry::berryctl {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using SteadyClock = std::chrono::steady_clock;

// What a probe asks for: where to connect and which target to GET there.
struct ProbeTarget {
  upstream::Endpoint endpoint;
  std::string target;  // path and query, "/" at least
};

absl::StatusOr<ProbeTarget> ParseProbeUrl(const std::string& url) {
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
  auto endpoint = upstream::Endpoint::Parse(url, /*verify=*/true);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", url, "' cannot be probed: ", endpoint.status().message()));
  }
  ProbeTarget probe{*std::move(endpoint), std::string(parsed->encoded_path())};
  if (probe.target.empty()) {
    probe.target = "/";
  }
  if (parsed->has_query()) {
    absl::StrAppend(&probe.target, "?", std::string(parsed->encoded_query()));
  }
  return probe;
}

absl::Status NoAnswer(std::chrono::milliseconds timeout) {
  return absl::DeadlineExceededError(absl::StrCat("no answer within ", timeout.count(), " ms"));
}

// Connects, sends the GET and reads the response head, all within `timeout` (the connection's
// deadline covers connect, write and read).
net::awaitable<absl::StatusOr<ProbeResult>> Probe(net::io_context& io_context,
                                                  const upstream::TlsContexts& tls_contexts,
                                                  const ProbeTarget& probe,
                                                  std::chrono::milliseconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  upstream::ConnectError connect_error = upstream::ConnectError::kNone;
  auto connected = co_await upstream::Connection::Open(io_context, tls_contexts, probe.endpoint,
                                                       timeout, &connect_error);
  if (!connected.ok()) {
    if (connect_error == upstream::ConnectError::kTimeout) {
      co_return NoAnswer(timeout);
    }
    co_return connected.status();
  }
  upstream::Connection& connection = **connected;

  http::request<http::empty_body> request{http::verb::get, probe.target, 11};
  request.set(http::field::host, probe.endpoint.host_header);
  request.set(http::field::user_agent, "berryctl-probe");
  request.set(http::field::connection, "close");
  std::string head;
  wire::AppendRequestHead(head, request);

  connection.ExpiresAfter(std::max(deadline - SteadyClock::now(), SteadyClock::duration::zero()));
  upstream::ResponseParser parser;
  parser.body_limit(size_t{64} * 1024);
  const beast::error_code ec = co_await connection.RoundTrip(head, {}, parser);
  connection.Cancel();  // only the head is wanted
  if (ec == beast::error::timeout) {
    co_return NoAnswer(timeout);
  }
  if (ec) {
    co_return absl::UnavailableError(absl::StrCat("read: ", ec.message()));
  }
  co_return ProbeResult{static_cast<int>(parser.get().result_int()),
                        std::string(parser.get().reason())};
}

}  // namespace

absl::StatusOr<ProbeResult> ProbeHttp(const std::string& url, std::chrono::milliseconds timeout) {
  auto probe = ParseProbeUrl(url);
  if (!probe.ok()) {
    return probe.status();
  }
  // Plain http only: the contexts are never used, but a Connection is made with them.
  auto tls_contexts = upstream::TlsContexts::Create();
  if (!tls_contexts.ok()) {
    return tls_contexts.status();
  }

  std::optional<absl::StatusOr<ProbeResult>> result;
  net::io_context io_context;
  net::co_spawn(io_context, Probe(io_context, **tls_contexts, *probe, timeout),
                [&result](const std::exception_ptr& error, absl::StatusOr<ProbeResult> outcome) {
                  result = error ? absl::InternalError("probe failed") : std::move(outcome);
                });
  // Resolving is not under the connection's deadline: the loop itself stops at the timeout.
  io_context.run_for(timeout);
  if (!result.has_value()) {
    return NoAnswer(timeout);
  }
  return *std::move(result);
}

}  // namespace berry::berryctl
