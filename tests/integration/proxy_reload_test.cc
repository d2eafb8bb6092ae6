// Route tables replaced while requests are in flight: a request finishes on the table it started
// on (its failover picks, its metrics, the generation itself stay alive), and the metric series
// of models and backends a reload removed leave /metrics once no request holds them.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>
#include <string>

#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_reload_test {
namespace {

// One worker, so the request that picks up a new table is on the same worker as the one in
// flight (the case that matters: the worker's hold on the old table must outlive the switch).
TestProxyOptions OneWorker() {
  TestProxyOptions options;
  options.threads = 1;
  return options;
}

// A model of `n` backends on provider `provider` (models up-0 .. up-(n-1)).
std::string ManyBackends(std::string_view model, std::string_view provider, int n) {
  std::string out = ModelToml(model);
  for (int i = 0; i < n; ++i) {
    out += BackendToml(model, provider, absl::StrCat("up-", i));
  }
  return out;
}

std::vector<std::string> UpModels(int n) {
  std::vector<std::string> models = {"up-model"};
  for (int i = 0; i < n; ++i) {
    models.push_back(absl::StrCat("up-", i));
  }
  return models;
}

// The series of /metrics whose labels mention `needle` (a model or backend name).
int SeriesMentioning(const TestProxy& proxy, std::string_view needle) {
  int n = 0;
  const Metrics metrics = Scrape(proxy);
  for (const Metrics::Sample& sample : metrics.samples()) {
    for (const auto& [name, value] : sample.labels) {
      if (value.find(needle) != std::string::npos) {
        ++n;
        break;
      }
    }
  }
  return n;
}

TEST(ProxyReload, AStreamInFlightAcrossTwoReloadsFinishesOnTheTableItStartedOn) {
  auto slow = StartMock("slow");
  // 3 s of stream: far longer than the reloads and requests below take, even under sanitizers.
  slow->SetDefaultBehavior(Behavior::Stream(30, std::chrono::milliseconds(100)));
  auto fast = StartMock("fast");
  // Table 1: "chat" is the 5th backend (index 4) on the slow provider; tables 2 and 3 have one
  // backend in all, so an index from table 1 would be out of range in theirs.
  const std::string first = ProviderToml("slow", slow->base_url(), UpModels(4)) +
                            ManyBackends("big", "slow", 4) + ModelToml("chat") +
                            BackendToml("chat", "slow");
  const std::string second =
      ProviderToml("fast", fast->base_url()) + ModelToml("chat") + BackendToml("chat", "fast");
  auto proxy = StartProxy(first, OneWorker());

  std::atomic<int> events{0};
  auto stream = std::async(std::launch::async, [&] {
    return StreamChat(*proxy, "chat", [&](const test_support::SseEvent&) {
      events.fetch_add(1);
      return true;
    });
  });
  ASSERT_TRUE(WaitUntil([&] { return events.load() >= 1; }));

  // Two reloads, each picked up by the worker (any request refreshes it): the stream's table is
  // no longer the store's, nor the worker's.
  ASSERT_TRUE(proxy->Reload(second).ok());
  EXPECT_EQ(Get(*proxy, "/healthz").status, 200);
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
  ASSERT_TRUE(proxy->Reload(second + "# edited\n").ok());
  EXPECT_EQ(Get(*proxy, "/healthz").status, 200);
  // While the stream runs, its backend's series are held: still on /metrics.
  ASSERT_LT(events.load(), 30) << "the stream ended before the reloads: nothing was tested";
  EXPECT_GT(SeriesMentioning(*proxy, "chat/slow/up-model"), 0);

  const StreamedResponse response = stream.get();
  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(response.body_status.ok()) << response.body_status;
  EXPECT_TRUE(response.done());
  EXPECT_EQ(response.events.size(), 32u) << "30 content events, the final chunk and [DONE]";
  // Its access log line names the backend it was served by, from its own table.
  EXPECT_TRUE(AccessLogContains(*proxy, R"("backend":"chat/slow/up-model","status":200)"))
      << proxy->access_log_text();

  // Once it ended nobody holds the old table: the removed backends' series go, the new
  // backend's count stays.
  EXPECT_TRUE(WaitUntil([&] { return SeriesMentioning(*proxy, "slow") == 0; }))
      << ScrapeText(*proxy);
  EXPECT_EQ(Scrape(*proxy).Value("berry_requests_total",
                                 {{"backend", BackendId("chat", "fast")}, {"code", "200"}}),
            1);
}

TEST(ProxyReload, AFailoverAfterAReloadPicksFromTheTableTheRequestStartedOn) {
  auto broken = StartMock("broken");
  Behavior fail_late = Behavior::Fail(500);
  fail_late.headers_delay = std::chrono::milliseconds(1500);
  broken->SetDefaultBehavior(fail_late);
  auto healthy = StartMock("healthy");
  const std::string config =
      ProviderToml("broken", broken->base_url()) + ProviderToml("healthy", healthy->base_url()) +
      ModelToml("chat", R"(strategy = "failover")") +
      BackendToml("chat", "broken", "up-model", 1, "priority = 1") +
      BackendToml("chat", "healthy", "up-model", 1, "priority = 2");
  auto proxy = StartProxy(config, OneWorker());

  auto answer = std::async(std::launch::async, [&] { return Chat(*proxy, "chat"); });
  ASSERT_TRUE(WaitUntil([&] { return broken->request_count() >= 1; }));
  // A new table (the same routes) lands while the first attempt waits for its answer.
  ASSERT_TRUE(proxy->Reload(config + "# edited\n").ok());
  EXPECT_EQ(Get(*proxy, "/healthz").status, 200);
  ASSERT_EQ(healthy->request_count(), 0u) << "the failover came before the reload: nothing tested";

  const HttpResponse response = answer.get();
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(healthy->request_count(), 1u);
  EXPECT_EQ(WaitForMetric(*proxy, "berry_retries_total", {{"model", "chat"}}, 1), 1);
}

TEST(ProxyReload, SeriesOfAModelAndABackendARemovedByAReloadLeaveMetrics) {
  auto acme = StartMock("acme");
  auto beta = StartMock("beta");
  // "chat" is served by acme (priority 1; beta, priority 2, only backs it up), "old" by beta.
  const std::string kept = ProviderToml("acme", acme->base_url()) +
                           ModelToml("chat", R"(strategy = "failover")") +
                           BackendToml("chat", "acme", "up-model", 1, "priority = 1");
  const std::string gone = ProviderToml("beta", beta->base_url()) + ModelToml("old") +
                           BackendToml("old", "beta") +
                           BackendToml("chat", "beta", "up-model", 1, "priority = 2");
  auto proxy = StartProxy(kept + gone, OneWorker());
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(Chat(*proxy, "chat").status, 200);
    ASSERT_EQ(Chat(*proxy, "old").status, 200);
  }
  ASSERT_EQ(WaitForMetric(*proxy, "berry_requests_total", {{"model", "old"}}, 2), 2);
  ASSERT_GT(SeriesMentioning(*proxy, "beta"), 0);

