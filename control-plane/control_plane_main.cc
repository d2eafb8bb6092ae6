// berry-control-plane: holds the validated config, compiles it into the RouteTable (versioned by
// content hash) and streams it to every connected berry-proxy over RouteDiscoveryService; watches
// the config file; serves /healthz, /readyz and /metrics over HTTP. The work is ControlPlane's
// (control_plane.h); this file parses flags into its options and turns SIGHUP into a reload and
// SIGTERM/SIGINT into a stop.
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/time/time.h"
#include "common/cli/flags.h"
#include "common/cli/process.h"
#include "common/http/client.h"
#include "common/log/log.h"
#include "control-plane/admin/admin_service.h"
#include "control-plane/control_plane.h"

namespace {

using berry::control_plane::ControlPlane;
using berry::control_plane::ControlPlaneOptions;

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
  int64_t quota_rebuild_seconds = 5;
  std::string upstream_ca;
};

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
  set.Int("quota-rebuild-seconds", &flags.quota_rebuild_seconds,
          "after start, collect the proxies' rate-limit accounts this long before granting", "", 0,
          3600);
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
  if (!tls && !flags.insecure && !berry::cli::IsLoopbackAddress(flags.grpc_listen)) {
    std::cerr << "berry-control-plane: --grpc-listen " << flags.grpc_listen
              << " is not a loopback address: give --tls-ca/--tls-cert/--tls-key (route tables "
                 "carry provider keys) or --insecure\n";
    return 2;
  }

  auto http_listen = berry::cli::ParseHostPort(flags.http_listen, "--http-listen");
  if (!http_listen.ok()) {
    std::cerr << "berry-control-plane: " << http_listen.status().message() << "\n";
    return 2;
  }

  ControlPlaneOptions options;
  options.config_path = flags.config;
  options.grpc_listen = flags.grpc_listen;
  options.http_host = http_listen->first;
  options.http_port = http_listen->second;
  options.report_interval = absl::Seconds(flags.report_interval_seconds);
  options.quota.rebuild = absl::Seconds(flags.quota_rebuild_seconds);
  if (!flags.upstream_ca.empty()) {
    auto contexts = berry::upstream::TlsContexts::Create(flags.upstream_ca);
    if (!contexts.ok()) {
      std::cerr << "berry-control-plane: " << contexts.status().message() << "\n";
      return 1;
    }
    options.health.tls_contexts = *contexts;
  }
  if (!flags.admin_token_file.empty()) {
    auto auth = berry::admin::AdminAuth::FromFile(flags.admin_token_file);
    if (!auth.ok()) {
      std::cerr << "berry-control-plane: " << auth.status().message() << "\n";
      return 1;
    }
    options.admin_auth = *std::move(auth);
  }
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
    grpc::SslServerCredentialsOptions ssl(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = *ca;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    options.grpc_credentials = grpc::SslServerCredentials(ssl);
  }

  auto plane = ControlPlane::Create(std::move(options));
  if (!plane.ok()) {
    std::cerr << "berry-control-plane: " << plane.status().message() << "\n";
    return 1;
  }
  if (absl::Status started = (*plane)->Start(); !started.ok()) {
    std::cerr << "berry-control-plane: " << started.message() << "\n";
    return 1;
  }
  const std::string& grpc_address = (*plane)->grpc_address();
  const std::string& http_address = (*plane)->http_address();
  berry::log::Info("listening", {{"grpc", grpc_address}, {"http", http_address}});
  std::printf("berry-control-plane listening on grpc %s http %s\n", grpc_address.c_str(),
              http_address.c_str());
  std::fflush(stdout);

  for (;;) {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (signal_number == SIGHUP) {
      (*plane)->Reload("SIGHUP");
      continue;
    }
    break;
  }
  berry::log::Info("stopping");
  (*plane)->Stop();
  return 0;
}
