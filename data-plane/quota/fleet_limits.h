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
// Budgets (README.md, "Provider budgets"): the same leases, per window of each provider's and
// backend's budget (QUOTA_SCOPE_PROVIDER/BACKEND). FleetLeases is the picker's BudgetGate: a
// backend is spent while one of its budgets' leases (its own, its provider's) has no credit —
// and, while away, the fallback share has none either. SpendBudget takes one request from each
// when an attempt goes to the backend; ChargeBudgetTokens charges the tokens the upstream
// reported (no reservation: a backend is skipped once a token lease is used up or in debt).
// Standalone, a FleetLeases with budgets only runs on a status that stays away with a fleet
// size of 0: the local share is the whole budget.
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
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "berry/v1/discovery.pb.h"
#include "common/quota/account.h"
#include "common/quota/ledger.h"
#include "common/selection/picker.h"
#include "common/selection/snapshot.h"
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
  // Counts the control plane's quota answers applied (and lost streams): a request waiting for
  // credit (Decision::credit_pending) looks again when it moves.
  std::atomic<uint64_t> answers{0};

  void RequestWake() {
    if (!wake_requested.exchange(true) && wake) {
      wake();
    }
  }

  // Moves `answers` and calls every waiter registered (under a mutex: a waiter removed is never
  // called after RemoveWaiter returns). Called by the reporter after an answer is applied.
  void Answered() ABSL_LOCKS_EXCLUDED(waiters_mu_);
  // Registers `wake` (called from the reporter's thread: it must only post to its own executor)
  // until RemoveWaiter(handle).
  uint64_t AddWaiter(std::function<void()> wake) ABSL_LOCKS_EXCLUDED(waiters_mu_);
  void RemoveWaiter(uint64_t handle) ABSL_LOCKS_EXCLUDED(waiters_mu_);
  // Requests waiting now.
  size_t waiting() const ABSL_LOCKS_EXCLUDED(waiters_mu_);

 private:
  mutable absl::Mutex waiters_mu_;
  uint64_t next_waiter_ ABSL_GUARDED_BY(waiters_mu_) = 0;
  absl::flat_hash_map<uint64_t, std::function<void()>> waiters_ ABSL_GUARDED_BY(waiters_mu_);
};

// (v1::QuotaScope, user id or budget id, v1::QuotaWindow): whose limit a slot is.
using LimitKey = std::tuple<int, std::string, int>;
inline LimitKey UserLimitKey(std::string user_id, v1::QuotaWindow window) {
  return {v1::QUOTA_SCOPE_UNSPECIFIED, std::move(user_id), static_cast<int>(window)};
}

// One limit of one client, or one window of one budget.
struct LimitSlot {
  LimitSlot(uint64_t limit, v1::QuotaWindow window, int64_t window_ns)
      : limit(limit), window(window), window_ns(window_ns), account(window_ns) {}

  const uint64_t limit;
  const v1::QuotaWindow window;
  const int64_t window_ns;
  quota::LeaseAccount account;
  // From the last grant: no credit before this monotonic time (0 = unknown / some left).
  std::atomic<int64_t> no_credit_until_ns{0};
  // From the last grant: credit the fleet-wide window had left (x-ratelimit-remaining-* of a
  // refusal while connected).
  std::atomic<uint64_t> fleet_remaining{0};

  absl::Mutex fallback_mu;
  std::unique_ptr<quota::SlidingLedger> fallback ABSL_GUARDED_BY(fallback_mu);
  int fallback_fleet_size ABSL_GUARDED_BY(fallback_mu) = -1;
};

class FleetLeases final : public selection::BudgetGate {
 public:
  // Slots for every limited client of `directory` (none when null) and every budget window of
  // `snapshot`'s providers and backends (none when null); a client or budget (by id) whose
  // limit is unchanged keeps its slot from `previous` (lease, fallback count and all).
  static std::shared_ptr<FleetLeases> Create(const auth::ClientDirectory* directory,
                                             const selection::Snapshot* snapshot,
                                             const FleetLeases* previous,
                                             std::shared_ptr<FleetStatus> status);
  static std::shared_ptr<FleetLeases> Create(const auth::ClientDirectory& directory,
                                             const FleetLeases* previous,
                                             std::shared_ptr<FleetStatus> status) {
    return Create(&directory, nullptr, previous, std::move(status));
  }

  // Admits one request of `client` at monotonic `now_ns` if every limit it has has credit (a
  // lease, or the fallback share while away). The Decision's fields are those of the limit that
  // refused: remaining = what the fleet-wide window had left at the last answer (while away,
  // what the fallback share has left); reset = when the control plane said credit frees up,
  // else 1 s.
  // When allowed and `held` is given, records there what it took (for Release).
  auth::Decision Admit(const auth::Client& client, int64_t now_ns,
                       auth::TokenHold* held = nullptr) const;
  // Gives back the request `held` took (Admit's record): a request refused later by its token
  // limit was never made.
  void Release(const auth::Client& client, const auth::TokenHold& held, int64_t now_ns) const;

  // True when `client` has a token limit.
  bool LimitsTokens(const auth::Client& client) const;
  // Reserves `tokens` of `client` from every token limit's lease (all or nothing; the fallback
  // share while away) and fills `hold`; a refusal's Decision is like Admit's, in tokens.
  auth::Decision ReserveTokens(const auth::Client& client, uint64_t tokens, int64_t now_ns,
                               auth::TokenHold& hold) const;
  // Replaces the reservation by the `used` tokens (see the file comment).
  void SettleTokens(const auth::Client& client, const auth::TokenHold& hold, uint64_t used,
                    int64_t now_ns) const;

