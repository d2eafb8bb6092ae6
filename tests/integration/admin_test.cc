// AdminService and berryctl end to end: a berry-control-plane process with an admin token, a
// managed berry-proxy, in-process mock providers "a" and "b". Tests call AdminService over gRPC
// (and run the berryctl binary) and check what changes in the control plane, in the config file
// and in what the proxy serves — waiting on conditions, never on bare sleeps.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "berry/v1/admin.grpc.pb.h"
#include "tests/integration/fleet_fixture.h"
#include "tests/support/certs.h"
#include "tests/support/http_client.h"

namespace berry::fleet_test::admin_test {
namespace {

using test_support::Behavior;
using test_support::MockUpstream;

constexpr char kAdminToken[] = "admin-secret-token-0123456789";
constexpr char kUserToken[] = "berry-user-token-abcdef0123456789";
constexpr char kHeaderSecret[] = "org-header-secret-42";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

extern "C" char** environ;

// A child whose stdout and stderr go to files, started the way a shell starts it: no signal
// blocked and every disposition at its default (Process::Spawn blocks SIGINT, which is right for
// the two daemons but would make Ctrl-C to berryctl a no-op).
class ShellChild {
 public:
  ShellChild(const std::vector<std::string>& args, const std::string& out_path,
             const std::string& err_path)
      : out_path_(out_path), err_path_(err_path) {
    std::vector<char*> argv;
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t none;
    sigemptyset(&none);
    sigset_t defaults;
    sigemptyset(&defaults);
    for (const int signal_number : {SIGHUP, SIGINT, SIGTERM, SIGPIPE}) {
      sigaddset(&defaults, signal_number);
    }
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    const int rc = posix_spawn(&pid_, argv[0], &actions, &attributes, argv.data(), environ);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << args[0] << ": " << std::strerror(rc);
      pid_ = -1;
    }
  }
  ShellChild(const ShellChild&) = delete;
  ShellChild& operator=(const ShellChild&) = delete;
  ~ShellChild() {
    if (pid_ > 0 && !status_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  bool started() const { return pid_ > 0; }
  std::string out() const { return ReadAll(out_path_); }
  std::string err() const { return ReadAll(err_path_); }
  void Signal(int signal_number) const {
    if (pid_ > 0) kill(pid_, signal_number);
  }
  // The raw wait status; nullopt while it still runs at the deadline.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return std::nullopt;
    WaitUntil(
        [&] {
          int status = 0;
          if (waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
          return status_.has_value();
        },
        timeout, 20ms);
    return status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string out_path_;
  std::string err_path_;
};

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("status ", status);
}

class Admin : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = StartMock("a", {"up-a"});
    b_ = StartMock("b", {"up-b"});
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    token_path_ = dir_.path() + "/admin.token";
    std::ofstream(token_path_) << kAdminToken << "\n";
  }

  void TearDown() override {
    proxy_.reset();
    control_plane_.reset();
  }

  std::string Config(const std::string& models, std::string_view extra = "") const {
    return SettingsToml() + ProviderToml("a", a_->base_url(), {"up-a"}) +
           ProviderToml("b", b_->base_url(), {"up-b"}) + models + std::string(extra);
  }
  std::string ChatOnA() const { return Config(ModelToml("chat", {{"a", "up-a"}})); }
  std::string ChatOnB() const { return Config(ModelToml("chat", {{"b", "up-b"}})); }
  std::string ChatOnBoth() const {
    return Config(ModelToml("chat", {{"a", "up-a"}, {"b", "up-b"}}));
  }
  // "chat" on b, with Berry API keys that load but change nothing: `settings_line` in
  // [settings] and, when `smart_ai`, a [settings.smart_ai] table at the end.
  std::string ChatOnBWithCompatibilityKeys(
      std::string_view settings_line = "max_internal_retries = 2", bool smart_ai = true) const {
    return SettingsToml(settings_line) + ProviderToml("a", a_->base_url(), {"up-a"}) +
           ProviderToml("b", b_->base_url(), {"up-b"}) + ModelToml("chat", {{"b", "up-b"}}) +
           (smart_ai ? "[settings.smart_ai]\ninitial_confidence = 0.8\n" : "");
  }

  void StartFleet(const std::string& toml, bool with_proxy = true) {
    ASSERT_TRUE(config_.Write(toml));
    control_plane_ =
        ControlPlane::Start(config_.path(), "127.0.0.1:0", {"--admin-token-file", token_path_});
    ASSERT_NE(control_plane_, nullptr);
    auto channel =
        grpc::CreateChannel(control_plane_->grpc_address, grpc::InsecureChannelCredentials());
    stub_ = v1::AdminService::NewStub(channel);
    if (!with_proxy) {
      return;
    }
    proxy_ = Proxy::Start({control_plane_->grpc_address, "node-1", state_.path(), {}});
    ASSERT_NE(proxy_, nullptr);
    ASSERT_TRUE(WaitUntil([&] { return proxy_->ReadyzStatus() == 200; }, kConvergeTimeout))
        << proxy_->process->err();
  }

