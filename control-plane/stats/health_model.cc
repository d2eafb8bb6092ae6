#include "control-plane/stats/health_model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/string_view.h"
#include "common/strings/views.h"

namespace berry::control_plane {
namespace {

// The published factor moves only when the rate is more than this many steps away from it.
constexpr double kFactorDeadBandSteps = 0.75;
}  // namespace

HealthModel::HealthModel(const FleetStatsOptions& options, int64_t ring_size)
    : options_(options), ring_size_(ring_size) {}

int64_t HealthModel::BucketIndex(absl::Time now) const {
  absl::Duration remainder;
  int64_t index = absl::IDivDuration(now - absl::UnixEpoch(), options_.bucket_width, &remainder);
  if (remainder < absl::ZeroDuration()) {
    --index;  // floor, not truncation, before the epoch
  }
  return index;
}

std::pair<uint64_t, uint64_t> HealthModel::WindowOf(const BackendHealth& backend,
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

void HealthModel::EvaluateOne(BackendHealth& backend, absl::Time now) {
  if (backend.verdict == Verdict::kUnhealthy && backend.last_traffic.has_value() &&
      now - *backend.last_traffic >= options_.recovery_after) {
    backend.verdict = Verdict::kHealthy;
    backend.ring.clear();
  }
  const auto [succeeded, completed] = WindowOf(backend, now);
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

void HealthModel::Record(const std::string& backend_id, uint64_t succeeded, uint64_t completed,
                         bool traffic, absl::Time now) {
  auto [it, inserted] = backends_.try_emplace(backend_id);
  BackendHealth& backend = it->second;
  if (inserted) {
    backend.factor_steps = options_.health_factor_steps;
  }
  if (completed > 0) {
    if (backend.ring.empty()) {
      backend.ring.resize(static_cast<size_t>(ring_size_));
    }
    const int64_t bucket_index = BucketIndex(now);
    WindowBucket& bucket =
        backend.ring[static_cast<size_t>(((bucket_index % ring_size_) + ring_size_) % ring_size_)];
    if (bucket.index != bucket_index) {
      bucket = WindowBucket{.index = bucket_index};
    }
    bucket.succeeded += succeeded;
    bucket.completed += completed;
  }
  if (traffic) {
    backend.last_traffic = now;
  }
  EvaluateOne(backend, now);
}

void HealthModel::Evaluate(std::string_view backend_id, absl::Time now) {
  if (auto it = backends_.find(strings::Absl(backend_id)); it != backends_.end()) {
    EvaluateOne(it->second, now);
  }
}

std::pair<uint64_t, uint64_t> HealthModel::Window(std::string_view backend_id,
                                                  absl::Time now) const {
  auto it = backends_.find(strings::Absl(backend_id));
  return it == backends_.end() ? std::pair<uint64_t, uint64_t>{0, 0} : WindowOf(it->second, now);
}

v1::HealthStatus HealthModel::FleetVerdict(std::string_view backend_id) const {
  auto it = backends_.find(strings::Absl(backend_id));
  if (it == backends_.end()) {
    return v1::HEALTH_STATUS_UNKNOWN;
  }
  switch (it->second.verdict) {
    case Verdict::kUnknown:
      return v1::HEALTH_STATUS_UNKNOWN;
    case Verdict::kHealthy:
      return v1::HEALTH_STATUS_HEALTHY;
    case Verdict::kUnhealthy:
      return v1::HEALTH_STATUS_UNHEALTHY;
  }
  return v1::HEALTH_STATUS_UNKNOWN;
}

double HealthModel::Factor(std::string_view backend_id) const {
  auto it = backends_.find(strings::Absl(backend_id));
  if (it == backends_.end()) {
    return 1.0;
  }
  return static_cast<double>(it->second.factor_steps) / options_.health_factor_steps;
}

bool HealthModel::Tracks(std::string_view backend_id) const {
  return backends_.contains(strings::Absl(backend_id));
}

void HealthModel::Forget(std::string_view backend_id) {
  backends_.erase(strings::Absl(backend_id));
}

void HealthModel::SetProviderProbe(std::string_view provider_id, std::optional<bool> healthy) {
  if (healthy.has_value()) {
    provider_probe_[std::string(provider_id)] = *healthy;
  } else {
    provider_probe_.erase(strings::Absl(provider_id));
  }
}

void HealthModel::SetBackendProbe(std::string_view backend_id, std::optional<bool> healthy) {
  if (healthy.has_value()) {
    backend_probe_[std::string(backend_id)] = *healthy;
  } else {
    backend_probe_.erase(strings::Absl(backend_id));
  }
}

std::optional<bool> HealthModel::Probe(std::string_view backend_id,
                                       std::string_view provider_id) const {
  std::optional<bool> verdict;
  if (auto it = backend_probe_.find(strings::Absl(backend_id)); it != backend_probe_.end()) {
    if (!it->second) {
      return false;
    }
    verdict = true;
  }
  if (auto it = provider_probe_.find(strings::Absl(provider_id)); it != provider_probe_.end()) {
    if (!it->second) {
      return false;
    }
    verdict = true;
  }
  return verdict;
}

v1::HealthStatus HealthModel::Combined(std::string_view backend_id,
                                       std::string_view provider_id) const {
  const std::optional<bool> probe = Probe(backend_id, provider_id);
  if (probe == false) {
    return v1::HEALTH_STATUS_UNHEALTHY;
  }
  const v1::HealthStatus verdict = FleetVerdict(backend_id);
  if (verdict == v1::HEALTH_STATUS_UNHEALTHY) {
    return v1::HEALTH_STATUS_UNHEALTHY;
  }
  if (verdict == v1::HEALTH_STATUS_HEALTHY || probe == true) {
    return v1::HEALTH_STATUS_HEALTHY;
  }
  return v1::HEALTH_STATUS_UNKNOWN;
}

}  // namespace berry::control_plane
