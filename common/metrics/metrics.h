// Berry's Prometheus metrics on prometheus-cpp: a prometheus::Registry for the families whose
// children the hot path updates, scrape-time families (callbacks, or any prometheus::Collectable
// that builds whole MetricFamily values), and prometheus::TextSerializer for `/metrics` (served by
// Berry's own HTTP server; the library's civetweb Exposer is not used).
//
// The children are prometheus-cpp's own types (metrics::Counter is prometheus::Counter, and so
// on). metrics::Histogram is Berry's one histogram type: the proxy's request histograms, its
// per-backend load-report histograms and the control plane's fleet histograms all use it, with
// one bucket list, LatencyBuckets().
//
// Threads: registering families (`Registry::Add*`) and children (`Family<T>::Add`) take a mutex
// and allocate, so do them at startup or once per new label set, and keep the returned pointer
// (resolve handles when a route table is applied, never per request). `Counter::Increment`,
// `Gauge::Set/Increment/Decrement` are atomic operations; `Histogram::Observe` takes the
// histogram's own (uncontended unless two threads observe the same child) mutex; none of them
// looks a label up. `Registry::Render` may run on any thread concurrently with all of the above.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace berry::metrics {

// The Content-Type a `/metrics` response carries.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Berry's one bucket list: upper bounds in seconds for request latencies and times to first byte,
// 5 ms up to 60 s (`+Inf` is implicit). The proxy's histograms, its load reports and the control
// plane's fleet histograms all use it.
inline constexpr std::array<double, 13> kLatencyBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                           1,     2.5,  5,     10,   30,  60};
// kLatencyBuckets as the vector prometheus-cpp takes.
const std::vector<double>& LatencyBuckets();
// Kept for callers that want a copy.
inline std::vector<double> DefaultLatencyBuckets() { return LatencyBuckets(); }
// `count` bounds `start`, `start*factor`, `start*factor^2`, ...; needs start > 0, factor > 1,
// count >= 1.
absl::StatusOr<std::vector<double>> ExponentialBuckets(double start, double factor, int count);

using Counter = prometheus::Counter;
using Gauge = prometheus::Gauge;
using Histogram = prometheus::Histogram;

// A histogram's state read at one moment: non-cumulative counts (one per bound, then `+Inf`),
// their total and the sum of the observations.
struct HistogramCounts {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;
  uint64_t count = 0;
  double sum = 0.0;
};
HistogramCounts ReadHistogram(const Histogram& histogram);
// Adds non-cumulative `counts` (one more than the histogram's bounds) and `sum` to `histogram`.
// A size mismatch is a programming error (it aborts).
void AddToHistogram(Histogram& histogram, const std::vector<uint64_t>& counts, double sum);

namespace internal {
// The label names a family was registered with, in order.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::vector<std::string> label_names)
      : name_(std::move(name)), label_names_(std::move(label_names)) {}
  virtual ~FamilyBase() = default;
  const std::string& Name() const { return name_; }
  const std::vector<std::string>& LabelNames() const { return label_names_; }
  // The family with no children (prometheus-cpp leaves such a family out of Collect()).
  virtual prometheus::MetricFamily Empty() const = 0;

 protected:
  // InvalidArgument on a wrong count or invalid UTF-8; otherwise the prometheus label map.
  absl::StatusOr<prometheus::Labels> ToLabels(const std::vector<std::string>& label_values) const;

 private:
  const std::string name_;
  const std::vector<std::string> label_names_;
};
}  // namespace internal

// A family of counters, gauges or histograms sharing a name, help text and label names.
template <typename T>
class Family final : public internal::FamilyBase {
 public:
  Family(std::string name, std::string escaped_help, std::vector<std::string> label_names,
         prometheus::Family<T>& family, std::vector<double> bounds = {})
      : FamilyBase(std::move(name), std::move(label_names)),
        help_(std::move(escaped_help)),
        family_(family),
        bounds_(std::move(bounds)) {}

  prometheus::MetricFamily Empty() const override {
    return prometheus::MetricFamily{.name = Name(), .help = help_, .type = T::metric_type};
  }

  // The child for `label_values` (one per label name, in order, valid UTF-8), created on first
  // use; the same values always return the same child, whose address is stable until
  // Remove(child) or the end of the registry. Takes the family's mutex: keep the pointer rather
  // than calling this per request. InvalidArgument on a wrong count or invalid UTF-8.
  absl::StatusOr<T*> Add(const std::vector<std::string>& label_values) {
    absl::StatusOr<prometheus::Labels> labels = ToLabels(label_values);
    if (!labels.ok()) {
      return labels.status();
    }
    if constexpr (std::is_same_v<T, Histogram>) {
      return &family_.Add(*labels, bounds_);
    } else {
      return &family_.Add(*labels);
    }
  }

  // Drops `child` (from Add) and its series; the pointer is dangling afterwards, so only the
  // last holder of it may call this.
  void Remove(T* child) { family_.Remove(child); }

 private:
  const std::string help_;
  prometheus::Family<T>& family_;
  const std::vector<double> bounds_;  // histograms only
};

// One sample a callback family reports at scrape time.
struct GaugeSample {
  std::vector<std::string> label_values;  // one per label name of the family
  double value = 0.0;
};
using GaugeCallback = std::function<std::vector<GaugeSample>()>;

// Helpers for collectables that build their families at scrape time.
prometheus::MetricFamily MakeFamily(std::string name, const std::string& help,
                                    prometheus::MetricType type);
// A sample with `label_names` = `label_values` (same length) and no value set yet.
prometheus::ClientMetric MakeSample(const std::vector<std::string>& label_names,
                                    const std::vector<std::string>& label_values);
// Fills `sample`'s histogram from non-cumulative `counts` over `bounds` (one more count than
// bounds) and `sum`.
void SetHistogram(prometheus::ClientMetric& sample, const std::vector<double>& bounds,
                  const std::vector<uint64_t>& counts, double sum);

// Owns every family. Must outlive every pointer it hands out. Not copyable or movable.
class Registry {
 public:
  Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;
  ~Registry();

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

  // A gauge family computed at scrape time: `callback` runs on the rendering thread (so it must
  // not call into this registry), and returns one sample per distinct label-value tuple. A
  // sample with the wrong number of label values is a programming error and aborts the render.
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

  // A source of whole families built at scrape time (one Collect() per Render), which must
  // outlive every Render and emit exactly the families named in `family_names` (validated and
  // reserved here like any other name; families it emits under other names are dropped).
  absl::Status AddCollectable(const prometheus::Collectable& collectable,
                              std::vector<std::string> family_names);

  // Every family in the text exposition format 0.0.4 (prometheus::TextSerializer), families
  // ordered by name and children by labels (a family without children renders as its HELP and
  // TYPE lines alone).
  std::string Render() const;

 private:
  struct Source;
  // Validates a family's names and help and reserves the name.
  absl::Status Reserve(std::string_view name, std::string_view help,
                       const std::vector<std::string>& label_names, bool histogram);
  template <typename T>
  absl::StatusOr<Family<T>*> AddFamily(std::string_view name, std::string_view help,
                                       std::vector<std::string> label_names,
                                       std::vector<double> bounds = {});
  absl::Status AddCallback(std::string_view name, std::string_view help,
                           std::vector<std::string> label_names, GaugeCallback callback,
                           prometheus::MetricType type);

  prometheus::Registry registry_;
  mutable absl::Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<internal::FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<prometheus::Collectable>> owned_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Source>> sources_ ABSL_GUARDED_BY(mu_);
};

}  // namespace berry::metrics
