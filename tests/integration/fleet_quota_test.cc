// Fleet-wide per-user limits end to end (README.md, "Fleet-wide rate limits"): a control plane
// and three managed proxies, one user limited to 120 requests per minute, requests spread
// round-robin over the proxies and then all sent to one. The fleet together admits the limit
// (within 5 %), not three times it.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

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
  for (const auto& proxy : proxies_) {
    ASSERT_TRUE(WaitUntil([&] { return proxy->ReadyzStatus() == 200; }, kConvergeTimeout))
        << proxy->options.node_id << " never got a table:\n"
        << proxy->process->err();
  }
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

}  // namespace
}  // namespace berry::fleet_test
