// One proxy's lease on one (user, limit): credit the control plane pre-debited to one ledger
// slice (ledger.h), spendable until an expiry on the proxy's monotonic clock.
//
// Threads: TrySpend/Unspend/CountAttempt may be called from any thread at once (lock-free: the
// request path). Grant/Expire/TakeAttempts/credit belong to one writer thread (the reporter).
//
// The lease's slice tag and credit share one atomic word, so a spend can never take credit from a
// lease that the writer has just replaced or ended: its compare-and-swap fails and it looks again.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

namespace berry::quota {

class Lease {
 public:
  // A lease that ended, with the credit it did not spend (for QuotaReturn).
  struct Ended {
    int64_t slice = 0;
    uint64_t unspent = 0;
  };

  // Takes `amount` credits (all or nothing) if the lease lives at `now_ns` and holds them.
  // Returns the lease's tag to pass to Unspend, or nullopt when there is not enough credit.
  std::optional<uint32_t> TrySpend(int64_t now_ns, uint32_t amount = 1);
  // Gives back `amount` credits TrySpend took, unless that lease has since been replaced or
  // ended: then returns false, and the caller returns them to the ledger another way.
  bool Unspend(uint32_t tag, uint32_t amount = 1);
  // Spends `amount` that was already used (tokens beyond a reservation): from the live credit
  // as far as it goes, the rest as debt that the next grants pay first.
  void Charge(int64_t now_ns, uint64_t amount);
  // Debt not yet paid by a grant.
  uint64_t debt() const { return debt_.load(std::memory_order_relaxed); }
  // Counts demand of the user (admitted or refused; one per request, or the tokens asked for):
  // what grants are sized by.
  void CountAttempt(uint64_t amount = 1) { attempts_.fetch_add(amount, std::memory_order_relaxed); }

  // Writer: adds `credit` for `slice`, living until `expiry_ns`, less the debt it pays first.
  // A lease of the same slice grows;
  // one of an earlier slice ends (and is returned); a grant for an earlier slice than the one
  // held is returned whole.
  std::optional<Ended> Grant(int64_t slice, uint64_t credit, int64_t expiry_ns);
  // Writer: ends the lease when it has expired at `now_ns`.
  std::optional<Ended> Expire(int64_t now_ns);
  // Writer: ends the lease now, whatever its expiry (the user left the table).
  std::optional<Ended> EndNow();
  // Writer: the attempts counted since the last call.
  uint64_t TakeAttempts() { return attempts_.exchange(0, std::memory_order_relaxed); }

  // Credit left (0 once expired at `now_ns`).
  uint64_t credit(int64_t now_ns) const;
  // True while a lease is held (granted and not yet ended), expired or not.
  bool held() const { return held_; }

 private:
  static uint64_t Pack(uint32_t tag, uint32_t credit) {
    return (static_cast<uint64_t>(tag) << 32) | credit;
  }
  static uint32_t TagOf(uint64_t word) { return static_cast<uint32_t>(word >> 32); }
  static uint32_t CreditOf(uint64_t word) { return static_cast<uint32_t>(word); }
  std::optional<Ended> EndLocked();

  // Tag (slice mod 2^32) in the high half, credit in the low half.
  std::atomic<uint64_t> word_{0};
  std::atomic<int64_t> expiry_ns_{0};
  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> debt_{0};
  // Writer only.
  int64_t slice_ = 0;
  bool held_ = false;
};

}  // namespace berry::quota
