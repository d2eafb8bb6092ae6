// Fleet-wide per-user limits end to end (README.md, "Fleet-wide rate limits"): a control plane
// and three managed proxies, one user limited to 120 requests per minute, requests spread
// round-robin over the proxies and then all sent to one. The fleet together admits the limit
// (within 5 %), not three times it. The same for a token limit, with streamed and non-streamed
// responses whose usage the mock reports.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/fleet_fixture.h"

namespace berry::fleet_test::fleet_quota_test {
namespace {

class FleetQuota : public FleetTest {
 protected:
  // Each proxy asks for its first lease as soon as it holds the table; the control plane grants
  // once its rebuild period (5 s after its start) is over. Until then a proxy is on its fallback
  // share, which the tests that call this are not about.
  void WaitEveryProxyOffItsFallbackShare() {
    for (const auto& proxy : proxies_) {
      ASSERT_TRUE(WaitUntil(
          [&] { return proxy->Metric("berry_rate_limit_fallback") == std::optional<double>(0.0); },
          kConvergeTimeout))
          << proxy->options.node_id << " never left its fallback share:\n"
          << proxy->process->err();
    }
  }

  // True when every proxy's berry_rate_limit_fallback reads `value` (1: away, on its fallback
  // share; 0: holding leases) within kConvergeTimeout.
  bool EveryProxysFallbackIs(double value) {
    for (const auto& proxy : proxies_) {
      if (!WaitUntil(
              [&] {
                return proxy->Metric("berry_rate_limit_fallback") == std::optional<double>(value);
              },
              kConvergeTimeout)) {
        return false;
      }
    }
    return true;
  }
};

constexpr char kAliceToken[] = "berry-alice-0123456789abcdef";

std::string AliceToml(int per_minute) {
  return absl::StrCat("[users.alice]\ntoken = \"", kAliceToken,
                      "\"\n[users.alice.rate_limit]\nrequests_per_minute = ", per_minute, "\n");
}

absl::StatusOr<test_support::HttpResponse> AliceChat(const Proxy& proxy) {
  test_support::HttpRequest request = test_support::HttpRequest::Post(
      proxy.url + "/v1/chat/completions",
      R"({"model":"chat","messages":[{"role":"user","content":"hi"}]})");
  request.headers.emplace_back("Authorization", absl::StrCat("Bearer ", kAliceToken));
  request.timeout = 10s;
  return test_support::Fetch(request);
}

TEST_F(FleetQuota, ThreeProxiesTogetherAdmitOneLimitRoundRobinThenAllOnOne) {
  StartFleet(ChatOnA() + AliceToml(120));
  ASSERT_FALSE(HasFatalFailure());
  WaitEveryProxyReady();
  ASSERT_FALSE(HasFatalFailure());
  WaitEveryProxyOffItsFallbackShare();
  ASSERT_FALSE(HasFatalFailure());

  // 600 requests, one every 20 ms (all within one minute): 300 round-robin, 300 on node-1.
  int accepted = 0;
  int refused = 0;
  std::optional<test_support::HttpResponse> a_refusal;
  const auto started = Clock::now();
  for (int i = 0; i < 600; ++i) {
    const Proxy& proxy = i < 300 ? *proxies_[i % proxies_.size()] : *proxies_[0];
    auto response = AliceChat(proxy);
    ASSERT_TRUE(response.ok()) << response.status();
    if (response->status == 200) {
      ++accepted;
    } else {
      ASSERT_EQ(response->status, 429) << response->body;
      ++refused;
      a_refusal = *response;
    }
    // Pacing, not synchronisation: the test measures what a client sending at this rate gets.
    std::this_thread::sleep_until(started + (i + 1) * 20ms);
  }
  ASSERT_LT(Clock::now() - started, 55s) << "the requests must fall in one window";
  std::printf("admitted %d of 600 (limit 120)\n", accepted);
  EXPECT_GE(accepted, 114);
  EXPECT_LE(accepted, 126);
  EXPECT_EQ(accepted + refused, 600);

  ASSERT_TRUE(a_refusal.has_value());
  EXPECT_EQ(a_refusal->Header("x-ratelimit-limit-requests"), std::optional<std::string>("120"));
  EXPECT_EQ(a_refusal->Header("x-ratelimit-remaining-requests"), std::optional<std::string>("0"));
  ASSERT_TRUE(a_refusal->Header("retry-after").has_value());
  EXPECT_GE(std::stoi(*a_refusal->Header("retry-after")), 1);
  EXPECT_NE(a_refusal->body.find("rate_limit"), std::string::npos) << a_refusal->body;

  // What the mock provider saw is what the fleet admitted.
  EXPECT_EQ(static_cast<int>(ChatRequests(*a_).size()), accepted);
  // None of it came from a fallback share.
  for (const auto& proxy : proxies_) {
    EXPECT_EQ(proxy->Metric("berry_rate_limit_fallback_admitted_total"), std::optional<double>(0.0))
        << proxy->options.node_id;
  }
}

// Sends `count` requests of alice round-robin over `proxies`, one every 20 ms; returns how many
// were admitted (every answer must be 200 or 429: nothing hangs, nothing else fails).
int SendPaced(const std::vector<std::unique_ptr<Proxy>>& proxies, int count) {
  int accepted = 0;
  const auto started = Clock::now();
  for (int i = 0; i < count; ++i) {
    auto response = AliceChat(*proxies[i % proxies.size()]);
    EXPECT_TRUE(response.ok()) << response.status();
    if (response.ok()) {
      EXPECT_TRUE(response->status == 200 || response->status == 429) << response->body;
      accepted += response->status == 200 ? 1 : 0;
    }
    std::this_thread::sleep_until(started + (i + 1) * 20ms);
  }
  return accepted;
}

TEST_F(FleetQuota, ControlPlaneKilledMidWindowFallbackShareHoldsAndARestartDoesNotGrantAgain) {
  StartFleet(ChatOnA() + AliceToml(120));
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(EveryProxysFallbackIs(0.0)) << "the proxies never got leases";
  const auto window_start = Clock::now();

  const int before = SendPaced(proxies_, 60);  // half the limit, through leases
  // Under the limit: a request that finds its proxy's lease empty waits for the answer to the
  // ask it caused (README: "Costs and limits of the scheme") instead of being refused.
  std::printf("admitted %d of the first 60\n", before);
  EXPECT_GE(before, 58);
  EXPECT_LE(before, 60);

  int during = 0;
  RestartControlPlane([&] {
    ASSERT_TRUE(EveryProxysFallbackIs(1.0))
        << "the proxies did not notice the control plane was gone";
    during = SendPaced(proxies_, 300);
  });
  ASSERT_FALSE(HasFatalFailure());
  // Fallback share: ceil(120 / 3) = 40 per proxy per window, on top of what was granted before:
  // at most 2L + N over the window.
  for (const auto& proxy : proxies_) {
    const auto fallback = proxy->Metric("berry_rate_limit_fallback_admitted_total");
    ASSERT_TRUE(fallback.has_value());
    EXPECT_LE(*fallback, 40.0) << proxy->options.node_id;
  }
  EXPECT_LE(before + during, 2 * 120 + 3);
  EXPECT_GE(during, 100) << "the fallback share admitted next to nothing";

  // The new control plane rebuilds from the proxies' accounts (5 s), then grants: the window is
  // spent already, so nothing more is admitted in it.
  ASSERT_TRUE(EveryProxysFallbackIs(0.0)) << "the restarted control plane never granted";
  const int after = SendPaced(proxies_, 60);
  ASSERT_LT(Clock::now() - window_start, 60s) << "the phases must fall in one window";
  EXPECT_EQ(after, 0);
}

constexpr char kTinaToken[] = "berry-tina-tokens-0123456789";

std::string TinaToml(int tokens_per_minute) {
  return absl::StrCat("[users.tina]\ntoken = \"", kTinaToken,
                      "\"\n[users.tina.rate_limit]\ntokens_per_minute = ", tokens_per_minute, "\n");
}

absl::StatusOr<test_support::HttpResponse> TinaChat(const Proxy& proxy, bool stream) {
  test_support::HttpRequest request = test_support::HttpRequest::Post(
      proxy.url + "/v1/chat/completions",
      absl::StrCat(R"({"model":"chat","max_tokens":60,"stream":)", stream ? "true" : "false",
                   R"(,"messages":[{"role":"user","content":"hi"}]})"));
  request.headers.emplace_back("Authorization", absl::StrCat("Bearer ", kTinaToken));
  request.timeout = 10s;
  return test_support::Fetch(request);
}

TEST_F(FleetQuota, ThreeProxiesTogetherAdmitOneTokenLimitStreamedAndNot) {
  // Every answer reports 50 tokens; a request reserves 60 + its body / 4 (about 84).
  test_support::Behavior behavior;
  behavior.usage = {.prompt_tokens = 20, .completion_tokens = 30};
  StartFleet(ChatOnA() + TinaToml(6000));
  ASSERT_FALSE(HasFatalFailure());
  a_->SetDefaultBehavior(behavior);
  WaitEveryProxyReady();
  ASSERT_FALSE(HasFatalFailure());
  WaitEveryProxyOffItsFallbackShare();
  ASSERT_FALSE(HasFatalFailure());

  // 600 requests, one every 20 ms, every other one streamed: 300 round-robin, 300 on node-1.
  int accepted = 0;
  std::optional<test_support::HttpResponse> a_refusal;
  const auto started = Clock::now();
  for (int i = 0; i < 600; ++i) {
    const Proxy& proxy = i < 300 ? *proxies_[i % proxies_.size()] : *proxies_[0];
    auto response = TinaChat(proxy, /*stream=*/i % 2 == 1);
    ASSERT_TRUE(response.ok()) << response.status();
    if (response->status == 200) {
      ++accepted;
      EXPECT_EQ(i % 2 == 1, response->body.find("\"usage\"") == std::string::npos)
          << "a stream shows the usage the proxy asked for, or a JSON answer lacks it";
    } else {
      ASSERT_EQ(response->status, 429) << response->body;
      a_refusal = *response;
    }
    std::this_thread::sleep_until(started + (i + 1) * 20ms);
  }
  ASSERT_LT(Clock::now() - started, 55s) << "the requests must fall in one window";
  const int admitted_tokens = accepted * 50;
  std::printf("admitted %d requests, %d tokens (limit 6000)\n", accepted, admitted_tokens);
  EXPECT_GE(admitted_tokens, 5700);
  EXPECT_LE(admitted_tokens, 6300);
  EXPECT_EQ(static_cast<int>(ChatRequests(*a_).size()), accepted);

  ASSERT_TRUE(a_refusal.has_value());
  EXPECT_EQ(a_refusal->Header("x-ratelimit-limit-tokens"), std::optional<std::string>("6000"));
  EXPECT_TRUE(a_refusal->Header("x-ratelimit-remaining-tokens").has_value());
  EXPECT_TRUE(a_refusal->Header("x-ratelimit-reset-tokens").has_value());
  ASSERT_TRUE(a_refusal->Header("retry-after").has_value());
  // Streams asked the upstream for their usage.
  int asked = 0;
  for (const test_support::RecordedRequest& request : ChatRequests(*a_)) {
    asked += request.body.find(R"("include_usage":true)") != std::string::npos ? 1 : 0;
  }
  EXPECT_GT(asked, 0);
  for (const auto& proxy : proxies_) {
    EXPECT_EQ(proxy->Metric("berry_rate_limit_fallback_admitted_total"), std::optional<double>(0.0))
        << proxy->options.node_id;
  }
}

// Sends `count` requests of tina round-robin over `proxies`, one every 20 ms, every other one
// streamed; returns how many were admitted (every answer must be 200 or 429: nothing hangs,
// nothing else fails). `slowest`, when given, gets the longest any answer took.
int SendTinaPaced(const std::vector<std::unique_ptr<Proxy>>& proxies, int count,
                  Clock::duration* slowest = nullptr) {
  int accepted = 0;
  const auto started = Clock::now();
  for (int i = 0; i < count; ++i) {
    const bool stream = i % 2 == 1;
    const auto sent = Clock::now();
    auto response = TinaChat(*proxies[i % proxies.size()], stream);
    if (slowest != nullptr) {
      *slowest = std::max(*slowest, Clock::now() - sent);
    }
    EXPECT_TRUE(response.ok()) << response.status();
    if (response.ok()) {
      EXPECT_TRUE(response->status == 200 || response->status == 429) << response->body;
      if (response->status == 200) {
        ++accepted;
        // The proxy read the usage (and stripped it from a stream): each answer is charged its
        // 50 tokens, not its whole reservation.
        EXPECT_EQ(stream, response->body.find("\"usage\"") == std::string::npos) << response->body;
      }
    }
    std::this_thread::sleep_until(started + (i + 1) * 20ms);
  }
  return accepted;
}

// The token-limit counterpart of ControlPlaneKilledMidWindowFallbackShareHoldsAndARestart...:
// the same phases in tokens (README.md, "Fleet-wide rate limits", "Control plane away" and
// "Control plane restarted"; "Token limits": the same fallback bounds apply in tokens).
TEST_F(FleetQuota, ControlPlaneKilledMidWindowTokenLimitFallbackHoldsAndARestartDoesNotGrantAgain) {
  constexpr int kLimit = 6000;    // tokens per minute
  constexpr int kPerAnswer = 50;  // what the mock reports for every answer
  constexpr int kFleet = 3;       // N, the fleet size the control plane reports
  constexpr int kShare = (kLimit + kFleet - 1) / kFleet;  // ceil(L / N) = 2000 per proxy
  // Over a window that contains the outage: L (granted before) + N x ceil(L / N) <= 2L + N.
  constexpr int kOutageBound = kLimit + kFleet * kShare;
  static_assert(kOutageBound <= 2 * kLimit + kFleet);
  // Every answer reports 50 tokens; a request reserves 60 + its body / 4 (about 84): no usage
  // exceeds its reservation (E = 0), so the bounds hold without slack for it.
  test_support::Behavior behavior;
  behavior.usage = {.prompt_tokens = 20, .completion_tokens = 30};
  StartFleet(ChatOnA() + TinaToml(kLimit));
  ASSERT_FALSE(HasFatalFailure());
  a_->SetDefaultBehavior(behavior);
  ASSERT_EQ(static_cast<int>(proxies_.size()), kFleet);
  ASSERT_TRUE(EveryProxysFallbackIs(0.0)) << "the proxies never got leases";
  const auto window_start = Clock::now();

  const int before = SendTinaPaced(proxies_, 60);  // half the limit, through leases
  std::printf("admitted %d of the first 60, %d tokens (limit %d)\n", before, before * kPerAnswer,
              kLimit);
  EXPECT_GE(before, 58);
  EXPECT_LE(before, 60);

  int during = 0;
  Clock::duration slowest{};
  RestartControlPlane([&] {
    ASSERT_TRUE(EveryProxysFallbackIs(1.0))
        << "the proxies did not notice the control plane was gone";
    during = SendTinaPaced(proxies_, 300, &slowest);
  });
  ASSERT_FALSE(HasFatalFailure());
  std::printf("control plane down: admitted %d of 300, %d tokens; slowest answer %lld ms\n", during,
              during * kPerAnswer,
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count()));
  // Each proxy's fallback share: ceil(6000 / 3) = 2000 tokens per window, counted locally.
  for (const auto& proxy : proxies_) {
    const auto fallback = proxy->Metric("berry_rate_limit_fallback_admitted_total");
    ASSERT_TRUE(fallback.has_value());
    std::printf("%s: %.0f admitted on its fallback share, %.0f tokens (share %d)\n",
                proxy->options.node_id.c_str(), *fallback, *fallback * kPerAnswer, kShare);
    EXPECT_LE(*fallback * kPerAnswer, kShare) << proxy->options.node_id;
  }
  EXPECT_LE((before + during) * kPerAnswer, kOutageBound);
  EXPECT_GE(during * kPerAnswer, 5000) << "the fallback share admitted next to nothing";

