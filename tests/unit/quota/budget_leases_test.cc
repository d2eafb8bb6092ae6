// Provider and backend budgets on the proxy's side (FleetLeases as the picker's BudgetGate):
// standalone on the local share, managed on leases the control plane grants.
#include <gtest/gtest.h>

#include "data-plane/quota/fleet_limits.h"
#include "tests/support/quota_answers.h"

namespace berry::fleet::budget_leases_test {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

// Model "chat" over backends a (provider pa) and b (provider pb); `provider_rpm` is pa's
// requests budget, `backend_rpm` a's own, `provider_tpm` pa's tokens budget (0 = none).
std::shared_ptr<const selection::Snapshot> Table(uint64_t provider_rpm, uint64_t backend_rpm,
                                                 uint64_t provider_tpm = 0) {
  v1::RouteTable table;
  for (const char* id : {"pa", "pb"}) {
    v1::Provider* provider = table.add_providers();
    provider->set_id(id);
    provider->set_base_url("http://127.0.0.1:1");
    provider->add_models("m");
    provider->set_enabled(true);
  }
  table.mutable_providers(0)->mutable_budget()->set_requests_per_minute(provider_rpm);
  table.mutable_providers(0)->mutable_budget()->set_tokens_per_minute(provider_tpm);
  v1::CustomModel* model = table.add_models();
  model->set_id("chat");
  model->set_name("chat");
  model->set_enabled(true);
  for (const char* provider : {"pa", "pb"}) {
    v1::Backend* backend = model->add_backends();
    backend->set_id(std::string("chat/") + provider + "/m");
    backend->set_provider_id(provider);
    backend->set_upstream_model("m");
    backend->set_weight(1);
    backend->set_enabled(true);
  }
  model->mutable_backends(0)->mutable_budget()->set_requests_per_minute(backend_rpm);
  auto snapshot = selection::Snapshot::Create(std::move(table));
  EXPECT_TRUE(snapshot.ok()) << snapshot.status();
  return *snapshot;
}

class BudgetLeasesTest : public ::testing::Test {
 protected:
  void Build(uint64_t provider_rpm, uint64_t backend_rpm, uint64_t provider_tpm = 0) {
    snapshot_ = Table(provider_rpm, backend_rpm, provider_tpm);
    leases_ = FleetLeases::Create(nullptr, snapshot_.get(), nullptr, status_);
  }
  const selection::CompiledBackend& a() const { return snapshot_->backends()[0]; }
  const selection::CompiledBackend& b() const { return snapshot_->backends()[1]; }

  std::shared_ptr<FleetStatus> status_ = std::make_shared<FleetStatus>();  // away, size 0
  std::shared_ptr<const selection::Snapshot> snapshot_;
  std::shared_ptr<const FleetLeases> leases_;
};

TEST_F(BudgetLeasesTest, StandaloneSpendsTheWholeBudgetLocallyThenTheBackendIsSpent) {
  Build(/*provider_rpm=*/5, /*backend_rpm=*/0);
  EXPECT_TRUE(leases_->has_budgets());
  int admitted = 0;
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(leases_->Spent(a(), 10 * kSecond), admitted == 5);
    admitted += leases_->SpendBudget(a(), 10 * kSecond) ? 1 : 0;
  }
  EXPECT_EQ(admitted, 5);
  EXPECT_TRUE(leases_->Spent(a(), 10 * kSecond));
  EXPECT_GE(leases_->BudgetRetryAfterNs(a(), 10 * kSecond), kSecond);
  // The other provider has no budget: never spent.
  EXPECT_FALSE(leases_->Spent(b(), 10 * kSecond));
  EXPECT_TRUE(leases_->SpendBudget(b(), 10 * kSecond));
  EXPECT_EQ(leases_->BudgetRetryAfterNs(b(), 10 * kSecond), 0);
  // A sliding window later (60 slices of 1 s, plus the slice it was debited to and the one
  // before: ledger.h) the budget is back.
  EXPECT_TRUE(leases_->Spent(a(), 71 * kSecond));
  EXPECT_FALSE(leases_->Spent(a(), 72 * kSecond));
  EXPECT_TRUE(leases_->SpendBudget(a(), 72 * kSecond));
}

TEST_F(BudgetLeasesTest, TheSmallerOfTheBackendsAndItsProvidersBudgetBinds) {
  Build(/*provider_rpm=*/10, /*backend_rpm=*/3);
  int admitted = 0;
  for (int i = 0; i < 10; ++i) {
    admitted += leases_->SpendBudget(a(), 10 * kSecond) ? 1 : 0;
  }
  EXPECT_EQ(admitted, 3);
  EXPECT_TRUE(leases_->Spent(a(), 10 * kSecond));
}

