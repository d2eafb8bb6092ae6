// FleetStats: load reports from several proxies fold into exact per-backend totals, exactly once;
// a recent window drives fleet health (with hysteresis) and quantised effective weights; probes
// take precedence; Overlay only reports real change. Time is a fake clock advanced by hand.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "berry/v1/discovery.pb.h"
#include "berry/v1/route_table.pb.h"
#include "common/load_report/attempt_counts.h"
#include "common/metrics/metrics.h"
#include "control-plane/stats/fleet_stats.h"
#include "control-plane/stats/latency_histogram.h"
#include "gtest/gtest.h"

namespace berry::control_plane::stats_test {
namespace {

namespace v1 = berry::v1;

// The proxy's totals, reported as deltas (WriteDelta) and added up by the control plane (Add),
// come back whole: every counter of the protocol on both ends.
TEST(AttemptCounts, DeltasWrittenByAProxyAddUpToItsTotals) {
  load_report::AttemptCounts earlier{.issued = 10,
                                     .succeeded = 6,
                                     .failed_connect = 1,
                                     .failed_timeout = 1,
                                     .failed_5xx = 1,
                                     .failed_429 = 0,
                                     .failed_stream_broken = 1,
                                     .prompt_tokens = 100,
                                     .completion_tokens = 50};
  load_report::AttemptCounts now = earlier;
  now.issued += 7;
  now.succeeded += 2;
  now.failed_connect += 1;
  now.failed_timeout += 3;
  now.failed_5xx += 4;
  now.failed_429 += 5;
  now.failed_stream_broken += 6;
  now.prompt_tokens += 7;
  now.completion_tokens += 8;

  v1::BackendStats first;
  earlier.WriteDelta(load_report::AttemptCounts{}, first);
  v1::BackendStats second;
  now.WriteDelta(earlier, second);
  EXPECT_EQ(second.failed_429(), 5u);
  EXPECT_EQ(load_report::Completed(second), 2u + 1 + 3 + 4 + 5 + 6);

  load_report::AttemptCounts folded;
  folded.Add(first);
  folded.Add(second);
  EXPECT_EQ(folded, now);
  EXPECT_EQ(folded.failed(), 2u + 4 + 5 + 5 + 7);
}

constexpr char kBackendA[] = "chat/p1/model-a";
constexpr char kBackendB[] = "chat/p2/model-b";

struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  void Advance(absl::Duration d) { now += d; }
};

std::unique_ptr<FleetStats> NewStats(FakeClock& clock, FleetStatsOptions options = {}) {
  auto stats = FleetStats::Create(options, [&clock] { return clock.now; });
  EXPECT_TRUE(stats.ok()) << stats.status();
  return std::move(stats).value();
}

// `succeeded` successes and `failed_5xx` 5xx failures; issued = their sum.
v1::BackendStats Stats(const std::string& backend_id, uint64_t succeeded, uint64_t failed_5xx = 0) {
  v1::BackendStats stats;
  stats.set_backend_id(backend_id);
  stats.set_issued(succeeded + failed_5xx);
  stats.set_succeeded(succeeded);
  stats.set_failed_5xx(failed_5xx);
  return stats;
}

v1::StreamLoadReportsRequest Report(uint64_t sequence, std::vector<v1::BackendStats> stats,
                                    std::optional<int64_t> interval_start_seconds = std::nullopt) {
  v1::StreamLoadReportsRequest report;
  report.set_sequence(sequence);
  if (interval_start_seconds.has_value()) {
    report.mutable_interval_start()->set_seconds(*interval_start_seconds);
  }
  for (v1::BackendStats& s : stats) {
    *report.add_backend_stats() = std::move(s);
  }
  return report;
}

v1::LatencyHistogram Histogram(const std::vector<double>& bounds,
                               const std::vector<uint64_t>& counts, double sum) {
  v1::LatencyHistogram histogram;
  uint64_t count = 0;
  for (double b : bounds) {
    histogram.add_bounds(b);
  }
  for (uint64_t c : counts) {
    histogram.add_counts(c);
    count += c;
  }
  histogram.set_count(count);
  histogram.set_sum(sum);
  return histogram;
}

void MustFold(FleetStats& stats, const v1::StreamLoadReportsRequest& report,
              const std::string& node) {
  absl::StatusOr<uint64_t> acked = stats.Fold(report, node);
  ASSERT_TRUE(acked.ok()) << acked.status();
}

std::optional<BackendFleetStatus> Find(FleetStats& stats, const std::string& backend_id) {
  for (BackendFleetStatus& status : stats.Snapshot()) {
    if (status.backend_id == backend_id) {
      return status;
    }
  }
  return std::nullopt;
}

v1::HealthStatus FleetHealth(FleetStats& stats, const std::string& backend_id) {
  std::optional<BackendFleetStatus> status = Find(stats, backend_id);
  return status.has_value() ? status->fleet_health : v1::HEALTH_STATUS_UNSPECIFIED;
}

// One model with backends A (provider p1) and B (provider p2), weights 2 and 4.
v1::RouteTable Table() {
  v1::RouteTable table;
  v1::CustomModel* model = table.add_models();
  model->set_id("chat");
  model->set_name("chat");
  for (const auto& [id, provider, weight] :
       {std::tuple<const char*, const char*, double>{kBackendA, "p1", 2.0},
        {kBackendB, "p2", 4.0}}) {
    v1::Backend* backend = model->add_backends();
    backend->set_id(id);
    backend->set_provider_id(provider);
    backend->set_weight(weight);
    backend->set_enabled(true);
  }
  return table;
}

const v1::Backend& BackendOf(const v1::RouteTable& table, const std::string& id) {
  for (const v1::CustomModel& model : table.models()) {
    for (const v1::Backend& backend : model.backends()) {
      if (backend.id() == id) {
        return backend;
      }
    }
  }
  ADD_FAILURE() << "no backend " << id;
  return v1::Backend::default_instance();
}

// ---- totals and exactly-once accounting ----------------------------------------------------

TEST(FleetStatsTest, TotalsAddUpExactlyOverNodesAndReports) {
  FakeClock clock;
  auto stats = NewStats(clock);
  v1::BackendStats a1 = Stats(kBackendA, 10, 2);
  a1.set_failed_connect(1);
  a1.set_failed_timeout(3);
  a1.set_issued(a1.issued() + 4);
  a1.set_prompt_tokens(100);
  a1.set_completion_tokens(50);
  a1.set_in_flight(4);
  v1::BackendStats a2 = Stats(kBackendA, 5);
  a2.set_failed_429(2);
  a2.set_failed_stream_broken(1);
  a2.set_issued(a2.issued() + 3);
  a2.set_prompt_tokens(7);
  a2.set_in_flight(1);
  MustFold(*stats, Report(1, {a1, Stats(kBackendB, 1)}), "proxy-1");
  MustFold(*stats, Report(1, {a2}), "proxy-2");
  clock.Advance(absl::Seconds(5));
  MustFold(*stats, Report(2, {Stats(kBackendA, 3, 1)}), "proxy-1");

  std::optional<BackendFleetStatus> a = Find(*stats, kBackendA);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->issued, 16u + 8u + 4u);
  EXPECT_EQ(a->succeeded, 18u);
  EXPECT_EQ(a->failed_connect, 1u);
  EXPECT_EQ(a->failed_timeout, 3u);
  EXPECT_EQ(a->failed_5xx, 3u);
  EXPECT_EQ(a->failed_429, 2u);
  EXPECT_EQ(a->failed_stream_broken, 1u);
  EXPECT_EQ(a->failed(), 10u);
  EXPECT_EQ(a->prompt_tokens, 107u);
  EXPECT_EQ(a->completion_tokens, 50u);
  // proxy-1's last report for A carried in_flight 0 (the default), proxy-2's 1.
  EXPECT_EQ(a->in_flight, 1u);
  ASSERT_TRUE(a->lifetime_success_rate.has_value());
  EXPECT_DOUBLE_EQ(*a->lifetime_success_rate, 18.0 / 28.0);
  std::optional<BackendFleetStatus> b = Find(*stats, kBackendB);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->issued, 1u);
  EXPECT_EQ(b->succeeded, 1u);
  EXPECT_EQ(stats->folded_reports(), 3u);
}

