// Client authentication, per-user model allow-lists, tag-restricted routing and per-user rate
// limits, as a configured `[users]` section makes the proxy enforce them.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "tests/integration/proxy_test_util.h"
#include "tests/support/manual_clock.h"

namespace berry::itest::proxy_auth_test {
namespace {

constexpr std::string_view kAliceToken = "berry-alice-0123456789abcdef";
constexpr std::string_view kBobToken = "berry-bob-disabled-0123456789";
constexpr std::string_view kCarolToken = "berry-carol-premium-012345678";
constexpr std::string_view kDaveToken = "berry-dave-limited-0123456789";

// Models "chat" (backends on premium-tagged, basic-tagged and untagged providers) and "other";
// users alice (only "chat"), bob (disabled), carol (tag premium), dave (2 requests a minute).
std::string UsersConfig(const MockUpstream& premium, const MockUpstream& basic,
                        const MockUpstream& plain) {
  return ProviderToml("premium", premium.base_url()) + ProviderToml("basic", basic.base_url()) +
         ProviderToml("plain", plain.base_url()) + ModelToml("chat") +
         BackendToml("chat", "premium", "up-model", 1, R"(tags = ["premium"])") +
         BackendToml("chat", "basic", "up-model", 1, R"(tags = ["basic"])") +
         BackendToml("chat", "plain") + ModelToml("other") + BackendToml("other", "plain") +
         absl::StrCat(
             "[users.alice]\ntoken = \"", std::string(kAliceToken),
             "\"\nallowed_models = [\"chat\"]\n\n", "[users.bob]\ntoken = \"",
             std::string(kBobToken), "\"\nenabled = false\n\n", "[users.carol]\ntoken = \"",
             std::string(kCarolToken), "\"\ntags = [\"premium\"]\n\n", "[users.dave]\ntoken = \"",
             std::string(kDaveToken), "\"\n[users.dave.rate_limit]\nrequests_per_minute = 2\n");
}

// 2023-11-14T22:13:20Z, 20 s into its minute.
constexpr int64_t kStartUnixSeconds = 1'700'000'000;

// The proxy runs on a manual clock (rate-limit windows) and a seeded selection generator.
class ProxyAuth : public ::testing::Test {
 protected:
  void SetUp() override {
    premium_ = StartMock("premium");
    basic_ = StartMock("basic");
    plain_ = StartMock("plain");
    TestProxyOptions options;
    options.clock = &clock_;
    options.rng_seed = 7;
    options.metrics_user_labels = true;
    proxy_ = StartProxy(UsersConfig(*premium_, *basic_, *plain_), options);
  }

  uint64_t upstream_requests() const {
    return premium_->request_count() + basic_->request_count() + plain_->request_count();
  }

  test_support::ManualClock clock_{kStartUnixSeconds};  // outlives proxy_
  std::unique_ptr<MockUpstream> premium_, basic_, plain_;
  std::unique_ptr<TestProxy> proxy_;
};

TEST_F(ProxyAuth, MissingKeyIs401) {
  const HttpResponse response = Chat(*proxy_, "chat");

  ExpectOpenAiError(response, 401, "invalid_request_error", "invalid_api_key");
  EXPECT_EQ(upstream_requests(), 0u);
}

TEST_F(ProxyAuth, InvalidKeyIs401AndNotEchoed) {
  const HttpResponse wrong = Chat(*proxy_, "chat", Bearer("berry-not-a-real-token-42"));
  const HttpResponse malformed =
      Chat(*proxy_, "chat", {{"Authorization", "Basic YWxpY2U6c2VjcmV0"}});

  ExpectOpenAiError(wrong, 401, "invalid_request_error", "invalid_api_key");
  ExpectOpenAiError(malformed, 401, "invalid_request_error", "invalid_api_key");
  EXPECT_EQ(wrong.body.find("berry-not-a-real-token-42"), std::string::npos);
  EXPECT_EQ(upstream_requests(), 0u);
}

TEST_F(ProxyAuth, ValidKeyIsServedAndNotForwarded) {
  const HttpResponse response = Chat(*proxy_, "chat", Bearer(kAliceToken));

  EXPECT_EQ(response.status, 200) << response.body;
  ASSERT_EQ(upstream_requests(), 1u);
  for (const MockUpstream* mock : {premium_.get(), basic_.get(), plain_.get()}) {
    for (const RecordedRequest& request : mock->requests()) {
      for (const auto& [name, value] : request.headers) {
        EXPECT_EQ(value.find(kAliceToken), std::string::npos) << name;
      }
    }
  }
  EXPECT_TRUE(AccessLogContains(*proxy_, R"("user":"alice")"));
}

TEST_F(ProxyAuth, BearerSchemeIsCaseInsensitive) {
  const HttpResponse response =
      Chat(*proxy_, "chat", {{"Authorization", absl::StrCat("bearer ", std::string(kAliceToken))}});

  EXPECT_EQ(response.status, 200) << response.body;
}

TEST_F(ProxyAuth, DisabledUserIs401) {
  const HttpResponse response = Chat(*proxy_, "chat", Bearer(kBobToken));

  ExpectOpenAiError(response, 401, "invalid_request_error", "invalid_api_key");
  EXPECT_EQ(upstream_requests(), 0u);
}

TEST_F(ProxyAuth, ModelOutsideAllowedModelsIs403) {
  const HttpResponse allowed = Chat(*proxy_, "chat", Bearer(kAliceToken));
  const HttpResponse denied = Chat(*proxy_, "other", Bearer(kAliceToken));

  EXPECT_EQ(allowed.status, 200);
  ExpectOpenAiError(denied, 403, "invalid_request_error", "model_not_allowed");
  EXPECT_EQ(upstream_requests(), 1u);
}

TEST_F(ProxyAuth, TaggedUserReachesOnlyUntaggedOrTagSharingBackends) {
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(Chat(*proxy_, "chat", Bearer(kCarolToken)).status, 200);
  }

