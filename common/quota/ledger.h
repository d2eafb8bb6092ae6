// Fleet-wide quota arithmetic (README.md, "Fleet-wide rate limits"): the control plane keeps one
// SlidingLedger per (user, limit) and hands proxies leases of pre-debited credit sized by
// GrantSize(). Pure and clock-free: every call takes the time, in milliseconds on one clock.
//
// The scheme. A limit of L requests per window W is kept as k slices of s = W/k each (Slice(t)
// is floor(t / s)). A grant made at t is debited to slice c = Slice(t), and may only be made while
// the debits of slices [c - k - 1, c] (k + 2 slices) stay within L. The lease it creates lives no
// later than the end of slice c + 1 (LeaseEndMs), so a proxy renewing once per slice never has a
// gap. Bound: a request admitted at u was spent from a lease debited to Slice(u) or Slice(u) - 1.
// An interval [a, a + W) meets at most k + 1 slices, so its requests come from leases debited to
// at most k + 2 consecutive slices, whose debits are at most L. Exact: no slack, and no 2x burst
// across a boundary (there is none: the window slides by slices). The price is utilisation: a
// saturating user gets L per (k + 2) slices, k / (k + 2) of the limit (96.8 % for k = 60), minus
// the credit idle proxies hold at a time (returned when their lease ends).
//
// Unspent credit comes back with Refund() after its lease ended, to the slice it was debited
// to: the lease is dead, so nothing more can be spent from it, and the bound above only needs
// admitted ≤ debited per slice.
//
// Threads: not thread-safe; the owner serialises calls.
#pragma once

#include <cstdint>
#include <vector>

namespace berry::quota {

class SlidingLedger {
 public:
  // `limit` > 0 requests per `window_ms` > 0, kept in `slices` >= 1 slices. window_ms is rounded
  // down to a multiple of `slices` (at least one millisecond per slice).
  SlidingLedger(uint64_t limit, int64_t window_ms, int slices);

  uint64_t limit() const { return limit_; }
  int64_t slice_ms() const { return slice_ms_; }
  int slices() const { return slices_; }

  // The slice `now_ms` falls in, and the time that slice ends.
  int64_t Slice(int64_t now_ms) const;
  int64_t SliceEndMs(int64_t slice) const { return (slice + 1) * slice_ms_; }

  // When a lease debited to `slice` must end: the end of the slice after it.
  int64_t LeaseEndMs(int64_t slice) const { return (slice + 2) * slice_ms_; }

  // Credit that may still be debited at `now_ms`: L minus the debits of the current slice and
  // the k + 1 before it.
  uint64_t Remaining(int64_t now_ms);
  // Debits up to `amount` to the current slice, at most Remaining(); returns what was debited.
  uint64_t Debit(int64_t now_ms, uint64_t amount);
  // Debits `amount` to the current slice even beyond the limit: what already happened (a
  // restarted control plane learning what the proxies admitted), not a grant.
  void Record(int64_t now_ms, uint64_t amount);
  // Gives back `amount` (at most what the slice holds) to `slice`; ignored when that slice has
  // left the ring (its credit no longer counts against anything).
  void Refund(int64_t slice, uint64_t amount);
  // Milliseconds from `now_ms` until Remaining() grows (the oldest debited slice in the ring
  // leaves it); 0 when something remains; at least one slice otherwise.
  int64_t MsUntilCredit(int64_t now_ms);
  // Debits of `slice`, 0 when it is not in the ring (tests).
  uint64_t DebitOf(int64_t slice) const;

 private:
  // Forgets slices older than the ring as of `now_ms`.
  void Advance(int64_t now_ms);

  const uint64_t limit_;
  const int slices_;
  const int64_t slice_ms_;
  // debits_[s % (k + 2)] holds slice s when slice_of_[s % (k + 2)] == s.
  std::vector<uint64_t> debits_;
  std::vector<int64_t> slice_of_;
};

// The credit to grant one proxy: enough for its recent demand over `lookahead_s` seconds, at most
// a share of what remains that shrinks as the window fills (remaining / (2 * active_proxies)), and
// at least 1 whenever anything remains (so an idle proxy can still admit a first request).
// 0 when nothing remains.
uint64_t GrantSize(double demand_per_second, double lookahead_s, uint64_t remaining,
                   int active_proxies);

// The fallback share of a proxy that lost the control plane: ceil(limit / fleet_size), at
// least 1; fleet_size 0 (never known) counts as 1.
uint64_t FallbackShare(uint64_t limit, int fleet_size);

}  // namespace berry::quota
