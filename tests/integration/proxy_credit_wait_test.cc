// A managed proxy waiting for lease credit (README.md, "Fleet-wide rate limits" and "Provider
// budgets"): a request whose user's lease, or every usable backend's budget lease, ran dry while
// the control plane is connected and has not said the window is spent waits up to 500 ms for the
// answer to the ask it caused — woken by that answer, not by polling — and is then admitted
// (credit came, or the stream was lost and the fallback share decides) or refused; when no
// answer at all came, the control plane counts as away and the fallback share decides. The test
// plays the control plane with a fleet::QuotaClient over the proxy's leases.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/integration/proxy_test_util.h"
#include "tests/support/quota_answers.h"

namespace berry::itest::proxy_credit_wait_test {
namespace {

using Steady = std::chrono::steady_clock;

constexpr std::string_view kAliceToken = "berry-alice-waits-0123456789";

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Steady::now().time_since_epoch())
      .count();
}

class ProxyCreditWait : public ::testing::Test {
 protected:
  // Starts `toml` as a managed proxy and connects it: the fleet has 3 proxies, every lease is
  // empty and no window is spent.
  void Start(const std::string& toml) {
    upstream_ = StartMock("up");
    TestProxyOptions options;
    options.fleet_status = status_;
    proxy_ = StartProxy(absl::StrCat(ProviderToml("up", upstream_->base_url()), toml), options);
    quota_.emplace(status_, [this] { return proxy_->routes().Current()->fleet; });
    v1::QuotaGrants connected;
    connected.set_fleet_size(3);
    quota_->OnAnswer(connected, NowNs());
    ASSERT_FALSE(status_->away.load());
  }

  std::future<HttpResponse> ChatLater(HttpHeaders headers = {}) {
    return std::async(std::launch::async, [this, headers] { return Chat(*proxy_, "chat", headers); });
  }

  // Waits until a request waits for credit.
  void ExpectWaiting() {
    ASSERT_TRUE(WaitUntil([this] { return status_->waiting() == 1; }, std::chrono::seconds(5)))
        << "no request waits for credit";
  }

  // Answers the asks the proxy sends now with `credit` each.
  void Grant(uint64_t credit) {
    const auto report = quota_->Collect(NowNs(), /*connected=*/true);
    ASSERT_TRUE(report.has_value());
    quota_->OnAnswer(test_support::AnswerAsks(*report, {.credit = credit}), NowNs());
  }

  std::shared_ptr<fleet::FleetStatus> status_ = std::make_shared<fleet::FleetStatus>();
  std::unique_ptr<MockUpstream> upstream_;
  std::unique_ptr<TestProxy> proxy_;
  std::optional<fleet::QuotaClient> quota_;
};

std::string LimitedUser() {
  return absl::StrCat(ModelToml("chat"), BackendToml("chat", "up"), "[users.alice]\ntoken = \"",
                      std::string(kAliceToken),
                      "\"\n[users.alice.rate_limit]\nrequests_per_minute = 120\n");
}

std::string BudgetedProvider() {
  return absl::StrCat("[providers.up.budget]\nrequests_per_minute = 120\n", ModelToml("chat"),
                      BackendToml("chat", "up"));
}

TEST_F(ProxyCreditWait, AUsersRequestIsAdmittedWhenTheAnswerToItsAskComes) {
  Start(LimitedUser());
  auto response = ChatLater(Bearer(kAliceToken));
  ExpectWaiting();
  const Steady::time_point answered = Steady::now();
  Grant(5);
  ASSERT_EQ(response.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(response.get().status, 200);
  // Woken by the answer: well before the 500 ms a request waits at most.
  EXPECT_LT(Steady::now() - answered, std::chrono::milliseconds(300));
  EXPECT_EQ(status_->waiting(), 0u);
  EXPECT_EQ(upstream_->request_count(), 1u);
}

TEST_F(ProxyCreditWait, AnAnswerWithoutCreditIsA429At500Ms) {
  Start(LimitedUser());
  const Steady::time_point sent = Steady::now();
  auto response = ChatLater(Bearer(kAliceToken));
  ExpectWaiting();
  Grant(0);  // answered: nothing for this proxy now, though the fleet's window has room
  ASSERT_EQ(response.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const HttpResponse refused = response.get();
  EXPECT_GE(Steady::now() - sent, std::chrono::milliseconds(500));
  ExpectOpenAiError(refused, 429, "rate_limit_error", "rate_limit_exceeded");
  EXPECT_EQ(refused.Header("Retry-After").value_or(""), "1");  // the fleet's window has room
  EXPECT_EQ(refused.Header("x-ratelimit-limit-requests").value_or(""), "120");
  EXPECT_EQ(status_->waiting(), 0u);
  EXPECT_FALSE(status_->away.load());
  EXPECT_EQ(upstream_->request_count(), 0u);
}

TEST_F(ProxyCreditWait, NoAnswerAtAllWithin500MsCountsAsAwayAndTheFallbackShareDecides) {
  Start(LimitedUser());
  const Steady::time_point sent = Steady::now();
  const HttpResponse response = Chat(*proxy_, "chat", Bearer(kAliceToken));
  EXPECT_GE(Steady::now() - sent, std::chrono::milliseconds(500));
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_TRUE(status_->away.load());
  EXPECT_EQ(status_->fallback_admitted.load(), 1u);  // 120 / 3 per minute while away
  // The next request does not wait: the fallback share decides at once...
  const Steady::time_point next = Steady::now();
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kAliceToken)).status, 200);
  EXPECT_LT(Steady::now() - next, std::chrono::milliseconds(300));
  EXPECT_EQ(status_->fallback_admitted.load(), 2u);
  // ...until the control plane answers again.
  Grant(5);
  EXPECT_FALSE(status_->away.load());
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kAliceToken)).status, 200);
  EXPECT_EQ(status_->fallback_admitted.load(), 2u);
  EXPECT_EQ(upstream_->request_count(), 3u);
}

