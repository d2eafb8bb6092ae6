// What a relayed call looks like on both sides: the upstream sees the client's body with only
// `model` rewritten, the provider's key and headers and never the client's credentials; the
// client sees the upstream's answer unchanged plus an x-request-id. Weighted splits and
// keep-alive reuse of upstream connections.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_relay_test {
namespace {

// One provider "acme" with extra headers, one custom model "chat" → acme's "gpt-upstream".
std::string AcmeConfig(const MockUpstream& mock) {
  return ProviderToml("acme", mock.base_url(), {"gpt-upstream", "embed-upstream"},
                      R"(headers = { "OpenAI-Organization" = "org-acme", "X-Acme-Extra" = "extra-1" })") +
         ModelToml("chat") + BackendToml("chat", "acme", "gpt-upstream") + ModelToml("embed") +
         BackendToml("embed", "acme", "embed-upstream");
}

TEST(ProxyRelay, ChatCompletionReachesUpstreamWithOnlyTheModelRewritten) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));
  // Odd spacing, a nested "model" key and unicode: every byte but the model literal must survive.
  const std::string body =
      "{ \"temperature\" : 0.25,\n  \"model\" :  \"chat\" , \"messages\":[{\"role\":\"user\","
      "\"content\":\"h\\u00e9llo \\\"model\\\"\",\"model\":\"inner\"}],\"n\":1 }";
  const std::string expected =
      "{ \"temperature\" : 0.25,\n  \"model\" :  \"gpt-upstream\" , \"messages\":[{\"role\":"
      "\"user\",\"content\":\"h\\u00e9llo \\\"model\\\"\",\"model\":\"inner\"}],\"n\":1 }";

  const HttpResponse response = Post(*proxy, "/v1/chat/completions", body);

  ASSERT_EQ(response.status, 200) << response.body;
  ASSERT_EQ(mock->request_count(), 1u);
  const RecordedRequest upstream = *mock->last_request();
  EXPECT_EQ(upstream.method, "POST");
  EXPECT_EQ(upstream.target, "/v1/chat/completions");
  EXPECT_EQ(upstream.body, expected);
  EXPECT_EQ(upstream.model, "gpt-upstream");
}

TEST(ProxyRelay, UpstreamGetsProviderKeyAndHeadersNeverTheClientsAuthorization) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response =
      Chat(*proxy, "chat",
           {{"Authorization", "Bearer client-secret-must-not-travel"},
            {"OpenAI-Organization", "client-org"},
            {"X-Client-Header", "passed-along"}});

  ASSERT_EQ(response.status, 200) << response.body;
  const RecordedRequest upstream = *mock->last_request();
  EXPECT_EQ(upstream.Header("Authorization").value_or(""), "Bearer sk-acme-secret");
  EXPECT_EQ(upstream.Header("OpenAI-Organization").value_or(""), "org-acme");
  EXPECT_EQ(upstream.Header("X-Acme-Extra").value_or(""), "extra-1");
  EXPECT_EQ(upstream.Header("X-Client-Header").value_or(""), "passed-along");
  EXPECT_EQ(upstream.Header("Host").value_or(""), "127.0.0.1:" + std::to_string(mock->port()));
  for (const auto& [name, value] : upstream.headers) {
    EXPECT_EQ(value.find("client-secret-must-not-travel"), std::string::npos) << name;
  }
  EXPECT_EQ(CountHeader(upstream.headers, "Authorization"), 1);
  EXPECT_EQ(CountHeader(upstream.headers, "OpenAI-Organization"), 1);
}

TEST(ProxyRelay, ClientGetsUpstreamStatusBodyAndHeadersVerbatim) {
  Behavior answer = Behavior::Json();
  answer.json_body =
      R"({"id":"chatcmpl-fixed", "object":"chat.completion","model":"gpt-upstream",)"
      R"( "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})";
  answer.headers = {{"X-Upstream-Header", "kept"}, {"OpenAI-Processing-Ms", "12"}};
  MockUpstream::Options options;
  options.default_behavior = answer;
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, answer.json_body);
  EXPECT_EQ(response.Header("Content-Type").value_or(""), "application/json");
  EXPECT_EQ(response.Header("X-Upstream-Header").value_or(""), "kept");
  EXPECT_EQ(response.Header("OpenAI-Processing-Ms").value_or(""), "12");
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "acme");
  EXPECT_EQ(response.Header("Content-Length").value_or(""), std::to_string(answer.json_body.size()));
  const Metrics metrics = Scrape(*proxy);
  const std::string backend = BackendId("chat", "acme", "gpt-upstream");
  EXPECT_EQ(metrics.Value("berry_tokens_total", {{"backend", backend}, {"kind", "prompt"}}), 3);
  EXPECT_EQ(metrics.Value("berry_tokens_total", {{"backend", backend}, {"kind", "completion"}}), 4);
}

TEST(ProxyRelay, GeneratesRequestIdAndSendsItBothWays) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response = Chat(*proxy, "chat");

  ASSERT_EQ(response.status, 200);
  const std::string id = response.Header("x-request-id").value_or("");
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(mock->last_request()->Header("x-request-id").value_or(""), id);
  EXPECT_NE(Chat(*proxy, "chat").Header("x-request-id").value_or(""), id);
}

