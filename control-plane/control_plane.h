// ControlPlane: berry-control-plane as an object. It owns the running config (ConfigSource),
// the fleet statistics, the active health checker, the route publisher with its
// RouteDiscoveryService and AdminService on one gRPC server, the HTTP status server (/healthz,
// /readyz, /metrics, /proxies, /backends) and the periodic recompile that moves fleet health
// into the published table. control_plane_main.cc parses flags into ControlPlaneOptions, and
// turns SIGHUP into Reload() and SIGTERM into Stop(); tests run it in-process on port 0.
//
// Publishing: the running config is compiled, operator backend states and fleet health are laid
// over it, and the result is published when its content hash changed. Publishes are serialised
// (one member mutex), so a slow publish of an older config can never land after a newer one.
// It happens at Create, after every accepted reload or admin change, every `recompute_interval`
// while running (fleet health moves with load reports and probes), and at once when a proxy
// reports an ejection or an upstream 429 cooldown (ReactToSignals).
//
// Threads: Create, Start and Stop are called from one controlling thread. Reload and Publish may
// be called from any thread (the config watcher, the recompile thread, AdminService handlers and
// the controlling thread all do). Accessors are thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/http/server.h"
#include "common/http/status.h"
#include "common/metrics/metrics.h"
#include "control-plane/admin/admin_service.h"
#include "control-plane/config_source/config_source.h"
#include "control-plane/discovery/discovery_service.h"
#include "control-plane/health/fleet_health_sink.h"
#include "control-plane/health/health_checker.h"
#include "control-plane/quota/quota_authority.h"
#include "control-plane/stats/fleet_stats.h"

namespace berry::control_plane {

struct ControlPlaneOptions {
  // The Berry TOML config; it must be valid at Create.
  std::string config_path;
  // Watch config_path for edits (inotify) while running.
  bool watch_config = true;

  // HOST:PORT of the gRPC server (RouteDiscoveryService, AdminService); port 0 picks one.
  std::string grpc_listen = "127.0.0.1:50051";
  // Null = plaintext.
  std::shared_ptr<grpc::ServerCredentials> grpc_credentials;
  // How long Stop lets open RPCs (route streams) run before cancelling them.
  absl::Duration grpc_shutdown_grace = absl::Seconds(5);

  // The HTTP status server; port 0 picks one.
  std::string http_host = "127.0.0.1";
  uint16_t http_port = 9090;

  // AdminService's bearer token; null = open (every call allowed, and a warning at Create).
  std::unique_ptr<admin::AdminAuth> admin_auth;
  // How often proxies send load reports (sent to them on their report stream).
  absl::Duration report_interval = absl::Seconds(5);
  // The health checker's tuning (its TLS trust store included).
  HealthCheckerOptions health;
  // How often fleet health is laid over the running config and published if it changed.
  absl::Duration recompute_interval = absl::Seconds(1);
  // Fleet-wide per-user limits (README.md, "Fleet-wide rate limits").
  QuotaOptions quota;
};

class ControlPlane {
 public:
  // Loads and validates the config (InvalidArgument listing every error when it is invalid),
  // builds every part and publishes the first table. Nothing listens and no thread runs yet.
  static absl::StatusOr<std::unique_ptr<ControlPlane>> Create(ControlPlaneOptions options);

  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;
  // Stops.
  ~ControlPlane();

  // Binds and starts the gRPC and HTTP servers, the config watcher, the recompile thread and the
  // health checker. Unavailable when a server cannot listen. Once only.
  absl::Status Start();
  // Stops the recompile thread, the health checker and the watcher, shuts the gRPC server down
  // (open streams get `grpc_shutdown_grace`) and drains and closes the HTTP server. Idempotent.
  void Stop();

  // Re-reads the config file (`why` is logged: "SIGHUP", "file change"); a valid, changed config
  // goes to the health checker; then publishes. An invalid one is logged and counted, and the
  // running config stays in force.
  void Reload(std::string_view why);
  // Compiles the running config with operator states and fleet health, and publishes it if its
  // content changed.
  void Publish();

  // After Start: the bound addresses, HOST:PORT.
  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& http_address() const { return http_address_; }
  int grpc_port() const { return grpc_port_; }
  uint16_t http_port() const { return http_port_; }

  const RoutePublisher& publisher() const { return publisher_; }
  const ConfigSource& source() const { return source_; }

  // The JSON bodies of /proxies and /backends.
  std::string ProxiesJson() const;
  std::string BackendsJson() const;

 private:
  explicit ControlPlane(ControlPlaneOptions options);

  // --- metrics wiring: the registry, every RegisterMetrics call and the /metrics body --------
  absl::Status RegisterMetrics();
  std::string RenderMetrics() const;
  metrics::Registry registry_;
  // --- end of metrics wiring ------------------------------------------------------------------

  // Sends the running config to the health checker.
  void ConfigChanged();
  // Wakes the recompile thread to publish now rather than at its next interval.
  void RequestPublish();
  // A folded report named ejections or 429 cooldowns (BackendStats.ejected_for/cooldown_for):
  // probe the ejected backends' providers now and publish the table that carries them now.
  void ReactToSignals(const v1::StreamLoadReportsRequest& report, const std::string& node);

  ControlPlaneOptions options_;
  ConfigSource source_;
  std::unique_ptr<FleetStats> fleet_;
  std::unique_ptr<FleetStatsHealthSink> health_sink_;
  std::unique_ptr<HealthChecker> health_;
  RoutePublisher publisher_;
  admin::BackendOverrides overrides_;
  admin::EventHub events_;
  std::unique_ptr<QuotaAuthority> quota_;
  std::unique_ptr<DiscoveryService> discovery_;
  std::unique_ptr<admin::AdminService> admin_;
  server::StatusEndpoints endpoints_;

  // Serialises Publish.
  absl::Mutex publish_mu_;

  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<server::HttpServer> http_server_;
  int grpc_port_ = 0;
  uint16_t http_port_ = 0;
  std::string grpc_address_;
  std::string http_address_;

  absl::Mutex publish_request_mu_;
  bool publish_requested_ ABSL_GUARDED_BY(publish_request_mu_) = false;
  bool stop_requested_ ABSL_GUARDED_BY(publish_request_mu_) = false;
  std::thread recompute_;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace berry::control_plane
