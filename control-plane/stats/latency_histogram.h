// Latency histograms as the control plane keeps them: the per-interval LatencyHistogram deltas of
// every proxy, folded per backend into metrics::Histogram (Berry's one histogram type, over its
// one bucket list metrics::kLatencyBuckets), and read back as quantiles.
//
// Quantiles follow Prometheus' `histogram_quantile`: the rank q × count falls into the first
// bucket whose cumulative count reaches it, and the value is interpolated linearly between that
// bucket's lower bound (the previous upper bound, or 0 for the first bucket) and its upper bound.
// A rank in the `+Inf` bucket answers the highest finite bound (nothing better is known). So a
// quantile is an estimate whose error is at most one bucket width.
//
// Bucket bounds are set by the proxies and sent with every report; this version's proxies send
// kLatencyBuckets. A delta folds exactly when each of its buckets lies inside one bucket of
// kLatencyBuckets (equal bounds, or a finer set that contains them, as a later version might
// send); a delta with other bounds cannot be folded without inventing data: its histogram is
// dropped (FoldLatencyHistogram says so, and the fleet statistics count it).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "berry/v1/discovery.pb.h"
#include "common/metrics/metrics.h"

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

// What FoldLatencyHistogram() did with a delta.
enum class HistogramFold {
  kEmpty,         // no observations in the delta: nothing changed
  kMerged,        // counts added, re-bucketed into kLatencyBuckets when the delta was finer
  kIncompatible,  // some bucket of the delta straddles a bound of kLatencyBuckets: dropped
};

// Adds one validated (ValidateLatencyHistogram) delta to `into`, a histogram over
// metrics::kLatencyBuckets.
HistogramFold FoldLatencyHistogram(const v1::LatencyHistogram& delta, metrics::Histogram& into);

}  // namespace berry::control_plane