TEST(ProxyRelay, HonoursTheClientsRequestId) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response = Chat(*proxy, "chat", {{"X-Request-Id", "client-req-42"}});

  ASSERT_EQ(response.status, 200);
  EXPECT_EQ(response.Header("x-request-id").value_or(""), "client-req-42");
  const RecordedRequest upstream = *mock->last_request();
  EXPECT_EQ(upstream.Header("x-request-id").value_or(""), "client-req-42");
  EXPECT_EQ(CountHeader(upstream.headers, "x-request-id"), 1);
  EXPECT_TRUE(AccessLogContains(*proxy, R"("request_id":"client-req-42")"));
}

TEST(ProxyRelay, KeepsTheQueryString) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response =
      Post(*proxy, "/v1/chat/completions?api-version=2024-02-01&x=a%20b", ChatBody("chat"));

  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(mock->last_request()->target, "/v1/chat/completions?api-version=2024-02-01&x=a%20b");
}

TEST(ProxyRelay, RelaysCompletions) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response =
      Post(*proxy, "/v1/completions", R"({"model":"chat","prompt":"Once upon","max_tokens":5})");

  ASSERT_EQ(response.status, 200) << response.body;
  const RecordedRequest upstream = *mock->last_request();
  EXPECT_EQ(upstream.target, "/v1/completions");
  EXPECT_EQ(upstream.body, R"({"model":"gpt-upstream","prompt":"Once upon","max_tokens":5})");
  EXPECT_EQ(StringAt(ParseJson(response.body), "object"), "text_completion");
}

TEST(ProxyRelay, RelaysEmbeddings) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response =
      Post(*proxy, "/v1/embeddings", R"({"input":["a","b"],"model":"embed"})");

  ASSERT_EQ(response.status, 200) << response.body;
  const RecordedRequest upstream = *mock->last_request();
  EXPECT_EQ(upstream.target, "/v1/embeddings");
  EXPECT_EQ(upstream.body, R"({"input":["a","b"],"model":"embed-upstream"})");
  EXPECT_EQ(StringAt(ParseJson(response.body), "object"), "list");
}

TEST(ProxyRelay, BaseUrlPathPrefixIsKept) {
  auto mock = StartMock("acme");
  const std::string base = "http://127.0.0.1:" + std::to_string(mock->port()) + "/openai/v1/";
  auto proxy = StartProxy(ProviderToml("acme", base) + ModelToml("chat") +
                          BackendToml("chat", "acme"));

  const HttpResponse response = Chat(*proxy, "chat");

  // The mock only serves /v1/...: a 404 from it is passed through, which is what we check here.
  EXPECT_EQ(mock->last_request()->target, "/openai/v1/chat/completions");
  EXPECT_EQ(response.status, 404);
}

TEST(ProxyRelay, SplitsTrafficByWeight) {
  auto heavy = StartMock("heavy");
  auto light = StartMock("light");
  auto proxy = StartProxy(ProviderToml("heavy", heavy->base_url()) +
                          ProviderToml("light", light->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "heavy", "up-model", 3) +
                          BackendToml("chat", "light", "up-model", 1));
  auto connection = test_support::HttpConnection::Connect(proxy->url());
  ASSERT_TRUE(connection.ok()) << connection.status();

  constexpr int kRequests = 400;
  for (int i = 0; i < kRequests; ++i) {
    HttpRequest request = HttpRequest::Post("/v1/chat/completions", ChatBody("chat"));
    auto response = (*connection)->Send(request);
    ASSERT_TRUE(response.ok()) << response.status();
    ASSERT_EQ(response->status, 200);
  }

  // Expected 300:100; the binomial standard deviation is sqrt(400 * 3/4 * 1/4) ≈ 8.7, so ±45
  // (over 5 sigma) keeps this from ever flaking while still telling 3:1 from 1:1 or 2:1.
  EXPECT_EQ(heavy->request_count() + light->request_count(), static_cast<uint64_t>(kRequests));
  EXPECT_NEAR(static_cast<double>(heavy->request_count()), 300.0, 45.0);
  EXPECT_NEAR(static_cast<double>(light->request_count()), 100.0, 45.0);
  EXPECT_EQ(WaitForMetric(*proxy, "berry_requests_total",
                          {{"model", "chat"}, {"backend", BackendId("chat", "heavy")}, {"code", "200"}},
                          static_cast<double>(heavy->request_count())),
            static_cast<double>(heavy->request_count()));
}

TEST(ProxyRelay, ReusesUpstreamConnectionsAcrossRequests) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  // A fresh client connection each time: the upstream pool is per worker, not per client.
  for (int i = 0; i < 40; ++i) {
    ASSERT_EQ(Chat(*proxy, "chat").status, 200);
  }

  EXPECT_EQ(mock->request_count(), 40u);
  EXPECT_LE(mock->connections_accepted(), 2u) << "at most one per proxy worker";
}

