#include "common/quota/ledger.h"

#include <algorithm>
#include <cmath>

namespace berry::quota {

SlidingLedger::SlidingLedger(uint64_t limit, int64_t window_ms, int slices)
    : limit_(limit),
      slices_(std::max(slices, 1)),
      slice_ms_(std::max<int64_t>(window_ms / std::max(slices, 1), 1)),
      debits_(static_cast<size_t>(slices_) + 2, 0),
      slice_of_(static_cast<size_t>(slices_) + 2, -1) {}

int64_t SlidingLedger::Slice(int64_t now_ms) const {
  // Floor division, so times before the epoch (never in practice) still order correctly.
  return now_ms >= 0 ? now_ms / slice_ms_ : -((-now_ms + slice_ms_ - 1) / slice_ms_);
}

void SlidingLedger::Advance(int64_t now_ms) {
  const int64_t oldest = Slice(now_ms) - slices_ - 1;
  for (size_t i = 0; i < debits_.size(); ++i) {
    if (slice_of_[i] < oldest) {
      slice_of_[i] = -1;
      debits_[i] = 0;
    }
  }
}

uint64_t SlidingLedger::Remaining(int64_t now_ms) {
  Advance(now_ms);
  uint64_t used = 0;
  for (size_t i = 0; i < debits_.size(); ++i) {
    if (slice_of_[i] >= 0) {
      used += debits_[i];
    }
  }
  return used >= limit_ ? 0 : limit_ - used;
}

uint64_t SlidingLedger::Debit(int64_t now_ms, uint64_t amount) {
  const uint64_t granted = std::min(amount, Remaining(now_ms));
  Record(now_ms, granted);
  return granted;
}

void SlidingLedger::Record(int64_t now_ms, uint64_t amount) {
  Advance(now_ms);
  if (amount == 0) {
    return;
  }
  const int64_t slice = Slice(now_ms);
  const auto at = static_cast<size_t>(slice % static_cast<int64_t>(debits_.size()));
  if (slice_of_[at] != slice) {
    slice_of_[at] = slice;
    debits_[at] = 0;
  }
  debits_[at] += amount;
}

void SlidingLedger::Refund(int64_t slice, uint64_t amount) {
  if (slice < 0) {
    return;
  }
  const auto at = static_cast<size_t>(slice % static_cast<int64_t>(debits_.size()));
  if (slice_of_[at] == slice) {
    debits_[at] -= std::min(debits_[at], amount);
  }
}

uint64_t SlidingLedger::DebitOf(int64_t slice) const {
  if (slice < 0) {
    return 0;
  }
  const auto at = static_cast<size_t>(slice % static_cast<int64_t>(debits_.size()));
  return slice_of_[at] == slice ? debits_[at] : 0;
}

int64_t SlidingLedger::MsUntilCredit(int64_t now_ms) {
  if (Remaining(now_ms) > 0) {
    return 0;
  }
  // The oldest slice with a debit leaves the ring when slice (oldest + k + 2) begins.
  int64_t oldest = Slice(now_ms);
  for (size_t i = 0; i < debits_.size(); ++i) {
    if (slice_of_[i] >= 0 && debits_[i] > 0) {
      oldest = std::min(oldest, slice_of_[i]);
    }
  }
  const int64_t frees_at = (oldest + slices_ + 2) * slice_ms_;
  return std::max<int64_t>(frees_at - now_ms, 1);
}

uint64_t GrantSize(double demand_per_second, double lookahead_s, uint64_t remaining,
                   int active_proxies) {
  if (remaining == 0) {
    return 0;
  }
  const double wanted = std::ceil(std::max(demand_per_second, 0.0) * std::max(lookahead_s, 0.0));
  const uint64_t share = remaining / (2 * static_cast<uint64_t>(std::max(active_proxies, 1)));
  const uint64_t want =
      wanted >= static_cast<double>(remaining) ? remaining : static_cast<uint64_t>(wanted);
  return std::max<uint64_t>(std::min(want, share), 1);
}

uint64_t FallbackShare(uint64_t limit, int fleet_size) {
  const auto n = static_cast<uint64_t>(std::max(fleet_size, 1));
  return std::max<uint64_t>((limit + n - 1) / n, 1);
}

}  // namespace berry::quota
