// The endpoints the proxy answers itself — errors, the model list, health and readiness,
// metrics, CORS preflight — and that all of its errors are OpenAI-shaped.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>

#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_endpoints_test {
namespace {

class ProxyEndpoints : public ::testing::Test {
 protected:
  void SetUp() override {
    mock_ = StartMock("acme");
    proxy_ = StartProxy(SettingsToml("max_request_body_bytes = 1024") +
                        ProviderToml("acme", mock_->base_url()) + ModelToml("chat") +
                        BackendToml("chat", "acme") +
                        ModelToml("gpt_4o", R"(name = "gpt-4o")") + BackendToml("gpt_4o", "acme") +
                        ModelToml("retired", "enabled = false") + BackendToml("retired", "acme"));
  }

  std::unique_ptr<MockUpstream> mock_;
  std::unique_ptr<TestProxy> proxy_;
};

TEST_F(ProxyEndpoints, MalformedJsonIs400) {
  const HttpResponse response = Post(*proxy_, "/v1/chat/completions", R"({"model":"chat",)");

  ExpectOpenAiError(response, 400, "invalid_request_error", nullptr);
  EXPECT_EQ(mock_->request_count(), 0u);
}

TEST_F(ProxyEndpoints, BodyThatIsNotAnObjectIs400) {
  ExpectOpenAiError(Post(*proxy_, "/v1/chat/completions", R"(["chat"])"), 400,
                    "invalid_request_error", nullptr);
}

TEST_F(ProxyEndpoints, MissingModelIs400) {
  const HttpResponse response =
      Post(*proxy_, "/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}]})");

  ExpectOpenAiError(response, 400, "invalid_request_error", nullptr);
  EXPECT_NE(StringOrEmpty(ErrorObject(response.body)["message"]).find("model"), std::string::npos);
}

TEST_F(ProxyEndpoints, NonBooleanStreamIs400) {
  ExpectOpenAiError(Post(*proxy_, "/v1/chat/completions", ChatBody("chat", R"(,"stream":"yes")")),
                    400, "invalid_request_error", nullptr);
}

TEST_F(ProxyEndpoints, UnknownModelIs404AndNeverBecomesAMetricLabel) {
  const HttpResponse response = Chat(*proxy_, "no-such-model-label-xyz");

  ExpectOpenAiError(response, 404, "invalid_request_error", "model_not_found");
  EXPECT_EQ(StringOrEmpty(ErrorObject(response.body)["param"]), "model");
  EXPECT_EQ(ScrapeText(*proxy_).find("no-such-model-label-xyz"), std::string::npos);
}

TEST_F(ProxyEndpoints, DisabledModelIs404) {
  ExpectOpenAiError(Chat(*proxy_, "retired"), 404, "invalid_request_error", "model_not_found");
  EXPECT_EQ(mock_->request_count(), 0u);
}

TEST_F(ProxyEndpoints, ModelIsFoundByClientNameNotTableKey) {
  EXPECT_EQ(Chat(*proxy_, "gpt-4o").status, 200);
  ExpectOpenAiError(Chat(*proxy_, "gpt_4o"), 404, "invalid_request_error", "model_not_found");
}

TEST_F(ProxyEndpoints, UnknownPathIs404) {
  ExpectOpenAiError(Post(*proxy_, "/v1/images/generations", ChatBody("chat")), 404,
                    "invalid_request_error", "unknown_url");
  ExpectOpenAiError(Get(*proxy_, "/nope"), 404, "invalid_request_error", "unknown_url");
}

TEST_F(ProxyEndpoints, GetOnChatCompletionsIs405WithAllow) {
  const HttpResponse response = Get(*proxy_, "/v1/chat/completions");

  ExpectOpenAiError(response, 405, "invalid_request_error", "method_not_allowed");
  EXPECT_EQ(response.Header("Allow").value_or(""), "POST");
}

TEST_F(ProxyEndpoints, PostOnModelsIs405WithAllow) {
  const HttpResponse response = Post(*proxy_, "/v1/models", "{}");

  ExpectOpenAiError(response, 405, "invalid_request_error", "method_not_allowed");
  EXPECT_EQ(response.Header("Allow").value_or(""), "GET");
}

TEST_F(ProxyEndpoints, ChunkedBodyOverTheLimitIs413) {
  auto connection = RawConnection::Connect(proxy_->port());
  ASSERT_TRUE(connection.ok()) << connection.status();
  const std::string body = ChatBody("chat", absl::StrCat(R"(,"pad":")", std::string(1500, 'x'), "\""));
  char size_line[32];
  std::snprintf(size_line, sizeof size_line, "%zx\r\n", body.size());
  ASSERT_TRUE((*connection)
                  ->Write(absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                                       "Content-Type: application/json\r\n"
                                       "Transfer-Encoding: chunked\r\n\r\n",
                                       size_line, body, "\r\n0\r\n\r\n"))
                  .ok());

  auto response = (*connection)->ReadResponse();

  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->result_int(), 413);
  HttpResponse as_client;
  as_client.status = response->result_int();
  as_client.body = response->body();
  as_client.headers.emplace_back("Content-Type", std::string((*response)[boost::beast::http::field::content_type]));
  ExpectOpenAiError(as_client, 413, "invalid_request_error", "request_too_large");
  EXPECT_EQ(mock_->request_count(), 0u);
}