TEST_F(ProxyCreditWait, ALostStreamWakesTheRequestOntoTheFallbackShare) {
  Start(LimitedUser());
  auto response = ChatLater(Bearer(kAliceToken));
  ExpectWaiting();
  quota_->OnStreamLost();
  ASSERT_EQ(response.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(response.get().status, 200);
  EXPECT_EQ(status_->fallback_admitted.load(), 1u);  // 120 / 3 per minute while away
}

TEST_F(ProxyCreditWait, AModelWhoseOnlyBackendsBudgetRanDryWaitsForTheAnswer) {
  Start(BudgetedProvider());
  auto response = ChatLater();
  ExpectWaiting();
  EXPECT_EQ(upstream_->request_count(), 0u);
  Grant(5);
  ASSERT_EQ(response.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(response.get().status, 200);
  EXPECT_EQ(upstream_->request_count(), 1u);
}

TEST_F(ProxyCreditWait, ABudgetAnsweredWithoutCreditIsA429After500Ms) {
  Start(BudgetedProvider());
  const Steady::time_point sent = Steady::now();
  auto response = ChatLater();
  ExpectWaiting();
  Grant(0);
  ASSERT_EQ(response.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const HttpResponse refused = response.get();
  EXPECT_GE(Steady::now() - sent, std::chrono::milliseconds(500));
  ExpectOpenAiError(refused, 429, "rate_limit_error", "rate_limit_exceeded");
  EXPECT_EQ(refused.Header("Retry-After").value_or(""), "1");
  EXPECT_FALSE(status_->away.load());
  EXPECT_EQ(upstream_->request_count(), 0u);
}

TEST_F(ProxyCreditWait, ABudgetAskWithNoAnswerWithin500MsIsServedOnTheFallbackShare) {
  Start(BudgetedProvider());
  const Steady::time_point sent = Steady::now();
  const HttpResponse response = Chat(*proxy_, "chat");
  EXPECT_GE(Steady::now() - sent, std::chrono::milliseconds(500));
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_TRUE(status_->away.load());
  EXPECT_EQ(upstream_->request_count(), 1u);
}

TEST_F(ProxyCreditWait, AWindowTheControlPlaneSaysIsSpentIsRefusedAtOnce) {
  Start(BudgetedProvider());
  // The control plane says the provider's window is spent for 30 s.
  auto response = ChatLater();
  ExpectWaiting();
  const auto report = quota_->Collect(NowNs(), /*connected=*/true);
  ASSERT_TRUE(report.has_value());
  quota_->OnAnswer(test_support::AnswerAsks(
                       *report, {.credit = 0, .remaining = 0, .retry_after_seconds = 30}),
                   NowNs());
  ASSERT_EQ(response.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const HttpResponse refused = response.get();
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(refused.Header("Retry-After").value_or(""), "30");
  // The next request knows: no wait.
  const Steady::time_point sent = Steady::now();
  EXPECT_EQ(Chat(*proxy_, "chat").status, 429);
  EXPECT_LT(Steady::now() - sent, std::chrono::milliseconds(300));
  EXPECT_EQ(upstream_->request_count(), 0u);
}

}  // namespace
}  // namespace berry::itest::proxy_credit_wait_test