  // A context carrying `token` (none when empty) and a deadline.
  static std::unique_ptr<grpc::ClientContext> Context(std::string_view token = kAdminToken) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!token.empty()) {
      context->AddMetadata("authorization", "Bearer " + std::string(token));
    }
    return context;
  }

  v1::GetConfigResponse GetConfig() {
    v1::GetConfigResponse response;
    const grpc::Status status = stub_->GetConfig(Context().get(), {}, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  grpc::Status Apply(const std::string& toml, v1::ApplyConfigResponse* response,
                     bool dry_run = false, const std::string& expected_version = "") {
    v1::ApplyConfigRequest request;
    request.set_toml(toml);
    request.set_dry_run(dry_run);
    request.set_expected_version(expected_version);
    return stub_->ApplyConfig(Context().get(), request, response);
  }

  grpc::Status SetState(const std::string& backend_id, v1::BackendAdminState state) {
    v1::SetBackendStateRequest request;
    request.set_backend_id(backend_id);
    request.set_state(state);
    v1::SetBackendStateResponse response;
    return stub_->SetBackendState(Context().get(), request, &response);
  }

  // Waits until the proxy persisted (= applied, before its ACK) a table satisfying `wanted`.
  bool ProxyHolds(const std::function<bool(const v1::RouteTable&)>& wanted) {
    return WaitUntil(
        [&] {
          const auto table = proxy_->PersistedTable();
          return table && wanted(*table);
        },
        kConvergeTimeout);
  }

  static const v1::Backend* Find(const v1::RouteTable& table, std::string_view id) {
    for (const auto& model : table.models()) {
      for (const auto& backend : model.backends()) {
        if (backend.id() == id) return &backend;
      }
    }
    return nullptr;
  }

  std::string ServedBy() const {
    auto response = Chat(proxy_->url, "chat");
    if (!response.ok() || response->status != 200) {
      return {};
    }
    return response->Header("x-mock-upstream").value_or("");
  }

  // Runs berryctl with `args`; returns its exit code and fills `out`/`err`.
  int Berryctl(const std::vector<std::string>& args, std::string* out = nullptr,
               std::string* err = nullptr) {
    std::vector<std::string> argv = {BERRYCTL_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    auto process = Process::Spawn(argv, {}, itest::kSigwaitSignals);
    if (process == nullptr) return -1;
    const auto code = process->Wait(30s);
    if (out) *out = process->out();
    if (err) *err = process->err();
    return code.value_or(-1);
  }

  std::unique_ptr<MockUpstream> a_;
  std::unique_ptr<MockUpstream> b_;
  TempDir dir_{"berry-admin-"};
  TempDir state_{"berry-admin-state-"};
  ConfigFile config_{dir_};
  std::string token_path_;
  std::unique_ptr<ControlPlane> control_plane_;
  std::unique_ptr<Proxy> proxy_;
  std::unique_ptr<v1::AdminService::Stub> stub_;
};

TEST_F(Admin, AppliedConfigTakesEffectThroughTheProxyAndIsWrittenBack) {
  StartFleet(ChatOnA());
  ASSERT_EQ(ServedBy(), "a");
  const std::string before = GetConfig().version();
  ASSERT_FALSE(before.empty());

  v1::ApplyConfigResponse response;
  const grpc::Status status = Apply(ChatOnB(), &response, false, before);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.errors().empty());
  EXPECT_EQ(response.old_version(), before);
  EXPECT_NE(response.new_version(), before);
  EXPECT_TRUE(response.persisted()) << response.persist_note();
  const std::string diff = absl::StrJoin(response.diff_lines(), "\n");
  EXPECT_NE(diff.find("- backend chat/a/up-a"), std::string::npos) << diff;
  EXPECT_NE(diff.find("+ backend chat/b/up-b"), std::string::npos) << diff;
  EXPECT_EQ(ReadAll(config_.path()), ChatOnB());
  EXPECT_EQ(GetConfig().version(), response.new_version());

  EXPECT_TRUE(WaitUntil([&] { return ServedBy() == "b"; }, kConvergeTimeout));
  // ListProxies shows the proxy holding what the control plane publishes.
  EXPECT_TRUE(WaitUntil(
      [&] {
        v1::ListProxiesResponse proxies;
        if (!stub_->ListProxies(Context().get(), {}, &proxies).ok() ||
            proxies.proxies_size() != 1) {
          return false;
        }
        const auto& node = proxies.proxies(0);
        return node.node_id() == "node-1" && node.connected() &&
               node.acked_version() == GetConfig().table_version();
      },
      kConvergeTimeout));
}

TEST_F(Admin, DryRunReportsTheDiffAndChangesNothing) {
  StartFleet(ChatOnA());
  const std::string before = GetConfig().version();
  v1::ApplyConfigResponse response;
  ASSERT_TRUE(Apply(ChatOnB(), &response, /*dry_run=*/true).ok());
  EXPECT_FALSE(response.diff_lines().empty());
  EXPECT_EQ(response.new_version(), before);
  EXPECT_NE(response.would_be_version(), before);
  EXPECT_FALSE(response.persisted());
  EXPECT_EQ(GetConfig().version(), before);
  EXPECT_EQ(ReadAll(config_.path()), ChatOnA());
  EXPECT_EQ(ServedBy(), "a");
}

TEST_F(Admin, CompareAndSwapWithAStaleVersionIsRefused) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  const std::string before = GetConfig().version();
  v1::ApplyConfigResponse first;
  ASSERT_TRUE(Apply(ChatOnBoth(), &first, false, before).ok());
  // A second operator still holding `before`.
  v1::ApplyConfigResponse second;
  const grpc::Status status = Apply(ChatOnB(), &second, false, before);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find(first.new_version()), std::string::npos)
      << status.error_message();
  EXPECT_EQ(GetConfig().version(), first.new_version());
  EXPECT_EQ(ReadAll(config_.path()), ChatOnBoth());
}

