// Active health checks of the control plane: every enabled provider of the current RouteTable is
// probed with `GET {base_url}/models`, carrying the provider's key and extra headers, exactly
// like a client listing models. That endpoint is free on every OpenAI-compatible API: no probe
// ever spends a token (nothing is POSTed).
//
// Verdict per provider, from consecutive probe results:
//   - a probe succeeds when a 2xx status line and headers arrive within the probe timeout (the
//     body, possibly a multi-megabyte model list, is not read: the connection is closed after
//     the headers); it fails on a connect/TLS error, a non-2xx status or a broken response, and
//     times out when the deadline passes first (a timeout is a failure for the verdict, counted
//     apart in the metrics);
//   - a provider starts with no verdict (nullopt). `unhealthy_threshold` consecutive failures
//     make it unhealthy; while it is unhealthy, `healthy_threshold` consecutive successes make it
//     healthy again. A provider without a verdict becomes healthy at its first success: there is
//     no failure to recover from, and waiting for a second one would only delay the first verdict.
//   - the sink hears only changes; when a provider is removed from the table, disabled, or its
//     base_url changes, it stops being probed and a verdict it had is cleared (nullopt). A
//     provider whose base_url changes starts over as a new one. Providers that stay (same id,
//     same base_url) keep their verdict and counts; a new key, new headers or a new tls_verify
//     apply from their next probe.
//
// Schedule. A provider is probed every `interval` (settings.health_check_interval). While it is
// unhealthy, or while the fleet has ejected one of its backends (SetFleetEjected), it is probed
// every min(interval, recovery_interval) (settings.recovery_check_interval): a successful probe
// is what brings an ejected backend back, so an ejected provider is never probed less often than
// a healthy one, and a recovery interval shorter than the normal one speeds its return up.
// Probes are jittered so that providers are not probed in lock-step: the first probe of each
// provider comes at a uniformly random offset within its interval, each next one
// interval × (1 ± jitter) after the previous probe ended. The random source is seeded
// (HealthCheckerOptions::seed). A change of the interval (new settings, a verdict change, a
// fleet ejection) applies at once to the wait in progress. ProbeNow (a proxy reported an ejection)
// makes the next probe due at once.
//
// Metrics (RegisterMetrics), computed at scrape time:
//   berry_cp_health_checks_total{provider,result}   result: success, failure, timeout
//   berry_cp_provider_healthy{provider}             1 healthy, 0 unhealthy; absent without verdict
// DESIGN.md sketches `berry_cp_health_checks_total{backend,result}`; the label is `provider`
// because a probe tests a provider (one base URL and key), not one backend: labelling it
// `backend` would put provider ids where every other family of the control plane has backend
// ids ("model/provider/upstream_model"), and joins on that label would silently match nothing.
// Series of a provider that leaves the table disappear with it.
//
// Threads: the checker runs one io_context on its own thread (Start/Stop); every probe, every
// timer and every sink call happen there. Update, SetFleetEjected, ProviderHealth and metrics
// scrapes may be called from any thread. The sink is called on the checker's thread, one call at
// a time, and must not call Stop (nor destroy the checker); it may call Update/SetFleetEjected.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "berry/v1/route_table.pb.h"
#include "common/http/client.h"
#include "common/metrics/metrics.h"

namespace berry::control_plane {

// Receives probe verdicts. The control plane forwards them to
// FleetStats::SetProviderProbeHealth (FleetStatsHealthSink); tests record them.
class HealthSink {
 public:
  virtual ~HealthSink() = default;
  // `provider_id`'s verdict changed: true healthy, false unhealthy, nullopt no verdict (the
  // provider left the table or was disabled). Called on the checker's thread.
  virtual void OnProviderHealth(std::string_view provider_id, std::optional<bool> healthy) = 0;
  // Every probe that succeeded, with the time (absl::Now) it started. Called on the checker's
  // thread, after OnProviderHealth when the probe changed the verdict.
  virtual void OnProbeSucceeded(std::string_view /*provider_id*/, absl::Time /*started*/) {}
};

// Tuning of HealthChecker; validated by HealthChecker::Create.
struct HealthCheckerOptions {
  // Consecutive failures (timeouts included) that make a provider unhealthy. >= 1.
  uint32_t unhealthy_threshold = 3;
  // Consecutive successes that make an unhealthy provider healthy again. >= 1.
  uint32_t healthy_threshold = 2;
  // Relative spread of the wait between two probes of one provider. In [0, 0.5].
  double jitter = 0.1;
  // Override the table's settings (tests, or an operator flag). Each > 0 when set. Without an
  // override: the setting, or its documented default (30 s, 10 s, 120 s) when the table has none.
  std::optional<absl::Duration> interval;           // settings.health_check_interval
  std::optional<absl::Duration> timeout;            // settings.health_check_timeout
  std::optional<absl::Duration> recovery_interval;  // settings.recovery_check_interval
  // Seed of the jitter; nullopt = from std::random_device.
  std::optional<uint64_t> seed;
  // Trust store for HTTPS providers; null = the system store (TlsContexts::Create()).
  std::shared_ptr<const upstream::TlsContexts> tls_contexts;
  // Sent as User-Agent, so providers can tell probes from traffic in their logs.
  std::string user_agent = "berry-health-check";
};

class HealthChecker {
 public:
  // InvalidArgument when `options` break their documented bounds; an error when the system trust
  // store cannot be loaded. `sink` must outlive the checker.
  static absl::StatusOr<std::unique_ptr<HealthChecker>> Create(HealthSink& sink,
                                                               HealthCheckerOptions options = {});

  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;
  // Stops.
  ~HealthChecker();

