// Retries and failover before the first byte (with per-provider retry budgets), what the client
// gets when every backend fails, passive outlier detection (ejection, panic), and the stale
// pooled connection that is retried without blaming the backend.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_failover_test {
namespace {

using Clock = std::chrono::steady_clock;

// One provider of a failover chain: its id and base_url, the provider's extra TOML (e.g.
// "max_retries = 0"), and its backends of "chat" as (upstream model, weight), all at the tier's
// priority.
struct Tier {
  std::string id;
  std::string base_url;
  std::string extra = "";
  std::vector<std::pair<std::string, double>> backends = {{"up-model", 1}};
};

// "chat" with strategy failover over `tiers`: the n-th tier's backends have priority n, so the
// first attempt always goes to the first tier.
std::string FailoverChainConfig(const std::vector<Tier>& tiers, std::string_view settings = "") {
  std::string providers;
  std::string backends;
  for (size_t i = 0; i < tiers.size(); ++i) {
    const Tier& tier = tiers[i];
    std::vector<std::string> models;
    for (const auto& [model, weight] : tier.backends) {
      models.push_back(model);
      absl::StrAppend(&backends, BackendToml("chat", tier.id, model, weight,
                                             absl::StrCat("priority = ", i + 1)));
    }
    absl::StrAppend(&providers, ProviderToml(tier.id, tier.base_url, models, tier.extra));
  }
  return SettingsToml(settings) + providers + ModelToml("chat", R"(strategy = "failover")") +
         backends;
}

// The chain `first` then `second`.
std::string FailoverConfig(const std::string& first_url, const std::string& second_url,
                           std::string_view settings = "") {
  return FailoverChainConfig({{"first", first_url}, {"second", second_url}}, settings);
}

MockUpstream::Options With(Behavior behavior) {
  MockUpstream::Options options;
  options.default_behavior = std::move(behavior);
  return options;
}

TEST(ProxyFailover, FailsOverToNextBackendOn503BeforeFirstByte) {
  auto first = StartMock("first", With(Behavior::Fail(503)));
  auto second = StartMock("second");
  auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url()));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "second");
  EXPECT_EQ(first->request_count(), 1u);
  EXPECT_EQ(second->request_count(), 1u);
  EXPECT_EQ(second->last_request()->body, first->last_request()->body);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 1);
  EXPECT_EQ(WaitForMetric(
                *proxy, "berry_requests_total",
                {{"model", "chat"}, {"backend", BackendId("chat", "second")}, {"code", "200"}}, 1),
            1);
  EXPECT_TRUE(AccessLogContains(*proxy, R"("retries":1)"));
}

TEST(ProxyFailover, FailsOverWhenTheBackendRefusesConnections) {
  auto second = StartMock("second");
  const std::string refused = "http://127.0.0.1:" + std::to_string(UnusedPort()) + "/v1";
  auto proxy = StartProxy(FailoverConfig(refused, second->base_url()));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(second->request_count(), 1u);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 1);
}

TEST(ProxyFailover, FailsOverWhenTheBackendResetsTheConnection) {
  auto first = StartMock("first", With(Behavior::ResetBeforeResponse()));
  auto second = StartMock("second");
  auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url()));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(first->request_count(), 1u);
  EXPECT_EQ(second->request_count(), 1u);
}

TEST(ProxyFailover, FailsOverWhenTheBackendHangsPastTheRequestTimeout) {
  auto first = StartMock("first", With(Behavior::Hang()));
  auto second = StartMock("second");
  auto proxy = StartProxy(
      FailoverConfig(first->base_url(), second->base_url(), "request_timeout_seconds = 1"));

  const auto start = Clock::now();
  const HttpResponse response = Chat(*proxy, "chat");
  const auto took = Clock::now() - start;

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "second");
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 5s);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 1);
  EXPECT_TRUE(first->WaitForOpenConnections(0, 5s)) << "the timed-out connection is dropped";
}

TEST(ProxyFailover, ProviderTimeoutBoundsTheWaitForTheFirstByte) {
  auto first = StartMock("first", With(Behavior::Hang()));
  auto second = StartMock("second");
  // request_timeout_seconds stays at its default (30 s); the provider allows 1 s.
  auto proxy = StartProxy(FailoverChainConfig(
      {{"first", first->base_url(), "timeout_seconds = 1"}, {"second", second->base_url()}}));

  const auto start = Clock::now();
  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_LT(Clock::now() - start, 5s);
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "second");
}

