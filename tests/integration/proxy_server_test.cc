// The downstream server and the proxy's life cycle: pipelined requests, slow clients, route-table
// reloads (and that no secret ever reaches /metrics or the access log), graceful drain.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_server_test {
namespace {

using Clock = std::chrono::steady_clock;
namespace http = boost::beast::http;

std::string OneBackendConfig(const MockUpstream& mock, std::string_view model = "chat") {
  return ProviderToml("acme", mock.base_url()) + ModelToml(model) + BackendToml(model, "acme");
}

std::string RawChat(std::string_view request_id, std::string_view model) {
  const std::string body = ChatBody(model);
  return absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n",
                      "Content-Type: application/json\r\nx-request-id: ", std::string(request_id),
                      "\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
}

// Models "slow" (the provider answers after 300 ms) and "fast" on one mock provider.
std::string SlowAndFastConfig(MockUpstream& mock) {
  Behavior slow = Behavior::Json();
  slow.headers_delay = 300ms;
  mock.SetModelBehavior("slow-up", slow);
  return ProviderToml("acme", mock.base_url(), {"slow-up", "fast-up"}) + ModelToml("slow") +
         BackendToml("slow", "acme", "slow-up") + ModelToml("fast") +
         BackendToml("fast", "acme", "fast-up");
}

TEST(ProxyServer, PipelinedRequestsAreAnsweredInOrder) {
  auto mock = StartMock("acme");
  // The first request is the slow one: an out-of-order server would answer the second first.
  auto proxy = StartProxy(SlowAndFastConfig(*mock));
  auto connection = RawConnection::Connect(proxy->port());
  ASSERT_TRUE(connection.ok()) << connection.status();

  ASSERT_TRUE((*connection)
                  ->Write(RawChat("first", "slow") + RawChat("second", "fast") +
                          "GET /healthz HTTP/1.1\r\nHost: proxy\r\nx-request-id: third\r\n\r\n")
                  .ok());

  for (const char* expected : {"first", "second", "third"}) {
    auto response = (*connection)->ReadResponse();
    ASSERT_TRUE(response.ok()) << expected << ": " << response.status();
    EXPECT_EQ(response->result_int(), 200) << expected;
    EXPECT_EQ((*response)["x-request-id"], expected);
  }
  EXPECT_EQ(mock->request_count(), 2u);
}

TEST(ProxyServer, RequestSentWhileTheFirstWaitsOnItsProviderIsAnsweredNext) {
  // The second request arrives while the proxy waits on the provider for the first: the read
  // that watches for a disconnect takes it in, and it is answered after the first, on the same
  // connection; then the connection serves a third.
  auto mock = StartMock("acme");
  auto proxy = StartProxy(SlowAndFastConfig(*mock));
  auto connection = RawConnection::Connect(proxy->port());
  ASSERT_TRUE(connection.ok()) << connection.status();

  ASSERT_TRUE((*connection)->Write(RawChat("first", "slow")).ok());
  ASSERT_TRUE(WaitUntil([&] { return mock->request_count() == 1; }));  // it is waiting now
  ASSERT_TRUE((*connection)->Write(RawChat("second", "fast")).ok());
  for (const char* expected : {"first", "second"}) {
    auto response = (*connection)->ReadResponse();
    ASSERT_TRUE(response.ok()) << expected << ": " << response.status();
    EXPECT_EQ(response->result_int(), 200) << expected;
    EXPECT_EQ((*response)["x-request-id"], expected);
  }
  ASSERT_TRUE((*connection)->Write(RawChat("third", "fast")).ok());
  auto third = (*connection)->ReadResponse();
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ((*third)["x-request-id"], "third");
  EXPECT_EQ(mock->request_count(), 3u);
}

TEST(ProxyServer, ClientTricklingItsHeadersIsCutOff) {
  auto mock = StartMock("acme");
  TestProxyOptions options;
  options.header_timeout = 300ms;
  auto proxy = StartProxy(OneBackendConfig(*mock), options);
  auto connection = RawConnection::Connect(proxy->port());
  ASSERT_TRUE(connection.ok()) << connection.status();

  // One header line every 100 ms: the headers would never end within the 300 ms allowed.
  const auto start = Clock::now();
  bool write_failed = false;
  ASSERT_TRUE((*connection)->Write("POST /v1/chat/completions HTTP/1.1\r\n").ok());
  std::string received;
  bool closed = false;
  while (!closed && Clock::now() - start < 5s) {
    write_failed = !(*connection)->Write("X-Slow: 1\r\n").ok();
    closed = write_failed || (*connection)->WaitForClose(100ms, &received);
  }

  EXPECT_TRUE(closed) << "the proxy let a client trickle headers for 5 s";
  EXPECT_LT(Clock::now() - start, 3s);
  if (!write_failed) {
    EXPECT_TRUE(received.starts_with("HTTP/1.1 408")) << received;
  }
  EXPECT_EQ(mock->request_count(), 0u);
}

TEST(ProxyServer, KeepAliveClientConnectionServesManyRequests) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(OneBackendConfig(*mock));
  auto connection = test_support::HttpConnection::Connect(proxy->url());
  ASSERT_TRUE(connection.ok()) << connection.status();

