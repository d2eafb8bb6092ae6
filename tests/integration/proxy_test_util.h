// Shorthands shared by the proxy integration tests: starting mocks and proxies, building TOML,
// sending requests, and checking OpenAI-shaped errors. A helper that cannot do its job (a mock
// that does not start, a request that gets no answer at all) throws, which GoogleTest reports as
// a failure of the calling test with the message.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/support/http_client.h"
#include "tests/support/mock_upstream.h"
#include "tests/support/text.h"

namespace berry::itest {

using test_support::Behavior;
using test_support::HttpHeaders;
using test_support::HttpRequest;
using test_support::HttpResponse;
using test_support::MockUpstream;
using test_support::RecordedRequest;
using test_support::SseEvent;
using test_support::StreamedResponse;

[[noreturn]] inline void Fatal(const std::string& message) { throw std::runtime_error(message); }

inline std::string StringAt(const boost::json::value& value, std::string_view key) {
  if (!value.is_object()) {
    return {};
  }
  const auto* found = value.as_object().if_contains(boost::json::string_view(key.data(), key.size()));
  return found != nullptr && found->is_string() ? std::string(found->as_string()) : std::string();
}

inline std::unique_ptr<MockUpstream> StartMock(std::string name, MockUpstream::Options options = {}) {
  options.name = std::move(name);
  auto mock = MockUpstream::Create(std::move(options));
  if (!mock.ok()) {
    Fatal("mock upstream did not start: " + mock.status().ToString());
  }
  return *std::move(mock);
}

inline std::unique_ptr<TestProxy> StartProxy(std::string_view toml, TestProxyOptions options = {}) {
  auto proxy = TestProxy::Start(toml, std::move(options));
  if (!proxy.ok()) {
    Fatal("proxy did not start: " + proxy.status().ToString());
  }
  return *std::move(proxy);
}

// --- TOML -----------------------------------------------------------------------------------

inline std::string TomlList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ", ", "\"", items[i], "\"");
  }
  return out + "]";
}

// `[providers.<id>]` at `base_url` serving `models`, api_key "sk-<id>-secret"; `extra` lines
// (e.g. "tls_verify = false\n") go inside the table.
inline std::string ProviderToml(std::string_view id, std::string_view base_url,
                                const std::vector<std::string>& models = {"up-model"},
                                std::string_view extra = "") {
  return absl::StrCat("[providers.", std::string(id), "]\nbase_url = \"", std::string(base_url),
                      "\"\napi_key = \"sk-", std::string(id), "-secret\"\nmodels = ",
                      TomlList(models), "\n", std::string(extra), "\n");
}

// `[models.<id>]` (clients send `id`); `extra` lines go inside the table.
inline std::string ModelToml(std::string_view id, std::string_view extra = "") {
  return absl::StrCat("[models.", std::string(id), "]\n", std::string(extra), "\n");
}

inline std::string BackendToml(std::string_view model_id, std::string_view provider,
                               std::string_view upstream_model = "up-model", double weight = 1,
                               std::string_view extra = "") {
  return absl::StrCat("[[models.", std::string(model_id), ".backends]]\nprovider = \"",
                      std::string(provider), "\"\nmodel = \"", std::string(upstream_model),
                      "\"\nweight = ", weight, "\n", std::string(extra), "\n");
}

inline std::string SettingsToml(std::string_view lines) {
  return absl::StrCat("[settings]\n", std::string(lines), "\n");
}

// The id route_table::Compile gives a backend.
inline std::string BackendId(std::string_view model_id, std::string_view provider,
                             std::string_view upstream_model = "up-model") {
  return absl::StrCat(std::string(model_id), "/", std::string(provider), "/",
                      std::string(upstream_model));
}

// --- requests -------------------------------------------------------------------------------

inline HttpResponse Send(const HttpRequest& request) {
  auto response = test_support::Fetch(request);
  if (!response.ok()) {
    Fatal(absl::StrCat(request.method, " ", request.url, " failed: ", response.status().ToString()));
  }
  return *std::move(response);
}

inline HttpRequest PostRequest(const TestProxy& proxy, std::string_view path, std::string body,
                               HttpHeaders headers = {}) {
  HttpRequest request = HttpRequest::Post(proxy.url(path), std::move(body));
  request.headers = std::move(headers);
  return request;
}

inline HttpResponse Post(const TestProxy& proxy, std::string_view path, std::string body,
                         HttpHeaders headers = {}) {
  return Send(PostRequest(proxy, path, std::move(body), std::move(headers)));
}

inline HttpResponse Chat(const TestProxy& proxy, std::string_view model, HttpHeaders headers = {}) {
  return Post(proxy, "/v1/chat/completions", ChatBody(model), std::move(headers));
}

