// RateLimiter: fixed minute/hour/day windows with an injected wall clock, rollback of refused
// requests, carry-over across tables, and the limit under concurrent workers.
#include "data-plane/auth/rate_limiter.h"

#include <atomic>
#include <cstdint>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto/sha256.h"
#include "data-plane/auth/client_directory.h"
#include "gtest/gtest.h"

namespace berry::auth::rate_limiter_test {
namespace {

namespace v1 = berry::v1;

// A UTC midnight: every minute and hour window starts at a whole multiple from here.
constexpr int64_t kMidnight = int64_t{20000} * 86400;

struct Limits {
  uint64_t per_minute = 0;
  uint64_t per_hour = 0;
  uint64_t per_day = 0;
  uint64_t tokens_per_minute = 0;
  uint64_t tokens_per_hour = 0;
};

void AddUser(v1::RouteTable& table, const std::string& id, Limits limits) {
  v1::ClientKey* key = table.add_client_keys();
  key->set_id(id);
  key->set_token_sha256(crypto::Sha256Bytes("token-" + id));
  key->set_enabled(true);
  key->mutable_rate_limit()->set_requests_per_minute(limits.per_minute);
  key->mutable_rate_limit()->set_requests_per_hour(limits.per_hour);
  key->mutable_rate_limit()->set_requests_per_day(limits.per_day);
  key->mutable_rate_limit()->set_tokens_per_minute(limits.tokens_per_minute);
  key->mutable_rate_limit()->set_tokens_per_hour(limits.tokens_per_hour);
}

std::shared_ptr<const ClientDirectory> Directory(const v1::RouteTable& table) {
  auto directory = ClientDirectory::Create(table);
  EXPECT_TRUE(directory.ok()) << directory.status();
  return *directory;
}

// One user "u" with `limits`, and its limiter.
struct OneUser {
  explicit OneUser(Limits limits) {
    v1::RouteTable table;
    AddUser(table, "u", limits);
    directory = Directory(table);
    limiter = RateLimiter::Create(*directory);
  }
  const Client& user() const { return *directory->FindById("u"); }
  Decision Check(int64_t now) const { return limiter->Check(user(), now); }
  Decision Reserve(uint64_t tokens, int64_t now, TokenHold& hold) const {
    return limiter->ReserveTokens(user(), tokens, now, hold);
  }
  uint64_t Tokens(Window window, int64_t now) const {
    return limiter->TokenCount(user(), window, now);
  }

  std::shared_ptr<const ClientDirectory> directory;
  std::shared_ptr<RateLimiter> limiter;
};

TEST(RateLimiterTest, AllowsExactlyTheMinuteLimitThenRefusesWithSecondsToTheNextMinute) {
  OneUser u({.per_minute = 3});
  const int64_t now = kMidnight + 10;
  for (uint64_t expected_left : {2, 1, 0}) {
    const Decision decision = u.Check(now);
    EXPECT_TRUE(decision.allowed);
    EXPECT_EQ(decision.window, Window::kMinute);
    EXPECT_EQ(decision.limit, 3u);
    EXPECT_EQ(decision.remaining, expected_left);
    EXPECT_EQ(decision.reset_after_seconds, 50);
  }
  const Decision refused = u.Check(now + 5);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.window, Window::kMinute);
  EXPECT_EQ(refused.limit, 3u);
  EXPECT_EQ(refused.remaining, 0u);
  EXPECT_EQ(refused.reset_after_seconds, 45);
}

TEST(RateLimiterTest, ReleaseGivesBackTheRequestCheckCountedInItsWindowsOnly) {
  OneUser u({.per_minute = 2, .per_hour = 10});
  TokenHold held;
  ASSERT_TRUE(u.limiter->Check(u.user(), kMidnight + 10, &held).allowed);
  EXPECT_EQ(held.reserved, 1u);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kMinute, kMidnight + 10), 1u);
  u.limiter->Release(u.user(), held);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kMinute, kMidnight + 10), 0u);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kHour, kMidnight + 10), 0u);
  // A request counted in a minute that has ended is not given back to the next one.
  ASSERT_TRUE(u.limiter->Check(u.user(), kMidnight + 50, &held).allowed);
  ASSERT_TRUE(u.Check(kMidnight + 70).allowed);
  u.limiter->Release(u.user(), held);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kMinute, kMidnight + 70), 1u);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kHour, kMidnight + 70), 1u);
  // A refused check records nothing.
  TokenHold refused;
  ASSERT_TRUE(u.Check(kMidnight + 70).allowed);
  EXPECT_FALSE(u.limiter->Check(u.user(), kMidnight + 70, &refused).allowed);
  EXPECT_EQ(refused.reserved, 0u);
}

