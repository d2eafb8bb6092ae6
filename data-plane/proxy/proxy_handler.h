// The request path of berry-proxy (DESIGN.md, "Request path"): parse → authenticate → rate
// limit → resolve the custom model → select a backend → rewrite `model`, set the provider's key
// and headers → relay (JSON or SSE) → record stats; retries and failover before the first byte,
// passive outlier detection, OpenAI-shaped errors, one JSON access-log line per request.
//
// ProxyHandler orchestrates; each step is its own part:
//   LocalEndpoints    /healthz, /readyz, /metrics, /v1/models, CORS preflight, 404/405
//   Admission         route table loaded, authentication, rate limits, body scan, model lookup
//   (here)            the retry loop: pick a backend, attempt, fail over, the final error
//   UpstreamAttempt   one attempt: upstream request, connection, response head; then
//   UnaryRelay        a whole response, or
//   StreamRelay       an SSE stream with its watchdog
//   HeaderPolicy      which headers cross the proxy in either direction, and CORS
//   AttemptStats      where outcomes go: metrics, load reports, outlier detection, access log
//
// Time and randomness are injected (ProxyOptions): the Clock the request path reads, and the
// seed of the generator backend selection draws from.
//
// Threads: one ProxyHandler per worker, used only on that worker's thread. What it shares with
// the other workers (RouteStore, ProxyMetrics, TLS contexts, AccessLog, the Clock) is
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/http/server.h"
#include "data-plane/proxy/access_log.h"
#include "data-plane/proxy/admission.h"
#include "data-plane/proxy/attempt_stats.h"
#include "data-plane/proxy/clock.h"
#include "data-plane/proxy/exchange.h"
#include "data-plane/proxy/local_endpoints.h"
#include "data-plane/proxy/proxy_metrics.h"
#include "data-plane/proxy/route_store.h"
#include "data-plane/proxy/upstream_attempt.h"
#include "data-plane/proxy/worker_generation.h"
#include "data-plane/upstream/upstream_pool.h"

namespace berry::proxy {

struct ProxyOptions {
  // Largest upstream response body relayed as a whole (non-streaming).
  uint64_t max_response_body_bytes = 64ull << 20;
  // The request path's time (must outlive the handler); null = Clock::System().
  const Clock* clock = nullptr;
  // Seeds the generator backend selection draws from; unset = a random seed per handler. Every
  // handler given the same seed makes the same draws.
  std::optional<uint64_t> rng_seed;
};

class ProxyHandler final : public Handler {
 public:
  ProxyHandler(net::io_context& io_context, RouteStore& routes, ProxyMetrics& metrics,
               std::shared_ptr<const upstream::TlsContexts> tls, AccessLog& access_log,
               ProxyOptions options = {});
  ~ProxyHandler() override;

  uint64_t body_limit() override;
  void Shutdown() override { attempt_.Clear(); }
  net::awaitable<void> Handle(Request& request, Downstream& downstream) override;
  net::awaitable<void> HandleBadRequest(http::status status, std::string_view reason,
                                        Downstream& downstream) override;

 private:
  // Picks up a new route-table generation if one was published (one atomic load otherwise).
  void Refresh();
  // A request that pinned `pinned` (may be null) has ended.
  void Unpin(WorkerGeneration* pinned);

  // Not a coroutine: sends the relayed POST straight to Proxy, the rest to LocalEndpoints.
  net::awaitable<void> Route(Exchange& exchange);
  net::awaitable<void> Proxy(Exchange& exchange);
  // Admission, and the counting of a refusal: the error to answer, if any. A refusal with
  // credit_pending is not counted: the caller waits for credit (AdmitWhenCreditComes).
  std::optional<ErrorReply> Admit(Exchange& exchange);
  // Managed mode, the user's lease ran dry and an ask for credit is on its way: waits (up to
  // 500 ms) for the control plane's answers and admits again, so a burst that outruns its lease
  // is served while the fleet-wide window has room. Counts a final refusal.
  net::awaitable<std::optional<ErrorReply>> AdmitWhenCreditComes(Exchange& exchange);
  // A request waited the whole 500 ms for the answer to an ask and no answer came at all: the
  // control plane counts as away (as after a lost stream) until its next answer, so this
  // request and those waiting with it are admitted or refused on the fallback share rather
  // than refused for credit a silent control plane never sent (a path that stopped carrying
  // packets, a control plane stalled). Nothing when an answer came after `seen` after all.
  static void ControlPlaneSilent(fleet::FleetStatus& status, uint64_t seen);
  // Nanoseconds left of the exchange's wait for credit (500 ms in all, from its first wait).
  int64_t CreditWaitLeftNs(Exchange& exchange);
  // The pick found nothing: when a backend was no candidate only because its budget credit is
  // pending (Picker::budget_credit_pending), waits for an answer (within the exchange's wait)
  // and returns true to pick again.
  net::awaitable<bool> WaitForBudgetCredit(Exchange& exchange);
  // The next backend to try (recorded in exchange.tried), or nullptr with the reason.
  const selection::CompiledBackend* PickBackend(Exchange& exchange, std::string* error);
  // The answer when every attempt failed (or none could be made) and no upstream error
  // response is kept to pass through.
  ErrorReply FailureReply(Exchange& exchange, std::string_view pick_error);

  RouteStore& routes_;
  const Clock& clock_;
  AttemptStats stats_;
  Admission admission_;
  LocalEndpoints local_;
  UpstreamAttempt attempt_;
  std::mt19937_64 rng_;
  uint64_t seen_generation_ = 0;
  // The worker's hold on the generation in force (null before the first table), and the holds
  // it replaced that requests still pin; each goes when its last request ends.
  std::unique_ptr<WorkerGeneration> current_;
  std::vector<std::unique_ptr<WorkerGeneration>> retired_;
};

}  // namespace berry::proxy
