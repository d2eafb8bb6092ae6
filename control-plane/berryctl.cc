#include "control-plane/berryctl.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "berry/v1/admin.grpc.pb.h"
#include "common/cli/flags.h"
#include "common/cli/process.h"
#include "common/config/config.h"
#include "control-plane/http_probe.h"

namespace berry::berryctl {
namespace {

struct Options {
  std::string server = "127.0.0.1:50051";
  std::string token_file;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string output = "table";
  std::string file;
  std::string expect_version;
  bool dry_run = false;
  int64_t timeout_seconds = 2;  // probe
};

struct Command {
  std::string name;
  std::string usage;  // after "berryctl "
  std::string summary;
  bool needs_file = false;
  bool apply_flags = false;  // --dry-run, --expect-version
  bool local = false;        // needs no control plane (flags --timeout)
};

const std::vector<Command>& Commands() {
  static const auto* const kCommands = new std::vector<Command>{
      {"validate", "validate -f FILE", "Checks a config file offline (no server needed).", true},
      {"apply", "apply -f FILE [--dry-run] [--expect-version V]",
       "Validates and applies a config on the control plane; prints the diff.", true, true},
      {"diff", "diff -f FILE", "Shows what applying FILE would change (a dry run).", true},
      {"get", "get config|version", "Prints the running config (secrets redacted) or its version."},
      {"backends", "backends", "Lists backends with health and fleet statistics."},
      {"proxies", "proxies", "Lists proxies with their ACKed version."},
      {"backend", "backend enable|disable|drain ID",
       "Enables, disables or drains a backend without editing the config file."},
      {"watch", "watch", "Streams version and health changes until Ctrl-C."},
      {"probe", "probe URL [--timeout SECONDS]",
       "GETs an http:// URL; exit 0 only on 200 within the timeout (container health checks).",
       false, false, true},
  };
  return *kCommands;
}

std::string Usage() {
  std::string out =
      "usage: berryctl [--server ADDR] [--token-file F] [--tls-ca F --tls-cert F --tls-key F]\n"
      "                [-o table|json] COMMAND [ARGS]\n\ncommands:\n";
  for (const Command& command : Commands()) {
    absl::StrAppend(&out, absl::StrFormat("  %-48s %s\n", command.usage, command.summary));
  }
  absl::StrAppend(&out,
                  "\n`berryctl COMMAND --help` lists every flag. Environment: BERRY_SERVER, "
                  "BERRY_TOKEN_FILE.\nExit codes: 0 ok, 1 refused/failed, 2 usage, 3 control "
                  "plane unreachable, 4 authentication refused.\n");
  return out;
}

void AddGlobalFlags(cli::FlagSet& set, Options& options) {
  set.String("server", &options.server, "control plane gRPC address HOST:PORT", "BERRY_SERVER");
  set.String("token-file", &options.token_file, "file holding the admin bearer token",
             "BERRY_TOKEN_FILE");
  set.String("tls-ca", &options.tls_ca, "PEM CA the control plane's certificate chains to");
  set.String("tls-cert", &options.tls_cert, "PEM client certificate (mTLS)");
  set.String("tls-key", &options.tls_key, "PEM client key (mTLS)");
  set.String("output", &options.output, "output format, table or json (also -o)");
}

bool TakesValue(std::string_view name) {
  static const char* const kNames[] = {"server",   "token-file",     "tls-ca",
                                       "tls-cert", "tls-key",        "output",
                                       "file",     "expect-version", "timeout"};
  return std::any_of(std::begin(kNames), std::end(kNames),
                     [&](const char* n) { return name == n; });
}

// -o and -f are the short forms of --output and --file.
std::string Normalise(const std::string& arg) {
  if (arg == "-o") {
    return "--output";
  }
  if (arg == "-f") {
    return "--file";
  }
  if (arg.starts_with("-o=")) {
    return "--output=" + arg.substr(3);
  }
  if (arg.starts_with("-f=")) {
    return "--file=" + arg.substr(3);
  }
  return arg;
}

std::string Json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string Time(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) {
    return "-";
  }
  google::protobuf::Timestamp seconds = time;
  seconds.set_nanos(0);
  return google::protobuf::util::TimeUtil::ToString(seconds);
}

std::string ErrorText(const v1::ConfigError& e, const std::string& file) {
  std::string out = e.file().empty() ? file : e.file();
  if (e.line() > 0) {
    absl::StrAppend(&out, ":", e.line());
    if (e.column() > 0) {
      absl::StrAppend(&out, ":", e.column());
    }
  }
  if (!e.key_path().empty()) {
    absl::StrAppend(&out, out.empty() ? "" : ": ", e.key_path());
  }
  absl::StrAppend(&out, out.empty() ? "" : ": ", e.reason());
  return out;
}

// Prints a table with left-aligned columns.
void Table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line += std::string(widths[i] - row[i].size() + 2, ' ');
      }
    }
    out << line << "\n";
  }
}