TEST(FleetStatsTest, InFlightIsTheLatestGaugePerNodeSummedOverNodes) {
  FakeClock clock;
  auto stats = NewStats(clock);
  v1::BackendStats busy = Stats(kBackendA, 1);
  busy.set_in_flight(3);
  MustFold(*stats, Report(1, {busy}), "proxy-1");
  busy.set_in_flight(2);
  MustFold(*stats, Report(1, {busy}), "proxy-2");
  EXPECT_EQ(Find(*stats, kBackendA)->in_flight, 5u);

  busy.set_in_flight(1);
  MustFold(*stats, Report(2, {busy}), "proxy-1");
  EXPECT_EQ(Find(*stats, kBackendA)->in_flight, 3u);
  // A report that does not mention the backend leaves the node's gauge as it was.
  MustFold(*stats, Report(3, {Stats(kBackendB, 1)}), "proxy-1");
  EXPECT_EQ(Find(*stats, kBackendA)->in_flight, 3u);
}

TEST(FleetStatsTest, ResentReportIsNotDoubleCounted) {
  FakeClock clock;
  auto stats = NewStats(clock);
  const v1::StreamLoadReportsRequest first = Report(1, {Stats(kBackendA, 4, 1)}, 1000);
  const v1::StreamLoadReportsRequest second = Report(2, {Stats(kBackendA, 6)}, 1005);
  EXPECT_EQ(*stats->Fold(first, "proxy-1"), 1u);
  EXPECT_EQ(*stats->Fold(second, "proxy-1"), 2u);
  // The stream broke before the ack: the proxy reconnects and re-sends both.
  absl::StatusOr<uint64_t> acked = stats->Fold(first, "proxy-1");
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(*acked, 2u);
  EXPECT_EQ(*stats->Fold(second, "proxy-1"), 2u);

  std::optional<BackendFleetStatus> a = Find(*stats, kBackendA);
  EXPECT_EQ(a->issued, 11u);
  EXPECT_EQ(a->succeeded, 10u);
  EXPECT_EQ(stats->duplicate_reports(), 2u);
  EXPECT_EQ(stats->folded_reports(), 2u);
  EXPECT_EQ(stats->AckedSequence("proxy-1"), 2u);
}

TEST(FleetStatsTest, SequencesAreIndependentPerNode) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(7, {Stats(kBackendA, 1)}), "proxy-1");
  // proxy-2 starts at 1 although proxy-1 is at 7.
  EXPECT_EQ(*stats->Fold(Report(1, {Stats(kBackendA, 2)}), "proxy-2"), 1u);
  EXPECT_EQ(*stats->Fold(Report(2, {Stats(kBackendA, 3)}), "proxy-2"), 2u);

  EXPECT_EQ(Find(*stats, kBackendA)->succeeded, 6u);
  EXPECT_EQ(stats->duplicate_reports(), 0u);
  EXPECT_EQ(stats->AckedSequence("proxy-1"), 7u);
  EXPECT_EQ(stats->AckedSequence("proxy-2"), 2u);
  EXPECT_EQ(stats->AckedSequence("proxy-3"), 0u);
}

TEST(FleetStatsTest, RestartedProxyCountingFromOneAgainIsFoldedAndDropsItsOldInFlight) {
  FakeClock clock;
  auto stats = NewStats(clock);
  v1::BackendStats busy = Stats(kBackendA, 1);
  busy.set_in_flight(5);
  MustFold(*stats, Report(1, {Stats(kBackendA, 1)}, 1000), "proxy-1");
  MustFold(*stats, Report(2, {busy}, 1005), "proxy-1");
  MustFold(*stats, Report(3, {Stats(kBackendB, 1)}, 1010), "proxy-1");

  // Same node id, new process: sequence 1 again, for an interval after the last folded one.
  EXPECT_EQ(*stats->Fold(Report(1, {Stats(kBackendB, 2)}, 1020), "proxy-1"), 1u);

  EXPECT_EQ(Find(*stats, kBackendB)->succeeded, 3u);
  EXPECT_EQ(Find(*stats, kBackendA)->in_flight, 0u);
  EXPECT_EQ(stats->duplicate_reports(), 0u);
}

