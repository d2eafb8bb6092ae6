// berry-proxy's Prometheus metrics (names from DESIGN.md, "Observability") and a per-worker cache
// of the labelled children, so the request path touches only atomics: a child is created (under
// the family's mutex) the first time a worker sees a label set in a route-table generation, and
// looked up in the worker's own hash map afterwards.
//
// Threads: ProxyMetrics is shared by all workers; a WorkerMetrics belongs to one worker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "common/metrics/metrics.h"
#include "common/selection/snapshot.h"

namespace berry::proxy {

class RouteStore;

class ProxyMetrics {
 public:
  // `routes` (which must outlive this) feeds the scrape-time gauges: berry_backend_ejected and
  // berry_route_table_version_info.
  explicit ProxyMetrics(const RouteStore& routes);

  metrics::Registry& registry() { return registry_; }

  // berry_local_requests_total{path,code}: probes and scrapes, apart from API requests. `path`
  // must be one of /healthz, /health, /readyz, /metrics (the label set stays bounded).
  void CountLocalEndpoint(std::string_view path, int code);

  metrics::Family<metrics::Counter>* requests;          // {model,backend,code}
  metrics::Family<metrics::Histogram>* duration;        // {model,backend}
  metrics::Family<metrics::Histogram>* ttfb;            // {model,backend}
  metrics::Family<metrics::Counter>* retries;           // {model}
  metrics::Family<metrics::Counter>* panics;            // {model}
  metrics::Family<metrics::Counter>* tokens;            // {model,backend,kind}
  metrics::Family<metrics::Counter>* rate_limited;      // {user}
  metrics::Family<metrics::Counter>* stream_broken;     // {model,backend}
  metrics::Family<metrics::Counter>* local_requests;    // {path,code}
  metrics::Gauge* inflight;
  metrics::Counter* route_table_reloads_ok;
  metrics::Counter* route_table_reloads_failed;

 private:
  metrics::Registry registry_;
};

// Labelled children for one worker and one route-table generation.
class WorkerMetrics {
 public:
  explicit WorkerMetrics(ProxyMetrics& metrics) : metrics_(metrics) {}

  // Forget the children of the previous generation (indices change with the table).
  void Reset() { counters_.clear(); histograms_.clear(); }

  // `model`/`backend` may be null (the request never got that far): the label is then empty.
  // Unknown model names from clients are never used as label values.
  void CountRequest(const selection::CompiledModel* model, const selection::CompiledBackend* backend,
                    int status);
  void ObserveDuration(const selection::CompiledModel& model,
                       const selection::CompiledBackend& backend, double seconds);
  void ObserveTtfb(const selection::CompiledModel& model, const selection::CompiledBackend& backend,
                   double seconds);
  void CountTokens(const selection::CompiledModel& model, const selection::CompiledBackend& backend,
                   uint64_t prompt, uint64_t completion);
  void CountRetry(const selection::CompiledModel& model);
  void CountPanic(const selection::CompiledModel& model);
  void CountStreamBroken(const selection::CompiledModel& model,
                         const selection::CompiledBackend& backend);
  void CountRateLimited(std::string_view user);
  ProxyMetrics& shared() { return metrics_; }

 private:
  enum class Kind : uint8_t {
    kRequests, kDuration, kTtfb, kPrompt, kCompletion, kRetry, kPanic, kStreamBroken
  };
  static uint64_t Key(Kind kind, const selection::CompiledModel* model,
                      const selection::CompiledBackend* backend, int code = 0);
  metrics::Counter* CounterFor(Kind kind, const selection::CompiledModel* model,
                               const selection::CompiledBackend* backend, int code = 0);
  metrics::Histogram* HistogramFor(Kind kind, const selection::CompiledModel& model,
                                   const selection::CompiledBackend& backend);

  ProxyMetrics& metrics_;
  absl::flat_hash_map<uint64_t, metrics::Counter*> counters_;
  absl::flat_hash_map<uint64_t, metrics::Histogram*> histograms_;
  absl::flat_hash_map<std::string, metrics::Counter*> rate_limited_;
};

}  // namespace berry::proxy
