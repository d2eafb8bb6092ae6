// Per-user token limits on a standalone proxy (README.md, "Token limits"): a reservation at
// admission (body bytes / 4 + max_tokens), refused with x-ratelimit-*-tokens when it does not fit,
// settled to the usage the upstream reports; for a stream the client did not ask usage of, the
// proxy asks for it and strips the usage chunk.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "tests/integration/proxy_test_util.h"
#include "tests/support/manual_clock.h"

namespace berry::itest::proxy_tokens_test {
namespace {

constexpr std::string_view kTinaToken = "berry-tina-tokens-0123456789";
constexpr uint64_t kTokensPerMinute = 1000;

// 2023-11-14T22:13:20Z, 20 s into its minute.
constexpr int64_t kStartUnixSeconds = 1'700'000'000;

uint64_t CeilQuarter(size_t bytes) { return (bytes + 3) / 4; }

// A chat body whose reservation (bytes / 4 rounded up + max_tokens) is exactly `tokens`, with
// `extra` members (e.g. `,"stream":true`).
std::string BodyReserving(uint64_t tokens, std::string_view extra = "") {
  for (uint64_t max_tokens = tokens; max_tokens > 0; --max_tokens) {
    std::string body =
        absl::StrCat(R"({"model":"chat","max_tokens":)", max_tokens, std::string(extra),
                     R"(,"messages":[{"role":"user","content":"hi"}]})");
    if (CeilQuarter(body.size()) + max_tokens == tokens) {
      return body;
    }
    if (CeilQuarter(body.size()) + max_tokens < tokens) {
      // Pad the content to reach the estimate exactly.
      const uint64_t missing = tokens - (CeilQuarter(body.size()) + max_tokens);
      std::string padded =
          absl::StrCat(R"({"model":"chat","max_tokens":)", max_tokens, std::string(extra),
                       R"(,"messages":[{"role":"user","content":"hi)",
                       std::string(static_cast<size_t>(missing) * 4, 'x'), R"("}]})");
      while (CeilQuarter(padded.size()) + max_tokens > tokens) {
        padded.erase(padded.find("xx"), 1);
      }
      if (CeilQuarter(padded.size()) + max_tokens == tokens) {
        return padded;
      }
    }
  }
  ADD_FAILURE() << "no body reserves " << tokens;
  return {};
}

class ProxyTokens : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = StartMock("plain");
    test_support::Behavior behavior;
    behavior.usage = {.prompt_tokens = 12, .completion_tokens = 18};  // 30 in all
    upstream_->SetDefaultBehavior(behavior);
    TestProxyOptions options;
    options.clock = &clock_;
    options.rng_seed = 7;
    proxy_ = StartProxy(ProviderToml("plain", upstream_->base_url()) + ModelToml("chat") +
                            BackendToml("chat", "plain") +
                            absl::StrCat("[users.tina]\ntoken = \"", std::string(kTinaToken),
                                         "\"\n[users.tina.rate_limit]\ntokens_per_minute = ",
                                         kTokensPerMinute, "\n"),
                        options);
  }

  HttpResponse Send(std::string body) {
    return Post(*proxy_, "/v1/chat/completions", std::move(body), Bearer(kTinaToken));
  }

  // The tokens left in the minute, as the refusal of a reservation one larger than that says.
  std::string RemainingAfterRefusal(uint64_t reserve) {
    const HttpResponse refused = Send(BodyReserving(reserve));
    EXPECT_EQ(refused.status, 429) << refused.body;
    return refused.Header("x-ratelimit-remaining-tokens").value_or("(none)");
  }

  test_support::ManualClock clock_{kStartUnixSeconds};  // outlives proxy_
  std::unique_ptr<MockUpstream> upstream_;
  std::unique_ptr<TestProxy> proxy_;
};

TEST_F(ProxyTokens, ReservationThatDoesNotFitIs429WithTokenHeaders) {
  const HttpResponse refused = Send(BodyReserving(kTokensPerMinute + 1));

  ExpectOpenAiError(refused, 429, "rate_limit_error", "rate_limit_exceeded");
  EXPECT_EQ(refused.Header("Retry-After").value_or(""), "40");
  EXPECT_EQ(refused.Header("x-ratelimit-limit-tokens").value_or(""), "1000");
  EXPECT_EQ(refused.Header("x-ratelimit-remaining-tokens").value_or(""), "1000");
  EXPECT_EQ(refused.Header("x-ratelimit-reset-tokens").value_or(""), "40s");
  EXPECT_FALSE(refused.Header("x-ratelimit-limit-requests").has_value());
  EXPECT_EQ(upstream_->request_count(), 0u);
  // Exactly the limit fits.
  EXPECT_EQ(Send(BodyReserving(kTokensPerMinute)).status, 200);
}

TEST_F(ProxyTokens, NonStreamedResponseIsChargedItsReportedUsage) {
  ASSERT_EQ(Send(BodyReserving(400)).status, 200);

  // 400 reserved, 30 used: 970 left.
  EXPECT_EQ(RemainingAfterRefusal(971), "970");
  EXPECT_EQ(Send(BodyReserving(970)).status, 200);
}

