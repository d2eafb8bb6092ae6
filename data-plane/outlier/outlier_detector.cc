#include "data-plane/outlier/outlier_detector.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace berry::outlier {
namespace {

constexpr int64_t kNanosPerSecond = 1'000'000'000;
constexpr int64_t kMaxInt64 = std::numeric_limits<int64_t>::max();

int64_t SaturatingAdd(int64_t a, int64_t b) { return a > kMaxInt64 - b ? kMaxInt64 : a + b; }

}  // namespace

Outcome OutcomeForStatus(int http_status) {
  if (http_status >= 100 && http_status < 400) {
    return Outcome::kSuccess;
  }
  if (http_status == 408) {
    return Outcome::kStatus408;
  }
  if (http_status == 429) {
    return Outcome::kStatus429;
  }
  if (http_status >= 400 && http_status < 500) {
    return Outcome::kClientError;
  }
  return Outcome::kStatus5xx;
}

bool IsFailure(Outcome outcome) {
  return outcome != Outcome::kSuccess && outcome != Outcome::kClientError;
}

std::string_view OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kSuccess:
      return "success";
    case Outcome::kConnectError:
      return "connect_error";
    case Outcome::kTimeout:
      return "timeout";
    case Outcome::kStatus5xx:
      return "status_5xx";
    case Outcome::kStatus429:
      return "status_429";
    case Outcome::kStatus408:
      return "status_408";
    case Outcome::kStreamBroken:
      return "stream_broken";
    case Outcome::kClientError:
      return "client_error";
  }
  return "unknown";
}

std::shared_ptr<const OutlierState> OutlierState::Create(const selection::Snapshot& snapshot,
                                                         const OutlierState* previous) {
  // Keys point into previous->ids_, which outlives this function.
  absl::flat_hash_map<std::string_view, std::shared_ptr<BackendOutlier>> old;
  if (previous != nullptr) {
    for (size_t i = 0; i < previous->ids_.size(); ++i) {
      old.emplace(previous->ids_[i], previous->backends_[i]);
    }
  }
  std::shared_ptr<OutlierState> state(new OutlierState());
  const auto backends = snapshot.backends();
  state->ids_.reserve(backends.size());
  state->backends_.reserve(backends.size());
  for (const selection::CompiledBackend& backend : backends) {
    state->ids_.push_back(backend.id());
    if (const auto it = old.find(backend.id()); it != old.end()) {
      state->backends_.push_back(it->second);
    } else {
      state->backends_.push_back(std::make_shared<BackendOutlier>());
    }
  }
  return state;
}

absl::StatusOr<std::shared_ptr<const OutlierDetector>> OutlierDetector::Create(
    std::shared_ptr<const selection::RuntimeState> runtime, const OutlierDetector* previous) {
  const berry::v1::Settings& settings = runtime->snapshot().table().settings();
  const google::protobuf::Duration& timeout = settings.circuit_breaker_timeout();
  if (timeout.seconds() < 0 || timeout.nanos() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("circuit_breaker_timeout must not be negative, got ", timeout.seconds(), "s"));
  }
  // 10x the base, in nanoseconds, must fit an int64.
  constexpr int64_t kMaxSeconds = kMaxInt64 / kNanosPerSecond / kMaxEjectionMultiplier - 1;
  if (timeout.seconds() > kMaxSeconds) {
    return absl::InvalidArgumentError(absl::StrCat("circuit_breaker_timeout of ", timeout.seconds(),
                                                   "s is too long (at most ", kMaxSeconds, "s)"));
  }

  std::shared_ptr<OutlierDetector> detector(new OutlierDetector());
  detector->failure_threshold_ = settings.circuit_breaker_failure_threshold() == 0
                                     ? kDefaultFailureThreshold
                                     : settings.circuit_breaker_failure_threshold();
  const int64_t base_ns = timeout.seconds() * kNanosPerSecond + timeout.nanos();
  detector->base_ejection_ns_ =
      base_ns == 0 ? kDefaultBaseEjectionSeconds * kNanosPerSecond : base_ns;
  detector->state_ = OutlierState::Create(runtime->snapshot(),
                                          previous != nullptr ? previous->state_.get() : nullptr);
  detector->runtime_ = std::move(runtime);
  return detector;
}

OutlierDetector::Result OutlierDetector::Record(uint32_t backend_index, Outcome outcome,
                                                int64_t now_ns) const {
  BackendOutlier& backend = state_->backend(backend_index);
  if (outcome == Outcome::kClientError) {
    return {};
  }
  if (outcome == Outcome::kSuccess) {
    // A store only when needed: successes are the common case, and an unconditional store
    // would bounce the cache line between workers.
    if (backend.consecutive_failures_.load(std::memory_order_relaxed) != 0) {
      backend.consecutive_failures_.store(0, std::memory_order_relaxed);
    }
    return {};
  }

  int64_t end = backend.ejection_end_ns_.load(std::memory_order_acquire);
  if (end > now_ns) {
    return {};  // already ejected: this failure was in flight or a panic pick
  }
  const uint32_t failures =
      backend.consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (failures < failure_threshold_) {
    return {};
  }

  uint32_t previous = backend.multiplier_.load(std::memory_order_relaxed);
  // Decay: back for a full base timeout since the last ejection ended means a fresh start.
  if (previous != 0 && now_ns - end >= base_ejection_ns_) {
    previous = 0;
  }
  const uint32_t multiplier = std::min(previous + 1, kMaxEjectionMultiplier);
  const int64_t until = SaturatingAdd(now_ns, base_ejection_ns_ * multiplier);
  // The claim: of the workers that reach the threshold at once, exactly one moves the deadline
  // from the value all of them read.
  if (!backend.ejection_end_ns_.compare_exchange_strong(end, until, std::memory_order_acq_rel)) {
    return {};
  }
  backend.consecutive_failures_.store(0, std::memory_order_relaxed);
  backend.multiplier_.store(multiplier, std::memory_order_relaxed);
  runtime_->backend(backend_index).EjectUntil(until);
  return {.ejected = true, .until_ns = until, .multiplier = multiplier};
}

bool OutlierDetector::Restore(uint32_t backend_index, int64_t now_ns) const {
  BackendOutlier& backend = state_->backend(backend_index);
  int64_t end = backend.ejection_end_ns_.load(std::memory_order_acquire);
  while (end > now_ns) {
    if (backend.ejection_end_ns_.compare_exchange_weak(end, now_ns, std::memory_order_acq_rel)) {
      backend.consecutive_failures_.store(0, std::memory_order_relaxed);
      runtime_->backend(backend_index).ClearEjection();
      return true;
    }
  }
  return false;
}

}  // namespace berry::outlier
