#include "control-plane/stats/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace berry::control_plane {
absl::Status ValidateLatencyHistogram(const v1::LatencyHistogram& histogram) {
  const auto& bounds = histogram.bounds();
  const auto& counts = histogram.counts();
  for (int i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(absl::StrCat("histogram bound ", i, " is not finite"));
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram bounds are not strictly ascending at index ", i));
    }
  }
  if (!(bounds.empty() && counts.empty()) && counts.size() != bounds.size() + 1) {
    return absl::InvalidArgumentError(absl::StrCat("histogram has ", bounds.size(), " bounds and ",
                                                   counts.size(),
                                                   " counts; wants one count more than bounds"));
  }
  uint64_t total = 0;
  for (uint64_t c : counts) {
    if (__builtin_add_overflow(total, c, &total)) {
      return absl::InvalidArgumentError("histogram counts overflow 64 bits");
    }
  }
  if (total != histogram.count()) {
    return absl::InvalidArgumentError(
        absl::StrCat("histogram count is ", histogram.count(), " but its buckets hold ", total));
  }
  if (!std::isfinite(histogram.sum()) || histogram.sum() < 0) {
    return absl::InvalidArgumentError("histogram sum is negative or not finite");
  }
  return absl::OkStatus();
}

std::optional<double> HistogramQuantile(double q, const std::vector<double>& bounds,
                                        const std::vector<uint64_t>& counts) {
  if (counts.size() != bounds.size() + 1 || std::isnan(q)) {
    return std::nullopt;
  }
  uint64_t total = 0;
  for (uint64_t c : counts) {
    total += c;
  }
  if (total == 0) {
    return std::nullopt;
  }
  q = std::clamp(q, 0.0, 1.0);
  const double rank = q * static_cast<double>(total);
  uint64_t below = 0;  // observations in the buckets before `b`
  size_t b = 0;
  for (; b < counts.size(); ++b) {
    if (static_cast<double>(below + counts[b]) >= rank) {
      break;
    }
    below += counts[b];
  }
  if (b >= bounds.size()) {
    // The +Inf bucket (b == counts.size() cannot happen: the total always reaches the rank).
    if (bounds.empty()) {
      return std::nullopt;
    }
    return bounds.back();
  }
  if (b == 0 && bounds[0] <= 0) {
    return bounds[0];
  }
  const double lower = b == 0 ? 0.0 : bounds[b - 1];
  const double upper = bounds[b];
  if (counts[b] == 0) {
    // Only when rank == `below` exactly (q == 0): the bucket's lower edge.
    return lower;
  }
  return lower +
         (upper - lower) * (rank - static_cast<double>(below)) / static_cast<double>(counts[b]);
}

HistogramFold FoldLatencyHistogram(const v1::LatencyHistogram& delta, metrics::Histogram& into) {
  if (delta.count() == 0) {
    return HistogramFold::kEmpty;
  }
  const auto& standard = metrics::kLatencyBuckets;
  std::vector<uint64_t> counts(standard.size() + 1, 0);
  const auto& bounds = delta.bounds();
  for (int i = 0; i < delta.counts_size(); ++i) {
    // The delta's bucket i is (lower, upper]; it lands in the first standard bucket whose bound
    // is >= upper, exactly when the previous standard bound is <= lower.
    const double lower = i == 0 ? -std::numeric_limits<double>::infinity() : bounds[i - 1];
    const double upper = i < bounds.size() ? bounds[i] : std::numeric_limits<double>::infinity();
    const auto j = static_cast<size_t>(std::lower_bound(standard.begin(), standard.end(), upper) -
                                       standard.begin());
    if (j > 0 && standard[j - 1] > lower) {
      return HistogramFold::kIncompatible;
    }
    counts[j] += delta.counts(i);
  }
  metrics::AddToHistogram(into, counts, delta.sum());
  return HistogramFold::kMerged;
}

}  // namespace berry::control_plane