TEST(FleetStatsTest, MalformedReportIsRejectedAndNothingIsFolded) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 1)}), "proxy-1");

  v1::BackendStats bad_histogram = Stats(kBackendB, 1);
  *bad_histogram.mutable_latency() = Histogram({0.1, 0.2}, {1, 1}, 0.1);  // one count short
  EXPECT_EQ(stats->Fold(Report(2, {Stats(kBackendA, 5), bad_histogram}), "proxy-1").status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::BackendStats descending = Stats(kBackendB, 1);
  *descending.mutable_ttfb() = Histogram({0.2, 0.1}, {1, 0, 0}, 0.1);
  EXPECT_EQ(stats->Fold(Report(2, {descending}), "proxy-1").status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::BackendStats wrong_count = Stats(kBackendB, 1);
  *wrong_count.mutable_ttfb() = Histogram({0.1}, {1, 0}, 0.1);
  wrong_count.mutable_ttfb()->set_count(2);
  EXPECT_EQ(stats->Fold(Report(2, {wrong_count}), "proxy-1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stats->Fold(Report(2, {Stats("", 1)}), "proxy-1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stats->Fold(Report(0, {Stats(kBackendA, 1)}), "proxy-1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stats->Fold(Report(2, {Stats(kBackendA, 1)}), "").status().code(),
            absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(Find(*stats, kBackendA)->succeeded, 1u);
  EXPECT_FALSE(Find(*stats, kBackendB).has_value());
  EXPECT_EQ(stats->AckedSequence("proxy-1"), 1u);
}

// ---- histograms ---------------------------------------------------------------------------

// A histogram over metrics::kLatencyBuckets with `counts` (bucket index -> count; the index
// after the last bound is +Inf).
v1::LatencyHistogram Standard(const std::vector<std::pair<size_t, uint64_t>>& counts, double sum) {
  std::vector<uint64_t> all(metrics::kLatencyBuckets.size() + 1, 0);
  for (const auto& [index, count] : counts) {
    all[index] += count;
  }
  return Histogram(metrics::LatencyBuckets(), all, sum);
}

// Indices into metrics::kLatencyBuckets.
constexpr size_t kLe5ms = 0;      // <= 0.005
constexpr size_t kLe100ms = 4;    // (0.05, 0.1]
constexpr size_t kLe250ms = 5;    // (0.1, 0.25]
constexpr size_t kLe500ms = 6;    // (0.25, 0.5]
constexpr size_t kLe1s = 7;       // (0.5, 1]
constexpr size_t kInfIndex = 13;  // +Inf

TEST(FleetStatsTest, PercentilesOfMergedHistogramsMatchHandComputedValues) {
  FakeClock clock;
  auto stats = NewStats(clock);
  ASSERT_EQ(metrics::kLatencyBuckets[kLe100ms], 0.1);
  ASSERT_EQ(metrics::kLatencyBuckets.size(), kInfIndex);
  // Two proxies' deltas add up to 10 in (0.05, 0.1], 30 in (0.1, 0.25], 40 in (0.25, 0.5] and
  // 20 in (0.5, 1].
  v1::BackendStats from_1 = Stats(kBackendA, 60);
  *from_1.mutable_latency() =
      Standard({{kLe100ms, 10}, {kLe250ms, 10}, {kLe500ms, 30}, {kLe1s, 10}}, 20.0);
  *from_1.mutable_ttfb() = Standard({{kLe5ms, 60}}, 3.0);
  v1::BackendStats from_2 = Stats(kBackendA, 40);
  *from_2.mutable_latency() = Standard({{kLe250ms, 20}, {kLe500ms, 10}, {kLe1s, 10}}, 15.0);
  *from_2.mutable_ttfb() = Standard({{kInfIndex, 40}}, 80.0);
  MustFold(*stats, Report(1, {from_1}), "proxy-1");
  MustFold(*stats, Report(1, {from_2}), "proxy-2");

  std::optional<BackendFleetStatus> a = Find(*stats, kBackendA);
  EXPECT_EQ(a->latency.count, 100u);
  EXPECT_DOUBLE_EQ(a->latency.sum_seconds, 35.0);
  EXPECT_EQ(a->latency.counts[kLe250ms], 30u);
  // p50: rank 50 falls in (0.25, 0.5] holding 40, with 40 below: 0.25 + 0.25 × 10/40.
  ASSERT_TRUE(a->latency.p50.has_value());
  EXPECT_NEAR(*a->latency.p50, 0.3125, 1e-12);
  // p99: rank 99 falls in (0.5, 1] holding 20, with 80 below: 0.5 + 0.5 × 19/20.
  EXPECT_NEAR(*a->latency.p99, 0.975, 1e-12);
  // TTFB 60 <= 5 ms, 40 in +Inf: p50 in the first bucket, interpolated from 0: 0.005 × 50/60;
  // p99 in +Inf, which answers the highest finite bound.
  EXPECT_NEAR(*a->ttfb.p50, 0.005 * 50.0 / 60.0, 1e-12);
  EXPECT_DOUBLE_EQ(*a->ttfb.p99, 60.0);
}

TEST(LatencyHistogramTest, QuantileWithoutObservationsIsUnknown) {
  EXPECT_FALSE(HistogramQuantile(0.5, {0.1, 0.2}, {0, 0, 0}).has_value());
  EXPECT_FALSE(HistogramQuantile(0.5, {}, {}).has_value());
  EXPECT_FALSE(HistogramQuantile(0.5, {}, {3}).has_value());  // only +Inf: no finite answer
}

TEST(LatencyHistogramTest, QuantileOnABucketBoundaryIsThatBound) {
  // 50 observations <= 0.1 and 50 in (0.1, 0.2]: the median is exactly 0.1.
  EXPECT_DOUBLE_EQ(*HistogramQuantile(0.5, {0.1, 0.2}, {50, 50, 0}), 0.1);
}

TEST(LatencyHistogramTest, StandardBoundsFoldAsTheyAre) {
  metrics::Histogram into(metrics::LatencyBuckets());
  EXPECT_EQ(FoldLatencyHistogram(Standard({{kLe1s, 2}, {kInfIndex, 1}}, 70.0), into),
            HistogramFold::kMerged);
  EXPECT_EQ(FoldLatencyHistogram(Standard({{kLe1s, 1}}, 0.75), into), HistogramFold::kMerged);
  const metrics::HistogramCounts read = metrics::ReadHistogram(into);
  EXPECT_EQ(read.counts[kLe1s], 3u);
  EXPECT_EQ(read.counts[kInfIndex], 1u);
  EXPECT_EQ(read.count, 4u);
  EXPECT_DOUBLE_EQ(read.sum, 70.75);
}

TEST(LatencyHistogramTest, FinerBoundsFoldExactlyIntoTheStandardOnes) {
  // A later proxy with extra bounds 0.001, 0.2 and 120: (-, 0.001] and (0.001, 0.005] land in
  // <= 0.005; (0.1, 0.2] and (0.2, 0.25] in (0.1, 0.25]; (60, 120] and +Inf in +Inf.
  std::vector<double> bounds = {0.001};
  for (const double b : metrics::kLatencyBuckets) {
    if (b == 0.25) {
      bounds.push_back(0.2);
    }
    bounds.push_back(b);
  }
  bounds.push_back(120);
  std::vector<uint64_t> counts(bounds.size() + 1, 0);
  counts[0] = 1;                  // <= 0.001
  counts[1] = 2;                  // (0.001, 0.005]
  counts[6] = 3;                  // (0.1, 0.2]
  counts[7] = 4;                  // (0.2, 0.25]
  counts[bounds.size() - 1] = 5;  // (60, 120]
  counts[bounds.size()] = 6;      // +Inf
  ASSERT_EQ(bounds[6], 0.2);
  metrics::Histogram into(metrics::LatencyBuckets());

  EXPECT_EQ(FoldLatencyHistogram(Histogram(bounds, counts, 1000.0), into), HistogramFold::kMerged);
  const metrics::HistogramCounts read = metrics::ReadHistogram(into);
  EXPECT_EQ(read.counts[kLe5ms], 3u);
  EXPECT_EQ(read.counts[kLe250ms], 7u);
  EXPECT_EQ(read.counts[kInfIndex], 11u);
  EXPECT_EQ(read.count, 21u);
}

TEST(LatencyHistogramTest, BoundsThatStraddleAStandardBoundAreDropped) {
  metrics::Histogram into(metrics::LatencyBuckets());
  // (0.15, 0.3] straddles 0.25.
  EXPECT_EQ(FoldLatencyHistogram(Histogram({0.15, 0.3}, {1, 2, 3}, 2.0), into),
            HistogramFold::kIncompatible);
  // Only +Inf: straddles every bound.
  EXPECT_EQ(FoldLatencyHistogram(Histogram({}, {3}, 2.0), into), HistogramFold::kIncompatible);
  EXPECT_EQ(metrics::ReadHistogram(into).count, 0u);
}

TEST(LatencyHistogramTest, EmptyDeltaChangesNothingWhateverItsBounds) {
  metrics::Histogram into(metrics::LatencyBuckets());
  EXPECT_EQ(FoldLatencyHistogram(Histogram({0.3, 0.7}, {0, 0, 0}, 0.0), into),
            HistogramFold::kEmpty);
  EXPECT_EQ(metrics::ReadHistogram(into).count, 0u);
}

TEST(FleetStatsTest, IncompatibleHistogramIsCountedAndTheRestOfTheReportFolds) {
  FakeClock clock;
  auto stats = NewStats(clock);
  v1::BackendStats a = Stats(kBackendA, 5);
  *a.mutable_latency() = Histogram({0.15, 0.3}, {1, 2, 2}, 2.0);
  *a.mutable_ttfb() = Standard({{kLe5ms, 5}}, 0.01);
  MustFold(*stats, Report(1, {a}), "proxy-1");

  EXPECT_EQ(stats->incompatible_histograms(), 1u);
  const std::optional<BackendFleetStatus> status = Find(*stats, kBackendA);
  EXPECT_EQ(status->succeeded, 5u);
  EXPECT_EQ(status->latency.count, 0u);
  EXPECT_EQ(status->ttfb.count, 5u);
}

// ---- recent window and fleet health ---------------------------------------------------------

TEST(FleetStatsTest, SuccessRateWindowForgetsOldDataAsTimePasses) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 100)}), "proxy-1");
  clock.Advance(absl::Seconds(30));
  MustFold(*stats, Report(2, {Stats(kBackendA, 0, 10)}), "proxy-1");
  EXPECT_NEAR(*Find(*stats, kBackendA)->recent_success_rate, 100.0 / 110.0, 1e-12);

  clock.Advance(absl::Seconds(31));  // the 100 successes are 61 s old now
  std::optional<BackendFleetStatus> a = Find(*stats, kBackendA);
  EXPECT_EQ(a->recent_completed, 10u);
  EXPECT_DOUBLE_EQ(*a->recent_success_rate, 0.0);
  EXPECT_NEAR(*a->lifetime_success_rate, 100.0 / 110.0, 1e-12);

  clock.Advance(absl::Seconds(60));
  a = Find(*stats, kBackendA);
  EXPECT_EQ(a->recent_completed, 0u);
  EXPECT_FALSE(a->recent_success_rate.has_value());
}

