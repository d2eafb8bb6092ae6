// berry-proxy: Berry's data plane. Standalone mode (--config FILE) compiles the TOML into a
// RouteTable in-process and serves from it through the same code path managed mode uses.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/cli/flags.h"
#include "common/cli/process.h"
#include "common/config/config.h"
#include "common/http/status.h"
#include "common/log/log.h"
#include "common/route_table/compile.h"
#include "common/strings/views.h"
#include "data-plane/managed/control_plane_client.h"
#include "data-plane/proxy/local_endpoints.h"
#include "data-plane/proxy/proxy_handler.h"

namespace {

using berry::proxy::RouteStore;

struct Flags {
  std::string config;
  std::string listen = "127.0.0.1:8080";
  int64_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::string log_level = "info";
  int64_t drain_seconds = 20;
  int64_t shutdown_delay_seconds = 0;
  std::string access_log = "stdout";
  std::string upstream_ca;
  std::string control_plane;
  std::string node_id;
  std::string state_dir;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string allowed_upstream_hosts;
  int64_t max_connections = 10000;
  int64_t control_plane_keepalive_seconds = 20;
  bool insecure = false;
  std::string admin_listen;
  bool metrics_user_labels = false;
};

// Channel credentials for the control plane: mTLS when --tls-* is given, else plaintext — which
// off loopback needs --insecure, as the control plane's own listener does.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ControlPlaneCredentials(
    const Flags& flags) {
  if (flags.tls_ca.empty() && flags.tls_cert.empty() && flags.tls_key.empty()) {
    if (!flags.control_plane.empty() && !flags.insecure &&
        !berry::cli::IsLoopbackAddress(flags.control_plane)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--control-plane ", flags.control_plane,
          " is not a loopback address: give --tls-ca/--tls-cert/--tls-key (route tables carry "
          "provider keys) or --insecure"));
    }
    return grpc::InsecureChannelCredentials();
  }
  if (flags.tls_ca.empty() || flags.tls_cert.empty() || flags.tls_key.empty()) {
    return absl::InvalidArgumentError("mTLS needs all of --tls-ca, --tls-cert and --tls-key");
  }
  grpc::SslCredentialsOptions options;
  for (const auto& [path, field] : {std::pair{&flags.tls_ca, &options.pem_root_certs},
                                    std::pair{&flags.tls_cert, &options.pem_cert_chain},
                                    std::pair{&flags.tls_key, &options.pem_private_key}}) {
    auto text = berry::cli::ReadFile(*path);
    if (!text.ok()) {
      return text.status();
    }
    *field = *std::move(text);
  }
  return grpc::SslCredentials(options);
}