TEST(RateLimiterTest, MinuteWindowStartsOverAtTheBoundary) {
  OneUser u({.per_minute = 2});
  EXPECT_TRUE(u.Check(kMidnight + 58).allowed);
  EXPECT_TRUE(u.Check(kMidnight + 59).allowed);
  const Decision refused = u.Check(kMidnight + 59);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.reset_after_seconds, 1);

  const Decision next_minute = u.Check(kMidnight + 60);
  EXPECT_TRUE(next_minute.allowed);
  EXPECT_EQ(next_minute.remaining, 1u);
  EXPECT_EQ(next_minute.reset_after_seconds, 60);
}

TEST(RateLimiterTest, FixedWindowsLetTwiceTheLimitThroughAcrossABoundary) {
  // Documented behaviour, not a wish: 2x the limit within two seconds straddling a minute.
  OneUser u({.per_minute = 2});
  int allowed = 0;
  for (int64_t now : {kMidnight + 59, kMidnight + 59, kMidnight + 60, kMidnight + 60}) {
    allowed += u.Check(now).allowed ? 1 : 0;
  }
  EXPECT_EQ(allowed, 4);
}

TEST(RateLimiterTest, HourWindowRefusesUntilTheNextHour) {
  OneUser u({.per_hour = 2});
  const int64_t hour = kMidnight + 3600;
  EXPECT_TRUE(u.Check(hour + 100).allowed);
  EXPECT_TRUE(u.Check(hour + 1000).allowed);
  const Decision refused = u.Check(hour + 2000);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.window, Window::kHour);
  EXPECT_EQ(refused.limit, 2u);
  EXPECT_EQ(refused.reset_after_seconds, 1600);
  EXPECT_TRUE(u.Check(hour + 3600).allowed);
}

TEST(RateLimiterTest, DayWindowRefusesUntilTheNextUtcDay) {
  OneUser u({.per_day = 1});
  EXPECT_TRUE(u.Check(kMidnight + 3600).allowed);
  const Decision refused = u.Check(kMidnight + 86400 - 10);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.window, Window::kDay);
  EXPECT_EQ(refused.reset_after_seconds, 10);
  EXPECT_TRUE(u.Check(kMidnight + 86400).allowed);
}

TEST(RateLimiterTest, RequestRefusedByTheDayWindowConsumesNoMinuteOrHourQuota) {
  OneUser u({.per_minute = 5, .per_hour = 10, .per_day = 2});
  const int64_t now = kMidnight + 30;
  EXPECT_TRUE(u.Check(now).allowed);
  EXPECT_TRUE(u.Check(now).allowed);
  for (int i = 0; i < 3; ++i) {
    const Decision refused = u.Check(now);
    EXPECT_FALSE(refused.allowed);
    EXPECT_EQ(refused.window, Window::kDay);
  }
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kMinute, now), 2u);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kHour, now), 2u);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kDay, now), 2u);
}

TEST(RateLimiterTest, AllowedDecisionReportsTheWindowWithFewestRequestsLeft) {
  OneUser u({.per_minute = 10, .per_hour = 3, .per_day = 100});
  const Decision decision = u.Check(kMidnight + 7200 + 60);
  EXPECT_TRUE(decision.allowed);
  EXPECT_EQ(decision.window, Window::kHour);
  EXPECT_EQ(decision.limit, 3u);
  EXPECT_EQ(decision.remaining, 2u);
  EXPECT_EQ(decision.reset_after_seconds, 3540);
}

TEST(RateLimiterTest, ClientWithoutLimitsIsNeverRefused) {
  OneUser u({});
  for (int i = 0; i < 10000; ++i) {
    const Decision decision = u.Check(kMidnight + i % 100);
    ASSERT_TRUE(decision.allowed);
    EXPECT_EQ(decision.window, Window::kNone);
  }
}

TEST(RateLimiterTest, AnonymousClientOfAnOpenGatewayIsNeverRefused) {
  const auto directory = Directory(v1::RouteTable());
  const auto limiter = RateLimiter::Create(*directory);
  const Client* anonymous = *directory->Authenticate("");
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(limiter->Check(*anonymous, kMidnight).allowed);
  }
}

