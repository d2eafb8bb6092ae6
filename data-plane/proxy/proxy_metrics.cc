#include "data-plane/proxy/proxy_metrics.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "data-plane/proxy/route_store.h"

namespace berry::proxy {
namespace {

// Registration only fails for a malformed name or label set: a bug in this file.
template <typename T>
T Must(absl::StatusOr<T> value) {
  if (!value.ok()) {
    std::fprintf(stderr, "berry-proxy: metric registration failed (a bug): %s\n",
                 std::string(value.status().message()).c_str());
    std::abort();
  }
  return *std::move(value);
}

void MustOk(const absl::Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "berry-proxy: metric registration failed (a bug): %s\n",
                 std::string(status.message()).c_str());
    std::abort();
  }
}

std::string Label(const selection::CompiledModel* model) { return model ? model->name() : ""; }
std::string Label(const selection::CompiledBackend* backend) {
  return backend ? backend->id() : "";
}

}  // namespace

ProxyMetrics::ProxyMetrics(const RouteStore& routes, MetricsExposure exposure)
    : routes_(routes), exposure_(exposure) {
  const std::vector<double> latency = metrics::DefaultLatencyBuckets();
  requests = Must(registry_.AddCounter(
      "berry_requests_total", "Requests answered, by custom model, backend and HTTP status.",
      {"model", "backend", "code"}));
  duration = Must(registry_.AddHistogram(
      "berry_request_duration_seconds",
      "Time from reading a request to the end of its response, by model and backend.",
      {"model", "backend"}, latency));
  ttfb = Must(registry_.AddHistogram("berry_upstream_ttfb_seconds",
                                     "Time from sending a request upstream to its first response "
                                     "byte, per attempt, by model and backend.",
                                     {"model", "backend"}, latency));
  MustOk(registry_.AddCallbackGauge(
      "berry_backend_ejected", "1 while passive outlier detection has the backend ejected, else 0.",
      {"backend"}, [&routes] {
        std::vector<metrics::GaugeSample> samples;
        const auto generation = routes.Current();
        if (generation == nullptr) {
          return samples;
        }
        const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now().time_since_epoch())
                                .count();
        for (const auto& backend : generation->snapshot().backends()) {
          const bool ejected = generation->runtime->backend(backend).EjectedAt(now);
          samples.push_back({{backend.id()}, ejected ? 1.0 : 0.0});
        }
        return samples;
      }));
  MustOk(registry_.AddCallbackGauge(
      "berry_backend_budget_spent",
      "1 while the backend's budget (or its provider's) has no credit on this proxy for the "
      "current window, so selection skips it, else 0; only backends with a budget.",
      {"backend"}, [&routes] {
        std::vector<metrics::GaugeSample> samples;
        const auto generation = routes.Current();
        if (generation == nullptr || generation->budgets == nullptr) {
          return samples;
        }
        const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now().time_since_epoch())
                                .count();
        for (const auto& backend : generation->snapshot().backends()) {
          if (backend.has_budget()) {
            samples.push_back(
                {{backend.id()}, generation->budgets->SpentNow(backend, now) ? 1.0 : 0.0});
          }
        }
        return samples;
      }));
  retries = Must(registry_.AddCounter("berry_retries_total",
                                      "Attempts retried on another backend before the first byte.",
                                      {"model"}));
  panics = Must(registry_.AddCounter(
      "berry_panic_total", "Picks made in panic mode (too few usable backends, ejection ignored).",
      {"model"}));
  tokens = Must(registry_.AddCounter("berry_tokens_total",
                                     "Tokens reported by upstream `usage`, by kind (prompt, "
                                     "completion).",
                                     {"model", "backend", "kind"}));
  rate_limited = Must(registry_.AddCounter(
      "berry_rate_limited_total", "Requests refused by a per-user rate limit.",
      exposure_.user_labels ? std::vector<std::string>{"user"} : std::vector<std::string>{}));
  stream_broken = Must(registry_.AddCounter(
      "berry_stream_broken_total", "Streams that broke after their first byte reached the client.",
      {"model", "backend"}));
  local_requests = Must(registry_.AddCounter(
      "berry_local_requests_total",
      "Requests to the proxy's own endpoints (/healthz, /health, /readyz, /metrics), by path and "
      "HTTP status; not in berry_requests_total.",
      {"path", "code"}));
  inflight = Must(
      Must(registry_.AddGauge("berry_inflight_requests", "Requests being handled right now.", {}))
          ->Add({}));
  MustOk(registry_.AddCallbackGauge("berry_route_table_version_info",
                                    "1, labelled with the version of the route table in force.",
                                    {"version"}, [&routes] {
                                      std::vector<metrics::GaugeSample> samples;
                                      if (const auto generation = routes.Current()) {
                                        samples.push_back({{generation->version()}, 1.0});
                                      }
                                      return samples;
                                    }));
  auto* reloads =
      Must(registry_.AddCounter("berry_route_table_updates_total",
                                "Route tables offered to this proxy, by result.", {"result"}));
  route_table_reloads_ok = Must(reloads->Add({"applied"}));
  route_table_reloads_failed = Must(reloads->Add({"rejected"}));
}

