#include "control-plane/quota/quota_authority.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "google/protobuf/util/time_util.h"

namespace berry::control_plane {
namespace {

using google::protobuf::util::TimeUtil;

}  // namespace

int64_t QuotaWindowMs(v1::QuotaWindow window) {
  switch (window) {
    case v1::QUOTA_WINDOW_MINUTE:
    case v1::QUOTA_WINDOW_TOKENS_MINUTE:
      return 60'000;
    case v1::QUOTA_WINDOW_HOUR:
    case v1::QUOTA_WINDOW_TOKENS_HOUR:
      return 3'600'000;
    case v1::QUOTA_WINDOW_DAY:
    case v1::QUOTA_WINDOW_TOKENS_DAY:
      return 86'400'000;
    default:
      return 0;
  }
}

QuotaAuthority::QuotaAuthority(QuotaOptions options, absl::Time started)
    : options_(options), started_(started) {}

void QuotaAuthority::TakeLimitsLocked(int scope, const std::string& id, const v1::RateLimit& limit,
                                      absl::flat_hash_map<Key, std::unique_ptr<Entry>>& next) {
  for (const auto& [window, value] :
       {std::pair{v1::QUOTA_WINDOW_MINUTE, limit.requests_per_minute()},
        std::pair{v1::QUOTA_WINDOW_HOUR, limit.requests_per_hour()},
        std::pair{v1::QUOTA_WINDOW_DAY, limit.requests_per_day()},
        std::pair{v1::QUOTA_WINDOW_TOKENS_MINUTE, limit.tokens_per_minute()},
        std::pair{v1::QUOTA_WINDOW_TOKENS_HOUR, limit.tokens_per_hour()},
        std::pair{v1::QUOTA_WINDOW_TOKENS_DAY, limit.tokens_per_day()}}) {
    if (value == 0) {
      continue;
    }
    Key key{scope, id, static_cast<int>(window)};
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second->ledger.limit() == value) {
      next.emplace(key, std::move(it->second));
      continue;
    }
    auto entry = std::make_unique<Entry>(value, QuotaWindowMs(window), options_.slices);
    entry->window_ms = QuotaWindowMs(window);
    next.emplace(std::move(key), std::move(entry));
  }
}

void QuotaAuthority::SetTable(const v1::RouteTable& table) {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_map<Key, std::unique_ptr<Entry>> next;
  for (const v1::ClientKey& client : table.client_keys()) {
    TakeLimitsLocked(v1::QUOTA_SCOPE_UNSPECIFIED, client.id(), client.rate_limit(), next);
  }
  for (const v1::Provider& provider : table.providers()) {
    TakeLimitsLocked(v1::QUOTA_SCOPE_PROVIDER, provider.id(), provider.budget(), next);
  }
  for (const v1::CustomModel& model : table.models()) {
    for (const v1::Backend& backend : model.backends()) {
      TakeLimitsLocked(v1::QUOTA_SCOPE_BACKEND, backend.id(), backend.budget(), next);
    }
  }
  entries_ = std::move(next);
}

int QuotaAuthority::FleetSizeLocked(int64_t now_ms) const {
  int size = 0;
  for (const auto& [id, node] : nodes_) {
    size += now_ms - node.last_report_ms < absl::ToInt64Milliseconds(options_.fleet_member_for);
  }
  return std::max(size, 1);
}

