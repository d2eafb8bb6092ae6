// QuotaAuthority: the control plane's half of fleet-wide per-user limits and provider budgets
// (README.md, "Fleet-wide rate limits", "Provider budgets"). One SlidingLedger
// (common/quota/ledger.h) per (user, limit) and per (provider or backend, budget window) of the
// published route table; every proxy's quota account (QuotaReport, on StreamLoadReports) returns
// the credit of leases that ended and asks for more; the answer (QuotaGrants) debits the ledger's
// current slice and says how long the lease lives.
//
// Exactly once: a report's returns are applied only if its sequence is newer than the last one
// seen from that proxy process (QuotaReport.instance); a duplicate (resent after a reconnect) is
// ignored and answered with nothing.
//
// Restart: a control plane that starts grants nothing for `rebuild` (QuotaGrants.rebuilding);
// proxies keep spending what they hold, then their fallback share. The first account each proxy
// sends to this instance debits, to the current slice, what that proxy admitted in the last
// window plus the credit it still holds, whether or not the limit is exceeded by it: the ledger
// then starts from what the fleet actually did, and returns of leases an earlier instance granted
// are ignored (they were never debited here). A proxy that reconnects after `rebuild` is seeded
// the same way when it does.
//
// Threads: every method may be called from any thread (one mutex; called once per report).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "berry/v1/discovery.pb.h"
#include "berry/v1/route_table.pb.h"
#include "common/quota/ledger.h"

namespace berry::control_plane {

struct QuotaOptions {
  // Slices per window (k in ledger.h): more slices, finer sliding and a tighter utilisation.
  int slices = 60;
  // How long a started control plane collects accounts before it grants.
  absl::Duration rebuild = absl::Seconds(5);
  // A proxy counts in the fleet size while it sent an account this recently.
  absl::Duration fleet_member_for = absl::Seconds(10);
};

class QuotaAuthority {
 public:
  QuotaAuthority(QuotaOptions options, absl::Time started);

  // Takes the limits of `table`'s client keys and the budgets of its providers and backends. A
  // (user, limit) or budget whose value is unchanged keeps its ledger; a changed one starts a
  // new ledger; a removed one is forgotten.
  void SetTable(const berry::v1::RouteTable& table);

  // Applies `report.quota()` from `node_id` at `now` and returns the answer; nullopt when the
  // report carries no quota account or is a duplicate.
  std::optional<berry::v1::QuotaGrants> Handle(const berry::v1::StreamLoadReportsRequest& report,
                                               const std::string& node_id, absl::Time now);

  // For metrics and tests.
  uint64_t granted() const;
  uint64_t returned() const;
  // Remaining credit of (user, window) at `now`; nullopt when not limited.
  std::optional<uint64_t> Remaining(const std::string& user_id, berry::v1::QuotaWindow window,
                                    absl::Time now) {
    return Remaining(berry::v1::QUOTA_SCOPE_UNSPECIFIED, user_id, window, now);
  }
  // The same for a user (QUOTA_SCOPE_UNSPECIFIED) or a budget of a provider or backend (by id).
  std::optional<uint64_t> Remaining(berry::v1::QuotaScope scope, const std::string& id,
                                    berry::v1::QuotaWindow window, absl::Time now);

 private:
  struct NodeShare {
    int64_t last_active_ms = 0;  // last account with demand or an ask
    absl::flat_hash_map<int64_t, uint64_t> granted_by_slice;
  };
  struct Entry {
    Entry(uint64_t limit, int64_t window_ms, int slices) : ledger(limit, window_ms, slices) {}
    quota::SlidingLedger ledger;
    int64_t window_ms;
    absl::flat_hash_map<std::string, NodeShare> nodes;
  };
  struct NodeSeen {
    uint64_t instance = 0;
    uint64_t last_sequence = 0;
    int64_t last_report_ms = 0;
    bool seeded = false;
  };
  // (QuotaScope, user id or budget id, QuotaWindow).
  using Key = std::tuple<int, std::string, int>;

  int FleetSizeLocked(int64_t now_ms) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds to `next` the ledgers of `limit`'s windows for (scope, id), kept from entries_ when
  // their value is unchanged.
  void TakeLimitsLocked(int scope, const std::string& id, const berry::v1::RateLimit& limit,
                        absl::flat_hash_map<Key, std::unique_ptr<Entry>>& next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const QuotaOptions options_;
  const absl::Time started_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<Key, std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, NodeSeen> nodes_ ABSL_GUARDED_BY(mu_);
  uint64_t granted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t returned_ ABSL_GUARDED_BY(mu_) = 0;
};

// Window length of a QuotaWindow in milliseconds (0 for UNSPECIFIED).
int64_t QuotaWindowMs(berry::v1::QuotaWindow window);

}  // namespace berry::control_plane
