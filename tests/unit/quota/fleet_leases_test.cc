#include <gtest/gtest.h>

#include "common/crypto/sha256.h"
#include "data-plane/quota/fleet_limits.h"
#include "tests/support/quota_answers.h"

namespace berry::fleet::fleet_leases_test {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

std::shared_ptr<const auth::ClientDirectory> Directory(uint64_t per_minute, uint64_t per_hour) {
  v1::RouteTable table;
  v1::ClientKey* key = table.add_client_keys();
  key->set_id("alice");
  key->set_token_sha256(crypto::Sha256Bytes("token-alice"));
  key->set_enabled(true);
  key->mutable_rate_limit()->set_requests_per_minute(per_minute);
  key->mutable_rate_limit()->set_requests_per_hour(per_hour);
  auto directory = auth::ClientDirectory::Create(table);
  EXPECT_TRUE(directory.ok()) << directory.status();
  return *directory;
}

class FleetLeasesTest : public ::testing::Test {
 protected:
  void Build(uint64_t per_minute, uint64_t per_hour = 0) {
    directory_ = Directory(per_minute, per_hour);
    leases_ = FleetLeases::Create(*directory_, nullptr, status_);
  }
  const auth::Client& alice() const { return directory_->clients()[0]; }

  // Answers the account `client` sends at `now` with `credit` per asked limit (none: the
  // window is spent for 30 s).
  void Grant(QuotaClient& client, int64_t now, uint64_t credit, uint64_t remaining = 100) {
    auto report = client.Collect(now, /*connected=*/true);
    ASSERT_TRUE(report.has_value());
    client.OnAnswer(test_support::AnswerAsks(*report, {.credit = credit,
                                                        .remaining = credit == 0 ? 0 : remaining,
                                                        .retry_after_seconds = credit == 0 ? 30 : 0}),
                    now);
  }

  std::shared_ptr<FleetStatus> status_ = std::make_shared<FleetStatus>();
  std::shared_ptr<const auth::ClientDirectory> directory_;
  std::shared_ptr<const FleetLeases> leases_;
};

TEST_F(FleetLeasesTest, AwayAdmitsTheFallbackShareOfTheLastKnownFleet) {
  Build(120);
  status_->fleet_size = 3;  // away from the start
  int admitted = 0;
  for (int i = 0; i < 100; ++i) {
    admitted += leases_->Admit(alice(), 10 * kSecond).allowed ? 1 : 0;
  }
  EXPECT_EQ(admitted, 40);
  EXPECT_EQ(status_->fallback_admitted.load(), 40u);
}

TEST_F(FleetLeasesTest, AnEmptyLeaseIsCreditPendingUntilTheControlPlaneSaysTheWindowIsSpent) {
  Build(120);
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 1);
  const uint64_t answers = status_->answers.load();
  EXPECT_GE(answers, 1u);
  EXPECT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  // Empty lease, connected, nothing said about the window: worth waiting for the ask's answer.
  const auth::Decision pending = leases_->Admit(alice(), 10 * kSecond);
  EXPECT_FALSE(pending.allowed);
  EXPECT_TRUE(pending.credit_pending);
  EXPECT_TRUE(status_->wake_requested.load());
  // The answer says the fleet-wide window is spent for 30 s: a refusal, no waiting.
  Grant(client, 10 * kSecond, 0);
  EXPECT_GT(status_->answers.load(), answers);
  const auth::Decision spent = leases_->Admit(alice(), 10 * kSecond);
  EXPECT_FALSE(spent.allowed);
  EXPECT_FALSE(spent.credit_pending);
  EXPECT_EQ(spent.reset_after_seconds, 30);
  // Away (the stream broke): the fallback share decides at once.
  client.OnStreamLost();
  EXPECT_TRUE(status_->away.load());
  EXPECT_FALSE(leases_->Admit(alice(), 10 * kSecond).credit_pending);
}