TEST(RateLimiterTest, CountsCarryOverToANewTableForTheSameUserId) {
  v1::RouteTable first;
  AddUser(first, "u", {.per_minute = 3});
  auto directory = Directory(first);
  auto limiter = RateLimiter::Create(*directory);
  EXPECT_TRUE(limiter->Check(*directory->FindById("u"), kMidnight).allowed);
  EXPECT_TRUE(limiter->Check(*directory->FindById("u"), kMidnight).allowed);

  // A new table: another user in front of "u", so its index changes too.
  v1::RouteTable second;
  AddUser(second, "a-new-user", {.per_minute = 3});
  AddUser(second, "u", {.per_minute = 3});
  auto next_directory = Directory(second);
  auto next_limiter = RateLimiter::Create(*next_directory, limiter.get());
  limiter.reset();
  directory.reset();

  const Client& u = *next_directory->FindById("u");
  EXPECT_EQ(next_limiter->Count(u, Window::kMinute, kMidnight), 2u);
  EXPECT_TRUE(next_limiter->Check(u, kMidnight).allowed);
  EXPECT_FALSE(next_limiter->Check(u, kMidnight).allowed);
  EXPECT_TRUE(next_limiter->Check(*next_directory->FindById("a-new-user"), kMidnight).allowed);
}

TEST(RateLimiterTest, NewTableWithALowerLimitAppliesItToTheCarriedCount) {
  v1::RouteTable first;
  AddUser(first, "u", {.per_minute = 10});
  const auto directory = Directory(first);
  const auto limiter = RateLimiter::Create(*directory);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(limiter->Check(*directory->FindById("u"), kMidnight).allowed);
  }
  v1::RouteTable second;
  AddUser(second, "u", {.per_minute = 3});
  const auto next_directory = Directory(second);
  const auto next_limiter = RateLimiter::Create(*next_directory, limiter.get());
  EXPECT_FALSE(next_limiter->Check(*next_directory->FindById("u"), kMidnight).allowed);
}

TEST(RateLimiterTest, CountsAreDroppedForAUserRemovedFromTheTable) {
  v1::RouteTable with_u;
  AddUser(with_u, "u", {.per_minute = 1});
  const auto directory = Directory(with_u);
  const auto limiter = RateLimiter::Create(*directory);
  EXPECT_TRUE(limiter->Check(*directory->FindById("u"), kMidnight).allowed);

  v1::RouteTable without_u;
  AddUser(without_u, "v", {.per_minute = 1});
  const auto middle_directory = Directory(without_u);
  const auto middle = RateLimiter::Create(*middle_directory, limiter.get());

  // "u" comes back in the next table: it starts from zero.
  const auto last_directory = Directory(with_u);
  const auto last = RateLimiter::Create(*last_directory, middle.get());
  EXPECT_EQ(last->Count(*last_directory->FindById("u"), Window::kMinute, kMidnight), 0u);
  EXPECT_TRUE(last->Check(*last_directory->FindById("u"), kMidnight).allowed);
}

TEST(RateLimiterTest, ConcurrentChecksNeverAdmitMoreThanTheLimit) {
  constexpr int kThreads = 4;
  constexpr int kAttemptsPerThread = 1000;
  OneUser u({.per_minute = 1000});
  std::atomic<int> allowed{0};
  std::latch start(kThreads);  // all threads race from the same moment
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < kAttemptsPerThread; ++i) {
        if (u.Check(kMidnight + 5).allowed) {
          allowed.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(allowed.load(), 1000);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kMinute, kMidnight + 5), 1000u);
}

TEST(RateLimiterTest, ConcurrentRefusalsInALaterWindowGiveTheirEarlierCountsBack) {
  constexpr int kThreads = 4;
  constexpr int kAttemptsPerThread = 1000;
  OneUser u({.per_minute = 4000, .per_hour = 500});
  std::atomic<int> allowed{0};
  std::latch start(kThreads);  // all threads race from the same moment
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < kAttemptsPerThread; ++i) {
        if (u.Check(kMidnight + 5).allowed) {
          allowed.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(allowed.load(), 500);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kMinute, kMidnight + 5), 500u);
  EXPECT_EQ(u.limiter->Count(u.user(), Window::kHour, kMidnight + 5), 500u);
}

