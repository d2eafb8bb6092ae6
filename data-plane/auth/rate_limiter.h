// Per-client request and token limits: up to three fixed windows per client and unit (minute,
// hour, day of requests; the same of tokens; only the ones the client's RateLimit sets), counted
// by every worker thread together.
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
// Tokens are known only once the upstream answered, so they are reserved at admission
// (ReserveTokens: an estimate, refused when it does not fit a window) and settled afterwards
// (SettleTokens: the unused part goes back to the window it was counted in, while that window
// lasts; tokens beyond the reservation are charged to the current window even past its limit,
// which later reservations then wait out). A client without token limits costs one branch.
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
  // Refused only because this proxy's lease is empty while the control plane has not said the
  // fleet-wide window is spent (managed mode): an ask for credit is on its way, so the request
  // may wait for the answer instead of being refused (FleetStatus::answers).
  bool credit_pending = false;
};

// Tokens a request holds between ReserveTokens and SettleTokens: how many, and the window each
// limit counted them in. Small and trivially copyable: it lives in the request's Exchange. The
// same record keeps where a request was counted (reserved 1) for Release.
struct TokenHold {
  uint64_t reserved = 0;  // 0 = nothing held (no token limit, or not reserved yet)
  // Per token window (minute, hour, day): the window id (standalone) or lease tag (managed)
  // the reservation was counted in.
  std::array<uint32_t, 3> tags{};
  // Managed only: which limits the reservation took from the fallback share (bit i = window i).
  uint8_t fallback_mask = 0;
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
  // When allowed and `held` is given, records there where the request was counted (reserved 1).
  Decision Check(const Client& client, int64_t now_unix_seconds, TokenHold* held = nullptr) const;
  // Gives back the request `held` counted (Check's record), unless its windows have ended: a
  // request refused later by its token limit was never made.
  void Release(const Client& client, const TokenHold& held) const;

  // Requests counted for `client` in the `window` that contains `now_unix_seconds` (0 when the
  // client has no such window). For tests and introspection.
  uint64_t Count(const Client& client, Window window, int64_t now_unix_seconds) const;

  // True when `client` has a token limit (the request path reserves only then).
  bool LimitsTokens(const Client& client) const;
  // Counts `tokens` of `client` in every token window if each still has room for all of them;
  // fills `hold` when allowed. The Decision is about tokens (limit and remaining in tokens;
  // remaining = what the window has left, also when refused). Lock-free; allocates nothing.
  Decision ReserveTokens(const Client& client, uint64_t tokens, int64_t now_unix_seconds,
                         TokenHold& hold) const;
  // Replaces the reservation `hold` by `used` tokens: gives the difference back to the windows
  // the reservation was counted in (if they have not ended), or charges the excess to the
  // windows of `now_unix_seconds`, beyond their limit if need be. `used` 0 is a full refund.
  void SettleTokens(const Client& client, const TokenHold& hold, uint64_t used,
                    int64_t now_unix_seconds) const;
  // Tokens counted for `client` in the token `window` containing `now_unix_seconds` (tests).
  uint64_t TokenCount(const Client& client, Window window, int64_t now_unix_seconds) const;

 private:
  static constexpr size_t kWindows = 3;  // minute, hour, day

  using Words = std::array<std::atomic<uint64_t>, kWindows>;
  using Limits = std::array<uint32_t, kWindows>;

  // One word per window: window id (now / window length) in the high 32 bits, requests (tokens)
  // counted in it in the low 32. A cache line per client: different clients are counted by
  // different workers.
  struct alignas(64) Counters {
    Words words{};
    Words token_words{};
  };

  struct Slot {
    const Client* client = nullptr;  // identity check only, never dereferenced
    std::string id;                  // carry-over key (the directory may be gone by then)
    Limits limits{};                 // 0 = none
    Limits token_limits{};           // 0 = none
    bool limited = false;
    bool token_limited = false;
    std::shared_ptr<Counters> counters;
  };

  RateLimiter() = default;
  const Slot& SlotFor(const Client& client) const;
  // Counts `amount` in every window of `words` that has a limit, if each has room for it; on a
  // refusal gives back what earlier windows took. Window ids counted in go to `counted_in`.
  static Decision Take(Words& words, const Limits& limits, uint64_t amount, int64_t now,
                       std::array<uint32_t, kWindows>& counted_in);

  // What `words` counted in `window` at `now_unix_seconds` (0 for a window without a limit).
  static uint64_t CountIn(const Words& words, const Limits& limits, Window window,
                          int64_t now_unix_seconds);

  std::vector<Slot> slots_;  // by Client::index()
};

}  // namespace berry::auth
