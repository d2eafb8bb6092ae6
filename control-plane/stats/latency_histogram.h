// Latency histograms as the control plane keeps them: the per-interval LatencyHistogram deltas of
// every proxy, merged per backend, and read back as quantiles.
//
// Quantiles follow Prometheus' `histogram_quantile`: the rank q × count falls into the first
// bucket whose cumulative count reaches it, and the value is interpolated linearly between that
// bucket's lower bound (the previous upper bound, or 0 for the first bucket) and its upper bound.
// A rank in the `+Inf` bucket answers the highest finite bound (nothing better is known). So a
// quantile is an estimate whose error is at most one bucket width.
//
// Bucket bounds are set by the proxies and sent with every report. Merging is exact when the
// bounds are equal, and also when one set of bounds contains the other: both then fold into the
// coarser set (each finer bucket lies inside exactly one coarser bucket), so proxies of two
// versions with refined buckets still merge. Bounds that neither equal nor contain each other
// cannot be merged without inventing data: the newer histogram replaces the backend's history
// (counted by MergedHistogram::resets()).
//
// Not thread-safe: FleetStats guards its histograms with its own mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "berry/v1/discovery.pb.h"

namespace berry::control_plane {

// OK when `histogram` is well formed: bounds finite and strictly ascending, one more count than
// bounds (or no bounds and no counts at all for an empty histogram), `count` equal to the sum of
// `counts`, `sum` finite and not negative. InvalidArgument saying what is wrong otherwise.
absl::Status ValidateLatencyHistogram(const v1::LatencyHistogram& histogram);

// The q-quantile (0 <= q <= 1) of non-cumulative bucket `counts` (one more than `bounds`, the
// last being `+Inf`), with Prometheus `histogram_quantile` semantics (see above). nullopt when
// there are no observations, or when there is no finite bound to answer with.
std::optional<double> HistogramQuantile(double q, const std::vector<double>& bounds,
                                        const std::vector<uint64_t>& counts);

// One backend's latency histogram since the control plane started, summed over every proxy.
class MergedHistogram {
 public:
  // What Fold() did with a delta.
  enum class FoldResult {
    kEmpty,   // no observations in the delta: nothing changed
    kMerged,  // counts added (bounds equal, or one set contained the other)
    kReset,   // incompatible bounds: the delta replaced the history
  };

  // Adds one validated (ValidateLatencyHistogram) delta.
  FoldResult Fold(const v1::LatencyHistogram& delta);

  // See HistogramQuantile().
  std::optional<double> Quantile(double q) const { return HistogramQuantile(q, bounds_, counts_); }

  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative, one more than bounds() (empty before the first observation).
  const std::vector<uint64_t>& counts() const { return counts_; }
  uint64_t count() const { return count_; }
  // Seconds.
  double sum() const { return sum_; }
  // How many times incompatible bounds replaced the history.
  uint64_t resets() const { return resets_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0.0;
  uint64_t resets_ = 0;
};

}  // namespace berry::control_plane
