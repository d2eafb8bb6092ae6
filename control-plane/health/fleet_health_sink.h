// FleetStatsHealthSink: hands the health checker's provider verdicts to FleetStats, which folds
// them into every backend of the provider (SetProviderProbeHealth; see its precedence rules).
//
// Threads: called on the health checker's thread; FleetStats may be called from any thread.
#pragma once

#include <optional>
#include <string_view>

#include "control-plane/health/health_checker.h"
#include "control-plane/stats/fleet_stats.h"

namespace berry::control_plane {

class FleetStatsHealthSink final : public HealthSink {
 public:
  // `fleet` must outlive the sink.
  explicit FleetStatsHealthSink(FleetStats& fleet) : fleet_(fleet) {}

  void OnProviderHealth(std::string_view provider_id, std::optional<bool> healthy) override {
    fleet_.SetProviderProbeHealth(provider_id, healthy);
  }

  void OnProbeSucceeded(std::string_view provider_id, absl::Time started) override {
    fleet_.ProviderProbeSucceeded(provider_id, started);
  }

 private:
  FleetStats& fleet_;
};

}  // namespace berry::control_plane