TEST(RateLimiterTokensTest, ReservationThatDoesNotFitIsRefusedWithWhatIsLeft) {
  OneUser u({.tokens_per_minute = 1000});
  const int64_t now = kMidnight + 20;
  TokenHold first;
  const Decision allowed = u.Reserve(700, now, first);
  EXPECT_TRUE(allowed.allowed);
  EXPECT_EQ(allowed.limit, 1000u);
  EXPECT_EQ(allowed.remaining, 300u);
  EXPECT_EQ(first.reserved, 700u);
  TokenHold second;
  const Decision refused = u.Reserve(301, now, second);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.window, Window::kMinute);
  EXPECT_EQ(refused.remaining, 300u);
  EXPECT_EQ(refused.reset_after_seconds, 40);
  EXPECT_EQ(second.reserved, 0u);
  EXPECT_EQ(u.Tokens(Window::kMinute, now), 700u);
}

TEST(RateLimiterTokensTest, SettlingBelowTheReservationRefundsTheDifference) {
  OneUser u({.tokens_per_minute = 1000, .tokens_per_hour = 5000});
  const int64_t now = kMidnight + 20;
  TokenHold hold;
  ASSERT_TRUE(u.Reserve(800, now, hold).allowed);
  u.limiter->SettleTokens(u.user(), hold, 150, now + 1);
  EXPECT_EQ(u.Tokens(Window::kMinute, now + 1), 150u);
  EXPECT_EQ(u.Tokens(Window::kHour, now + 1), 150u);
  TokenHold next;
  EXPECT_TRUE(u.Reserve(850, now + 1, next).allowed);
}

TEST(RateLimiterTokensTest, SettlingAboveTheReservationChargesTheExcessBeyondTheLimit) {
  OneUser u({.tokens_per_minute = 1000});
  const int64_t now = kMidnight + 20;
  TokenHold hold;
  ASSERT_TRUE(u.Reserve(900, now, hold).allowed);
  u.limiter->SettleTokens(u.user(), hold, 1300, now + 2);
  EXPECT_EQ(u.Tokens(Window::kMinute, now + 2), 1300u);
  TokenHold next;
  const Decision refused = u.Reserve(1, now + 3, next);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.remaining, 0u);
  // The debt ends with the window.
  EXPECT_TRUE(u.Reserve(1000, kMidnight + 60, next).allowed);
}

TEST(RateLimiterTokensTest, RefundAfterTheWindowEndedDoesNotTouchTheNewWindow) {
  OneUser u({.tokens_per_minute = 1000});
  TokenHold hold;
  ASSERT_TRUE(u.Reserve(600, kMidnight + 59, hold).allowed);
  TokenHold later;
  ASSERT_TRUE(u.Reserve(400, kMidnight + 61, later).allowed);
  u.limiter->SettleTokens(u.user(), hold, 0, kMidnight + 62);
  EXPECT_EQ(u.Tokens(Window::kMinute, kMidnight + 62), 400u);
}

TEST(RateLimiterTokensTest, TokenRefusalByTheHourGivesTheMinuteItsTokensBack) {
  OneUser u({.tokens_per_minute = 1000, .tokens_per_hour = 1500});
  TokenHold hold;
  ASSERT_TRUE(u.Reserve(1000, kMidnight + 10, hold).allowed);
  TokenHold next;
  const Decision refused = u.Reserve(600, kMidnight + 70, next);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.window, Window::kHour);
  EXPECT_EQ(u.Tokens(Window::kMinute, kMidnight + 70), 0u);
}

TEST(RateLimiterTokensTest, RequestLimitsAndTokenLimitsAreCountedApart) {
  OneUser requests_only({.per_minute = 2});
  EXPECT_FALSE(requests_only.limiter->LimitsTokens(requests_only.user()));
  TokenHold hold;
  EXPECT_TRUE(requests_only.Reserve(1'000'000, kMidnight, hold).allowed);
  EXPECT_EQ(hold.reserved, 0u);

  OneUser tokens_only({.tokens_per_minute = 10});
  EXPECT_TRUE(tokens_only.limiter->LimitsTokens(tokens_only.user()));
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(tokens_only.Check(kMidnight).allowed);
  }
}

TEST(RateLimiterDeathTest, CheckWithAClientOfAnotherDirectoryAborts) {
  OneUser one({.per_minute = 1});
  OneUser other({.per_minute = 1});
  EXPECT_DEATH(one.limiter->Check(other.user(), kMidnight), "another ClientDirectory");
}

}  // namespace
}  // namespace berry::auth::rate_limiter_test
