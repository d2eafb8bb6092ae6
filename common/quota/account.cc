#include "common/quota/account.h"

#include <algorithm>
#include <utility>

namespace berry::quota {

void LeaseAccount::Meter(int64_t now_ns) {
  const int64_t index = now_ns / kBucketNs;
  const uint64_t attempts = lease_.TakeAttempts();
  if (bucket_index_ < 0 || index - bucket_index_ >= static_cast<int64_t>(buckets_.size())) {
    buckets_.fill(0);
  } else {
    for (int64_t i = bucket_index_ + 1; i <= index; ++i) {
      buckets_[static_cast<size_t>(i) % buckets_.size()] = 0;
    }
  }
  bucket_index_ = index;
  buckets_[static_cast<size_t>(index) % buckets_.size()] += attempts;
}

double LeaseAccount::DemandPerSecond(int64_t now_ns) {
  Meter(now_ns);
  uint64_t sum = 0;
  for (const uint64_t bucket : buckets_) {
    sum += bucket;
  }
  return static_cast<double>(sum);  // buckets cover one second
}

void LeaseAccount::Ended(const std::optional<Lease::Ended>& ended, int64_t now_ns) {
  if (!ended.has_value()) {
    return;
  }
  if (ended->slice == lease_slice_) {
    spent_.emplace_back(now_ns,
                        lease_granted_ >= ended->unspent ? lease_granted_ - ended->unspent : 0);
    lease_granted_ = 0;
  }
  if (ended->unspent > 0) {
    to_return_.push_back(*ended);
  }
}

void LeaseAccount::ReturnLate(uint32_t tag, uint64_t amount) {
  absl::MutexLock lock(&late_mu_);
  late_.emplace_back(tag, amount);
}

void LeaseAccount::EndNow() { Ended(lease_.EndNow(), lease_expiry_ns_); }

std::optional<LeaseAccount::Usage> LeaseAccount::Poll(int64_t now_ns, double margin_s,
                                                      int64_t ask_timeout_ns) {
  Ended(lease_.Expire(now_ns), now_ns);
  while (!spent_.empty() && spent_.front().first <= now_ns - window_ns_) {
    spent_.pop_front();
  }
  const double demand = DemandPerSecond(now_ns);
  const uint64_t fallback = fallback_admitted_.exchange(0, std::memory_order_relaxed);
  if (fallback > 0) {
    spent_.emplace_back(now_ns, fallback);
  }
  const uint64_t credit = lease_.credit(now_ns);
  const uint64_t wanted = wanted_.exchange(0, std::memory_order_relaxed);
  const bool may_ask =
      (!ask_in_flight_ || now_ns - asked_at_ns_ >= ask_timeout_ns) && now_ns >= no_ask_before_ns_;
  const bool past_half_life = lease_.held() && now_ns - lease_granted_at_ns_ >=
                                                   (lease_expiry_ns_ - lease_granted_at_ns_) / 2;
  const bool wants = credit == 0 || past_half_life || wanted > credit ||
                     static_cast<double>(credit) < demand * margin_s;
  Usage usage;
  usage.ask = may_ask && wants;
  usage.demand_per_second = demand;
  usage.fallback_admitted = fallback;
  usage.wanted = wanted;
  usage.returns = std::move(to_return_);
  to_return_.clear();
  {
    absl::MutexLock lock(&late_mu_);
    for (const auto& [tag, amount] : late_) {
      // The tag is the slice's low 32 bits; the slice is the latest one with that tag.
      const int64_t slice =
          lease_slice_ - static_cast<uint32_t>(static_cast<uint32_t>(lease_slice_) - tag);
      usage.returns.push_back(Lease::Ended{slice, amount});
    }
    late_.clear();
  }
  for (const auto& [at, spent] : spent_) {
    usage.recent_admitted += spent;
  }
  if (lease_.held()) {
    const uint64_t held = lease_.credit(now_ns);
    usage.held = held;
    usage.recent_admitted += lease_granted_ >= held ? lease_granted_ - held : 0;
  }
  if (!usage.ask && usage.returns.empty() && fallback == 0) {
    return std::nullopt;
  }
  return usage;
}

void LeaseAccount::Sent(const Usage& usage, int64_t echo_ns) {
  if (usage.ask) {
    ask_in_flight_ = true;
    asked_at_ns_ = echo_ns;
  }
}

void LeaseAccount::OnGrant(int64_t echo_ns, int64_t slice, uint64_t credit, int64_t valid_for_ns,
                           int64_t retry_after_ns) {
  ask_in_flight_ = false;
  if (credit == 0) {
    // Nothing left: ask again when the control plane said credit frees up.
    no_ask_before_ns_ = echo_ns + std::max<int64_t>(retry_after_ns, kBucketNs);
    return;
  }
  no_ask_before_ns_ = 0;
  const int64_t expiry = echo_ns + valid_for_ns;
  const bool same = lease_.held() && slice == lease_slice_;
  const std::optional<Lease::Ended> ended = lease_.Grant(slice, credit, expiry);
  if (ended.has_value() && ended->slice != slice) {
    Ended(ended, echo_ns);
  } else if (ended.has_value()) {
    to_return_.push_back(*ended);  // a late grant for an older slice, returned whole
    return;
  }
  if (same) {
    lease_granted_ += credit;
    lease_expiry_ns_ = std::max(lease_expiry_ns_, expiry);
  } else {
    lease_slice_ = slice;
    lease_granted_ = credit;
    lease_granted_at_ns_ = echo_ns;
    lease_expiry_ns_ = expiry;
  }
}

}  // namespace berry::quota
