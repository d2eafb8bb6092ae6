// A proxy::Clock that moves only when a test moves it. Both its monotonic and its wall time
// start where the test puts them and advance together on Advance().
//
// Threads: any; the proxy's workers read it while the test thread advances it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "data-plane/proxy/clock.h"

namespace berry::test_support {

class ManualClock final : public proxy::Clock {
 public:
  // Monotonic time starts at 1000 s past the steady clock's epoch (not 0, which some code reads
  // as "never").
  explicit ManualClock(int64_t unix_seconds) : unix_ns_(unix_seconds * kNsPerSecond) {}

  TimePoint Now() const override {
    return TimePoint(std::chrono::nanoseconds(steady_ns_.load(std::memory_order_relaxed)));
  }
  int64_t UnixSeconds() const override {
    return unix_ns_.load(std::memory_order_relaxed) / kNsPerSecond;
  }

  void Advance(std::chrono::nanoseconds by) {
    steady_ns_.fetch_add(by.count(), std::memory_order_relaxed);
    unix_ns_.fetch_add(by.count(), std::memory_order_relaxed);
  }

 private:
  static constexpr int64_t kNsPerSecond = 1'000'000'000;
  std::atomic<int64_t> steady_ns_{1000 * kNsPerSecond};
  std::atomic<int64_t> unix_ns_;
};

}  // namespace berry::test_support