TEST_F(ProxyEndpoints, BodyWithinTheLimitIsAccepted) {
  const std::string body = ChatBody("chat", absl::StrCat(R"(,"pad":")", std::string(800, 'x'), "\""));
  ASSERT_LE(body.size(), 1024u);

  EXPECT_EQ(Post(*proxy_, "/v1/chat/completions", body).status, 200);
}

TEST_F(ProxyEndpoints, ModelLookupById) {
  const HttpResponse found = Get(*proxy_, "/v1/models/gpt-4o");
  const HttpResponse missing = Get(*proxy_, "/v1/models/nope");
  const HttpResponse disabled = Get(*proxy_, "/v1/models/retired");

  ASSERT_EQ(found.status, 200) << found.body;
  const boost::json::value model = ParseJson(found.body);
  EXPECT_EQ(StringAt(model, "id"), "gpt-4o");
  EXPECT_EQ(StringAt(model, "object"), "model");
  ExpectOpenAiError(missing, 404, "invalid_request_error", "model_not_found");
  ExpectOpenAiError(disabled, 404, "invalid_request_error", "model_not_found");
}

TEST_F(ProxyEndpoints, HealthEndpointsAnswer200) {
  for (const char* path : {"/healthz", "/health"}) {
    const HttpResponse response = Get(*proxy_, path);
    EXPECT_EQ(response.status, 200) << path;
    EXPECT_EQ(StringAt(ParseJson(response.body), "status"), "ok") << path;
  }
}

TEST_F(ProxyEndpoints, ReadyzReportsTheRouteTableVersion) {
  const HttpResponse response = Get(*proxy_, "/readyz");

  EXPECT_EQ(response.status, 200);
  const boost::json::value body = ParseJson(response.body);
  EXPECT_EQ(StringAt(body, "status"), "ready");
  EXPECT_EQ(StringAt(body, "version"), proxy_->version());
  EXPECT_EQ(proxy_->version().size(), 16u);
}

TEST_F(ProxyEndpoints, MetricsExposeTheDesignNames) {
  ASSERT_EQ(Chat(*proxy_, "chat").status, 200);
  const std::string backend = BackendId("chat", "acme");

  EXPECT_EQ(WaitForMetric(*proxy_, "berry_requests_total",
                          {{"model", "chat"}, {"backend", backend}, {"code", "200"}}, 1),
            1);
  const std::string text = ScrapeText(*proxy_);
  const Metrics metrics = Metrics::Parse(text);

  EXPECT_EQ(metrics.Value("berry_request_duration_seconds_count",
                          {{"model", "chat"}, {"backend", backend}}),
            1);
  EXPECT_TRUE(metrics.Find("berry_request_duration_seconds_bucket",
                           {{"model", "chat"}, {"backend", backend}, {"le", "+Inf"}}));
  EXPECT_EQ(metrics.Value("berry_upstream_ttfb_seconds_count",
                          {{"model", "chat"}, {"backend", backend}}),
            1);
  EXPECT_GT(metrics.Value("berry_upstream_ttfb_seconds_sum", {{"backend", backend}}), 0);
  EXPECT_EQ(metrics.Value("berry_inflight_requests"), 1) << "the scrape itself";
  EXPECT_EQ(metrics.Value("berry_route_table_version_info", {{"version", proxy_->version()}}), 1);
  EXPECT_EQ(metrics.Value("berry_backend_ejected", {{"backend", backend}}), 0);
  for (const char* family : {"berry_requests_total", "berry_request_duration_seconds",
                             "berry_upstream_ttfb_seconds", "berry_backend_ejected",
                             "berry_retries_total", "berry_panic_total", "berry_tokens_total",
                             "berry_inflight_requests", "berry_route_table_version_info"}) {
    EXPECT_NE(text.find(absl::StrCat("# TYPE ", family, " ")), std::string::npos) << family;
  }
  const HttpResponse raw = Get(*proxy_, "/metrics");
  EXPECT_TRUE(raw.Header("Content-Type").value_or("").starts_with("text/plain; version=0.0.4"));
}