void ProxyMetrics::CountLocalEndpoint(std::string_view path, int code) {
  // Probes arrive every few seconds, not per API request: the family's lookup is cheap enough.
  auto counter = local_requests->Add({std::string(path), std::to_string(code)});
  if (counter.ok()) {
    (*counter)->Increment();
  }
}

void ProxyMetrics::Abort(const absl::Status& status) {
  std::fprintf(stderr, "berry-proxy: metric registration failed (a bug): %s\n",
               std::string(status.message()).c_str());
  std::abort();
}

std::string ProxyMetrics::Render() {
  PruneRemoved();
  return registry_.Render();
}

void ProxyMetrics::Release(const std::vector<const void*>& children) {
  absl::MutexLock lock(&held_mu_);
  for (const void* child : children) {
    auto it = held_.find(child);
    if (it != held_.end() && --it->second.holders == 0) {
      ++unheld_;
    }
  }
}

void ProxyMetrics::PruneRemoved() {
  absl::MutexLock lock(&held_mu_);
  if (unheld_ == 0) {
    return;
  }
  const std::shared_ptr<const RouteGeneration> generation = routes_.Current();
  if (generation == nullptr) {
    return;
  }
  absl::flat_hash_set<std::string_view> models;
  absl::flat_hash_set<std::string_view> backends;
  for (const selection::CompiledModel& model : generation->snapshot().models()) {
    models.insert(model.name());
  }
  for (const selection::CompiledBackend& backend : generation->snapshot().backends()) {
    backends.insert(backend.id());
  }
  for (auto it = held_.begin(); it != held_.end();) {
    const Held& held = it->second;
    const bool gone = (!held.model.empty() && !models.contains(held.model)) ||
                      (!held.backend.empty() && !backends.contains(held.backend));
    if (held.holders == 0 && gone) {
      held.remove();
      --unheld_;
      held_.erase(it++);
    } else {
      ++it;
    }
  }
}

size_t ProxyMetrics::held_series() const {
  absl::MutexLock lock(&held_mu_);
  return held_.size();
}

GenerationMetrics::GenerationMetrics(ProxyMetrics& metrics, const selection::Snapshot& snapshot)
    : metrics_(metrics),
      backends_(snapshot.backends().size()),
      models_(snapshot.models().size()) {}

GenerationMetrics::~GenerationMetrics() { metrics_.Release(held_); }

template <typename T>
T* GenerationMetrics::Resolve(metrics::Family<T>& family, const std::vector<std::string>& labels,
                              std::string_view model, std::string_view backend) {
  T* child = metrics_.Hold(family, labels, model, backend);
  held_.push_back(child);
  return child;
}