  for (int i = 0; i < 10; ++i) {
    auto response =
        (*connection)->Send(HttpRequest::Post("/v1/chat/completions", ChatBody("chat")));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, 200);
    EXPECT_FALSE(response->connection_close);
  }
  EXPECT_TRUE((*connection)->is_open());
}

TEST(ProxyServer, ReloadTakesEffectForNewRequests) {
  auto old_mock = StartMock("old");
  auto new_mock = StartMock("new");
  auto proxy = StartProxy(ProviderToml("acme", old_mock->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme"));
  const std::string old_version = proxy->version();
  ASSERT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "old");

  ASSERT_TRUE(proxy
                  ->Reload(ProviderToml("acme", new_mock->base_url()) + ModelToml("chat") +
                           BackendToml("chat", "acme") + ModelToml("added") +
                           BackendToml("added", "acme"))
                  .ok());

  EXPECT_NE(proxy->version(), old_version);
  EXPECT_EQ(Chat(*proxy, "chat").Header("x-mock-upstream").value_or(""), "new");
  EXPECT_EQ(Chat(*proxy, "added").status, 200);
  EXPECT_EQ(old_mock->request_count(), 1u);
  const Metrics metrics = Scrape(*proxy);
  EXPECT_EQ(metrics.Value("berry_route_table_version_info", {{"version", proxy->version()}}), 1);
  EXPECT_EQ(metrics.Find("berry_route_table_version_info", {{"version", old_version}}),
            std::nullopt);
  EXPECT_EQ(StringAt(ParseJson(Get(*proxy, "/readyz").body), "version"), proxy->version());
}

TEST(ProxyServer, ReloadRemovingAModelMakesIt404) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(OneBackendConfig(*mock, "chat") + ModelToml("extra") +
                          BackendToml("extra", "acme"));
  ASSERT_EQ(Chat(*proxy, "extra").status, 200);

  ASSERT_TRUE(proxy->Reload(OneBackendConfig(*mock, "chat")).ok());

  EXPECT_EQ(Chat(*proxy, "extra").status, 404);
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
}

TEST(ProxyServer, InvalidReloadKeepsTheRunningTable) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(OneBackendConfig(*mock));
  const std::string version = proxy->version();

  EXPECT_FALSE(proxy->Reload("[models.chat]\nstrategy = \"bogus\"\n").ok());

  EXPECT_EQ(proxy->version(), version);
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
}

