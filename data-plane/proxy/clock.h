// The time the request path reads, injectable so tests can set it: the monotonic clock that
// durations, time to first byte, the part of a timeout already spent and ejection deadlines are
// measured on, and the wall clock that rate-limit windows follow. The I/O timers themselves
// (connection deadlines, the stream watchdog) run on the real steady clock.
//
// Threads: Clock::System() may be read from any thread; an implementation must be as well
// (one clock is shared by every worker).
#pragma once

#include <chrono>
#include <cstdint>

namespace berry::proxy {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::steady_clock::duration;

  virtual ~Clock() = default;
  // Monotonic.
  virtual TimePoint Now() const = 0;
  // Seconds since the Unix epoch, UTC.
  virtual int64_t UnixSeconds() const = 0;

  // Now() in nanoseconds since the monotonic clock's epoch: what ejection deadlines and picks use.
  int64_t MonotonicNs() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Now().time_since_epoch()).count();
  }
  double SecondsSince(TimePoint start) const {
    return std::chrono::duration<double>(Now() - start).count();
  }

  // std::chrono::steady_clock and std::chrono::system_clock.
  static const Clock& System();
};

}  // namespace berry::proxy
