// Berry's Prometheus metrics: a small registry in the prometheus-cpp shape, rendered in the text
// exposition format 0.0.4 for `/metrics`.
//
// Threads: registering families (`Registry::Add*`) and children (`Family<T>::Add`) take a mutex
// and allocate, so do them at startup or once per new label set, and keep the returned pointer.
// `Counter::Increment`, `Gauge::Set/Increment/Decrement` and `Histogram::Observe` are relaxed
// atomic operations, safe from any thread, with no lock and no allocation: that is the hot path.
// `Registry::Render` may run on any thread concurrently with all of the above; it takes the
// registry's and each family's mutex (in that order), never a child's.
#pragma once

#include <atomic>
#include <cassert>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace berry::metrics {

// The Content-Type a `/metrics` response carries.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Histogram upper bounds for request latencies in seconds: 5 ms up to 60 s.
std::vector<double> DefaultLatencyBuckets();
// `count` bounds `start`, `start*factor`, `start*factor^2`, ...; needs start > 0, factor > 1,
// count >= 1.
absl::StatusOr<std::vector<double>> ExponentialBuckets(double start, double factor, int count);

namespace internal {
class SampleWriter;

// A child of a family: one labelled time series (or, for a histogram, one group of them).
class Metric {
 public:
  Metric() = default;
  Metric(const Metric&) = delete;
  Metric& operator=(const Metric&) = delete;
  virtual ~Metric() = default;

 private:
  friend class LabeledFamily;
  // Writes this child's samples; called while rendering.
  virtual void Collect(SampleWriter& writer) const = 0;
};

// What counters and gauges share: one atomic value, rendered as one sample.
class SingleValueMetric : public Metric {
 public:
  double Value() const { return value_.load(std::memory_order_relaxed); }

 protected:
  std::atomic<double> value_{0.0};

 private:
  void Collect(SampleWriter& writer) const override;
};
}  // namespace internal

// A monotonic total.
class Counter final : public internal::SingleValueMetric {
 public:
  // Adds `amount`. A negative or NaN amount would break monotonicity: it is a programming error,
  // asserted in debug builds and ignored in release builds.
  void Increment(double amount = 1.0) {
    assert(amount >= 0.0 && "a counter only goes up");
    if (amount >= 0.0) {
      value_.fetch_add(amount, std::memory_order_relaxed);
    }
  }
};

// A value that goes up and down.
class Gauge final : public internal::SingleValueMetric {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double amount = 1.0) { value_.fetch_add(amount, std::memory_order_relaxed); }
  void Decrement(double amount = 1.0) { value_.fetch_sub(amount, std::memory_order_relaxed); }
};

// Observations counted into fixed buckets. Rendered cumulatively as `_bucket{le="..."}` (the last
// one `le="+Inf"`), `_sum` and `_count`; `_count` always equals the `+Inf` bucket.
class Histogram final : public internal::Metric {
 public:
  // `bounds` are the family's validated, strictly ascending, finite upper bounds.
  explicit Histogram(std::shared_ptr<const std::vector<double>> bounds);
  // Counts `value` in the first bucket whose bound is >= value (NaN lands in `+Inf`).
  void Observe(double value);
  // Non-cumulative count of bucket `i`; `i == bounds.size()` is the `+Inf` bucket.
  uint64_t BucketCount(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  uint64_t Count() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  void Collect(internal::SampleWriter& writer) const override;

  std::shared_ptr<const std::vector<double>> bounds_;
  std::vector<std::atomic<uint64_t>> counts_;  // one per bound, then `+Inf`
  std::atomic<double> sum_{0.0};
};

namespace internal {
enum class Type { kCounter, kGauge, kHistogram };

// What every family has: a name, help text, a type and label names. Immutable.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> label_names);
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;
  virtual ~FamilyBase() = default;

  const std::string& Name() const { return name_; }
  const std::string& Help() const { return help_; }
  bool IsHistogram() const { return type_ == Type::kHistogram; }
  const std::vector<std::string>& LabelNames() const { return label_names_; }
  // Appends `# HELP`, `# TYPE` and every sample.
  void Render(std::string& out) const;

 private:
  virtual void CollectSamples(std::string& out) const = 0;