TEST_F(Admin, InvalidConfigIsRefusedWithEveryErrorAndNothingChanges) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  const std::string before = GetConfig().version();
  const std::string invalid =
      Config(ModelToml("chat", {{"nowhere", "up-a"}}), "[settings_typo]\nx = 1\n");
  v1::ApplyConfigResponse response;
  ASSERT_TRUE(Apply(invalid, &response).ok());
  ASSERT_GE(response.errors_size(), 2) << response.DebugString();
  std::string paths;
  for (const auto& error : response.errors()) absl::StrAppend(&paths, error.key_path(), "\n");
  EXPECT_NE(paths.find("models.chat.backends[0].provider"), std::string::npos) << paths;
  EXPECT_NE(paths.find("settings_typo"), std::string::npos) << paths;
  EXPECT_EQ(GetConfig().version(), before);
  EXPECT_EQ(ReadAll(config_.path()), ChatOnA());

  v1::ValidateConfigRequest validate;
  validate.set_toml(invalid);
  v1::ValidateConfigResponse validated;
  ASSERT_TRUE(stub_->ValidateConfig(Context().get(), validate, &validated).ok());
  EXPECT_FALSE(validated.valid());
  EXPECT_EQ(validated.errors_size(), response.errors_size());
}

// The key paths of `problems`, one per line.
std::string KeyPaths(const google::protobuf::RepeatedPtrField<v1::ConfigError>& problems) {
  std::string paths;
  for (const auto& problem : problems) absl::StrAppend(&paths, problem.key_path(), "\n");
  return paths;
}

TEST_F(Admin, KeysWithoutEffectAreWarningsInValidateAndApplyAndTheAppliedOneIsLogged) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  const std::string compat = ChatOnBWithCompatibilityKeys();

  v1::ValidateConfigRequest validate;
  validate.set_toml(compat);
  v1::ValidateConfigResponse validated;
  ASSERT_TRUE(stub_->ValidateConfig(Context().get(), validate, &validated).ok());
  EXPECT_TRUE(validated.valid());
  EXPECT_TRUE(validated.errors().empty());
  EXPECT_EQ(KeyPaths(validated.warnings()), "settings.max_internal_retries\nsettings.smart_ai\n");
  for (const auto& warning : validated.warnings()) {
    EXPECT_GT(warning.line(), 0u) << warning.DebugString();
    EXPECT_GT(warning.column(), 0u) << warning.DebugString();
    EXPECT_EQ(warning.file(), "") << "text sent over the API has no file";
    EXPECT_NE(warning.reason().find("has no effect"), std::string::npos) << warning.reason();
  }
  validate.set_toml(ChatOnB());
  ASSERT_TRUE(stub_->ValidateConfig(Context().get(), validate, &validated).ok());
  EXPECT_TRUE(validated.warnings().empty()) << validated.DebugString();

  v1::ApplyConfigResponse dry;
  ASSERT_TRUE(Apply(compat, &dry, /*dry_run=*/true).ok());
  EXPECT_EQ(KeyPaths(dry.warnings()), "settings.max_internal_retries\nsettings.smart_ai\n");

  v1::ApplyConfigResponse applied;
  const grpc::Status status = Apply(compat, &applied);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(applied.errors().empty()) << applied.DebugString();
  EXPECT_NE(applied.new_version(), applied.old_version()) << "warnings do not stop an apply";
  EXPECT_EQ(KeyPaths(applied.warnings()), "settings.max_internal_retries\nsettings.smart_ai\n");
  EXPECT_TRUE(control_plane_->process->WaitForErr(R"("key":"settings.smart_ai")"))
      << control_plane_->process->err();
  EXPECT_NE(control_plane_->process->err().find(R"("msg":"config warning")"), std::string::npos);
}

TEST_F(Admin, ControlPlaneLogsConfigWarningsAtStartAndOnAWatchedEdit) {
  StartFleet(ChatOnBWithCompatibilityKeys("max_internal_retries = 2", /*smart_ai=*/false),
             /*with_proxy=*/false);
  ASSERT_TRUE(control_plane_->process->WaitForErr(R"("key":"settings.max_internal_retries")"))
      << control_plane_->process->err();
  const std::string at_start = control_plane_->process->err();
  EXPECT_NE(at_start.find(config_.path() + ":"), std::string::npos)
      << "the warning names the file:line:column\n"
      << at_start;
  EXPECT_EQ(at_start.find("settings.smart_ai"), std::string::npos) << at_start;

  ASSERT_TRUE(config_.Write(ChatOnBWithCompatibilityKeys("", /*smart_ai=*/true)));

  EXPECT_TRUE(control_plane_->process->WaitForErr(R"("key":"settings.smart_ai")", kConvergeTimeout))
      << control_plane_->process->err();
}

