// ProxySignals: what proxies tell the control plane about a backend the moment it happens, as
// opposed to the counts folded into the health window (health_model.h):
//
//   - an ejection (BackendStats.ejected_for): the proxy's outlier detector saw
//     circuit_breaker_failure_threshold consecutive failures and took the backend out for a time.
//     Rule: the backend is out of rotation fleet-wide (UNHEALTHY in the published table) from the
//     report until the latest ejection time any proxy reported ends, or until an active probe of
//     its provider that *started after* the report succeeds, whichever comes first. A probe that
//     was already under way when the report arrived proves nothing about the failure and clears
//     nothing. The reported time is capped at `max_ejection` (10 x circuit_breaker_timeout).
//   - a 429 cooldown (BackendStats.cooldown_for): the provider named a time to wait. The backend
//     is cooled down fleet-wide (Backend.cooldown_until in the published table) until the latest
//     time any proxy reported; probes do not end it (the provider said when). Capped likewise.
//
// Durations are turned into deadlines on the control plane's clock when the report is folded,
// so proxies' clocks never matter; the published cooldown_until is a wall-clock instant that the
// proxies map onto their own monotonic clocks (skew between hosts shifts it by the skew).
//
// Not thread-safe: FleetStats guards it with its own mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace berry::control_plane {

class ProxySignals {
 public:
  explicit ProxySignals(absl::Duration max_ejection) : max_ejection_(max_ejection) {}

  // A proxy ejected `backend_id` for `remaining` as of `now`.
  void Ejected(const std::string& backend_id, absl::Duration remaining, absl::Time now);
  // A proxy saw a 429 from `backend_id` naming a wait of `remaining` as of `now`.
  void CooledDown(const std::string& backend_id, absl::Duration remaining, absl::Time now);
  // A probe of `backend_id`'s provider that started at `probe_started` succeeded: ends an
  // ejection reported before that time. Returns whether one ended.
  bool ProbeSucceeded(std::string_view backend_id, absl::Time probe_started);

  // Whether a reported ejection keeps the backend out at `now`.
  bool EjectedAt(std::string_view backend_id, absl::Time now) const;
  // The cooldown deadline in force at `now`, if any.
  std::optional<absl::Time> CooldownAt(std::string_view backend_id, absl::Time now) const;
  // The ejection deadline in force at `now`, if any (for /backends).
  std::optional<absl::Time> EjectionAt(std::string_view backend_id, absl::Time now) const;

  // Drops entries that have run out by `now`.
  void Prune(absl::Time now);
  void Forget(std::string_view backend_id);

  // Since start, for /metrics.
  uint64_t ejections_reported() const { return ejections_reported_; }
  uint64_t cooldowns_reported() const { return cooldowns_reported_; }
  uint64_t ejections_cleared_by_probe() const { return ejections_cleared_by_probe_; }

 private:
  struct Ejection {
    absl::Time first_reported;  // of the ejection in force: a probe must start after it
    absl::Time until;
  };

  const absl::Duration max_ejection_;
  absl::flat_hash_map<std::string, Ejection> ejections_;
  absl::flat_hash_map<std::string, absl::Time> cooldowns_;
  uint64_t ejections_reported_ = 0;
  uint64_t cooldowns_reported_ = 0;
  uint64_t ejections_cleared_by_probe_ = 0;
};

}  // namespace berry::control_plane
