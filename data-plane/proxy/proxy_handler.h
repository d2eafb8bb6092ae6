// The request path of berry-proxy (DESIGN.md, "Request path"): parse → authenticate → rate
// limit → resolve the custom model → select a backend → rewrite `model`, set the provider's key
// and headers → relay (JSON or SSE) → record stats; retries and failover before the first byte,
// passive outlier detection, OpenAI-shaped errors, one JSON access-log line per request.
//
// Threads: one ProxyHandler per worker, used only on that worker's thread. What it shares with
// the other workers (RouteStore, ProxyMetrics, TLS contexts, AccessLog) is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/random/random.h"
#include "common/http/server.h"
#include "common/selection/picker.h"
#include "data-plane/proxy/access_log.h"
#include "data-plane/proxy/proxy_metrics.h"
#include "data-plane/proxy/route_store.h"
#include "data-plane/upstream/upstream_pool.h"

namespace berry::proxy {

// The shared HTTP layer's names the request path uses throughout.
namespace net = server::net;
namespace beast = server::beast;
namespace http = server::http;
using server::Downstream;
using server::Handler;
using server::HttpServer;
using server::PooledString;
using server::Request;
using server::Response;
using server::ResponseHeader;
using server::ServerOptions;
using server::StringPool;

struct ProxyOptions {
  // Largest upstream response body relayed as a whole (non-streaming).
  uint64_t max_response_body_bytes = 64ull << 20;
};

class ProxyHandler final : public Handler {
 public:
  ProxyHandler(net::io_context& io_context, RouteStore& routes, ProxyMetrics& metrics,
               std::shared_ptr<const upstream::TlsContexts> tls, AccessLog& access_log,
               ProxyOptions options = {});
  ~ProxyHandler() override;

  uint64_t body_limit() override;
  void Shutdown() override { pool_.Clear(); }
  net::awaitable<void> Handle(Request& request, Downstream& downstream) override;
  net::awaitable<void> HandleBadRequest(http::status status, std::string_view reason,
                                        Downstream& downstream) override;

  struct Exchange;  // one request's state, defined in the .cc

 private:
  // Picks up a new route-table generation if one was published (one atomic load otherwise).
  void Refresh();

  // An error answer decided without waiting for anything.
  struct ErrorReply {
    int status;
    std::string body;
    int retry_after_seconds = 0;
  };

  // Not a coroutine: sends the relayed POST straight to Proxy, the rest to ServeLocal.
  net::awaitable<void> Route(Exchange& exchange);
  net::awaitable<void> ServeLocal(Exchange& exchange);
  net::awaitable<void> Proxy(Exchange& exchange);
  // Authentication, rate limit, body scan and model lookup: the error to answer, if any.
  std::optional<ErrorReply> Admit(Exchange& exchange);
  // The next backend to try (recorded in exchange.tried), or nullptr with the reason.
  const selection::CompiledBackend* PickBackend(Exchange& exchange, std::string* error);
  // The answer when every attempt failed (or none could be made) and no upstream error
  // response is kept to pass through.
  ErrorReply FailureReply(Exchange& exchange, std::string_view pick_error);
  net::awaitable<void> ListModels(Exchange& exchange, std::string_view model_id);
  net::awaitable<void> Attempt(Exchange& exchange, const selection::CompiledBackend& backend);
  // Relays an SSE response; true when the upstream connection may be kept alive afterwards.
  net::awaitable<bool> RelayStream(Exchange& exchange, const selection::CompiledBackend& backend,
                                   upstream::Connection& connection,
                                   upstream::ResponseParser& parser);
  net::awaitable<void> SendError(Exchange& exchange, int status, std::string body,
                                 int retry_after_seconds = 0);
  net::awaitable<void> Send(Exchange& exchange, Response& response);
  const auth::Client* Authenticate(Exchange& exchange, std::string* error);
  void Finish(Exchange& exchange);

  net::io_context& io_context_;
  RouteStore& routes_;
  WorkerMetrics metrics_;
  upstream::Pool pool_;
  AccessLog& access_log_;
  ProxyOptions options_;
  absl::InsecureBitGen rng_;
  StringPool strings_;  // upstream request heads and bodies, upstream response bodies
  std::shared_ptr<const RouteGeneration> generation_;
  uint64_t seen_generation_ = 0;
  std::optional<selection::Picker> picker_;
};

}  // namespace berry::proxy
