#include "control-plane/stats/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <utility>

#include "absl/strings/str_cat.h"

namespace berry::control_plane {
namespace {

// Re-buckets `counts` (over `fine` bounds) into `coarse` bounds, which must be a subset of
// `fine`: every fine bucket then lies inside exactly one coarse bucket, so this loses nothing but
// resolution.
std::vector<uint64_t> Coarsen(const std::vector<double>& fine, const std::vector<uint64_t>& counts,
                              const std::vector<double>& coarse) {
  std::vector<uint64_t> out(coarse.size() + 1, 0);
  for (size_t i = 0; i < counts.size(); ++i) {
    size_t j = coarse.size();  // +Inf
    if (i < fine.size()) {
      j = static_cast<size_t>(std::lower_bound(coarse.begin(), coarse.end(), fine[i]) -
                              coarse.begin());
    }
    out[j] += counts[i];
  }
  return out;
}

bool Contains(const std::vector<double>& superset, const std::vector<double>& subset) {
  return std::includes(superset.begin(), superset.end(), subset.begin(), subset.end());
}

}  // namespace

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

MergedHistogram::FoldResult MergedHistogram::Fold(const v1::LatencyHistogram& delta) {
  if (delta.count() == 0) {
    // Bounds alone say nothing: they must not reset a history they could not be merged with.
    return FoldResult::kEmpty;
  }
  std::vector<double> bounds(delta.bounds().begin(), delta.bounds().end());
  std::vector<uint64_t> counts(delta.counts().begin(), delta.counts().end());
  if (counts_.empty()) {
    bounds_ = std::move(bounds);
    counts_ = std::move(counts);
    count_ = delta.count();
    sum_ = delta.sum();
    return FoldResult::kMerged;
  }
  FoldResult result = FoldResult::kMerged;
  if (bounds == bounds_) {
    // The common case: every proxy uses the same buckets.
  } else if (Contains(bounds, bounds_)) {
    counts = Coarsen(bounds, counts, bounds_);
  } else if (Contains(bounds_, bounds)) {
    counts_ = Coarsen(bounds_, counts_, bounds);
    bounds_ = std::move(bounds);
  } else {
    bounds_ = std::move(bounds);
    counts_.assign(counts.size(), 0);
    count_ = 0;
    sum_ = 0;
    ++resets_;
    result = FoldResult::kReset;
  }
  for (size_t i = 0; i < counts_.size(); ++i) {
    counts_[i] += counts[i];
  }
  count_ += delta.count();
  sum_ += delta.sum();
  return result;
}

}  // namespace berry::control_plane
