#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <vector>

#include "data-plane/managed/control_plane_client.h"

namespace berry::managed::backoff_test {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

constexpr uint64_t kSeed = 20240611;

// The n-th delay is drawn from [ceiling/2, ceiling]: the ceiling starts at the initial delay and
// doubles up to the cap.
TEST(Backoff, FirstDelayIsBetweenHalfTheInitialDelayAndTheInitialDelay) {
  std::mt19937_64 rng(kSeed);
  for (int i = 0; i < 1000; ++i) {
    Backoff backoff(1000ms, 60000ms);
    const milliseconds delay = backoff.Next(rng);
    EXPECT_GE(delay, 500ms);
    EXPECT_LE(delay, 1000ms);
  }
}

TEST(Backoff, CeilingDoublesWithEachAttemptUpToTheCap) {
  const std::vector<milliseconds> ceilings = {100ms, 200ms, 400ms, 800ms, 1000ms, 1000ms, 1000ms};
  std::vector<milliseconds> lowest(ceilings.size(), milliseconds::max());
  std::vector<milliseconds> highest(ceilings.size(), 0ms);
  std::mt19937_64 rng(kSeed);
  for (int run = 0; run < 2000; ++run) {
    Backoff backoff(100ms, 1000ms);
    for (size_t attempt = 0; attempt < ceilings.size(); ++attempt) {
      const milliseconds delay = backoff.Next(rng);
      lowest[attempt] = std::min(lowest[attempt], delay);
      highest[attempt] = std::max(highest[attempt], delay);
    }
  }
  for (size_t attempt = 0; attempt < ceilings.size(); ++attempt) {
    SCOPED_TRACE(attempt);
    EXPECT_GE(lowest[attempt], ceilings[attempt] / 2);
    EXPECT_LE(highest[attempt], ceilings[attempt]);
    // Over 2000 draws both ends of the range are reached to within 2 % of the ceiling.
    EXPECT_LE(lowest[attempt], ceilings[attempt] / 2 + ceilings[attempt] / 50);
    EXPECT_GE(highest[attempt], ceilings[attempt] - ceilings[attempt] / 50);
  }
}

TEST(Backoff, NeverWaitsLongerThanTheCap) {
  std::mt19937_64 rng(kSeed);
  Backoff backoff(250ms, 15000ms);
  for (int attempt = 0; attempt < 10000; ++attempt) {
    ASSERT_LE(backoff.Next(rng), 15000ms) << "attempt " << attempt;
  }
}

TEST(Backoff, ResetStartsAgainFromTheInitialDelay) {
  std::mt19937_64 rng(kSeed);
  Backoff backoff(100ms, 10000ms);
  for (int attempt = 0; attempt < 20; ++attempt) {
    backoff.Next(rng);
  }
  ASSERT_GE(backoff.Next(rng), 5000ms) << "not at the cap before the reset";
  backoff.Reset();
  const milliseconds delay = backoff.Next(rng);
  EXPECT_GE(delay, 50ms);
  EXPECT_LE(delay, 100ms);
  const milliseconds second = backoff.Next(rng);
  EXPECT_GE(second, 100ms);
  EXPECT_LE(second, 200ms);
}

// Jitter spreads a fleet that lost its control plane at the same moment: the delays are uniform
// over [ceiling/2, ceiling]. 10,000 draws of U[500, 1000]: the mean is 750 with a standard error
// of 1.4, so ±10 ms is about seven standard errors; each quarter of the range holds 2,500 ± 43
// (one standard deviation), so ±250 is almost six.
TEST(Backoff, DelaysAreSpreadUniformlyOverTheUpperHalfOfTheCeiling) {
  std::mt19937_64 rng(kSeed);
  constexpr int kDraws = 10000;
  double sum = 0;
  std::vector<int> quarters(4, 0);
  for (int i = 0; i < kDraws; ++i) {
    Backoff backoff(1000ms, 1000ms);
    const auto delay = backoff.Next(rng).count();
    sum += static_cast<double>(delay);
    ++quarters[std::min<size_t>(3, static_cast<size_t>((delay - 500) / 125))];
  }
  EXPECT_NEAR(sum / kDraws, 750.0, 10.0);
  for (int count : quarters) {
    EXPECT_NEAR(count, kDraws / 4, 250);
  }
}

TEST(Backoff, SameSeedGivesTheSameDelays) {
  std::mt19937_64 first_rng(kSeed);
  std::mt19937_64 second_rng(kSeed);
  Backoff first(250ms, 15000ms);
  Backoff second(250ms, 15000ms);
  for (int attempt = 0; attempt < 20; ++attempt) {
    EXPECT_EQ(first.Next(first_rng), second.Next(second_rng)) << "attempt " << attempt;
  }
}

// The production overload draws from its own generator; it obeys the same bounds.
TEST(Backoff, DefaultGeneratorKeepsTheSameBounds) {
  Backoff backoff(100ms, 400ms);
  const std::vector<milliseconds> ceilings = {100ms, 200ms, 400ms, 400ms};
  for (const milliseconds ceiling : ceilings) {
    const milliseconds delay = backoff.Next();
    EXPECT_GE(delay, ceiling / 2);
    EXPECT_LE(delay, ceiling);
  }
}

}  // namespace
}  // namespace berry::managed::backoff_test
