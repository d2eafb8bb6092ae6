#include "common/metrics/metrics.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace berry::metrics::metrics_test {
namespace {

constexpr int kThreads = 4;
constexpr int kPerThread = 100000;

// Registration and child creation in these tests cannot fail; this unwraps and says so if not.
template <typename T>
T Ok(absl::StatusOr<T> value) {
  EXPECT_TRUE(value.ok()) << value.status();
  return *std::move(value);
}

template <typename F>
void RunOnThreads(F body) {
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back(body);
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
}

TEST(MetricsTest, CounterFamilyRendersHelpTypeAndOneLinePerChild) {
  Registry registry;
  Family<Counter>* requests =
      Ok(registry.AddCounter("berry_requests_total", "Requests relayed.", {"model", "code"}));
  Ok(requests->Add({"gpt-4", "200"}))->Increment(3);
  Ok(requests->Add({"gpt-4", "503"}))->Increment();

  EXPECT_EQ(registry.Render(),
            "# HELP berry_requests_total Requests relayed.\n"
            "# TYPE berry_requests_total counter\n"
            // prometheus-cpp orders labels by name.
            "berry_requests_total{code=\"200\",model=\"gpt-4\"} 3\n"
            "berry_requests_total{code=\"503\",model=\"gpt-4\"} 1\n");
}

TEST(MetricsTest, CounterNameIsRenderedAsRegisteredWithoutAddingTotal) {
  Registry registry;
  Ok(Ok(registry.AddCounter("berry_things", "Things."))->Add({}))->Increment(2);

  EXPECT_EQ(registry.Render(),
            "# HELP berry_things Things.\n"
            "# TYPE berry_things counter\n"
            "berry_things 2\n");
}

TEST(MetricsTest, GaugeFamilyRendersSetIncrementAndDecrement) {
  Registry registry;
  Family<Gauge>* ejected =
      Ok(registry.AddGauge("berry_backend_ejected", "1 when ejected.", {"backend"}));
  Ok(ejected->Add({"a"}))->Set(1);
  Gauge* b = Ok(ejected->Add({"b"}));
  b->Increment(0.75);
  b->Decrement();
  Ok(ejected->Add({"c"}))->Set(-2.5);

  EXPECT_EQ(registry.Render(),
            "# HELP berry_backend_ejected 1 when ejected.\n"
            "# TYPE berry_backend_ejected gauge\n"
            "berry_backend_ejected{backend=\"a\"} 1\n"
            "berry_backend_ejected{backend=\"b\"} -0.25\n"
            "berry_backend_ejected{backend=\"c\"} -2.5\n");
}

TEST(MetricsTest, HistogramRendersCountSumAndCumulativeBuckets) {
  Registry registry;
  Family<Histogram>* duration = Ok(registry.AddHistogram(
      "berry_request_duration_seconds", "Request latency.", {"model"}, {0.005, 0.1, 1}));
  Histogram* histogram = Ok(duration->Add({"m"}));
  histogram->Observe(0.001);
  histogram->Observe(0.1);  // a bound is inclusive: this lands in le="0.1"
  histogram->Observe(0.5);
  histogram->Observe(7);

  EXPECT_EQ(registry.Render(),
            "# HELP berry_request_duration_seconds Request latency.\n"
            "# TYPE berry_request_duration_seconds histogram\n"
            "berry_request_duration_seconds_count{model=\"m\"} 4\n"
            "berry_request_duration_seconds_sum{model=\"m\"} 7.601\n"
            "berry_request_duration_seconds_bucket{model=\"m\",le=\"0.005\"} 1\n"
            "berry_request_duration_seconds_bucket{model=\"m\",le=\"0.1\"} 2\n"
            "berry_request_duration_seconds_bucket{model=\"m\",le=\"1\"} 3\n"
            "berry_request_duration_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n");
}

TEST(MetricsTest, HistogramInfBucketEqualsCountIncludingOverflow) {
  Registry registry;
  Histogram* histogram = Ok(Ok(registry.AddHistogram("h_seconds", "H.", {}, {1, 2}))->Add({}));
  histogram->Observe(100);
  histogram->Observe(2);  // a bound is inclusive
  histogram->Observe(1.5);

  const HistogramCounts counts = ReadHistogram(*histogram);
  EXPECT_EQ(counts.counts, (std::vector<uint64_t>{0, 2, 1}));
  EXPECT_EQ(counts.count, 3U);
  const std::string text = registry.Render();
  EXPECT_NE(text.find("h_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_seconds_count 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_seconds_sum 103.5\n"), std::string::npos) << text;
}

TEST(MetricsTest, LabelValuesEscapeBackslashQuoteAndNewline) {
  Registry registry;
  Ok(Ok(registry.AddGauge("g", "G.", {"v"}))->Add({"a\\b\"c\nd"}))->Set(1);

  EXPECT_EQ(registry.Render(),
            "# HELP g G.\n"
            "# TYPE g gauge\n"
            "g{v=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(MetricsTest, HelpEscapesBackslashAndNewlineButNotQuote) {
  Registry registry;
  Ok(Ok(registry.AddGauge("g", "a\\b\n\"c\""))->Add({}))->Set(1);

  EXPECT_EQ(registry.Render(),
            "# HELP g a\\\\b\\n\"c\"\n"
            "# TYPE g gauge\n"
            "g 1\n");
}

TEST(MetricsTest, FamilyWithoutChildrenRendersOnlyHelpAndType) {
  Registry registry;
  Ok(registry.AddCounter("c_total", "C."));
  ASSERT_TRUE(
      registry.AddCallbackGauge("g", "G.", {"k"}, [] { return std::vector<GaugeSample>{}; }).ok());

  EXPECT_EQ(registry.Render(),
            "# HELP c_total C.\n# TYPE c_total counter\n"
            "# HELP g G.\n# TYPE g gauge\n");
}

// prometheus::TextSerializer's number format: 15 significant digits, which promtool and
// Prometheus parse.
TEST(MetricsTest, NumbersPrintInTheSerializersFormat) {
  Registry registry;
  Family<Gauge>* family = Ok(registry.AddGauge("g", "G.", {"k"}));
  const std::vector<std::pair<std::string, double>> values = {
      {"a", 3},
      {"b", 0.25},
      {"c", 123456789},
      {"d", 0.1 + 0.2},
      {"e", 1e20},
      {"f", std::numeric_limits<double>::infinity()},
      {"g", -std::numeric_limits<double>::infinity()},
      {"h", std::numeric_limits<double>::quiet_NaN()},
      {"i", -0.0},
  };
  for (const auto& [label, value] : values) {
    Ok(family->Add({label}))->Set(value);
  }

  EXPECT_EQ(registry.Render(),
            "# HELP g G.\n"
            "# TYPE g gauge\n"
            "g{k=\"a\"} 3\n"
            "g{k=\"b\"} 0.25\n"
            "g{k=\"c\"} 123456789\n"
            "g{k=\"d\"} 0.3\n"
            "g{k=\"e\"} 1e+20\n"
            "g{k=\"f\"} +Inf\n"
            "g{k=\"g\"} -Inf\n"
            "g{k=\"h\"} Nan\n"
            "g{k=\"i\"} -0\n");
}

TEST(MetricsTest, RenderOrdersFamiliesByNameAndChildrenByLabelValues) {
  Registry registry;
  Family<Gauge>* zeta = Ok(registry.AddGauge("zeta", "Z.", {"k"}));
  Family<Counter>* alpha = Ok(registry.AddCounter("alpha_total", "A."));
  Ok(zeta->Add({"y"}))->Set(2);
  Ok(zeta->Add({"x"}))->Set(1);
  Ok(alpha->Add({}))->Increment();

  EXPECT_EQ(registry.Render(),
            "# HELP alpha_total A.\n"
            "# TYPE alpha_total counter\n"
            "alpha_total 1\n"
            "# HELP zeta Z.\n"
            "# TYPE zeta gauge\n"
            "zeta{k=\"x\"} 1\n"
            "zeta{k=\"y\"} 2\n");
}

TEST(MetricsTest, SameLabelValuesReturnSameChild) {
  Registry registry;
  Family<Counter>* family = Ok(registry.AddCounter("c_total", "C.", {"a", "b"}));
  Counter* first = Ok(family->Add({"x", "y"}));
  Counter* again = Ok(family->Add({"x", "y"}));
  Counter* other = Ok(family->Add({"y", "x"}));

  EXPECT_EQ(first, again);
  EXPECT_NE(first, other);
}

TEST(MetricsTest, ConcurrentAddOfSameLabelsYieldsOneChild) {
  Registry registry;
  Family<Counter>* family = Ok(registry.AddCounter("c_total", "C.", {"a"}));
  RunOnThreads([family] {
    for (int i = 0; i < 1000; ++i) {
      Ok(family->Add({"x"}))->Increment();
    }
  });

  EXPECT_EQ(Ok(family->Add({"x"}))->Value(), kThreads * 1000);
}

TEST(MetricsTest, RejectsInvalidMetricNames) {
  Registry registry;
  for (const char* name : {"", "1abc", "a-b", "a b", "é"}) {
    EXPECT_EQ(registry.AddCounter(name, "C.").status().code(), absl::StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_TRUE(registry.AddGauge("ns:sub_name_1", "Colons are allowed.").ok());
}

TEST(MetricsTest, RejectsInvalidLabelNames) {
  Registry registry;
  const std::vector<std::vector<std::string>> invalid = {{""},    {"1a"},         {"a:b"},
                                                         {"a-b"}, {"__reserved"}, {"dup", "dup"}};
  for (const std::vector<std::string>& labels : invalid) {
    EXPECT_EQ(registry.AddGauge("g", "G.", labels).status().code(),
              absl::StatusCode::kInvalidArgument)
        << labels[0];
  }
  EXPECT_TRUE(registry.AddGauge("g", "G.", {"_ok", "a1"}).ok());
}

TEST(MetricsTest, ReservesLeLabelForHistogramsOnly) {
  Registry registry;
  EXPECT_EQ(registry.AddHistogram("h", "H.", {"le"}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry.AddGauge("g", "G.", {"le"}).ok());
}

TEST(MetricsTest, RejectsHistogramBoundsThatAreNotFiniteAndStrictlyAscending) {
  Registry registry;
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<std::vector<double>> invalid = {
      {2, 1}, {1, 1}, {1, inf}, {std::numeric_limits<double>::quiet_NaN()}};
  for (const std::vector<double>& bounds : invalid) {
    EXPECT_EQ(registry.AddHistogram("h", "H.", {}, bounds).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(MetricsTest, RejectsWrongLabelValueCount) {
  Registry registry;
  Family<Counter>* family = Ok(registry.AddCounter("c_total", "C.", {"a", "b"}));

  EXPECT_EQ(family->Add({"x"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(family->Add({"x", "y", "z"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MetricsTest, RejectsLabelValuesThatAreNotUtf8) {
  Registry registry;
  Family<Counter>* family = Ok(registry.AddCounter("c_total", "C.", {"a"}));

  EXPECT_EQ(family->Add({"\xff"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(family->Add({"\xed\xa0\x80"}).status().code(),  // a UTF-16 surrogate
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(family->Add({"caf\xc3\xa9 \xf0\x9f\x8d\x93"}).ok());
}

TEST(MetricsTest, RejectsDuplicateFamilyName) {
  Registry registry;
  ASSERT_TRUE(registry.AddCounter("c_total", "C.").ok());

  EXPECT_EQ(registry.AddGauge("c_total", "G.").status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(MetricsTest, CounterIgnoresNegativeIncrement) {
  Counter counter;
  counter.Increment(2);
  counter.Increment(-1);

  EXPECT_EQ(counter.Value(), 2);
}

TEST(MetricsTest, CallbackGaugeIsComputedAtEachRender) {
  Registry registry;
  double inflight = 2;
  ASSERT_TRUE(
      registry.AddCallbackGauge("berry_inflight_requests", "In flight.", [&] { return inflight; })
          .ok());
  ASSERT_TRUE(registry
                  .AddCallbackGauge("berry_route_table_version_info", "Route table.", {"version"},
                                    [] {
                                      return std::vector<GaugeSample>{{{"v2"}, 1}, {{"v1"}, 0}};
                                    })
                  .ok());
  EXPECT_NE(registry.Render().find("berry_inflight_requests 2\n"), std::string::npos);
  inflight = 5;

  EXPECT_EQ(registry.Render(),
            "# HELP berry_inflight_requests In flight.\n"
            "# TYPE berry_inflight_requests gauge\n"
            "berry_inflight_requests 5\n"
            "# HELP berry_route_table_version_info Route table.\n"
            "# TYPE berry_route_table_version_info gauge\n"
            "berry_route_table_version_info{version=\"v1\"} 0\n"
            "berry_route_table_version_info{version=\"v2\"} 1\n");
}

TEST(MetricsTest, CallbackCounterRendersWithCounterType) {
  Registry registry;
  double pushes = 7;
  ASSERT_TRUE(
      registry.AddCallbackCounter("berry_cp_config_pushes_total", "Pushes.", [&] { return pushes; })
          .ok());
  ASSERT_TRUE(registry
                  .AddCallbackCounter("berry_cp_backend_requests_total", "Requests.", {"backend"},
                                      [] {
                                        return std::vector<GaugeSample>{{{"b"}, 3}};
                                      })
                  .ok());

  EXPECT_EQ(registry.Render(),
            "# HELP berry_cp_backend_requests_total Requests.\n"
            "# TYPE berry_cp_backend_requests_total counter\n"
            "berry_cp_backend_requests_total{backend=\"b\"} 3\n"
            "# HELP berry_cp_config_pushes_total Pushes.\n"
            "# TYPE berry_cp_config_pushes_total counter\n"
            "berry_cp_config_pushes_total 7\n");
}

TEST(MetricsTest, CallbackGaugeValidatesNamesLikeOtherFamilies) {
  Registry registry;
  EXPECT_EQ(registry.AddCallbackGauge("bad name", "B.", [] { return 1.0; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddCallbackGauge("g", "G.", {"__x"}, [] { return std::vector<GaugeSample>{}; })
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsTest, ConcurrentCounterIncrementsSumExactly) {
  Registry registry;
  Counter* counter = Ok(Ok(registry.AddCounter("c_total", "C."))->Add({}));
  RunOnThreads([counter] {
    for (int i = 0; i < kPerThread; ++i) {
      counter->Increment();
    }
  });

  EXPECT_EQ(counter->Value(), kThreads * kPerThread);
}

TEST(MetricsTest, ConcurrentHistogramObservationsCountAndSumExactly) {
  Registry registry;
  Histogram* histogram =
      Ok(Ok(registry.AddHistogram("h_seconds", "H.", {}, DefaultLatencyBuckets()))->Add({}));
  RunOnThreads([histogram] {
    for (int i = 0; i < kPerThread; ++i) {
      histogram->Observe(i % 2 == 0 ? 0.5 : 2);  // halves and integers add up exactly
    }
  });

  const HistogramCounts counts = ReadHistogram(*histogram);
  EXPECT_EQ(counts.count, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(counts.sum, kThreads * kPerThread * 1.25);
}

TEST(MetricsTest, DefaultLatencyBucketsSpan5MillisecondsTo60Seconds) {
  const std::vector<double> bounds = DefaultLatencyBuckets();
  ASSERT_FALSE(bounds.empty());
  EXPECT_EQ(bounds.front(), 0.005);
  EXPECT_EQ(bounds.back(), 60);
  EXPECT_TRUE(std::is_sorted(bounds.begin(), bounds.end()));
}

TEST(MetricsTest, ExponentialBucketsMultiplyByFactor) {
  EXPECT_EQ(Ok(ExponentialBuckets(0.5, 2, 4)), (std::vector<double>{0.5, 1, 2, 4}));
  EXPECT_FALSE(ExponentialBuckets(0, 2, 4).ok());
  EXPECT_FALSE(ExponentialBuckets(1, 1, 4).ok());
  EXPECT_FALSE(ExponentialBuckets(1, 2, 0).ok());
  EXPECT_FALSE(ExponentialBuckets(1, 1e300, 3).ok());
}

// A scrape-time source of whole families, counting its Collect() calls.
class TwoFamilies final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    ++collects;
    prometheus::MetricFamily total =
        MakeFamily("src_total", "Source total.", prometheus::MetricType::Counter);
    total.metric.push_back(MakeSample({"backend"}, {"b"}));
    total.metric.back().counter.value = 4;
    prometheus::MetricFamily latency =
        MakeFamily("src_seconds", "Source latency.", prometheus::MetricType::Histogram);
    latency.metric.push_back(MakeSample({"backend"}, {"b"}));
    SetHistogram(latency.metric.back(), {0.5, 1}, {1, 0, 2}, 3.25);
    prometheus::MetricFamily stray =
        MakeFamily("stray", "Undeclared.", prometheus::MetricType::Gauge);
    stray.metric.push_back(MakeSample({}, {}));
    return {std::move(total), std::move(latency), std::move(stray)};
  }
  mutable int collects = 0;
};

TEST(MetricsTest, CollectableIsCollectedOncePerRenderAndEmitsOnlyDeclaredFamilies) {
  Registry registry;
  TwoFamilies source;
  ASSERT_TRUE(registry.AddCollectable(source, {"src_total", "src_seconds"}).ok());

  EXPECT_EQ(registry.Render(),
            "# HELP src_seconds Source latency.\n"
            "# TYPE src_seconds histogram\n"
            "src_seconds_count{backend=\"b\"} 3\n"
            "src_seconds_sum{backend=\"b\"} 3.25\n"
            "src_seconds_bucket{backend=\"b\",le=\"0.5\"} 1\n"
            "src_seconds_bucket{backend=\"b\",le=\"1\"} 1\n"
            "src_seconds_bucket{backend=\"b\",le=\"+Inf\"} 3\n"
            "# HELP src_total Source total.\n"
            "# TYPE src_total counter\n"
            "src_total{backend=\"b\"} 4\n");
  EXPECT_EQ(source.collects, 1);
}

TEST(MetricsTest, CollectableFamilyNamesAreValidatedAndReserved) {
  Registry registry;
  TwoFamilies source;
  ASSERT_TRUE(registry.AddCounter("src_total", "Taken.").ok());

  EXPECT_EQ(registry.AddCollectable(source, {"src_seconds", "src_total"}).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.AddCollectable(source, {"bad name"}).code(),
            absl::StatusCode::kInvalidArgument);
  // The failed call released "src_seconds".
  EXPECT_TRUE(registry.AddGauge("src_seconds", "Free again.").ok());
}

TEST(MetricsTest, ReadAndAddHistogramRoundTripNonCumulativeCounts) {
  Histogram histogram(LatencyBuckets());
  histogram.Observe(0.004);
  histogram.Observe(100);
  std::vector<uint64_t> more(LatencyBuckets().size() + 1, 0);
  more[1] = 2;  // le=0.01
  AddToHistogram(histogram, more, 0.015);

  const HistogramCounts counts = ReadHistogram(histogram);
  EXPECT_EQ(counts.bounds, LatencyBuckets());
  ASSERT_EQ(counts.counts.size(), LatencyBuckets().size() + 1);
  EXPECT_EQ(counts.counts[0], 1U);
  EXPECT_EQ(counts.counts[1], 2U);
  EXPECT_EQ(counts.counts.back(), 1U);
  EXPECT_EQ(counts.count, 4U);
  EXPECT_DOUBLE_EQ(counts.sum, 100.019);
}

// Runs `command`, returning its exit status and combined stdout/stderr.
std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return {-1, "popen failed"};
  }
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) {
    output.append(buf, n);
  }
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(MetricsTest, PromtoolAcceptsRenderedOutputWithoutLintWarnings) {
  const std::string promtool = "/usr/bin/promtool";
  if (!std::filesystem::exists(promtool)) {
    FAIL() << promtool << " is missing; install Debian's `prometheus` package "
           << "(scripts/install-deps does, or: sudo apt-get install prometheus)";
  }
  Registry registry;
  Family<Counter>* requests =
      Ok(registry.AddCounter("berry_requests_total", "Requests relayed, by \"model\"\nand backend.",
                             {"model", "backend", "code"}));
  Ok(requests->Add({"gpt-4", "openai", "200"}))->Increment(41);
  Ok(requests->Add({"we\"ird\\mo\ndel", "caf\xc3\xa9", "503"}))->Increment();
  Family<Histogram>* duration =
      Ok(registry.AddHistogram("berry_request_duration_seconds", "Request latency.",
                               {"model", "backend"}, DefaultLatencyBuckets()));
  Ok(duration->Add({"gpt-4", "openai"}))->Observe(0.3);
  Ok(duration->Add({"we\"ird\\mo\ndel", "b"}))->Observe(75);
  Ok(Ok(registry.AddGauge("berry_backend_ejected", "1 while ejected.", {"backend"}))
         ->Add({"openai"}))
      ->Set(1);
  ASSERT_TRUE(
      registry.AddCallbackGauge("berry_inflight_requests", "In flight.", [] { return 3.0; }).ok());
  const std::string path = testing::TempDir() + "/berry_metrics_promtool.txt";
  std::ofstream(path) << registry.Render();

  const auto [status, output] = RunCommand(promtool + " check metrics < " + path);

  EXPECT_EQ(status, 0) << output;
  EXPECT_EQ(output, "") << "rendered:\n" << registry.Render();
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace berry::metrics::metrics_test
