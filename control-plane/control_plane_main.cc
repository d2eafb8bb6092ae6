// berry-control-plane: holds the validated config, compiles it into the RouteTable (versioned by
// content hash) and streams it to every connected berry-proxy over RouteDiscoveryService; watches
// the config file; serves /healthz, /readyz and /metrics over HTTP.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <boost/json.hpp>
#include <iostream>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/cli/flags.h"
#include "common/cli/process.h"
#include "common/log/log.h"
#include "common/metrics/metrics.h"
#include "common/route_table/compile.h"
#include "control-plane/admin/admin_service.h"
#include "control-plane/config_source/config_source.h"
#include "control-plane/discovery/discovery_service.h"
#include "control-plane/health/fleet_health_sink.h"
#include "control-plane/health/health_checker.h"
#include "control-plane/http_status.h"
#include "control-plane/stats/fleet_stats.h"
#include "grpc/health/v1/health.pb.h"

namespace {

using berry::control_plane::ConfigSource;
using berry::control_plane::FleetStats;
using berry::control_plane::HealthChecker;
using berry::control_plane::RoutePublisher;

// The parts a config change or a fleet-health change flows through.
struct Plane {
  ConfigSource& source;
  FleetStats& fleet;
  RoutePublisher& publisher;
  HealthChecker& health;
  // Operator backend states (AdminService.SetBackendState), laid over every table.
  berry::admin::BackendOverrides& overrides;
  // WatchEvents streams, told about every published table.
  berry::admin::EventHub& events;
};

struct Flags {
  std::string config;
  std::string grpc_listen = "127.0.0.1:50051";
  std::string http_listen = "127.0.0.1:9090";
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string admin_token_file;
  bool insecure = false;
  std::string log_level = "info";
  int64_t report_interval_seconds = 5;
  std::string upstream_ca;
};

bool IsLoopback(const std::string& address) {
  return address.starts_with("127.") || address.starts_with("localhost:") ||
         address.starts_with("[::1]:");
}

std::string ErrorList(const std::vector<berry::config::ConfigError>& errors) {
  std::string all;
  for (const auto& error : errors) {
    absl::StrAppend(&all, "\n  ", error.ToString());
  }
  return all;
}

// One operational log line per config warning (a key that loads but changes nothing).
void LogWarnings(const std::vector<berry::config::ConfigError>& warnings) {
  for (const auto& warning : warnings) {
    berry::log::Warn("config warning",
                     {{"key", warning.key_path}, {"warning", warning.ToString()}});
  }
}

// Compiles the running config, overlays fleet health and effective weights, and publishes the
// table if its content changed.
void Publish(Plane& plane) {
  // Serialised, so a slow publish of an older config can never land after a newer one.
  static absl::Mutex mu(absl::kConstInit);
  absl::MutexLock lock(&mu);
  const auto config = plane.source.Current();
  if (config == nullptr) {
    return;
  }
  auto table = std::make_shared<berry::v1::RouteTable>(berry::route_table::Compile(*config));
  // Before the fleet overlay, which keeps an operator's DRAINING.
  plane.overrides.Apply(*table);
  plane.fleet.Overlay(*table);
  // Providers with a backend the fleet marked unhealthy are probed at the recovery interval.
  absl::flat_hash_map<std::string, bool> ejected;
  for (const auto& model : table->models()) {
    for (const auto& backend : model.backends()) {
      ejected[backend.provider_id()] |= backend.health() == berry::v1::HEALTH_STATUS_UNHEALTHY;
    }
  }
  for (const auto& [provider, any] : ejected) {
    plane.health.SetFleetEjected(provider, any);
  }
  berry::route_table::StampVersion(*table);
  const std::string version = table->version_info();
  std::shared_ptr<const berry::v1::RouteTable> published = table;
  if (plane.publisher.Publish(std::move(table))) {
    berry::log::Info("route table published", {{"version", version}});
    plane.events.OnPublished(*published);
  }
}

void Reload(Plane& plane, std::string_view why) {
  const ConfigSource::ReloadResult result = plane.source.Reload();
  if (!result.errors.empty()) {
    berry::log::Error(
        "config rejected; the running config stays in force",
        {{"file", plane.source.path()}, {"trigger", why}, {"errors", ErrorList(result.errors)}});
    return;
  }
  if (result.changed) {
    berry::log::Info("config loaded", {{"file", plane.source.path()}, {"trigger", why}});
    LogWarnings(result.warnings);
    plane.health.Update(berry::route_table::Compile(*plane.source.Current()));
  }
  Publish(plane);
}

std::string TimeText(absl::Time time) {
  return time == absl::Time() ? "" : absl::FormatTime(absl::RFC3339_sec, time, absl::UTCTimeZone());
}

std::string ProxiesJson(const RoutePublisher& publisher) {
  boost::json::object out;
  const auto current = publisher.Current();
  out["version"] = current ? current->version_info() : "";
  boost::json::array proxies;
  for (const auto& node : publisher.Nodes()) {
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

std::string BackendsJson(FleetStats& fleet) {
  boost::json::array backends;
  for (const auto& b : fleet.Snapshot()) {
    boost::json::object o{{"backend_id", b.backend_id},
                          {"provider_id", b.provider_id},
                          {"health", berry::v1::HealthStatus_Name(b.health)},
                          {"issued", b.issued},
                          {"succeeded", b.succeeded},
                          {"failed", b.failed()},
                          {"in_flight", b.in_flight},
                          {"prompt_tokens", b.prompt_tokens},
                          {"completion_tokens", b.completion_tokens}};
    if (b.recent_success_rate) o["recent_success_rate"] = *b.recent_success_rate;
    if (b.effective_weight) o["effective_weight"] = *b.effective_weight;
    if (b.latency.p50) o["latency_p50"] = *b.latency.p50;
    if (b.latency.p99) o["latency_p99"] = *b.latency.p99;
    if (b.ttfb.p50) o["ttfb_p50"] = *b.ttfb.p50;
    if (b.ttfb.p99) o["ttfb_p99"] = *b.ttfb.p99;
    backends.push_back(std::move(o));
  }
  return boost::json::serialize(boost::json::object{{"backends", std::move(backends)}});
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken synchronously by the main thread (sigwait); every thread started later —
  // workers, gRPC's own — inherits the mask, so none of them can die of a SIGHUP or SIGTERM.
  // This comes first: gRPC starts threads as soon as credentials are created.
  sigset_t signals = berry::cli::BlockTerminationSignals();
  Flags flags;
  berry::cli::FlagSet set("berry-control-plane",
                          "Berry's control plane: holds the config, streams route tables to "
                          "berry-proxy fleets.");
  set.String("config", &flags.config, "Berry TOML config (watched for edits)", "CONFIG_PATH");
  set.String("grpc-listen", &flags.grpc_listen, "HOST:PORT for RouteDiscoveryService");
  set.String("http-listen", &flags.http_listen, "HOST:PORT for /healthz, /readyz, /metrics");
  set.String("tls-ca", &flags.tls_ca, "PEM CA that proxy client certificates must chain to (mTLS)");
  set.String("tls-cert", &flags.tls_cert, "PEM server certificate (mTLS)");
  set.String("tls-key", &flags.tls_key, "PEM server key (mTLS)");
  set.String("admin-token-file", &flags.admin_token_file,
             "file holding the bearer token AdminService calls must present");
  set.Bool("insecure", &flags.insecure,
           "allow a plaintext gRPC listener on a non-loopback address");
  set.String("log-level", &flags.log_level, "debug, info, warn or error");
  set.Int("report-interval-seconds", &flags.report_interval_seconds,
          "how often proxies send load reports", "", 1, 3600);
  set.String("upstream-ca", &flags.upstream_ca,
             "PEM file of extra CAs trusted when probing HTTPS providers");
  if (absl::Status status = set.Parse(argc, argv); !status.ok()) {
    std::cerr << "berry-control-plane: " << status.message() << "\n";
    return 2;
  }
  if (set.help_requested()) {
    std::cout << set.Help();
    return 0;
  }
  auto level = berry::log::ParseLevel(flags.log_level);
  if (!level.ok() || flags.config.empty()) {
    std::cerr << "berry-control-plane: "
              << (flags.config.empty() ? "--config FILE is required"
                                       : std::string(level.status().message()))
              << "\n";
    return 2;
  }
  berry::log::SetLevel(*level);
  berry::log::Info("open-file limit",
                   {{"limit", std::to_string(berry::cli::RaiseOpenFileLimit())}});
  const bool tls = !flags.tls_ca.empty() || !flags.tls_cert.empty() || !flags.tls_key.empty();
  if (tls && (flags.tls_ca.empty() || flags.tls_cert.empty() || flags.tls_key.empty())) {
    std::cerr << "berry-control-plane: mTLS needs all of --tls-ca, --tls-cert and --tls-key\n";
    return 2;
  }
  if (!tls && !flags.insecure && !IsLoopback(flags.grpc_listen)) {
    std::cerr << "berry-control-plane: --grpc-listen " << flags.grpc_listen
              << " is not a loopback address: give --tls-ca/--tls-cert/--tls-key (route tables "
                 "carry provider keys) or --insecure\n";
    return 2;
  }

  ConfigSource source(flags.config);
  const ConfigSource::ReloadResult first_load = source.Reload();
  if (!first_load.errors.empty()) {
    std::cerr << "berry-control-plane: " << flags.config << " is invalid ("
              << first_load.errors.size() << " error" << (first_load.errors.size() == 1 ? "" : "s")
              << "):" << ErrorList(first_load.errors) << "\n";
    return 1;
  }
  LogWarnings(first_load.warnings);
  auto fleet_or = FleetStats::Create(berry::control_plane::FleetStatsOptions::FromSettings(
      berry::route_table::Compile(*source.Current()).settings()));
  if (!fleet_or.ok()) {
    std::cerr << "berry-control-plane: " << fleet_or.status().message() << "\n";
    return 1;
  }
  FleetStats& fleet = **fleet_or;
  RoutePublisher publisher;
  berry::control_plane::FleetStatsHealthSink health_sink(fleet);
  berry::control_plane::HealthCheckerOptions health_options;
  if (!flags.upstream_ca.empty()) {
    auto contexts = berry::upstream::TlsContexts::Create(flags.upstream_ca);
    if (!contexts.ok()) {
      std::cerr << "berry-control-plane: " << contexts.status().message() << "\n";
      return 1;
    }
    health_options.tls_contexts = *contexts;
  }
  auto health_or = HealthChecker::Create(health_sink, health_options);
  if (!health_or.ok()) {
    std::cerr << "berry-control-plane: " << health_or.status().message() << "\n";
    return 1;
  }
  HealthChecker& health = **health_or;
  std::unique_ptr<berry::admin::AdminAuth> admin_auth = std::make_unique<berry::admin::AdminAuth>();
  if (!flags.admin_token_file.empty()) {
    auto auth = berry::admin::AdminAuth::FromFile(flags.admin_token_file);
    if (!auth.ok()) {
      std::cerr << "berry-control-plane: " << auth.status().message() << "\n";
      return 1;
    }
    admin_auth = *std::move(auth);
  } else {
    berry::log::Warn("AdminService is open: no --admin-token-file");
  }
  berry::admin::BackendOverrides overrides;
  berry::admin::EventHub events;
  Plane plane{source, fleet, publisher, health, overrides, events};
  health.Update(berry::route_table::Compile(*source.Current()));
  Publish(plane);

  berry::metrics::Registry registry;
  (void)registry.AddCallbackGauge("berry_cp_connected_proxies",
                                  "Proxies with an open StreamRoutes stream.",
                                  [&] { return static_cast<double>(publisher.connected_count()); });
  (void)registry.AddCallbackCounter("berry_cp_config_pushes_total", "Route tables sent to proxies.",
                                    [&] { return static_cast<double>(publisher.pushes()); });
  (void)registry.AddCallbackCounter("berry_cp_nacks_total", "Route tables proxies rejected.",
                                    [&] { return static_cast<double>(publisher.nacks()); });
  (void)registry.AddCallbackCounter("berry_cp_config_rejected_total",
                                    "Config reloads rejected by validation.",
                                    [&] { return static_cast<double>(source.rejected()); });
  (void)registry.AddCallbackCounter(
      "berry_cp_admin_unauthenticated_total",
      "AdminService calls refused for a missing or wrong bearer token.",
      [&] { return static_cast<double>(admin_auth->unauthenticated()); });
  if (absl::Status status = health.RegisterMetrics(registry); !status.ok()) {
    std::cerr << "berry-control-plane: " << status.message() << "\n";
    return 1;
  }
  if (absl::Status status = fleet.RegisterMetrics(registry); !status.ok()) {
    std::cerr << "berry-control-plane: " << status.message() << "\n";
    return 1;
  }

  berry::control_plane::ReportSink reports;
  reports.closed = [&fleet](const std::string& node) { fleet.ForgetNode(node); };
  reports.fold = [&fleet](const berry::v1::StreamLoadReportsRequest& report,
                          const std::string& node) {
    auto acked = fleet.Fold(report, node);
    if (!acked.ok()) {
      berry::log::Warn("load report rejected",
                       {{"node", node}, {"reason", std::string(acked.status().message())}});
      return fleet.AckedSequence(node);
    }
    return *acked;
  };
  berry::control_plane::DiscoveryService discovery(publisher, reports,
                                                   absl::Seconds(flags.report_interval_seconds));
  berry::admin::AdminService admin(
      {source, fleet, publisher, overrides, *admin_auth, events, [&plane] { Publish(plane); },
       [&plane] {
         plane.health.Update(berry::route_table::Compile(*plane.source.Current()));
         Publish(plane);
       }});

  grpc::EnableDefaultHealthCheckService(true);
  // Touching the descriptor links grpc/health/v1/health.proto into the pool reflection reads.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (tls) {
    auto ca = berry::cli::ReadFile(flags.tls_ca);
    auto cert = berry::cli::ReadFile(flags.tls_cert);
    auto key = berry::cli::ReadFile(flags.tls_key);
    for (const auto* file : {&ca, &cert, &key}) {
      if (!file->ok()) {
        std::cerr << "berry-control-plane: " << file->status().message() << "\n";
        return 1;
      }
    }
    grpc::SslServerCredentialsOptions options(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = *ca;
    options.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(options);
  } else {
    berry::log::Warn(
        "gRPC listener is plaintext: route tables (with provider keys) travel "
        "unencrypted; use --tls-* outside a single host",
        {{"address", flags.grpc_listen}});
  }
  int grpc_port = 0;
  builder.AddListeningPort(flags.grpc_listen, credentials, &grpc_port);
  builder.RegisterService(&discovery);
  builder.RegisterService(&admin);
  // Keepalive: we ping idle proxies every 30 s, and let proxies ping us as often as every 10 s.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (grpc_server == nullptr || grpc_port == 0) {
    std::cerr << "berry-control-plane: cannot listen on " << flags.grpc_listen << "\n";
    return 1;
  }

  berry::control_plane::StatusEndpoints endpoints{
      [&] { return publisher.Current() != nullptr; }, [&] { return registry.Render(); },
      [&] { return ProxiesJson(publisher); }, [&] { return BackendsJson(fleet); }};
  berry::server::ServerOptions http_options;
  auto http_listen = berry::cli::ParseHostPort(flags.http_listen, "--http-listen");
  if (!http_listen.ok()) {
    std::cerr << "berry-control-plane: " << http_listen.status().message() << "\n";
    return 2;
  }
  http_options.host = http_listen->first;
  http_options.port = http_listen->second;
  http_options.threads = 1;
  auto http_server =
      berry::server::HttpServer::Create(http_options, [&](int, berry::server::net::io_context&) {
        return std::make_unique<berry::control_plane::StatusHandler>(endpoints);
      });
  if (!http_server.ok()) {
    std::cerr << "berry-control-plane: " << http_server.status().message() << "\n";
    return 1;
  }
  (*http_server)->Start();

  if (absl::Status watch = source.Watch([&] { Reload(plane, "file change"); }); !watch.ok()) {
    berry::log::Warn(std::string_view(watch.message().data(), watch.message().size()));
  }

  const std::string grpc_address =
      absl::StrCat(flags.grpc_listen.substr(0, flags.grpc_listen.rfind(':')), ":", grpc_port);
  const std::string http_address = absl::StrCat(http_options.host, ":", (*http_server)->port());
  berry::log::Info("listening", {{"grpc", grpc_address}, {"http", http_address}});
  std::printf("berry-control-plane listening on grpc %s http %s\n", grpc_address.c_str(),
              http_address.c_str());
  std::fflush(stdout);

  // Fleet health moves with the load reports: re-overlay every second, push only on change.
  absl::Notification stop_recompute;
  std::thread recompute([&] {
    while (!stop_recompute.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      Publish(plane);
    }
  });
  health.Start();

  for (;;) {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (signal_number == SIGHUP) {
      Reload(plane, "SIGHUP");
      continue;
    }
    break;
  }
  berry::log::Info("stopping");
  stop_recompute.Notify();
  recompute.join();
  health.Stop();
  source.StopWatching();
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  (*http_server)->BeginDrain();
  (*http_server)->Stop();
  return 0;
}
