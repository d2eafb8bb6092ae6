// FleetStats folds the load reports of every connected proxy into per-backend fleet statistics,
// decides fleet-wide health, and writes health and effective weights into the RouteTable the
// control plane publishes. It also feeds ListBackends (Snapshot) and the control plane's /metrics
// (RegisterMetrics). It is made of three parts: the report ledger (report_ledger.h: folding
// reports exactly once into totals), the health model (health_model.h: recent window, outlier
// verdict, health factor, probe verdicts) and the metrics output (fleet_metrics.h: one
// prometheus::Collectable that takes one Snapshot per scrape); this class puts them under one
// mutex and owns the table overlay and backend retention.
//
// Exactly-once accounting. Reports carry per-backend deltas and a per-proxy sequence 1, 2, 3...
// FleetStats keeps, per node id, the highest sequence it folded and the start of that report's
// interval. A report is folded when its sequence is higher, or when its interval starts after
// the last folded one: the proxy restarted and counts from 1 again (a re-sent report never
// starts later than the newest one already folded, because the proxy numbers its reports in
// time order). Anything else is a duplicate re-sent after a reconnect: ignored and counted. Fold
// returns the node's highest folded sequence, for StreamLoadReportsResponse.acked_sequence.
//
// Totals (issued, succeeded, failures by class, tokens, latency and TTFB histograms over
// metrics::kLatencyBuckets, see latency_histogram.h) are sums since the control plane started. In
// flight is a gauge: the latest value each node reported for the backend, summed over nodes;
// ForgetNode() drops a node's contribution when it disconnects, and a restarted proxy's stale
// gauges are dropped when its restart is detected. A forgotten node's sequence is kept for
// `node_retention`, so a proxy that reconnects within that time (and re-sends reports it had not
// seen acked) is not double counted.
//
// Recent window. Each backend keeps succeeded/completed counts (completed = succeeded + every
// failure class) in a ring of `bucket_width` buckets covering `window`, keyed by the control
// plane's clock when the report arrived (proxies' clocks may disagree; arrival time is one
// clock). The recent success rate is succeeded / completed over the ring's live buckets: between
// window - bucket_width and window of history. Old history therefore cannot hide a backend that
// just started failing.
//
// Fleet health (outlier detection), re-evaluated whenever a report for the backend arrives and
// whenever health is read (Overlay, EffectiveWeight, Snapshot, a metrics scrape):
//   - no verdict yet (never `min_requests` completed attempts in the window): UNKNOWN;
//   - window with >= min_requests completed attempts and success rate < unhealthy_success_rate:
//     UNHEALTHY;
//   - window with >= min_requests completed attempts and success rate >= healthy_success_rate:
//     HEALTHY; between the two thresholds the verdict stays what it was (hysteresis), except that
//     a backend without a verdict becomes HEALTHY (it is no outlier);
//   - an UNHEALTHY backend that has seen no traffic (no attempt issued or completed) for
//     `recovery_after` becomes HEALTHY again, so real requests probe it; its window is cleared
//     so the failures that ejected it cannot eject it again on their own.
// Below min_requests the success rate never changes the verdict: low volume never flips health.
//
// Health factor and effective weight. The factor is the recent success rate, clamped to
// [1/steps, 1] and quantised to steps of 1/steps (steps = `health_factor_steps`, 20 by default:
// steps of 0.05, floor 0.05):
//     factor = clamp(round(rate × steps), 1, steps) / steps
// with a dead band: the published factor only moves when rate × steps is more than 0.75 of a
// step away from it. A rate hovering around a rounding boundary (±1.25 percentage points with
// 20 steps) thus never changes it, and the published factor stays within 0.75 of a step of the
// true rate. The factor is only updated from windows with >= min_requests completed attempts; it
// is 1 when the window holds no completed attempt at all ("no data"), and is kept in between.
//     effective_weight = configured weight × factor
// so it moves in steps of 5% of the weight and noise in success rates does not create a new
// table version every report interval.
//
// Probe health. The health checker (another component) reports active-probe verdicts per
// provider and/or per backend. Precedence in Overlay (and Snapshot):
//   1. a backend the table already marks DRAINING stays DRAINING (operator state);
//   1b. a proxy-reported ejection in force (proxy_signals.h): UNHEALTHY;
//   2. probe-unhealthy (its provider's or its own probe failing): UNHEALTHY;
//   3. fleet UNHEALTHY: UNHEALTHY;
//   4. fleet HEALTHY, or a passing probe: HEALTHY;
//   5. otherwise UNKNOWN.
// A passing probe does not clear a fleet verdict: a provider can answer probes while failing
// real requests (429s, one broken model); the fleet verdict recovers on its own (see above).
//
// 429 cooldowns reported by proxies (proxy_signals.h) go into Backend.cooldown_until.
//
// Backends that are neither in the last overlaid table nor reported for `backend_retention` are
// forgotten at the next Overlay, so removed backends leave /metrics.
//
// Threads: every method may be called from any thread (gRPC reactors fold reports, admin and
// metrics threads read); one absl::Mutex guards everything. Nothing here blocks but that mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "berry/v1/discovery.pb.h"
#include "berry/v1/route_table.pb.h"
#include "common/metrics/metrics.h"
#include "control-plane/stats/fleet_options.h"
#include "control-plane/stats/health_model.h"
#include "control-plane/stats/proxy_signals.h"
#include "control-plane/stats/report_ledger.h"
#include "prometheus/collectable.h"