TEST(FleetStatsTest, BackendFailingAcrossTheFleetBecomesUnhealthy) {
  FakeClock clock;
  auto stats = NewStats(clock);
  // Each proxy alone sees too few attempts; together 6 of 14 succeed.
  MustFold(*stats, Report(1, {Stats(kBackendA, 3, 4), Stats(kBackendB, 7)}), "proxy-1");
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNKNOWN);
  MustFold(*stats, Report(1, {Stats(kBackendA, 3, 4), Stats(kBackendB, 7)}), "proxy-2");

  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_EQ(FleetHealth(*stats, kBackendB), v1::HEALTH_STATUS_HEALTHY);
  v1::RouteTable table = Table();
  stats->Overlay(table);
  EXPECT_EQ(BackendOf(table, kBackendA).health(), v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_EQ(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_HEALTHY);
}

// A report that waited in a proxy's queue while the control plane was away (age >= the recent
// window) is folded into the totals but judges no health, and its ejection counts only for what
// is left of it.
TEST(FleetStatsTest, AReportQueuedWhileTheControlPlaneWasAwayCountsInTotalsNotInHealth) {
  FakeClock clock;
  auto stats = NewStats(clock);  // a 60 s window
  // A failing and B ejected by the proxy, 5 minutes ago.
  v1::StreamLoadReportsRequest old_news =
      Report(1, {Stats(kBackendA, 2, 10), Stats(kBackendB, 10)});
  old_news.mutable_age()->set_seconds(300);
  old_news.mutable_backend_stats(1)->mutable_ejected_for()->set_seconds(30);
  MustFold(*stats, old_news, "proxy-1");
  EXPECT_EQ(Find(*stats, kBackendA)->issued, 12u);
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNKNOWN);
  EXPECT_EQ(stats->stale_reports(), 1u);
  v1::RouteTable table = Table();
  stats->Overlay(table);
  EXPECT_NE(BackendOf(table, kBackendA).health(), v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_NE(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);

  // The same, 20 s old: A's failures count, and 10 s of B's 30 s ejection are left.
  v1::StreamLoadReportsRequest recent = Report(2, {Stats(kBackendA, 2, 10), Stats(kBackendB, 10)});
  recent.mutable_age()->set_seconds(20);
  recent.mutable_backend_stats(1)->mutable_ejected_for()->set_seconds(30);
  MustFold(*stats, recent, "proxy-1");
  EXPECT_EQ(Find(*stats, kBackendA)->issued, 24u);
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_EQ(stats->stale_reports(), 1u);
  table = Table();
  stats->Overlay(table);
  EXPECT_EQ(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);
  clock.Advance(absl::Seconds(11));
  table = Table();
  stats->Overlay(table);
  EXPECT_NE(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);

  // The report a proxy collects when it reconnects after an hour away: just collected, but its
  // interval spans the hour. Its successes would otherwise bring A back on stale data.
  v1::StreamLoadReportsRequest after_outage = Report(3, {Stats(kBackendA, 500)});
  after_outage.mutable_interval()->set_seconds(3600);
  MustFold(*stats, after_outage, "proxy-1");
  EXPECT_EQ(Find(*stats, kBackendA)->issued, 524u);
  EXPECT_EQ(stats->stale_reports(), 2u);
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNHEALTHY);
}