TEST(ProxyFailover, DisabledProviderAndBackendGetNoTraffic) {
  auto off_provider = StartMock("off-provider");
  auto off_backend = StartMock("off-backend");
  auto on = StartMock("on");
  auto proxy = StartProxy(
      ProviderToml("off_provider", off_provider->base_url(), {"up-model"}, "enabled = false") +
      ProviderToml("off_backend", off_backend->base_url()) + ProviderToml("on", on->base_url()) +
      ModelToml("chat") + BackendToml("chat", "off_provider", "up-model", 100) +
      BackendToml("chat", "off_backend", "up-model", 100, "enabled = false") +
      BackendToml("chat", "on", "up-model", 1));

  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(Chat(*proxy, "chat").status, 200);
  }

  EXPECT_EQ(off_provider->request_count(), 0u);
  EXPECT_EQ(off_backend->request_count(), 0u);
  EXPECT_EQ(on->request_count(), 20u);
}

TEST(ProxyFailover, EachRetryGoesToABackendNotYetTried) {
  auto a = StartMock("a", With(Behavior::Fail(502)));
  auto b = StartMock("b", With(Behavior::Fail(502)));
  auto c = StartMock("c", With(Behavior::Fail(502)));
  auto proxy =
      StartProxy(SettingsToml("max_retries = 5\ncircuit_breaker_failure_threshold = 100") +
                 ProviderToml("a", a->base_url()) + ProviderToml("b", b->base_url()) +
                 ProviderToml("c", c->base_url()) + ModelToml("chat") + BackendToml("chat", "a") +
                 BackendToml("chat", "b") + BackendToml("chat", "c"));

  for (int i = 1; i <= 5; ++i) {
    const HttpResponse response = Chat(*proxy, "chat");
    EXPECT_EQ(response.status, 502);
    // Three backends, each tried exactly once per request, whatever max_retries allows.
    EXPECT_EQ(a->request_count(), static_cast<uint64_t>(i));
    EXPECT_EQ(b->request_count(), static_cast<uint64_t>(i));
    EXPECT_EQ(c->request_count(), static_cast<uint64_t>(i));
  }
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 10);
}

TEST(ProxyFailover, NoRetryWhenMaxRetriesIsZero) {
  auto first = StartMock("first", With(Behavior::Fail(503)));
  auto second = StartMock("second");
  auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url(), "max_retries = 0"));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(first->request_count(), 1u);
  EXPECT_EQ(second->request_count(), 0u);
  EXPECT_EQ(Scrape(*proxy).Find("berry_retries_total", {{"model", "chat"}}), std::nullopt);
}

// --- provider max_retries: a per-provider budget of each request's retries ------------------

TEST(ProxyFailover, RetriesSkipAProviderWithAZeroRetryBudget) {
  auto first = StartMock("first", With(Behavior::Fail(503)));
  auto guarded = StartMock("guarded");
  auto last = StartMock("last");
  auto proxy = StartProxy(FailoverChainConfig({{"first", first->base_url()},
                                               {"guarded", guarded->base_url(), "max_retries = 0"},
                                               {"last", last->base_url()}}));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "last");
  EXPECT_EQ(first->request_count(), 1u);
  EXPECT_EQ(guarded->request_count(), 0u) << "a retry went to a provider with max_retries = 0";
  EXPECT_EQ(last->request_count(), 1u);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 1);
}

TEST(ProxyFailover, AProviderWithAZeroRetryBudgetStillTakesFirstAttempts) {
  auto guarded = StartMock("guarded");
  auto proxy =
      StartProxy(ProviderToml("guarded", guarded->base_url(), {"up-model"}, "max_retries = 0") +
                 ModelToml("chat") + BackendToml("chat", "guarded"));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(guarded->request_count(), 1u);
}