std::optional<v1::QuotaGrants> QuotaAuthority::Handle(const v1::StreamLoadReportsRequest& report,
                                                      const std::string& node_id, absl::Time now) {
  if (!report.has_quota() || report.quota().usages_size() == 0 || report.sequence() == 0) {
    return std::nullopt;
  }
  const v1::QuotaReport& account = report.quota();
  const int64_t now_ms = absl::ToUnixMillis(now);
  absl::MutexLock lock(&mu_);
  NodeSeen& seen = nodes_[node_id];
  if (seen.instance != account.instance()) {
    seen = NodeSeen{.instance = account.instance()};  // a new proxy process: sequences restart
  }
  if (report.sequence() <= seen.last_sequence) {
    return std::nullopt;  // already applied
  }
  seen.last_sequence = report.sequence();
  seen.last_report_ms = now_ms;
  const bool seed = !seen.seeded;
  seen.seeded = true;
  const bool rebuilding = now - started_ < options_.rebuild;

  v1::QuotaGrants grants;
  grants.set_echo(account.echo());
  grants.set_rebuilding(rebuilding);
  grants.set_fleet_size(static_cast<uint32_t>(FleetSizeLocked(now_ms)));
  for (const v1::QuotaUsage& usage : account.usages()) {
    const bool user = usage.scope() == v1::QUOTA_SCOPE_UNSPECIFIED;
    const auto it = entries_.find(Key{static_cast<int>(usage.scope()),
                                      user ? usage.user_id() : usage.budget_id(),
                                      static_cast<int>(usage.window())});
    if (it == entries_.end()) {
      continue;  // not limited (any more)
    }
    Entry& entry = *it->second;
    quota::SlidingLedger& ledger = entry.ledger;
    NodeShare& share = entry.nodes[node_id];
    // Forget grants of slices that left the ring: their returns no longer matter.
    const int64_t oldest = ledger.Slice(now_ms) - ledger.slices() - 1;
    absl::erase_if(share.granted_by_slice, [oldest](const auto& kv) { return kv.first < oldest; });
    if (seed) {
      // recent_admitted includes this report's fallback admissions.
      ledger.Record(now_ms, usage.recent_admitted() + usage.held());
    } else {
      ledger.Record(now_ms, usage.fallback_admitted());
    }
    for (const v1::QuotaReturn& back : usage.returns()) {
      // At most what this instance granted this proxy in that slice (a lease an earlier instance
      // granted was seeded, not debited to its slice).
      auto granted = share.granted_by_slice.find(back.slice());
      if (granted == share.granted_by_slice.end()) {
        continue;
      }
      const uint64_t amount = std::min(granted->second, back.unspent());
      granted->second -= amount;
      ledger.Refund(back.slice(), amount);
      returned_ += amount;
    }
    if (usage.demand_per_second() > 0 || usage.ask()) {
      share.last_active_ms = now_ms;
    }
    if (!usage.ask()) {
      continue;
    }
    v1::QuotaGrant* grant = grants.add_grants();
    grant->set_user_id(usage.user_id());
    grant->set_scope(usage.scope());
    grant->set_budget_id(usage.budget_id());
    grant->set_window(usage.window());
    grant->set_limit(ledger.limit());
    *grant->mutable_window_length() = TimeUtil::MillisecondsToDuration(entry.window_ms);
    const int64_t slice = ledger.Slice(now_ms);
    grant->set_slice(slice);
    if (!rebuilding) {
      int active = 0;
      for (const auto& [id, node] : entry.nodes) {
        active += now_ms - node.last_active_ms < 2 * ledger.slice_ms();
      }
      const uint64_t remaining = ledger.Remaining(now_ms);
      // At least what the proxy's refused request needs (a token reservation), while it fits.
      const uint64_t size =
          std::max(quota::GrantSize(usage.demand_per_second(),
                                    2.0 * static_cast<double>(ledger.slice_ms()) / 1000.0,
                                    remaining, active),
                   std::min(usage.wanted(), remaining));
      const uint64_t credit = ledger.Debit(now_ms, size);
      if (credit > 0) {
        share.granted_by_slice[slice] += credit;
        granted_ += credit;
      }
      grant->set_credit(credit);
    }
    *grant->mutable_valid_for() =
        TimeUtil::MillisecondsToDuration(ledger.LeaseEndMs(slice) - now_ms);
    grant->set_remaining(ledger.Remaining(now_ms));
    *grant->mutable_retry_after() = TimeUtil::MillisecondsToDuration(
        rebuilding ? absl::ToInt64Milliseconds(options_.rebuild - (now - started_))
                   : ledger.MsUntilCredit(now_ms));
  }
  return grants;
}

uint64_t QuotaAuthority::granted() const {
  absl::MutexLock lock(&mu_);
  return granted_;
}

uint64_t QuotaAuthority::returned() const {
  absl::MutexLock lock(&mu_);
  return returned_;
}

std::optional<uint64_t> QuotaAuthority::Remaining(v1::QuotaScope scope, const std::string& id,
                                                  v1::QuotaWindow window, absl::Time now) {
  absl::MutexLock lock(&mu_);
  const auto it = entries_.find(Key{static_cast<int>(scope), id, static_cast<int>(window)});
  if (it == entries_.end()) {
    return std::nullopt;
  }
  return it->second->ledger.Remaining(absl::ToUnixMillis(now));
}

}  // namespace berry::control_plane
