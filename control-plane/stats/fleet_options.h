// FleetStatsOptions: the tuning of the fleet statistics (FleetStats, its HealthModel and
// ReportLedger), and the clock they read.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/time/time.h"
#include "berry/v1/route_table.pb.h"

namespace berry::control_plane {

// The time source; absl::Now in production, a fake in tests.
using Clock = std::function<absl::Time()>;

// Tuning of FleetStats; the defaults are the documented ones. Validated by FleetStats::Create.
struct FleetStatsOptions {
  // Length of the recent window that drives health and the health factor. > 0.
  absl::Duration window = absl::Seconds(60);
  // Granularity of the window's ring; the proxies' report interval is a good choice. > 0, at
  // most `window`, and at most 4096 buckets per window.
  absl::Duration bucket_width = absl::Seconds(5);
  // Completed attempts the window needs before its success rate counts. >= 1.
  uint64_t min_requests = 10;
  // Below this recent success rate (with enough volume) a backend is UNHEALTHY. In [0, 1].
  double unhealthy_success_rate = 0.5;
  // At or above this rate (with enough volume) an UNHEALTHY backend is HEALTHY again. In
  // [unhealthy_success_rate, 1].
  double healthy_success_rate = 0.8;
  // An UNHEALTHY backend without traffic for this long becomes HEALTHY again. > 0.
  absl::Duration recovery_after = absl::Seconds(60);
  // The health factor's resolution and floor are 1/health_factor_steps. In [1, 1000].
  uint32_t health_factor_steps = 20;
  // How long a node's sequence outlives ForgetNode(). >= 0.
  absl::Duration node_retention = absl::Minutes(10);
  // How long a backend missing from the table keeps its statistics after its last report. >= 0.
  absl::Duration backend_retention = absl::Minutes(10);
  // Longest ejection or 429 cooldown a proxy's report can impose fleet-wide (proxy_signals.h).
  // > 0.
  absl::Duration max_proxy_signal = absl::Minutes(10);

  // The defaults, with recovery_after = settings.circuit_breaker_timeout (60 s when unset): the
  // control plane rests a failing backend as long as each proxy's own outlier detector does; and
  // max_proxy_signal = 10 x that timeout, the longest ejection a proxy applies.
  static FleetStatsOptions FromSettings(const v1::Settings& settings);
};

}  // namespace berry::control_plane