  // BudgetGate: a budget of `backend` (its own or its provider's) has no credit at `now_ns`
  // (asks the reporter for more when so).
  bool Spent(const selection::CompiledBackend& backend, int64_t now_ns) const override {
    return SpentAt(backend, now_ns, /*ask=*/true);
  }
  // The same without asking for more (for /metrics: berry_backend_budget_spent).
  bool SpentNow(const selection::CompiledBackend& backend, int64_t now_ns) const {
    return SpentAt(backend, now_ns, /*ask=*/false);
  }
  // An attempt goes to `backend`: one request from each of its request budgets (all or
  // nothing). False when one is spent (then the backend reads Spent).
  bool SpendBudget(const selection::CompiledBackend& backend, int64_t now_ns) const;
  // The upstream reported `tokens` for an attempt on `backend`: charged to its token budgets.
  void ChargeBudgetTokens(const selection::CompiledBackend& backend, uint64_t tokens,
                          int64_t now_ns) const;
  // When a spent `backend` has credit again: as far as the control plane said (at least 1 s
  // when it did not say), or, while away, when the fallback share's window frees some; 0 when
  // it is not spent.
  int64_t BudgetRetryAfterNs(const selection::CompiledBackend& backend, int64_t now_ns) const;
  // BudgetGate: true when `backend` is spent only because its leases ran dry while the control
  // plane is here and has not said the window is spent: an ask is on its way, the request may
  // wait for the answer (FleetStatus::Answered) and pick again.
  bool CreditPending(const selection::CompiledBackend& backend, int64_t now_ns) const override;
  // True when any backend has a budget.
  bool has_budgets() const { return !budgets_.empty(); }

  // Key -> slot, for the reporter.
  const absl::flat_hash_map<LimitKey, std::shared_ptr<LimitSlot>>& by_key() const {
    return by_key_;
  }
  FleetStatus& status() const { return *status_; }

 private:
  FleetLeases() = default;
  // Request limits are slots 0..2 (minute, hour, day), token limits 3..5.
  static constexpr size_t kSlots = 6;
  using Slots = std::array<std::shared_ptr<LimitSlot>, kSlots>;

  // Budget slots of one backend: its own and its provider's windows.
  struct BackendBudget {
    std::vector<LimitSlot*> requests;
    std::vector<LimitSlot*> tokens;
  };

  // The slot for `key` with `limit`: `previous`'s when its limit is the same, else a new one.
  std::shared_ptr<LimitSlot> TakeSlot(LimitKey key, uint64_t limit, size_t window,
                                      const FleetLeases* previous);
  // Adds the budget windows of `limit` for (scope, id) to `out`.
  void TakeBudget(v1::QuotaScope scope, const std::string& id, const v1::RateLimit& limit,
                  const FleetLeases* previous, BackendBudget& out);
  bool SpentAt(const selection::CompiledBackend& backend, int64_t now_ns, bool ask) const;
  bool FallbackAdmit(LimitSlot& slot, int64_t now_ns, uint64_t amount) const;
  // Gives `amount` back to where `slot` took it: its fallback share, or the lease `tag` names
  // (to the ledger with the next report when that lease has ended).
  static void GiveBackTo(LimitSlot& slot, bool from_fallback, uint32_t tag, uint64_t amount,
                         int64_t now_ns);
  // A refusal at slot `refused` of SpendSlots: gives back what slots [0, refused) took.
  void GiveBack(std::span<LimitSlot* const> slots, size_t refused, uint64_t amount,
                int64_t now_ns, std::span<const uint32_t> tags, uint32_t spent_mask,
                uint32_t fallback_mask) const;
  // Whether the fallback share would admit `amount` now (does not count it).
  bool FallbackHas(LimitSlot& slot, int64_t now_ns, uint64_t amount) const;
  // Spends `amount` from every non-null slot of `slots` (all or nothing); the tags taken go to
  // `tags`, the fallback ones to `fallback_mask` (bit i for slots[i]). Returns the position of
  // the slot that refused (everything taken given back), or -1.
  int SpendSlots(std::span<LimitSlot* const> slots, uint64_t amount, int64_t now_ns,
                 std::span<uint32_t> tags, uint32_t& fallback_mask) const;
  // Gives `amount` of what `hold` took from slots [first, first + 3) back to where it came from
  // (the lease it was spent from, or the fallback share).
  void Refund(const Slots& slots, size_t first, const auth::TokenHold& hold, uint64_t amount,
              int64_t now_ns) const;
  // SpendSlots over slots [first, first + 3) of a client; a refusal's Decision names the limit.
  auth::Decision Spend(const Slots& slots, size_t first, uint64_t amount, int64_t now_ns,
                       std::array<uint32_t, 3>& tags, uint8_t& fallback_mask) const;

  std::shared_ptr<FleetStatus> status_;
  // By Client::index(); null entries for limits a client does not have.
  std::vector<Slots> slots_;
  std::vector<uint8_t> token_limited_;  // by Client::index() (bytes: no bit masking per request)
  // By CompiledBackend::index(); empty when no backend has a budget.
  std::vector<BackendBudget> budgets_;
  absl::flat_hash_map<LimitKey, std::shared_ptr<LimitSlot>> by_key_;
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
