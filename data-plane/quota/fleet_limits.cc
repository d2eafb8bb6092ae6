#include "data-plane/quota/fleet_limits.h"

#include <algorithm>
#include <random>

#include "google/protobuf/util/time_util.h"

namespace berry::fleet {
namespace {

using google::protobuf::util::TimeUtil;

constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kNsPerSecond = 1'000'000'000;
// Slices of the fallback share's local ledger (as on the control plane).
constexpr int kFallbackSlices = 60;
// An ask unanswered this long counts as a control plane away.
constexpr int64_t kAnswerTimeoutNs = 2 * kNsPerSecond;

constexpr std::array<v1::QuotaWindow, 6> kWindows = {
    v1::QUOTA_WINDOW_MINUTE,        v1::QUOTA_WINDOW_HOUR,        v1::QUOTA_WINDOW_DAY,
    v1::QUOTA_WINDOW_TOKENS_MINUTE, v1::QUOTA_WINDOW_TOKENS_HOUR, v1::QUOTA_WINDOW_TOKENS_DAY};
constexpr std::array<auth::Window, 3> kAuthWindows = {auth::Window::kMinute, auth::Window::kHour,
                                                      auth::Window::kDay};
// Request limits take one credit per request.
constexpr size_t kRequestSlots = 0;
constexpr size_t kTokenSlots = 3;

std::array<uint64_t, 6> LimitsOf(const auth::Client& client) {
  const v1::RateLimit& limit = client.rate_limit();
  return {limit.requests_per_minute(), limit.requests_per_hour(), limit.requests_per_day(),
          limit.tokens_per_minute(),   limit.tokens_per_hour(),   limit.tokens_per_day()};
}

// A lease holds at most 2^32 - 1 credits; a larger reservation cannot fit anyway.
uint32_t LeaseAmount(uint64_t amount) {
  return static_cast<uint32_t>(std::min<uint64_t>(amount, UINT32_MAX));
}

}  // namespace

std::shared_ptr<LimitSlot> FleetLeases::TakeSlot(LimitKey key, uint64_t limit, size_t window,
                                                 const FleetLeases* previous) {
  if (const auto it = by_key_.find(key); it != by_key_.end()) {
    return it->second;  // a provider's budget, already taken for another of its backends
  }
  std::shared_ptr<LimitSlot> slot;
  if (previous != nullptr) {
    const auto it = previous->by_key_.find(key);
    if (it != previous->by_key_.end() && it->second->limit == limit) {
      slot = it->second;
    }
  }
  if (slot == nullptr) {
    slot = std::make_shared<LimitSlot>(
        limit, kWindows[window], auth::WindowSeconds(kAuthWindows[window % 3]) * kNsPerSecond);
  }
  by_key_.emplace(std::move(key), slot);
  return slot;
}

void FleetLeases::TakeBudget(v1::QuotaScope scope, const std::string& id,
                             const v1::RateLimit& limit, const FleetLeases* previous,
                             BackendBudget& out) {
  const std::array<uint64_t, 6> limits = {limit.requests_per_minute(), limit.requests_per_hour(),
                                          limit.requests_per_day(),    limit.tokens_per_minute(),
                                          limit.tokens_per_hour(),     limit.tokens_per_day()};
  for (size_t i = 0; i < kWindows.size(); ++i) {
    if (limits[i] == 0) {
      continue;
    }
    LimitSlot* slot =
        TakeSlot({scope, id, static_cast<int>(kWindows[i])}, limits[i], i, previous).get();
    (i >= kTokenSlots ? out.tokens : out.requests).push_back(slot);
  }
}

std::shared_ptr<FleetLeases> FleetLeases::Create(const auth::ClientDirectory* directory,
                                                 const selection::Snapshot* snapshot,
                                                 const FleetLeases* previous,
                                                 std::shared_ptr<FleetStatus> status) {
  std::shared_ptr<FleetLeases> leases(new FleetLeases());
  leases->status_ = std::move(status);
  if (directory != nullptr) {
    leases->slots_.resize(directory->clients().size());
    leases->token_limited_.resize(directory->clients().size());
    for (const auth::Client& client : directory->clients()) {
      const std::array<uint64_t, 6> limits = LimitsOf(client);
      for (size_t i = 0; i < kWindows.size(); ++i) {
        if (limits[i] == 0) {
          continue;
        }
        leases->slots_[client.index()][i] =
            leases->TakeSlot(UserLimitKey(client.id(), kWindows[i]), limits[i], i, previous);
        leases->token_limited_[client.index()] |= static_cast<uint8_t>(i >= kTokenSlots);
      }
    }
  }
  bool any_budget = false;
  if (snapshot != nullptr) {
    for (const selection::CompiledBackend& backend : snapshot->backends()) {
      any_budget |= backend.has_budget();
    }
  }
  if (any_budget) {
    leases->budgets_.resize(snapshot->backends().size());
    for (const selection::CompiledBackend& backend : snapshot->backends()) {
      BackendBudget& budget = leases->budgets_[backend.index()];
      leases->TakeBudget(v1::QUOTA_SCOPE_BACKEND, backend.id(), backend.config().budget(), previous,
                         budget);
      leases->TakeBudget(v1::QUOTA_SCOPE_PROVIDER, backend.provider().id(),
                         backend.provider().budget(), previous, budget);
    }
  }
  return leases;
}

namespace {

// The slot's fallback ledger for the current fleet size (a new share keeps what the old one
// admitted in the window).
quota::SlidingLedger& FallbackLedger(LimitSlot& slot, int fleet_size, int64_t now_ns)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.fallback_mu) {
  if (slot.fallback == nullptr || slot.fallback_fleet_size != fleet_size) {
    uint64_t used = 0;
    if (slot.fallback != nullptr) {
      used = slot.fallback->limit() - slot.fallback->Remaining(now_ns / kNsPerMs);
    }
    slot.fallback = std::make_unique<quota::SlidingLedger>(
        quota::FallbackShare(slot.limit, fleet_size), slot.window_ns / kNsPerMs, kFallbackSlices);
    slot.fallback->Record(now_ns / kNsPerMs, used);
    slot.fallback_fleet_size = fleet_size;
  }
  return *slot.fallback;
}

}  // namespace