std::string Seconds(double s) { return s <= 0 ? "-" : absl::StrFormat("%.3fs", s); }

class Runner {
 public:
  Runner(Options options, std::ostream& out, std::ostream& err)
      : options_(std::move(options)), out_(out), err_(err) {}

  int Fail(int code, const std::string& reason) {
    err_ << "berryctl: " << reason << "\n";
    return code;
  }

  int RpcFail(const grpc::Status& status) {
    switch (status.error_code()) {
      case grpc::StatusCode::UNAVAILABLE:
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        return Fail(kExitUnreachable, absl::StrCat("cannot reach the control plane at ",
                                                   options_.server, ": ", status.error_message()));
      case grpc::StatusCode::UNAUTHENTICATED:
        return Fail(
            kExitUnauthenticated,
            absl::StrCat("authentication refused (check --token-file): ", status.error_message()));
      case grpc::StatusCode::FAILED_PRECONDITION:
        return Fail(kExitFailed, absl::StrCat("refused: ", status.error_message()));
      default:
        return Fail(kExitFailed, absl::StrCat("failed (", static_cast<int>(status.error_code()),
                                              "): ", status.error_message()));
    }
  }

  // Sets up the stub and the metadata; a usage or file problem returns its exit code.
  std::optional<int> Connect() {
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (!options_.tls_ca.empty() || !options_.tls_cert.empty() || !options_.tls_key.empty()) {
      grpc::SslCredentialsOptions ssl;
      for (auto [path, sink] : {std::pair{&options_.tls_ca, &ssl.pem_root_certs},
                                std::pair{&options_.tls_cert, &ssl.pem_cert_chain},
                                std::pair{&options_.tls_key, &ssl.pem_private_key}}) {
        if (path->empty()) {
          continue;
        }
        auto text = cli::ReadFile(*path);
        if (!text.ok()) {
          return Fail(kExitUsage, std::string(text.status().message()));
        }
        *sink = *text;
      }
      credentials = grpc::SslCredentials(ssl);
    }
    if (!options_.token_file.empty()) {
      auto text = cli::ReadFile(options_.token_file);
      if (!text.ok()) {
        return Fail(kExitUsage, std::string(text.status().message()));
      }
      token_ = std::string(absl::StripAsciiWhitespace(*text));
    }
    stub_ = v1::AdminService::NewStub(grpc::CreateChannel(options_.server, credentials));
    return std::nullopt;
  }

  void Prepare(grpc::ClientContext& context, bool deadline = true) const {
    if (deadline) {
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
    }
    if (!token_.empty()) {
      context.AddMetadata("authorization", "Bearer " + token_);
    }
  }

  bool json() const { return options_.output == "json"; }

  int Validate() {
    auto text = cli::ReadFile(options_.file);
    if (!text.ok()) {
      return Fail(kExitUsage, std::string(text.status().message()));
    }
    const config::LoadResult loaded = config::Parse(*text, options_.file);
    v1::ValidateConfigResponse response;
    response.set_valid(loaded.errors.empty());
    AddProblems(loaded.errors, response.mutable_errors());
    AddProblems(loaded.warnings, response.mutable_warnings());
    if (json()) {
      out_ << Json(response) << "\n";
    }
    if (!json()) {
      Warnings(response.warnings());
    }
    if (response.valid()) {
      if (!json()) {
        out_ << options_.file << " is valid\n";
      }
      return kExitOk;
    }
    return InvalidConfig(response.errors());
  }

