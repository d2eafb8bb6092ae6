#include "control-plane/stats/proxy_signals.h"

#include <algorithm>
#include <vector>

#include "common/strings/views.h"

namespace berry::control_plane {

void ProxySignals::Ejected(const std::string& backend_id, absl::Duration remaining,
                           absl::Time now) {
  if (remaining <= absl::ZeroDuration()) {
    return;
  }
  ++ejections_reported_;
  const absl::Time until = now + std::min(remaining, max_ejection_);
  auto [it, inserted] = ejections_.try_emplace(backend_id, Ejection{now, until});
  if (!inserted) {
    if (it->second.until <= now) {
      it->second.first_reported = now;  // the old one had run out: a new ejection
    }
    it->second.until = std::max(it->second.until, until);
  }
}

void ProxySignals::CooledDown(const std::string& backend_id, absl::Duration remaining,
                              absl::Time now) {
  if (remaining <= absl::ZeroDuration()) {
    return;
  }
  ++cooldowns_reported_;
  const absl::Time until = now + std::min(remaining, max_ejection_);
  absl::Time& current = cooldowns_[backend_id];
  current = std::max(current, until);
}

bool ProxySignals::ProbeSucceeded(std::string_view backend_id, absl::Time probe_started) {
  auto it = ejections_.find(strings::Absl(backend_id));
  if (it == ejections_.end() || it->second.first_reported >= probe_started ||
      it->second.until <= probe_started) {
    return false;
  }
  ejections_.erase(it);
  ++ejections_cleared_by_probe_;
  return true;
}

bool ProxySignals::EjectedAt(std::string_view backend_id, absl::Time now) const {
  return EjectionAt(backend_id, now).has_value();
}

std::optional<absl::Time> ProxySignals::EjectionAt(std::string_view backend_id,
                                                   absl::Time now) const {
  auto it = ejections_.find(strings::Absl(backend_id));
  if (it == ejections_.end() || it->second.until <= now) {
    return std::nullopt;
  }
  return it->second.until;
}

std::optional<absl::Time> ProxySignals::CooldownAt(std::string_view backend_id,
                                                   absl::Time now) const {
  auto it = cooldowns_.find(strings::Absl(backend_id));
  if (it == cooldowns_.end() || it->second <= now) {
    return std::nullopt;
  }
  return it->second;
}

void ProxySignals::Prune(absl::Time now) {
  absl::erase_if(ejections_, [now](const auto& entry) { return entry.second.until <= now; });
  absl::erase_if(cooldowns_, [now](const auto& entry) { return entry.second <= now; });
}

void ProxySignals::Forget(std::string_view backend_id) {
  ejections_.erase(strings::Absl(backend_id));
  cooldowns_.erase(strings::Absl(backend_id));
}

}  // namespace berry::control_plane
