#include "control-plane/stats/fleet_stats.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "control-plane/stats/latency_histogram.h"
#include "google/protobuf/util/time_util.h"

namespace berry::control_plane {
namespace {

// A ring longer than this is a configuration mistake (a window of hours in seconds).
constexpr int64_t kMaxRingSize = 4096;

LatencySummary Summarise(const metrics::Histogram& histogram) {
  const metrics::HistogramCounts read = metrics::ReadHistogram(histogram);
  LatencySummary summary;
  summary.counts = read.counts;
  summary.count = read.count;
  summary.sum_seconds = read.sum;
  summary.p50 = HistogramQuantile(0.5, read.bounds, read.counts);
  summary.p99 = HistogramQuantile(0.99, read.bounds, read.counts);
  return summary;
}

absl::Duration ProtoDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::optional<double> Ratio(uint64_t part, uint64_t whole) {
  if (whole == 0) {
    return std::nullopt;
  }
  return static_cast<double>(part) / static_cast<double>(whole);
}

}  // namespace

FleetStatsOptions FleetStatsOptions::FromSettings(const v1::Settings& settings) {
  FleetStatsOptions options;
  if (settings.has_circuit_breaker_timeout()) {
    const absl::Duration timeout = absl::Seconds(settings.circuit_breaker_timeout().seconds()) +
                                   absl::Nanoseconds(settings.circuit_breaker_timeout().nanos());
    if (timeout > absl::ZeroDuration()) {
      options.recovery_after = timeout;
      options.max_proxy_signal = timeout * 10;
    }
  }
  return options;
}

absl::StatusOr<std::unique_ptr<FleetStats>> FleetStats::Create(FleetStatsOptions options,
                                                               Clock clock) {
  if (!clock) {
    return absl::InvalidArgumentError("fleet stats need a clock");
  }
  if (options.window <= absl::ZeroDuration() || options.bucket_width <= absl::ZeroDuration() ||
      options.bucket_width > options.window) {
    return absl::InvalidArgumentError(
        absl::StrCat("fleet stats need 0 < bucket_width <= window; got bucket_width ",
                     absl::FormatDuration(options.bucket_width), ", window ",
                     absl::FormatDuration(options.window)));
  }
  absl::Duration remainder;
  int64_t ring_size = absl::IDivDuration(options.window, options.bucket_width, &remainder);
  if (remainder > absl::ZeroDuration()) {
    ++ring_size;
  }
  if (ring_size > kMaxRingSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("fleet stats window holds ", ring_size, " buckets; at most ", kMaxRingSize));
  }
  if (options.min_requests < 1) {
    return absl::InvalidArgumentError("fleet stats min_requests must be at least 1");
  }
  if (!(options.unhealthy_success_rate >= 0 && options.unhealthy_success_rate <= 1) ||
      !(options.healthy_success_rate >= options.unhealthy_success_rate &&
        options.healthy_success_rate <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fleet stats need 0 <= unhealthy_success_rate <= healthy_success_rate <= 1; got ",
        options.unhealthy_success_rate, " and ", options.healthy_success_rate));
  }
  if (options.health_factor_steps < 1 || options.health_factor_steps > 1000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fleet stats health_factor_steps must be in [1, 1000]; got ", options.health_factor_steps));
  }
  if (options.max_proxy_signal <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("fleet stats max_proxy_signal must be positive");
  }
  if (options.recovery_after <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("fleet stats recovery_after must be positive");
  }
  if (options.node_retention < absl::ZeroDuration() ||
      options.backend_retention < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "fleet stats node_retention and backend_retention must not be negative");
  }
  return std::unique_ptr<FleetStats>(new FleetStats(options, std::move(clock), ring_size));
}

FleetStats::FleetStats(FleetStatsOptions options, Clock clock, int64_t ring_size)
    : options_(options),
      clock_(std::move(clock)),
      ledger_(options.node_retention),
      health_(options, ring_size),
      signals_(options.max_proxy_signal) {}

void FleetStats::PruneBackendsLocked(absl::Time now) {
  std::vector<std::string> gone;
  for (const auto& [id, totals] : ledger_.backends()) {
    const bool in_table = last_overlay_.has_value() && last_overlay_->contains(id);
    if (!in_table && now - totals.last_report >= options_.backend_retention) {
      gone.push_back(id);
    }
  }
  for (const std::string& id : gone) {
    ledger_.ForgetBackend(id);
    health_.Forget(id);
    signals_.Forget(id);
  }
  signals_.Prune(now);
}

