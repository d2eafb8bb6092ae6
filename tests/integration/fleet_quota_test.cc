// Fleet-wide per-user limits end to end (README.md, "Fleet-wide rate limits"): a control plane
// and three managed proxies, one user limited to 120 requests per minute, requests spread
// round-robin over the proxies and then all sent to one. The fleet together admits the limit
// (within 5 %), not three times it.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/fleet_fixture.h"

namespace berry::fleet_test {
namespace {

using FleetQuota = FleetTest;

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
  // Each proxy asks for its first lease as soon as it holds the table; the control plane grants
  // once its rebuild period (5 s after its start) is over. Until then a proxy is on its fallback
  // share, which this test is not about.
  for (const auto& proxy : proxies_) {
    ASSERT_TRUE(WaitUntil(
        [&] { return proxy->Metric("berry_rate_limit_fallback") == std::optional<double>(0.0); },
        kConvergeTimeout))
        << proxy->options.node_id << " never left its fallback share:\n"
        << proxy->process->err();
  }

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
  const auto fallback_is = [&](double value) {
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
  };
  ASSERT_TRUE(fallback_is(0.0)) << "the proxies never got leases";
  const auto window_start = Clock::now();

  const int before = SendPaced(proxies_, 60);  // half the limit, through leases
  // Under the limit, yet a request that finds its proxy's lease empty while the ask for more is
  // in flight is refused (README: "Costs and limits of the scheme"); a few do.
  EXPECT_GE(before, 50);
  EXPECT_LE(before, 60);

  int during = 0;
  RestartControlPlane([&] {
    ASSERT_TRUE(fallback_is(1.0)) << "the proxies did not notice the control plane was gone";
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
  ASSERT_TRUE(fallback_is(0.0)) << "the restarted control plane never granted";
  const int after = SendPaced(proxies_, 60);
  ASSERT_LT(Clock::now() - window_start, 60s) << "the phases must fall in one window";
  EXPECT_EQ(after, 0);
}

}  // namespace
}  // namespace berry::fleet_test