TEST_F(FleetLeasesTest, ConnectedSpendsTheLeaseAndRefusesWhenItIsEmpty) {
  Build(120);
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 2);
  EXPECT_FALSE(status_->away.load());
  EXPECT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  EXPECT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  const auth::Decision refused = leases_->Admit(alice(), 10 * kSecond);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.limit, 120u);
  EXPECT_EQ(refused.window, auth::Window::kMinute);
  EXPECT_EQ(refused.reset_after_seconds, 1);  // the lease is empty, the fleet is not
  EXPECT_EQ(refused.remaining, 100u);         // what the fleet-wide window had left, as said
  EXPECT_TRUE(status_->wake_requested.load());
  EXPECT_EQ(status_->fallback_admitted.load(), 0u);
}

TEST_F(FleetLeasesTest, ReleaseGivesTheRequestBackToWhereItCameFrom) {
  Build(120);
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 2);
  const quota::Lease& lease =
      leases_->by_key().at(UserLimitKey("alice", v1::QUOTA_WINDOW_MINUTE))->account.lease();
  auth::TokenHold held;
  ASSERT_TRUE(leases_->Admit(alice(), 10 * kSecond, &held).allowed);
  EXPECT_EQ(held.reserved, 1u);
  EXPECT_EQ(lease.credit(10 * kSecond), 1u);
  leases_->Release(alice(), held, 10 * kSecond);
  EXPECT_EQ(lease.credit(10 * kSecond), 2u);
  // Away, from the fallback share: back to the share.
  client.OnStreamLost();
  ASSERT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  ASSERT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  int admitted = 0;
  auth::TokenHold from_share;
  ASSERT_TRUE(leases_->Admit(alice(), 10 * kSecond, &from_share).allowed);
  EXPECT_EQ(from_share.fallback_mask, 1u);
  leases_->Release(alice(), from_share, 10 * kSecond);
  while (leases_->Admit(alice(), 10 * kSecond).allowed && admitted < 100) {
    ++admitted;
  }
  EXPECT_EQ(admitted, 40) << "the share of 120 / 3, with the released request back in it";
}

TEST_F(FleetLeasesTest, ALeaseEndsAtItsExpiryAndItsCreditIsReturned) {
  Build(120);
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 5);
  EXPECT_TRUE(leases_->Admit(alice(), 11 * kSecond).allowed);
  EXPECT_FALSE(leases_->Admit(alice(), 12 * kSecond).allowed);  // valid for 2 s from the ask
  auto report = client.Collect(12 * kSecond, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  ASSERT_EQ(report->usages_size(), 1);
  ASSERT_EQ(report->usages(0).returns_size(), 1);
  EXPECT_EQ(report->usages(0).returns(0).slice(), 1000);
  EXPECT_EQ(report->usages(0).returns(0).unspent(), 4u);
  EXPECT_EQ(report->usages(0).recent_admitted(), 1u);
}

TEST_F(FleetLeasesTest, AnExhaustedFleetRefusesWithTheTimeCreditFreesUp) {
  Build(120);
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 0);
  const auth::Decision refused = leases_->Admit(alice(), 10 * kSecond);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.reset_after_seconds, 30);
}

TEST_F(FleetLeasesTest, ARefusalByTheHourLimitGivesBackTheMinuteCredit) {
  Build(120, 1000);
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 1);  // one credit on each limit
  EXPECT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  // Only the minute limit gets more.
  auto report = client.Collect(10 * kSecond + 1, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  const v1::QuotaGrants both = test_support::AnswerAsks(*report, {.credit = 1});
  v1::QuotaGrants grants = both;
  grants.clear_grants();
  for (const v1::QuotaGrant& grant : both.grants()) {
    if (grant.window() == v1::QUOTA_WINDOW_MINUTE) {
      *grants.add_grants() = grant;
    }
  }
  ASSERT_EQ(grants.grants_size(), 1);
  client.OnAnswer(grants, 10 * kSecond + 1);
  EXPECT_FALSE(leases_->Admit(alice(), 10 * kSecond + 2).allowed);  // the hour lease is empty
  EXPECT_EQ(leases_->by_key()
                .at(UserLimitKey("alice", v1::QUOTA_WINDOW_MINUTE))
                ->account.lease()
                .credit(10 * kSecond + 2),
            1u);
}