  // The new control plane rebuilds from the proxies' accounts (5 s), then grants: the window is
  // spent already, so no more tokens are admitted in it.
  ASSERT_TRUE(EveryProxysFallbackIs(0.0)) << "the restarted control plane never granted";
  const int after = SendTinaPaced(proxies_, 60);
  ASSERT_LT(Clock::now() - window_start, 60s) << "the phases must fall in one window";
  const int total = before + during + after;
  std::printf("after the restart: admitted %d of 60; window: %d requests, %d tokens (bound %d)\n",
              after, total, total * kPerAnswer, kOutageBound);
  EXPECT_EQ(after, 0);
  EXPECT_LE(total * kPerAnswer, kOutageBound);
  // What the mock provider saw is what the fleet admitted.
  EXPECT_EQ(static_cast<int>(ChatRequests(*a_).size()), total);
}

// A token-limited user idle for a while holds a lease of one token on each proxy; its next
// request reserves more than that. The proxy waits for the grant its ask brings instead of
// answering 429 while the fleet-wide window is nearly empty (found by make bench: every first
// request after an idle spell was refused).
TEST_F(FleetQuota, AnIdleTokenLimitedUsersNextRequestWaitsForCreditInsteadOfA429) {
  StartFleet(ChatOnA() + TinaToml(600000));
  ASSERT_FALSE(HasFatalFailure());
  WaitEveryProxyReady();
  ASSERT_FALSE(HasFatalFailure());
  WaitEveryProxyOffItsFallbackShare();
  ASSERT_FALSE(HasFatalFailure());
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(2500ms);  // idle: every lease expires and is renewed at 1
    for (const auto& proxy : proxies_) {
      const auto started = Clock::now();
      auto response = TinaChat(*proxy, /*stream=*/round == 1);
      ASSERT_TRUE(response.ok()) << response.status();
      EXPECT_EQ(response->status, 200) << proxy->options.node_id << ": " << response->body;
      EXPECT_LT(Clock::now() - started, 2s);
    }
  }
  for (const auto& proxy : proxies_) {
    // The series appears with the first refusal.
    EXPECT_EQ(proxy->Metric("berry_rate_limited_total").value_or(0.0), 0.0)
        << proxy->options.node_id;
  }
}