TEST(FleetStatsTest, UnhealthyBackendComesBackOnlyAtTheHealthyThreshold) {
  FakeClock clock;
  FleetStatsOptions options;
  options.recovery_after = absl::Hours(1);  // only the success rate may bring it back here
  auto stats = NewStats(clock, options);
  MustFold(*stats, Report(1, {Stats(kBackendA, 2, 10)}), "proxy-1");
  ASSERT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNHEALTHY);

  clock.Advance(absl::Seconds(61));
  MustFold(*stats, Report(2, {Stats(kBackendA, 7, 3)}), "proxy-1");  // 0.7: above 0.5, below 0.8
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNHEALTHY);

  clock.Advance(absl::Seconds(61));
  MustFold(*stats, Report(3, {Stats(kBackendA, 8, 2)}), "proxy-1");  // 0.8
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_HEALTHY);
}

TEST(FleetStatsTest, HealthyBackendBetweenTheThresholdsStaysHealthy) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 10)}), "proxy-1");
  ASSERT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_HEALTHY);
  clock.Advance(absl::Seconds(61));
  MustFold(*stats, Report(2, {Stats(kBackendA, 6, 4)}), "proxy-1");  // 0.6
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_HEALTHY);
  clock.Advance(absl::Seconds(61));
  MustFold(*stats, Report(3, {Stats(kBackendA, 4, 6)}), "proxy-1");  // 0.4
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNHEALTHY);
}

TEST(FleetStatsTest, LowVolumeNeverFlipsHealth) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 0, 9)}), "proxy-1");  // 9 < min_requests
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNKNOWN);
  EXPECT_DOUBLE_EQ(stats->EffectiveWeight(kBackendA, 2.0), 2.0);

  MustFold(*stats, Report(1, {Stats(kBackendB, 10)}), "proxy-2");
  ASSERT_EQ(FleetHealth(*stats, kBackendB), v1::HEALTH_STATUS_HEALTHY);
  clock.Advance(absl::Seconds(61));
  MustFold(*stats, Report(2, {Stats(kBackendB, 0, 9)}), "proxy-2");
  EXPECT_EQ(FleetHealth(*stats, kBackendB), v1::HEALTH_STATUS_HEALTHY);
}

TEST(FleetStatsTest, UnhealthyBackendWithoutTrafficRecoversAfterRecoveryAfter) {
  FakeClock clock;
  FleetStatsOptions options;
  options.recovery_after = absl::Seconds(30);  // shorter than the window: failures still in it
  auto stats = NewStats(clock, options);
  MustFold(*stats, Report(1, {Stats(kBackendA, 0, 20)}), "proxy-1");
  ASSERT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNHEALTHY);
  // A report without traffic for A does not count as traffic.
  clock.Advance(absl::Seconds(20));
  MustFold(*stats, Report(2, {Stats(kBackendB, 1)}), "proxy-1");

  clock.Advance(absl::Seconds(9));
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_UNHEALTHY);
  clock.Advance(absl::Seconds(1));
  std::optional<BackendFleetStatus> a = Find(*stats, kBackendA);
  EXPECT_EQ(a->fleet_health, v1::HEALTH_STATUS_HEALTHY);
  // The failures that ejected it were cleared with the verdict, so they cannot eject it again.
  EXPECT_EQ(a->recent_completed, 0u);
  EXPECT_DOUBLE_EQ(a->health_factor, 1.0);
  MustFold(*stats, Report(3, {Stats(kBackendA, 1)}), "proxy-1");
  EXPECT_EQ(FleetHealth(*stats, kBackendA), v1::HEALTH_STATUS_HEALTHY);
}

// ---- effective weights ----------------------------------------------------------------------

TEST(FleetStatsTest, EffectiveWeightIsWeightTimesQuantisedSuccessRate) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 71, 29)}), "proxy-1");  // 0.71 -> 0.70
  EXPECT_NEAR(stats->EffectiveWeight(kBackendA, 3.0), 3.0 * 0.70, 1e-12);
  MustFold(*stats, Report(1, {Stats(kBackendB, 1, 99)}), "proxy-2");  // 0.01 -> floor 0.05
  EXPECT_NEAR(stats->EffectiveWeight(kBackendB, 3.0), 3.0 * 0.05, 1e-12);
  EXPECT_DOUBLE_EQ(stats->EffectiveWeight("never/reported/x", 3.0), 3.0);  // no data: factor 1
}

TEST(FleetStatsTest, EffectiveWeightReturnsToFullWhenTheWindowEmpties) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 6, 4)}), "proxy-1");
  EXPECT_NEAR(stats->EffectiveWeight(kBackendA, 1.0), 0.6, 1e-12);
  clock.Advance(absl::Seconds(61));
  // The window now holds 3 successes only: too few to move the factor, which is kept.
  MustFold(*stats, Report(2, {Stats(kBackendA, 3)}), "proxy-1");
  EXPECT_NEAR(stats->EffectiveWeight(kBackendA, 1.0), 0.6, 1e-12);
  clock.Advance(absl::Seconds(61));
  EXPECT_DOUBLE_EQ(stats->EffectiveWeight(kBackendA, 1.0), 1.0);
}

TEST(FleetStatsTest, SmallSuccessRateNoiseDoesNotChangeTheOverlay) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 93, 7)}), "proxy-1");  // 0.93 -> 0.95
  v1::RouteTable table = Table();
  EXPECT_TRUE(stats->Overlay(table));  // the first overlay always counts as a change
  EXPECT_NEAR(BackendOf(table, kBackendA).effective_weight(), 2.0 * 0.95, 1e-12);

  // 0.98 and 0.96 alone would round to 1.00 and 0.95: both are within the dead band of 0.95.
  for (uint64_t succeeded : {98, 96, 98}) {
    clock.Advance(absl::Seconds(61));
    MustFold(
        *stats,
        Report(stats->AckedSequence("proxy-1") + 1, {Stats(kBackendA, succeeded, 100 - succeeded)}),
        "proxy-1");
    v1::RouteTable next = Table();
    EXPECT_FALSE(stats->Overlay(next)) << "success rate " << succeeded;
    EXPECT_NEAR(BackendOf(next, kBackendA).effective_weight(), 2.0 * 0.95, 1e-12);
  }
}

