#include "data-plane/proxy/retry_after.h"

#include <gtest/gtest.h>

#include <chrono>

namespace berry::proxy::retry_after_test {
namespace {

using namespace std::chrono_literals;

std::chrono::nanoseconds Ns(std::chrono::nanoseconds d) { return d; }

TEST(RateLimitDuration, ParsesBareSecondsAndGoDurations) {
  EXPECT_EQ(ParseRateLimitDuration("2"), Ns(2s));
  EXPECT_EQ(ParseRateLimitDuration("1.5"), Ns(1500ms));
  EXPECT_EQ(ParseRateLimitDuration(" 0.25 "), Ns(250ms));
  EXPECT_EQ(ParseRateLimitDuration("20ms"), Ns(20ms));
  EXPECT_EQ(ParseRateLimitDuration("6m0s"), Ns(6min));
  EXPECT_EQ(ParseRateLimitDuration("1h2m3.5s"), Ns(1h + 2min + 3500ms));
  EXPECT_EQ(ParseRateLimitDuration("0.5s"), Ns(500ms));
  EXPECT_EQ(ParseRateLimitDuration("7us"), Ns(7us));
  EXPECT_EQ(ParseRateLimitDuration("9ns"), Ns(9ns));
  EXPECT_EQ(ParseRateLimitDuration("1m30s"), Ns(90s));
}

TEST(RateLimitDuration, RefusesGarbageNegativeAndAbsurdValues) {
  for (const char* text : {"", "s", "ms", "abc", "1x", "1.5.5s", "-1", "-2s", "1s2", "nan", "inf",
                           "100000000", "99999h"}) {
    EXPECT_FALSE(ParseRateLimitDuration(text).has_value()) << text;
  }
}

TEST(RetryAfter, SecondsOrHttpDate) {
  // 2026-10-21T07:28:00Z = 1792567680.
  constexpr int64_t kNow = 1792567680;
  EXPECT_EQ(ParseRetryAfter("3", kNow), Ns(3s));
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2026 07:28:10 GMT", kNow), Ns(10s));
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2026 07:27:00 GMT", kNow), Ns(0s));  // in the past
  EXPECT_FALSE(ParseRetryAfter("soon", kNow).has_value());
}

TEST(UpstreamRetryAfter, RetryAfterWinsThenTheLongestExhaustedReset) {
  upstream::ResponseFields fields;
  EXPECT_FALSE(UpstreamRetryAfter(fields, 0).has_value());

  fields.set("x-ratelimit-reset-requests", "1s");
  fields.set("x-ratelimit-reset-tokens", "6m0s");
  EXPECT_EQ(UpstreamRetryAfter(fields, 0), Ns(6min));  // no remaining-*: both count

  fields.set("x-ratelimit-remaining-tokens", "1200");  // tokens left: not why we were refused
  EXPECT_EQ(UpstreamRetryAfter(fields, 0), Ns(1s));
  fields.set("x-ratelimit-remaining-requests", "0");
  EXPECT_EQ(UpstreamRetryAfter(fields, 0), Ns(1s));

  fields.set("Retry-After", "2");
  EXPECT_EQ(UpstreamRetryAfter(fields, 0), Ns(2s));
  fields.set("Retry-After", "garbage");  // unreadable: the reset headers still count
  EXPECT_EQ(UpstreamRetryAfter(fields, 0), Ns(1s));
}

}  // namespace
}  // namespace berry::proxy::retry_after_test
