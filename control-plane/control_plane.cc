#include "control-plane/control_plane.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <boost/json.hpp>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "common/route_table/compile.h"
#include "common/strings/views.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/health/v1/health.pb.h"

namespace berry::control_plane {
namespace {

std::string ErrorList(const std::vector<config::ConfigError>& errors) {
  std::string all;
  for (const auto& error : errors) {
    absl::StrAppend(&all, "\n  ", error.ToString());
  }
  return all;
}

// One operational log line per config warning (a key that loads but changes nothing).
void LogWarnings(const std::vector<config::ConfigError>& warnings) {
  for (const auto& warning : warnings) {
    log::Warn("config warning", {{"key", warning.key_path}, {"warning", warning.ToString()}});
  }
}

std::string TimeText(absl::Time time) {
  return time == absl::Time() ? "" : absl::FormatTime(absl::RFC3339_sec, time, absl::UTCTimeZone());
}

}  // namespace

ControlPlane::ControlPlane(ControlPlaneOptions options)
    : options_(std::move(options)), source_(options_.config_path) {}

ControlPlane::~ControlPlane() { Stop(); }

absl::StatusOr<std::unique_ptr<ControlPlane>> ControlPlane::Create(ControlPlaneOptions options) {
  std::unique_ptr<ControlPlane> plane(new ControlPlane(std::move(options)));
  ConfigSource& source = plane->source_;
  const ConfigSource::ReloadResult first_load = source.Reload();
  if (!first_load.errors.empty()) {
    const size_t count = first_load.errors.size();
    return absl::InvalidArgumentError(absl::StrCat(source.path(), " is invalid (", count, " error",
                                                   count == 1 ? "" : "s",
                                                   "):", ErrorList(first_load.errors)));
  }
  LogWarnings(first_load.warnings);
  plane->quota_ = std::make_unique<QuotaAuthority>(plane->options_.quota, absl::Now());
  auto fleet = FleetStats::Create(
      FleetStatsOptions::FromSettings(route_table::Compile(*source.Current()).settings()));
  if (!fleet.ok()) {
    return fleet.status();
  }
  plane->fleet_ = *std::move(fleet);
  plane->health_sink_ = std::make_unique<FleetStatsHealthSink>(*plane->fleet_);
  auto health = HealthChecker::Create(*plane->health_sink_, plane->options_.health);
  if (!health.ok()) {
    return health.status();
  }
  plane->health_ = *std::move(health);
  if (plane->options_.admin_auth == nullptr) {
    plane->options_.admin_auth = std::make_unique<admin::AdminAuth>();
    log::Warn("AdminService is open: no --admin-token-file");
  }
  plane->ConfigChanged();
  plane->Publish();
  if (absl::Status status = plane->RegisterMetrics(); !status.ok()) {
    return status;
  }

  FleetStats& fleet_stats = *plane->fleet_;
  ReportSink reports;
  reports.closed = [&fleet_stats](const std::string& node) { fleet_stats.ForgetNode(node); };
  ControlPlane* self = plane.get();
  reports.fold = [&fleet_stats, self](const v1::StreamLoadReportsRequest& report,
                                      const std::string& node) {
    auto acked = fleet_stats.Fold(report, node);
    if (!acked.ok()) {
      log::Warn("load report rejected",
                {{"node", node}, {"reason", std::string(acked.status().message())}});
      return fleet_stats.AckedSequence(node);
    }
    self->ReactToSignals(report, node);
    return *acked;
  };
  QuotaAuthority& quota = *plane->quota_;
  reports.quota = [&quota](const v1::StreamLoadReportsRequest& report, const std::string& node) {
    return quota.Handle(report, node, absl::Now());
  };
  plane->discovery_ = std::make_unique<DiscoveryService>(plane->publisher_, std::move(reports),
                                                         plane->options_.report_interval);
  plane->admin_ = std::make_unique<admin::AdminService>(
      admin::AdminDeps{source, fleet_stats, plane->publisher_, plane->overrides_,
                       *plane->options_.admin_auth, plane->events_, [self] { self->Publish(); },
                       [self] {
                         self->ConfigChanged();
                         self->Publish();
                       }});
  plane->endpoints_.ready = [self] {
    const bool ready = self->publisher_.Current() != nullptr;
    return server::Readiness{ready, ready ? R"({"status":"ready"})" : R"({"status":"not ready"})"};
  };
  plane->endpoints_.metrics = [self] { return self->RenderMetrics(); };
  plane->endpoints_.json = {{"/proxies", [self] { return self->ProxiesJson(); }},
                            {"/backends", [self] { return self->BackendsJson(); }}};
  return plane;
}

// --- metrics wiring ---------------------------------------------------------------------------

absl::Status ControlPlane::RegisterMetrics() {
  (void)registry_.AddCallbackGauge(
      "berry_cp_connected_proxies", "Proxies with an open StreamRoutes stream.",
      [this] { return static_cast<double>(publisher_.connected_count()); });
  (void)registry_.AddCallbackCounter("berry_cp_config_pushes_total",
                                     "Route tables sent to proxies.",
                                     [this] { return static_cast<double>(publisher_.pushes()); });
  (void)registry_.AddCallbackCounter("berry_cp_nacks_total", "Route tables proxies rejected.",
                                     [this] { return static_cast<double>(publisher_.nacks()); });
  (void)registry_.AddCallbackCounter("berry_cp_config_rejected_total",
                                     "Config reloads rejected by validation.",
                                     [this] { return static_cast<double>(source_.rejected()); });
  (void)registry_.AddCallbackCounter(
      "berry_cp_admin_unauthenticated_total",
      "AdminService calls refused for a missing or wrong bearer token.",
      [this] { return static_cast<double>(options_.admin_auth->unauthenticated()); });
  (void)registry_.AddCallbackCounter(
      "berry_cp_proxy_ejections_total",
      "Backend ejections proxies reported at once (each takes the backend out fleet-wide).",
      [this] { return static_cast<double>(fleet_->proxy_ejections_reported()); });
  (void)registry_.AddCallbackCounter(
      "berry_cp_proxy_ejections_cleared_by_probe_total",
      "Proxy-reported ejections ended early by a passing probe of the provider.",
      [this] { return static_cast<double>(fleet_->proxy_ejections_cleared_by_probe()); });
  (void)registry_.AddCallbackCounter(
      "berry_cp_upstream_cooldowns_total",
      "Upstream 429s with a time to wait that proxies reported (cooling the backend fleet-wide).",
      [this] { return static_cast<double>(fleet_->proxy_cooldowns_reported()); });
  if (absl::Status status = health_->RegisterMetrics(registry_); !status.ok()) {
    return status;
  }
  return fleet_->RegisterMetrics(registry_);
}

std::string ControlPlane::RenderMetrics() const { return registry_.Render(); }

// --- end of metrics wiring --------------------------------------------------------------------

absl::Status ControlPlane::Start() {
  if (started_ || stopped_) {
    return absl::FailedPreconditionError("the control plane was already started");
  }
  started_ = true;
  grpc::EnableDefaultHealthCheckService(true);
  // Touching the descriptor links grpc/health/v1/health.proto into the pool reflection reads.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> credentials = options_.grpc_credentials;
  if (credentials == nullptr) {
    log::Warn(
        "gRPC listener is plaintext: route tables (with provider keys) travel "
        "unencrypted; use --tls-* outside a single host",
        {{"address", options_.grpc_listen}});
    credentials = grpc::InsecureServerCredentials();
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.grpc_listen, credentials, &grpc_port_);
  builder.RegisterService(discovery_.get());
  builder.RegisterService(admin_.get());
  // Keepalive: we ping idle proxies every 30 s, and let proxies ping us as often as every 10 s.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.grpc_listen));
  }

