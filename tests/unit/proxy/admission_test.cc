// Admission: what refuses a relayed request before a backend is picked, on a route table
// compiled from TOML and a manual clock for the rate-limit windows (no sockets).
#include "data-plane/proxy/admission.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "common/config/config.h"
#include "common/route_table/compile.h"
#include "tests/support/manual_clock.h"

namespace berry::proxy::admission_test {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kAlice = "Bearer berry-alice-0123456789abcdef";
constexpr std::string_view kDave = "Bearer berry-dave-limited-0123456789";
// 20 s into a UTC minute.
constexpr int64_t kStart = 1'700'000'000;

constexpr std::string_view kConfig = R"(
[providers.p]
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-p-secret"
models = ["up-model"]

[models.chat]
[[models.chat.backends]]
provider = "p"
model = "up-model"

[models.other]
[[models.other.backends]]
provider = "p"
model = "up-model"

[users.alice]
token = "berry-alice-0123456789abcdef"
allowed_models = ["chat"]

[users.dave]
token = "berry-dave-limited-0123456789"
[users.dave.rate_limit]
requests_per_minute = 2
)";

std::string Body(std::string_view model) {
  return R"({"model":")" + std::string(model) + R"(","stream":true,"messages":[]})";
}

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const config::LoadResult loaded = config::Parse(kConfig, "admission_test.toml");
    ASSERT_TRUE(loaded.config.has_value());
    ASSERT_TRUE(routes_.Apply(route_table::Compile(*loaded.config)).ok());
    generation_ = routes_.Current();
  }

  std::optional<ErrorReply> Admit(std::string_view authorization, std::string_view body,
                                  std::string_view api_key = {}) {
    admitted_ = Admitted();
    error_.clear();
    return admission_.Admit(generation_.get(), authorization, api_key, body, admitted_, error_);
  }

  test_support::ManualClock clock_{kStart};
  Admission admission_{clock_};
  RouteStore routes_;
  std::shared_ptr<const RouteGeneration> generation_;
  Admitted admitted_;
  std::string error_;
};

TEST_F(AdmissionTest, AdmitsAnAllowedModelAndSaysWhoAndWhat) {
  EXPECT_EQ(Admit(kAlice, Body("chat")), std::nullopt);

  ASSERT_NE(admitted_.client, nullptr);
  EXPECT_EQ(admitted_.client->id(), "alice");
  ASSERT_NE(admitted_.model, nullptr);
  EXPECT_EQ(admitted_.model->name(), "chat");
  EXPECT_EQ(admitted_.fields.model, "chat");
  EXPECT_TRUE(admitted_.fields.stream);
  EXPECT_EQ(error_, "");
}

TEST_F(AdmissionTest, NoRouteTableIs503) {
  const auto reply = admission_.Admit(nullptr, kAlice, {}, Body("chat"), admitted_, error_);

  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status, 503);
  EXPECT_EQ(error_, "no route table loaded");
}

TEST_F(AdmissionTest, UnknownOrMissingKeyIs401) {
  for (const std::string_view authorization : {std::string_view(), std::string_view("Bearer no")}) {
    const auto reply = Admit(authorization, Body("chat"));

    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->status, 401);
    EXPECT_NE(reply->body.find("invalid_api_key"), std::string::npos) << reply->body;
    EXPECT_EQ(admitted_.client, nullptr);
    EXPECT_FALSE(error_.empty());
  }
}

TEST_F(AdmissionTest, AcceptsTheKeyInXApiKeyWhenThereIsNoAuthorization) {
  const std::string_view token =
      std::string_view(kAlice).substr(std::string_view("Bearer ").size());
  EXPECT_EQ(Admit({}, Body("chat"), token), std::nullopt);
  ASSERT_NE(admitted_.client, nullptr);
  EXPECT_EQ(admitted_.client->id(), "alice");

  const auto reply = Admit({}, Body("chat"), "not-a-key");
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status, 401);
}

TEST_F(AdmissionTest, MalformedBodyIs400AfterAuthentication) {
  const auto reply = Admit(kAlice, R"({"model":)");

  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status, 400);
  EXPECT_NE(admitted_.client, nullptr);
}

TEST_F(AdmissionTest, UnknownModelIs404) {
  const auto reply = Admit(kAlice, Body("nope"));

  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status, 404);
  EXPECT_EQ(error_, "model not found");
  EXPECT_EQ(admitted_.model, nullptr);
}

TEST_F(AdmissionTest, ModelOutsideTheAllowListIs403) {
  const auto reply = Admit(kAlice, Body("other"));

  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status, 403);
  EXPECT_EQ(error_, "model not allowed");
  EXPECT_EQ(admitted_.model, nullptr);
}

TEST_F(AdmissionTest, RateLimitRefusesTheThirdRequestOfAMinuteWithRetryAfter) {
  EXPECT_EQ(Admit(kDave, Body("chat")), std::nullopt);
  EXPECT_EQ(Admit(kDave, Body("chat")), std::nullopt);
  const auto reply = Admit(kDave, Body("chat"));

  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status, 429);
  EXPECT_TRUE(reply->rate_limited);
  EXPECT_EQ(reply->retry_after_seconds, 40);  // the minute started 20 s ago
  EXPECT_EQ(error_, "rate limit: 2 requests per minute");
  ASSERT_NE(admitted_.client, nullptr);
  EXPECT_EQ(admitted_.client->id(), "dave");
}

TEST_F(AdmissionTest, RateLimitWindowFollowsTheInjectedWallClock) {
  EXPECT_EQ(Admit(kDave, Body("chat")), std::nullopt);
  EXPECT_EQ(Admit(kDave, Body("chat")), std::nullopt);
  clock_.Advance(39s);
  ASSERT_TRUE(Admit(kDave, Body("chat")).has_value());

  clock_.Advance(1s);

  EXPECT_EQ(Admit(kDave, Body("chat")), std::nullopt);
}

TEST_F(AdmissionTest, OtherErrorsAreNotRateLimits) {
  const auto reply = Admit(kAlice, Body("nope"));

  ASSERT_TRUE(reply.has_value());
  EXPECT_FALSE(reply->rate_limited);
}

}  // namespace
}  // namespace berry::proxy::admission_test