void GenerationMetrics::CountRequest(const selection::CompiledModel* model,
                                     const selection::CompiledBackend* backend, int status) {
  const uint64_t m = model ? model->index() + 1 : 0;
  const uint64_t b = backend ? backend->index() + 1 : 0;
  const uint64_t key = (m << 42) | (b << 20) | static_cast<uint64_t>(status & 0xfffff);
  auto it = requests_.find(key);
  if (it == requests_.end()) {
    const std::string model_label = Label(model);
    const std::string backend_label = Label(backend);
    it = requests_
             .emplace(key, Resolve(*metrics_.requests,
                                   {model_label, backend_label, std::to_string(status)},
                                   model_label, backend_label))
             .first;
  }
  it->second->Increment();
}

// The slot is null only the first time in a generation: the label values are built then alone.
void GenerationMetrics::ObserveDuration(const selection::CompiledModel& model,
                                        const selection::CompiledBackend& backend,
                                        double seconds) {
  metrics::Histogram*& slot = backends_[backend.index()].duration;
  if (slot == nullptr) {
    slot = Resolve(*metrics_.duration, {model.name(), backend.id()}, model.name(), backend.id());
  }
  slot->Observe(seconds);
}

void GenerationMetrics::ObserveTtfb(const selection::CompiledModel& model,
                                    const selection::CompiledBackend& backend, double seconds) {
  metrics::Histogram*& slot = backends_[backend.index()].ttfb;
  if (slot == nullptr) {
    slot = Resolve(*metrics_.ttfb, {model.name(), backend.id()}, model.name(), backend.id());
  }
  slot->Observe(seconds);
}

void GenerationMetrics::CountTokens(const selection::CompiledModel& model,
                                    const selection::CompiledBackend& backend, uint64_t prompt,
                                    uint64_t completion) {
  BackendHandles& handles = backends_[backend.index()];
  if (handles.prompt_tokens == nullptr) {
    handles.prompt_tokens = Resolve(*metrics_.tokens, {model.name(), backend.id(), "prompt"},
                                    model.name(), backend.id());
    handles.completion_tokens = Resolve(
        *metrics_.tokens, {model.name(), backend.id(), "completion"}, model.name(), backend.id());
  }
  handles.prompt_tokens->Increment(static_cast<double>(prompt));
  handles.completion_tokens->Increment(static_cast<double>(completion));
}

void GenerationMetrics::CountRetry(const selection::CompiledModel& model) {
  metrics::Counter*& slot = models_[model.index()].retries;
  if (slot == nullptr) {
    slot = Resolve(*metrics_.retries, {model.name()}, model.name(), "");
  }
  slot->Increment();
}

void GenerationMetrics::CountPanic(const selection::CompiledModel& model) {
  metrics::Counter*& slot = models_[model.index()].panics;
  if (slot == nullptr) {
    slot = Resolve(*metrics_.panics, {model.name()}, model.name(), "");
  }
  slot->Increment();
}

void GenerationMetrics::CountStreamBroken(const selection::CompiledModel& model,
                                          const selection::CompiledBackend& backend) {
  metrics::Counter*& slot = backends_[backend.index()].stream_broken;
  if (slot == nullptr) {
    slot = Resolve(*metrics_.stream_broken, {model.name(), backend.id()}, model.name(),
                   backend.id());
  }
  slot->Increment();
}

void WorkerMetrics::CountRequest(int status) {
  auto it = requests_.find(status);
  if (it == requests_.end()) {
    it = requests_.emplace(status, Must(metrics_.requests->Add({"", "", std::to_string(status)})))
             .first;
  }
  it->second->Increment();
}

void WorkerMetrics::CountRateLimited(std::string_view user) {
  if (!metrics_.exposure().user_labels) {
    user = {};
  }
  auto it = rate_limited_.find(std::string(user));
  if (it == rate_limited_.end()) {
    std::vector<std::string> labels;
    if (metrics_.exposure().user_labels) {
      labels.emplace_back(user);
    }
    it = rate_limited_.emplace(std::string(user), Must(metrics_.rate_limited->Add(labels))).first;
  }
  it->second->Increment();
}

}  // namespace berry::proxy