TEST_F(Admin, BerryctlValidateAndApplyPrintWarningsOnStderr) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  const std::string file = dir_.path() + "/compat.toml";
  std::ofstream(file) << ChatOnBWithCompatibilityKeys();
  std::string out;
  std::string err;

  ASSERT_EQ(Berryctl({"validate", "-f", file}, &out, &err), 0) << err;
  EXPECT_NE(out.find("is valid"), std::string::npos) << out;
  EXPECT_NE(err.find("berryctl: warning: " + file + ":"), std::string::npos) << err;
  EXPECT_NE(err.find(": settings.max_internal_retries: has no effect"), std::string::npos) << err;
  EXPECT_NE(err.find(": settings.smart_ai: has no effect"), std::string::npos) << err;

  ASSERT_EQ(Berryctl({"-o", "json", "validate", "-f", file}, &out, &err), 0) << err;
  EXPECT_EQ(boost::json::parse(out).at("warnings").as_array().size(), 2u) << out;

  ASSERT_EQ(Berryctl({"--server", control_plane_->grpc_address, "--token-file", token_path_,
                      "apply", "-f", file},
                     &out, &err),
            0)
      << err;
  EXPECT_NE(out.find("applied"), std::string::npos) << out;
  EXPECT_NE(err.find("berryctl: warning: " + file + ":"), std::string::npos) << err;
  EXPECT_NE(err.find(": settings.max_internal_retries: has no effect"), std::string::npos) << err;
  EXPECT_NE(err.find(": settings.smart_ai: has no effect"), std::string::npos) << err;
}

TEST_F(Admin, GetConfigNeverContainsAKeyOrToken) {
  const std::string users = absl::StrCat("[users.alice]\ntoken = \"", kUserToken, "\"\n");
  std::string toml = ChatOnA() + users;
  // A provider header value is a secret as well.
  const std::string header =
      absl::StrCat("[providers.c]\nbase_url = \"", b_->base_url(),
                   "\"\napi_key = \"sk-c-secret-key\"\nmodels = [\"up-b\"]\n",
                   "headers = { \"OpenAI-Organization\" = \"", kHeaderSecret, "\" }\n");
  StartFleet(toml + header, /*with_proxy=*/false);
  v1::GetConfigResponse response = GetConfig();
  const std::string bytes = response.SerializeAsString();
  for (const std::string& secret : {KeyOf("a"), KeyOf("b"), std::string("sk-c-secret-key"),
                                    std::string(kUserToken), std::string(kHeaderSecret)}) {
    EXPECT_EQ(bytes.find(secret), std::string::npos) << secret;
  }
  EXPECT_NE(response.redacted_toml().find("<redacted>"), std::string::npos);
  EXPECT_NE(response.redacted_toml().find("[users.alice]"), std::string::npos);
  EXPECT_NE(response.redacted_toml().find("OpenAI-Organization"), std::string::npos);
  EXPECT_FALSE(response.version().empty());

  // The diff of an apply names changed secrets without showing them.
  v1::ApplyConfigResponse applied;
  std::string rotated = toml + header;
  rotated.replace(rotated.find(kUserToken), std::strlen(kUserToken),
                  "berry-user-token-rotated-999");
  ASSERT_TRUE(Apply(rotated, &applied, /*dry_run=*/true).ok());
  const std::string diff = absl::StrJoin(applied.diff_lines(), "\n");
  EXPECT_NE(diff.find("~ user alice: token changed"), std::string::npos) << diff;
  EXPECT_EQ(applied.SerializeAsString().find("rotated-999"), std::string::npos);
}

// What GetConfig shows can be edited and applied back: it validates, with no warnings even
// when the running file has keys that only warn, and with several users (tokens must differ).
TEST_F(Admin, GetConfigOutputValidatesWithoutWarningsAndAppliesAsANoOp) {
  const std::string users =
      absl::StrCat("[users.alice]\ntoken = \"", kUserToken, "\"\n[users.bob]\ntoken = \"",
                   kUserToken, "-bob\"\n[users.bob.rate_limit]\nrequests_per_minute = 5\n");
  StartFleet(ChatOnBWithCompatibilityKeys("max_internal_retries = 1") + users,
             /*with_proxy=*/false);
  const std::string shown = GetConfig().redacted_toml();
  EXPECT_EQ(shown.find("max_internal_retries"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("smart_ai"), std::string::npos) << shown;

  v1::ValidateConfigRequest validate;
  validate.set_toml(shown);
  v1::ValidateConfigResponse validated;
  ASSERT_TRUE(stub_->ValidateConfig(Context().get(), validate, &validated).ok());
  EXPECT_TRUE(validated.valid()) << validated.DebugString() << shown;
  EXPECT_TRUE(validated.errors().empty()) << validated.DebugString();
  EXPECT_TRUE(validated.warnings().empty()) << validated.DebugString();

  // Only the secrets differ from the running config, and the diff says so by name.
  v1::ApplyConfigResponse dry;
  ASSERT_TRUE(Apply(shown, &dry, /*dry_run=*/true).ok());
  EXPECT_EQ(absl::StrJoin(dry.diff_lines(), "\n"),
            "~ settings: max_internal_retries 1 -> 2\n~ provider a: api_key changed\n"
            "~ provider b: api_key changed\n~ user alice: token changed\n"
            "~ user bob: token changed");
}

TEST_F(Admin, DrainLetsAnInFlightStreamFinishWhileNewRequestsGoElsewhere) {
  StartFleet(ChatOnBoth());
  const Behavior slow = Behavior::Stream(20, std::chrono::milliseconds(250));
  a_->EnqueueBehavior(slow);
  b_->EnqueueBehavior(slow);
  absl::StatusOr<test_support::StreamedResponse> streamed;
  std::atomic<bool> stream_done{false};
  std::thread client([&] {
    test_support::HttpRequest request = test_support::HttpRequest::Post(
        proxy_->url + "/v1/chat/completions",
        R"({"model":"chat","stream":true,"messages":[{"role":"user","content":"hi"}]})");
    request.timeout = 30s;
    streamed = test_support::FetchStreaming(request);
    stream_done = true;
  });
  std::string busy;
  ASSERT_TRUE(WaitUntil(
      [&] {
        if (!ChatRequests(*a_).empty()) busy = "a";
        if (!ChatRequests(*b_).empty()) busy = "b";
        return !busy.empty();
      },
      kConvergeTimeout));
  const std::string other = busy == "a" ? "b" : "a";
  const std::string busy_id = BackendId("chat", busy, "up-" + busy);
  a_->ResetBehaviors();
  b_->ResetBehaviors();

  ASSERT_TRUE(SetState(busy_id, v1::BACKEND_ADMIN_STATE_DRAINING).ok());
  ASSERT_TRUE(ProxyHolds([&](const v1::RouteTable& table) {
    const v1::Backend* backend = Find(table, busy_id);
    return backend && backend->health() == v1::HEALTH_STATUS_DRAINING;
  }));
  EXPECT_FALSE(stream_done.load()) << "the stream ended before the drain reached the proxy";
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(ServedBy(), other) << "request " << i;
  }
  client.join();
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->status, 200);
  EXPECT_TRUE(streamed->done()) << "the drained backend's stream did not finish";

  v1::ListBackendsResponse backends;
  ASSERT_TRUE(stub_->ListBackends(Context().get(), {}, &backends).ok());
  bool seen = false;
  for (const auto& backend : backends.backends()) {
    if (backend.backend_id() == busy_id) {
      seen = true;
      EXPECT_EQ(backend.admin_state(), "draining");
      EXPECT_EQ(backend.health(), v1::HEALTH_STATUS_DRAINING);
    }
  }
  EXPECT_TRUE(seen);
}

