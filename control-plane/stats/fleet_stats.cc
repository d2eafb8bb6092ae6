#include "control-plane/stats/fleet_stats.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/strings/views.h"

namespace berry::control_plane {
namespace {

// The published factor moves only when the rate is more than this many steps away from it.
constexpr double kFactorDeadBandSteps = 0.75;
// A ring longer than this is a configuration mistake (a window of hours in seconds).
constexpr int64_t kMaxRingSize = 4096;

uint64_t Completed(const v1::BackendStats& stats) {
  return stats.succeeded() + stats.failed_connect() + stats.failed_timeout() + stats.failed_5xx() +
         stats.failed_429() + stats.failed_stream_broken();
}

LatencySummary Summarise(const MergedHistogram& histogram) {
  LatencySummary summary;
  summary.count = histogram.count();
  summary.sum_seconds = histogram.sum();
  summary.p50 = histogram.Quantile(0.5);
  summary.p99 = histogram.Quantile(0.99);
  return summary;
}

std::optional<double> Ratio(uint64_t part, uint64_t whole) {
  if (whole == 0) {
    return std::nullopt;
  }
  return static_cast<double>(part) / static_cast<double>(whole);
}

std::string Fraction(double value) { return absl::StrCat(value); }

}  // namespace

FleetStatsOptions FleetStatsOptions::FromSettings(const v1::Settings& settings) {
  FleetStatsOptions options;
  if (settings.has_circuit_breaker_timeout()) {
    const absl::Duration timeout = absl::Seconds(settings.circuit_breaker_timeout().seconds()) +
                                   absl::Nanoseconds(settings.circuit_breaker_timeout().nanos());
    if (timeout > absl::ZeroDuration()) {
      options.recovery_after = timeout;
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
    : options_(options), clock_(std::move(clock)), ring_size_(ring_size) {}

int64_t FleetStats::BucketIndex(absl::Time now) const {
  absl::Duration remainder;
  int64_t index = absl::IDivDuration(now - absl::UnixEpoch(), options_.bucket_width, &remainder);
  if (remainder < absl::ZeroDuration()) {
    --index;  // floor, not truncation, before the epoch
  }
  return index;
}

FleetStats::BackendState& FleetStats::BackendLocked(const std::string& backend_id) {
  auto [it, inserted] = backends_.try_emplace(backend_id);
  if (inserted) {
    it->second.factor_steps = options_.health_factor_steps;
  }
  return it->second;
}

std::pair<uint64_t, uint64_t> FleetStats::WindowLocked(const BackendState& backend,
                                                       absl::Time now) const {
  const int64_t current = BucketIndex(now);
  uint64_t succeeded = 0;
  uint64_t completed = 0;
  for (const WindowBucket& bucket : backend.ring) {
    if (bucket.index > current - ring_size_ && bucket.index <= current) {
      succeeded += bucket.succeeded;
      completed += bucket.completed;
    }
  }
  return {succeeded, completed};
}

void FleetStats::EvaluateLocked(BackendState& backend, absl::Time now) {
  if (backend.verdict == Verdict::kUnhealthy && backend.last_traffic.has_value() &&
      now - *backend.last_traffic >= options_.recovery_after) {
    backend.verdict = Verdict::kHealthy;
    backend.ring.clear();
  }
  const auto [succeeded, completed] = WindowLocked(backend, now);
  const uint32_t steps = options_.health_factor_steps;
  if (completed == 0) {
    backend.factor_steps = steps;
    return;
  }
  if (completed < options_.min_requests) {
    return;
  }
  const double rate = static_cast<double>(succeeded) / static_cast<double>(completed);
  if (rate < options_.unhealthy_success_rate) {
    backend.verdict = Verdict::kUnhealthy;
  } else if (rate >= options_.healthy_success_rate || backend.verdict == Verdict::kUnknown) {
    backend.verdict = Verdict::kHealthy;
  }
  const double scaled = rate * steps;
  if (std::abs(scaled - backend.factor_steps) > kFactorDeadBandSteps) {
    backend.factor_steps =
        static_cast<uint32_t>(std::clamp<long>(std::lround(scaled), 1, static_cast<long>(steps)));
  }
}

double FleetStats::FactorLocked(const BackendState* backend) const {
  if (backend == nullptr) {
    return 1.0;
  }
  return static_cast<double>(backend->factor_steps) / options_.health_factor_steps;
}

std::optional<bool> FleetStats::ProbeLocked(const std::string& backend_id,
                                            const std::string& provider_id) const {
  std::optional<bool> verdict;
  if (auto it = backend_probe_.find(backend_id); it != backend_probe_.end()) {
    if (!it->second) {
      return false;
    }
    verdict = true;
  }
  if (auto it = provider_probe_.find(provider_id); it != provider_probe_.end()) {
    if (!it->second) {
      return false;
    }
    verdict = true;
  }
  return verdict;
}

v1::HealthStatus FleetStats::CombinedHealthLocked(const BackendState* backend,
                                                  const std::string& backend_id,
                                                  const std::string& provider_id) const {
  const std::optional<bool> probe = ProbeLocked(backend_id, provider_id);
  if (probe == false) {
    return v1::HEALTH_STATUS_UNHEALTHY;
  }
  const Verdict verdict = backend == nullptr ? Verdict::kUnknown : backend->verdict;
  if (verdict == Verdict::kUnhealthy) {
    return v1::HEALTH_STATUS_UNHEALTHY;
  }
  if (verdict == Verdict::kHealthy || probe == true) {
    return v1::HEALTH_STATUS_HEALTHY;
  }
  return v1::HEALTH_STATUS_UNKNOWN;
}

void FleetStats::PruneNodesLocked(absl::Time now) {
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    const NodeState& node = it->second;
    if (node.forgotten_at.has_value() && now - *node.forgotten_at >= options_.node_retention) {
      nodes_.erase(it++);
    } else {
      ++it;
    }
  }
}

void FleetStats::PruneBackendsLocked(absl::Time now) {
  for (auto it = backends_.begin(); it != backends_.end();) {
    const bool in_table = last_overlay_.has_value() && last_overlay_->contains(it->first);
    if (!in_table && now - it->second.last_report >= options_.backend_retention) {
      for (auto& [node_id, node] : nodes_) {
        node.in_flight.erase(it->first);
      }
      backends_.erase(it++);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<uint64_t> FleetStats::Fold(const v1::StreamLoadReportsRequest& report,
                                          std::string_view node_id) {
  // Validate everything first: a malformed report is never half folded.
  if (node_id.empty()) {
    return absl::InvalidArgumentError("load report without a node id");
  }
  if (report.sequence() == 0) {
    return absl::InvalidArgumentError("load report sequence must start at 1");
  }
  std::optional<absl::Time> interval_start;
  if (report.has_interval_start()) {
    const auto& start = report.interval_start();
    if (start.nanos() < 0 || start.nanos() > 999'999'999) {
      return absl::InvalidArgumentError("load report interval_start has nanos out of range");
    }
    interval_start = absl::FromUnixSeconds(start.seconds()) + absl::Nanoseconds(start.nanos());
  }
  for (const v1::BackendStats& stats : report.backend_stats()) {
    if (stats.backend_id().empty()) {
      return absl::InvalidArgumentError("load report has backend stats without a backend id");
    }
    for (const auto& [name, histogram] :
         {std::pair<const char*, const v1::LatencyHistogram*>{"latency", &stats.latency()},
          {"ttfb", &stats.ttfb()}}) {
      if (absl::Status status = ValidateLatencyHistogram(*histogram); !status.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "load report for backend ", stats.backend_id(), ": ", name, ": ", status.message()));
      }
    }
  }

  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  PruneNodesLocked(now);
  NodeState& node = nodes_[std::string(node_id)];
  if (report.sequence() <= node.last_sequence) {
    const bool restarted = interval_start.has_value() && node.last_interval_start.has_value() &&
                           *interval_start > *node.last_interval_start;
    if (!restarted) {
      ++duplicate_reports_;
      return node.last_sequence;
    }
    // A new process under the same node id: what the old one had in flight is gone with it.
    node.in_flight.clear();
  }
  node.last_sequence = report.sequence();
  if (interval_start.has_value()) {
    node.last_interval_start = interval_start;
  }
  node.forgotten_at.reset();
  ++folded_reports_;

  const int64_t bucket_index = BucketIndex(now);
  for (const v1::BackendStats& stats : report.backend_stats()) {
    BackendState& backend = BackendLocked(stats.backend_id());
    backend.issued += stats.issued();
    backend.succeeded += stats.succeeded();
    backend.failed_connect += stats.failed_connect();
    backend.failed_timeout += stats.failed_timeout();
    backend.failed_5xx += stats.failed_5xx();
    backend.failed_429 += stats.failed_429();
    backend.failed_stream_broken += stats.failed_stream_broken();
    backend.prompt_tokens += stats.prompt_tokens();
    backend.completion_tokens += stats.completion_tokens();
    backend.latency.Fold(stats.latency());
    backend.ttfb.Fold(stats.ttfb());
    if (stats.in_flight() > 0) {
      node.in_flight[stats.backend_id()] = stats.in_flight();
    } else {
      node.in_flight.erase(stats.backend_id());
    }
    const uint64_t completed = Completed(stats);
    if (completed > 0) {
      if (backend.ring.empty()) {
        backend.ring.resize(static_cast<size_t>(ring_size_));
      }
      WindowBucket& bucket =
          backend
              .ring[static_cast<size_t>(((bucket_index % ring_size_) + ring_size_) % ring_size_)];
      if (bucket.index != bucket_index) {
        bucket = WindowBucket{.index = bucket_index};
      }
      bucket.succeeded += stats.succeeded();
      bucket.completed += completed;
    }
    if (stats.issued() > 0 || completed > 0) {
      backend.last_traffic = now;
    }
    backend.last_report = now;
    EvaluateLocked(backend, now);
  }
  return node.last_sequence;
}

uint64_t FleetStats::AckedSequence(std::string_view node_id) const {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(strings::Absl(node_id));
  return it == nodes_.end() ? 0 : it->second.last_sequence;
}

void FleetStats::ForgetNode(std::string_view node_id) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  auto it = nodes_.find(strings::Absl(node_id));
  if (it == nodes_.end()) {
    return;
  }
  it->second.in_flight.clear();
  it->second.forgotten_at = now;
  PruneNodesLocked(now);
}

void FleetStats::SetProviderProbeHealth(std::string_view provider_id, std::optional<bool> healthy) {
  absl::MutexLock lock(&mu_);
  if (healthy.has_value()) {
    provider_probe_[std::string(provider_id)] = *healthy;
  } else {
    provider_probe_.erase(strings::Absl(provider_id));
  }
}

void FleetStats::SetBackendProbeHealth(std::string_view backend_id, std::optional<bool> healthy) {
  absl::MutexLock lock(&mu_);
  if (healthy.has_value()) {
    backend_probe_[std::string(backend_id)] = *healthy;
  } else {
    backend_probe_.erase(strings::Absl(backend_id));
  }
}

double FleetStats::EffectiveWeight(std::string_view backend_id, double configured_weight) {
  absl::MutexLock lock(&mu_);
  auto it = backends_.find(strings::Absl(backend_id));
  if (it == backends_.end()) {
    return configured_weight;
  }
  EvaluateLocked(it->second, clock_());
  return configured_weight * FactorLocked(&it->second);
}

bool FleetStats::Overlay(v1::RouteTable& table) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  absl::flat_hash_map<std::string, OverlayEntry> overlay;
  for (v1::CustomModel& model : *table.mutable_models()) {
    for (v1::Backend& backend : *model.mutable_backends()) {
      BackendState* state = nullptr;
      if (auto it = backends_.find(backend.id()); it != backends_.end()) {
        state = &it->second;
        EvaluateLocked(*state, now);
      }
      if (backend.health() != v1::HEALTH_STATUS_DRAINING) {
        backend.set_health(CombinedHealthLocked(state, backend.id(), backend.provider_id()));
      }
      backend.set_effective_weight(backend.weight() * FactorLocked(state));
      overlay[backend.id()] = OverlayEntry{.provider_id = backend.provider_id(),
                                           .health = backend.health(),
                                           .effective_weight = backend.effective_weight()};
    }
  }
  const bool changed = !last_overlay_.has_value() || *last_overlay_ != overlay;
  last_overlay_ = std::move(overlay);
  PruneBackendsLocked(now);
  return changed;
}

std::vector<BackendFleetStatus> FleetStats::Snapshot() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  absl::flat_hash_map<std::string, uint64_t> in_flight;
  for (const auto& [node_id, node] : nodes_) {
    for (const auto& [backend_id, value] : node.in_flight) {
      in_flight[backend_id] += value;
    }
  }
  std::vector<std::string> ids;
  ids.reserve(backends_.size());
  for (const auto& [id, state] : backends_) {
    ids.push_back(id);
  }
  if (last_overlay_.has_value()) {
    for (const auto& [id, entry] : *last_overlay_) {
      if (!backends_.contains(id)) {
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
    const OverlayEntry* overlaid = nullptr;
    if (last_overlay_.has_value()) {
      if (auto it = last_overlay_->find(id); it != last_overlay_->end()) {
        overlaid = &it->second;
        status.provider_id = overlaid->provider_id;
        status.effective_weight = overlaid->effective_weight;
      }
    }
    BackendState* state = nullptr;
    if (auto it = backends_.find(id); it != backends_.end()) {
      state = &it->second;
      EvaluateLocked(*state, now);
      status.issued = state->issued;
      status.succeeded = state->succeeded;
      status.failed_connect = state->failed_connect;
      status.failed_timeout = state->failed_timeout;
      status.failed_5xx = state->failed_5xx;
      status.failed_429 = state->failed_429;
      status.failed_stream_broken = state->failed_stream_broken;
      status.prompt_tokens = state->prompt_tokens;
      status.completion_tokens = state->completion_tokens;
      status.latency = Summarise(state->latency);
      status.ttfb = Summarise(state->ttfb);
      std::tie(status.recent_succeeded, status.recent_completed) = WindowLocked(*state, now);
      status.recent_success_rate = Ratio(status.recent_succeeded, status.recent_completed);
      status.lifetime_success_rate = Ratio(status.succeeded, status.succeeded + status.failed());
      switch (state->verdict) {
        case Verdict::kUnknown:
          status.fleet_health = v1::HEALTH_STATUS_UNKNOWN;
          break;
        case Verdict::kHealthy:
          status.fleet_health = v1::HEALTH_STATUS_HEALTHY;
          break;
        case Verdict::kUnhealthy:
          status.fleet_health = v1::HEALTH_STATUS_UNHEALTHY;
          break;
      }
    }
    if (auto it = in_flight.find(id); it != in_flight.end()) {
      status.in_flight = it->second;
    }
    status.probe_healthy = ProbeLocked(id, status.provider_id);
    status.health = CombinedHealthLocked(state, id, status.provider_id);
    status.health_factor = FactorLocked(state);
    out.push_back(std::move(status));
  }
  return out;
}

uint64_t FleetStats::duplicate_reports() const {
  absl::MutexLock lock(&mu_);
  return duplicate_reports_;
}

uint64_t FleetStats::folded_reports() const {
  absl::MutexLock lock(&mu_);
  return folded_reports_;
}

absl::Status FleetStats::RegisterMetrics(metrics::Registry& registry) {
  using metrics::GaugeSample;
  // One sample per backend from `value`.
  auto per_backend = [this](std::function<std::optional<double>(const BackendFleetStatus&)> value) {
    return [this, value = std::move(value)] {
      std::vector<GaugeSample> samples;
      for (const BackendFleetStatus& status : Snapshot()) {
        if (std::optional<double> v = value(status); v.has_value()) {
          samples.push_back(GaugeSample{{status.backend_id}, *v});
        }
      }
      return samples;
    };
  };
  auto count = [](uint64_t BackendFleetStatus::*field) {
    return [field](const BackendFleetStatus& status) -> std::optional<double> {
      return static_cast<double>(status.*field);
    };
  };

  struct FamilySpec {
    const char* name;
    const char* help;
    std::vector<std::string> labels;
    metrics::GaugeCallback callback;
  };
  std::vector<FamilySpec> families;
  families.push_back({"berry_cp_backend_requests_total",
                      "Attempts issued to the backend by every proxy since the control plane "
                      "started.",
                      {"backend"},
                      per_backend(count(&BackendFleetStatus::issued))});
  families.push_back({"berry_cp_backend_succeeded_total",
                      "Attempts on the backend that succeeded, fleet-wide.",
                      {"backend"},
                      per_backend(count(&BackendFleetStatus::succeeded))});
  families.push_back(
      {"berry_cp_backend_errors_total",
       "Failed attempts on the backend, fleet-wide, by class.",
       {"backend", "class"},
       [this] {
         std::vector<GaugeSample> samples;
         for (const BackendFleetStatus& s : Snapshot()) {
           for (const auto& [cls, value] :
                {std::pair<const char*, uint64_t>{"connect", s.failed_connect},
                 {"timeout", s.failed_timeout},
                 {"5xx", s.failed_5xx},
                 {"429", s.failed_429},
                 {"stream_broken", s.failed_stream_broken}}) {
             samples.push_back(GaugeSample{{s.backend_id, cls}, static_cast<double>(value)});
           }
         }
         return samples;
       }});
  families.push_back({"berry_cp_backend_tokens_total",
                      "Tokens reported by upstreams for the backend, fleet-wide, by kind.",
                      {"backend", "kind"},
                      [this] {
                        std::vector<GaugeSample> samples;
                        for (const BackendFleetStatus& s : Snapshot()) {
                          samples.push_back(GaugeSample{{s.backend_id, "prompt"},
                                                        static_cast<double>(s.prompt_tokens)});
                          samples.push_back(GaugeSample{{s.backend_id, "completion"},
                                                        static_cast<double>(s.completion_tokens)});
                        }
                        return samples;
                      }});
  families.push_back({"berry_cp_backend_in_flight",
                      "Attempts in flight on the backend, summed over connected proxies.",
                      {"backend"},
                      per_backend(count(&BackendFleetStatus::in_flight))});
  families.push_back(
      {"berry_cp_backend_success_rate",
       "Success rate of the backend over the recent window (drives fleet health).",
       {"backend"},
       per_backend([](const BackendFleetStatus& s) { return s.recent_success_rate; })});
  for (const auto& [name, help, summary] :
       {std::tuple<const char*, const char*, LatencySummary BackendFleetStatus::*>{
            "berry_cp_backend_latency_seconds",
            "Whole-request latency quantiles of the backend since start (histogram_quantile "
            "estimates).",
            &BackendFleetStatus::latency},
        {"berry_cp_backend_ttfb_seconds",
         "Time-to-first-byte quantiles of the backend since start (histogram_quantile "
         "estimates).",
         &BackendFleetStatus::ttfb}}) {
    families.push_back({name, help, {"backend", "quantile"}, [this, summary = summary] {
                          std::vector<GaugeSample> samples;
                          for (const BackendFleetStatus& s : Snapshot()) {
                            const LatencySummary& l = s.*summary;
                            for (const auto& [q, value] : {std::pair{0.5, l.p50}, {0.99, l.p99}}) {
                              if (value.has_value()) {
                                samples.push_back(GaugeSample{{s.backend_id, Fraction(q)}, *value});
                              }
                            }
                          }
                          return samples;
                        }});
  }
  families.push_back({"berry_cp_backend_healthy",
                      "1 unless the backend is UNHEALTHY (failing probes or a fleet outlier).",
                      {"backend"},
                      per_backend([](const BackendFleetStatus& s) -> std::optional<double> {
                        return s.health == v1::HEALTH_STATUS_UNHEALTHY ? 0.0 : 1.0;
                      })});
  families.push_back({"berry_cp_backend_health_factor",
                      "Quantised recent success rate that scales the backend's weight.",
                      {"backend"},
                      per_backend([](const BackendFleetStatus& s) -> std::optional<double> {
                        return s.health_factor;
                      })});
  for (FamilySpec& family : families) {
    // Totals are counters (so rate() works and promtool is happy); the rest are gauges.
    const bool total = std::string_view(family.name).ends_with("_total");
    absl::Status status =
        total ? registry.AddCallbackCounter(family.name, family.help, std::move(family.labels),
                                            std::move(family.callback))
              : registry.AddCallbackGauge(family.name, family.help, std::move(family.labels),
                                          std::move(family.callback));
    if (!status.ok()) {
      return status;
    }
  }
  if (absl::Status status = registry.AddCallbackCounter(
          "berry_cp_duplicate_reports_total",
          "Load reports ignored because their sequence was already folded (re-sent after a "
          "reconnect).",
          [this] { return static_cast<double>(duplicate_reports()); });
      !status.ok()) {
    return status;
  }
  return registry.AddCallbackCounter("berry_cp_load_reports_total",
                                     "Load reports folded into the fleet statistics.",
                                     [this] { return static_cast<double>(folded_reports()); });
}

}  // namespace berry::control_plane