TEST_F(BudgetLeasesTest, TokensAreChargedAfterTheAnswerAndSpendTheBudget) {
  Build(/*provider_rpm=*/0, /*backend_rpm=*/0, /*provider_tpm=*/1000);
  EXPECT_FALSE(leases_->Spent(a(), 10 * kSecond));
  EXPECT_TRUE(leases_->SpendBudget(a(), 10 * kSecond));  // no request budget: always
  leases_->ChargeBudgetTokens(a(), 600, 10 * kSecond);
  EXPECT_FALSE(leases_->Spent(a(), 10 * kSecond));
  leases_->ChargeBudgetTokens(a(), 400, 10 * kSecond);
  EXPECT_TRUE(leases_->Spent(a(), 10 * kSecond));
  EXPECT_FALSE(leases_->Spent(b(), 10 * kSecond));
}

TEST_F(BudgetLeasesTest, ATableWithoutBudgetsHasNone) {
  Build(0, 0);
  EXPECT_FALSE(leases_->has_budgets());
  EXPECT_FALSE(leases_->Spent(a(), 10 * kSecond));
  EXPECT_TRUE(leases_->SpendBudget(a(), 10 * kSecond));
}

TEST_F(BudgetLeasesTest, AnUnchangedBudgetKeepsItsSlotAcrossTables) {
  Build(/*provider_rpm=*/2, /*backend_rpm=*/0);
  EXPECT_TRUE(leases_->SpendBudget(a(), 10 * kSecond));
  EXPECT_TRUE(leases_->SpendBudget(a(), 10 * kSecond));
  auto next = FleetLeases::Create(nullptr, Table(2, 0).get(), leases_.get(), status_);
  EXPECT_TRUE(next->Spent(a(), 10 * kSecond));  // what was spent stays spent
  auto raised = FleetLeases::Create(nullptr, Table(3, 0).get(), next.get(), status_);
  EXPECT_FALSE(raised->Spent(a(), 10 * kSecond));  // a changed budget starts over
}

