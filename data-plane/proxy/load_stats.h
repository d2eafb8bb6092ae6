// Per-backend load counters of one proxy, for the load reports a managed proxy sends the control
// plane (DESIGN.md: issued, succeeded, failed by class, latency and time-to-first-byte
// histograms, tokens). Cumulative since the proxy started; the reporter turns them into deltas.
// The histograms are Berry's one histogram type (metrics::Histogram) over its one bucket list.
//
// Threads: every worker updates them (counters with relaxed atomics; a histogram observation
// takes that histogram's own mutex); the reporter reads them from its own thread. Like
// selection::RuntimeState, the per-backend objects follow a backend from table to table by id, so a
// table change neither loses nor double-counts anything.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/load_report/attempt_counts.h"
#include "common/metrics/metrics.h"
#include "common/selection/snapshot.h"
#include "data-plane/outlier/outlier_detector.h"

namespace berry::proxy {

// Non-cumulative counts of a latency histogram over metrics::kLatencyBuckets (the last is +Inf).
using LatencyCounts = std::array<uint64_t, metrics::kLatencyBuckets.size() + 1>;

class alignas(64) BackendLoad {
 public:
  // What a report needs, read at one moment.
  struct Totals : load_report::AttemptCounts {
    LatencyCounts latency_counts{};
    double latency_sum = 0;
    LatencyCounts ttfb_counts{};
    double ttfb_sum = 0;
  };

  void RecordIssued() { issued_.fetch_add(1, std::memory_order_relaxed); }
  // A finished attempt. Client errors count as completed (the backend answered).
  void RecordOutcome(outlier::Outcome outcome);
  void ObserveLatency(double seconds) { latency_.Observe(seconds); }
  void ObserveTtfb(double seconds) { ttfb_.Observe(seconds); }
  void AddTokens(uint64_t prompt, uint64_t completion);
  Totals Read() const;

  // An upstream 429 named a time to wait: the backend cools down until `until_ns` (monotonic).
  // Only what this proxy saw itself, for its reports (a cooldown pushed by the control plane is
  // not reported back). Only moves forward.
  void NoteCooldown(int64_t until_ns);
  int64_t cooldown_until_ns() const { return cooldown_until_ns_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> issued_{0};
  std::atomic<uint64_t> succeeded_{0};
  std::atomic<uint64_t> failed_connect_{0};
  std::atomic<uint64_t> failed_timeout_{0};
  std::atomic<uint64_t> failed_5xx_{0};
  std::atomic<uint64_t> failed_429_{0};
  std::atomic<uint64_t> failed_stream_broken_{0};
  std::atomic<uint64_t> prompt_tokens_{0};
  std::atomic<uint64_t> completion_tokens_{0};
  std::atomic<int64_t> cooldown_until_ns_{0};
  metrics::Histogram latency_{metrics::LatencyBuckets()};
  metrics::Histogram ttfb_{metrics::LatencyBuckets()};
};

// Lets the request path ask the load reporter for a report now, instead of at the next interval:
// a backend was just ejected or cooled down, which the control plane spreads to the fleet. Rare
// (an ejection, a 429 with a wait), so a mutex is fine here.
class ReportNudge {
 public:
  void Nudge() {
    absl::MutexLock lock(&mu_);
    ++count_;
  }
  // Waits until the count differs from `seen` or `timeout` passes; returns the count.
  uint64_t Wait(uint64_t seen, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ != seen; };
    mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
    return count_;
  }
  uint64_t count() const {
    absl::MutexLock lock(&mu_);
    return count_;
  }

 private:
  mutable absl::Mutex mu_;
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

class LoadStats {
 public:
  // Counters for `snapshot`'s backends; those `previous` knew (by id) keep theirs.
  static std::shared_ptr<const LoadStats> Create(const selection::Snapshot& snapshot,
                                                 const LoadStats* previous = nullptr);

  // By CompiledBackend::index(). Mutable through const: only atomics change.
  BackendLoad& backend(uint32_t index) const { return *backends_[index]; }
  size_t size() const { return backends_.size(); }
  const std::string& id(uint32_t index) const { return ids_[index]; }
  // Shared by every LoadStats of one proxy (carried over by Create).
  ReportNudge& nudge() const { return *nudge_; }

 private:
  std::vector<std::string> ids_;
  std::vector<std::shared_ptr<BackendLoad>> backends_;
  std::shared_ptr<ReportNudge> nudge_;
};

}  // namespace berry::proxy
