// OutlierDetector: runs of failures eject a backend through the shared RuntimeState, for a time
// that grows with re-ejections and decays after a healthy spell. The clock is a plain number of
// nanoseconds advanced by hand.
#include "data-plane/outlier/outlier_detector.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/selection/runtime_state.h"
#include "common/selection/snapshot.h"
#include "gtest/gtest.h"

namespace berry::outlier::outlier_detector_test {
namespace {

namespace v1 = berry::v1;

constexpr int64_t kSecond = 1'000'000'000;
constexpr uint32_t kThreshold = 3;
constexpr int64_t kBase = 10 * kSecond;
constexpr int64_t kStart = 1000 * kSecond;

// Provider "p"; model "m" with backends `backend_ids` in order.
v1::RouteTable Table(const std::vector<std::string>& backend_ids, uint32_t threshold = kThreshold,
                     int64_t base_seconds = kBase / kSecond) {
  v1::RouteTable table;
  table.mutable_settings()->set_circuit_breaker_failure_threshold(threshold);
  table.mutable_settings()->mutable_circuit_breaker_timeout()->set_seconds(base_seconds);
  table.mutable_settings()->set_panic_threshold_percent(50);
  v1::Provider* provider = table.add_providers();
  provider->set_id("p");
  provider->set_enabled(true);
  v1::CustomModel* model = table.add_models();
  model->set_id("m");
  model->set_name("m");
  model->set_enabled(true);
  for (const std::string& id : backend_ids) {
    v1::Backend* backend = model->add_backends();
    backend->set_id(id);
    backend->set_provider_id("p");
    backend->set_upstream_model("upstream-" + id);
    backend->set_weight(1);
    backend->set_enabled(true);
  }
  return table;
}

// A snapshot, its runtime state and a detector, optionally following `previous`.
struct Fixture {
  explicit Fixture(const v1::RouteTable& table, const Fixture* previous = nullptr) {
    auto snapshot = selection::Snapshot::Create(table);
    EXPECT_TRUE(snapshot.ok()) << snapshot.status();
    runtime = selection::RuntimeState::Create(
        *snapshot, previous != nullptr ? previous->runtime.get() : nullptr);
    auto created =
        OutlierDetector::Create(runtime, previous != nullptr ? previous->detector.get() : nullptr);
    EXPECT_TRUE(created.ok()) << created.status();
    detector = *created;
  }
  Fixture() : Fixture(Table({"a", "b"})) {}

  // `count` failures of backend `index` at `now`; the result of the last one.
  OutlierDetector::Result Fail(uint32_t index, int count, int64_t now,
                               Outcome outcome = Outcome::kStatus5xx) const {
    OutlierDetector::Result result;
    for (int i = 0; i < count; ++i) {
      result = detector->Record(index, outcome, now);
    }
    return result;
  }
  bool Ejected(uint32_t index, int64_t now) const { return runtime->backend(index).EjectedAt(now); }

