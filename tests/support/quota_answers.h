// The control plane's side of the quota exchange for tests that drive a fleet::QuotaClient by
// hand: the answer to a proxy's quota report, one grant per limit it asks for.
#pragma once

#include <cstdint>

#include "berry/v1/quota.pb.h"

namespace berry::test_support {

struct GrantTerms {
  uint64_t credit = 0;
  uint64_t limit = 120;
  // What the window has left after the grant; credit 0 with remaining 0 says the window is
  // spent until retry_after.
  uint64_t remaining = 100;
  int64_t slice = 1000;
  int64_t valid_for_seconds = 2;
  int64_t retry_after_seconds = 0;
};

// Grants `terms` to every usage of `report` that asks (every usage when `asks_only` is false),
// for the user or budget it names, in a fleet of `fleet_size`.
inline v1::QuotaGrants AnswerAsks(const v1::QuotaReport& report, const GrantTerms& terms,
                                  int fleet_size = 3, bool asks_only = true) {
  v1::QuotaGrants grants;
  grants.set_echo(report.echo());
  grants.set_fleet_size(fleet_size);
  for (const v1::QuotaUsage& usage : report.usages()) {
    if (asks_only && !usage.ask()) {
      continue;
    }
    v1::QuotaGrant* grant = grants.add_grants();
    grant->set_scope(usage.scope());
    grant->set_user_id(usage.user_id());
    grant->set_budget_id(usage.budget_id());
    grant->set_window(usage.window());
    grant->set_slice(terms.slice);
    grant->set_credit(terms.credit);
    grant->set_limit(terms.limit);
    grant->set_remaining(terms.remaining);
    grant->mutable_valid_for()->set_seconds(terms.valid_for_seconds);
    grant->mutable_retry_after()->set_seconds(terms.retry_after_seconds);
  }
  return grants;
}

}  // namespace berry::test_support