// Kubelet probes and Prometheus scrapes arrive every few seconds on every replica: counted in
// berry_requests_total they would drown the API request rate dashboards and alerts are built on.
TEST_F(ProxyEndpoints, ProbesAndScrapesAreCountedApartFromApiRequests) {
  for (const char* path : {"/healthz", "/health", "/readyz", "/metrics", "/healthz"}) {
    ASSERT_EQ(Get(*proxy_, path).status, 200) << path;
  }
  ASSERT_EQ(Chat(*proxy_, "chat").status, 200);

  EXPECT_EQ(WaitForMetric(*proxy_, "berry_local_requests_total",
                          {{"path", "/healthz"}, {"code", "200"}}, 2),
            2);
  const Metrics metrics = Metrics::Parse(ScrapeText(*proxy_));
  EXPECT_EQ(metrics.Value("berry_local_requests_total", {{"path", "/health"}, {"code", "200"}}),
            1);
  EXPECT_EQ(metrics.Value("berry_local_requests_total", {{"path", "/readyz"}, {"code", "200"}}),
            1);
  EXPECT_GE(metrics.Value("berry_local_requests_total", {{"path", "/metrics"}, {"code", "200"}}),
            1)
      << "the test's own scrapes count too";
  EXPECT_EQ(metrics.Value("berry_requests_total", {{"model", "chat"}, {"code", "200"}}), 1);
  EXPECT_FALSE(metrics.Find("berry_requests_total", {{"model", ""}}))
      << "a probe or scrape was counted as an API request";
}

TEST_F(ProxyEndpoints, ErrorsAreCountedWithTheirCode) {
  ASSERT_EQ(Chat(*proxy_, "nope").status, 404);
  ASSERT_EQ(Post(*proxy_, "/v1/chat/completions", "{").status, 400);

  EXPECT_EQ(WaitForMetric(*proxy_, "berry_requests_total", {{"code", "404"}}, 1), 1);
  EXPECT_EQ(WaitForMetric(*proxy_, "berry_requests_total", {{"code", "400"}}, 1), 1);
}

TEST_F(ProxyEndpoints, CorsPreflightIs204WithAllowHeaders) {
  HttpRequest request = HttpRequest::Get(proxy_->url("/v1/chat/completions"));
  request.method = "OPTIONS";
  request.headers = {{"Origin", "https://app.example"},
                     {"Access-Control-Request-Method", "POST"},
                     {"Access-Control-Request-Headers", "authorization, content-type, x-stainless-os"}};

  const HttpResponse response = Send(request);

  EXPECT_EQ(response.status, 204);
  EXPECT_EQ(response.body, "");
  EXPECT_EQ(response.Header("Access-Control-Allow-Origin").value_or(""), "*");
  EXPECT_NE(response.Header("Access-Control-Allow-Methods").value_or("").find("POST"),
            std::string::npos);
  EXPECT_EQ(response.Header("Access-Control-Allow-Headers").value_or(""),
            "authorization, content-type, x-stainless-os");
  EXPECT_TRUE(response.Header("Access-Control-Max-Age").has_value());
  EXPECT_EQ(mock_->request_count(), 0u);
}

TEST_F(ProxyEndpoints, RelayedResponsesCarryCorsHeaders) {
  const HttpResponse response = Chat(*proxy_, "chat", {{"Origin", "https://app.example"}});

  EXPECT_EQ(response.Header("Access-Control-Allow-Origin").value_or(""), "*");
  EXPECT_NE(response.Header("Access-Control-Expose-Headers").value_or("").find("x-request-id"),
            std::string::npos);
}

TEST(ProxyNoRoutes, NotReadyUntilARouteTableArrives) {
  auto proxy = TestProxy::StartWithoutRoutes();
  ASSERT_TRUE(proxy.ok()) << proxy.status();

  EXPECT_EQ(Get(**proxy, "/healthz").status, 200);
  EXPECT_EQ(Get(**proxy, "/readyz").status, 503);
  ExpectOpenAiError(Chat(**proxy, "chat"), 503, "upstream_error", "no_backend_available");

  auto mock = StartMock("acme");
  ASSERT_TRUE((*proxy)->Reload(ProviderToml("acme", mock->base_url()) + ModelToml("chat") +
                               BackendToml("chat", "acme"))
                  .ok());
  EXPECT_EQ(Get(**proxy, "/readyz").status, 200);
  EXPECT_EQ(Chat(**proxy, "chat").status, 200);
}

}  // namespace
}  // namespace berry::itest::proxy_endpoints_test