TEST_F(Admin, DisableThenEnableABackend) {
  StartFleet(ChatOnBoth());
  const std::string a_id = BackendId("chat", "a", "up-a");
  ASSERT_TRUE(SetState(a_id, v1::BACKEND_ADMIN_STATE_DISABLED).ok());
  ASSERT_TRUE(ProxyHolds([&](const v1::RouteTable& table) {
    const v1::Backend* backend = Find(table, a_id);
    return backend && !backend->enabled();
  }));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(ServedBy(), "b") << "request " << i;
  }
  EXPECT_EQ(ReadAll(config_.path()), ChatOnBoth()) << "the file is never edited";

  ASSERT_TRUE(SetState(a_id, v1::BACKEND_ADMIN_STATE_ENABLED).ok());
  ASSERT_TRUE(ProxyHolds([&](const v1::RouteTable& table) {
    const v1::Backend* backend = Find(table, a_id);
    return backend && backend->enabled() && backend->health() != v1::HEALTH_STATUS_DRAINING;
  }));
  EXPECT_TRUE(WaitUntil([&] { return ServedBy() == "a"; }, kConvergeTimeout, 10ms));

  EXPECT_EQ(SetState("chat/none/x", v1::BACKEND_ADMIN_STATE_DISABLED).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(Admin, WrongOrMissingTokenIsRefusedAndCounted) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  v1::GetConfigResponse response;
  EXPECT_EQ(stub_->GetConfig(Context("").get(), {}, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(stub_->GetConfig(Context("not-the-token").get(), {}, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::ApplyConfigResponse applied;
  v1::ApplyConfigRequest request;
  request.set_toml(ChatOnB());
  EXPECT_EQ(stub_->ApplyConfig(Context("").get(), request, &applied).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ReadAll(config_.path()), ChatOnA());
  EXPECT_EQ(control_plane_->Metric("berry_cp_admin_unauthenticated_total"), 3.0);
  EXPECT_TRUE(stub_->GetConfig(Context().get(), {}, &response).ok());
  // The audit log never carries the token.
  EXPECT_EQ(control_plane_->process->err().find(kAdminToken), std::string::npos);
}

std::string line_string(const boost::json::object& line, const char* key) {
  const auto* value = line.if_contains(key);
  return value != nullptr && value->is_string() ? std::string(value->as_string()) : std::string();
}

// Every mutation leaves one JSON audit line naming the caller by token id (never the token),
// what changed, and the old and new version; reads leave none.
TEST_F(Admin, EveryMutationWritesOneAuditLine) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  const auto audit_lines = [&] {
    std::vector<boost::json::object> lines;
    std::istringstream err(control_plane_->process->err());
    for (std::string line; std::getline(err, line);) {
      boost::system::error_code ec;
      boost::json::value value = boost::json::parse(line, ec);
      if (!ec && value.is_object() && value.as_object().contains("audit")) {
        lines.push_back(value.as_object());
      }
    }
    return lines;
  };
  const std::string before = GetConfig().version();
  v1::ApplyConfigResponse applied;
  ASSERT_TRUE(Apply(ChatOnBoth(), &applied, false, before).ok());
  ASSERT_TRUE(SetState("chat/a/up-a", v1::BACKEND_ADMIN_STATE_DRAINING).ok());
  v1::ListBackendsResponse backends;
  ASSERT_TRUE(stub_->ListBackends(Context().get(), {}, &backends).ok());  // a read: no line

  ASSERT_TRUE(WaitUntil([&] { return audit_lines().size() >= 2; }, kConvergeTimeout))
      << control_plane_->process->err();
  const std::vector<boost::json::object> lines = audit_lines();
  ASSERT_EQ(lines.size(), 2u) << control_plane_->process->err();
  // The token id is the first 8 hex characters of the token's SHA-256.
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(kAdminToken), std::strlen(kAdminToken), digest);
  char token_id[9];
  std::snprintf(token_id, sizeof token_id, "%02x%02x%02x%02x", digest[0], digest[1], digest[2],
                digest[3]);
  for (const auto& line : lines) {
    EXPECT_EQ(line.at("who").as_string(), token_id) << boost::json::serialize(line);
    EXPECT_FALSE(line.at("what").as_string().empty());
  }
  EXPECT_EQ(line_string(lines[0], "old_version"), before);
  EXPECT_EQ(line_string(lines[0], "new_version"), applied.new_version());
  EXPECT_NE(line_string(lines[1], "what").find("chat/a/up-a"), std::string::npos);
  EXPECT_EQ(control_plane_->process->err().find(kAdminToken), std::string::npos);
}

TEST_F(Admin, BerryctlExitCodesAndJsonOutput) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  const std::string server = control_plane_->grpc_address;
  const std::string valid = dir_.path() + "/next.toml";
  const std::string invalid = dir_.path() + "/bad.toml";
  std::ofstream(valid) << ChatOnB();
  std::ofstream(invalid) << Config(ModelToml("chat", {{"nowhere", "up-a"}}));
  std::string out;
  std::string err;

  EXPECT_EQ(Berryctl({"validate", "-f", valid}, &out, &err), 0) << err;
  EXPECT_EQ(Berryctl({"-o", "json", "validate", "-f", invalid}, &out, &err), 1);
  EXPECT_NE(err.find("models.chat.backends[0].provider"), std::string::npos) << err;
  EXPECT_FALSE(boost::json::parse(out).at("valid").as_bool());
  EXPECT_EQ(Berryctl({"frobnicate"}, &out, &err), 2);
  EXPECT_EQ(Berryctl({"apply", "--help"}, &out, &err), 0);
  EXPECT_NE(out.find("--dry-run"), std::string::npos) << out;

  // Auth and reachability.
  EXPECT_EQ(Berryctl({"--server", server, "get", "version"}, &out, &err), 4) << err;
  EXPECT_EQ(Berryctl({"--server", "127.0.0.1:1", "--token-file", token_path_, "get", "version"},
                     &out, &err),
            3)
      << err;

  const std::vector<std::string> auth = {"--server", server, "--token-file", token_path_};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.begin(), auth.begin(), auth.end());
    return args;
  };
  ASSERT_EQ(Berryctl(with({"get", "version", "-o", "json"}), &out, &err), 0) << err;
  const std::string version(boost::json::parse(out).at("version").as_string());
  EXPECT_EQ(version, GetConfig().version());

  ASSERT_EQ(Berryctl(with({"-o", "json", "apply", "-f", valid, "--dry-run"}), &out, &err), 0)
      << err;
  EXPECT_FALSE(boost::json::parse(out).at("diff_lines").as_array().empty()) << out;
  EXPECT_EQ(GetConfig().version(), version);

  EXPECT_EQ(
      Berryctl(with({"apply", "-f", valid, "--expect-version", "0123456789abcdef"}), &out, &err),
      1);
  EXPECT_NE(err.find("refused"), std::string::npos) << err;
  EXPECT_EQ(Berryctl(with({"apply", "-f", invalid}), &out, &err), 1);
  EXPECT_NE(err.find("invalid"), std::string::npos) << err;
  ASSERT_EQ(Berryctl(with({"apply", "-f", valid, "--expect-version", version}), &out, &err), 0)
      << err;
  EXPECT_NE(out.find("applied"), std::string::npos) << out;
  EXPECT_NE(GetConfig().version(), version);

  ASSERT_EQ(Berryctl(with({"backends", "-o", "json"}), &out, &err), 0) << err;
  const auto backends = boost::json::parse(out).at("backends").as_array();
  ASSERT_EQ(backends.size(), 1u) << out;
  EXPECT_EQ(backends[0].at("backend_id").as_string(), "chat/b/up-b");
  ASSERT_EQ(Berryctl(with({"backends"}), &out, &err), 0) << err;
  EXPECT_NE(out.find("BACKEND"), std::string::npos) << out;

  ASSERT_EQ(Berryctl(with({"backend", "drain", "chat/b/up-b"}), &out, &err), 0) << err;
  ASSERT_EQ(Berryctl(with({"-o", "json", "backends"}), &out, &err), 0) << err;
  EXPECT_EQ(boost::json::parse(out).at("backends").at(0).at("admin_state").as_string(), "draining");
  EXPECT_EQ(Berryctl(with({"backend", "drain", "chat/none/x"}), &out, &err), 1);

  ASSERT_EQ(Berryctl(with({"-o", "json", "proxies"}), &out, &err), 0) << err;
  EXPECT_TRUE(boost::json::parse(out).is_object()) << out;

  ASSERT_EQ(Berryctl(with({"get", "config"}), &out, &err), 0) << err;
  EXPECT_EQ(out.find(KeyOf("b")), std::string::npos);
  EXPECT_NE(out.find("[providers.b]"), std::string::npos) << out;
}