  static void AddProblems(const std::vector<config::ConfigError>& problems,
                          google::protobuf::RepeatedPtrField<v1::ConfigError>* out) {
    for (const auto& problem : problems) {
      v1::ConfigError* e = out->Add();
      e->set_file(problem.file);
      e->set_key_path(problem.key_path);
      e->set_line(static_cast<uint32_t>(std::max(problem.line, 0)));
      e->set_column(static_cast<uint32_t>(std::max(problem.column, 0)));
      e->set_reason(problem.reason);
    }
  }

  // One stderr line per warning (a key that loads but changes nothing); stdout stays what
  // scripts parse.
  void Warnings(const google::protobuf::RepeatedPtrField<v1::ConfigError>& warnings) {
    for (const auto& w : warnings) {
      err_ << "berryctl: warning: " << ErrorText(w, options_.file) << "\n";
    }
  }

  int InvalidConfig(const google::protobuf::RepeatedPtrField<v1::ConfigError>& errors) {
    std::vector<std::string> lines;
    for (const auto& e : errors) {
      lines.push_back(ErrorText(e, options_.file));
    }
    err_ << "berryctl: " << options_.file << " is invalid (" << errors.size() << " error"
         << (errors.size() == 1 ? "" : "s") << "): " << absl::StrJoin(lines, "; ") << "\n";
    return kExitFailed;
  }

  int Apply(bool dry_run) {
    auto text = cli::ReadFile(options_.file);
    if (!text.ok()) {
      return Fail(kExitUsage, std::string(text.status().message()));
    }
    v1::ApplyConfigRequest request;
    request.set_toml(*text);
    request.set_dry_run(dry_run);
    request.set_expected_version(options_.expect_version);
    v1::ApplyConfigResponse response;
    grpc::ClientContext context;
    Prepare(context);
    if (grpc::Status status = stub_->ApplyConfig(&context, request, &response); !status.ok()) {
      return RpcFail(status);
    }
    if (json()) {
      out_ << Json(response) << "\n";
    }
    if (!json()) {
      Warnings(response.warnings());
    }
    if (!response.errors().empty()) {
      return InvalidConfig(response.errors());
    }
    if (json()) {
      return kExitOk;
    }
    if (response.diff_lines().empty()) {
      out_ << "no changes\n";
    }
    for (const auto& line : response.diff_lines()) {
      out_ << line << "\n";
    }
    if (dry_run) {
      out_ << "dry run: version " << response.old_version() << " would become "
           << response.would_be_version() << "; nothing applied\n";
      return kExitOk;
    }
    out_ << "applied: version " << response.old_version() << " -> " << response.new_version()
         << "\n";
    if (!response.persisted()) {
      out_ << "warning: not written to the control plane's config file: " << response.persist_note()
           << "\n";
    }
    return kExitOk;
  }

  int Get(const std::string& what) {
    v1::GetConfigResponse response;
    grpc::ClientContext context;
    Prepare(context);
    if (grpc::Status status = stub_->GetConfig(&context, {}, &response); !status.ok()) {
      return RpcFail(status);
    }
    if (what == "version") {
      if (json()) {
        v1::GetConfigResponse version = response;
        version.clear_redacted_toml();
        out_ << Json(version) << "\n";
      } else {
        out_ << "config version " << response.version() << "\ntable version  "
             << response.table_version() << "\n";
      }
      return kExitOk;
    }
    if (json()) {
      out_ << Json(response) << "\n";
    } else {
      out_ << "# config version " << response.version() << "\n" << response.redacted_toml();
    }
    return kExitOk;
  }

