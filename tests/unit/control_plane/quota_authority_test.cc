#include "control-plane/quota/quota_authority.h"

#include <gtest/gtest.h>

namespace berry::control_plane::quota_authority_test {
namespace {

v1::RouteTable TableWithAlice(uint64_t per_minute) {
  v1::RouteTable table;
  v1::ClientKey* alice = table.add_client_keys();
  alice->set_id("alice");
  alice->mutable_rate_limit()->set_requests_per_minute(per_minute);
  table.add_client_keys()->set_id("bob");  // unlimited
  return table;
}

struct Account {
  uint64_t sequence = 1;
  uint64_t instance = 42;
  double demand = 0;
  bool ask = true;
  std::vector<std::pair<int64_t, uint64_t>> returns = {};
  uint64_t recent_admitted = 0;
  uint64_t held = 0;
  uint64_t fallback_admitted = 0;
  std::string user = std::string("alice");
};

v1::StreamLoadReportsRequest Report(const Account& account) {
  v1::StreamLoadReportsRequest report;
  report.set_sequence(account.sequence);
  v1::QuotaReport* quota = report.mutable_quota();
  quota->set_instance(account.instance);
  quota->set_echo(123);
  v1::QuotaUsage* usage = quota->add_usages();
  usage->set_user_id(account.user);
  usage->set_window(v1::QUOTA_WINDOW_MINUTE);
  usage->set_demand_per_second(account.demand);
  usage->set_ask(account.ask);
  for (const auto& [slice, unspent] : account.returns) {
    v1::QuotaReturn* back = usage->add_returns();
    back->set_slice(slice);
    back->set_unspent(unspent);
  }
  usage->set_recent_admitted(account.recent_admitted);
  usage->set_held(account.held);
  usage->set_fallback_admitted(account.fallback_admitted);
  return report;
}

class QuotaAuthorityTest : public ::testing::Test {
 protected:
  const absl::Time start_ = absl::FromUnixSeconds(1'800'000'000);
  QuotaAuthority authority_{QuotaOptions{.rebuild = absl::Seconds(5)}, start_};
  const absl::Time after_rebuild_ = start_ + absl::Seconds(10);

  void SetUp() override { authority_.SetTable(TableWithAlice(120)); }
};

TEST_F(QuotaAuthorityTest, GrantsNothingWhileRebuildingAndSaysHowLong) {
  auto grants = authority_.Handle(Report({.demand = 10}), "p1", start_ + absl::Seconds(2));
  ASSERT_TRUE(grants.has_value());
  EXPECT_TRUE(grants->rebuilding());
  ASSERT_EQ(grants->grants_size(), 1);
  EXPECT_EQ(grants->grants(0).credit(), 0u);
  EXPECT_EQ(grants->grants(0).retry_after().seconds(), 3);
  EXPECT_EQ(grants->echo(), 123);
}

TEST_F(QuotaAuthorityTest, GrantsByDemandWithALeaseToTheEndOfTheNextSlice) {
  auto grants =
      authority_.Handle(Report({.demand = 5}), "p1", after_rebuild_ + absl::Milliseconds(300));
  ASSERT_TRUE(grants.has_value());
  ASSERT_EQ(grants->grants_size(), 1);
  const v1::QuotaGrant& grant = grants->grants(0);
  EXPECT_EQ(grant.credit(), 10u);  // 5/s over two slices of 1 s
  EXPECT_EQ(grant.limit(), 120u);
  EXPECT_EQ(grant.remaining(), 110u);
  EXPECT_EQ(grant.valid_for().seconds(), 1);  // to the end of the next slice: 1.7 s
  EXPECT_EQ(grant.valid_for().nanos(), 700'000'000);
  EXPECT_EQ(grant.window_length().seconds(), 60);
}

TEST_F(QuotaAuthorityTest, UnlimitedUsersGetNoGrant) {
  auto grants = authority_.Handle(Report({.user = "bob"}), "p1", after_rebuild_);
  ASSERT_TRUE(grants.has_value());
  EXPECT_EQ(grants->grants_size(), 0);
}

TEST_F(QuotaAuthorityTest, ReturnsCountOnceEvenWhenAReportIsSentAgain) {
  auto first = authority_.Handle(Report({.sequence = 1, .demand = 100}), "p1", after_rebuild_);
  ASSERT_TRUE(first.has_value());
  const uint64_t credit = first->grants(0).credit();
  const int64_t slice = first->grants(0).slice();
  ASSERT_GT(credit, 0u);
  const absl::Time later = after_rebuild_ + absl::Seconds(3);
  const Account returning{.sequence = 2, .ask = false, .returns = {{slice, credit}}};
  EXPECT_TRUE(authority_.Handle(Report(returning), "p1", later).has_value());
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, later), 120u);
  // The same report again (a reconnect): ignored, and returns no more than was granted.
  EXPECT_FALSE(authority_.Handle(Report(returning), "p1", later).has_value());
  const Account inflated{.sequence = 3, .ask = false, .returns = {{slice, 500}}};
  authority_.Handle(Report(inflated), "p1", later);
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, later), 120u);
  EXPECT_EQ(authority_.returned(), credit);
}

