#include "common/quota/lease.h"

#include <algorithm>

namespace berry::quota {

std::optional<uint32_t> Lease::TrySpend(int64_t now_ns, uint32_t amount) {
  uint64_t word = word_.load();
  while (amount > 0 && CreditOf(word) >= amount) {
    // Read after the word: a writer replaces the word before it moves the expiry, so an expiry
    // newer than `word` makes the swap below fail rather than extend an old lease.
    if (expiry_ns_.load() <= now_ns) {
      return std::nullopt;
    }
    if (word_.compare_exchange_weak(word, word - amount)) {
      return TagOf(word);
    }
  }
  return std::nullopt;
}

bool Lease::Unspend(uint32_t tag, uint32_t amount) {
  uint64_t word = word_.load();
  while (TagOf(word) == tag) {
    const uint64_t credit = std::min<uint64_t>(uint64_t{CreditOf(word)} + amount, UINT32_MAX);
    if (word_.compare_exchange_weak(word, Pack(tag, static_cast<uint32_t>(credit)))) {
      return true;
    }
  }
  return false;
}

void Lease::Charge(int64_t now_ns, uint64_t amount) {
  uint64_t word = word_.load();
  while (amount > 0 && CreditOf(word) > 0 && expiry_ns_.load() > now_ns) {
    const uint64_t take = std::min<uint64_t>(CreditOf(word), amount);
    if (word_.compare_exchange_weak(word, word - take)) {
      amount -= take;
    }
  }
  if (amount > 0) {
    debt_.fetch_add(amount, std::memory_order_relaxed);
  }
}

std::optional<Lease::Ended> Lease::EndLocked() {
  if (!held_) {
    return std::nullopt;
  }
  const uint64_t word = word_.exchange(Pack(static_cast<uint32_t>(slice_), 0));
  held_ = false;
  return Ended{slice_, CreditOf(word)};
}

std::optional<Lease::Ended> Lease::Grant(int64_t slice, uint64_t credit, int64_t expiry_ns) {
  if (held_ && slice < slice_) {
    return Ended{slice, credit};  // late: a newer lease is already held
  }
  // Debt first: it was spent before this credit was debited, and is paid from it.
  uint64_t debt = debt_.load(std::memory_order_relaxed);
  uint64_t paid = 0;
  while (debt > 0) {
    paid = std::min(debt, credit);
    if (debt_.compare_exchange_weak(debt, debt - paid, std::memory_order_relaxed)) {
      break;
    }
    paid = 0;
  }
  const auto add = static_cast<uint32_t>(std::min<uint64_t>(credit - paid, UINT32_MAX / 2));
  if (held_ && slice == slice_) {
    uint64_t word = word_.load();
    while (!word_.compare_exchange_weak(
        word, Pack(TagOf(word), static_cast<uint32_t>(std::min<uint64_t>(
                                    uint64_t{CreditOf(word)} + add, UINT32_MAX))))) {
    }
    expiry_ns_.store(std::max(expiry_ns_.load(), expiry_ns));
    return std::nullopt;
  }
  std::optional<Ended> ended = EndLocked();
  slice_ = slice;
  held_ = true;
  // Word first, then expiry (see TrySpend).
  word_.store(Pack(static_cast<uint32_t>(slice), add));
  expiry_ns_.store(expiry_ns);
  return ended;
}

std::optional<Lease::Ended> Lease::Expire(int64_t now_ns) {
  if (!held_ || expiry_ns_.load() > now_ns) {
    return std::nullopt;
  }
  return EndLocked();
}

std::optional<Lease::Ended> Lease::EndNow() { return EndLocked(); }

uint64_t Lease::credit(int64_t now_ns) const {
  if (!held_ || expiry_ns_.load() <= now_ns) {
    return 0;
  }
  return CreditOf(word_.load());
}

}  // namespace berry::quota