  int Backends() {
    v1::ListBackendsResponse response;
    grpc::ClientContext context;
    Prepare(context);
    if (grpc::Status status = stub_->ListBackends(&context, {}, &response); !status.ok()) {
      return RpcFail(status);
    }
    if (json()) {
      out_ << Json(response) << "\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {{"BACKEND", "MODEL", "HEALTH", "STATE", "WEIGHT",
                                                   "REQUESTS", "ERRORS", "SUCCESS", "P50", "P99",
                                                   "TTFB_P50", "TOKENS"}};
    for (const auto& b : response.backends()) {
      std::string health = v1::HealthStatus_Name(b.health());
      if (health.starts_with("HEALTH_STATUS_")) {
        health = absl::AsciiStrToLower(health.substr(14));
      }
      if (b.ejected()) {
        health += " (ejected)";
      }
      rows.push_back({b.backend_id(), b.model(), health, b.admin_state(),
                      absl::StrFormat("%.2f", b.effective_weight()), absl::StrCat(b.requests()),
                      absl::StrCat(b.errors()),
                      b.requests() == 0 ? "-" : absl::StrFormat("%.1f%%", 100 * b.success_rate()),
                      Seconds(b.latency_p50()), Seconds(b.latency_p99()), Seconds(b.ttfb_p50()),
                      absl::StrCat(b.prompt_tokens() + b.completion_tokens())});
    }
    Table(out_, rows);
    return kExitOk;
  }

  int Proxies() {
    v1::ListProxiesResponse response;
    grpc::ClientContext context;
    Prepare(context);
    if (grpc::Status status = stub_->ListProxies(&context, {}, &response); !status.ok()) {
      return RpcFail(status);
    }
    if (json()) {
      out_ << Json(response) << "\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"NODE", "ADDRESS", "CONNECTED", "SINCE", "ACKED", "NACKED", "LAST_REPORT"}};
    for (const auto& p : response.proxies()) {
      rows.push_back({p.node_id(), p.address(), p.connected() ? "yes" : "no",
                      Time(p.connected_since()),
                      p.acked_version().empty() ? "-" : p.acked_version(),
                      p.nacked_version().empty()
                          ? "-"
                          : absl::StrCat(p.nacked_version(), " (", p.nack_reason(), ")"),
                      Time(p.last_report_time())});
    }
    Table(out_, rows);
    return kExitOk;
  }

  int Backend(const std::string& verb, const std::string& id) {
    v1::SetBackendStateRequest request;
    request.set_backend_id(id);
    if (verb == "enable") {
      request.set_state(v1::BACKEND_ADMIN_STATE_ENABLED);
    } else if (verb == "disable") {
      request.set_state(v1::BACKEND_ADMIN_STATE_DISABLED);
    } else if (verb == "drain") {
      request.set_state(v1::BACKEND_ADMIN_STATE_DRAINING);
    } else {
      return Fail(kExitUsage,
                  absl::StrCat("backend: unknown action '", verb, "' (enable, disable or drain)"));
    }
    v1::SetBackendStateResponse response;
    grpc::ClientContext context;
    Prepare(context);
    if (grpc::Status status = stub_->SetBackendState(&context, request, &response); !status.ok()) {
      return RpcFail(status);
    }
    if (json()) {
      out_ << Json(response) << "\n";
    } else {
      const std::string done = verb == "enable"    ? "enabled"
                               : verb == "disable" ? "disabled"
                                                   : "draining";
      out_ << "backend " << id << " " << done << " (table version " << response.new_version()
           << ")\n";
    }
    return kExitOk;
  }

  int Watch() {
    grpc::ClientContext context;
    Prepare(context, /*deadline=*/false);
    auto reader = stub_->WatchEvents(&context, {});
    v1::WatchEventsResponse event;
    while (reader->Read(&event)) {
      if (json()) {
        out_ << Json(event) << "\n";
      } else {
        out_ << Time(event.time()) << "  " << event.version() << "  " << event.description()
             << "\n";
      }
      out_.flush();
    }
    grpc::Status status = reader->Finish();
    return status.ok() ? kExitOk : RpcFail(status);
  }

 private:
  Options options_;
  std::ostream& out_;
  std::ostream& err_;
  std::string token_;
  std::unique_ptr<v1::AdminService::Stub> stub_;
};

}  // namespace