namespace berry::control_plane {

// Totals of one latency histogram (whole-request latency or time to first byte).
struct LatencySummary {
  // Non-cumulative counts over metrics::kLatencyBuckets, then +Inf.
  std::vector<uint64_t> counts = std::vector<uint64_t>(metrics::kLatencyBuckets.size() + 1, 0);
  uint64_t count = 0;
  double sum_seconds = 0.0;
  // Prometheus histogram_quantile estimates, seconds; nullopt without observations.
  std::optional<double> p50;
  std::optional<double> p99;
};

// One backend as the fleet sees it (Snapshot()).
struct BackendFleetStatus : AttemptCounts {
  std::string backend_id;
  // From the last Overlay(); empty for a backend only known from reports.
  std::string provider_id;

  // AttemptCounts: totals since the control plane started, summed over every proxy.
  // Sum over nodes of the latest in-flight gauge.
  uint64_t in_flight = 0;
  LatencySummary latency;
  LatencySummary ttfb;

  // The recent window (see the header comment).
  uint64_t recent_succeeded = 0;
  uint64_t recent_completed = 0;
  // recent_succeeded / recent_completed; nullopt when nothing completed in the window.
  std::optional<double> recent_success_rate;
  // succeeded / (succeeded + failures) since start; nullopt when nothing completed.
  std::optional<double> lifetime_success_rate;

  // Outlier verdict from fleet data alone: UNKNOWN, HEALTHY or UNHEALTHY.
  v1::HealthStatus fleet_health = v1::HEALTH_STATUS_UNKNOWN;
  // Active-probe verdict (provider's or backend's); nullopt without one.
  std::optional<bool> probe_healthy;
  // A proxy's ejection in force (proxy_signals.h): until then the backend is UNHEALTHY.
  std::optional<absl::Time> proxy_ejected_until;
  // A 429 cooldown in force (proxy_signals.h).
  std::optional<absl::Time> cooldown_until;
  // Proxy ejection, probe and fleet combined, by the documented precedence (never DRAINING).
  v1::HealthStatus health = v1::HEALTH_STATUS_UNKNOWN;
  // The quantised health factor in (0, 1].
  double health_factor = 1.0;
  // As written by the last Overlay(); nullopt for a backend that was not in that table.
  std::optional<double> effective_weight;
};

class FleetStats {
 public:
  // InvalidArgument when `options` break the bounds documented on FleetStatsOptions.
  static absl::StatusOr<std::unique_ptr<FleetStats>> Create(FleetStatsOptions options = {},
                                                            Clock clock = absl::Now);

  FleetStats(const FleetStats&) = delete;
  FleetStats& operator=(const FleetStats&) = delete;