TEST(ProxyFailover, AProviderTakesAtMostItsMaxRetriesOfOneRequestsRetries) {
  auto first = StartMock("first", With(Behavior::Fail(503)));
  auto multi = StartMock("multi", With(Behavior::Fail(503)));
  auto last = StartMock("last");
  // Three backends on "multi", which allows one retry per request; settings.max_retries (3)
  // would allow three.
  auto proxy = StartProxy(FailoverChainConfig(
      {{"first", first->base_url()},
       {"multi", multi->base_url(), "max_retries = 1", {{"up-a", 3}, {"up-b", 2}, {"up-c", 1}}},
       {"last", last->base_url()}},
      "max_retries = 3"));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "last");
  EXPECT_EQ(first->request_count(), 1u);
  ASSERT_EQ(multi->request_count(), 1u) << "more retries went to multi than its max_retries";
  EXPECT_EQ(multi->last_request()->model, "up-a");
  EXPECT_EQ(last->request_count(), 1u);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 2);
  EXPECT_TRUE(AccessLogContains(*proxy, R"("retries":2)"));
}

TEST(ProxyFailover, ARequestStartedOnAProviderDoesNotRetryOnItBeyondItsBudget) {
  auto zero = StartMock("zero", With(Behavior::Fail(503)));
  // Both backends on "zero" (max_retries = 0); failover picks up-a first, and up-b would be a
  // retry onto zero. With nothing else to try the client gets zero's 503 as it was.
  auto proxy = StartProxy(FailoverChainConfig(
      {{"zero", zero->base_url(), "max_retries = 0", {{"up-a", 2}, {"up-b", 1}}}}));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "zero");
  EXPECT_EQ(zero->request_count(), 1u);
  EXPECT_EQ(Scrape(*proxy).Find("berry_retries_total", {{"model", "chat"}}), std::nullopt);
}

TEST(ProxyFailover, SettingsMaxRetriesStillCapsTheTotalOverProviderBudgets) {
  auto a = StartMock("a", With(Behavior::Fail(503)));
  auto b = StartMock("b", With(Behavior::Fail(503)));
  auto c = StartMock("c");
  auto proxy = StartProxy(FailoverChainConfig({{"a", a->base_url(), "max_retries = 5"},
                                               {"b", b->base_url(), "max_retries = 5"},
                                               {"c", c->base_url(), "max_retries = 5"}},
                                              "max_retries = 1"));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "b");
  EXPECT_EQ(c->request_count(), 0u);
}

TEST(ProxyFailover, Answers502WhenNoBackendCanBeReached) {
  const std::string one = "http://127.0.0.1:" + std::to_string(UnusedPort()) + "/v1";
  const std::string two = "http://127.0.0.1:" + std::to_string(UnusedPort()) + "/v1";
  auto proxy = StartProxy(FailoverConfig(one, two));

  const HttpResponse response = Chat(*proxy, "chat");

  ExpectOpenAiError(response, 502, "upstream_error", "bad_gateway");
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 1);
  EXPECT_EQ(response.body.find("sk-first-secret"), std::string::npos);
}

TEST(ProxyFailover, Answers504WhenEveryBackendTimesOut) {
  auto first = StartMock("first", With(Behavior::Hang()));
  auto second = StartMock("second", With(Behavior::Hang()));
  auto proxy = StartProxy(
      FailoverConfig(first->base_url(), second->base_url(), "request_timeout_seconds = 1"));

  const HttpResponse response = Chat(*proxy, "chat");

  ExpectOpenAiError(response, 504, "upstream_error", "upstream_timeout");
  EXPECT_EQ(first->request_count(), 1u);
  EXPECT_EQ(second->request_count(), 1u);
}

TEST(ProxyFailover, PassesTheLastUpstream429ThroughWhenEveryBackendFails) {
  Behavior limited = Behavior::Fail(
      429,
      R"({"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}})");
  limited.headers = {{"Retry-After", "7"}};
  auto first = StartMock("first", With(Behavior::Fail(500)));
  auto second = StartMock("second", With(limited));
  auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url()));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.body, limited.body);
  EXPECT_EQ(response.Header("Retry-After").value_or(""), "7");
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "second");
  EXPECT_EQ(first->request_count(), 1u);
}

