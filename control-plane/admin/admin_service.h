// AdminService, the control plane's operator API (what berryctl calls): validate and apply TOML
// configs (dry run, compare-and-swap on the config version, a readable diff), read the running
// config with secrets redacted, list backends and proxies, enable/disable/drain a backend without
// editing the file, and watch version and health changes.
//
// Versions. The *config version* is the content hash of the running config compiled alone (no
// fleet health, no operator states): it only moves when the config does, so it is what
// compare-and-swap checks. The *table version* is what proxies receive and ACK: the config plus
// fleet health plus operator backend states.
//
// Auth. With a token configured, every call needs `authorization: Bearer <token>` metadata; the
// SHA-256 digests are compared in constant time. A failure is UNAUTHENTICATED and counted. Audit
// lines name the caller by token id: the first 8 hex characters of the token's SHA-256 — never
// the token.
//
// Threads: gRPC callback API; every handler runs on gRPC's threads and may run concurrently with
// the others, the config watcher and the publish loop. BackendOverrides, AdminAuth and EventHub
// are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "berry/v1/admin.grpc.pb.h"
#include "berry/v1/route_table.pb.h"
#include "common/config/config.h"
#include "control-plane/config_source/config_source.h"
#include "control-plane/discovery/discovery_service.h"
#include "control-plane/stats/fleet_stats.h"

namespace berry::admin {

// The config version: ComputeVersion of the config compiled alone.
std::string ConfigVersion(const config::Config& config);

// Operator states of backends, set by SetBackendState and laid over every table the control
// plane publishes. Backends without an entry are as configured.
class BackendOverrides {
 public:
  // ENABLED removes the override.
  void Set(const std::string& backend_id, v1::BackendAdminState state);
  v1::BackendAdminState Get(const std::string& backend_id) const;
  // DISABLED: enabled = false; DRAINING: health = HEALTH_STATUS_DRAINING (proxies send no new
  // requests, in-flight ones finish). Call before FleetStats::Overlay, which keeps DRAINING.
  void Apply(v1::RouteTable& table) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, v1::BackendAdminState> states_ ABSL_GUARDED_BY(mu_);
};

// The admin bearer token, held as its SHA-256 digest.
class AdminAuth {
 public:
  // Open: every call is allowed (no --admin-token-file).
  AdminAuth() = default;
  // Reads the token from `path` (surrounding whitespace trimmed). Error for an unreadable or
  // empty file.
  static absl::StatusOr<std::unique_ptr<AdminAuth>> FromFile(const std::string& path);
  static std::unique_ptr<AdminAuth> FromToken(std::string_view token);

  // OK with `who` set to the caller's token id ("anonymous" when open), or UNAUTHENTICATED.
  grpc::Status Check(const grpc::CallbackServerContext& context, std::string* who);
  uint64_t unauthenticated() const { return unauthenticated_.load(std::memory_order_relaxed); }

 private:
  std::optional<std::string> digest_;  // raw SHA-256 of the token; nullopt = open
  std::string token_id_;
  std::atomic<uint64_t> unauthenticated_{0};
};

// Fans out version and health changes to WatchEvents streams.
class EventHub {
 public:
  class Subscriber {
   public:
    virtual ~Subscriber() = default;
    // Called with the hub's lock held: must not block or call back into the hub.
    virtual void Push(const v1::WatchEventsResponse& event) = 0;
  };
  // Called after each published table: one event for the new version, one per backend whose
  // health changed.
  void OnPublished(const v1::RouteTable& table);
  // Also sends `subscriber` the version in force.
  void Subscribe(Subscriber* subscriber);
  void Unsubscribe(Subscriber* subscriber);

 private:
  absl::Mutex mu_;
  std::string version_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, v1::HealthStatus> health_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<Subscriber*> subscribers_ ABSL_GUARDED_BY(mu_);
};

// What AdminService reads and drives; all outlive it.
struct AdminDeps {
  control_plane::ConfigSource& source;
  control_plane::FleetStats& fleet;
  control_plane::RoutePublisher& publisher;
  BackendOverrides& overrides;
  AdminAuth& auth;
  EventHub& events;
  // Recompiles the running config with health and overrides, and publishes it if it changed.
  std::function<void()> publish;
  // The running config changed (apply): refresh the health checker, then publish.
  std::function<void()> config_changed;
};

class AdminService final : public v1::AdminService::CallbackService {
 public:
  explicit AdminService(AdminDeps deps) : deps_(std::move(deps)) {}

  grpc::ServerUnaryReactor* ValidateConfig(grpc::CallbackServerContext* context,
                                           const v1::ValidateConfigRequest* request,
                                           v1::ValidateConfigResponse* response) override;
  grpc::ServerUnaryReactor* ApplyConfig(grpc::CallbackServerContext* context,
                                        const v1::ApplyConfigRequest* request,
                                        v1::ApplyConfigResponse* response) override;
  grpc::ServerUnaryReactor* GetConfig(grpc::CallbackServerContext* context,
                                      const v1::GetConfigRequest* request,
                                      v1::GetConfigResponse* response) override;
  grpc::ServerUnaryReactor* ListBackends(grpc::CallbackServerContext* context,
                                         const v1::ListBackendsRequest* request,
                                         v1::ListBackendsResponse* response) override;
  grpc::ServerUnaryReactor* ListProxies(grpc::CallbackServerContext* context,
                                        const v1::ListProxiesRequest* request,
                                        v1::ListProxiesResponse* response) override;
  grpc::ServerUnaryReactor* SetBackendState(grpc::CallbackServerContext* context,
                                            const v1::SetBackendStateRequest* request,
                                            v1::SetBackendStateResponse* response) override;
  grpc::ServerWriteReactor<v1::WatchEventsResponse>* WatchEvents(
      grpc::CallbackServerContext* context, const v1::WatchEventsRequest* request) override;

 private:
  grpc::Status DoApply(const std::string& who, const v1::ApplyConfigRequest& request,
                       v1::ApplyConfigResponse& response);
  grpc::Status DoSetBackendState(const std::string& who, const v1::SetBackendStateRequest& request,
                                 v1::SetBackendStateResponse& response);

  AdminDeps deps_;
};

// Validation errors (or warnings) as the proto's ConfigError.
void ToProto(const std::vector<config::ConfigError>& errors,
             google::protobuf::RepeatedPtrField<v1::ConfigError>* out);

}  // namespace berry::admin