TEST(FleetStatsTest, RealSuccessRateDropChangesTheOverlay) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 97, 3)}), "proxy-1");
  v1::RouteTable table = Table();
  stats->Overlay(table);
  clock.Advance(absl::Seconds(61));
  MustFold(*stats, Report(2, {Stats(kBackendA, 60, 40)}), "proxy-1");

  v1::RouteTable next = Table();
  EXPECT_TRUE(stats->Overlay(next));
  EXPECT_NEAR(BackendOf(next, kBackendA).effective_weight(), 2.0 * 0.60, 1e-12);
  EXPECT_EQ(BackendOf(next, kBackendA).health(), v1::HEALTH_STATUS_HEALTHY);
}

TEST(FleetStatsTest, OverlayWithoutNewDataReportsNoChange) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 50, 50)}), "proxy-1");
  v1::RouteTable first = Table();
  EXPECT_TRUE(stats->Overlay(first));
  v1::RouteTable second = Table();
  EXPECT_FALSE(stats->Overlay(second));
  // A table with a different set of backends is a change.
  v1::RouteTable smaller = Table();
  smaller.mutable_models(0)->mutable_backends()->RemoveLast();
  EXPECT_TRUE(stats->Overlay(smaller));
}

TEST(FleetStatsTest, OverlayLeavesBackendsWithoutDataUnknownAtTheirConfiguredWeight) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats("other/p9/x", 0, 50)}), "proxy-1");
  v1::RouteTable table = Table();
  stats->Overlay(table);
  EXPECT_EQ(BackendOf(table, kBackendA).health(), v1::HEALTH_STATUS_UNKNOWN);
  EXPECT_DOUBLE_EQ(BackendOf(table, kBackendA).effective_weight(), 2.0);
  EXPECT_EQ(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_UNKNOWN);
  EXPECT_DOUBLE_EQ(BackendOf(table, kBackendB).effective_weight(), 4.0);
}

// ---- probes and operator state --------------------------------------------------------------

TEST(FleetStatsTest, ProbeUnhealthyWinsOverFleetData) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 100), Stats(kBackendB, 100)}), "proxy-1");
  stats->SetProviderProbeHealth("p1", false);
  stats->SetBackendProbeHealth(kBackendB, false);
  v1::RouteTable table = Table();
  stats->Overlay(table);
  EXPECT_EQ(BackendOf(table, kBackendA).health(), v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_EQ(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_EQ(Find(*stats, kBackendA)->fleet_health, v1::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(Find(*stats, kBackendA)->probe_healthy, std::optional<bool>(false));

  stats->SetProviderProbeHealth("p1", std::nullopt);
  stats->SetBackendProbeHealth(kBackendB, true);
  v1::RouteTable next = Table();
  EXPECT_TRUE(stats->Overlay(next));
  EXPECT_EQ(BackendOf(next, kBackendA).health(), v1::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(BackendOf(next, kBackendB).health(), v1::HEALTH_STATUS_HEALTHY);
}

TEST(FleetStatsTest, PassingProbeMakesABackendWithoutDataHealthyButDoesNotClearAFleetOutlier) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendB, 0, 20)}), "proxy-1");
  stats->SetProviderProbeHealth("p1", true);
  stats->SetProviderProbeHealth("p2", true);
  v1::RouteTable table = Table();
  stats->Overlay(table);
  EXPECT_EQ(BackendOf(table, kBackendA).health(), v1::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);
}

TEST(FleetStatsTest, DrainingBackendStaysDraining) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 0, 20)}), "proxy-1");
  v1::RouteTable table = Table();
  table.mutable_models(0)->mutable_backends(0)->set_health(v1::HEALTH_STATUS_DRAINING);
  stats->Overlay(table);
  EXPECT_EQ(BackendOf(table, kBackendA).health(), v1::HEALTH_STATUS_DRAINING);
  EXPECT_NEAR(BackendOf(table, kBackendA).effective_weight(), 2.0 * 0.05, 1e-12);
}

// ---- proxy-reported ejections and 429 cooldowns (proxy_signals.h) ---------------------------

v1::BackendStats Ejected(const std::string& backend_id, absl::Duration remaining) {
  v1::BackendStats stats = Stats(backend_id, 0, 5);
  stats.mutable_ejected_for()->set_seconds(absl::ToInt64Seconds(remaining));
  return stats;
}

v1::BackendStats CooledDown(const std::string& backend_id, absl::Duration remaining) {
  v1::BackendStats stats = Stats(backend_id, 0, 0);
  stats.set_failed_5xx(0);
  stats.set_failed_429(1);
  stats.set_issued(1);
  stats.mutable_cooldown_for()->set_seconds(absl::ToInt64Seconds(remaining));
  return stats;
}