absl::StatusOr<uint64_t> FleetStats::Fold(const v1::StreamLoadReportsRequest& report,
                                          std::string_view node_id) {
  // Validate everything first: a malformed report is never half folded.
  absl::StatusOr<std::optional<absl::Time>> interval_start =
      ReportLedger::Validate(report, node_id);
  if (!interval_start.ok()) {
    return interval_start.status();
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  const ReportLedger::FoldOutcome outcome = ledger_.Fold(report, node_id, *interval_start, now);
  // Health is judged on the recent window only. A report whose counts reach back further — one
  // that waited in a proxy's queue while this control plane was away (`age`), or the one a proxy
  // collects when it reconnects after an outage, whose interval spans the outage — goes into the
  // totals (the ledger, above) but not into health; its ejections and cooldowns count only for
  // what is left of them.
  const absl::Duration age = report.has_age()
                                 ? std::max(absl::ZeroDuration(), ProtoDuration(report.age()))
                                 : absl::ZeroDuration();
  const absl::Duration interval =
      report.has_interval() ? std::max(absl::ZeroDuration(), ProtoDuration(report.interval()))
                            : absl::ZeroDuration();
  const bool recent = age + interval <= options_.window;
  if (outcome.folded && !recent && report.backend_stats_size() > 0) {
    ++stale_reports_;
  }
  if (outcome.folded) {
    for (const v1::BackendStats& stats : report.backend_stats()) {
      if (recent) {
        const uint64_t completed = load_report::Completed(stats);
        health_.Record(stats.backend_id(), stats.succeeded(), completed,
                       stats.issued() > 0 || completed > 0, now);
      }
      if (stats.has_ejected_for() && ProtoDuration(stats.ejected_for()) > age) {
        signals_.Ejected(stats.backend_id(), ProtoDuration(stats.ejected_for()) - age, now);
      }
      if (stats.has_cooldown_for() && ProtoDuration(stats.cooldown_for()) > age) {
        signals_.CooledDown(stats.backend_id(), ProtoDuration(stats.cooldown_for()) - age, now);
      }
    }
  }
  return outcome.acked_sequence;
}

uint64_t FleetStats::AckedSequence(std::string_view node_id) const {
  absl::MutexLock lock(&mu_);
  return ledger_.AckedSequence(node_id);
}

void FleetStats::ForgetNode(std::string_view node_id) {
  absl::MutexLock lock(&mu_);
  ledger_.ForgetNode(node_id, clock_());
}

void FleetStats::SetProviderProbeHealth(std::string_view provider_id, std::optional<bool> healthy) {
  absl::MutexLock lock(&mu_);
  health_.SetProviderProbe(provider_id, healthy);
}

void FleetStats::SetBackendProbeHealth(std::string_view backend_id, std::optional<bool> healthy) {
  absl::MutexLock lock(&mu_);
  health_.SetBackendProbe(backend_id, healthy);
}

void FleetStats::ProviderProbeSucceeded(std::string_view provider_id, absl::Time probe_started) {
  absl::MutexLock lock(&mu_);
  if (!last_overlay_.has_value()) {
    return;
  }
  for (const auto& [id, entry] : *last_overlay_) {
    if (entry.provider_id == provider_id) {
      signals_.ProbeSucceeded(id, probe_started);
    }
  }
}

uint64_t FleetStats::proxy_ejections_reported() const {
  absl::MutexLock lock(&mu_);
  return signals_.ejections_reported();
}

uint64_t FleetStats::proxy_cooldowns_reported() const {
  absl::MutexLock lock(&mu_);
  return signals_.cooldowns_reported();
}

uint64_t FleetStats::proxy_ejections_cleared_by_probe() const {
  absl::MutexLock lock(&mu_);
  return signals_.ejections_cleared_by_probe();
}

double FleetStats::EffectiveWeight(std::string_view backend_id, double configured_weight) {
  absl::MutexLock lock(&mu_);
  health_.Evaluate(backend_id, clock_());
  return configured_weight * health_.Factor(backend_id);
}

bool FleetStats::Overlay(v1::RouteTable& table) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  absl::flat_hash_map<std::string, OverlayEntry> overlay;
  for (v1::CustomModel& model : *table.mutable_models()) {
    for (v1::Backend& backend : *model.mutable_backends()) {
      health_.Evaluate(backend.id(), now);
      if (backend.health() != v1::HEALTH_STATUS_DRAINING) {
        backend.set_health(signals_.EjectedAt(backend.id(), now)
                               ? v1::HEALTH_STATUS_UNHEALTHY
                               : health_.Combined(backend.id(), backend.provider_id()));
      }
      backend.set_effective_weight(backend.weight() * health_.Factor(backend.id()));
      const std::optional<absl::Time> cooldown = signals_.CooldownAt(backend.id(), now);
      if (cooldown.has_value()) {
        *backend.mutable_cooldown_until() =
            google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(*cooldown));
      } else {
        backend.clear_cooldown_until();
      }
      overlay[backend.id()] = OverlayEntry{.provider_id = backend.provider_id(),
                                           .health = backend.health(),
                                           .effective_weight = backend.effective_weight(),
                                           .cooldown_until = cooldown.value_or(absl::Time())};
    }
  }
  const bool changed = !last_overlay_.has_value() || *last_overlay_ != overlay;
  last_overlay_ = std::move(overlay);
  PruneBackendsLocked(now);
  return changed;
}