TEST_F(BudgetLeasesTest, ManagedAsksForBudgetsAndSpendsTheirLeases) {
  Build(/*provider_rpm=*/100, /*backend_rpm=*/0);
  QuotaClient client(status_, [this] { return leases_; });
  auto report = client.Collect(10 * kSecond, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  ASSERT_EQ(report->usages_size(), 1);
  const v1::QuotaUsage& usage = report->usages(0);
  EXPECT_EQ(usage.scope(), v1::QUOTA_SCOPE_PROVIDER);
  EXPECT_EQ(usage.budget_id(), "pa");
  EXPECT_TRUE(usage.user_id().empty());
  EXPECT_EQ(usage.window(), v1::QUOTA_WINDOW_MINUTE);
  EXPECT_TRUE(usage.ask());

  client.OnAnswer(test_support::AnswerAsks(
                      *report, {.credit = 2, .limit = 100, .remaining = 0, .retry_after_seconds = 30}),
                  10 * kSecond);
  ASSERT_FALSE(status_->away.load());

  EXPECT_TRUE(leases_->SpendBudget(a(), 10 * kSecond));
  EXPECT_TRUE(leases_->SpendBudget(a(), 10 * kSecond));
  EXPECT_TRUE(leases_->Spent(a(), 10 * kSecond));  // connected: no fallback share
  EXPECT_FALSE(leases_->SpendBudget(a(), 10 * kSecond));
  EXPECT_TRUE(status_->wake_requested.load());  // the reporter is asked to get more
  EXPECT_EQ(leases_->BudgetRetryAfterNs(a(), 10 * kSecond), kSecond);  // nothing said: 1 s
  // The next answer says the window is spent for 30 s: that is when the backend is back.
  report = client.Collect(11 * kSecond, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  client.OnAnswer(test_support::AnswerAsks(*report,
                                           {.credit = 0,
                                            .limit = 100,
                                            .remaining = 0,
                                            .slice = 1001,
                                            .retry_after_seconds = 30},
                                           3, /*asks_only=*/false),
                  11 * kSecond);
  EXPECT_EQ(leases_->BudgetRetryAfterNs(a(), 11 * kSecond), 30 * kSecond);
  // A grant for a user of the same name is not the budget's.
  v1::QuotaGrants user_grants =
      test_support::AnswerAsks(*report, {.credit = 5}, 3, /*asks_only=*/false);
  ASSERT_EQ(user_grants.grants_size(), 1);
  user_grants.mutable_grants(0)->set_scope(v1::QUOTA_SCOPE_UNSPECIFIED);
  user_grants.mutable_grants(0)->set_user_id("pa");
  user_grants.mutable_grants(0)->clear_budget_id();
  client.OnAnswer(user_grants, 10 * kSecond);
  EXPECT_TRUE(leases_->Spent(a(), 10 * kSecond));
}

TEST_F(BudgetLeasesTest, ADryLeaseIsCreditPendingUntilTheControlPlaneSaysTheWindowIsSpent) {
  Build(/*provider_rpm=*/100, /*backend_rpm=*/0);
  QuotaClient client(status_, [this] { return leases_; });
  EXPECT_FALSE(leases_->CreditPending(a(), 10 * kSecond)) << "away: the fallback decides";
  auto report = client.Collect(10 * kSecond, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  client.OnAnswer(test_support::AnswerAsks(*report, {.credit = 1, .limit = 100}), 10 * kSecond);
  EXPECT_FALSE(leases_->CreditPending(a(), 10 * kSecond));  // credit left
  EXPECT_TRUE(leases_->SpendBudget(a(), 10 * kSecond));
  EXPECT_TRUE(leases_->Spent(a(), 10 * kSecond));
  // Dry, connected, and the control plane has not said the window is spent: an ask is due.
  EXPECT_TRUE(leases_->CreditPending(a(), 10 * kSecond));
  EXPECT_FALSE(leases_->CreditPending(b(), 10 * kSecond));  // no budget at all
  // The answer says the window is spent for 30 s: nothing to wait for.
  report = client.Collect(10 * kSecond + 1, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  client.OnAnswer(
      test_support::AnswerAsks(
          *report, {.credit = 0, .limit = 100, .remaining = 0, .retry_after_seconds = 30}, 3,
          /*asks_only=*/false),
      10 * kSecond + 1);
  EXPECT_FALSE(leases_->CreditPending(a(), 10 * kSecond + 1));
  EXPECT_EQ(leases_->BudgetRetryAfterNs(a(), 10 * kSecond + 1), 30 * kSecond);
}

TEST_F(BudgetLeasesTest, AwayTokensBeyondTheLeaseAreChargedToTheFallbackShareAndReported) {
  Build(/*provider_rpm=*/0, /*backend_rpm=*/0, /*provider_tpm=*/1000);
  QuotaClient client(status_, [this] { return leases_; });
  auto report = client.Collect(10 * kSecond, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  client.OnAnswer(test_support::AnswerAsks(*report, {.credit = 100, .limit = 1000}, 3,
                                           /*asks_only=*/false),
                  10 * kSecond);
  client.OnStreamLost();  // away: the lease stays valid, the share is ceil(1000 / 3) = 334
  const quota::Lease& lease =
      leases_->by_key()
          .at({v1::QUOTA_SCOPE_PROVIDER, "pa", v1::QUOTA_WINDOW_TOKENS_MINUTE})
          ->account.lease();
  leases_->ChargeBudgetTokens(a(), 50, 10 * kSecond);
  EXPECT_EQ(lease.credit(10 * kSecond), 50u);  // the lease pays while it can
  leases_->ChargeBudgetTokens(a(), 300, 10 * kSecond);
  EXPECT_EQ(lease.credit(10 * kSecond), 50u);  // more than it holds: the fallback share pays
  leases_->ChargeBudgetTokens(a(), 50, 10 * kSecond);
  EXPECT_EQ(lease.credit(10 * kSecond), 0u);
  EXPECT_FALSE(leases_->Spent(a(), 10 * kSecond));  // the share has 34 left
  leases_->ChargeBudgetTokens(a(), 40, 10 * kSecond);
  EXPECT_TRUE(leases_->Spent(a(), 10 * kSecond));  // 340 of 334
  EXPECT_FALSE(leases_->CreditPending(a(), 10 * kSecond));
  // Away, the fallback share's own window says when it frees some: 60 one-second slices after
  // the slice it was charged to, plus the one before (ledger.h).
  const int64_t retry = leases_->BudgetRetryAfterNs(a(), 10 * kSecond);
  EXPECT_GE(retry, 60 * kSecond);
  EXPECT_LE(retry, 62 * kSecond);
  // Back on a stream, the account reports what the fallback share admitted.
  report = client.Collect(11 * kSecond, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  ASSERT_EQ(report->usages_size(), 1);
  EXPECT_EQ(report->usages(0).budget_id(), "pa");
  EXPECT_EQ(report->usages(0).fallback_admitted(), 340u);
}

TEST(FleetStatusTest, AnAnswerWakesEveryWaiterUntilItIsRemoved) {
  FleetStatus status;
  int first = 0;
  int second = 0;
  const uint64_t a = status.AddWaiter([&first] { ++first; });
  const uint64_t b = status.AddWaiter([&second] { ++second; });
  status.Answered();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
  EXPECT_EQ(status.answers.load(), 1u);
  status.RemoveWaiter(a);
  status.Answered();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 2);
  status.RemoveWaiter(b);
  // A lost stream is an answer too: waiting requests go to the fallback share.
  const uint64_t c = status.AddWaiter([&first] { ++first; });
  QuotaClient client(std::shared_ptr<FleetStatus>(&status, [](FleetStatus*) {}),
                     [] { return std::shared_ptr<const FleetLeases>(); });
  client.OnStreamLost();
  EXPECT_EQ(first, 2);
  EXPECT_EQ(status.answers.load(), 3u);
  status.RemoveWaiter(c);
}

}  // namespace
}  // namespace berry::fleet::budget_leases_test