bool FleetLeases::FallbackAdmit(LimitSlot& slot, int64_t now_ns, uint64_t amount) const {
  const int fleet_size = status_->fleet_size.load(std::memory_order_relaxed);
  absl::MutexLock lock(&slot.fallback_mu);
  quota::SlidingLedger& ledger = FallbackLedger(slot, fleet_size, now_ns);
  if (ledger.Remaining(now_ns / kNsPerMs) < amount) {
    return false;
  }
  ledger.Record(now_ns / kNsPerMs, amount);
  return true;
}

bool FleetLeases::FallbackHas(LimitSlot& slot, int64_t now_ns, uint64_t amount) const {
  const int fleet_size = status_->fleet_size.load(std::memory_order_relaxed);
  absl::MutexLock lock(&slot.fallback_mu);
  return FallbackLedger(slot, fleet_size, now_ns).Remaining(now_ns / kNsPerMs) >= amount;
}

void FleetLeases::GiveBackTo(LimitSlot& slot, bool from_fallback, uint32_t tag, uint64_t amount,
                             int64_t now_ns) {
  if (from_fallback) {
    absl::MutexLock lock(&slot.fallback_mu);
    quota::SlidingLedger& ledger = *slot.fallback;
    ledger.Refund(ledger.Slice(now_ns / kNsPerMs), amount);
    return;
  }
  const uint32_t back = LeaseAmount(amount);
  if (!slot.account.lease().Unspend(tag, back)) {
    slot.account.ReturnLate(tag, back);
  }
}

void FleetLeases::GiveBack(std::span<LimitSlot* const> slots, size_t refused, uint64_t amount,
                           int64_t now_ns, std::span<const uint32_t> tags, uint32_t spent_mask,
                           uint32_t fallback_mask) const {
  for (size_t j = 0; j < refused; ++j) {
    if (((spent_mask | fallback_mask) & (1U << j)) != 0) {
      GiveBackTo(*slots[j], (fallback_mask & (1U << j)) != 0, tags[j], amount, now_ns);
    }
  }
}