  const std::string name_;
  const std::string help_;
  const Type type_;
  const std::vector<std::string> label_names_;
};

// A family whose children are created on demand, one per distinct tuple of label values.
class LabeledFamily : public FamilyBase {
 public:
  using ChildFactory = std::function<std::unique_ptr<Metric>()>;
  LabeledFamily(std::string name, std::string help, Type type, std::vector<std::string> label_names,
                ChildFactory new_child);

 protected:
  absl::StatusOr<Metric*> AddChild(const std::vector<std::string>& label_values);

 private:
  void CollectSamples(std::string& out) const override;

  const ChildFactory new_child_;
  mutable absl::Mutex mu_;
  // Ordered by label values so that rendering is deterministic.
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> children_ ABSL_GUARDED_BY(mu_);
};
}  // namespace internal

// A family of counters, gauges or histograms sharing a name, help text and label names.
template <typename T>
class Family final : public internal::LabeledFamily {
 public:
  using LabeledFamily::LabeledFamily;

  // The child for `label_values` (one per label name, in order, valid UTF-8), created on first
  // use; the same values always return the same child, whose address is stable for the
  // registry's lifetime. Takes the family's mutex: keep the pointer rather than calling this per
  // request. InvalidArgument on a wrong count or invalid UTF-8.
  absl::StatusOr<T*> Add(const std::vector<std::string>& label_values) {
    absl::StatusOr<internal::Metric*> child = AddChild(label_values);
    if (!child.ok()) {
      return child.status();
    }
    return static_cast<T*>(*child);
  }
};

// One sample a gauge callback reports at scrape time.
struct GaugeSample {
  std::vector<std::string> label_values;  // one per label name of the family
  double value = 0.0;
};
using GaugeCallback = std::function<std::vector<GaugeSample>()>;

// Owns every family. Must outlive every pointer it hands out. Not copyable or movable.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Each `Add*` validates the metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), the label names
  // ([a-zA-Z_][a-zA-Z0-9_]*, not `__`-prefixed, distinct) and the help text (UTF-8), then
  // registers a family with a stable address. InvalidArgument on an invalid name, AlreadyExists
  // when the name is taken. Counter names are rendered as given: end them in `_total`.
  absl::StatusOr<Family<Counter>*> AddCounter(std::string_view name, std::string_view help,
                                              std::vector<std::string> label_names = {});
  absl::StatusOr<Family<Gauge>*> AddGauge(std::string_view name, std::string_view help,
                                          std::vector<std::string> label_names = {});
  // `bounds` must be finite and strictly ascending (the `+Inf` bucket is implicit); `le` is
  // reserved as a label name.
  absl::StatusOr<Family<Histogram>*> AddHistogram(std::string_view name, std::string_view help,
                                                  std::vector<std::string> label_names,
                                                  std::vector<double> bounds);

  // A gauge family computed at scrape time: `callback` runs on the rendering thread, with the
  // registry's mutex held (so it must not call into this registry), and returns one sample per
  // distinct label-value tuple. A sample with the wrong number of label values is a programming
  // error and aborts the render.
  absl::Status AddCallbackGauge(std::string_view name, std::string_view help,
                                std::vector<std::string> label_names, GaugeCallback callback);
  // The same for a single unlabelled value.
  absl::Status AddCallbackGauge(std::string_view name, std::string_view help,
                                std::function<double()> callback);
  // Counter families computed at scrape time, for totals kept elsewhere (the callback must
  // return monotonic values); same rules as AddCallbackGauge.
  absl::Status AddCallbackCounter(std::string_view name, std::string_view help,
                                  std::vector<std::string> label_names, GaugeCallback callback);
  absl::Status AddCallbackCounter(std::string_view name, std::string_view help,
                                  std::function<double()> callback);

  // Every family in the text exposition format 0.0.4, families ordered by name and children by
  // label values.
  std::string Render() const;

 private:
  template <typename T>
  absl::StatusOr<Family<T>*> AddFamily(std::string_view name, std::string_view help,
                                       std::vector<std::string> label_names, internal::Type type,
                                       internal::LabeledFamily::ChildFactory new_child);
  // Validates the family's names and help, then takes ownership of it.
  absl::StatusOr<internal::FamilyBase*> Register(std::unique_ptr<internal::FamilyBase> family);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<internal::FamilyBase>, std::less<>> families_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace berry::metrics
