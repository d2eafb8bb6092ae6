// What changes about a backend while a snapshot is in force: its ejection deadline (outlier
// detection), the requests in flight to it, and its time-to-first-byte EWMA. The data plane
// writes it, picks read it.
//
// Every worker shares one RuntimeState; all members are relaxed atomics, so any thread may update
// or read them without a lock (they steer picks, they do not need to be exact at an instant).
// A RuntimeState is laid out for one Snapshot, but the BackendRuntime objects follow a backend
// from table to table by backend id (Create(next, previous)): a new table — new effective
// weights every few seconds — forgets neither ejections nor latency, and a request that started
// under the old table decrements the same in-flight counter the new table reads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/selection/snapshot.h"

namespace berry::selection {

// Weight of a new time-to-first-byte sample in the EWMA. 0.2 lets the last ten or so samples
// dominate: quick enough to see a provider slow down, slow enough not to chase one outlier.
inline constexpr double kTtfbEwmaAlpha = 0.2;

// Per custom model: how far into the future any of its backends may be ejected (or cooling down).
// It only grows, so a pick at or after that time knows without a scan that no backend of the model
// is ejected.
class ModelRuntime {
 public:
  int64_t ejection_horizon_ns() const {
    return ejection_horizon_ns_.load(std::memory_order_relaxed);
  }

 private:
  friend class BackendRuntime;
  void Extend(int64_t until_ns);

  std::atomic<int64_t> ejection_horizon_ns_{0};
};

// One backend's changing state. Aligned to a cache line: in-flight counters of neighbouring
// backends are bumped by different workers.
class alignas(64) BackendRuntime {
 public:
  BackendRuntime() = default;  // RuntimeState::Create links it to its model
  BackendRuntime(const BackendRuntime&) = delete;
  BackendRuntime& operator=(const BackendRuntime&) = delete;

  // Outlier detection. Times are on the monotonic clock, in nanoseconds, the same clock the
  // data plane passes as PickRequest::now_ns.
  void EjectUntil(int64_t until_ns);
  // Back early, e.g. after a successful health probe.
  void ClearEjection() { ejected_until_ns_.store(0, std::memory_order_relaxed); }
  int64_t ejected_until_ns() const { return ejected_until_ns_.load(std::memory_order_relaxed); }
  bool EjectedAt(int64_t now_ns) const { return ejected_until_ns() > now_ns; }

  // Upstream 429 cooldown (the provider named a time to wait): a cooling-down backend is not a
  // candidate at all, panic or not. Same clock as ejections. Only moves forward; returns whether
  // it moved.
  bool CoolDownUntil(int64_t until_ns);
  int64_t cooldown_until_ns() const { return cooldown_until_ns_.load(std::memory_order_relaxed); }
  bool CoolingDownAt(int64_t now_ns) const { return cooldown_until_ns() > now_ns; }

  // Requests sent to this backend and not finished yet. Pair every BeginRequest with one
  // EndRequest on the same object.
  void BeginRequest() { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  void EndRequest();
  uint32_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  // Folds one time-to-first-byte sample into the EWMA (kTtfbEwmaAlpha); the first sample is
  // taken as is. Negative and non-finite samples are ignored.
  void RecordTtfb(double seconds);
  // Negative until the first sample.
  double ttfb_ewma_seconds() const { return ttfb_ewma_seconds_.load(std::memory_order_relaxed); }

  const ModelRuntime& model() const { return *model_; }

 private:
  friend class RuntimeState;

  std::atomic<int64_t> ejected_until_ns_{0};
  std::atomic<int64_t> cooldown_until_ns_{0};
  std::atomic<double> ttfb_ewma_seconds_{-1.0};
  std::atomic<uint32_t> in_flight_{0};
  std::shared_ptr<ModelRuntime> model_;
};

class RuntimeState {
 public:
  // State for `snapshot`. Backends (by id) and models (by id) that `previous` already knew keep
  // their runtime objects; new ones start clean (not ejected, idle, no latency sample).
  static std::shared_ptr<const RuntimeState> Create(std::shared_ptr<const Snapshot> snapshot,
                                                    const RuntimeState* previous = nullptr);

  RuntimeState(const RuntimeState&) = delete;
  RuntimeState& operator=(const RuntimeState&) = delete;

  const Snapshot& snapshot() const { return *snapshot_; }
  const std::shared_ptr<const Snapshot>& shared_snapshot() const { return snapshot_; }

  // By CompiledBackend::index(). The state is mutable through a const RuntimeState: only the
  // atomics change, never the layout.
  BackendRuntime& backend(uint32_t index) const { return *backends_[index]; }
  BackendRuntime& backend(const CompiledBackend& backend) const {
    return *backends_[backend.index()];
  }
  // By CompiledModel::index().
  const ModelRuntime& model(uint32_t index) const { return *models_[index]; }

 private:
  RuntimeState() = default;

  std::shared_ptr<const Snapshot> snapshot_;
  std::vector<std::shared_ptr<ModelRuntime>> models_;
  // Ownership, shared with the states before and after this one. Backends new in this state
  // sit in one contiguous block (aliasing pointers keep it alive), so a scan over a model's
  // backends walks consecutive cache lines.
  std::vector<std::shared_ptr<BackendRuntime>> owners_;
  // The same objects as owners_, one load away for picks.
  std::vector<BackendRuntime*> backends_;
};

}  // namespace berry::selection