TEST_F(QuotaAuthorityTest, ARestartedControlPlaneStartsFromWhatTheProxiesAdmitted) {
  // p1 admitted 70 in the last minute and holds 10; p2 admitted 30 on its fallback share.
  authority_.Handle(Report({.recent_admitted = 70, .held = 10}), "p1", start_);
  authority_.Handle(Report({.recent_admitted = 30}), "p2", start_);
  // Later fallback admissions are debited as they are reported.
  authority_.Handle(Report({.sequence = 2, .fallback_admitted = 4}), "p2", start_);
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, after_rebuild_), 6u);
  // A return of a lease the previous instance granted is not credited here.
  authority_.Handle(Report({.sequence = 2, .ask = false, .returns = {{1, 10}}}), "p1",
                    after_rebuild_);
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, after_rebuild_), 6u);
}

TEST_F(QuotaAuthorityTest, ARestartedProxyIsNotMistakenForADuplicate) {
  authority_.Handle(Report({.sequence = 5, .demand = 1}), "p1", after_rebuild_);
  EXPECT_FALSE(authority_.Handle(Report({.sequence = 1}), "p1", after_rebuild_).has_value());
  EXPECT_TRUE(
      authority_.Handle(Report({.sequence = 1, .instance = 43}), "p1", after_rebuild_).has_value());
}

TEST_F(QuotaAuthorityTest, ExhaustedAnswersZeroWithTheTimeCreditFreesUp) {
  authority_.Handle(Report({.recent_admitted = 120}), "p1", start_);  // seeded full at slice S
  auto grants = authority_.Handle(Report({.sequence = 2, .demand = 5}), "p1", after_rebuild_);
  ASSERT_TRUE(grants.has_value());
  EXPECT_EQ(grants->grants(0).credit(), 0u);
  EXPECT_EQ(grants->grants(0).remaining(), 0u);
  // Seeded at start_ (slice S); free from slice S + 62, 52 s after after_rebuild_.
  EXPECT_EQ(grants->grants(0).retry_after().seconds(), 52);
}

TEST_F(QuotaAuthorityTest, FleetSizeCountsProxiesThatReportedRecently) {
  authority_.Handle(Report({.demand = 1}), "p1", after_rebuild_);
  authority_.Handle(Report({.demand = 1}), "p2", after_rebuild_);
  auto grants = authority_.Handle(Report({.demand = 1}), "p3", after_rebuild_);
  EXPECT_EQ(grants->fleet_size(), 3u);
  grants = authority_.Handle(Report({.sequence = 2}), "p3", after_rebuild_ + absl::Seconds(30));
  EXPECT_EQ(grants->fleet_size(), 1u);
}

TEST_F(QuotaAuthorityTest, AChangedLimitStartsANewLedgerAnUnchangedOneKeepsIts) {
  authority_.Handle(Report({.demand = 100}), "p1", after_rebuild_);
  const auto before = authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, after_rebuild_);
  authority_.SetTable(TableWithAlice(120));
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, after_rebuild_), before);
  authority_.SetTable(TableWithAlice(60));
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, after_rebuild_), 60u);
}

TEST_F(QuotaAuthorityTest, TokenWindowsAreLedgersInTokensAndGrantWhatARequestWants) {
  v1::RouteTable table = TableWithAlice(120);
  table.mutable_client_keys(0)->mutable_rate_limit()->set_tokens_per_minute(6000);
  authority_.SetTable(table);
  v1::StreamLoadReportsRequest report = Report({.demand = 0});
  v1::QuotaUsage* usage = report.mutable_quota()->mutable_usages(0);
  usage->set_window(v1::QUOTA_WINDOW_TOKENS_MINUTE);
  usage->set_wanted(700);  // a reservation larger than demand alone would be granted

  auto grants = authority_.Handle(report, "p1", after_rebuild_);
  ASSERT_TRUE(grants.has_value());
  ASSERT_EQ(grants->grants_size(), 1);
  const v1::QuotaGrant& grant = grants->grants(0);
  EXPECT_EQ(grant.window(), v1::QUOTA_WINDOW_TOKENS_MINUTE);
  EXPECT_EQ(grant.limit(), 6000u);
  EXPECT_EQ(grant.credit(), 700u);
  EXPECT_EQ(grant.remaining(), 5300u);
  EXPECT_EQ(grant.window_length().seconds(), 60);
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_TOKENS_MINUTE, after_rebuild_),
            std::optional<uint64_t>(5300));
  // The request limit has its own ledger.
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, after_rebuild_),
            std::optional<uint64_t>(120));
}