// One pass over the slots while leases have credit (the request path's case); the fleet status
// is read only when one has none.
int FleetLeases::SpendSlots(std::span<LimitSlot* const> slots, uint64_t amount, int64_t now_ns,
                            std::span<uint32_t> tags, uint32_t& fallback_mask) const {
  const uint32_t lease_amount = LeaseAmount(amount);
  uint32_t spent_mask = 0;
  fallback_mask = 0;
  for (size_t w = 0; w < slots.size(); ++w) {
    LimitSlot* slot = slots[w];
    if (slot == nullptr) {
      continue;
    }
    quota::Lease& lease = slot->account.lease();
    lease.CountAttempt(amount);
    if (const std::optional<uint32_t> tag = lease.TrySpend(now_ns, lease_amount)) {
      tags[w] = *tag;
      spent_mask |= 1U << w;
      continue;
    }
    if (amount > 1) {
      slot->account.Want(amount);
    }
    status_->RequestWake();
    if (status_->away.load(std::memory_order_relaxed) && FallbackAdmit(*slot, now_ns, amount)) {
      fallback_mask |= 1U << w;
      continue;
    }
    // Refused: the later limits still count the attempt (their demand), the earlier ones give
    // back what they took.
    for (size_t later = w + 1; later < slots.size(); ++later) {
      if (slots[later] != nullptr) {
        slots[later]->account.lease().CountAttempt(amount);
      }
    }
    GiveBack(slots, w, amount, now_ns, tags, spent_mask, fallback_mask);
    fallback_mask = 0;
    return static_cast<int>(w);
  }
  if (fallback_mask != 0) {
    for (size_t w = 0; w < slots.size(); ++w) {
      if ((fallback_mask & (1U << w)) != 0) {
        slots[w]->account.CountFallbackAdmitted(amount);
        status_->fallback_admitted.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  return -1;
}

auth::Decision FleetLeases::Spend(const Slots& slots, size_t first, uint64_t amount, int64_t now_ns,
                                  std::array<uint32_t, 3>& tags, uint8_t& fallback_mask) const {
  const std::array<LimitSlot*, 3> three = {slots[first].get(), slots[first + 1].get(),
                                           slots[first + 2].get()};
  uint32_t mask = 0;
  const int refused = SpendSlots(three, amount, now_ns, tags, mask);
  fallback_mask = static_cast<uint8_t>(mask);
  auth::Decision decision;
  if (refused >= 0) {
    const LimitSlot& slot = *three[refused];
    decision.allowed = false;
    decision.window = kAuthWindows[refused];
    decision.limit = slot.limit;
    if (status_->away.load(std::memory_order_relaxed)) {
      LimitSlot& away_slot = *three[refused];
      absl::MutexLock lock(&away_slot.fallback_mu);
      decision.remaining =
          FallbackLedger(away_slot, status_->fleet_size.load(std::memory_order_relaxed), now_ns)
              .Remaining(now_ns / kNsPerMs);
    } else {
      decision.remaining = slot.fleet_remaining.load(std::memory_order_relaxed);
    }
    const int64_t until = slot.no_credit_until_ns.load(std::memory_order_relaxed);
    decision.reset_after_seconds =
        until > now_ns ? (until - now_ns + kNsPerSecond - 1) / kNsPerSecond : 1;
    decision.credit_pending = until <= now_ns && !status_->away.load(std::memory_order_relaxed);
  }
  return decision;  // allowed: nothing else to say (no headers on an admitted request)
}

auth::Decision FleetLeases::Admit(const auth::Client& client, int64_t now_ns,
                                  auth::TokenHold* held) const {
  if (client.anonymous() || client.index() >= slots_.size()) {
    return {};
  }
  auth::TokenHold taken;
  const auth::Decision decision =
      Spend(slots_[client.index()], kRequestSlots, 1, now_ns, taken.tags, taken.fallback_mask);
  if (held != nullptr && decision.allowed) {
    taken.reserved = 1;
    *held = taken;
  }
  return decision;
}

void FleetLeases::Release(const auth::Client& client, const auth::TokenHold& held,
                          int64_t now_ns) const {
  if (held.reserved == 0 || client.anonymous() || client.index() >= slots_.size()) {
    return;
  }
  Refund(slots_[client.index()], kRequestSlots, held, held.reserved, now_ns);
}

void FleetLeases::Refund(const Slots& slots, size_t first, const auth::TokenHold& hold,
                         uint64_t amount, int64_t now_ns) const {
  for (size_t w = 0; w < 3; ++w) {
    if (LimitSlot* slot = slots[first + w].get(); slot != nullptr) {
      GiveBackTo(*slot, (hold.fallback_mask & (1U << w)) != 0, hold.tags[w], amount, now_ns);
    }
  }
}

bool FleetLeases::LimitsTokens(const auth::Client& client) const {
  return !client.anonymous() && client.index() < token_limited_.size() &&
         token_limited_[client.index()] != 0;
}

auth::Decision FleetLeases::ReserveTokens(const auth::Client& client, uint64_t tokens,
                                          int64_t now_ns, auth::TokenHold& hold) const {
  if (!LimitsTokens(client) || tokens == 0) {
    return {};
  }
  hold.fallback_mask = 0;
  const auth::Decision decision =
      Spend(slots_[client.index()], kTokenSlots, tokens, now_ns, hold.tags, hold.fallback_mask);
  hold.reserved = decision.allowed ? tokens : 0;
  return decision;
}

void FleetLeases::SettleTokens(const auth::Client& client, const auth::TokenHold& hold,
                               uint64_t used, int64_t now_ns) const {
  if (hold.reserved == 0 || used == hold.reserved || !LimitsTokens(client)) {
    return;
  }
  const Slots& slots = slots_[client.index()];
  if (used < hold.reserved) {
    Refund(slots, kTokenSlots, hold, hold.reserved - used, now_ns);
    return;
  }
  const uint64_t excess = used - hold.reserved;
  for (size_t w = 0; w < 3; ++w) {
    LimitSlot* slot = slots[kTokenSlots + w].get();
    if (slot == nullptr) {
      continue;
    }
    if ((hold.fallback_mask & (1U << w)) != 0) {
      // Fallback share: the local ledger takes the excess, also reported to the control plane
      // like any fallback admission.
      absl::MutexLock lock(&slot->fallback_mu);
      slot->fallback->Record(now_ns / kNsPerMs, excess);
      slot->account.CountFallbackAdmitted(excess);
      continue;
    }
    quota::Lease& lease = slot->account.lease();
    lease.Charge(now_ns, excess);
    if (lease.debt() > 0) {
      status_->RequestWake();  // the next grant pays it
    }
  }
}

bool FleetLeases::SpentAt(const selection::CompiledBackend& backend, int64_t now_ns,
                          bool ask) const {
  if (backend.index() >= budgets_.size()) {
    return false;
  }
  const BackendBudget& budget = budgets_[backend.index()];
  const bool away = status_->away.load(std::memory_order_relaxed);
  for (const std::vector<LimitSlot*>* slots : {&budget.requests, &budget.tokens}) {
    for (LimitSlot* slot : *slots) {
      if (slot->account.lease().credit(now_ns) > 0) {
        continue;
      }
      if (ask) {
        status_->RequestWake();
      }
      if (!away || !FallbackHas(*slot, now_ns, 1)) {
        return true;
      }
    }
  }
  return false;
}

bool FleetLeases::SpendBudget(const selection::CompiledBackend& backend, int64_t now_ns) const {
  if (backend.index() >= budgets_.size() || budgets_[backend.index()].requests.empty()) {
    return true;
  }
  const std::vector<LimitSlot*>& slots = budgets_[backend.index()].requests;
  std::array<uint32_t, 32> tags{};
  uint32_t fallback_mask = 0;
  return SpendSlots(std::span(slots.data(), std::min<size_t>(slots.size(), tags.size())), 1, now_ns,
                    tags, fallback_mask) < 0;
}

void FleetLeases::ChargeBudgetTokens(const selection::CompiledBackend& backend, uint64_t tokens,
                                     int64_t now_ns) const {
  if (backend.index() >= budgets_.size() || tokens == 0) {
    return;
  }
  const bool away = status_->away.load(std::memory_order_relaxed);
  for (LimitSlot* slot : budgets_[backend.index()].tokens) {
    quota::Lease& lease = slot->account.lease();
    lease.CountAttempt(tokens);
    if (away && lease.credit(now_ns) < tokens) {
      // Fallback share: counted locally and reported like any fallback admission.
      absl::MutexLock lock(&slot->fallback_mu);
      FallbackLedger(*slot, status_->fleet_size.load(std::memory_order_relaxed), now_ns)
          .Record(now_ns / kNsPerMs, tokens);
      slot->account.CountFallbackAdmitted(tokens);
      continue;
    }
    lease.Charge(now_ns, tokens);
    if (lease.debt() > 0 || lease.credit(now_ns) == 0) {
      status_->RequestWake();
    }
  }
}

int64_t FleetLeases::BudgetRetryAfterNs(const selection::CompiledBackend& backend,
                                        int64_t now_ns) const {
  if (backend.index() >= budgets_.size() || !Spent(backend, now_ns)) {
    return 0;
  }
  const bool away = status_->away.load(std::memory_order_relaxed);
  const int fleet_size = status_->fleet_size.load(std::memory_order_relaxed);
  int64_t wait = kNsPerSecond;
  const BackendBudget& budget = budgets_[backend.index()];
  for (const std::vector<LimitSlot*>* slots : {&budget.requests, &budget.tokens}) {
    for (LimitSlot* slot : *slots) {
      if (slot->account.lease().credit(now_ns) > 0) {
        continue;
      }
      if (away) {
        // The fallback share's own window says when it frees some.
        absl::MutexLock lock(&slot->fallback_mu);
        const int64_t ms =
            FallbackLedger(*slot, fleet_size, now_ns).MsUntilCredit(now_ns / kNsPerMs);
        wait = std::max(wait, ms * kNsPerMs);
        continue;
      }
      const int64_t until = slot->no_credit_until_ns.load(std::memory_order_relaxed);
      if (until > now_ns) {
        wait = std::max(wait, until - now_ns);
      }
    }
  }
  return wait;
}

bool FleetLeases::CreditPending(const selection::CompiledBackend& backend,
                                int64_t now_ns) const {
  if (backend.index() >= budgets_.size() || status_->away.load(std::memory_order_relaxed)) {
    return false;
  }
  const BackendBudget& budget = budgets_[backend.index()];
  bool dry = false;
  for (const std::vector<LimitSlot*>* slots : {&budget.requests, &budget.tokens}) {
    for (LimitSlot* slot : *slots) {
      if (slot->account.lease().credit(now_ns) > 0) {
        continue;
      }
      if (slot->no_credit_until_ns.load(std::memory_order_relaxed) > now_ns) {
        return false;  // the control plane said this window is spent
      }
      dry = true;
    }
  }
  return dry;
}

void FleetStatus::Answered() {
  absl::MutexLock lock(&waiters_mu_);
  answers.fetch_add(1, std::memory_order_acq_rel);
  for (const auto& [handle, wake] : waiters_) {
    wake();
  }
}

uint64_t FleetStatus::AddWaiter(std::function<void()> wake) {
  absl::MutexLock lock(&waiters_mu_);
  const uint64_t handle = next_waiter_++;
  waiters_.emplace(handle, std::move(wake));
  return handle;
}

void FleetStatus::RemoveWaiter(uint64_t handle) {
  absl::MutexLock lock(&waiters_mu_);
  waiters_.erase(handle);
}

size_t FleetStatus::waiting() const {
  absl::MutexLock lock(&waiters_mu_);
  return waiters_.size();
}

QuotaClient::QuotaClient(std::shared_ptr<FleetStatus> status,
                         std::function<std::shared_ptr<const FleetLeases>()> current)
    : status_(std::move(status)), current_(std::move(current)), instance_([] {
        std::random_device device;
        return (static_cast<uint64_t>(device()) << 32) ^ device();
      }()) {}

std::optional<v1::QuotaReport> QuotaClient::Collect(int64_t now_ns, bool connected) {
  absl::MutexLock lock(&mu_);
  leases_ = current_();
  status_->wake_requested.store(false);
  if (leases_ == nullptr) {
    return std::nullopt;
  }
  if (unanswered_since_ns_ != 0 && now_ns - unanswered_since_ns_ >= kAnswerTimeoutNs &&
      !status_->away.exchange(true)) {
    status_->Answered();  // requests waiting for credit go to the fallback share
  }
  if (!connected) {
    for (const auto& [key, slot] : leases_->by_key()) {
      slot->account.ExpireOnly(now_ns);
    }
    status_->away.store(true);
    return std::nullopt;
  }
  v1::QuotaReport report;
  report.set_instance(instance_);
  report.set_echo(now_ns);
  bool asked = false;
  for (const auto& [key, slot] : leases_->by_key()) {
    std::optional<quota::LeaseAccount::Usage> usage = slot->account.Poll(now_ns);
    if (!usage.has_value()) {
      continue;
    }
    slot->account.Sent(*usage, now_ns);
    v1::QuotaUsage* out = report.add_usages();
    const auto& [scope, id, window] = key;
    if (scope == v1::QUOTA_SCOPE_UNSPECIFIED) {
      out->set_user_id(id);
    } else {
      out->set_scope(static_cast<v1::QuotaScope>(scope));
      out->set_budget_id(id);
    }
    out->set_window(slot->window);
    out->set_demand_per_second(usage->demand_per_second);
    out->set_ask(usage->ask);
    for (const quota::Lease::Ended& ended : usage->returns) {
      v1::QuotaReturn* back = out->add_returns();
      back->set_slice(ended.slice);
      back->set_unspent(ended.unspent);
    }
    out->set_recent_admitted(usage->recent_admitted);
    out->set_held(usage->held);
    out->set_fallback_admitted(usage->fallback_admitted);
    out->set_wanted(usage->wanted);
    asked |= usage->ask;
  }
  if (report.usages_size() == 0) {
    return std::nullopt;
  }
  if (asked && unanswered_since_ns_ == 0) {
    unanswered_since_ns_ = now_ns;
  }
  return report;
}

void QuotaClient::OnAnswer(const v1::QuotaGrants& grants, int64_t now_ns) {
  absl::MutexLock lock(&mu_);
  unanswered_since_ns_ = 0;
  rebuilding_ = grants.rebuilding();
  if (!grants.rebuilding()) {
    // A control plane that has just started has not heard from the whole fleet yet.
    status_->fleet_size.store(static_cast<int>(grants.fleet_size()));
  }
  status_->away.store(grants.rebuilding());
  const std::shared_ptr<const FleetLeases> leases = leases_ != nullptr ? leases_ : current_();
  if (leases == nullptr) {
    status_->Answered();
    return;
  }
  for (const v1::QuotaGrant& grant : grants.grants()) {
    const bool user = grant.scope() == v1::QUOTA_SCOPE_UNSPECIFIED;
    const auto it = leases->by_key().find(LimitKey{static_cast<int>(grant.scope()),
                                                   user ? grant.user_id() : grant.budget_id(),
                                                   static_cast<int>(grant.window())});
    if (it == leases->by_key().end()) {
      continue;
    }
    LimitSlot& slot = *it->second;
    const int64_t retry_after_ns = TimeUtil::DurationToNanoseconds(grant.retry_after());
    slot.account.OnGrant(grants.echo(), grant.slice(), grant.credit(),
                         TimeUtil::DurationToNanoseconds(grant.valid_for()), retry_after_ns);
    slot.no_credit_until_ns.store(
        grant.credit() == 0 && grant.remaining() == 0 ? now_ns + retry_after_ns : 0);
    slot.fleet_remaining.store(grant.remaining());
  }
  status_->Answered();  // after the grants: a waiting request finds them
}

void QuotaClient::OnStreamLost() {
  absl::MutexLock lock(&mu_);
  unanswered_since_ns_ = 0;
  status_->away.store(true);
  status_->Answered();  // waiting requests fall back to the fallback share
  if (leases_ == nullptr) {
    return;
  }
  for (const auto& [key, slot] : leases_->by_key()) {
    slot->account.OnStreamLost();
  }
}

}  // namespace berry::fleet