  std::shared_ptr<const selection::RuntimeState> runtime;
  std::shared_ptr<const OutlierDetector> detector;
};

TEST(OutlierDetectorTest, ThresholdConsecutiveFailuresEjectForTheBaseTimeout) {
  Fixture f;
  EXPECT_FALSE(f.Fail(0, kThreshold - 1, kStart).ejected);
  EXPECT_FALSE(f.Ejected(0, kStart));

  const OutlierDetector::Result result = f.detector->Record(0, Outcome::kStatus5xx, kStart);
  EXPECT_TRUE(result.ejected);
  EXPECT_EQ(result.until_ns, kStart + kBase);
  EXPECT_EQ(result.multiplier, 1u);
  EXPECT_TRUE(f.Ejected(0, kStart));
  EXPECT_TRUE(f.Ejected(0, kStart + kBase - 1));
  EXPECT_FALSE(f.Ejected(0, kStart + kBase));
  EXPECT_FALSE(f.Ejected(1, kStart));  // the other backend is untouched
}

TEST(OutlierDetectorTest, EveryFailureClassCounts) {
  for (Outcome outcome : {Outcome::kConnectError, Outcome::kTimeout, Outcome::kStatus5xx,
                          Outcome::kStatus429, Outcome::kStatus408, Outcome::kStreamBroken}) {
    Fixture f;
    EXPECT_TRUE(f.Fail(0, kThreshold, kStart, outcome).ejected) << OutcomeName(outcome);
  }
}

TEST(OutlierDetectorTest, SuccessInBetweenResetsTheRun) {
  Fixture f;
  f.Fail(0, kThreshold - 1, kStart);
  f.detector->Record(0, Outcome::kSuccess, kStart);
  EXPECT_EQ(f.detector->state().backend(0).consecutive_failures(), 0u);
  EXPECT_FALSE(f.Fail(0, kThreshold - 1, kStart).ejected);
  EXPECT_FALSE(f.Ejected(0, kStart));
  EXPECT_TRUE(f.Fail(0, 1, kStart).ejected);
}

TEST(OutlierDetectorTest, ClientErrorsNeitherCountNorResetTheRun) {
  Fixture f;
  f.Fail(0, 10 * kThreshold, kStart, Outcome::kClientError);
  EXPECT_FALSE(f.Ejected(0, kStart));
  EXPECT_EQ(f.detector->state().backend(0).consecutive_failures(), 0u);

  f.Fail(0, kThreshold - 1, kStart);
  f.Fail(0, 5, kStart, Outcome::kClientError);
  EXPECT_TRUE(f.Fail(0, 1, kStart).ejected);
}

TEST(OutlierDetectorTest, StatusClassification408And429CountOther4xxDoNot) {
  EXPECT_EQ(OutcomeForStatus(200), Outcome::kSuccess);
  EXPECT_EQ(OutcomeForStatus(204), Outcome::kSuccess);
  EXPECT_EQ(OutcomeForStatus(408), Outcome::kStatus408);
  EXPECT_EQ(OutcomeForStatus(429), Outcome::kStatus429);
  for (int status : {400, 401, 403, 404, 413, 422}) {
    EXPECT_EQ(OutcomeForStatus(status), Outcome::kClientError) << status;
  }
  for (int status : {500, 502, 503, 504}) {
    EXPECT_EQ(OutcomeForStatus(status), Outcome::kStatus5xx) << status;
  }
  EXPECT_TRUE(IsFailure(OutcomeForStatus(408)));
  EXPECT_TRUE(IsFailure(OutcomeForStatus(429)));
  EXPECT_FALSE(IsFailure(OutcomeForStatus(400)));
  EXPECT_FALSE(IsFailure(OutcomeForStatus(200)));
}

TEST(OutlierDetectorTest, SecondEjectionLastsTwiceTheBase) {
  Fixture f;
  ASSERT_TRUE(f.Fail(0, kThreshold, kStart).ejected);
  const int64_t back = kStart + kBase;
  const OutlierDetector::Result second = f.Fail(0, kThreshold, back + kSecond);
  ASSERT_TRUE(second.ejected);
  EXPECT_EQ(second.multiplier, 2u);
  EXPECT_EQ(second.until_ns, back + kSecond + 2 * kBase);
  EXPECT_TRUE(f.Ejected(0, back + kSecond + 2 * kBase - 1));
}

TEST(OutlierDetectorTest, EjectionTimeIsCappedAtTenTimesTheBase) {
  Fixture f;
  int64_t now = kStart;
  for (uint32_t ejection = 1; ejection <= 12; ++ejection) {
    const OutlierDetector::Result result = f.Fail(0, kThreshold, now);
    ASSERT_TRUE(result.ejected) << ejection;
    const uint32_t expected = std::min(ejection, kMaxEjectionMultiplier);
    EXPECT_EQ(result.multiplier, expected) << ejection;
    EXPECT_EQ(result.until_ns - now, expected * kBase) << ejection;
    now = result.until_ns;  // fails again the moment it is back
  }
}

TEST(OutlierDetectorTest, FailuresWhileEjectedAreIgnored) {
  Fixture f;
  ASSERT_TRUE(f.Fail(0, kThreshold, kStart).ejected);
  // In-flight requests failing after the ejection neither extend it nor start the next run.
  EXPECT_FALSE(f.Fail(0, 3 * kThreshold, kStart + kSecond).ejected);
  EXPECT_EQ(f.runtime->backend(0).ejected_until_ns(), kStart + kBase);
  EXPECT_EQ(f.detector->state().backend(0).consecutive_failures(), 0u);
}

TEST(OutlierDetectorTest, MultiplierStartsOverAfterABaseTimeoutBackInService) {
  Fixture f;
  ASSERT_TRUE(f.Fail(0, kThreshold, kStart).ejected);
  const int64_t back = kStart + kBase;
  ASSERT_EQ(f.Fail(0, kThreshold, back).multiplier, 2u);
  const int64_t back_again = back + 2 * kBase;

  // Served for a full base timeout after returning: the next ejection is 1x again.
  const OutlierDetector::Result result = f.Fail(0, kThreshold, back_again + kBase);
  ASSERT_TRUE(result.ejected);
  EXPECT_EQ(result.multiplier, 1u);
  EXPECT_EQ(result.until_ns, back_again + 2 * kBase);
}

TEST(OutlierDetectorTest, MultiplierKeepsGrowingWhenFailingWithinABaseTimeoutOfReturning) {
  Fixture f;
  ASSERT_TRUE(f.Fail(0, kThreshold, kStart).ejected);
  const OutlierDetector::Result result = f.Fail(0, kThreshold, kStart + kBase + kBase - 1);
  ASSERT_TRUE(result.ejected);
  EXPECT_EQ(result.multiplier, 2u);
}

TEST(OutlierDetectorTest, RestoreBringsAnEjectedBackendBackAndCountsAsItsReturn) {
  Fixture f;
  ASSERT_TRUE(f.Fail(0, kThreshold, kStart).ejected);
  EXPECT_TRUE(f.detector->Restore(0, kStart + kSecond));
  EXPECT_FALSE(f.Ejected(0, kStart + kSecond));
  EXPECT_FALSE(f.detector->Restore(0, kStart + kSecond));  // not ejected any more
  EXPECT_EQ(f.detector->state().backend(0).ejection_end_ns(), kStart + kSecond);

  // Failing again soon after the restore grows the multiplier.
  const OutlierDetector::Result result = f.Fail(0, kThreshold, kStart + 2 * kSecond);
  ASSERT_TRUE(result.ejected);
  EXPECT_EQ(result.multiplier, 2u);
}

TEST(OutlierDetectorTest, ConcurrentFailuresEjectExactlyOnce) {
  constexpr int kThreads = 4;
  constexpr int kFailuresPerThread = 1000;
  for (uint32_t threshold : {1u, 5u}) {
    Fixture f(Table({"a", "b"}, threshold));
    std::atomic<int> ejections{0};
    std::latch start(kThreads);  // all threads race from the same moment
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < kFailuresPerThread; ++i) {
          if (f.detector->Record(0, Outcome::kConnectError, kStart).ejected) {
            ejections.fetch_add(1, std::memory_order_relaxed);
          }
        }
      });
    }
    for (std::thread& thread : threads) {
      thread.join();
    }
    EXPECT_EQ(ejections.load(), 1) << "threshold " << threshold;
    EXPECT_EQ(f.detector->state().backend(0).multiplier(), 1u);
    EXPECT_EQ(f.runtime->backend(0).ejected_until_ns(), kStart + kBase);
  }
}