TEST(ProxyRelay, ReusesTheUpstreamConnectionAfterAStream) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));
  auto connection = test_support::HttpConnection::Connect(proxy->url());
  ASSERT_TRUE(connection.ok()) << connection.status();

  for (int i = 0; i < 5; ++i) {
    auto streamed = (*connection)->SendStreaming(
        HttpRequest::Post("/v1/chat/completions", ChatBody("chat", R"(,"stream":true)")));
    ASSERT_TRUE(streamed.ok()) << streamed.status();
    ASSERT_TRUE(streamed->done());
    auto plain = (*connection)->Send(HttpRequest::Post("/v1/chat/completions", ChatBody("chat")));
    ASSERT_TRUE(plain.ok()) << plain.status();
    ASSERT_EQ(plain->status, 200);
  }

  EXPECT_EQ(mock->connections_accepted(), 1u);
}

TEST(ProxyRelay, ClientDisconnectWhileWaitingCancelsTheUpstreamRequest) {
  MockUpstream::Options options;
  options.default_behavior = Behavior::Hang();
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(AcmeConfig(*mock));

  HttpRequest request = PostRequest(*proxy, "/v1/chat/completions", ChatBody("chat"));
  request.timeout = 300ms;  // the client gives up and closes its connection
  EXPECT_FALSE(test_support::Fetch(request).ok());

  ASSERT_TRUE(mock->WaitForRequests(1, 5s));
  EXPECT_TRUE(mock->WaitForOpenConnections(0, 5s)) << "the proxy still holds the upstream call";
  EXPECT_TRUE(WaitUntil([&] { return Scrape(*proxy).Value("berry_inflight_requests") == 1; }))
      << "only the scrape itself should be in flight";
  EXPECT_TRUE(AccessLogContains(*proxy, R"("status":499)")) << proxy->access_log_text();
}

TEST(ProxyRelay, RewritesAModelNameWrittenWithEscapes) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response =
      Post(*proxy, "/v1/chat/completions", R"({"model":"ch\u0061t","messages":[]})");

  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(mock->last_request()->body, R"({"model":"gpt-upstream","messages":[]})");
}

TEST(ProxyRelay, UnsafeClientRequestIdIsReplaced) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response = Chat(*proxy, "chat", {{"X-Request-Id", "has spaces\tand tabs"}});

  ASSERT_EQ(response.status, 200);
  const std::string id = response.Header("x-request-id").value_or("");
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(id.find(' '), std::string::npos) << id;
  EXPECT_EQ(mock->last_request()->Header("x-request-id").value_or(""), id);
}

TEST(ProxyRelay, RelaysALargeResponseBodyIntact) {
  Behavior big = Behavior::Json();
  big.json_body = absl::StrCat(R"({"object":"chat.completion","pad":")", std::string(3 << 20, 'z'),
                               R"("})");
  MockUpstream::Options options;
  options.default_behavior = big;
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(AcmeConfig(*mock));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body.size(), big.json_body.size());
  EXPECT_TRUE(response.body == big.json_body);
}

TEST(ProxyRelay, ServesConcurrentClients) {
  MockUpstream::Options options;
  options.threads = 2;
  options.default_behavior.headers_delay = 5ms;  // so requests overlap
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(AcmeConfig(*mock));

  constexpr int kClients = 12;
  constexpr int kEach = 10;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kEach; ++i) {
        HttpRequest request = PostRequest(*proxy, "/v1/chat/completions",
                                          ChatBody("chat", c % 2 == 0 ? R"(,"stream":true)" : ""));
        if (c % 2 == 0) {
          auto streamed = test_support::FetchStreaming(request);
          ok += streamed.ok() && streamed->done() ? 1 : 0;
        } else {
          auto response = test_support::Fetch(request);
          ok += response.ok() && response->status == 200 ? 1 : 0;
        }
      }
    });
  }
  for (std::thread& client : clients) {
    client.join();
  }

  EXPECT_EQ(ok.load(), kClients * kEach);
  EXPECT_EQ(mock->request_count(), static_cast<uint64_t>(kClients * kEach));
  EXPECT_TRUE(WaitUntil([&] { return Scrape(*proxy).Value("berry_inflight_requests") == 1; }));
}

TEST(ProxyRelay, AnswersExpect100Continue) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(AcmeConfig(*mock));
  auto connection = RawConnection::Connect(proxy->port());
  ASSERT_TRUE(connection.ok()) << connection.status();
  const std::string body = ChatBody("chat");

  ASSERT_TRUE((*connection)
                  ->Write(absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                                       "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                                       "Content-Length: ",
                                       body.size(), "\r\n\r\n"))
                  .ok());
  auto interim = (*connection)->ReadResponse();
  ASSERT_TRUE(interim.ok()) << interim.status();
  EXPECT_EQ(interim->result_int(), 100);
  ASSERT_TRUE((*connection)->Write(body).ok());
  auto response = (*connection)->ReadResponse();

  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->result_int(), 200);
  EXPECT_EQ(CountHeader(mock->last_request()->headers, "Expect"), 0)
      << "the proxy already answered the expectation";
}

}  // namespace
}  // namespace berry::itest::proxy_relay_test
