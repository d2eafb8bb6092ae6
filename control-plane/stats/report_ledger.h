// ReportLedger: the load reports of every connected proxy folded exactly once into per-backend
// totals since the control plane started (FleetStats, fleet_stats.h, documents the accounting:
// per-node sequences, restarts, duplicates, in-flight gauges and node retention).
//
// Not thread-safe: FleetStats guards it with its own mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "berry/v1/discovery.pb.h"
#include "common/load_report/attempt_counts.h"
#include "common/metrics/metrics.h"

namespace berry::control_plane {

// Attempt and token counts of one backend, summed over every proxy since the control plane
// started (the struct a proxy's load reporter counts with).
using load_report::AttemptCounts;

// One backend's totals, summed over every proxy.
struct BackendTotals : AttemptCounts {
  // Over metrics::kLatencyBuckets (see latency_histogram.h).
  std::unique_ptr<metrics::Histogram> latency =
      std::make_unique<metrics::Histogram>(metrics::LatencyBuckets());
  std::unique_ptr<metrics::Histogram> ttfb =
      std::make_unique<metrics::Histogram>(metrics::LatencyBuckets());
  absl::Time last_report = absl::InfinitePast();
};

class ReportLedger {
 public:
  explicit ReportLedger(absl::Duration node_retention) : node_retention_(node_retention) {}

  // The report's interval start, or InvalidArgument (with nothing folded) for an empty node id,
  // sequence 0, a backend without id, a malformed histogram or interval_start.
  static absl::StatusOr<std::optional<absl::Time>> Validate(
      const v1::StreamLoadReportsRequest& report, std::string_view node_id);

  struct FoldOutcome {
    uint64_t acked_sequence = 0;
    bool folded = false;  // false: a duplicate, ignored
  };
  // Folds a Validate()d report at `now`.
  FoldOutcome Fold(const v1::StreamLoadReportsRequest& report, std::string_view node_id,
                   std::optional<absl::Time> interval_start, absl::Time now);

  uint64_t AckedSequence(std::string_view node_id) const;
  void ForgetNode(std::string_view node_id, absl::Time now);

  const absl::flat_hash_map<std::string, BackendTotals>& backends() const { return backends_; }
  // Sum over nodes of each backend's latest in-flight gauge.
  absl::flat_hash_map<std::string, uint64_t> InFlight() const;
  // Drops the backend's totals and every node's in-flight gauge for it.
  void ForgetBackend(std::string_view backend_id);

  uint64_t duplicate_reports() const { return duplicate_reports_; }
  uint64_t folded_reports() const { return folded_reports_; }
  // Report histograms whose bounds could not be folded (latency_histogram.h).
  uint64_t incompatible_histograms() const { return incompatible_histograms_; }

 private:
  struct NodeState {
    uint64_t last_sequence = 0;
    std::optional<absl::Time> last_interval_start;
    absl::flat_hash_map<std::string, uint64_t> in_flight;  // backend id -> latest gauge
    std::optional<absl::Time> forgotten_at;
  };

  void PruneNodes(absl::Time now);

  const absl::Duration node_retention_;
  absl::flat_hash_map<std::string, BackendTotals> backends_;
  absl::flat_hash_map<std::string, NodeState> nodes_;
  uint64_t duplicate_reports_ = 0;
  uint64_t folded_reports_ = 0;
  uint64_t incompatible_histograms_ = 0;
};

}  // namespace berry::control_plane
