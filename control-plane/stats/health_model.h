// HealthModel: the fleet's per-backend health from the outcomes the proxies report — a recent
// success-rate window, an outlier verdict with hysteresis, a quantised health factor — and the
// health checker's active-probe verdicts, combined by the documented precedence. FleetStats
// (fleet_stats.h, which documents the rules) feeds it from folded load reports.
//
// Not thread-safe: FleetStats guards it with its own mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "berry/v1/route_table.pb.h"
#include "control-plane/stats/fleet_options.h"

namespace berry::control_plane {

class HealthModel {
 public:
  // `options` validated by FleetStats::Create; `ring_size` = ceil(window / bucket_width).
  HealthModel(const FleetStatsOptions& options, int64_t ring_size);

  // One backend's part of a folded report at `now`: `succeeded` of `completed` attempts finished;
  // `traffic` when any attempt was issued or completed. Starts tracking the backend (factor 1,
  // no verdict) and re-evaluates it.
  void Record(const std::string& backend_id, uint64_t succeeded, uint64_t completed, bool traffic,
              absl::Time now);
  // Re-evaluates the verdict and factor at `now`; nothing for an untracked backend.
  void Evaluate(std::string_view backend_id, absl::Time now);
  // Live window at `now`: {succeeded, completed}; {0, 0} for an untracked backend.
  std::pair<uint64_t, uint64_t> Window(std::string_view backend_id, absl::Time now) const;
  // Outlier verdict from fleet data alone: UNKNOWN, HEALTHY or UNHEALTHY.
  v1::HealthStatus FleetVerdict(std::string_view backend_id) const;
  // The published health factor; 1 for an untracked backend.
  double Factor(std::string_view backend_id) const;
  bool Tracks(std::string_view backend_id) const;
  void Forget(std::string_view backend_id);

  // Active-probe verdicts; nullopt clears one.
  void SetProviderProbe(std::string_view provider_id, std::optional<bool> healthy);
  void SetBackendProbe(std::string_view backend_id, std::optional<bool> healthy);
  // The backend's or its provider's probe verdict (a failing one wins); nullopt without one.
  std::optional<bool> Probe(std::string_view backend_id, std::string_view provider_id) const;
  // Probe and fleet verdict combined (never DRAINING).
  v1::HealthStatus Combined(std::string_view backend_id, std::string_view provider_id) const;

 private:
  enum class Verdict : uint8_t { kUnknown, kHealthy, kUnhealthy };

  struct WindowBucket {
    int64_t index = -1;  // bucket number since the Unix epoch; -1 = unused
    uint64_t succeeded = 0;
    uint64_t completed = 0;
  };

  struct BackendHealth {
    std::vector<WindowBucket> ring;  // allocated on first use
    Verdict verdict = Verdict::kUnknown;
    uint32_t factor_steps = 0;  // published factor × steps; set when the state is created
    std::optional<absl::Time> last_traffic;
  };

  int64_t BucketIndex(absl::Time now) const;
  std::pair<uint64_t, uint64_t> WindowOf(const BackendHealth& backend, absl::Time now) const;
  void EvaluateOne(BackendHealth& backend, absl::Time now);

  const FleetStatsOptions options_;
  const int64_t ring_size_;
  absl::flat_hash_map<std::string, BackendHealth> backends_;
  absl::flat_hash_map<std::string, bool> provider_probe_;
  absl::flat_hash_map<std::string, bool> backend_probe_;
};

}  // namespace berry::control_plane
