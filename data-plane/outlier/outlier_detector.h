// Passive outlier detection: every worker reports how each upstream attempt ended, and a backend
// that fails `circuit_breaker_failure_threshold` times in a row is ejected (taken out of picks
// through selection::BackendRuntime::EjectUntil) for
//
//     circuit_breaker_timeout × multiplier,   multiplier = times ejected in a row, capped at 10.
//
// It comes back when that time is over, or earlier through Restore() (a successful health
// probe). Only failures of the backend count: connect errors, timeouts, 500/502/503/504 (any 5xx),
// 408, 429 and streams broken after they started. Other 4xx are the client's fault and neither
// count nor reset the run; a success resets it.
//
// The multiplier decays: at the next ejection, if the backend has been back for at least one base
// timeout since its previous ejection ended (or since Restore()), the multiplier starts over at 1.
// So a backend that flaps back into failure right after returning is ejected for 2x, 3x, ... 10x
// the base, while one that served for a base timeout before failing again gets 1x.
//
// While a backend is ejected its failures are ignored: they come from requests that were already
// in flight, or from panic-mode picks, and must not stack a second ejection onto the first.
//
// Thread-safety: Record() and Restore() may be called from any worker concurrently; the counters
// are atomics, and an ejection is claimed by compare-and-swap on the backend's ejection deadline,
// so workers failing at once eject a backend exactly once. Times are monotonic nanoseconds, the
// clock the data plane passes to picks (selection::PickRequest::now_ns); it must not be negative.
//
// The counters (OutlierState) follow a backend from table to table by backend id, exactly like
// selection::RuntimeState, so a new route table neither forgets a run of failures nor an
// ejection's multiplier.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "berry/v1/route_table.pb.h"
#include "common/selection/runtime_state.h"
#include "common/selection/snapshot.h"

namespace berry::outlier {

// How one upstream attempt ended, as far as the backend's health is concerned.
enum class Outcome : uint8_t {
  kSuccess,
  kConnectError,
  kTimeout,
  kStatus5xx,
  kStatus429,
  kStatus408,
  kStreamBroken,
  kClientError,  // other 4xx: never counts
};

// The outcome of an upstream HTTP status: < 400 success; 408, 429; other 4xx client error;
// 5xx (and anything that is not a valid status) kStatus5xx.
Outcome OutcomeForStatus(int http_status);
// True for the outcomes that count towards an ejection.
bool IsFailure(Outcome outcome);
// "success", "connect_error", "timeout", "status_5xx", "status_429", "status_408",
// "stream_broken", "client_error": for logs and metric labels.
std::string_view OutcomeName(Outcome outcome);

// The ejection multiplier never goes above this.
inline constexpr uint32_t kMaxEjectionMultiplier = 10;
// What an unset (zero) setting in the table means, as documented in route_table.proto.
inline constexpr uint32_t kDefaultFailureThreshold = 5;
inline constexpr int64_t kDefaultBaseEjectionSeconds = 60;

// One backend's counters. Aligned to a cache line: neighbouring backends are updated by
// different workers.
class alignas(64) BackendOutlier {
 public:
  BackendOutlier() = default;
  BackendOutlier(const BackendOutlier&) = delete;
  BackendOutlier& operator=(const BackendOutlier&) = delete;

  // Failures since the last success or ejection.
  uint32_t consecutive_failures() const {
    return consecutive_failures_.load(std::memory_order_relaxed);
  }
  // Multiplier of the last ejection (0 = never ejected). Decay is applied lazily, at the next
  // ejection.
  uint32_t multiplier() const { return multiplier_.load(std::memory_order_relaxed); }
  // When the last ejection ends or ended (moved to the restore time by Restore()); 0 = never.
  int64_t ejection_end_ns() const { return ejection_end_ns_.load(std::memory_order_acquire); }

 private:
  friend class OutlierDetector;

  std::atomic<uint32_t> consecutive_failures_{0};
  std::atomic<uint32_t> multiplier_{0};
  // Also the claim token for an ejection: whoever moves it forward ejects.
  std::atomic<int64_t> ejection_end_ns_{0};
};

// The counters of every backend of one snapshot, indexed like selection::RuntimeState.
class OutlierState {
 public:
  // Backends (by id) that `previous` knew keep their counters; new ones start clean.
  static std::shared_ptr<const OutlierState> Create(const selection::Snapshot& snapshot,
                                                    const OutlierState* previous = nullptr);

  OutlierState(const OutlierState&) = delete;
  OutlierState& operator=(const OutlierState&) = delete;

  // By CompiledBackend::index(). Mutable through a const OutlierState: only atomics change.
  BackendOutlier& backend(uint32_t index) const { return *backends_[index]; }
  size_t size() const { return backends_.size(); }

 private:
  OutlierState() = default;

  std::vector<std::string> ids_;  // carry-over keys; the snapshot may be gone by then
  std::vector<std::shared_ptr<BackendOutlier>> backends_;
};

class OutlierDetector {
 public:
  // What one Record() did.
  struct Result {
    // True when this very call ejected the backend (exactly one call per ejection): log it and
    // set berry_backend_ejected{backend}.
    bool ejected = false;
    // Ejected: when the backend comes back (monotonic ns) and the multiplier applied.
    int64_t until_ns = 0;
    uint32_t multiplier = 0;
  };

  // A detector for `runtime`'s snapshot, with its settings (threshold and base timeout; zero
  // reads as the defaults above). Counters carry over from `previous` by backend id.
  // InvalidArgument for a negative base timeout, or one so long that 10x of it overflows.
  static absl::StatusOr<std::shared_ptr<const OutlierDetector>> Create(
      std::shared_ptr<const selection::RuntimeState> runtime,
      const OutlierDetector* previous = nullptr);

  OutlierDetector(const OutlierDetector&) = delete;
  OutlierDetector& operator=(const OutlierDetector&) = delete;

  // Records how one attempt on backend `backend_index` (CompiledBackend::index()) ended at
  // `now_ns`, ejecting the backend when this failure completes a run. Lock-free.
  Result Record(uint32_t backend_index, Outcome outcome, int64_t now_ns) const;

  // Brings an ejected backend back now (a successful health probe). Returns whether it was
  // ejected. The time it returns counts as the end of its ejection for the decay rule. Use this
  // rather than BackendRuntime::ClearEjection(): the detector would otherwise still consider the
  // backend ejected, and ignore its failures, until the original deadline.
  bool Restore(uint32_t backend_index, int64_t now_ns) const;

  uint32_t failure_threshold() const { return failure_threshold_; }
  int64_t base_ejection_ns() const { return base_ejection_ns_; }
  const OutlierState& state() const { return *state_; }
  const selection::RuntimeState& runtime() const { return *runtime_; }

 private:
  OutlierDetector() = default;

  std::shared_ptr<const selection::RuntimeState> runtime_;
  std::shared_ptr<const OutlierState> state_;
  uint32_t failure_threshold_ = kDefaultFailureThreshold;
  int64_t base_ejection_ns_ = 0;
};

}  // namespace berry::outlier