TEST(ProxyServer, ReloadKeepsEjectionsOfBackendsThatStay) {
  MockUpstream::Options failing;
  failing.default_behavior = Behavior::Fail(503);
  auto first = StartMock("first", failing);
  auto second = StartMock("second");
  const auto config = [&](std::string_view extra_model) {
    return SettingsToml(
               "circuit_breaker_failure_threshold = 1\ncircuit_breaker_timeout_seconds = 600") +
           ProviderToml("first", first->base_url()) + ProviderToml("second", second->base_url()) +
           ModelToml("chat", R"(strategy = "failover")") +
           BackendToml("chat", "first", "up-model", 1, "priority = 1") +
           BackendToml("chat", "second", "up-model", 1, "priority = 2") + std::string(extra_model);
  };
  auto proxy = StartProxy(config(""));
  ASSERT_EQ(Chat(*proxy, "chat").status, 200);  // first fails once: ejected

  ASSERT_TRUE(proxy->Reload(config(ModelToml("more") + BackendToml("more", "second"))).ok());

  EXPECT_EQ(
      Scrape(*proxy).Value("berry_backend_ejected", {{"backend", BackendId("chat", "first")}}), 1);
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
  EXPECT_EQ(first->request_count(), 1u) << "the reload forgot the ejection";
}

TEST(ProxyServer, SecretsNeverAppearInMetricsOrTheAccessLog) {
  constexpr std::string_view kProviderKey = "sk-live-PROVIDER-KEY-do-not-leak-1234";
  constexpr std::string_view kHeaderSecret = "org-HEADER-SECRET-5678";
  constexpr std::string_view kUserToken = "berry-USER-TOKEN-do-not-leak-9012";
  constexpr std::string_view kWrongToken = "berry-WRONG-TOKEN-do-not-leak-3456";
  auto mock = StartMock("acme");
  MockUpstream::Options failing;
  failing.default_behavior = Behavior::Fail(503);
  auto broken = StartMock("broken", failing);
  const auto config = [&](const std::string& base_url) {
    return absl::StrCat("[providers.acme]\nbase_url = \"", base_url, "\"\napi_key = \"",
                        std::string(kProviderKey), "\"\nmodels = [\"up-model\"]\n",
                        "headers = { \"OpenAI-Organization\" = \"", std::string(kHeaderSecret),
                        "\" }\n\n", ModelToml("chat"), BackendToml("chat", "acme"),
                        "[users.alice]\ntoken = \"", std::string(kUserToken), "\"\n");
  };
  auto proxy = StartProxy(config(broken->base_url()));

  // Successes, upstream failures, auth failures, a stream, a reload and an unreachable backend.
  EXPECT_EQ(Chat(*proxy, "chat", Bearer(kUserToken)).status, 503);
  EXPECT_EQ(Chat(*proxy, "chat", Bearer(kWrongToken)).status, 401);
  ASSERT_TRUE(proxy->Reload(config(mock->base_url())).ok());
  EXPECT_EQ(Chat(*proxy, "chat", Bearer(kUserToken)).status, 200);
  EXPECT_TRUE(StreamChat(*proxy, "chat", {}, Bearer(kUserToken)).done());
  EXPECT_EQ(Get(*proxy, "/v1/models/chat", Bearer(kWrongToken)).status, 401);
  ASSERT_TRUE(
      proxy->Reload(config("http://127.0.0.1:" + std::to_string(UnusedPort()) + "/v1")).ok());
  const HttpResponse unreachable = Chat(*proxy, "chat", Bearer(kUserToken));
  EXPECT_EQ(unreachable.status, 502);

  ASSERT_TRUE(AccessLogContains(*proxy, R"("status":502)"));
  const std::string metrics = ScrapeText(*proxy);
  const std::string log = proxy->access_log_text();
  ASSERT_FALSE(log.empty());
  for (std::string_view secret : {kProviderKey, kHeaderSecret, kUserToken, kWrongToken}) {
    EXPECT_EQ(metrics.find(secret), std::string::npos) << secret;
    EXPECT_EQ(log.find(secret), std::string::npos) << secret;
    EXPECT_EQ(unreachable.body.find(secret), std::string::npos) << secret;
  }
  // The key's distinctive middle part must not leak either, e.g. through truncation.
  EXPECT_EQ(log.find("PROVIDER-KEY"), std::string::npos);
  EXPECT_EQ(metrics.find("PROVIDER-KEY"), std::string::npos);
}

