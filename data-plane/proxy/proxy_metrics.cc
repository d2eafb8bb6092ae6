#include "data-plane/proxy/proxy_metrics.h"

#include "data-plane/proxy/route_store.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

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
std::string Label(const selection::CompiledBackend* backend) { return backend ? backend->id() : ""; }

}  // namespace

ProxyMetrics::ProxyMetrics(const RouteStore& routes) {
  const std::vector<double> latency = metrics::DefaultLatencyBuckets();
  requests = Must(registry_.AddCounter("berry_requests_total",
                                       "Requests answered, by custom model, backend and HTTP status.",
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
                     "berry_backend_ejected",
                     "1 while passive outlier detection has the backend ejected, else 0.",
                     {"backend"},
                     [&routes] {
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
  retries = Must(registry_.AddCounter(
      "berry_retries_total", "Attempts retried on another backend before the first byte.",
      {"model"}));
  panics = Must(registry_.AddCounter(
      "berry_panic_total",
      "Picks made in panic mode (too few usable backends, ejection ignored).", {"model"}));
  tokens = Must(registry_.AddCounter("berry_tokens_total",
                                     "Tokens reported by upstream `usage`, by kind (prompt, "
                                     "completion).",
                                     {"model", "backend", "kind"}));
  rate_limited = Must(registry_.AddCounter(
      "berry_rate_limited_total", "Requests refused by a per-user rate limit.", {"user"}));
  stream_broken = Must(registry_.AddCounter(
      "berry_stream_broken_total", "Streams that broke after their first byte reached the client.",
      {"model", "backend"}));
  local_requests = Must(registry_.AddCounter(
      "berry_local_requests_total",
      "Requests to the proxy's own endpoints (/healthz, /health, /readyz, /metrics), by path and "
      "HTTP status; not in berry_requests_total.",
      {"path", "code"}));
  inflight = Must(Must(registry_.AddGauge("berry_inflight_requests",
                                          "Requests being handled right now.", {}))
                      ->Add({}));
  MustOk(registry_.AddCallbackGauge("berry_route_table_version_info",
                                   "1, labelled with the version of the route table in force.",
                                   {"version"},
                                   [&routes] {
                                     std::vector<metrics::GaugeSample> samples;
                                     if (const auto generation = routes.Current()) {
                                       samples.push_back({{generation->version()}, 1.0});
                                     }
                                     return samples;
                                   }));
  auto* reloads = Must(registry_.AddCounter(
      "berry_route_table_updates_total", "Route tables offered to this proxy, by result.",
      {"result"}));
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

uint64_t WorkerMetrics::Key(Kind kind, const selection::CompiledModel* model,
                            const selection::CompiledBackend* backend, int code) {
  const uint64_t m = model ? model->index() + 1 : 0;
  const uint64_t b = backend ? backend->index() + 1 : 0;
  return (static_cast<uint64_t>(kind) << 56) | (m << 32) | (b << 10) |
         static_cast<uint64_t>(code & 0x3ff);
}

metrics::Counter* WorkerMetrics::CounterFor(Kind kind, const selection::CompiledModel* model,
                                            const selection::CompiledBackend* backend, int code) {
  const uint64_t key = Key(kind, model, backend, code);
  if (auto it = counters_.find(key); it != counters_.end()) {
    return it->second;
  }
  metrics::Counter* counter = nullptr;
  switch (kind) {
    case Kind::kRequests:
      counter = Must(metrics_.requests->Add({Label(model), Label(backend), std::to_string(code)}));
      break;
    case Kind::kPrompt:
      counter = Must(metrics_.tokens->Add({Label(model), Label(backend), "prompt"}));
      break;
    case Kind::kCompletion:
      counter = Must(metrics_.tokens->Add({Label(model), Label(backend), "completion"}));
      break;
    case Kind::kRetry:
      counter = Must(metrics_.retries->Add({Label(model)}));
      break;
    case Kind::kPanic:
      counter = Must(metrics_.panics->Add({Label(model)}));
      break;
    case Kind::kStreamBroken:
      counter = Must(metrics_.stream_broken->Add({Label(model), Label(backend)}));
      break;
    case Kind::kDuration:
    case Kind::kTtfb:
      std::abort();  // histograms live in histograms_
  }
  counters_.emplace(key, counter);
  return counter;
}

metrics::Histogram* WorkerMetrics::HistogramFor(Kind kind, const selection::CompiledModel& model,
                                                const selection::CompiledBackend& backend) {
  const uint64_t key = Key(kind, &model, &backend);
  if (auto it = histograms_.find(key); it != histograms_.end()) {
    return it->second;
  }
  auto* family = kind == Kind::kDuration ? metrics_.duration : metrics_.ttfb;
  metrics::Histogram* histogram = Must(family->Add({model.name(), backend.id()}));
  histograms_.emplace(key, histogram);
  return histogram;
}

void WorkerMetrics::CountRequest(const selection::CompiledModel* model,
                                 const selection::CompiledBackend* backend, int status) {
  CounterFor(Kind::kRequests, model, backend, status)->Increment();
}

void WorkerMetrics::ObserveDuration(const selection::CompiledModel& model,
                                    const selection::CompiledBackend& backend, double seconds) {
  HistogramFor(Kind::kDuration, model, backend)->Observe(seconds);
}

void WorkerMetrics::ObserveTtfb(const selection::CompiledModel& model,
                                const selection::CompiledBackend& backend, double seconds) {
  HistogramFor(Kind::kTtfb, model, backend)->Observe(seconds);
}

void WorkerMetrics::CountTokens(const selection::CompiledModel& model,
                                const selection::CompiledBackend& backend, uint64_t prompt,
                                uint64_t completion) {
  CounterFor(Kind::kPrompt, &model, &backend)->Increment(static_cast<double>(prompt));
  CounterFor(Kind::kCompletion, &model, &backend)->Increment(static_cast<double>(completion));
}

void WorkerMetrics::CountRetry(const selection::CompiledModel& model) {
  CounterFor(Kind::kRetry, &model, nullptr)->Increment();
}

void WorkerMetrics::CountPanic(const selection::CompiledModel& model) {
  CounterFor(Kind::kPanic, &model, nullptr)->Increment();
}

void WorkerMetrics::CountStreamBroken(const selection::CompiledModel& model,
                                      const selection::CompiledBackend& backend) {
  CounterFor(Kind::kStreamBroken, &model, &backend)->Increment();
}

void WorkerMetrics::CountRateLimited(std::string_view user) {
  auto it = rate_limited_.find(std::string(user));
  if (it == rate_limited_.end()) {
    it = rate_limited_.emplace(std::string(user), Must(metrics_.rate_limited->Add({std::string(user)})))
             .first;
  }
  it->second->Increment();
}

}  // namespace berry::proxy