// Loads, validates and compiles the config; every error is printed.
bool LoadInto(RouteStore& store, berry::proxy::ProxyMetrics& metrics, const std::string& path,
              bool at_start) {
  const berry::config::LoadResult result = berry::config::LoadFile(path);
  if (!result.config) {
    metrics.route_table_reloads_failed->Increment();
    std::string all;
    for (const auto& error : result.errors) {
      absl::StrAppend(&all, "\n  ", error.ToString());
    }
    if (at_start) {
      std::cerr << "berry-proxy: " << path << " is invalid (" << result.errors.size() << " error"
                << (result.errors.size() == 1 ? "" : "s") << "):" << all << "\n";
    } else {
      berry::log::Error("config rejected; the running route table stays in force",
                        {{"file", path}, {"errors", all}});
    }
    return false;
  }
  berry::v1::RouteTable table = berry::route_table::Compile(*result.config);
  const std::string version = table.version_info();
  const bool open = table.client_keys_size() == 0;
  if (absl::Status status = store.Apply(std::move(table)); !status.ok()) {
    metrics.route_table_reloads_failed->Increment();
    if (at_start) {
      std::cerr << "berry-proxy: " << path << ": " << status.message() << "\n";
    } else {
      berry::log::Error("config rejected; the running route table stays in force",
                        {{"file", path}, {"error", berry::strings::Std(status.message())}});
    }
    return false;
  }
  metrics.route_table_reloads_ok->Increment();
  berry::log::Info("route table loaded", {{"file", path}, {"version", version}});
  for (const auto& warning : result.warnings) {
    berry::log::Warn("config warning",
                     {{"key", warning.key_path}, {"warning", warning.ToString()}});
  }
  if (open) {
    berry::log::Warn("no [users] configured: the gateway is open to anyone who can reach it");
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken synchronously by the main thread (sigwait); every thread started later —
  // workers, gRPC's own — inherits the mask, so none of them can die of a SIGHUP or SIGTERM.
  // This comes first: gRPC starts threads as soon as credentials are created.
  sigset_t signals = berry::cli::BlockTerminationSignals();
  Flags flags;
  berry::cli::FlagSet set("berry-proxy",
                          "Berry's data plane: an OpenAI-compatible load balancer for AI "
                          "providers.\nStandalone mode serves from --config.");
  set.String("config", &flags.config, "Berry TOML config (standalone mode)", "CONFIG_PATH");
  set.String("listen", &flags.listen, "HOST:PORT to serve clients on (port 0 = any free port)",
             "BIND_ADDRESS");
  set.Int("threads", &flags.threads, "worker threads, one event loop each", "", 1, 1024);
  set.String("log-level", &flags.log_level, "debug, info, warn or error");
  set.Int("drain-seconds", &flags.drain_seconds,
          "on SIGTERM/SIGINT, how long in-flight requests may finish", "", 0, 3600);
  set.Int("shutdown-delay-seconds", &flags.shutdown_delay_seconds,
          "on SIGTERM, answer /readyz 503 at once but keep serving this long (load balancers "
          "stop sending) before draining",
          "", 0, 3600);
  set.String("access-log", &flags.access_log, "where the JSON access log goes: stdout or off");
  set.String("upstream-ca", &flags.upstream_ca,
             "PEM file of extra CAs trusted for HTTPS upstreams (besides the system store)");
  set.String("control-plane", &flags.control_plane,
             "HOST:PORT of berry-control-plane (managed mode, instead of --config)");
  set.Int("control-plane-keepalive-seconds", &flags.control_plane_keepalive_seconds,
          "managed mode: ping the control plane this often and reconnect when a ping goes "
          "unanswered for half of it (a path that silently stopped carrying packets)",
          "", 10, 3600);
  set.String("node-id", &flags.node_id,
             "this proxy's unique id in managed mode (default: the host name)", "NODE_ID");
  set.String("state-dir", &flags.state_dir,
             "directory where managed mode keeps the last good route table (mode 0600)");
  set.String("tls-ca", &flags.tls_ca, "PEM CA the control plane's certificate must chain to");
  set.String("tls-cert", &flags.tls_cert, "PEM client certificate for the control plane (mTLS)");
  set.String("tls-key", &flags.tls_key, "PEM client key for the control plane (mTLS)");
  set.String("admin-listen", &flags.admin_listen,
             "HOST:PORT for /metrics, /healthz and /readyz apart from clients; /metrics then "
             "leaves the client listener (default: everything on --listen)");
  set.Bool("metrics-user-labels", &flags.metrics_user_labels,
           "label berry_rate_limited_total by user id (default: one series for all users)");
  set.Bool("insecure", &flags.insecure,
           "allow a plaintext gRPC channel to a control plane that is not on loopback");
  set.String("allowed-upstream-hosts", &flags.allowed_upstream_hosts,
             "comma-separated hosts providers may live on; a table naming another is refused "
             "(NACKed in managed mode). Empty = any");
  set.Int("max-connections", &flags.max_connections,
          "client connections open at once, over all threads; one more is answered 503 and "
          "closed at once (0 = no limit)",
          "", 0, 10000000);
  if (absl::Status status = set.Parse(argc, argv); !status.ok()) {
    std::cerr << "berry-proxy: " << status.message() << "\n";
    return 2;
  }
  if (set.help_requested()) {
    std::cout << set.Help();
    return 0;
  }
  if (!set.positional().empty()) {
    std::cerr << "berry-proxy: unexpected argument '" << set.positional()[0] << "'\n";
    return 2;
  }
  auto level = berry::log::ParseLevel(flags.log_level);
  if (!level.ok()) {
    std::cerr << "berry-proxy: --log-level: " << level.status().message() << "\n";
    return 2;
  }
  berry::log::SetLevel(*level);
  berry::log::Info("open-file limit",
                   {{"limit", std::to_string(berry::cli::RaiseOpenFileLimit())}});
  if (flags.access_log != "stdout" && flags.access_log != "off") {
    std::cerr << "berry-proxy: --access-log must be stdout or off\n";
    return 2;
  }
  const bool managed = !flags.control_plane.empty();
  if (flags.config.empty() == !managed) {
    std::cerr << "berry-proxy: give exactly one of --config FILE (standalone) or --control-plane "
                 "HOST:PORT (managed)\n";
    return 2;
  }
  if (managed && flags.node_id.empty()) {
    // A container's or pod's host name is unique among its replicas; compose replicas of one
    // service cannot be given distinct ids otherwise.
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
      std::cerr << "berry-proxy: managed mode needs --node-id (the host name is unavailable)\n";
      return 2;
    }
    flags.node_id = host;
  }
  auto credentials = ControlPlaneCredentials(flags);
  if (!credentials.ok()) {
    std::cerr << "berry-proxy: " << credentials.status().message() << "\n";
    return 2;
  }
  auto address = berry::cli::ParseHostPort(flags.listen, "--listen");
  if (!address.ok()) {
    std::cerr << "berry-proxy: " << address.status().message() << "\n";
    return 2;
  }
  std::pair<std::string, uint16_t> admin_address;
  if (!flags.admin_listen.empty()) {
    auto parsed = berry::cli::ParseHostPort(flags.admin_listen, "--admin-listen");
    if (!parsed.ok()) {
      std::cerr << "berry-proxy: " << parsed.status().message() << "\n";
      return 2;
    }
    admin_address = *std::move(parsed);
  }

  RouteStore routes;
  if (!flags.allowed_upstream_hosts.empty()) {
    routes.set_allowed_upstream_hosts(
        absl::StrSplit(flags.allowed_upstream_hosts, ',', absl::SkipEmpty()));
  }
  berry::proxy::ProxyMetrics metrics(routes, {.on_client_listener = flags.admin_listen.empty(),
                                              .user_labels = flags.metrics_user_labels});
  // Managed: per-user limits are held fleet-wide (README.md, "Fleet-wide rate limits"); the
  // request path wakes the load reporter when a lease runs dry.
  std::shared_ptr<berry::fleet::FleetStatus> fleet_status;
  std::atomic<berry::managed::LoadReporter*> wake_target{nullptr};
  if (managed) {
    fleet_status = std::make_shared<berry::fleet::FleetStatus>();
    fleet_status->wake = [&wake_target] {
      if (berry::managed::LoadReporter* reporter = wake_target.load()) {
        reporter->Wake();
      }
    };
    routes.set_fleet_status(fleet_status);
  }
  if (!managed && !LoadInto(routes, metrics, flags.config, /*at_start=*/true)) {
    return 1;
  }
  if (managed && !flags.state_dir.empty()) {
    // A directory that is missing is made (0700: the table holds provider keys); one that
    // cannot be written is refused now, not found out at the first table.
    if (absl::Status status = berry::managed::PrepareStateDir(flags.state_dir); !status.ok()) {
      std::cerr << "berry-proxy: --state-dir: " << status.message() << "\n";
      return 1;
    }
    // Serve the last good table at once; the control plane replaces it if it has a newer one.
    if (auto persisted = berry::managed::LoadPersistedTable(flags.state_dir); persisted.ok()) {
      const std::string version = persisted->version_info();
      if (absl::Status status = routes.Apply(*std::move(persisted)); status.ok()) {
        berry::log::Info("serving the route table persisted in --state-dir",
                         {{"version", version}});
      }
    } else if (persisted.status().code() != absl::StatusCode::kNotFound) {
      berry::log::Warn("ignoring the persisted route table",
                       {{"reason", std::string(persisted.status().message())}});
    }
  }
  auto tls = berry::upstream::TlsContexts::Create(flags.upstream_ca);
  if (!tls.ok()) {
    std::cerr << "berry-proxy: " << tls.status().message() << "\n";
    return 1;
  }
  berry::proxy::AccessLog access_log(flags.access_log == "stdout" ? 1 : -1);

  berry::proxy::ServerOptions options;
  options.host = address->first;
  options.port = address->second;
  options.threads = static_cast<int>(flags.threads);
  options.max_connections = flags.max_connections;
  auto server = berry::proxy::HttpServer::Create(
      options, [&](int, berry::proxy::net::io_context& io_context) {
        return std::make_unique<berry::proxy::ProxyHandler>(io_context, routes, metrics, *tls,
                                                            access_log);
      });
  if (!server.ok()) {
    std::cerr << "berry-proxy: " << server.status().message() << "\n";
    return 1;
  }
  const berry::proxy::HttpServer* http_server = server->get();
  for (const absl::Status& status :
       {metrics.registry().AddCallbackGauge(
            "berry_downstream_connections", "Client connections open right now.",
            [http_server] { return static_cast<double>(http_server->open_connections()); }),
        metrics.registry().AddCallbackCounter(
            "berry_access_log_dropped_lines_total",
            "Access log lines dropped because stdout's reader fell behind (the log never blocks "
            "a worker).",
            [&access_log] { return static_cast<double>(access_log.dropped_lines()); }),
        metrics.registry().AddCallbackCounter(
            "berry_downstream_connections_refused_total",
            "Client connections answered 503 and closed at once because --max-connections "
            "were open.",
            [http_server] { return static_cast<double>(http_server->refused_connections()); })}) {
    if (!status.ok()) {
      std::cerr << "berry-proxy: " << status.message() << "\n";
      return 1;
    }
  }
  (*server)->Start();
  const std::string listening = absl::StrCat(options.host, ":", (*server)->port());

  // --admin-listen: the status port, one thread of its own, up until the very end (a scraper or
  // probe sees /readyz turn 503 through the shutdown delay and the drain).
  berry::server::StatusEndpoints admin_endpoints;
  std::unique_ptr<berry::server::HttpServer> admin_server;
  if (!flags.admin_listen.empty()) {
    admin_endpoints.ready = [&routes] {
      const auto generation = routes.Current();
      return berry::proxy::ProxyReadiness(routes, generation.get());
    };
    admin_endpoints.metrics = [&metrics] { return metrics.Render(); };
    berry::server::ServerOptions admin_options;
    admin_options.host = admin_address.first;
    admin_options.port = admin_address.second;
    admin_options.threads = 1;
    auto created = berry::server::HttpServer::Create(
        admin_options, [&admin_endpoints](int, berry::server::net::io_context&) {
          return std::make_unique<berry::server::StatusHandler>(admin_endpoints);
        });
    if (!created.ok()) {
      std::cerr << "berry-proxy: --admin-listen: " << created.status().message() << "\n";
      return 1;
    }
    admin_server = *std::move(created);
    admin_server->Start();
    const std::string admin = absl::StrCat(admin_options.host, ":", admin_server->port());
    berry::log::Info("admin listening", {{"address", admin}});
    std::printf("berry-proxy admin listening on http://%s\n", admin.c_str());
  }

  std::unique_ptr<berry::managed::RouteSubscriber> subscriber;
  std::unique_ptr<berry::managed::LoadReporter> reporter;
  std::unique_ptr<berry::fleet::QuotaClient> quota;
  if (managed) {
    berry::managed::ClientOptions client;
    client.target = flags.control_plane;
    client.credentials = *credentials;
    client.node.set_id(flags.node_id);
    client.node.set_listen_address(listening);
    client.node.set_build_version("berry-proxy 0.1.0");
    client.state_dir = flags.state_dir;
    client.keepalive = std::chrono::seconds(flags.control_plane_keepalive_seconds);
    auto channel = berry::managed::MakeChannel(client);
    subscriber =
        std::make_unique<berry::managed::RouteSubscriber>(client, channel, routes, metrics);
    reporter = std::make_unique<berry::managed::LoadReporter>(client, channel, routes);
    quota = std::make_unique<berry::fleet::QuotaClient>(fleet_status, [&routes] {
      const auto generation = routes.Current();
      return generation != nullptr ? generation->fleet : nullptr;
    });
    reporter->set_quota(quota.get());
    wake_target.store(reporter.get());
    const berry::fleet::FleetStatus* fleet = fleet_status.get();
    if (absl::Status status = metrics.registry().AddCallbackGauge(
            "berry_rate_limit_fallback",
            "1 while requests without lease credit are admitted on this proxy's fallback share "
            "of each limit (control plane away or rebuilding), else 0.",
            [fleet] { return fleet->away.load() ? 1.0 : 0.0; });
        !status.ok()) {
      std::cerr << "berry-proxy: " << status.message() << "\n";
      return 1;
    }
    if (absl::Status status = metrics.registry().AddCallbackCounter(
            "berry_rate_limit_fallback_admitted_total",
            "Requests admitted on the fallback share of a fleet-wide limit.",
            [fleet] { return static_cast<double>(fleet->fallback_admitted.load()); });
        !status.ok()) {
      std::cerr << "berry-proxy: " << status.message() << "\n";
      return 1;
    }
    // What a proxy cannot tell from its route table alone: whether updates can still reach it.
    // Alerts compare it across the fleet (deploy/k8s/helm/berry/files/rules/berry-alerts.yml).
    const berry::managed::RouteSubscriber* routes_stream = subscriber.get();
    if (absl::Status status = metrics.registry().AddCallbackGauge(
            "berry_control_plane_connected",
            "1 while this managed proxy holds a route stream to the control plane, else 0.",
            [routes_stream] { return routes_stream->connected() ? 1.0 : 0.0; });
        !status.ok()) {
      std::cerr << "berry-proxy: " << status.message() << "\n";
      return 1;
    }
    subscriber->Start();
    reporter->Start();
  }
  berry::log::Info("listening",
                   {{"address", listening}, {"threads", std::to_string(flags.threads)}});
  // A line scripts and tests wait for, on stdout next to the access log.
  std::printf("berry-proxy listening on http://%s\n", listening.c_str());
  std::fflush(stdout);

  for (;;) {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (signal_number == SIGHUP) {
      if (managed) {
        // There is no file to re-read: the control plane pushes every change by itself.
        berry::log::Info("SIGHUP ignored: route tables come from the control plane",
                         {{"control_plane", flags.control_plane}});
        continue;
      }
      berry::log::Info("SIGHUP: reloading config", {{"file", flags.config}});
      LoadInto(routes, metrics, flags.config, /*at_start=*/false);
      continue;
    }
    break;
  }
  routes.MarkShuttingDown();  // /readyz answers 503 from now on
  if (flags.shutdown_delay_seconds > 0) {
    // Keep serving while load balancers notice: Kubernetes removes the pod from its Service's
    // endpoints concurrently with SIGTERM, and connections keep arriving until that propagates.
    // A second SIGTERM or SIGINT skips the rest of the delay; SIGHUP is ignored now.
    berry::log::Info("shutting down: not ready, still serving",
                     {{"delay_seconds", std::to_string(flags.shutdown_delay_seconds)}});
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::seconds(flags.shutdown_delay_seconds);
    for (;;) {
      const auto left = until - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        break;
      }
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      const timespec wait{static_cast<time_t>(ns / 1'000'000'000),
                          static_cast<long>(ns % 1'000'000'000)};
      const int signal_number = sigtimedwait(&signals, nullptr, &wait);
      if (signal_number == SIGTERM || signal_number == SIGINT) {
        berry::log::Info("second termination signal: draining now");
        break;
      }
    }
  }
  berry::log::Info("draining", {{"deadline_seconds", std::to_string(flags.drain_seconds)}});
  (*server)->BeginDrain();
  const bool idle = (*server)->WaitIdle(std::chrono::seconds(flags.drain_seconds));
  if (!idle) {
    berry::log::Warn("drain deadline passed; cancelling the requests still in flight",
                     {{"in_flight", std::to_string((*server)->active_requests())}});
  }
  (*server)->Stop();
  if (admin_server != nullptr) {
    admin_server->Stop();
  }
  if (managed) {
    subscriber->Stop();
    wake_target.store(nullptr);
    reporter->Stop();  // a last report is not awaited: the control plane may be gone too
  }
  berry::log::Info("stopped");
  return 0;
}