TEST_F(FleetLeasesTest, ALostStreamMeansAwayAndLeasesStayValid) {
  Build(120);
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 3);
  client.OnStreamLost();
  EXPECT_TRUE(status_->away.load());
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  }
  EXPECT_EQ(status_->fallback_admitted.load(), 0u);  // the lease first
  EXPECT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  EXPECT_EQ(status_->fallback_admitted.load(), 1u);  // then the share of 120 / 3
}

TEST_F(FleetLeasesTest, ANewFleetSizeKeepsWhatTheOldShareAdmitted) {
  Build(120);
  status_->fleet_size = 3;
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(leases_->Admit(alice(), 10 * kSecond).allowed);
  }
  status_->fleet_size = 2;  // share 60, of which 30 are spent
  int admitted = 0;
  for (int i = 0; i < 100; ++i) {
    admitted += leases_->Admit(alice(), 10 * kSecond).allowed ? 1 : 0;
  }
  EXPECT_EQ(admitted, 30);
}

TEST_F(FleetLeasesTest, ARebuildingControlPlaneDoesNotChangeTheFleetSize) {
  Build(120);
  status_->fleet_size = 3;
  QuotaClient client(status_, [this] { return leases_; });
  auto report = client.Collect(10 * kSecond, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  v1::QuotaGrants grants;
  grants.set_echo(report->echo());
  grants.set_rebuilding(true);
  grants.set_fleet_size(1);
  client.OnAnswer(grants, 10 * kSecond);
  EXPECT_TRUE(status_->away.load());
  EXPECT_EQ(status_->fleet_size.load(), 3);
}

TEST_F(FleetLeasesTest, AnUnchangedLimitKeepsItsLeaseAcrossTables) {
  Build(120);
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 3);
  auto next_directory = Directory(120, 0);
  auto next = FleetLeases::Create(*next_directory, leases_.get(), status_);
  EXPECT_TRUE(next->Admit(next_directory->clients()[0], 10 * kSecond).allowed);
  auto changed_directory = Directory(60, 0);
  auto changed = FleetLeases::Create(*changed_directory, next.get(), status_);
  status_->away = false;
  EXPECT_FALSE(changed->Admit(changed_directory->clients()[0], 10 * kSecond).allowed);
}

std::shared_ptr<const auth::ClientDirectory> TokenDirectory(uint64_t tokens_per_minute) {
  v1::RouteTable table;
  v1::ClientKey* key = table.add_client_keys();
  key->set_id("tina");
  key->set_token_sha256(crypto::Sha256Bytes("token-tina"));
  key->set_enabled(true);
  key->mutable_rate_limit()->set_tokens_per_minute(tokens_per_minute);
  auto directory = auth::ClientDirectory::Create(table);
  EXPECT_TRUE(directory.ok()) << directory.status();
  return *directory;
}

class FleetTokenLeasesTest : public FleetLeasesTest {
 protected:
  void SetUp() override {
    directory_ = TokenDirectory(6000);
    leases_ = FleetLeases::Create(*directory_, nullptr, status_);
  }
  const auth::Client& tina() const { return directory_->clients()[0]; }
  const LimitSlot& slot() const {
    return *leases_->by_key().at(UserLimitKey("tina", v1::QUOTA_WINDOW_TOKENS_MINUTE));
  }
};