int RunBerryctl(const std::vector<std::string>& raw_args, std::ostream& out, std::ostream& err) {
  std::vector<std::string> args;
  args.reserve(raw_args.size());
  for (const auto& arg : raw_args) {
    args.push_back(Normalise(arg));
  }

  // The command is the first word that is neither a flag nor a flag's value.
  const Command* command = nullptr;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      out << Usage();
      return kExitOk;
    }
    if (arg.starts_with("--")) {
      if (arg.find('=') == std::string::npos && TakesValue(arg.substr(2))) {
        ++i;
      }
      continue;
    }
    for (const Command& candidate : Commands()) {
      if (candidate.name == arg) {
        command = &candidate;
      }
    }
    if (command == nullptr) {
      err << "berryctl: unknown command '" << arg << "' (see berryctl --help)\n";
      return kExitUsage;
    }
    break;
  }
  if (command == nullptr) {
    err << Usage();
    return kExitUsage;
  }

  Options options;
  cli::FlagSet set(absl::StrCat("berryctl [global flags] ", command->usage), command->summary);
  AddGlobalFlags(set, options);
  if (command->needs_file) {
    set.String("file", &options.file, "the TOML config file (also -f)");
  }
  if (command->apply_flags) {
    set.Bool("dry-run", &options.dry_run, "validate and diff only; change nothing");
    set.String("expect-version", &options.expect_version,
               "apply only if the running config version is this (compare-and-swap)");
  }
  if (command->local) {
    set.Int("timeout", &options.timeout_seconds, "seconds the whole probe may take", "", 1, 3600);
  }
  std::vector<char*> argv;
  std::string program = "berryctl";
  argv.push_back(program.data());
  for (auto& arg : args) {
    argv.push_back(arg.data());
  }
  if (absl::Status status = set.Parse(static_cast<int>(argv.size()), argv.data()); !status.ok()) {
    err << "berryctl " << command->name << ": " << status.message() << "\n";
    return kExitUsage;
  }
  if (set.help_requested()) {
    out << set.Help();
    return kExitOk;
  }
  if (options.output != "table" && options.output != "json") {
    err << "berryctl: -o must be table or json, not '" << options.output << "'\n";
    return kExitUsage;
  }
  const std::vector<std::string>& words = set.positional();  // words[0] is the command
  const auto wrong_arguments = [&]() {
    err << "berryctl: usage: berryctl " << command->usage << "\n";
    return kExitUsage;
  };
  if (command->needs_file && (options.file.empty() || words.size() != 1)) {
    return wrong_arguments();
  }

  if (command->name == "probe") {
    if (words.size() != 2) {
      return wrong_arguments();
    }
    auto result = ProbeHttp(words[1], std::chrono::seconds(options.timeout_seconds));
    if (!result.ok()) {
      err << "berryctl probe " << words[1] << ": " << result.status().message() << "\n";
      return result.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage
                                                                          : kExitUnreachable;
    }
    (result->status == 200 ? out : err)
        << "probe " << words[1] << ": " << result->status << " " << result->reason << "\n";
    return result->status == 200 ? kExitOk : kExitFailed;
  }
  const bool dry_run = options.dry_run;
  Runner runner(std::move(options), out, err);
  if (command->name == "validate") {
    return runner.Validate();
  }
  if (command->name == "get" &&
      (words.size() != 2 || (words[1] != "config" && words[1] != "version"))) {
    return wrong_arguments();
  }
  if (command->name == "backend" && words.size() != 3) {
    return wrong_arguments();
  }
  if ((command->name == "backends" || command->name == "proxies" || command->name == "watch") &&
      words.size() != 1) {
    return wrong_arguments();
  }
  if (std::optional<int> failed = runner.Connect(); failed) {
    return *failed;
  }
  if (command->name == "apply") {
    return runner.Apply(dry_run);
  }
  if (command->name == "diff") {
    return runner.Apply(/*dry_run=*/true);
  }
  if (command->name == "get") {
    return runner.Get(words[1]);
  }
  if (command->name == "backends") {
    return runner.Backends();
  }
  if (command->name == "proxies") {
    return runner.Proxies();
  }
  if (command->name == "backend") {
    return runner.Backend(words[1], words[2]);
  }
  return runner.Watch();
}

}  // namespace berry::berryctl
