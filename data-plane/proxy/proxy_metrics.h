// berry-proxy's Prometheus metrics (names from DESIGN.md, "Observability") and, per worker and
// route-table generation, the labelled children of that table, resolved once so the request path
// touches only the children (see GenerationMetrics).
//
// Threads: ProxyMetrics is shared by all workers; a GenerationMetrics or WorkerMetrics belongs
// to one worker.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
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
  // `routes` (which must outlive this) feeds the scrape-time gauges (berry_backend_ejected,
  // berry_backend_budget_spent, berry_route_table_version_info) and says which models and
  // backends still exist when series are pruned.
  explicit ProxyMetrics(const RouteStore& routes, MetricsExposure exposure = {});

  const MetricsExposure& exposure() const { return exposure_; }

  metrics::Registry& registry() { return registry_; }

  // The `/metrics` text: first drops the series of models and backends that the route table in
  // force no longer has and that no worker still holds (PruneRemoved), then renders every family.
  std::string Render();

  // berry_local_requests_total{path,code}: probes and scrapes, apart from API requests. `path`
  // must be one of /healthz, /health, /readyz, /metrics (the label set stays bounded).
  void CountLocalEndpoint(std::string_view path, int code);

  // Series labelled by a route table's model and backend are held, not just added: the child
  // of `family` for `labels` is returned with one more holder, and `model`/`backend` (either may
  // be empty) name what it belongs to. A holder keeps the pointer until it calls Release. A
  // series no one holds whose model or backend is gone from the table in force is removed at the
  // next PruneRemoved; one whose model and backend are still there stays (its counts go on).
  template <typename T>
  T* Hold(metrics::Family<T>& family, const std::vector<std::string>& labels,
          std::string_view model, std::string_view backend);
  // One holder fewer for each of `children` (from Hold).
  void Release(const std::vector<const void*>& children);
  // Removes every series nobody holds whose non-empty model or backend label the route table in
  // force does not have. Nothing while no table is in force.
  void PruneRemoved();
  // Series handed out by Hold and not removed yet (tests).
  size_t held_series() const;

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
  struct Held {
    std::function<void()> remove;  // Family<T>::Remove of the child
    std::string model;
    std::string backend;
    uint32_t holders = 0;
  };
  // Registration and label validation fail only for a bug in this file.
  [[noreturn]] static void Abort(const absl::Status& status);

  const RouteStore& routes_;
  MetricsExposure exposure_;
  metrics::Registry registry_;
  mutable absl::Mutex held_mu_;
  absl::flat_hash_map<const void*, Held> held_ ABSL_GUARDED_BY(held_mu_);
  size_t unheld_ ABSL_GUARDED_BY(held_mu_) = 0;  // entries of held_ with no holder
};

template <typename T>
T* ProxyMetrics::Hold(metrics::Family<T>& family, const std::vector<std::string>& labels,
                      std::string_view model, std::string_view backend) {
  absl::MutexLock lock(&held_mu_);
  absl::StatusOr<T*> added = family.Add(labels);
  if (!added.ok()) {
    Abort(added.status());
  }
  T* child = *added;
  auto [it, inserted] = held_.try_emplace(child);
  if (inserted) {
    it->second.remove = [&family, child] { family.Remove(child); };
    it->second.model = std::string(model);
    it->second.backend = std::string(backend);
  } else if (it->second.holders == 0) {
    --unheld_;
  }
  ++it->second.holders;
  return child;
}

// One worker's labelled children for one route-table generation (worker_generation.h). It has
// one empty slot per model and per backend index of its snapshot; a slot's child is resolved
// (label values built, the child held through ProxyMetrics::Hold) the first time the generation
// uses it, so a series still appears only once something happened. After that the request path
// indexes the slot and touches only the child: no label lookup. berry_requests_total, whose
// `code` label is open-ended, is found in a hash map by an integer (model, backend, code) key
// instead. Destroying it releases every child it held, which lets a reload's removed models and
// backends drop out of /metrics once no worker is left on the table that had them.
//
// The models and backends given to it must come from the snapshot it was made for.
class GenerationMetrics {
 public:
  GenerationMetrics(ProxyMetrics& metrics, const selection::Snapshot& snapshot);
  ~GenerationMetrics();
  GenerationMetrics(const GenerationMetrics&) = delete;
  GenerationMetrics& operator=(const GenerationMetrics&) = delete;

  // `model`/`backend` may be null (the request never got that far): the label is then empty.
  // Unknown model names from clients are never used as label values.
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

  // Holds the child of `family` for `labels` (of `model` and `backend`, which may be empty).
  template <typename T>
  T* Resolve(metrics::Family<T>& family, const std::vector<std::string>& labels,
             std::string_view model, std::string_view backend);

  ProxyMetrics& metrics_;
  std::vector<BackendHandles> backends_;
  std::vector<ModelHandles> models_;
  absl::flat_hash_map<uint64_t, metrics::Counter*> requests_;  // (model, backend, code) -> child
  std::vector<const void*> held_;                               // every child resolved
};

// What one worker counts outside any route table: requests answered before a table was loaded
// or refused before parsing, and the per-user rate-limit refusals.
class WorkerMetrics {
 public:
  explicit WorkerMetrics(ProxyMetrics& metrics) : metrics_(metrics) {}

  // berry_requests_total{model="",backend="",code=status}.
  void CountRequest(int status);
  void CountRateLimited(std::string_view user);
  ProxyMetrics& shared() { return metrics_; }

 private:
  ProxyMetrics& metrics_;
  absl::flat_hash_map<int, metrics::Counter*> requests_;              // by status
  absl::flat_hash_map<std::string, metrics::Counter*> rate_limited_;  // by user, or one ""
};

}  // namespace berry::proxy