  ASSERT_TRUE(proxy->Reload(kept).ok());
  EXPECT_EQ(Get(*proxy, "/healthz").status, 200);  // the worker lets go of the old table

  const std::string text = ScrapeText(*proxy);
  EXPECT_EQ(SeriesMentioning(*proxy, "beta"), 0) << text;
  EXPECT_EQ(Scrape(*proxy).Find("berry_requests_total", {{"model", "old"}}), std::nullopt)
      << text;
  // What is still routed keeps counting from where it was.
  const Metrics::Labels acme_ok = {{"backend", BackendId("chat", "acme")}, {"code", "200"}};
  const double before = Scrape(*proxy).Value("berry_requests_total", acme_ok);
  EXPECT_GT(before, 0);
  ASSERT_EQ(Chat(*proxy, "chat").status, 200);
  EXPECT_EQ(WaitForMetric(*proxy, "berry_requests_total", acme_ok, before + 1), before + 1);

  // A model that comes back starts new series.
  ASSERT_TRUE(proxy->Reload(kept + gone).ok());
  ASSERT_EQ(Chat(*proxy, "old").status, 200);
  EXPECT_EQ(WaitForMetric(*proxy, "berry_requests_total", {{"model", "old"}}, 1), 1);
}

}  // namespace
}  // namespace berry::itest::proxy_reload_test