TEST(ProxyServer, AccessLogHasOneJsonLinePerRequest) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(OneBackendConfig(*mock));

  ASSERT_EQ(Chat(*proxy, "chat", {{"x-request-id", "log-me-1"}}).status, 200);
  ASSERT_EQ(Chat(*proxy, "nope", {{"x-request-id", "log-me-2"}}).status, 404);

  // Written after the response went out: wait for the lines.
  ASSERT_TRUE(AccessLogContains(*proxy, "log-me-2"));
  ASSERT_TRUE(AccessLogContains(*proxy, "log-me-1"));
  const boost::json::value entry = AccessLogEntry(*proxy, "log-me-1");
  const boost::json::value second = AccessLogEntry(*proxy, "log-me-2");
  ASSERT_TRUE(entry.is_object()) << proxy->access_log_text();
  ASSERT_TRUE(second.is_object()) << proxy->access_log_text();
  const std::string log = proxy->access_log_text();
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 2) << log;
  EXPECT_EQ(StringAt(entry, "request_id"), "log-me-1");
  EXPECT_EQ(StringAt(entry, "model"), "chat");
  EXPECT_EQ(StringAt(entry, "backend"), BackendId("chat", "acme"));
  EXPECT_EQ(StringAt(entry, "path"), "/v1/chat/completions");
  EXPECT_EQ(entry.at("status").to_number<int>(), 200);
  EXPECT_EQ(entry.at("retries").to_number<int>(), 0);
  EXPECT_TRUE(entry.at("ttfb").is_number());
  EXPECT_FALSE(StringAt(entry, "time").empty());
  EXPECT_EQ(second.at("status").to_number<int>(), 404);
  EXPECT_EQ(StringAt(second, "model"), "") << "an unknown model is not logged as a model";
}

TEST(ProxyServer, GracefulDrainLetsAStreamFinishAndRefusesNewConnections) {
  MockUpstream::Options options;
  options.default_behavior = Behavior::Stream(6, 150ms);
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(OneBackendConfig(*mock));

  std::atomic<bool> first_event{false};
  absl::StatusOr<StreamedResponse> streamed;
  std::thread client([&] {
    HttpRequest request =
        PostRequest(*proxy, "/v1/chat/completions", ChatBody("chat", R"(,"stream":true)"));
    streamed = test_support::FetchStreaming(request, [&](const SseEvent&) {
      first_event = true;
      return true;
    });
  });
  ASSERT_TRUE(WaitUntil([&] { return first_event.load(); })) << "the stream never started";

  proxy->server().BeginDrain();

  EXPECT_TRUE(WaitUntil([&] { return !RawConnection::Connect(proxy->port(), 1s).ok(); }))
      << "new connections are still accepted while draining";
  EXPECT_TRUE(proxy->server().WaitIdle(10s));
  client.join();
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_TRUE(streamed->body_status.ok()) << streamed->body_status;
  EXPECT_TRUE(streamed->done()) << "the in-flight stream was cut by the drain";
  EXPECT_EQ(streamed->events.size(), 8u);
  EXPECT_EQ(proxy->server().active_requests(), 0);
}

TEST(ProxyServer, DrainClosesIdleKeepAliveConnections) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(OneBackendConfig(*mock));
  auto connection = RawConnection::Connect(proxy->port());
  ASSERT_TRUE(connection.ok());
  ASSERT_TRUE((*connection)->Write("GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n").ok());
  auto response = (*connection)->ReadResponse();
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_TRUE(response->keep_alive());

  proxy->server().BeginDrain();

  EXPECT_TRUE((*connection)->WaitForClose(5s));
  EXPECT_TRUE(proxy->server().WaitIdle(1s));
}

}  // namespace
}  // namespace berry::itest::proxy_server_test