// A 429 naming a wait cools the backend down on this proxy: the failover chain skips it until
// then, and with nothing else left the proxy answers 429 with Retry-After itself.
TEST(ProxyFailover, UpstreamRetryAfterCoolsTheBackendDownUntilThen) {
  Behavior limited = Behavior::Fail(429);
  limited.headers = {{"x-ratelimit-remaining-requests", "0"},
                     {"x-ratelimit-reset-requests", "1.5"}};
  auto first = StartMock("first", With(limited));
  auto second = StartMock("second");
  auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url()));
  const auto limited_at = Clock::now();
  EXPECT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "second");
  first->SetDefaultBehavior(Behavior::Normal());  // fine again, but it asked for 1.5 s
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "second");
  }
  EXPECT_EQ(first->request_count(), 1u) << "the first tier got traffic while cooling down";

  second->SetDefaultBehavior(limited);
  const HttpResponse passed = Chat(*proxy, "chat");  // the second tier's own 429, passed through
  EXPECT_EQ(passed.status, 429);
  if (Clock::now() - limited_at < 1200ms) {
    const HttpResponse refused = Chat(*proxy, "chat");
    ExpectOpenAiError(refused, 429, "rate_limit_error", "rate_limit_exceeded");
    const std::string retry_after = refused.Header("Retry-After").value_or("");
    EXPECT_TRUE(retry_after == "1" || retry_after == "2") << retry_after;  // whole seconds, up
    EXPECT_EQ(first->request_count(), 1u);
  }
  second->SetDefaultBehavior(Behavior::Normal());
  while (Clock::now() - limited_at < 1600ms) {
    std::this_thread::sleep_for(20ms);  // waiting out the named time itself is the point
  }
  EXPECT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "first");
}

TEST(ProxyFailover, PassesTheLastUpstream5xxThroughWhenEveryBackendFails) {
  auto first = StartMock("first", With(Behavior::Fail(429)));
  auto second = StartMock("second", With(Behavior::Fail(500, R"({"error":{"message":"boom"}})")));
  auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url()));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 500);
  EXPECT_EQ(response.body, R"({"error":{"message":"boom"}})");
}

TEST(ProxyFailover, Other4xxFromUpstreamArePassedThroughAndNotRetried) {
  for (const int status : {400, 401, 404, 422}) {
    SCOPED_TRACE(status);
    const std::string body =
        R"({"error":{"message":"upstream says no","type":"invalid_request_error","param":"messages","code":"x"}})";
    Behavior rejecting = Behavior::Fail(status, body);
    rejecting.headers = {{"X-Upstream-Reason", "nope"}};
    auto first = StartMock("first", With(rejecting));
    auto second = StartMock("second");
    auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url(),
                                           "circuit_breaker_failure_threshold = 1"));

    const HttpResponse response = Chat(*proxy, "chat");

    EXPECT_EQ(response.status, status);
    EXPECT_EQ(response.body, body);
    EXPECT_EQ(response.Header("X-Upstream-Reason").value_or(""), "nope");
    EXPECT_EQ(second->request_count(), 0u);
    const Metrics metrics = Scrape(*proxy);
    EXPECT_EQ(metrics.Find("berry_retries_total", {{"model", "chat"}}), std::nullopt);
    EXPECT_EQ(metrics.Value("berry_backend_ejected", {{"backend", BackendId("chat", "first")}}), 0)
        << "a client error is not the backend's fault";
  }
}

TEST(ProxyFailover, EjectsABackendAfterConsecutiveFailuresAndStopsSendingItTraffic) {
  auto first = StartMock("first", With(Behavior::Fail(503)));
  auto second = StartMock("second");
  auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url(),
                                         "circuit_breaker_failure_threshold = 2\n"
                                         "circuit_breaker_timeout_seconds = 600"));
  const std::string first_id = BackendId("chat", "first");

  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
  EXPECT_EQ(Scrape(*proxy).Value("berry_backend_ejected", {{"backend", first_id}}), 0);
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
  ASSERT_EQ(first->request_count(), 2u);

  const Metrics metrics = Scrape(*proxy);
  EXPECT_EQ(metrics.Value("berry_backend_ejected", {{"backend", first_id}}), 1);
  EXPECT_EQ(metrics.Value("berry_backend_ejected", {{"backend", BackendId("chat", "second")}}), 0);
  first->SetDefaultBehavior(Behavior::Normal());  // healthy again, but still ejected
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Chat(*proxy, "chat").status, 200);
  }
  EXPECT_EQ(first->request_count(), 2u) << "an ejected backend got traffic";
  EXPECT_EQ(second->request_count(), 22u);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 2);
  EXPECT_EQ(Scrape(*proxy).Find("berry_panic_total", {{"model", "chat"}}), std::nullopt);
}