  EXPECT_EQ(basic_->request_count(), 0u) << "a premium user reached a basic-only backend";
  // Equal weights over the two allowed backends: each gets some (P(0 of 60) = 2^-60).
  EXPECT_GT(premium_->request_count(), 0u);
  EXPECT_GT(plain_->request_count(), 0u);
}

TEST_F(ProxyAuth, UntaggedUserReachesEveryBackend) {
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(Chat(*proxy_, "chat", Bearer(kAliceToken)).status, 200);
  }

  EXPECT_GT(premium_->request_count(), 0u);
  EXPECT_GT(basic_->request_count(), 0u);
  EXPECT_GT(plain_->request_count(), 0u);
}

TEST_F(ProxyAuth, RateLimitRefusesTheThirdRequestInAMinute) {
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kDaveToken)).status, 200);
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kDaveToken)).status, 200);
  const HttpResponse limited = Chat(*proxy_, "chat", Bearer(kDaveToken));

  ExpectOpenAiError(limited, 429, "rate_limit_error", "rate_limit_exceeded");
  // 20 s into the minute: the window starts over in 40 s.
  EXPECT_EQ(limited.Header("Retry-After").value_or(""), "40");
  EXPECT_EQ(upstream_requests(), 2u);
  EXPECT_EQ(Scrape(*proxy_).Value("berry_rate_limited_total", {{"user", "dave"}}), 1);
  // Other users are not affected.
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kAliceToken)).status, 200);
}

// User ids stay out of /metrics unless the operator asks (--metrics-user-labels, which the
// fixture's proxy_ has): one series counts every user's refusals.
TEST_F(ProxyAuth, RateLimitedCountNamesNoUserUnlessAskedTo) {
  TestProxyOptions options;
  options.clock = &clock_;
  auto unlabelled = StartProxy(UsersConfig(*premium_, *basic_, *plain_), options);
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(Chat(*unlabelled, "chat", Bearer(kDaveToken)).status, 200);
  }
  ASSERT_EQ(Chat(*unlabelled, "chat", Bearer(kDaveToken)).status, 429);

  const Metrics scraped = Scrape(*unlabelled);
  EXPECT_EQ(scraped.Find("berry_rate_limited_total"), 1);
  size_t series = 0;
  for (const Metrics::Sample& sample : scraped.samples()) {
    if (sample.name == "berry_rate_limited_total") {
      ++series;
      EXPECT_FALSE(sample.labels.contains("user"));
    }
  }
  EXPECT_EQ(series, 1u);
  EXPECT_EQ(Get(*unlabelled, "/metrics").body.find("dave"), std::string::npos);
}

TEST_F(ProxyAuth, RateLimitStartsOverWithTheNextMinute) {
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kDaveToken)).status, 200);
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kDaveToken)).status, 200);
  clock_.Advance(39s);
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kDaveToken)).status, 429);

  clock_.Advance(1s);  // the next minute
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kDaveToken)).status, 200);
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kDaveToken)).status, 200);
  EXPECT_EQ(Chat(*proxy_, "chat", Bearer(kDaveToken)).status, 429);
}

TEST_F(ProxyAuth, ModelLookupHidesModelsTheCallerMayNotUse) {
  const HttpResponse visible = Get(*proxy_, "/v1/models/chat", Bearer(kAliceToken));
  const HttpResponse hidden = Get(*proxy_, "/v1/models/other", Bearer(kAliceToken));

  EXPECT_EQ(visible.status, 200);
  EXPECT_EQ(StringAt(ParseJson(visible.body), "id"), "chat");
  ExpectOpenAiError(hidden, 404, "invalid_request_error", "model_not_found");
}

}  // namespace
}  // namespace berry::itest::proxy_auth_test