inline HttpResponse Get(const TestProxy& proxy, std::string_view path, HttpHeaders headers = {}) {
  HttpRequest request = HttpRequest::Get(proxy.url(path));
  request.headers = std::move(headers);
  return Send(request);
}

inline StreamedResponse StreamChat(const TestProxy& proxy, std::string_view model,
                                   const test_support::SseCallback& on_event = {},
                                   HttpHeaders headers = {}) {
  HttpRequest request =
      PostRequest(proxy, "/v1/chat/completions", ChatBody(model, R"(,"stream":true)"),
                  std::move(headers));
  auto response = test_support::FetchStreaming(request, on_event);
  if (!response.ok()) {
    Fatal("streaming request failed: " + response.status().ToString());
  }
  return *std::move(response);
}

// How many times header `name` (any case) occurs.
inline int CountHeader(const HttpHeaders& headers, std::string_view name) {
  int n = 0;
  for (const auto& [key, value] : headers) {
    n += test_support::text::EqualsIgnoreCase(key, name) ? 1 : 0;
  }
  return n;
}

inline HttpHeaders Bearer(std::string_view token) {
  return {{"Authorization", absl::StrCat("Bearer ", std::string(token))}};
}

inline Metrics Scrape(const TestProxy& proxy) {
  auto text = proxy.ScrapeMetrics();
  if (!text.ok()) {
    Fatal("scrape failed: " + text.status().ToString());
  }
  return Metrics::Parse(*text);
}

inline std::string ScrapeText(const TestProxy& proxy) {
  auto text = proxy.ScrapeMetrics();
  if (!text.ok()) {
    Fatal("scrape failed: " + text.status().ToString());
  }
  return *std::move(text);
}

// Requests are counted (berry_requests_total, the duration histogram) and logged just after
// their response went out, so a client can be a moment ahead of both: these wait for them.
inline double WaitForMetric(const TestProxy& proxy, std::string_view name,
                            const Metrics::Labels& labels, double expected,
                            std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  double value = 0;
  WaitUntil(
      [&] {
        value = Scrape(proxy).Value(name, labels);
        return value == expected;
      },
      timeout);
  return value;
}

inline bool AccessLogContains(const TestProxy& proxy, std::string_view needle,
                              std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  return WaitUntil(
      [&] { return proxy.access_log_text().find(needle) != std::string::npos; }, timeout);
}

// The access-log line of the request with `request_id`, parsed (null when there is none).
inline boost::json::value AccessLogEntry(const TestProxy& proxy, std::string_view request_id) {
  const std::string log = proxy.access_log_text();
  for (size_t start = 0; start < log.size();) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) {
      end = log.size();
    }
    boost::json::value line = ParseJson(std::string_view(log).substr(start, end - start));
    if (StringAt(line, "request_id") == request_id) {
      return line;
    }
    start = end + 1;
  }
  return nullptr;
}

// The `error` object of an OpenAI-shaped error body, after checking the shape: an object with
// exactly `error` holding string `message` and `type`, and `param` and `code` (string or null).
inline boost::json::object ErrorObject(std::string_view body) {
  const boost::json::value json = ParseJson(body);
  if (!json.is_object() || json.as_object().size() != 1 || !json.as_object().contains("error") ||
      !json.at("error").is_object()) {
    ADD_FAILURE() << "not an OpenAI-shaped error: " << body;
    return {};
  }
  const boost::json::object& error = json.at("error").as_object();
  EXPECT_TRUE(error.contains("message") && error.at("message").is_string()) << body;
  EXPECT_TRUE(error.contains("type") && error.at("type").is_string()) << body;
  EXPECT_TRUE(error.contains("param")) << body;
  EXPECT_TRUE(error.contains("code")) << body;
  return error;
}

inline std::string StringOrEmpty(const boost::json::value& value) {
  return value.is_string() ? std::string(value.as_string()) : std::string();
}

// Checks status, JSON content type, error.type and error.code (nullptr = JSON null).
inline void ExpectOpenAiError(const HttpResponse& response, int status, std::string_view type,
                              const char* code) {
  EXPECT_EQ(response.status, status) << response.body;
  EXPECT_EQ(response.Header("Content-Type").value_or(""), "application/json");
  const boost::json::object error = ErrorObject(response.body);
  if (error.empty()) {
    return;
  }
  EXPECT_EQ(StringOrEmpty(error.at("type")), type) << response.body;
  if (code == nullptr) {
    EXPECT_TRUE(error.at("code").is_null()) << response.body;
  } else {
    EXPECT_EQ(StringOrEmpty(error.at("code")), code) << response.body;
  }
}


}  // namespace berry::itest
