// The route table a proxy serves from, compiled for the request path, and how workers pick up a
// new one. A RouteGeneration bundles everything built from one RouteTable: the selection
// snapshot with its runtime state, the client directory, rate limiter, outlier detector, parsed
// upstream endpoints and interned user tags. State that must survive a table change (ejections,
// in-flight counts, latency EWMAs, rate-limit windows, failure counters) is carried over by id.
//
// Threads: Apply() may be called from any thread (SIGHUP reload, the control-plane client);
// applies are serialised. Workers call generation() on every request — one atomic load — and
// Current() only when it changed, so the request path takes no lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "berry/v1/route_table.pb.h"
#include "common/route_table/dialect.h"
#include "common/selection/runtime_state.h"
#include "common/selection/snapshot.h"
#include "data-plane/auth/client_directory.h"
#include "data-plane/auth/rate_limiter.h"
#include "data-plane/outlier/outlier_detector.h"
#include "data-plane/proxy/load_stats.h"
#include "data-plane/quota/fleet_limits.h"
#include "data-plane/upstream/upstream_pool.h"

namespace berry::proxy {

// Per provider, what an upstream request needs besides the body.
struct ProviderRoute {
  upstream::Endpoint endpoint;
  route_table::Dialect dialect = route_table::Dialect::kOpenAi;
  std::string authorization;  // "Bearer <api_key>" (OpenAI dialect only); secret
  // The configured headers; for the Anthropic dialect also `x-api-key` (secret) and
  // `anthropic-version`, for the Gemini dialect `x-goog-api-key` (secret), unless configured.
  std::vector<std::pair<std::string, std::string>> headers;
};

struct RouteGeneration {
  uint64_t generation = 0;
  const std::string& version() const { return runtime->snapshot().table().version_info(); }
  const selection::Snapshot& snapshot() const { return runtime->snapshot(); }
  const berry::v1::Settings& settings() const { return snapshot().table().settings(); }

  std::shared_ptr<const selection::RuntimeState> runtime;
  std::shared_ptr<const auth::ClientDirectory> clients;
  std::shared_ptr<auth::RateLimiter> limiter;
  // Managed mode: the fleet-wide limits' leases (used instead of `limiter`); null standalone.
  std::shared_ptr<const fleet::FleetLeases> fleet;
  // Provider and backend budgets: `fleet` in managed mode; standalone, leases of budgets only
  // spent on a local share of the whole budget. Null when no backend has a budget.
  std::shared_ptr<const fleet::FleetLeases> budgets;
  std::shared_ptr<const outlier::OutlierDetector> outliers;
  std::shared_ptr<const LoadStats> load;
  // By provider position in the table.
  std::vector<ProviderRoute> providers;
  // By CompiledBackend::index(): position in `providers`.
  std::vector<uint32_t> backend_provider;
  // By Client::index(); the anonymous client (open gateway) uses `untagged`.
  std::vector<selection::UserTags> user_tags;
  selection::UserTags untagged;

  const ProviderRoute& provider_for(const selection::CompiledBackend& backend) const {
    return providers[backend_provider[backend.index()]];
  }
};

class RouteStore {
 public:
  // Egress allowlist: when not empty, a table with a provider on any other host is refused
  // (a compromised or mistaken control plane cannot point this proxy's traffic, and its keys,
  // anywhere else). Set before the first Apply.
  void set_allowed_upstream_hosts(std::vector<std::string> hosts) {
    allowed_upstream_hosts_ = std::move(hosts);
  }

  // Managed mode: per-user limits are held fleet-wide through the control plane
  // (fleet_limits.h) instead of per proxy. Set before the first Apply.
  void set_fleet_status(std::shared_ptr<fleet::FleetStatus> status) {
    fleet_status_ = std::move(status);
  }

  // Builds a generation from `table` and publishes it. On error nothing changes and the status
  // names what is wrong (the caller logs it, or NACKs it in managed mode).
  absl::Status Apply(berry::v1::RouteTable table);

  // After SIGTERM the proxy keeps serving for --shutdown-delay-seconds but answers /readyz with
  // 503, so load balancers and Kubernetes endpoints stop sending it new connections before it
  // drains. One-way: a proxy never becomes ready again after this.
  void MarkShuttingDown() { shutting_down_.store(true, std::memory_order_release); }
  bool shutting_down() const { return shutting_down_.load(std::memory_order_acquire); }

  // 0 until the first Apply succeeds.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // The generation in force; null before the first Apply.
  std::shared_ptr<const RouteGeneration> Current() const;

 private:
  // Backends the table says are cooling down (Backend.cooldown_until, the control plane's wall
  // clock) cool down on this proxy's monotonic clock until the same instant. Runtime state
  // carries over by id, so a cooldown outlives later tables that no longer name it.
  static void ApplyCooldowns(const selection::RuntimeState& runtime);

  mutable absl::Mutex mu_;
  std::shared_ptr<const RouteGeneration> current_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> shutting_down_{false};
  std::vector<std::string> allowed_upstream_hosts_;
  std::shared_ptr<fleet::FleetStatus> fleet_status_;
  // Standalone budgets: always "away", fleet size 0, so the local share is the whole budget.
  const std::shared_ptr<fleet::FleetStatus> standalone_status_ =
      std::make_shared<fleet::FleetStatus>();
};

}  // namespace berry::proxy
