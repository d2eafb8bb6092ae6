// Where what happened to a request and its attempts goes, in one place: the Prometheus metrics
// (the pinned generation's GenerationMetrics, else WorkerMetrics), the load reports for the control plane (LoadStats), the selection runtime
// (in-flight counts, TTFB EWMAs), the outlier detector (ejections) and the access log line.
//
// Threads: one AttemptStats per worker, used on that worker's thread; what it writes to is
// shared and thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/http/client.h"
#include "common/selection/snapshot.h"
#include "data-plane/openai/usage.h"
#include "data-plane/outlier/outlier_detector.h"
#include "data-plane/proxy/access_log.h"
#include "data-plane/proxy/clock.h"
#include "data-plane/proxy/exchange.h"
#include "data-plane/proxy/proxy_metrics.h"
#include "data-plane/proxy/route_store.h"

namespace berry::proxy {

class AttemptStats {
 public:
  // All three must outlive this.
  AttemptStats(ProxyMetrics& metrics, AccessLog& access_log, const Clock& clock);

  WorkerMetrics& metrics() { return metrics_; }

  // An attempt starts on / is done with `backend` (in-flight count, issued requests). Pair them.
  void BeginAttempt(const RouteGeneration& generation, const selection::CompiledBackend& backend);
  void EndAttempt(const RouteGeneration& generation, const selection::CompiledBackend& backend);
  // The upstream response head arrived `seconds` after the attempt started.
  void RecordTtfb(Exchange& exchange, const selection::CompiledBackend& backend, double seconds);
  // How the attempt went, for load reports and outlier detection (which may eject the backend).
  void RecordOutcome(const RouteGeneration& generation, const selection::CompiledBackend& backend,
                     outlier::Outcome outcome);
  // The upstream answered 429: when its headers name a time to wait (retry_after.h), the
  // backend cools down on this proxy until then (capped at 10 x circuit_breaker_timeout), and the
  // load reporter is nudged to tell the control plane at once.
  void RecordRateLimited(const RouteGeneration& generation,
                         const selection::CompiledBackend& backend,
                         const upstream::ResponseFields& fields);
  // An attempt that got no usable answer: RecordOutcome, and the exchange remembers why (the
  // access log's error; a timeout makes the final answer 504).
  void FailAttempt(Exchange& exchange, const selection::CompiledBackend& backend,
                   outlier::Outcome outcome, std::string message);
  // The token counts the upstream reported (also charged to the backend's token budgets).
  void RecordUsage(Exchange& exchange, const selection::CompiledBackend& backend,
                   const openai::Usage& usage);
  void CountStreamBroken(const Exchange& exchange, const selection::CompiledBackend& backend);
  // A pick: a panic pick, and a retry (any pick after the first of a request).
  void CountPick(Exchange& exchange, bool panic, bool retry);
  void CountRateLimited(const auth::Client& client);

  // The request is over: its metrics, the answering backend's latency and tokens, the access
  // log line.
  void Finish(const Exchange& exchange, Clock::TimePoint end);
  // A request the server refused before the handler saw it (malformed, too large).
  void FinishBadRequest(int status, std::string_view reason, std::string_view request_id);

 private:
  WorkerMetrics metrics_;
  AccessLog& access_log_;
  const Clock& clock_;
};

}  // namespace berry::proxy