TEST_F(Admin, BerryctlTakesServerAndTokenFileFromTheEnvironment) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  const auto run = [&](std::vector<std::string> env) {
    std::vector<std::string> argv = {"/usr/bin/env"};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.insert(argv.end(), {BERRYCTL_BINARY, "-o", "json", "get", "version"});
    auto process = Process::Spawn(argv, {}, itest::kSigwaitSignals);
    return process == nullptr ? -1 : process->Wait(30s).value_or(-1);
  };
  EXPECT_EQ(
      run({"BERRY_SERVER=" + control_plane_->grpc_address, "BERRY_TOKEN_FILE=" + token_path_}), 0);
  EXPECT_EQ(run({"BERRY_SERVER=" + control_plane_->grpc_address}), 4) << "no token: refused";
  EXPECT_EQ(run({"BERRY_SERVER=127.0.0.1:1", "BERRY_TOKEN_FILE=" + token_path_}), 3)
      << "the environment's server is the one dialled";
}

TEST_F(Admin, WatchStreamsVersionChanges) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  auto context = Context();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub_->WatchEvents(context.get(), {});
  v1::WatchEventsResponse event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_NE(event.description().find("watching"), std::string::npos);
  v1::ApplyConfigResponse applied;
  ASSERT_TRUE(Apply(ChatOnB(), &applied).ok());
  bool seen = false;
  while (!seen && reader->Read(&event)) {
    seen = event.description().find("published") != std::string::npos;
  }
  EXPECT_TRUE(seen);
  context->TryCancel();
  (void)reader->Finish();
}