  server::ServerOptions http_options;
  http_options.host = options_.http_host;
  http_options.port = options_.http_port;
  http_options.threads = 1;
  auto http_server =
      server::HttpServer::Create(http_options, [this](int, server::net::io_context&) {
        return std::make_unique<server::StatusHandler>(endpoints_);
      });
  if (!http_server.ok()) {
    return http_server.status();
  }
  http_server_ = *std::move(http_server);
  http_server_->Start();

  if (options_.watch_config) {
    if (absl::Status watch = source_.Watch([this] { Reload("file change"); }); !watch.ok()) {
      log::Warn(strings::Std(watch.message()));
    }
  }
  grpc_address_ = absl::StrCat(options_.grpc_listen.substr(0, options_.grpc_listen.rfind(':')), ":",
                               grpc_port_);
  http_port_ = http_server_->port();
  http_address_ = absl::StrCat(http_options.host, ":", http_port_);

  recompute_ = std::thread([this] {
    for (;;) {
      {
        absl::MutexLock lock(&publish_request_mu_);
        auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(publish_request_mu_) {
          return publish_requested_ || stop_requested_;
        };
        publish_request_mu_.AwaitWithTimeout(absl::Condition(&woken), options_.recompute_interval);
        if (stop_requested_) {
          return;
        }
        publish_requested_ = false;
      }
      Publish();
    }
  });
  health_->Start();
  return absl::OkStatus();
}