TEST_F(FleetTokenLeasesTest, AReservationSpendsTheLeaseAndItsUnusedPartComesBack) {
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 500);
  EXPECT_TRUE(leases_->LimitsTokens(tina()));
  EXPECT_TRUE(leases_->Admit(tina(), 10 * kSecond).allowed);  // no request limit
  auth::TokenHold hold;
  ASSERT_TRUE(leases_->ReserveTokens(tina(), 300, 10 * kSecond, hold).allowed);
  EXPECT_EQ(hold.reserved, 300u);
  EXPECT_EQ(slot().account.lease().credit(10 * kSecond), 200u);
  leases_->SettleTokens(tina(), hold, 120, 10 * kSecond);
  EXPECT_EQ(slot().account.lease().credit(10 * kSecond), 380u);
}

TEST_F(FleetTokenLeasesTest, AReservationLargerThanTheLeaseIsRefusedAndAskedFor) {
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 100);
  auth::TokenHold hold;
  const auth::Decision refused = leases_->ReserveTokens(tina(), 250, 10 * kSecond, hold);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.limit, 6000u);
  EXPECT_EQ(refused.remaining, 100u) << "the window's remainder the control plane last said";
  EXPECT_EQ(hold.reserved, 0u);
  EXPECT_EQ(slot().account.lease().credit(10 * kSecond), 100u);
  auto report = client.Collect(10 * kSecond + 1, /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  ASSERT_EQ(report->usages_size(), 1);
  EXPECT_TRUE(report->usages(0).ask());
  EXPECT_EQ(report->usages(0).wanted(), 250u);
}

TEST_F(FleetTokenLeasesTest, AwayARefusedReservationSaysWhatTheFallbackShareHasLeft) {
  status_->fleet_size = 3;  // away from the start: a share of 2000 tokens a minute
  auth::TokenHold hold;
  ASSERT_TRUE(leases_->ReserveTokens(tina(), 1900, 10 * kSecond, hold).allowed);
  auth::TokenHold second;
  const auth::Decision refused = leases_->ReserveTokens(tina(), 300, 10 * kSecond, second);
  EXPECT_FALSE(refused.allowed);
  EXPECT_FALSE(refused.credit_pending);
  EXPECT_EQ(refused.remaining, 100u);
}

TEST_F(FleetTokenLeasesTest, UsageBeyondTheReservationIsDebtTheNextGrantPays) {
  QuotaClient client(status_, [this] { return leases_; });
  Grant(client, 10 * kSecond, 100);
  auth::TokenHold hold;
  ASSERT_TRUE(leases_->ReserveTokens(tina(), 80, 10 * kSecond, hold).allowed);
  leases_->SettleTokens(tina(), hold, 150, 10 * kSecond);  // 70 more: 20 left, 50 owed
  EXPECT_EQ(slot().account.lease().credit(10 * kSecond), 0u);
  EXPECT_EQ(slot().account.lease().debt(), 50u);
  EXPECT_TRUE(status_->wake_requested.load());
  Grant(client, 10 * kSecond + 1, 200);
  EXPECT_EQ(slot().account.lease().debt(), 0u);
  EXPECT_EQ(slot().account.lease().credit(10 * kSecond + 1), 150u);
}

TEST_F(FleetTokenLeasesTest, AwayReservesFromTheFallbackShareAndSettlesThere) {
  status_->fleet_size = 3;  // 2000 tokens each
  auth::TokenHold first;
  ASSERT_TRUE(leases_->ReserveTokens(tina(), 1500, 10 * kSecond, first).allowed);
  EXPECT_EQ(first.fallback_mask, 1);
  auth::TokenHold second;
  EXPECT_FALSE(leases_->ReserveTokens(tina(), 600, 10 * kSecond, second).allowed);
  leases_->SettleTokens(tina(), first, 1000, 10 * kSecond);  // 500 back
  EXPECT_TRUE(leases_->ReserveTokens(tina(), 600, 10 * kSecond, second).allowed);
}

}  // namespace
}  // namespace berry::fleet::fleet_leases_test
