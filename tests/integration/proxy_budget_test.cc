// Provider and backend budgets on a standalone proxy (README.md, "Provider budgets"): a backend
// whose budget, or whose provider's, is spent for the window is skipped like an ejected one; with
// nothing left the client gets an OpenAI-shaped 429 with Retry-After. Requests count per attempt;
// tokens are charged from the usage the upstream reports (streamed or not).
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_budget_test {
namespace {

// "chat" over provider "first" (with `first_budget` lines as its [providers.first.budget]
// table) and provider "second" (unlimited), failover in that order; `backend_budget` is the
// first backend's inline `budget = { ... }` (empty = none).
std::string BudgetConfig(const MockUpstream& first, const MockUpstream& second,
                         std::string_view first_budget, std::string_view backend_budget = "") {
  std::string providers = ProviderToml("first", first.base_url());
  if (!first_budget.empty()) {
    absl::StrAppend(&providers, "[providers.first.budget]\n", std::string(first_budget), "\n");
  }
  absl::StrAppend(&providers, ProviderToml("second", second.base_url()));
  const std::string first_backend = BackendToml(
      "chat", "first", "up-model", 1,
      absl::StrCat("priority = 1\n",
                   backend_budget.empty()
                       ? ""
                       : absl::StrCat("budget = { ", std::string(backend_budget), " }")));
  return providers + ModelToml("chat", R"(strategy = "failover")") + first_backend +
         BackendToml("chat", "second", "up-model", 1, "priority = 2");
}

TEST(ProxyBudget, AProviderBudgetSteersTrafficToTheOtherBackendOnceSpent) {
  auto first = StartMock("first");
  auto second = StartMock("second");
  auto proxy = StartProxy(BudgetConfig(*first, *second, "requests_per_minute = 3"));
  const std::string first_backend = BackendId("chat", "first");
  EXPECT_EQ(Scrape(*proxy).Find("berry_backend_budget_spent", {{"backend", first_backend}}), 0.0);
  for (int i = 0; i < 10; ++i) {
    const HttpResponse response = Chat(*proxy, "chat");
    ASSERT_EQ(response.status, 200) << response.body;
    EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), i < 3 ? "first" : "second") << i;
  }
  EXPECT_EQ(first->request_count(), 3u);
  EXPECT_EQ(second->request_count(), 7u);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 0)
      << "a spent backend is skipped by the pick, not tried and failed over";
  const Metrics metrics = Scrape(*proxy);
  EXPECT_EQ(metrics.Find("berry_backend_budget_spent", {{"backend", first_backend}}), 1.0);
  EXPECT_EQ(metrics.Find("berry_backend_budget_spent", {{"backend", BackendId("chat", "second")}}),
            std::nullopt)
      << "only backends with a budget have the gauge";
}

TEST(ProxyBudget, ABackendsOwnBudgetBindsBelowItsProviders) {
  auto first = StartMock("first");
  auto second = StartMock("second");
  auto proxy = StartProxy(
      BudgetConfig(*first, *second, "requests_per_minute = 100", "requests_per_minute = 2"));
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(Chat(*proxy, "chat").status, 200);
  }
  EXPECT_EQ(first->request_count(), 2u);
  EXPECT_EQ(second->request_count(), 3u);
}

TEST(ProxyBudget, NothingLeftIsA429WithRetryAfterAndTheUpstreamIsNotCalled) {
  auto only = StartMock("only");
  auto proxy = StartProxy(ProviderToml("only", only->base_url()) +
                          "[providers.only.budget]\nrequests_per_minute = 2\n" + ModelToml("chat") +
                          BackendToml("chat", "only"));
  ASSERT_EQ(Chat(*proxy, "chat").status, 200);
  ASSERT_EQ(Chat(*proxy, "chat").status, 200);
  const HttpResponse refused = Chat(*proxy, "chat");
  ExpectOpenAiError(refused, 429, "rate_limit_error", "rate_limit_exceeded");
  EXPECT_NE(refused.body.find("budget"), std::string::npos) << refused.body;
  // Standalone, the budget is a local sliding window of 60 one-second slices (kept for 62, see
  // common/quota/ledger.h): the two requests leave it 61 to 62 s from now, not after 1 s.
  const int retry_after = std::stoi(refused.Header("Retry-After").value_or("0"));
  EXPECT_GE(retry_after, 60);
  EXPECT_LE(retry_after, 62);
  EXPECT_EQ(only->request_count(), 2u);
  // The refusal is logged like any answer.
  EXPECT_TRUE(AccessLogContains(*proxy, R"("status":429)"));
}

TEST(ProxyBudget, TokenBudgetsAreChargedFromTheReportedUsageStreamedOrNot) {
  // The mock reports 10 + 20 = 30 tokens per answer: a budget of 70 admits three answers
  // (30, 60, then 90 >= 70 spends it), the rest go to the second provider.
  auto first = StartMock("first");
  auto second = StartMock("second");
  auto proxy = StartProxy(BudgetConfig(*first, *second, "tokens_per_minute = 70"));
  ASSERT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "first");
  const StreamedResponse streamed = StreamChat(*proxy, "chat");
  ASSERT_EQ(streamed.status, 200);
  // The proxy asked for the stream's usage on its own and kept the usage chunk to itself.
  EXPECT_NE(first->last_request()->body.find(R"("include_usage":true)"), std::string::npos);
  EXPECT_EQ(streamed.body.find(R"("choices":[])"), std::string::npos) << streamed.body;
  EXPECT_NE(streamed.body.find("[DONE]"), std::string::npos) << streamed.body;
  ASSERT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "first");
  EXPECT_EQ(first->request_count(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "second");
  }
  EXPECT_EQ(first->request_count(), 3u) << "the streamed answer's usage was not charged";
}

TEST(ProxyBudget, AReloadWithTheSameBudgetKeepsWhatWasSpent) {
  auto first = StartMock("first");
  auto second = StartMock("second");
  const std::string config = BudgetConfig(*first, *second, "requests_per_minute = 2");
  auto proxy = StartProxy(config);
  ASSERT_EQ(Chat(*proxy, "chat").status, 200);
  ASSERT_EQ(Chat(*proxy, "chat").status, 200);
  ASSERT_TRUE(proxy->Reload(config + "\n# edited\n").ok());
  EXPECT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "second");
  // A raised budget is a new budget: the first provider serves again.
  ASSERT_TRUE(proxy->Reload(BudgetConfig(*first, *second, "requests_per_minute = 5")).ok());
  EXPECT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "first");
}

}  // namespace
}  // namespace berry::itest::proxy_budget_test