void ControlPlane::Stop() {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  {
    absl::MutexLock lock(&publish_request_mu_);
    stop_requested_ = true;
  }
  if (recompute_.joinable()) {
    recompute_.join();
  }
  if (health_ != nullptr) {
    health_->Stop();
  }
  source_.StopWatching();
  if (grpc_server_ != nullptr) {
    grpc_server_->Shutdown(std::chrono::system_clock::now() +
                           absl::ToChronoNanoseconds(options_.grpc_shutdown_grace));
  }
  if (http_server_ != nullptr) {
    http_server_->BeginDrain();
    http_server_->Stop();
    http_server_.reset();  // closes the listening socket: the port refuses connections
  }
}

void ControlPlane::RequestPublish() {
  absl::MutexLock lock(&publish_request_mu_);
  publish_requested_ = true;
}

void ControlPlane::ReactToSignals(const v1::StreamLoadReportsRequest& report,
                                  const std::string& node) {
  bool any = false;
  const auto table = publisher_.Current();
  for (const v1::BackendStats& stats : report.backend_stats()) {
    if (!stats.has_ejected_for() && !stats.has_cooldown_for()) {
      continue;
    }
    any = true;
    std::string provider;
    if (table != nullptr) {
      for (const auto& model : table->models()) {
        for (const auto& backend : model.backends()) {
          if (backend.id() == stats.backend_id()) {
            provider = backend.provider_id();
          }
        }
      }
    }
    log::Info(
        stats.has_ejected_for() ? "proxy ejected a backend; out of rotation fleet-wide"
                                : "upstream 429 on a proxy; backend cooling down fleet-wide",
        {{"node", node},
         {"backend", stats.backend_id()},
         {"seconds",
          absl::StrCat(static_cast<double>(google::protobuf::util::TimeUtil::DurationToMilliseconds(
                           stats.has_ejected_for() ? stats.ejected_for() : stats.cooldown_for())) /
                       1000)}});
    if (stats.has_ejected_for() && !provider.empty()) {
      health_->ProbeNow(provider);  // a passing probe started from now on ends the ejection
    }
  }
  if (any) {
    RequestPublish();
  }
}

void ControlPlane::ConfigChanged() { health_->Update(route_table::Compile(*source_.Current())); }