TEST_F(Admin, ApplyToAReadOnlyConfigFileIsHeldInMemoryOnly) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  // ConfigSource treats a file without any write bit as read-only (st_mode & 0222), so this holds
  // even for root, whom access(W_OK) never refuses.
  ASSERT_EQ(chmod(config_.path().c_str(), 0444), 0) << std::strerror(errno);
  const std::string before = GetConfig().version();

  v1::ApplyConfigResponse response;
  const grpc::Status status = Apply(ChatOnB(), &response, false, before);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.errors().empty()) << response.DebugString();
  EXPECT_FALSE(response.persisted());
  EXPECT_FALSE(response.persist_note().empty());
  EXPECT_NE(response.persist_note().find("memory"), std::string::npos) << response.persist_note();
  EXPECT_NE(response.new_version(), before);

  // In force although not written.
  EXPECT_EQ(GetConfig().version(), response.new_version());
  v1::ListBackendsResponse backends;
  ASSERT_TRUE(stub_->ListBackends(Context().get(), {}, &backends).ok());
  ASSERT_EQ(backends.backends_size(), 1) << backends.DebugString();
  EXPECT_EQ(backends.backends(0).backend_id(), "chat/b/up-b");

  EXPECT_EQ(ReadAll(config_.path()), ChatOnA());
  struct stat st {};
  ASSERT_EQ(stat(config_.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  // No temp file left next to it.
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    EXPECT_EQ(entry.path().filename().string().find(".berry-apply-"), std::string::npos)
        << entry.path();
  }
}

TEST_F(Admin, BerryctlOverMutualTls) {
  auto pki = test_support::GenerateTestPki();
  ASSERT_TRUE(pki.ok()) << pki.status();
  auto files = test_support::WriteTestPki(*pki, dir_.path() + "/pki");
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_TRUE(config_.Write(ChatOnA()));
  control_plane_ =
      ControlPlane::Start(config_.path(), "127.0.0.1:0",
                          {"--admin-token-file", token_path_, "--tls-ca", files->ca_cert,
                           "--tls-cert", files->server_cert, "--tls-key", files->server_key});
  ASSERT_NE(control_plane_, nullptr);
  const std::string server = control_plane_->grpc_address;
  std::string out;
  std::string err;

  ASSERT_EQ(Berryctl({"--server", server, "--token-file", token_path_, "--tls-ca", files->ca_cert,
                      "--tls-cert", files->client_cert, "--tls-key", files->client_key, "-o",
                      "json", "get", "version"},
                     &out, &err),
            0)
      << err;
  EXPECT_FALSE(std::string(boost::json::parse(out).at("version").as_string()).empty()) << out;

  // The server requires a client certificate: without one the handshake fails.
  const int code = Berryctl({"--server", server, "--token-file", token_path_, "--tls-ca",
                             files->ca_cert, "get", "version"},
                            &out, &err);
  EXPECT_EQ(code, 3) << err;
  EXPECT_TRUE(err.starts_with("berryctl: ")) << err;
  EXPECT_NE(err.find(server), std::string::npos) << err;

  // Plaintext against the TLS port fails the same way.
  EXPECT_EQ(
      Berryctl({"--server", server, "--token-file", token_path_, "get", "version"}, &out, &err), 3)
      << err;
}

TEST_F(Admin, WatchEventsReportsABackendHealthChange) {
  StartFleet(ChatOnBoth(), /*with_proxy=*/false);
  const std::string a_id = BackendId("chat", "a", "up-a");
  auto context = Context();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub_->WatchEvents(context.get(), {});
  v1::WatchEventsResponse event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(SetState(a_id, v1::BACKEND_ADMIN_STATE_DRAINING).ok());
  bool seen = false;
  std::string descriptions;
  while (!seen && reader->Read(&event)) {
    absl::StrAppend(&descriptions, event.description(), "\n");
    seen = event.description().find("backend " + a_id) != std::string::npos &&
           event.description().find("-> HEALTH_STATUS_DRAINING") != std::string::npos;
  }
  EXPECT_TRUE(seen) << descriptions;
  EXPECT_FALSE(event.version().empty());
  context->TryCancel();
  (void)reader->Finish();
}