TEST_F(ProxyTokens, StreamIsAskedForUsageWhichIsStrippedAndCharged) {
  test_support::StreamedResponse stream =
      StreamChat(*proxy_, "chat", /*on_event=*/{}, Bearer(kTinaToken));

  ASSERT_EQ(stream.status, 200);
  EXPECT_TRUE(stream.done());
  ASSERT_EQ(upstream_->requests().size(), 1u);
  EXPECT_NE(upstream_->requests()[0].body.find(R"("stream_options":{"include_usage":true})"),
            std::string::npos);
  ASSERT_GE(stream.events.size(), 2u);
  for (const test_support::SseEvent& event : stream.events) {
    EXPECT_EQ(event.data.find("\"usage\""), std::string::npos) << event.data;
  }
  EXPECT_EQ(RemainingAfterRefusal(971), "970");
}

TEST_F(ProxyTokens, StreamWhoseClientAskedForUsageKeepsTheUsageChunk) {
  const HttpRequest request =
      PostRequest(*proxy_, "/v1/chat/completions",
                  BodyReserving(300, R"(,"stream":true,"stream_options":{"include_usage":true})"),
                  Bearer(kTinaToken));
  auto stream = test_support::FetchStreaming(request);
  ASSERT_TRUE(stream.ok()) << stream.status();

  ASSERT_EQ(stream->status, 200);
  ASSERT_GE(stream->events.size(), 2u);
  const std::string& last_chunk = stream->events[stream->events.size() - 2].data;
  EXPECT_NE(last_chunk.find(R"("choices":[])"), std::string::npos) << last_chunk;
  EXPECT_NE(last_chunk.find(R"("prompt_tokens":12)"), std::string::npos) << last_chunk;
  EXPECT_EQ(RemainingAfterRefusal(971), "970");
}

TEST_F(ProxyTokens, StreamCutBeforeItsUsageStaysChargedItsReservation) {
  upstream_->EnqueueBehavior(test_support::Behavior::CloseMidStream(1));
  const HttpRequest request = PostRequest(
      *proxy_, "/v1/chat/completions", BodyReserving(600, R"(,"stream":true)"), Bearer(kTinaToken));
  auto stream = test_support::FetchStreaming(request);
  ASSERT_TRUE(stream.ok()) << stream.status();
  ASSERT_EQ(stream->status, 200);

  EXPECT_EQ(RemainingAfterRefusal(401), "400");
}

TEST_F(ProxyTokens, RequestNoUpstreamAnsweredIsRefundedWhole) {
  upstream_->SetDefaultBehavior(test_support::Behavior::Fail(503));
  EXPECT_EQ(Send(BodyReserving(700)).status, 503);

  EXPECT_EQ(RemainingAfterRefusal(1001), "1000");
}

TEST_F(ProxyTokens, TokenWindowStartsOverWithTheNextMinute) {
  ASSERT_EQ(Send(BodyReserving(900)).status, 200);
  ASSERT_EQ(Send(BodyReserving(980)).status, 429);

  clock_.Advance(std::chrono::seconds(40));
  EXPECT_EQ(Send(BodyReserving(980)).status, 200);
}

TEST(ProxyTokenRefusals, ARequestRefusedForItsTokensDoesNotCountAgainstTheRequestLimits) {
  auto upstream = StartMock("plain");
  test_support::ManualClock clock{kStartUnixSeconds};
  TestProxyOptions options;
  options.clock = &clock;
  auto proxy = StartProxy(
      ProviderToml("plain", upstream->base_url()) + ModelToml("chat") +
          BackendToml("chat", "plain") +
          absl::StrCat("[users.tina]\ntoken = \"", std::string(kTinaToken),
                       "\"\n[users.tina.rate_limit]\nrequests_per_minute = 2\ntokens_per_minute = ",
                       kTokensPerMinute, "\n"),
      options);
  const auto send = [&](uint64_t tokens) {
    return Post(*proxy, "/v1/chat/completions", BodyReserving(tokens), Bearer(kTinaToken));
  };
  for (int i = 0; i < 3; ++i) {
    const HttpResponse refused = send(kTokensPerMinute + 1);
    ASSERT_EQ(refused.status, 429);
    EXPECT_TRUE(refused.Header("x-ratelimit-limit-tokens").has_value());
  }
  // The refusals for tokens left both requests of the minute.
  EXPECT_EQ(send(100).status, 200);
  EXPECT_EQ(send(100).status, 200);
  const HttpResponse refused = send(100);
  ASSERT_EQ(refused.status, 429);
  EXPECT_EQ(refused.Header("x-ratelimit-limit-requests").value_or(""), "2");
  EXPECT_EQ(upstream->request_count(), 2u);
}

}  // namespace
}  // namespace berry::itest::proxy_tokens_test
