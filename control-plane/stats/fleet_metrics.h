// FleetMetrics: the control plane's fleet statistics for /metrics. One prometheus::Collectable
// that takes ONE FleetStats::Snapshot() per scrape and builds every family below from it:
//   berry_cp_backend_requests_total{backend}          counter: attempts issued
//   berry_cp_backend_succeeded_total{backend}         counter: attempts that succeeded
//   berry_cp_backend_errors_total{backend,class}      counter; class: connect, timeout, 5xx, 429,
//                                                     stream_broken
//   berry_cp_backend_tokens_total{backend,kind}       counter; kind: prompt, completion
//   berry_cp_backend_in_flight{backend}               gauge
//   berry_cp_backend_success_rate{backend}            gauge: recent window; absent without data
//   berry_cp_backend_latency_seconds{backend}         histogram over metrics::kLatencyBuckets
//   berry_cp_backend_ttfb_seconds{backend}            histogram over metrics::kLatencyBuckets
//   berry_cp_backend_healthy{backend}                 gauge: 0 when UNHEALTHY, else 1
//   berry_cp_backend_health_factor{backend}           gauge
//   berry_cp_duplicate_reports_total, berry_cp_load_reports_total,
//   berry_cp_stale_load_reports_total                 counters
// Registered by FleetStats::RegisterMetrics.
#pragma once

#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace berry::control_plane {

class FleetStats;

class FleetMetrics final : public prometheus::Collectable {
 public:
  // `stats` must outlive this.
  explicit FleetMetrics(FleetStats& stats) : stats_(stats) {}

  // The names of the families Collect() emits.
  static std::vector<std::string> FamilyNames();

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  FleetStats& stats_;
};

}  // namespace berry::control_plane