TEST_F(Admin, BerryctlWatchPrintsTheVersionChangeAndEndsOnCtrlC) {
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  ShellChild watch({BERRYCTL_BINARY, "--server", control_plane_->grpc_address, "--token-file",
                    token_path_, "watch"},
                   dir_.path() + "/watch.out", dir_.path() + "/watch.err");
  ASSERT_TRUE(watch.started());
  ASSERT_TRUE(WaitUntil([&] { return watch.out().find("watching") != std::string::npos; },
                        kConvergeTimeout))
      << watch.out() << watch.err();

  v1::ApplyConfigResponse applied;
  ASSERT_TRUE(Apply(ChatOnB(), &applied).ok());
  ASSERT_FALSE(applied.new_version().empty());
  const std::string table_version = GetConfig().table_version();
  // "<time>  <version>  route table version <v> published (was <old>)"
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::string out = watch.out();
        return out.find(absl::StrCat("route table version ", table_version, " published")) !=
               std::string::npos;
      },
      kConvergeTimeout))
      << "table version " << table_version << "\n"
      << watch.out() << watch.err();

  watch.Signal(SIGINT);
  const std::optional<int> status = watch.Wait(10s);
  ASSERT_TRUE(status.has_value()) << "berryctl watch still runs 10 s after SIGINT";
  // What a shell shows as 0 or 130: berryctl installs no SIGINT handler, so Ctrl-C ends it the
  // default way.
  EXPECT_TRUE((WIFEXITED(*status) && WEXITSTATUS(*status) == 0) ||
              (WIFSIGNALED(*status) && WTERMSIG(*status) == SIGINT))
      << DescribeWaitStatus(*status) << "\n"
      << watch.err();
}

// The buf CLI: $BERRY_BUF, else /tmp/buf/node_modules/.bin/buf, else `npx --yes
// @bufbuild/buf@1.75.0`. Empty (with the reason in `why`) when none runs.
std::vector<std::string> FindBuf(std::string* why) {
  std::vector<std::vector<std::string>> candidates;
  if (const char* env = std::getenv("BERRY_BUF"); env != nullptr && *env != '\0') {
    candidates.push_back({env});
  }
  candidates.push_back({"/tmp/buf/node_modules/.bin/buf"});
  for (const char* npx : {"/usr/bin/npx", "/usr/local/bin/npx"}) {
    if (access(npx, X_OK) == 0) {
      candidates.push_back({npx, "--yes", "@bufbuild/buf@1.75.0"});
      break;
    }
  }
  for (const auto& candidate : candidates) {
    if (candidate.size() == 1 && access(candidate[0].c_str(), X_OK) != 0) {
      absl::StrAppend(why, candidate[0], ": not found\n");
      continue;
    }
    std::vector<std::string> argv = candidate;
    argv.push_back("--version");
    auto process = Process::Spawn(argv, {}, itest::kSigwaitSignals);
    if (process == nullptr) continue;
    const auto code = process->Wait(60s);
    if (code == 0) return candidate;
    if (!code) process->Kill();
    absl::StrAppend(why, absl::StrJoin(argv, " "), ": ",
                    code ? absl::StrCat("exit ", *code) : std::string("no answer in 60 s"), " ",
                    process->err(), "\n");
  }
  return {};
}

TEST_F(Admin, BufCurlListsAndCallsAdminServiceThroughReflection) {
  std::string why;
  const std::vector<std::string> buf = FindBuf(&why);
  ASSERT_FALSE(buf.empty())
      << "buf 1.75.0 is needed: `npm install --prefix /tmp/buf @bufbuild/buf@1.75.0` (or set "
         "BERRY_BUF to a buf binary, or make `npx --yes @bufbuild/buf@1.75.0` work)\n"
      << why;
  StartFleet(ChatOnA(), /*with_proxy=*/false);
  const std::string url = "http://" + control_plane_->grpc_address;
  auto run = [&](std::vector<std::string> args, std::string* out, std::string* err) {
    std::vector<std::string> argv = buf;
    argv.insert(argv.end(), args.begin(), args.end());
    auto process = Process::Spawn(argv, {}, itest::kSigwaitSignals);
    if (process == nullptr) return -1;
    const auto code = process->Wait(60s);
    *out = process->out();
    *err = process->err();
    return code.value_or(-1);
  };
  std::string out;
  std::string err;

  // Every service reflection lists must also be describable, or buf exits 1 after the list
  // (grpc::EnableDefaultHealthCheckService lists grpc.health.v1.Health, whose descriptor is only
  // known to reflection when the generated health proto is linked in).
  EXPECT_EQ(run({"curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", url},
                &out, &err),
            0)
      << err;
  for (const char* method :
       {"berry.v1.AdminService/GetConfig", "berry.v1.AdminService/ApplyConfig",
        "berry.v1.AdminService/ListBackends", "berry.v1.AdminService/WatchEvents"}) {
    EXPECT_NE(out.find(method), std::string::npos) << method << "\n" << out;
  }

  ASSERT_EQ(run({"curl", "--protocol", "grpc", "--http2-prior-knowledge", "-H",
                 absl::StrCat("authorization: Bearer ", kAdminToken), "-d", "{}",
                 url + "/berry.v1.AdminService/ListBackends"},
                &out, &err),
            0)
      << err;
  const boost::json::value listed = boost::json::parse(out);
  const auto& backends = listed.at("backends").as_array();
  ASSERT_EQ(backends.size(), 1u) << out;
  EXPECT_EQ(backends[0].at("backendId").as_string(), "chat/a/up-a") << out;

  // Without the token reflection still answers but the call is refused.
  EXPECT_NE(run({"curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", "{}",
                 url + "/berry.v1.AdminService/ListBackends"},
                &out, &err),
            0);
  EXPECT_NE((out + err).find("unauthenticated"), std::string::npos) << out << err;
}

}  // namespace
}  // namespace berry::fleet_test::admin_test