TEST_F(QuotaAuthorityTest, WhatIsWantedIsCappedByWhatRemains) {
  v1::RouteTable table = TableWithAlice(120);
  table.mutable_client_keys(0)->mutable_rate_limit()->set_tokens_per_minute(500);
  authority_.SetTable(table);
  v1::StreamLoadReportsRequest report = Report({.demand = 0});
  report.mutable_quota()->mutable_usages(0)->set_window(v1::QUOTA_WINDOW_TOKENS_MINUTE);
  report.mutable_quota()->mutable_usages(0)->set_wanted(700);

  auto grants = authority_.Handle(report, "p1", after_rebuild_);
  ASSERT_TRUE(grants.has_value());
  ASSERT_EQ(grants->grants_size(), 1);
  EXPECT_EQ(grants->grants(0).credit(), 500u);
  EXPECT_EQ(grants->grants(0).remaining(), 0u);
}

TEST_F(QuotaAuthorityTest, BudgetsOfProvidersAndBackendsHaveTheirOwnLedgers) {
  v1::RouteTable table = TableWithAlice(120);
  v1::Provider* provider = table.add_providers();
  provider->set_id("alice");  // the same id as the user: a different ledger
  provider->mutable_budget()->set_requests_per_minute(30);
  v1::Backend* backend = table.add_models()->add_backends();
  backend->set_id("chat/alice/m");
  backend->mutable_budget()->set_tokens_per_minute(1000);
  authority_.SetTable(table);

  v1::StreamLoadReportsRequest report = Report({.demand = 0});
  v1::QuotaUsage* usage = report.mutable_quota()->mutable_usages(0);
  usage->clear_user_id();
  usage->set_scope(v1::QUOTA_SCOPE_PROVIDER);
  usage->set_budget_id("alice");
  usage->set_wanted(30);
  v1::QuotaUsage* tokens = report.mutable_quota()->add_usages();
  tokens->set_scope(v1::QUOTA_SCOPE_BACKEND);
  tokens->set_budget_id("chat/alice/m");
  tokens->set_window(v1::QUOTA_WINDOW_TOKENS_MINUTE);
  tokens->set_ask(true);
  tokens->set_wanted(400);

  auto grants = authority_.Handle(report, "p1", after_rebuild_);
  ASSERT_TRUE(grants.has_value());
  ASSERT_EQ(grants->grants_size(), 2);
  EXPECT_EQ(grants->grants(0).scope(), v1::QUOTA_SCOPE_PROVIDER);
  EXPECT_EQ(grants->grants(0).budget_id(), "alice");
  EXPECT_EQ(grants->grants(0).limit(), 30u);
  EXPECT_EQ(grants->grants(0).credit(), 30u);
  EXPECT_EQ(grants->grants(1).scope(), v1::QUOTA_SCOPE_BACKEND);
  EXPECT_EQ(grants->grants(1).credit(), 400u);
  EXPECT_EQ(authority_.Remaining(v1::QUOTA_SCOPE_PROVIDER, "alice", v1::QUOTA_WINDOW_MINUTE,
                                 after_rebuild_),
            std::optional<uint64_t>(0));
  EXPECT_EQ(authority_.Remaining(v1::QUOTA_SCOPE_BACKEND, "chat/alice/m",
                                 v1::QUOTA_WINDOW_TOKENS_MINUTE, after_rebuild_),
            std::optional<uint64_t>(600));
  // The user's own limit is untouched.
  EXPECT_EQ(authority_.Remaining("alice", v1::QUOTA_WINDOW_MINUTE, after_rebuild_),
            std::optional<uint64_t>(120));
  // A budget the table does not have is not granted.
  EXPECT_EQ(authority_.Remaining(v1::QUOTA_SCOPE_BACKEND, "chat/alice/m", v1::QUOTA_WINDOW_MINUTE,
                                 after_rebuild_),
            std::nullopt);
}

}  // namespace
}  // namespace berry::control_plane::quota_authority_test