  // Folds one report from proxy `node_id` and returns the node's acked sequence (its highest
  // folded sequence; for a duplicate, the one that made it a duplicate). InvalidArgument, with
  // nothing folded, for an empty node id, sequence 0, a backend without id, a malformed histogram
  // or interval_start.
  absl::StatusOr<uint64_t> Fold(const v1::StreamLoadReportsRequest& report,
                                std::string_view node_id);

  // The highest sequence folded for `node_id` (0 if none): what to ack when a stream opens.
  uint64_t AckedSequence(std::string_view node_id) const;

  // The proxy `node_id` is gone: its in-flight gauges stop counting now; its sequence is kept
  // for `node_retention` so a reconnect does not double count. Unknown ids are ignored.
  void ForgetNode(std::string_view node_id);

  // Active-probe verdict for every backend of `provider_id`, or for one backend; nullopt clears
  // the verdict (no probe opinion).
  void SetProviderProbeHealth(std::string_view provider_id, std::optional<bool> healthy);
  void SetBackendProbeHealth(std::string_view backend_id, std::optional<bool> healthy);

  // A probe of `provider_id` that started at `probe_started` succeeded: ends the proxy-reported
  // ejections of its backends reported before then (proxy_signals.h).
  void ProviderProbeSucceeded(std::string_view provider_id, absl::Time probe_started);
  // Proxy reports of ejections and 429 cooldowns folded, and ejections a probe ended, since start.
  uint64_t proxy_ejections_reported() const;
  uint64_t proxy_cooldowns_reported() const;
  uint64_t proxy_ejections_cleared_by_probe() const;

  // configured_weight × the backend's health factor (configured_weight for an unknown backend).
  double EffectiveWeight(std::string_view backend_id, double configured_weight);

  // Sets every backend's `health` and `effective_weight` in `table` (see the header comment).
  // Returns whether any backend's health or effective weight, or the set of backends, differs
  // from the previous Overlay() (true on the first call): push a new table only then.
  bool Overlay(v1::RouteTable& table);

  // Every backend known from reports or from the last overlaid table, sorted by id.
  std::vector<BackendFleetStatus> Snapshot();

  // Reports ignored as duplicates, and reports folded, since start.
  uint64_t duplicate_reports() const;
  uint64_t folded_reports() const;
  // Folded reports whose counts reach back further than the recent window (age + interval: queued
  // while the control plane was away, or spanning an outage): counted in the totals only.
  uint64_t stale_reports() const;

  // How many Snapshot()s were taken since start (a /metrics scrape takes one).
  uint64_t snapshots_taken() const;
  // Report histograms dropped because their bounds could not be folded (latency_histogram.h).
  uint64_t incompatible_histograms() const;

  // Registers one scrape-time source in `registry` that takes one Snapshot() per Render and
  // emits every berry_cp_* family of the fleet from it (fleet_metrics.h lists them). This object
  // must outlive every Render() of `registry`. AlreadyExists when a name is taken.
  absl::Status RegisterMetrics(metrics::Registry& registry);

 private:
  struct OverlayEntry {
    std::string provider_id;
    v1::HealthStatus health = v1::HEALTH_STATUS_UNKNOWN;
    double effective_weight = 0.0;
    absl::Time cooldown_until;  // absl::Time() = none
    bool operator==(const OverlayEntry&) const = default;
  };

  FleetStats(FleetStatsOptions options, Clock clock, int64_t ring_size);

  void PruneBackendsLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FleetStatsOptions options_;
  const Clock clock_;

  mutable absl::Mutex mu_;
  ReportLedger ledger_ ABSL_GUARDED_BY(mu_);
  HealthModel health_ ABSL_GUARDED_BY(mu_);
  ProxySignals signals_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::flat_hash_map<std::string, OverlayEntry>> last_overlay_ ABSL_GUARDED_BY(mu_);
  uint64_t snapshots_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t stale_reports_ ABSL_GUARDED_BY(mu_) = 0;
  // The /metrics source, made by the first RegisterMetrics().
  std::unique_ptr<prometheus::Collectable> metrics_;
};

}  // namespace berry::control_plane
