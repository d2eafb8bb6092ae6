// A proxy's side of one (user, limit) (README.md, "Fleet-wide rate limits"): the Lease the
// request path spends from, plus what the reporter thread keeps around it — the demand meter, the
// ask in flight, the leases ended and not yet returned, what was admitted in the last window.
//
// Threads: lease().TrySpend/Unspend/Charge/CountAttempt, CountFallbackAdmitted and ReturnLate
// from any thread; every other member from the one reporter thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/quota/lease.h"

namespace berry::quota {

class LeaseAccount {
 public:
  // `window_ns`: the limit's window (recent_admitted covers it).
  explicit LeaseAccount(int64_t window_ns) : window_ns_(window_ns) {}

  Lease& lease() { return lease_; }
  const Lease& lease() const { return lease_; }

  // What to tell the control plane.
  struct Usage {
    double demand_per_second = 0;
    bool ask = false;
    std::vector<Lease::Ended> returns;
    uint64_t recent_admitted = 0;
    uint64_t held = 0;
    uint64_t fallback_admitted = 0;
    uint64_t wanted = 0;
  };

  // Any thread: a request was admitted on the fallback share (not from the lease).
  void CountFallbackAdmitted(uint64_t amount = 1) {
    fallback_admitted_.fetch_add(amount, std::memory_order_relaxed);
  }
  // Any thread: `amount` to give back to the lease tagged `tag` (Lease::TrySpend), which has
  // ended since (Unspend said false): returned to its slice with the next Poll. Rare (a token
  // reservation settled after its lease was renewed), so a mutex.
  void ReturnLate(uint32_t tag, uint64_t amount);
  // Any thread: a request needing `amount` credits found too few (the next ask wants that much).
  void Want(uint64_t amount) {
    uint64_t wanted = wanted_.load(std::memory_order_relaxed);
    while (wanted < amount &&
           !wanted_.compare_exchange_weak(wanted, amount, std::memory_order_relaxed)) {
    }
  }
  // Writer: ends the lease if it expired, keeping its return for the next Poll (while there is
  // no one to tell).
  void ExpireOnly(int64_t now_ns) { Ended(lease_.Expire(now_ns), now_ns); }

  // Writer, called often (every few milliseconds to every 100 ms): ends an expired lease and
  // decides whether to ask. Asks when no ask is in flight (or the one in flight is older than
  // `ask_timeout_ns`), the control plane did not say "nothing left before T", and either the
  // lease has no live credit, has lived past half its life (it was debited to an earlier slice:
  // renewing now leaves no gap), or its credit covers less than `margin_s` of demand. Returns
  // nullopt when there is nothing to say.
  std::optional<Usage> Poll(int64_t now_ns, double margin_s = 0.25,
                            int64_t ask_timeout_ns = 2'000'000'000);
  // Writer: Poll's usage was sent with `echo_ns` (it sets the ask in flight when usage.ask).
  void Sent(const Usage& usage, int64_t echo_ns);
  // Writer: a grant for an ask sent at `echo_ns`. The lease lives until echo_ns + valid_for_ns:
  // the grant was made after the ask left, so this is never later than the control plane meant.
  void OnGrant(int64_t echo_ns, int64_t slice, uint64_t credit, int64_t valid_for_ns,
               int64_t retry_after_ns);
  // Writer: the stream ended; asks in flight will not be answered.
  void OnStreamLost() { ask_in_flight_ = false; }
  // Writer: ends the lease now (the control plane is gone and the lease is given up, or the user
  // left the table) and queues its return.
  void EndNow();

  // The demand of the last second, in requests per second (writer).
  double DemandPerSecond(int64_t now_ns);

 private:
  void Ended(const std::optional<Lease::Ended>& ended, int64_t now_ns);
  void Meter(int64_t now_ns);

  static constexpr int64_t kBucketNs = 100'000'000;  // 10 buckets = 1 s of demand
  const int64_t window_ns_;
  Lease lease_;
  std::array<uint64_t, 10> buckets_{};
  int64_t bucket_index_ = -1;
  bool ask_in_flight_ = false;
  int64_t asked_at_ns_ = 0;
  int64_t no_ask_before_ns_ = 0;
  int64_t lease_slice_ = 0;
  int64_t lease_granted_at_ns_ = 0;
  int64_t lease_expiry_ns_ = 0;
  uint64_t lease_granted_ = 0;
  std::vector<Lease::Ended> to_return_;
  // (ended at, spent) of leases that ended within the window.
  std::deque<std::pair<int64_t, uint64_t>> spent_;
  std::atomic<uint64_t> fallback_admitted_{0};
  std::atomic<uint64_t> wanted_{0};
  absl::Mutex late_mu_;
  std::vector<std::pair<uint32_t, uint64_t>> late_ ABSL_GUARDED_BY(late_mu_);  // (tag, amount)
};

}  // namespace berry::quota
