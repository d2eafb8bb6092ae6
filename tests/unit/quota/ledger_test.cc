#include "common/quota/ledger.h"

#include <gtest/gtest.h>

#include "common/quota/account.h"
#include "common/quota/lease.h"

namespace berry::quota::ledger_test {
namespace {

constexpr int64_t kMinute = 60'000;

TEST(SlidingLedgerTest, DebitsUpToTheLimitThenNothing) {
  SlidingLedger ledger(120, kMinute, 60);
  EXPECT_EQ(ledger.Debit(5'000, 100), 100u);
  EXPECT_EQ(ledger.Debit(5'500, 100), 20u);
  EXPECT_EQ(ledger.Remaining(6'000), 0u);
  EXPECT_EQ(ledger.Debit(6'000, 1), 0u);
}

TEST(SlidingLedgerTest, CreditComesBackOnlyWhenTheDebitedSliceLeavesTheRing) {
  SlidingLedger ledger(10, kMinute, 60);    // slices of 1 s, ring of 62
  ASSERT_EQ(ledger.Debit(5'200, 10), 10u);  // slice 5
  // Slice 5 counts while the current slice is at most 5 + 61.
  EXPECT_EQ(ledger.Remaining(66'999), 0u);
  EXPECT_EQ(ledger.MsUntilCredit(66'000), 1'000);
  EXPECT_EQ(ledger.Remaining(67'000), 10u);
}

TEST(SlidingLedgerTest, NoDoubleBurstAcrossWhatWouldBeAFixedWindowBoundary) {
  // A fixed minute window would allow 10 at 59.9 s and 10 more at 60.0 s.
  SlidingLedger ledger(10, kMinute, 60);
  EXPECT_EQ(ledger.Debit(59'900, 10), 10u);
  EXPECT_EQ(ledger.Debit(60'000, 10), 0u);
  EXPECT_EQ(ledger.Debit(119'000, 10), 0u);
  EXPECT_EQ(ledger.Debit(121'000, 10), 10u);  // slice 59 left at slice 121
}

TEST(SlidingLedgerTest, RefundReturnsCreditToItsSliceOnly) {
  SlidingLedger ledger(10, kMinute, 60);
  ASSERT_EQ(ledger.Debit(1'000, 6), 6u);  // slice 1
  ASSERT_EQ(ledger.Debit(2'000, 4), 4u);  // slice 2
  ledger.Refund(1, 10);                   // more than the slice holds: clamps
  EXPECT_EQ(ledger.DebitOf(1), 0u);
  EXPECT_EQ(ledger.DebitOf(2), 4u);
  EXPECT_EQ(ledger.Remaining(2'500), 6u);
  ledger.Refund(500, 3);  // not in the ring: ignored
  EXPECT_EQ(ledger.Remaining(2'500), 6u);
}

TEST(SlidingLedgerTest, LeasesEndWithTheSliceAfterTheirOwn) {
  SlidingLedger ledger(10, kMinute, 60);
  EXPECT_EQ(ledger.Slice(2'500), 2);
  EXPECT_EQ(ledger.LeaseEndMs(2), 4'000);
}

TEST(GrantSizeTest, FollowsDemandCappedByAShareOfWhatRemains) {
  EXPECT_EQ(GrantSize(5.0, 2.0, 120, 3), 10u);    // demand
  EXPECT_EQ(GrantSize(100.0, 2.0, 120, 3), 20u);  // 120 / (2 * 3)
  EXPECT_EQ(GrantSize(100.0, 2.0, 4, 3), 1u);     // at least 1 while anything remains
  EXPECT_EQ(GrantSize(0.0, 2.0, 120, 3), 1u);     // an idle proxy keeps one
  EXPECT_EQ(GrantSize(100.0, 2.0, 0, 3), 0u);
}

TEST(GrantSizeTest, FallbackShareDividesByTheLastKnownFleet) {
  EXPECT_EQ(FallbackShare(120, 3), 40u);
  EXPECT_EQ(FallbackShare(100, 3), 34u);
  EXPECT_EQ(FallbackShare(120, 0), 120u);
  EXPECT_EQ(FallbackShare(1, 5), 1u);
}

TEST(LeaseTest, SpendsCreditUntilItExpires) {
  Lease lease;
  EXPECT_FALSE(lease.TrySpend(0).has_value());
  EXPECT_FALSE(lease.Grant(7, 2, /*expiry_ns=*/1'000).has_value());
  EXPECT_TRUE(lease.TrySpend(10).has_value());
  EXPECT_EQ(lease.credit(10), 1u);
  EXPECT_FALSE(lease.TrySpend(1'000).has_value());  // expired
  const auto ended = lease.Expire(1'000);
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->slice, 7);
  EXPECT_EQ(ended->unspent, 1u);
  EXPECT_FALSE(lease.Expire(2'000).has_value());  // returned once only
}

TEST(LeaseTest, SameSliceGrowsALaterSliceReplacesAnEarlierOneIsReturned) {
  Lease lease;
  lease.Grant(7, 2, 1'000);
  EXPECT_FALSE(lease.Grant(7, 3, 1'000).has_value());
  EXPECT_EQ(lease.credit(0), 5u);
  const auto replaced = lease.Grant(8, 4, 2'000);
  ASSERT_TRUE(replaced.has_value());
  EXPECT_EQ(replaced->slice, 7);
  EXPECT_EQ(replaced->unspent, 5u);
  EXPECT_EQ(lease.credit(0), 4u);
  const auto late = lease.Grant(6, 9, 2'000);
  ASSERT_TRUE(late.has_value());
  EXPECT_EQ(late->slice, 6);
  EXPECT_EQ(late->unspent, 9u);
}

TEST(LeaseTest, UnspendGivesBackOnlyToTheLeaseItCameFrom) {
  Lease lease;
  lease.Grant(7, 1, 1'000);
  const auto tag = lease.TrySpend(0);
  ASSERT_TRUE(tag.has_value());
  lease.Unspend(*tag);
  EXPECT_EQ(lease.credit(0), 1u);
  const auto again = lease.TrySpend(0);
  lease.Grant(8, 1, 2'000);
  lease.Unspend(*again);  // from slice 7's lease, which is gone
  EXPECT_EQ(lease.credit(0), 1u);
}

TEST(LeaseTest, SpendsSeveralCreditsAllOrNothing) {
  Lease lease;
  lease.Grant(7, 100, 1'000);
  EXPECT_FALSE(lease.TrySpend(0, 101).has_value());
  EXPECT_EQ(lease.credit(0), 100u);
  const auto tag = lease.TrySpend(0, 60);
  ASSERT_TRUE(tag.has_value());
  EXPECT_EQ(lease.credit(0), 40u);
  EXPECT_TRUE(lease.Unspend(*tag, 25));  // a reservation of 60 that used 35
  EXPECT_EQ(lease.credit(0), 65u);
}

TEST(LeaseTest, UnspendToAnEndedLeaseSaysSo) {
  Lease lease;
  lease.Grant(7, 100, 1'000);
  const auto tag = lease.TrySpend(0, 50);
  ASSERT_TRUE(tag.has_value());
  lease.Grant(8, 10, 2'000);
  EXPECT_FALSE(lease.Unspend(*tag, 20));
  EXPECT_EQ(lease.credit(0), 10u);
}

TEST(LeaseTest, ChargeBeyondTheCreditIsDebtTheNextGrantPaysFirst) {
  Lease lease;
  lease.Grant(7, 30, 1'000);
  lease.Charge(0, 50);  // tokens used beyond a reservation
  EXPECT_EQ(lease.credit(0), 0u);
  EXPECT_EQ(lease.debt(), 20u);
  lease.Grant(7, 15, 1'000);  // pays 15 of the debt, adds nothing
  EXPECT_EQ(lease.debt(), 5u);
  EXPECT_EQ(lease.credit(0), 0u);
  lease.Grant(8, 100, 2'000);
  EXPECT_EQ(lease.debt(), 0u);
  EXPECT_EQ(lease.credit(0), 95u);
}

TEST(LeaseTest, ChargeOnAnExpiredLeaseIsAllDebt) {
  Lease lease;
  lease.Grant(7, 30, 1'000);
  lease.Charge(1'000, 10);
  EXPECT_EQ(lease.debt(), 10u);
}

TEST(LeaseAccountTest, ARefundToAnEndedLeaseIsReturnedToItsSlice) {
  LeaseAccount account(60'000'000'000);
  account.OnGrant(/*echo_ns=*/0, /*slice=*/7, /*credit=*/100, /*valid_for_ns=*/1'000, 0);
  const auto tag = account.lease().TrySpend(0, 80);
  ASSERT_TRUE(tag.has_value());
  account.OnGrant(/*echo_ns=*/500, /*slice=*/8, /*credit=*/10, /*valid_for_ns=*/1'000, 0);
  ASSERT_FALSE(account.lease().Unspend(*tag, 50));
  account.ReturnLate(*tag, 50);
  const auto usage = account.Poll(600);
  ASSERT_TRUE(usage.has_value());
  // The replaced lease's own 20 unspent, then the late 50, both to slice 7.
  ASSERT_EQ(usage->returns.size(), 2u);
  EXPECT_EQ(usage->returns[0].slice, 7);
  EXPECT_EQ(usage->returns[0].unspent, 20u);
  EXPECT_EQ(usage->returns[1].slice, 7);
  EXPECT_EQ(usage->returns[1].unspent, 50u);
}

TEST(LeaseAccountTest, WantingMoreThanTheCreditAsksWithThatAmount) {
  LeaseAccount account(60'000'000'000);
  account.OnGrant(0, 7, 100, 10'000'000'000, 0);
  EXPECT_FALSE(account.Poll(1).has_value());  // enough credit, no demand
  account.Want(300);
  const auto usage = account.Poll(2);
  ASSERT_TRUE(usage.has_value());
  EXPECT_TRUE(usage->ask);
  EXPECT_EQ(usage->wanted, 300u);
}

}  // namespace
}  // namespace berry::quota::ledger_test
