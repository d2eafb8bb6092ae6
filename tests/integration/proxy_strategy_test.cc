// Every selection strategy observed end to end: real mock providers behind an in-process proxy,
// counting where requests land. (Exact distributions are unit-tested in tests/unit/selection;
// these check that the strategy named in the config is the one the request path uses.)
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/proxy_fixture.h"
#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_strategy_test {
namespace {

using namespace std::chrono_literals;

// Three providers a, b, c (one mock each) behind one custom model "chat".
struct Trio {
  std::unique_ptr<MockUpstream> a = StartMock("a");
  std::unique_ptr<MockUpstream> b = StartMock("b");
  std::unique_ptr<MockUpstream> c = StartMock("c");

  std::string Providers() const {
    return ProviderToml("a", a->base_url()) + ProviderToml("b", b->base_url()) +
           ProviderToml("c", c->base_url());
  }
};

// Sends `n` chat requests over one keep-alive client connection (so one proxy worker serves
// them all: round robin's state is per worker) and returns which mock answered each.
std::string Sequence(const TestProxy& proxy, const Trio& trio, int n) {
  auto connection = test_support::HttpConnection::Connect(proxy.url());
  if (!connection.ok()) {
    Fatal(connection.status().ToString());
  }
  std::string order;
  for (int i = 0; i < n; ++i) {
    const uint64_t before_b = trio.b->request_count();
    const uint64_t before_c = trio.c->request_count();
    auto response = (*connection)->Send(HttpRequest::Post("/v1/chat/completions", ChatBody("chat")));
    if (!response.ok() || response->status != 200) {
      Fatal("request failed");
    }
    // Only `a` ever fails in these tests, so a request that reached b or c was answered there.
    order += trio.c->request_count() > before_c   ? 'c'
             : trio.b->request_count() > before_b ? 'b'
                                                  : 'a';
  }
  return order;
}

// A proxy whose selection draws from a generator seeded with `seed`. Sequence() sends all its
// requests to one worker, so a seeded test makes the same picks on every run; the tolerances are
// the 5-sigma ones the tests had with unseeded generators, so they hold for other seeds too.
TestProxyOptions Seeded(uint64_t seed) {
  TestProxyOptions options;
  options.rng_seed = seed;
  return options;
}

TEST(ProxyStrategy, RoundRobinFollowsTheSmoothWeightedSequence) {
  Trio trio;
  auto proxy = StartProxy(trio.Providers() + ModelToml("chat", "strategy = \"round_robin\"") +
                          BackendToml("chat", "a", "up-model", 5) +
                          BackendToml("chat", "b", "up-model", 1) +
                          BackendToml("chat", "c", "up-model", 1));
  // nginx's smooth weighted round robin for 5:1:1.
  EXPECT_EQ(Sequence(*proxy, trio, 14), "aabacaaaabacaa");
}

TEST(ProxyStrategy, RandomIgnoresWeights) {
  Trio trio;
  auto proxy = StartProxy(trio.Providers() + ModelToml("chat", "strategy = \"random\"") +
                          BackendToml("chat", "a", "up-model", 9) +
                          BackendToml("chat", "b", "up-model", 1),
                          Seeded(11));
  const std::string order = Sequence(*proxy, trio, 300);
  const auto b = std::count(order.begin(), order.end(), 'b');
  // Uniform: 150 ± 5 sigma (sigma ≈ 8.7); weighted 9:1 would give about 30.
  EXPECT_NEAR(static_cast<double>(b), 150.0, 45.0);
}

TEST(ProxyStrategy, FailoverSendsEverythingToTheFirstTierUntilItFails) {
  Trio trio;
  auto proxy = StartProxy(SettingsToml("circuit_breaker_failure_threshold = 1\n"
                                       "circuit_breaker_timeout_seconds = 600") +
                          trio.Providers() + ModelToml("chat", "strategy = \"failover\"") +
                          BackendToml("chat", "a", "up-model", 1, "priority = 1") +
                          BackendToml("chat", "b", "up-model", 5, "priority = 2") +
                          BackendToml("chat", "c", "up-model", 1, "priority = 2"));
  EXPECT_EQ(Sequence(*proxy, trio, 10), "aaaaaaaaaa");

  trio.a->SetDefaultBehavior(Behavior::Fail(503));
  // The failing request fails over to tier 2's heaviest backend, and a stays ejected.
  EXPECT_EQ(Sequence(*proxy, trio, 5), "bbbbb");
  EXPECT_EQ(trio.c->request_count(), 0u);
}

TEST(ProxyStrategy, EjectedBackendReturnsAfterTheEjectionTime) {
  Trio trio;
  auto proxy = StartProxy(SettingsToml("circuit_breaker_failure_threshold = 1\n"
                                       "circuit_breaker_timeout_seconds = 1") +
                          trio.Providers() + ModelToml("chat", "strategy = \"failover\"") +
                          BackendToml("chat", "a", "up-model", 1, "priority = 1") +
                          BackendToml("chat", "b", "up-model", 1, "priority = 2"));
  trio.a->EnqueueBehavior(Behavior::Fail(503));  // one failure ejects a for 1 s
  EXPECT_EQ(Sequence(*proxy, trio, 3), "bbb");
  const std::string ejected_id = BackendId("chat", "a");
  EXPECT_EQ(Scrape(*proxy).Value("berry_backend_ejected", {{"backend", ejected_id}}), 1);

  EXPECT_TRUE(WaitUntil(
      [&] { return Scrape(*proxy).Value("berry_backend_ejected", {{"backend", ejected_id}}) == 0; },
      5s));
  EXPECT_EQ(Sequence(*proxy, trio, 3), "aaa");
}

TEST(ProxyStrategy, WeightedFailoverSplitsByWeightInsideTheFirstTier) {
  Trio trio;
  auto proxy = StartProxy(trio.Providers() + ModelToml("chat", "strategy = \"weighted_failover\"") +
                          BackendToml("chat", "a", "up-model", 3, "priority = 1") +
                          BackendToml("chat", "b", "up-model", 1, "priority = 1") +
                          BackendToml("chat", "c", "up-model", 100, "priority = 2"),
                          Seeded(12));
  const std::string order = Sequence(*proxy, trio, 400);
  EXPECT_EQ(std::count(order.begin(), order.end(), 'c'), 0) << "tier 2 got traffic";
  EXPECT_NEAR(static_cast<double>(std::count(order.begin(), order.end(), 'a')), 300.0, 45.0);
}

TEST(ProxyStrategy, SmartStrategiesStayInTheFirstTierAndSplitByEffectiveWeight) {
  for (const char* strategy : {"smart_weighted_failover", "smart_ai"}) {
    Trio trio;
    auto proxy = StartProxy(trio.Providers() +
                            ModelToml("chat", absl::StrCat("strategy = \"", strategy, "\"")) +
                            BackendToml("chat", "a", "up-model", 3, "priority = 1") +
                            BackendToml("chat", "b", "up-model", 1, "priority = 1") +
                            BackendToml("chat", "c", "up-model", 100, "priority = 2"),
                          Seeded(13));
    // Standalone, effective weight = weight (no fleet data): 3:1 inside tier 1.
    const std::string order = Sequence(*proxy, trio, 400);
    EXPECT_EQ(std::count(order.begin(), order.end(), 'c'), 0) << strategy;
    EXPECT_NEAR(static_cast<double>(std::count(order.begin(), order.end(), 'a')), 300.0, 45.0)
        << strategy;
  }
}

TEST(ProxyStrategy, LeastLatencyPrefersTheFasterBackend) {
  Trio trio;
  Behavior slow = Behavior::Normal();
  slow.headers_delay = std::chrono::milliseconds(40);
  trio.a->SetDefaultBehavior(slow);
  auto proxy = StartProxy(trio.Providers() + ModelToml("chat", "strategy = \"least_latency\"") +
                          BackendToml("chat", "a") + BackendToml("chat", "b"),
                          Seeded(14));
  const std::string order = Sequence(*proxy, trio, 100);
  // Both are tried first (no sample yet), then b wins except for the 5% exploration share.
  EXPECT_GE(std::count(order.begin(), order.end(), 'b'), 80) << order;
  EXPECT_GE(std::count(order.begin(), order.end(), 'a'), 1) << order;
}

TEST(ProxyStrategy, LeastRequestsAvoidsTheBackendWithRequestsInFlight) {
  Trio trio;
  Behavior slow = Behavior::Normal();
  slow.headers_delay = std::chrono::milliseconds(300);
  trio.a->SetDefaultBehavior(slow);
  auto proxy = StartProxy(trio.Providers() + ModelToml("chat", "strategy = \"least_requests\"") +
                          BackendToml("chat", "a") + BackendToml("chat", "b"),
                          Seeded(15));
  // Four clients in parallel: while a holds a slow request, the others go to b.
  std::vector<std::thread> clients;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto response = test_support::Fetch(HttpRequest::Post(proxy->url("/v1/chat/completions"),
                                                              ChatBody("chat")));
        if (!response.ok() || response->status != 200) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& client : clients) {
    client.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(trio.a->request_count() + trio.b->request_count(), 40u);
  // A uniform or weighted split would send about 20 to a (14 or fewer only about 4% of the
  // time); while a is busy, least_requests sends a request there only when both of its two
  // random draws land on a.
  EXPECT_LE(trio.a->request_count(), 14u);
}

}  // namespace
}  // namespace berry::itest::proxy_strategy_test