TEST(OutlierDetectorTest, CountersCarryToANewTableByBackendId) {
  Fixture first(Table({"a", "b"}));
  first.Fail(1, kThreshold - 1, kStart);                   // "b" one failure short
  ASSERT_TRUE(first.Fail(0, kThreshold, kStart).ejected);  // "a" ejected once

  // "b" moves to index 0, "a" to 2; "c" is new.
  Fixture second(Table({"b", "c", "a"}), &first);
  EXPECT_TRUE(second.Ejected(2, kStart));
  EXPECT_TRUE(second.Fail(0, 1, kStart).ejected);                // "b" completes its run
  EXPECT_FALSE(second.Fail(1, kThreshold - 1, kStart).ejected);  // "c" starts clean

  // "a" returns and fails at once: its second ejection is 2x.
  const OutlierDetector::Result a = second.Fail(2, kThreshold, kStart + kBase);
  ASSERT_TRUE(a.ejected);
  EXPECT_EQ(a.multiplier, 2u);
}

TEST(OutlierDetectorTest, CountersOfARemovedBackendAreDropped) {
  Fixture first(Table({"a", "b"}));
  ASSERT_TRUE(first.Fail(0, kThreshold, kStart).ejected);
  Fixture without_a(Table({"b"}), &first);
  Fixture with_a(Table({"a", "b"}), &without_a);
  EXPECT_EQ(with_a.detector->state().backend(0).multiplier(), 0u);
  EXPECT_EQ(with_a.Fail(0, kThreshold, kStart + kBase).multiplier, 1u);
}

TEST(OutlierDetectorTest, NewTableSettingsApplyToCarriedCounters) {
  Fixture first(Table({"a"}, /*threshold=*/5));
  first.Fail(0, 2, kStart);
  Fixture second(Table({"a"}, /*threshold=*/3, /*base_seconds=*/30), &first);
  const OutlierDetector::Result result = second.Fail(0, 1, kStart);
  ASSERT_TRUE(result.ejected);
  EXPECT_EQ(result.until_ns, kStart + 30 * kSecond);
}

TEST(OutlierDetectorTest, UnsetSettingsReadAsTheDocumentedDefaults) {
  Fixture f(Table({"a"}, /*threshold=*/0, /*base_seconds=*/0));
  EXPECT_EQ(f.detector->failure_threshold(), 5u);
  EXPECT_EQ(f.detector->base_ejection_ns(), 60 * kSecond);
}

TEST(OutlierDetectorTest, CreateRejectsANegativeOrOverlongBaseTimeout) {
  for (int64_t seconds : {int64_t{-1}, int64_t{1} << 40}) {
    auto snapshot = selection::Snapshot::Create(Table({"a"}, kThreshold, seconds));
    ASSERT_TRUE(snapshot.ok());
    const auto detector = OutlierDetector::Create(selection::RuntimeState::Create(*snapshot));
    EXPECT_EQ(detector.status().code(), absl::StatusCode::kInvalidArgument) << seconds;
  }
}

}  // namespace
}  // namespace berry::outlier::outlier_detector_test