  // Starts the checker's thread. Updates made before run then. No effect when already started
  // or stopped.
  void Start();
  // Cancels every wait and in-flight probe, closes their connections and joins the thread; no
  // sink call happens after it returns. Verdicts are left as they are. Idempotent; never from
  // the sink.
  void Stop();

  // Replaces the set of probed providers with `table`'s enabled ones, and the intervals and
  // timeout with its settings (see the header comment). Applied asynchronously, in call order.
  // Ignored after Stop.
  void Update(const v1::RouteTable& table);

  // Whether the fleet currently ejects a backend of `provider_id` (FleetStats says UNHEALTHY):
  // while it does, the provider is probed every min(interval, recovery_interval). The control
  // plane calls it after each FleetStats::Overlay. Ignored for a provider not in the table;
  // forgotten when the provider leaves it. Applied asynchronously, in call order.
  void SetFleetEjected(std::string_view provider_id, bool ejected);

  // Probes `provider_id` now instead of at its next due time (a proxy reported a backend of it
  // ejected). When a probe of it is under way, the next one starts right after it. The wait
  // after that probe is the usual one. Ignored for a provider not in the table; applied
  // asynchronously.
  void ProbeNow(std::string_view provider_id);

  // The provider's current verdict; nullopt without one or for an unknown provider.
  std::optional<bool> ProviderHealth(std::string_view provider_id) const;

  // Registers the families listed in the header comment. The callbacks lock this object: it must
  // outlive every Render() of `registry`. AlreadyExists when a name is taken.
  absl::Status RegisterMetrics(metrics::Registry& registry);

 private:
  enum class Result : uint8_t { kSuccess, kFailure, kTimeout, kCancelled };
  enum class Lifecycle : uint8_t { kCreated, kRunning, kStopped };

  // What a probe needs, copied out of the table; immutable once built.
  struct Target {
    absl::StatusOr<upstream::Endpoint> endpoint;
    std::string authorization;  // "Bearer <key>"; empty without a key
    std::vector<std::pair<std::string, std::string>> headers;
  };

  struct ProviderConfig {
    std::string id;
    std::string base_url;
    std::shared_ptr<const Target> target;
  };

  // The table's part the checker uses, resolved against the overrides.
  struct Schedule {
    absl::Duration interval;
    absl::Duration timeout;
    absl::Duration recovery_interval;
  };

  struct ProviderState;

  // What metrics and ProviderHealth read.
  struct Published {
    std::optional<bool> verdict;
    uint64_t success = 0;
    uint64_t failure = 0;
    uint64_t timeout = 0;
  };

  HealthChecker(HealthSink& sink, HealthCheckerOptions options,
                std::shared_ptr<const upstream::TlsContexts> tls_contexts);

  // --- the checker's thread only ---
  void Apply(Schedule schedule, std::vector<ProviderConfig> providers);
  void ApplyFleetEjected(const std::string& provider_id, bool ejected);
  void ApplyProbeNow(const std::string& provider_id);
  // Stops probing `state` and clears its verdict.
  void Retire(ProviderState& state);
  // One provider's probe loop, until it is retired or the checker stops.
  boost::asio::awaitable<void> Run(std::shared_ptr<ProviderState> state);
  // One probe; `detail` says why it did not succeed (never the key).
  boost::asio::awaitable<Result> Probe(std::shared_ptr<const Target> target, ProviderState& state,
                                       std::string* detail);
  void Record(ProviderState& state, Result result, const std::string& detail);
  void SetVerdict(ProviderState& state, std::optional<bool> verdict, std::string_view reason);
  absl::Duration IntervalFor(const ProviderState& state) const;

  HealthSink& sink_;
  const HealthCheckerOptions options_;
  const std::shared_ptr<const upstream::TlsContexts> tls_contexts_;

  // Destroyed in Stop(), in reverse order: pending coroutine frames go with the io_context.
  std::optional<boost::asio::io_context> io_context_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;

  // The checker's thread only.
  Schedule schedule_;
  std::mt19937_64 rng_;
  absl::flat_hash_map<std::string, std::shared_ptr<ProviderState>> providers_;

  absl::Mutex lifecycle_mu_;
  Lifecycle lifecycle_ ABSL_GUARDED_BY(lifecycle_mu_) = Lifecycle::kCreated;

  mutable absl::Mutex published_mu_;
  absl::flat_hash_map<std::string, Published> published_ ABSL_GUARDED_BY(published_mu_);
};

}  // namespace berry::control_plane
