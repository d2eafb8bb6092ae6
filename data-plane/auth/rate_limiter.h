// Per-client request limits: up to three fixed windows per client (minute, hour, day; only the
// ones the client's RateLimit sets), counted by every worker thread together.
//
// Windows are fixed and aligned to the Unix epoch: the minute window is [k*60, (k+1)*60) seconds,
// the hour window [k*3600, ...), the day window is the UTC day. Fixed windows cost one 64-bit
// atomic each and no per-request allocation, at a known price: a client may spend a full window's
// quota just before a boundary and another just after it, so up to 2x the limit can pass within
// one window's length straddling a boundary.
//
// Thread-safety: Check() is lock-free and may be called from any thread concurrently. A window's
// id and its count share one atomic word, advanced by compare-and-swap, so concurrent requests
// never admit more than the limit. A request is counted in every window it passes; when a later
// window refuses it, the windows already counted for it are given back, so a refused request
// consumes no quota. (Under contention a request may see a count that is about to be given back
// and be refused: the limiter errs on the side of refusing, never admitting.)
//
// A RateLimiter is laid out for one ClientDirectory; the counters follow a client from table to
// table by client id (Create(directory, previous)), so publishing a new table does not reset
// anybody's quota, and a client removed from the table loses its counters.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data-plane/auth/client_directory.h"

namespace berry::auth {

enum class Window : uint8_t {
  kNone,  // no limit applies
  kMinute,
  kHour,
  kDay,
};

// "minute", "hour", "day" ("none" for kNone): for error messages and metrics labels.
std::string_view WindowName(Window window);
// 60, 3600, 86400 (0 for kNone).
int64_t WindowSeconds(Window window);

// What Check() decided, with what the HTTP edge needs for 429 and x-ratelimit-* headers.
struct Decision {
  bool allowed = true;
  // Refused: the window that refused. Allowed: the window with the fewest requests left after
  // this one (ties go to the shorter window); kNone when the client has no limit at all.
  Window window = Window::kNone;
  // The limit of `window` (0 for kNone).
  uint64_t limit = 0;
  // Allowed: requests left in `window` after this one. Refused: 0.
  uint64_t remaining = 0;
  // Seconds until `window` starts over, at least 1: the Retry-After value when refused,
  // x-ratelimit-reset-requests when allowed. 0 for kNone.
  int64_t reset_after_seconds = 0;
};

class RateLimiter {
 public:
  // Counters for every client of `directory`. Clients (by id) that `previous` already counted
  // keep their counts, measured against the limits `directory` sets now; new clients start at
  // zero. `previous` may be destroyed afterwards, and so may its directory.
  static std::shared_ptr<RateLimiter> Create(const ClientDirectory& directory,
                                             const RateLimiter* previous = nullptr);

  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Counts one request of `client` at `now_unix_seconds` (wall clock, injected) if every window
  // it has still has room. `client` must come from the directory this limiter was created for
  // (or be the anonymous client of an open gateway, which is never limited); anything else is a
  // wiring bug and aborts. Lock-free; allocates nothing.
  Decision Check(const Client& client, int64_t now_unix_seconds) const;

  // Requests counted for `client` in the `window` that contains `now_unix_seconds` (0 when the
  // client has no such window). For tests and introspection.
  uint64_t Count(const Client& client, Window window, int64_t now_unix_seconds) const;

 private:
  static constexpr size_t kWindows = 3;  // minute, hour, day

  // One word per window: window id (now / window length) in the high 32 bits, requests counted
  // in it in the low 32. A cache line per client: different clients are counted by different
  // workers.
  struct alignas(64) Counters {
    std::array<std::atomic<uint64_t>, kWindows> words{};
  };

  struct Slot {
    const Client* client = nullptr;           // identity check only, never dereferenced
    std::string id;                           // carry-over key (the directory may be gone by then)
    std::array<uint32_t, kWindows> limits{};  // 0 = none
    bool limited = false;
    std::shared_ptr<Counters> counters;
  };

  RateLimiter() = default;
  const Slot& SlotFor(const Client& client) const;

  std::vector<Slot> slots_;  // by Client::index()
};

}  // namespace berry::auth
