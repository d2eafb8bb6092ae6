#include "control-plane/stats/report_ledger.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/strings/views.h"
#include "control-plane/stats/latency_histogram.h"

namespace berry::control_plane {
absl::StatusOr<std::optional<absl::Time>> ReportLedger::Validate(
    const v1::StreamLoadReportsRequest& report, std::string_view node_id) {
  if (node_id.empty()) {
    return absl::InvalidArgumentError("load report without a node id");
  }
  if (report.sequence() == 0) {
    return absl::InvalidArgumentError("load report sequence must start at 1");
  }
  std::optional<absl::Time> interval_start;
  if (report.has_interval_start()) {
    const auto& start = report.interval_start();
    if (start.nanos() < 0 || start.nanos() > 999'999'999) {
      return absl::InvalidArgumentError("load report interval_start has nanos out of range");
    }
    interval_start = absl::FromUnixSeconds(start.seconds()) + absl::Nanoseconds(start.nanos());
  }
  for (const v1::BackendStats& stats : report.backend_stats()) {
    if (stats.backend_id().empty()) {
      return absl::InvalidArgumentError("load report has backend stats without a backend id");
    }
    for (const auto& [name, histogram] :
         {std::pair<const char*, const v1::LatencyHistogram*>{"latency", &stats.latency()},
          {"ttfb", &stats.ttfb()}}) {
      if (absl::Status status = ValidateLatencyHistogram(*histogram); !status.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "load report for backend ", stats.backend_id(), ": ", name, ": ", status.message()));
      }
    }
  }
  return interval_start;
}

void ReportLedger::PruneNodes(absl::Time now) {
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    const NodeState& node = it->second;
    if (node.forgotten_at.has_value() && now - *node.forgotten_at >= node_retention_) {
      nodes_.erase(it++);
    } else {
      ++it;
    }
  }
}

ReportLedger::FoldOutcome ReportLedger::Fold(const v1::StreamLoadReportsRequest& report,
                                             std::string_view node_id,
                                             std::optional<absl::Time> interval_start,
                                             absl::Time now) {
  PruneNodes(now);
  NodeState& node = nodes_[std::string(node_id)];
  if (report.sequence() <= node.last_sequence) {
    const bool restarted = interval_start.has_value() && node.last_interval_start.has_value() &&
                           *interval_start > *node.last_interval_start;
    if (!restarted) {
      ++duplicate_reports_;
      return {.acked_sequence = node.last_sequence, .folded = false};
    }
    // A new process under the same node id: what the old one had in flight is gone with it.
    node.in_flight.clear();
  }
  node.last_sequence = report.sequence();
  if (interval_start.has_value()) {
    node.last_interval_start = interval_start;
  }
  node.forgotten_at.reset();
  ++folded_reports_;

  for (const v1::BackendStats& stats : report.backend_stats()) {
    BackendTotals& backend = backends_[stats.backend_id()];
    backend.Add(stats);
    for (const auto& [delta, into] : {std::pair{&stats.latency(), backend.latency.get()},
                                      {&stats.ttfb(), backend.ttfb.get()}}) {
      if (FoldLatencyHistogram(*delta, *into) == HistogramFold::kIncompatible) {
        ++incompatible_histograms_;
      }
    }
    if (stats.in_flight() > 0) {
      node.in_flight[stats.backend_id()] = stats.in_flight();
    } else {
      node.in_flight.erase(stats.backend_id());
    }
    backend.last_report = now;
  }
  return {.acked_sequence = node.last_sequence, .folded = true};
}

uint64_t ReportLedger::AckedSequence(std::string_view node_id) const {
  auto it = nodes_.find(strings::Absl(node_id));
  return it == nodes_.end() ? 0 : it->second.last_sequence;
}

void ReportLedger::ForgetNode(std::string_view node_id, absl::Time now) {
  auto it = nodes_.find(strings::Absl(node_id));
  if (it == nodes_.end()) {
    return;
  }
  it->second.in_flight.clear();
  it->second.forgotten_at = now;
  PruneNodes(now);
}

absl::flat_hash_map<std::string, uint64_t> ReportLedger::InFlight() const {
  absl::flat_hash_map<std::string, uint64_t> in_flight;
  for (const auto& [node_id, node] : nodes_) {
    for (const auto& [backend_id, value] : node.in_flight) {
      in_flight[backend_id] += value;
    }
  }
  return in_flight;
}

void ReportLedger::ForgetBackend(std::string_view backend_id) {
  for (auto& [node_id, node] : nodes_) {
    node.in_flight.erase(strings::Absl(backend_id));
  }
  backends_.erase(strings::Absl(backend_id));
}

}  // namespace berry::control_plane