TEST(FleetStatsTest, OneProxysEjectionTakesTheBackendOutUntilItsTimeEnds) {
  FakeClock clock;
  auto stats = NewStats(clock);
  // Plenty of fleet successes: the window alone would keep B healthy.
  MustFold(*stats, Report(1, {Stats(kBackendA, 100), Stats(kBackendB, 100)}), "proxy-1");
  MustFold(*stats, Report(1, {Ejected(kBackendB, absl::Seconds(60))}), "proxy-2");
  v1::RouteTable table = Table();
  EXPECT_TRUE(stats->Overlay(table));
  EXPECT_EQ(BackendOf(table, kBackendA).health(), v1::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_EQ(Find(*stats, kBackendB)->health, v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_EQ(Find(*stats, kBackendB)->proxy_ejected_until, clock.now + absl::Seconds(60));
  EXPECT_EQ(stats->proxy_ejections_reported(), 1u);

  clock.Advance(absl::Seconds(59));
  v1::RouteTable still = Table();
  stats->Overlay(still);
  EXPECT_EQ(BackendOf(still, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);
  clock.Advance(absl::Seconds(1));
  v1::RouteTable over = Table();
  EXPECT_TRUE(stats->Overlay(over));
  EXPECT_NE(BackendOf(over, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);
}

TEST(FleetStatsTest, OnlyAProbeStartedAfterTheEjectionReportEndsItEarly) {
  FakeClock clock;
  auto stats = NewStats(clock);
  v1::RouteTable table = Table();
  stats->Overlay(table);  // the overlay tells which provider each backend is on
  const absl::Time probe_under_way = clock.now;
  clock.Advance(absl::Milliseconds(100));
  MustFold(*stats, Report(1, {Ejected(kBackendB, absl::Seconds(60))}), "proxy-1");
  stats->ProviderProbeSucceeded("p2",
                                probe_under_way);  // started before the report: proves nothing
  stats->ProviderProbeSucceeded("p1", clock.now + absl::Milliseconds(1));  // another provider
  v1::RouteTable ejected = Table();
  stats->Overlay(ejected);
  EXPECT_EQ(BackendOf(ejected, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);

  clock.Advance(absl::Seconds(1));
  stats->ProviderProbeSucceeded("p2", clock.now);
  v1::RouteTable back = Table();
  EXPECT_TRUE(stats->Overlay(back));
  EXPECT_NE(BackendOf(back, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);
  EXPECT_EQ(stats->proxy_ejections_cleared_by_probe(), 1u);
}

TEST(FleetStatsTest, ReportedEjectionIsCappedAtTenCircuitBreakerTimeouts) {
  FakeClock clock;
  v1::Settings settings;
  settings.mutable_circuit_breaker_timeout()->set_seconds(5);
  auto stats = NewStats(clock, FleetStatsOptions::FromSettings(settings));
  MustFold(*stats, Report(1, {Ejected(kBackendB, absl::Hours(5))}), "proxy-1");
  EXPECT_EQ(Find(*stats, kBackendB)->proxy_ejected_until, clock.now + absl::Seconds(50));
}

TEST(FleetStatsTest, CooldownGoesIntoTheTableUntilTheNamedTimeAndProbesDoNotEndIt) {
  FakeClock clock;
  auto stats = NewStats(clock);
  v1::RouteTable table = Table();
  stats->Overlay(table);
  EXPECT_FALSE(BackendOf(table, kBackendA).has_cooldown_until());
  MustFold(*stats, Report(1, {CooledDown(kBackendA, absl::Seconds(2))}), "proxy-1");
  // A shorter wait seen by another proxy does not shorten it.
  MustFold(*stats, Report(1, {CooledDown(kBackendA, absl::Seconds(1))}), "proxy-2");
  stats->ProviderProbeSucceeded("p1", clock.now + absl::Milliseconds(1));
  v1::RouteTable cooling = Table();
  EXPECT_TRUE(stats->Overlay(cooling));
  const v1::Backend& a = BackendOf(cooling, kBackendA);
  ASSERT_TRUE(a.has_cooldown_until());
  EXPECT_EQ(a.cooldown_until().seconds(), absl::ToUnixSeconds(clock.now + absl::Seconds(2)));
  EXPECT_NE(a.health(), v1::HEALTH_STATUS_UNHEALTHY);  // a cooldown is not a failure
  EXPECT_FALSE(BackendOf(cooling, kBackendB).has_cooldown_until());
  EXPECT_EQ(stats->proxy_cooldowns_reported(), 2u);

  v1::RouteTable same = Table();
  EXPECT_FALSE(stats->Overlay(same)) << "an unchanged cooldown must not make a new version";
  clock.Advance(absl::Seconds(2));
  v1::RouteTable over = Table();
  EXPECT_TRUE(stats->Overlay(over));
  EXPECT_FALSE(BackendOf(over, kBackendA).has_cooldown_until());
}

TEST(FleetStatsTest, DuplicateReportDoesNotRenewAnEjection) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Ejected(kBackendB, absl::Seconds(10))}), "proxy-1");
  clock.Advance(absl::Seconds(10));
  MustFold(*stats, Report(1, {Ejected(kBackendB, absl::Seconds(10))}), "proxy-1");  // re-sent
  v1::RouteTable table = Table();
  stats->Overlay(table);
  EXPECT_NE(BackendOf(table, kBackendB).health(), v1::HEALTH_STATUS_UNHEALTHY);
}

// ---- nodes coming and going -----------------------------------------------------------------

TEST(FleetStatsTest, ForgetNodeDropsItsInFlightButKeepsItsSequence) {
  FakeClock clock;
  auto stats = NewStats(clock);
  v1::BackendStats busy = Stats(kBackendA, 1);
  busy.set_in_flight(3);
  MustFold(*stats, Report(4, {busy}, 1000), "proxy-1");
  busy.set_in_flight(2);
  MustFold(*stats, Report(1, {busy}, 1000), "proxy-2");
  ASSERT_EQ(Find(*stats, kBackendA)->in_flight, 5u);

  stats->ForgetNode("proxy-1");
  EXPECT_EQ(Find(*stats, kBackendA)->in_flight, 2u);
  // It reconnects within node_retention and re-sends report 4: still a duplicate.
  clock.Advance(absl::Minutes(5));
  EXPECT_EQ(*stats->Fold(Report(4, {busy}, 1000), "proxy-1"), 4u);
  EXPECT_EQ(stats->duplicate_reports(), 1u);
  EXPECT_EQ(Find(*stats, kBackendA)->succeeded, 2u);
}

TEST(FleetStatsTest, ForgottenNodeSequenceExpiresAfterNodeRetention) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(9, {Stats(kBackendA, 1)}), "proxy-1");
  stats->ForgetNode("proxy-1");
  clock.Advance(absl::Minutes(10));
  // A new proxy under the same id, without interval_start to tell a restart apart.
  EXPECT_EQ(*stats->Fold(Report(1, {Stats(kBackendA, 1)}), "proxy-1"), 1u);
  EXPECT_EQ(Find(*stats, kBackendA)->succeeded, 2u);
}

TEST(FleetStatsTest, BackendMissingFromTheTableIsForgottenAfterBackendRetention) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats(kBackendA, 1), Stats("removed/p1/x", 1)}), "proxy-1");
  v1::RouteTable table = Table();
  stats->Overlay(table);
  EXPECT_TRUE(Find(*stats, "removed/p1/x").has_value());
  clock.Advance(absl::Minutes(10));
  stats->Overlay(table);
  EXPECT_FALSE(Find(*stats, "removed/p1/x").has_value());
  EXPECT_TRUE(Find(*stats, kBackendA).has_value());  // in the table: kept
}

TEST(FleetStatsTest, SnapshotListsReportedAndOverlaidBackendsSortedById) {
  FakeClock clock;
  auto stats = NewStats(clock);
  MustFold(*stats, Report(1, {Stats("zeta/p1/x", 1)}), "proxy-1");
  v1::RouteTable table = Table();
  stats->Overlay(table);
  std::vector<BackendFleetStatus> snapshot = stats->Snapshot();
  ASSERT_EQ(snapshot.size(), 3u);
  EXPECT_EQ(snapshot[0].backend_id, kBackendA);
  EXPECT_EQ(snapshot[0].provider_id, "p1");
  EXPECT_EQ(snapshot[0].effective_weight, std::optional<double>(2.0));
  EXPECT_EQ(snapshot[1].backend_id, kBackendB);
  EXPECT_EQ(snapshot[2].backend_id, "zeta/p1/x");
  EXPECT_FALSE(snapshot[2].effective_weight.has_value());
}