void ControlPlane::Publish() {
  absl::MutexLock lock(&publish_mu_);
  const auto config = source_.Current();
  if (config == nullptr) {
    return;
  }
  auto table = std::make_shared<v1::RouteTable>(route_table::Compile(*config));
  // Before the fleet overlay, which keeps an operator's DRAINING.
  overrides_.Apply(*table);
  fleet_->Overlay(*table);
  // Providers with a backend the fleet marked unhealthy are probed at the recovery interval.
  absl::flat_hash_map<std::string, bool> ejected;
  for (const auto& model : table->models()) {
    for (const auto& backend : model.backends()) {
      ejected[backend.provider_id()] |= backend.health() == v1::HEALTH_STATUS_UNHEALTHY;
    }
  }
  for (const auto& [provider, any] : ejected) {
    health_->SetFleetEjected(provider, any);
  }
  route_table::StampVersion(*table);
  const std::string version = table->version_info();
  std::shared_ptr<const v1::RouteTable> published = table;
  if (publisher_.Publish(std::move(table))) {
    log::Info("route table published", {{"version", version}});
    quota_->SetTable(*published);
    events_.OnPublished(*published);
  }
}

void ControlPlane::Reload(std::string_view why) {
  const ConfigSource::ReloadResult result = source_.Reload();
  if (!result.errors.empty()) {
    log::Error("config rejected; the running config stays in force",
               {{"file", source_.path()}, {"trigger", why}, {"errors", ErrorList(result.errors)}});
    return;
  }
  if (result.changed) {
    log::Info("config loaded", {{"file", source_.path()}, {"trigger", why}});
    LogWarnings(result.warnings);
    ConfigChanged();
  }
  Publish();
}

std::string ControlPlane::ProxiesJson() const {
  boost::json::object out;
  const auto current = publisher_.Current();
  out["version"] = current ? current->version_info() : "";
  boost::json::array proxies;
  for (const auto& node : publisher_.Nodes()) {
    proxies.push_back({{"node_id", node.node_id},
                       {"address", node.address},
                       {"connected", node.connected},
                       {"connected_since", TimeText(node.connected_since)},
                       {"acked_version", node.acked_version},
                       {"nacked_version", node.nacked_version},
                       {"nack_reason", node.nack_reason},
                       {"last_report_time", TimeText(node.last_report_time)}});
  }
  out["proxies"] = std::move(proxies);
  return boost::json::serialize(out);
}

std::string ControlPlane::BackendsJson() const {
  boost::json::array backends;
  for (const auto& b : fleet_->Snapshot()) {
    boost::json::object o{{"backend_id", b.backend_id},
                          {"provider_id", b.provider_id},
                          {"health", v1::HealthStatus_Name(b.health)},
                          {"issued", b.issued},
                          {"succeeded", b.succeeded},
                          {"failed", b.failed()},
                          {"in_flight", b.in_flight},
                          {"prompt_tokens", b.prompt_tokens},
                          {"completion_tokens", b.completion_tokens}};
    if (b.recent_success_rate) {
      o["recent_success_rate"] = *b.recent_success_rate;
    }
    if (b.proxy_ejected_until) {
      o["proxy_ejected_until"] = TimeText(*b.proxy_ejected_until);
    }
    if (b.cooldown_until) {
      o["cooldown_until"] = TimeText(*b.cooldown_until);
    }
    if (b.effective_weight) {
      o["effective_weight"] = *b.effective_weight;
    }
    if (b.latency.p50) {
      o["latency_p50"] = *b.latency.p50;
    }
    if (b.latency.p99) {
      o["latency_p99"] = *b.latency.p99;
    }
    if (b.ttfb.p50) {
      o["ttfb_p50"] = *b.ttfb.p50;
    }
    if (b.ttfb.p99) {
      o["ttfb_p99"] = *b.ttfb.p99;
    }
    backends.push_back(std::move(o));
  }
  return boost::json::serialize(boost::json::object{{"backends", std::move(backends)}});
}

}  // namespace berry::control_plane