TEST(ProxyFailover, TimeoutsAndConnectErrorsCountTowardsEjection) {
  auto second = StartMock("second");
  const std::string refused = "http://127.0.0.1:" + std::to_string(UnusedPort()) + "/v1";
  auto proxy = StartProxy(
      FailoverConfig(refused, second->base_url(), "circuit_breaker_failure_threshold = 2"));

  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);

  EXPECT_EQ(
      Scrape(*proxy).Value("berry_backend_ejected", {{"backend", BackendId("chat", "first")}}), 1);
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 2)
      << "the ejected backend is no longer tried first";
}

TEST(ProxyFailover, PanicModeIgnoresEjectionWhenTooFewBackendsAreUsable) {
  auto first = StartMock("first", With(Behavior::Fail(503)));
  auto second = StartMock("second");
  auto proxy = StartProxy(FailoverConfig(first->base_url(), second->base_url(),
                                         "circuit_breaker_failure_threshold = 1\n"
                                         "circuit_breaker_timeout_seconds = 600\n"
                                         "panic_threshold_percent = 100"));
  const std::string first_id = BackendId("chat", "first");

  EXPECT_EQ(Chat(*proxy, "chat").status, 200);  // first fails and is ejected; second answers
  ASSERT_EQ(Scrape(*proxy).Value("berry_backend_ejected", {{"backend", first_id}}), 1);
  first->SetDefaultBehavior(Behavior::Normal());

  // One of two backends usable is below 100%: the pick ignores ejection, and failover's first
  // tier is `first` again.
  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "first");
  EXPECT_EQ(first->request_count(), 2u);
  const Metrics metrics = Scrape(*proxy);
  EXPECT_GE(metrics.Value("berry_panic_total", {{"model", "chat"}}), 1);
  EXPECT_EQ(metrics.Value("berry_backend_ejected", {{"backend", first_id}}), 1);
  EXPECT_TRUE(AccessLogContains(*proxy, R"("panic":true)"));
}

TEST(ProxyFailover, Answers503WhenEveryBackendIsEjectedAndPanicIsOff) {
  auto only = StartMock("only", With(Behavior::Fail(500)));
  auto proxy = StartProxy(SettingsToml("circuit_breaker_failure_threshold = 1\n"
                                       "panic_threshold_percent = 0") +
                          ProviderToml("only", only->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "only"));

  EXPECT_EQ(Chat(*proxy, "chat").status, 500);  // passed through; the backend is now ejected
  const HttpResponse response = Chat(*proxy, "chat");

  ExpectOpenAiError(response, 503, "upstream_error", "no_backend_available");
  EXPECT_EQ(only->request_count(), 1u);
}

TEST(ProxyFailover, StalePooledConnectionIsRetriedOnAFreshOneWithoutBlamingTheBackend) {
  MockUpstream::Options options;
  options.idle_timeout = 200ms;  // the provider drops idle keep-alive connections quickly
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(SettingsToml("max_retries = 0\ncircuit_breaker_failure_threshold = 1") +
                          ProviderToml("acme", mock->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme"));
  // One client connection, so both requests are served by the same proxy worker and pool.
  auto connection = test_support::HttpConnection::Connect(proxy->url());
  ASSERT_TRUE(connection.ok()) << connection.status();

  auto one = (*connection)->Send(HttpRequest::Post("/v1/chat/completions", ChatBody("chat")));
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->status, 200);
  ASSERT_EQ(mock->connections_accepted(), 1u);
  ASSERT_TRUE(mock->WaitForOpenConnections(0, 5s)) << "the mock did not drop the idle connection";

  auto two = (*connection)->Send(HttpRequest::Post("/v1/chat/completions", ChatBody("chat")));

  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->status, 200) << two->body;
  EXPECT_EQ(mock->connections_accepted(), 2u);
  EXPECT_EQ(mock->request_count(), 2u);
  const Metrics metrics = Scrape(*proxy);
  EXPECT_EQ(metrics.Value("berry_backend_ejected", {{"backend", BackendId("chat", "acme")}}), 0);
  EXPECT_EQ(metrics.Find("berry_retries_total", {{"model", "chat"}}), std::nullopt);
}

}  // namespace
}  // namespace berry::itest::proxy_failover_test