TEST(FleetStatsTest, ConcurrentFoldsFromManyNodesAddUp) {
  FakeClock clock;
  auto stats = NewStats(clock);
  constexpr int kNodes = 4;
  constexpr int kReports = 200;
  std::vector<std::thread> threads;
  for (int n = 0; n < kNodes; ++n) {
    threads.emplace_back([&stats, n] {
      for (int seq = 1; seq <= kReports; ++seq) {
        ASSERT_TRUE(
            stats->Fold(Report(seq, {Stats(kBackendA, 1, 1)}), absl::StrCat("proxy-", n)).ok());
        stats->Snapshot();
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(Find(*stats, kBackendA)->issued, uint64_t{2} * kNodes * kReports);
}

// ---- configuration --------------------------------------------------------------------------

TEST(FleetStatsTest, CreateRejectsInconsistentOptions) {
  auto clock = [] { return absl::UnixEpoch(); };
  FleetStatsOptions inverted;
  inverted.unhealthy_success_rate = 0.9;
  inverted.healthy_success_rate = 0.8;
  EXPECT_EQ(FleetStats::Create(inverted, clock).status().code(),
            absl::StatusCode::kInvalidArgument);
  FleetStatsOptions wide_buckets;
  wide_buckets.bucket_width = absl::Minutes(2);
  EXPECT_EQ(FleetStats::Create(wide_buckets, clock).status().code(),
            absl::StatusCode::kInvalidArgument);
  FleetStatsOptions no_volume;
  no_volume.min_requests = 0;
  EXPECT_EQ(FleetStats::Create(no_volume, clock).status().code(),
            absl::StatusCode::kInvalidArgument);
  FleetStatsOptions no_steps;
  no_steps.health_factor_steps = 0;
  EXPECT_EQ(FleetStats::Create(no_steps, clock).status().code(),
            absl::StatusCode::kInvalidArgument);
  FleetStatsOptions no_rest;
  no_rest.recovery_after = absl::ZeroDuration();
  EXPECT_EQ(FleetStats::Create(no_rest, clock).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FleetStats::Create({}, Clock()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(FleetStats::Create({}, clock).ok());
}

TEST(FleetStatsTest, RecoveryAfterFollowsTheCircuitBreakerTimeout) {
  v1::Settings settings;
  EXPECT_EQ(FleetStatsOptions::FromSettings(settings).recovery_after, absl::Seconds(60));
  settings.mutable_circuit_breaker_timeout()->set_seconds(90);
  EXPECT_EQ(FleetStatsOptions::FromSettings(settings).recovery_after, absl::Seconds(90));
}

// ---- metrics --------------------------------------------------------------------------------

TEST(FleetStatsTest, RegisterMetricsRendersFleetFamilies) {
  FakeClock clock;
  auto stats = NewStats(clock);
  metrics::Registry registry;
  ASSERT_TRUE(stats->RegisterMetrics(registry).ok());
  v1::BackendStats a = Stats(kBackendA, 2, 10);
  a.set_failed_429(1);
  a.set_issued(13);
  a.set_prompt_tokens(40);
  a.set_completion_tokens(9);
  a.set_in_flight(2);
  *a.mutable_latency() = Standard({{kLe1s, 2}}, 1.5);
  *a.mutable_ttfb() = Standard({{kLe500ms, 2}}, 0.4);
  MustFold(*stats, Report(1, {a}), "proxy-1");
  MustFold(*stats, Report(1, {a}), "proxy-1");  // duplicate

  const uint64_t snapshots_before = stats->snapshots_taken();
  const std::string text = registry.Render();
  // One scrape, one snapshot for every family.
  EXPECT_EQ(stats->snapshots_taken(), snapshots_before + 1);
  const std::string backend = std::string("backend=\"") + kBackendA + "\"";
  for (const std::string& line : {
           "berry_cp_backend_requests_total{" + backend + "} 13",
           "berry_cp_backend_succeeded_total{" + backend + "} 2",
           "berry_cp_backend_errors_total{" + backend + ",class=\"5xx\"} 10",
           "berry_cp_backend_errors_total{" + backend + ",class=\"429\"} 1",
           "berry_cp_backend_errors_total{" + backend + ",class=\"connect\"} 0",
           "berry_cp_backend_errors_total{" + backend + ",class=\"timeout\"} 0",
           "berry_cp_backend_errors_total{" + backend + ",class=\"stream_broken\"} 0",
           "berry_cp_backend_tokens_total{" + backend + ",kind=\"prompt\"} 40",
           "berry_cp_backend_tokens_total{" + backend + ",kind=\"completion\"} 9",
           "berry_cp_backend_in_flight{" + backend + "} 2",
           "berry_cp_backend_success_rate{" + backend + "} 0.1538461538461539",
           "berry_cp_backend_latency_seconds_count{" + backend + "} 2",
           "berry_cp_backend_latency_seconds_sum{" + backend + "} 1.5",
           "berry_cp_backend_latency_seconds_bucket{" + backend + ",le=\"0.5\"} 0",
           "berry_cp_backend_latency_seconds_bucket{" + backend + ",le=\"1\"} 2",
           "berry_cp_backend_latency_seconds_bucket{" + backend + ",le=\"+Inf\"} 2",
           "berry_cp_backend_ttfb_seconds_count{" + backend + "} 2",
           "berry_cp_backend_ttfb_seconds_bucket{" + backend + ",le=\"0.25\"} 0",
           "berry_cp_backend_ttfb_seconds_bucket{" + backend + ",le=\"0.5\"} 2",
           "berry_cp_backend_healthy{" + backend + "} 0",
           "berry_cp_backend_health_factor{" + backend + "} 0.15",
           std::string("berry_cp_duplicate_reports_total 1"),
           std::string("berry_cp_load_reports_total 1"),
       }) {
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << "missing: " << line << "\n" << text;
  }
  // The families and their types.
  for (const char* type : {
           "berry_cp_backend_requests_total counter",
           "berry_cp_backend_succeeded_total counter",
           "berry_cp_backend_errors_total counter",
           "berry_cp_backend_tokens_total counter",
           "berry_cp_backend_in_flight gauge",
           "berry_cp_backend_success_rate gauge",
           "berry_cp_backend_latency_seconds histogram",
           "berry_cp_backend_ttfb_seconds histogram",
           "berry_cp_backend_healthy gauge",
           "berry_cp_backend_health_factor gauge",
           "berry_cp_duplicate_reports_total counter",
           "berry_cp_load_reports_total counter",
           "berry_cp_stale_load_reports_total counter",
       }) {
    EXPECT_NE(text.find(std::string("# TYPE ") + type + "\n"), std::string::npos)
        << "missing: " << type;
  }
  EXPECT_EQ(std::count(text.begin(), text.end(), '#'), 2 * 13) << text;
  registry.Render();
  EXPECT_EQ(stats->snapshots_taken(), snapshots_before + 2);
  // Registering twice names taken families.
  EXPECT_EQ(stats->RegisterMetrics(registry).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace berry::control_plane::stats_test
