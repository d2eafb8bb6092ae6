// A managed proxy's side of fleet-wide per-user limits (README.md, "Fleet-wide rate limits").
//
// FleetLeases (one per route generation, like auth::RateLimiter) holds, per limited client and
// limit, a LeaseAccount (common/quota/account.h): credit the control plane granted, spent on the
// request path with one compare-and-swap and no round trip. When the lease has no credit the
// request is refused (429) — unless the fleet is "away" (no control plane stream, no answer to an
// ask for a while, or a control plane still rebuilding its ledger): then the proxy admits on its
// fallback share, ceil(limit / last known fleet size) per window, counted in a local sliding
// ledger (under a mutex: the degraded path only).
//
// Token limits (QUOTA_WINDOW_TOKENS_*) are leased the same way, in tokens: ReserveTokens spends
// an estimate from the lease at admission, SettleTokens gives the unused part back to the lease
// it came from (or, if that lease has ended, to its ledger slice with the next report) or charges
// the excess to the current lease, as debt when it has not enough (the next grant pays it).
//
// QuotaClient is what the load reporter calls: it builds the quota account to send (returns,
// demand, asks), applies the grants that come back, and flips FleetStatus::away.
//
// Threads: FleetLeases::Admit from any worker thread; QuotaClient from the reporter's threads
// (its own mutex); FleetStatus is atomics.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "berry/v1/discovery.pb.h"
#include "common/quota/account.h"
#include "common/quota/ledger.h"
#include "data-plane/auth/client_directory.h"
#include "data-plane/auth/rate_limiter.h"

namespace berry::fleet {

// Shared by the request path and the reporter.
struct FleetStatus {
  // True while requests without lease credit fall back to the local share. A proxy starts away
  // (it has not heard from the control plane yet) with a fleet size of 0 (= the whole limit).
  std::atomic<bool> away{true};
  std::atomic<int> fleet_size{0};
  // Set by the request path when a lease ran dry; the reporter clears it when it collects.
  std::atomic<bool> wake_requested{false};
  // Wakes the reporter (set once before serving; called at most once per collection).
  std::function<void()> wake;
  // Requests admitted on the fallback share (a counter for /metrics).
  std::atomic<uint64_t> fallback_admitted{0};

  void RequestWake() {
    if (!wake_requested.exchange(true) && wake) {
      wake();
    }
  }
};

// One limit of one client.
struct LimitSlot {
  LimitSlot(uint64_t limit, v1::QuotaWindow window, int64_t window_ns)
      : limit(limit), window(window), window_ns(window_ns), account(window_ns) {}

  const uint64_t limit;
  const v1::QuotaWindow window;
  const int64_t window_ns;
  quota::LeaseAccount account;
  // From the last grant: no credit before this monotonic time (0 = unknown / some left).
  std::atomic<int64_t> no_credit_until_ns{0};

  absl::Mutex fallback_mu;
  std::unique_ptr<quota::SlidingLedger> fallback ABSL_GUARDED_BY(fallback_mu);
  int fallback_fleet_size ABSL_GUARDED_BY(fallback_mu) = -1;
};

class FleetLeases {
 public:
  // Slots for every limited client of `directory`; a client (by id) whose limit is unchanged
  // keeps its slot from `previous` (lease, fallback count and all).
  static std::shared_ptr<FleetLeases> Create(const auth::ClientDirectory& directory,
                                             const FleetLeases* previous,
                                             std::shared_ptr<FleetStatus> status);

  // Admits one request of `client` at monotonic `now_ns` if every limit it has has credit (a
  // lease, or the fallback share while away). The Decision's fields are those of the limit that
  // refused (remaining 0, reset = when the control plane said credit frees up, else 1 s).
  auth::Decision Admit(const auth::Client& client, int64_t now_ns) const;

  // True when `client` has a token limit.
  bool LimitsTokens(const auth::Client& client) const;
  // Reserves `tokens` of `client` from every token limit's lease (all or nothing; the fallback
  // share while away) and fills `hold`; a refusal's Decision is like Admit's, in tokens.
  auth::Decision ReserveTokens(const auth::Client& client, uint64_t tokens, int64_t now_ns,
                               auth::TokenHold& hold) const;
  // Replaces the reservation by the `used` tokens (see the file comment).
  void SettleTokens(const auth::Client& client, const auth::TokenHold& hold, uint64_t used,
                    int64_t now_ns) const;

  // (user id, window) -> slot, for the reporter.
  const absl::flat_hash_map<std::pair<std::string, int>, std::shared_ptr<LimitSlot>>& by_key()
      const {
    return by_key_;
  }
  FleetStatus& status() const { return *status_; }

 private:
  FleetLeases() = default;
  // Request limits are slots 0..2 (minute, hour, day), token limits 3..5.
  static constexpr size_t kSlots = 6;
  using Slots = std::array<std::shared_ptr<LimitSlot>, kSlots>;

  bool FallbackAdmit(LimitSlot& slot, int64_t now_ns, uint64_t amount) const;
  // Spends `amount` from slots [first, first + 3) of `slots` (all or nothing); the tags taken
  // go to `tags`, the fallback ones to `fallback_mask`. Refused: the Decision of the limit that
  // refused, everything taken given back.
  auth::Decision Spend(const Slots& slots, size_t first, uint64_t amount, int64_t now_ns,
                       std::array<uint32_t, 3>& tags, uint8_t& fallback_mask) const;

  std::shared_ptr<FleetStatus> status_;
  // By Client::index(); null entries for limits a client does not have.
  std::vector<Slots> slots_;
  std::vector<bool> token_limited_;  // by Client::index()
  absl::flat_hash_map<std::pair<std::string, int>, std::shared_ptr<LimitSlot>> by_key_;
};

class QuotaClient {
 public:
  // `current` returns the FleetLeases of the generation being served (null = none yet).
  QuotaClient(std::shared_ptr<FleetStatus> status,
              std::function<std::shared_ptr<const FleetLeases>()> current);

  // The account to send at monotonic `now_ns`, or nullopt when there is nothing to say. While
  // not `connected` only expires leases (their returns wait for the next stream).
  std::optional<v1::QuotaReport> Collect(int64_t now_ns, bool connected);
  // The answer to a report.
  void OnAnswer(const v1::QuotaGrants& grants, int64_t now_ns);
  // The stream ended.
  void OnStreamLost();

 private:
  const std::shared_ptr<FleetStatus> status_;
  const std::function<std::shared_ptr<const FleetLeases>()> current_;
  const uint64_t instance_;
  absl::Mutex mu_;
  // Keeps the slots alive between Collect and OnAnswer.
  std::shared_ptr<const FleetLeases> leases_ ABSL_GUARDED_BY(mu_);
  // Monotonic time of the oldest ask not answered yet (0 = none), to notice a silent stream.
  int64_t unanswered_since_ns_ ABSL_GUARDED_BY(mu_) = 0;
  bool rebuilding_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace berry::fleet
