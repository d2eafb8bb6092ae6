#include "control-plane/stats/fleet_metrics.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "common/metrics/metrics.h"
#include "control-plane/stats/fleet_stats.h"

namespace berry::control_plane {
namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

// The families in the order they are built; FamilyNames() lists these names.
struct Spec {
  const char* name;
  const char* help;
  MetricType type;
};
constexpr Spec kRequests{"berry_cp_backend_requests_total",
                         "Attempts issued to the backend by every proxy since the control plane "
                         "started.",
                         MetricType::Counter};
constexpr Spec kSucceeded{"berry_cp_backend_succeeded_total",
                          "Attempts on the backend that succeeded, fleet-wide.",
                          MetricType::Counter};
constexpr Spec kErrors{"berry_cp_backend_errors_total",
                       "Failed attempts on the backend, fleet-wide, by class.",
                       MetricType::Counter};
constexpr Spec kTokens{"berry_cp_backend_tokens_total",
                       "Tokens reported by upstreams for the backend, fleet-wide, by kind.",
                       MetricType::Counter};
constexpr Spec kInFlight{"berry_cp_backend_in_flight",
                         "Attempts in flight on the backend, summed over connected proxies.",
                         MetricType::Gauge};
constexpr Spec kSuccessRate{
    "berry_cp_backend_success_rate",
    "Success rate of the backend over the recent window (drives fleet health).", MetricType::Gauge};
constexpr Spec kLatency{"berry_cp_backend_latency_seconds",
                        "Whole-request latency of the backend's attempts, fleet-wide since the "
                        "control plane started.",
                        MetricType::Histogram};
constexpr Spec kTtfb{"berry_cp_backend_ttfb_seconds",
                     "Time to first byte of the backend's attempts, fleet-wide since the control "
                     "plane started.",
                     MetricType::Histogram};
constexpr Spec kHealthy{"berry_cp_backend_healthy",
                        "1 unless the backend is UNHEALTHY (failing probes or a fleet outlier).",
                        MetricType::Gauge};
constexpr Spec kHealthFactor{"berry_cp_backend_health_factor",
                             "Quantised recent success rate that scales the backend's weight.",
                             MetricType::Gauge};
constexpr Spec kDuplicates{"berry_cp_duplicate_reports_total",
                           "Load reports ignored because their sequence was already folded "
                           "(re-sent after a reconnect).",
                           MetricType::Counter};
constexpr Spec kReports{"berry_cp_load_reports_total",
                        "Load reports folded into the fleet statistics.", MetricType::Counter};
constexpr Spec kStale{"berry_cp_stale_load_reports_total",
                      "Load reports whose counts reach back further than the recent window "
                      "(queued while the control plane was away, or spanning an outage): folded "
                      "into the totals, not into health.",
                      MetricType::Counter};
constexpr Spec kSpecs[] = {kRequests,    kSucceeded, kErrors, kTokens,  kInFlight,
                           kSuccessRate, kLatency,   kTtfb,   kHealthy, kHealthFactor,
                           kDuplicates,  kReports,   kStale};

MetricFamily Family(const Spec& spec) {
  return metrics::MakeFamily(spec.name, spec.help, spec.type);
}

// Appends a counter or gauge sample (by the family's type).
void Add(MetricFamily& family, const std::vector<std::string>& names,
         const std::vector<std::string>& values, double value) {
  prometheus::ClientMetric sample = metrics::MakeSample(names, values);
  if (family.type == MetricType::Counter) {
    sample.counter.value = value;
  } else {
    sample.gauge.value = value;
  }
  family.metric.push_back(std::move(sample));
}

}  // namespace

std::vector<std::string> FleetMetrics::FamilyNames() {
  std::vector<std::string> names;
  for (const Spec& spec : kSpecs) {
    names.emplace_back(spec.name);
  }
  return names;
}

std::vector<MetricFamily> FleetMetrics::Collect() const {
  const std::vector<BackendFleetStatus> snapshot = stats_.Snapshot();
  MetricFamily requests = Family(kRequests);
  MetricFamily succeeded = Family(kSucceeded);
  MetricFamily errors = Family(kErrors);
  MetricFamily tokens = Family(kTokens);
  MetricFamily in_flight = Family(kInFlight);
  MetricFamily success_rate = Family(kSuccessRate);
  MetricFamily latency = Family(kLatency);
  MetricFamily ttfb = Family(kTtfb);
  MetricFamily healthy = Family(kHealthy);
  MetricFamily health_factor = Family(kHealthFactor);
  const std::vector<std::string> backend = {"backend"};
  for (const BackendFleetStatus& s : snapshot) {
    const std::vector<std::string> id = {s.backend_id};
    Add(requests, backend, id, static_cast<double>(s.issued));
    Add(succeeded, backend, id, static_cast<double>(s.succeeded));
    for (const auto& [cls, value] : {std::pair<const char*, uint64_t>{"connect", s.failed_connect},
                                     {"timeout", s.failed_timeout},
                                     {"5xx", s.failed_5xx},
                                     {"429", s.failed_429},
                                     {"stream_broken", s.failed_stream_broken}}) {
      Add(errors, {"backend", "class"}, {s.backend_id, cls}, static_cast<double>(value));
    }
    Add(tokens, {"backend", "kind"}, {s.backend_id, "prompt"},
        static_cast<double>(s.prompt_tokens));
    Add(tokens, {"backend", "kind"}, {s.backend_id, "completion"},
        static_cast<double>(s.completion_tokens));
    Add(in_flight, backend, id, static_cast<double>(s.in_flight));
    if (s.recent_success_rate.has_value()) {
      Add(success_rate, backend, id, *s.recent_success_rate);
    }
    for (const auto& [family, summary] : {std::pair{&latency, &s.latency}, {&ttfb, &s.ttfb}}) {
      prometheus::ClientMetric sample = metrics::MakeSample(backend, id);
      metrics::SetHistogram(sample, metrics::LatencyBuckets(), summary->counts,
                            summary->sum_seconds);
      family->metric.push_back(std::move(sample));
    }
    Add(healthy, backend, id, s.health == v1::HEALTH_STATUS_UNHEALTHY ? 0.0 : 1.0);
    Add(health_factor, backend, id, s.health_factor);
  }
  MetricFamily duplicates = Family(kDuplicates);
  Add(duplicates, {}, {}, static_cast<double>(stats_.duplicate_reports()));
  MetricFamily reports = Family(kReports);
  Add(reports, {}, {}, static_cast<double>(stats_.folded_reports()));
  MetricFamily stale = Family(kStale);
  Add(stale, {}, {}, static_cast<double>(stats_.stale_reports()));

  std::vector<MetricFamily> out;
  for (MetricFamily* family :
       {&requests, &succeeded, &errors, &tokens, &in_flight, &success_rate, &latency, &ttfb,
        &healthy, &health_factor, &duplicates, &reports, &stale}) {
    out.push_back(std::move(*family));
  }
  return out;
}

absl::Status FleetStats::RegisterMetrics(metrics::Registry& registry) {
  if (metrics_ == nullptr) {
    metrics_ = std::make_unique<FleetMetrics>(*this);
  }
  return registry.AddCollectable(*metrics_, FleetMetrics::FamilyNames());
}

}  // namespace berry::control_plane