std::vector<BackendFleetStatus> FleetStats::Snapshot() {
  absl::MutexLock lock(&mu_);
  ++snapshots_;
  const absl::Time now = clock_();
  const absl::flat_hash_map<std::string, uint64_t> in_flight = ledger_.InFlight();
  std::vector<std::string> ids;
  ids.reserve(ledger_.backends().size());
  for (const auto& [id, totals] : ledger_.backends()) {
    ids.push_back(id);
  }
  if (last_overlay_.has_value()) {
    for (const auto& [id, entry] : *last_overlay_) {
      if (!ledger_.backends().contains(id)) {
        ids.push_back(id);
      }
    }
  }
  std::sort(ids.begin(), ids.end());

  std::vector<BackendFleetStatus> out;
  out.reserve(ids.size());
  for (const std::string& id : ids) {
    BackendFleetStatus status;
    status.backend_id = id;
    if (last_overlay_.has_value()) {
      if (auto it = last_overlay_->find(id); it != last_overlay_->end()) {
        status.provider_id = it->second.provider_id;
        status.effective_weight = it->second.effective_weight;
      }
    }
    if (auto it = ledger_.backends().find(id); it != ledger_.backends().end()) {
      const BackendTotals& totals = it->second;
      health_.Evaluate(id, now);
      static_cast<AttemptCounts&>(status) = totals;
      status.latency = Summarise(*totals.latency);
      status.ttfb = Summarise(*totals.ttfb);
      std::tie(status.recent_succeeded, status.recent_completed) = health_.Window(id, now);
      status.recent_success_rate = Ratio(status.recent_succeeded, status.recent_completed);
      status.lifetime_success_rate = Ratio(status.succeeded, status.succeeded + status.failed());
      status.fleet_health = health_.FleetVerdict(id);
    }
    if (auto it = in_flight.find(id); it != in_flight.end()) {
      status.in_flight = it->second;
    }
    status.probe_healthy = health_.Probe(id, status.provider_id);
    status.proxy_ejected_until = signals_.EjectionAt(id, now);
    status.cooldown_until = signals_.CooldownAt(id, now);
    status.health = status.proxy_ejected_until.has_value()
                        ? v1::HEALTH_STATUS_UNHEALTHY
                        : health_.Combined(id, status.provider_id);
    status.health_factor = health_.Factor(id);
    out.push_back(std::move(status));
  }
  return out;
}

uint64_t FleetStats::duplicate_reports() const {
  absl::MutexLock lock(&mu_);
  return ledger_.duplicate_reports();
}

uint64_t FleetStats::stale_reports() const {
  absl::MutexLock lock(&mu_);
  return stale_reports_;
}

uint64_t FleetStats::folded_reports() const {
  absl::MutexLock lock(&mu_);
  return ledger_.folded_reports();
}

uint64_t FleetStats::snapshots_taken() const {
  absl::MutexLock lock(&mu_);
  return snapshots_;
}

uint64_t FleetStats::incompatible_histograms() const {
  absl::MutexLock lock(&mu_);
  return ledger_.incompatible_histograms();
}

}  // namespace berry::control_plane