// A provider budget held across the fleet (README.md, "Provider budgets"): provider a allows 60
// requests a minute; "chat" is spread evenly over a and b and 300 requests go round-robin over
// the three proxies within a minute. a gets its budget (within 5 %), never three times it; the
// rest goes to b and no client request fails.
TEST_F(FleetQuota, AProviderBudgetSteersTheFleetsTrafficToTheOtherBackend) {
  StartFleet(ChatOnBoth() + "[providers.a.budget]\nrequests_per_minute = 60\n");
  ASSERT_FALSE(HasFatalFailure());
  WaitEveryProxyReady();
  ASSERT_FALSE(HasFatalFailure());
  WaitEveryProxyOffItsFallbackShare();
  ASSERT_FALSE(HasFatalFailure());

  std::map<std::string, int> served;
  const auto started = Clock::now();
  for (int i = 0; i < 300; ++i) {
    ++served[ServedBy(*proxies_[i % proxies_.size()])];
    std::this_thread::sleep_until(started + (i + 1) * 20ms);
  }
  ASSERT_LT(Clock::now() - started, 55s) << "the requests must fall in one window";
  std::printf("provider a served %d, b %d (a's budget 60)\n", served["a"], served["b"]);
  EXPECT_EQ(served["a"] + served["b"], 300) << "a request failed";
  EXPECT_LE(served["a"], 63);
  EXPECT_GE(served["a"], 54);
  EXPECT_EQ(static_cast<int>(ChatRequests(*a_).size()), served["a"]);
  for (const auto& proxy : proxies_) {
    EXPECT_EQ(proxy->Metric("berry_rate_limit_fallback_admitted_total"), std::optional<double>(0.0))
        << proxy->options.node_id;
  }
}

}  // namespace
}  // namespace berry::fleet_test::fleet_quota_test
