// berry-proxy's Prometheus metrics (names from DESIGN.md, "Observability") and, per worker, the
// labelled children of the route table in force, resolved when the worker applies the table so
// the request path touches only the children (see WorkerMetrics).
//
// Threads: ProxyMetrics is shared by all workers; a WorkerMetrics belongs to one worker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/metrics/metrics.h"
#include "common/selection/snapshot.h"

namespace berry::proxy {

class RouteStore;

// How /metrics is exposed (berry-proxy's --admin-listen and --metrics-user-labels).
struct MetricsExposure {
  // /metrics on the client listener too. Off once an --admin-listen serves it: the client port
  // is public, the scrape is unauthenticated.
  bool on_client_listener = true;
  // berry_rate_limited_total by `user` (user ids are the operator's business, not every
  // scraper's); without it one series counts every user.
  bool user_labels = false;
};

class ProxyMetrics {
 public:
  // `routes` (which must outlive this) feeds the scrape-time gauges: berry_backend_ejected and
  // berry_route_table_version_info.
  explicit ProxyMetrics(const RouteStore& routes, MetricsExposure exposure = {});

  const MetricsExposure& exposure() const { return exposure_; }

  metrics::Registry& registry() { return registry_; }

  // berry_local_requests_total{path,code}: probes and scrapes, apart from API requests. `path`
  // must be one of /healthz, /health, /readyz, /metrics (the label set stays bounded).
  void CountLocalEndpoint(std::string_view path, int code);

  metrics::Family<metrics::Counter>* requests;        // {model,backend,code}
  metrics::Family<metrics::Histogram>* duration;      // {model,backend}
  metrics::Family<metrics::Histogram>* ttfb;          // {model,backend}
  metrics::Family<metrics::Counter>* retries;         // {model}
  metrics::Family<metrics::Counter>* panics;          // {model}
  metrics::Family<metrics::Counter>* tokens;          // {model,backend,kind}
  metrics::Family<metrics::Counter>* rate_limited;    // {user} with exposure().user_labels, else {}
  metrics::Family<metrics::Counter>* stream_broken;   // {model,backend}
  metrics::Family<metrics::Counter>* local_requests;  // {path,code}
  metrics::Gauge* inflight;
  metrics::Counter* route_table_reloads_ok;
  metrics::Counter* route_table_reloads_failed;

 private:
  MetricsExposure exposure_;
  metrics::Registry registry_;
};

// Labelled children for one worker and one route-table generation. When the worker applies a
// table (Reset) it sizes one slot per model and per backend index; a slot's child is resolved
// (label values built, family looked up under its mutex) the first time the generation uses it,
// so a series still appears only once something happened. After that the request path indexes
// the slot and touches only the child: no label lookup. berry_requests_total, whose `code` label
// is open-ended, is found in a hash map by an integer (model, backend, code) key instead.
class WorkerMetrics {
 public:
  explicit WorkerMetrics(ProxyMetrics& metrics) : metrics_(metrics) {}

  // One empty slot per model and backend of `snapshot` (null: no table); forgets the children of
  // the previous generation (indices change with the table).
  void Reset(const selection::Snapshot* snapshot);

  // `model`/`backend` may be null (the request never got that far): the label is then empty.
  // Unknown model names from clients are never used as label values. The others need a model
  // and backend of the snapshot given to the last Reset.
  void CountRequest(const selection::CompiledModel* model,
                    const selection::CompiledBackend* backend, int status);
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
  // By CompiledBackend::index() (a backend belongs to one model).
  struct BackendHandles {
    metrics::Histogram* duration = nullptr;
    metrics::Histogram* ttfb = nullptr;
    metrics::Counter* prompt_tokens = nullptr;
    metrics::Counter* completion_tokens = nullptr;
    metrics::Counter* stream_broken = nullptr;
  };
  // By CompiledModel::index().
  struct ModelHandles {
    metrics::Counter* retries = nullptr;
    metrics::Counter* panics = nullptr;
  };

  // Fills an empty `slot` with the child for `labels`; returns it.
  template <typename T>
  static T* Resolve(T*& slot, metrics::Family<T>& family, const std::vector<std::string>& labels);

  ProxyMetrics& metrics_;
  std::vector<BackendHandles> backends_;
  std::vector<ModelHandles> models_;
  absl::flat_hash_map<uint64_t, metrics::Counter*> requests_;  // (model, backend, code) -> child
  absl::flat_hash_map<std::string, metrics::Counter*> rate_limited_;  // by user, or one ""
};

}  // namespace berry::proxy
