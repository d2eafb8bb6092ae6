// The berry-proxy binary as an operator runs it, against berry-mock-upstream processes: flags and
// exit codes, the "listening" line, SIGHUP reloads (good and broken configs, config warnings) and
// SIGTERM drain.
// Every wait polls with a deadline; every port is chosen by the kernel.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/integration/child_process.h"
#include "tests/support/certs.h"
#include "tests/support/http_client.h"

extern char** environ;

namespace berry::itest::proxy_process_test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test_support::HttpRequest;
using test_support::HttpResponse;
using test_support::SseEvent;
using test_support::StreamedResponse;

constexpr const char* kProxy = BERRY_PROXY_BINARY;
constexpr const char* kMock = BERRY_MOCK_UPSTREAM_BINARY;
constexpr const char* kTestdata = BERRY_TESTDATA_DIR;
constexpr const char* kProxyMainSource = BERRY_PROXY_MAIN_SOURCE;

using Process = ChildProcess;

// A berry-mock-upstream process named `name`; base_url() once it listens.
struct MockProcess {
  std::unique_ptr<Process> process;
  std::string base_url;
};

MockProcess StartMockProcess(std::string_view name, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {kMock, "--listen", "127.0.0.1:0", "--name", std::string(name)};
  args.insert(args.end(), extra.begin(), extra.end());
  MockProcess mock;
  mock.process = Process::Spawn(args);
  if (mock.process != nullptr) {
    mock.base_url = mock.process->LineAfter("listening on ", 10s);
  }
  return mock;
}

// A config directory with config.toml, rewritten atomically (a SIGHUP never reads half a file).
class ConfigFile {
 public:
  ConfigFile() {
    auto dir = test_support::MakeTempDir("berry-proxy-process-");
    EXPECT_TRUE(dir.ok()) << dir.status();
    dir_ = dir.ok() ? *dir : "/tmp";
    path_ = dir_ + "/config.toml";
  }
  ~ConfigFile() {
    std::remove(path_.c_str());
    rmdir(dir_.c_str());
  }

  void Write(std::string_view toml) const {
    const std::string next = path_ + ".next";
    {
      std::ofstream out(next, std::ios::binary | std::ios::trunc);
      out << toml;
    }
    ASSERT_EQ(std::rename(next.c_str(), path_.c_str()), 0);
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

std::string ChatConfig(std::string_view base_url, std::string_view model = "chat") {
  return absl::StrCat("[providers.mock]\nbase_url = \"", std::string(base_url),
                      "\"\napi_key = \"sk-process-test-secret\"\nmodels = [\"up-model\"]\n\n",
                      "[models.", std::string(model), "]\n[[models.", std::string(model),
                      ".backends]]\nprovider = \"mock\"\nmodel = \"up-model\"\n");
}

// A berry-proxy process serving `config` on 127.0.0.1:0; url() once it listens.
struct ProxyProcess {
  std::unique_ptr<Process> process;
  std::string url;  // "http://127.0.0.1:PORT"
};

// Signals the proxy starts with blocked. None: main() blocks SIGHUP/SIGINT/SIGTERM itself before
// any thread exists (RegressionProcessSignals guards that).
const std::vector<int> kMainsSignals = {};

ProxyProcess StartProxyProcess(const ConfigFile& config, std::vector<std::string> extra = {},
                               const std::vector<std::string>& extra_env = {},
                               const std::vector<int>& blocked_signals = kMainsSignals) {
  std::vector<std::string> args = {
      kProxy, "--config", config.path(), "--listen", "127.0.0.1:0", "--threads", "2"};
  args.insert(args.end(), extra.begin(), extra.end());
  ProxyProcess proxy;
  proxy.process = Process::Spawn(args, extra_env, blocked_signals);
  if (proxy.process != nullptr) {
    proxy.url = proxy.process->LineAfter("berry-proxy listening on ", 10s);
  }
  return proxy;
}

// The setup most tests here share: a mock provider called `mock_name` (with `mock_flags`),
// "chat" served by it alone, and a proxy on that config (with `proxy_flags`, `env` and
// `blocked_signals` as StartProxyProcess takes them). Members are destroyed proxy first.
struct ChatProxy {
  MockProcess mock;
  ConfigFile config;
  ProxyProcess proxy;

  // Why the proxy has no URL: the mock's or the proxy's log.
  std::string Log() const {
    if (mock.base_url.empty()) {
      return mock.process ? mock.process->err() : "the mock did not start";
    }
    return proxy.process ? proxy.process->err() : "the proxy did not start";
  }
};

std::unique_ptr<ChatProxy> StartChatProxy(std::string_view mock_name,
                                          std::vector<std::string> mock_flags = {},
                                          std::vector<std::string> proxy_flags = {},
                                          const std::vector<std::string>& env = {},
                                          const std::vector<int>& blocked_signals = kMainsSignals) {
  auto setup = std::make_unique<ChatProxy>();
  setup->mock = StartMockProcess(mock_name, std::move(mock_flags));
  if (!setup->mock.base_url.empty()) {
    setup->config.Write(ChatConfig(setup->mock.base_url));
    setup->proxy = StartProxyProcess(setup->config, std::move(proxy_flags), env, blocked_signals);
  }
  return setup;
}

std::string ChatBody(std::string_view model, std::string_view extra = "") {
  return absl::StrCat(R"({"model":")", std::string(model),
                      R"(","messages":[{"role":"user","content":"hi"}])", std::string(extra), "}");
}

absl::StatusOr<HttpResponse> Chat(const std::string& proxy_url, std::string_view model) {
  return test_support::Fetch(
      HttpRequest::Post(proxy_url + "/v1/chat/completions", ChatBody(model)));
}

// Polls until a chat request for `model` is answered by the mock called `mock_name`.
bool WaitUntilServedBy(const std::string& proxy_url, std::string_view model,
                       std::string_view mock_name, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto response = Chat(proxy_url, model);
    if (response.ok() && response->status == 200 &&
        response->Header("x-mock-upstream").value_or("") == mock_name) {
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// Every flag proxy_main.cc registers (`set.String("name", ...)`, `set.Int(...)`, ...).
std::vector<std::string> RegisteredFlags() {
  std::ifstream in(kProxyMainSource);
  const std::string source((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> flags;
  static const std::regex kRegistration(
      R"re(set\.(String|Int|Bool|Duration)\(\s*"([a-z0-9-]+)")re");
  for (auto it = std::sregex_iterator(source.begin(), source.end(), kRegistration);
       it != std::sregex_iterator(); ++it) {
    flags.push_back("--" + (*it)[2].str());
  }
  return flags;
}

TEST(ProxyProcess, HelpListsEveryFlagAndExitsZero) {
  auto process = Process::Spawn({kProxy, "--help"});
  ASSERT_NE(process, nullptr);

  EXPECT_EQ(process->Wait(10s), 0);
  process->WaitForOut("--help");
  const std::string help = process->out();
  std::vector<std::string> flags = RegisteredFlags();
  ASSERT_GE(flags.size(), 7u) << "could not read the flags from " << kProxyMainSource;
  flags.push_back("--help");
  for (const char* documented : {"--config", "--listen", "--threads", "--log-level",
                                 "--drain-seconds", "--access-log", "--upstream-ca"}) {
    EXPECT_NE(std::find(flags.begin(), flags.end(), documented), flags.end()) << documented;
  }
  for (const std::string& flag : flags) {
    EXPECT_NE(help.find("  " + flag), std::string::npos) << flag << " missing from:\n" << help;
  }
}

TEST(ProxyProcess, UnknownFlagExitsTwo) {
  auto process = Process::Spawn({kProxy, "--bogus-flag"});
  ASSERT_NE(process, nullptr);

  EXPECT_EQ(process->Wait(10s), 2);
  EXPECT_TRUE(process->WaitForErr("bogus-flag", 2s)) << process->err();
}

TEST(ProxyProcess, MissingConfigExitsTwo) {
  auto process = Process::Spawn({kProxy, "--listen", "127.0.0.1:0"});
  ASSERT_NE(process, nullptr);

  EXPECT_EQ(process->Wait(10s), 2);
  EXPECT_TRUE(process->WaitForErr("--config", 2s)) << process->err();
}

TEST(ProxyProcess, InvalidConfigExitsOneBeforeListeningAndPrintsEveryError) {
  const std::string broken = std::string(kTestdata) + "/broken.toml";
  auto process = Process::Spawn({kProxy, "--config", broken, "--listen", "127.0.0.1:0"});
  ASSERT_NE(process, nullptr);

  EXPECT_EQ(process->Wait(10s), 1);
  process->WaitForErr("weight", 2s);
  const std::string err = process->err();
  EXPECT_NE(err.find("providers.p.base_url"), std::string::npos) << err;
  EXPECT_NE(err.find("models.chat.backends[0].provider"), std::string::npos) << err;
  EXPECT_NE(err.find("models.chat.backends[0].weight"), std::string::npos) << err;
  EXPECT_NE(err.find("broken.toml:"), std::string::npos) << err;
  EXPECT_EQ(err.find("sk-SECRET"), std::string::npos) << err;
  EXPECT_EQ(process->out().find("listening"), std::string::npos) << process->out();
}

TEST(ProxyProcess, ServesAndPrintsTheListeningLineAndAccessLog) {
  const auto setup = StartChatProxy("one");
  ProxyProcess& proxy = setup->proxy;

  ASSERT_TRUE(proxy.url.starts_with("http://127.0.0.1:")) << setup->Log();
  EXPECT_NE(proxy.url, "http://127.0.0.1:0");
  auto response = Chat(proxy.url, "chat");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(response->Header("x-mock-upstream").value_or(""), "one");
  // The access log goes to stdout, one JSON line per request, next to the listening line.
  EXPECT_TRUE(proxy.process->WaitForOut(R"("path":"/v1/chat/completions")"))
      << proxy.process->out();
  EXPECT_EQ(proxy.process->out().find("sk-process-test-secret"), std::string::npos);
  EXPECT_EQ(proxy.process->err().find("sk-process-test-secret"), std::string::npos);
  // No [users]: the open gateway is worth a warning.
  EXPECT_TRUE(proxy.process->WaitForErr("open")) << proxy.process->err();

  proxy.process->Signal(SIGTERM);
  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
}

// Connects to `proxy_url` and, sending nothing, reads until the server closes or `timeout`.
std::string ReadUntilClosed(const std::string& proxy_url, std::chrono::milliseconds timeout) {
  const int port = std::stoi(proxy_url.substr(proxy_url.rfind(':') + 1));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string got;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd waiting{fd, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&waiting, 1, static_cast<int>(left.count())) <= 0) {
        got += "<timed out>";
        break;
      }
      char buffer[4096];
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n <= 0) {
        break;
      }
      got.append(buffer, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return got;
}

// The value of an unlabelled sample `name` in a Prometheus text exposition; -1 when absent.
double Sample(const std::string& exposition, const std::string& name) {
  const std::regex line("(^|\n)" + name + " ([0-9.e+]+)");
  std::smatch match;
  return std::regex_search(exposition, match, line) ? std::stod(match[2].str()) : -1;
}

// --admin-listen: /metrics, /healthz and /readyz on a port of their own; /metrics leaves the
// client listener (it is public and unauthenticated), health stays on both.
TEST(ProxyProcess, AdminListenServesMetricsApartFromClients) {
  const auto setup =
      StartChatProxy("one", {}, {"--admin-listen", "127.0.0.1:0", "--shutdown-delay-seconds", "2"});
  ProxyProcess& proxy = setup->proxy;
  ASSERT_FALSE(proxy.url.empty()) << setup->Log();
  const std::string admin = proxy.process->LineAfter("berry-proxy admin listening on ", 2s);
  ASSERT_TRUE(admin.starts_with("http://127.0.0.1:")) << proxy.process->out();
  EXPECT_NE(admin, proxy.url);
  auto chat = Chat(proxy.url, "chat");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->status, 200);

  auto metrics = test_support::Fetch(HttpRequest::Get(admin + "/metrics"));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("berry_requests_total{"), std::string::npos) << metrics->body;
  auto ready = test_support::Fetch(HttpRequest::Get(admin + "/readyz"));
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->status, 200);
  EXPECT_NE(ready->body.find(R"("version":)"), std::string::npos) << ready->body;
  auto unknown = test_support::Fetch(HttpRequest::Get(admin + "/v1/models"));
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_EQ(unknown->status, 404);

  auto public_metrics = test_support::Fetch(HttpRequest::Get(proxy.url + "/metrics"));
  ASSERT_TRUE(public_metrics.ok()) << public_metrics.status();
  EXPECT_EQ(public_metrics->status, 404) << public_metrics->body;
  EXPECT_EQ(public_metrics->body.find("berry_requests_total"), std::string::npos);
  auto public_health = test_support::Fetch(HttpRequest::Get(proxy.url + "/healthz"));
  ASSERT_TRUE(public_health.ok()) << public_health.status();
  EXPECT_EQ(public_health->status, 200);

  // Through the shutdown delay the admin port says "not ready" like the client port.
  proxy.process->Signal(SIGTERM);
  ASSERT_TRUE(proxy.process->WaitForErr("not ready, still serving", 10s)) << proxy.process->err();
  auto stopping = test_support::Fetch(HttpRequest::Get(admin + "/readyz"));
  ASSERT_TRUE(stopping.ok()) << stopping.status();
  EXPECT_EQ(stopping->status, 503);
  EXPECT_NE(stopping->body.find("shutting down"), std::string::npos) << stopping->body;
  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
}

TEST(ProxyProcess, ConnectionsBeyondMaxConnectionsAre503AndTheOpenOnesKeepBeingServed) {
  const auto setup = StartChatProxy("one", {}, {"--max-connections", "2"});
  ProxyProcess& proxy = setup->proxy;
  ASSERT_FALSE(proxy.url.empty()) << setup->Log();

  // Two kept-alive connections, each answered once: both are open and counted.
  std::vector<std::unique_ptr<test_support::HttpConnection>> open;
  for (int i = 0; i < 2; ++i) {
    auto connection = test_support::HttpConnection::Connect(proxy.url);
    ASSERT_TRUE(connection.ok()) << connection.status();
    auto response =
        (*connection)->Send(HttpRequest::Post("/v1/chat/completions", ChatBody("chat")));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, 200) << response->body;
    open.push_back(*std::move(connection));
  }

  // A third is answered at once, before it sends anything, and closed.
  const auto started = Clock::now();
  const std::string refused = ReadUntilClosed(proxy.url, 5s);
  EXPECT_LT(Clock::now() - started, 2s);
  EXPECT_TRUE(refused.starts_with("HTTP/1.1 503 ")) << refused;
  EXPECT_NE(refused.find("Connection: close"), std::string::npos) << refused;
  const size_t body_at = refused.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos) << refused;
  const auto error = boost::json::parse(refused.substr(body_at + 4)).as_object();
  EXPECT_EQ(error.at("error").at("code").as_string(), "too_many_connections") << refused;
  EXPECT_EQ(error.at("error").at("type").as_string(), "server_error") << refused;

  // The open ones are served as before, and the counter shows the refusal.
  auto again = open[0]->Send(HttpRequest::Post("/v1/chat/completions", ChatBody("chat")));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->status, 200);
  auto metrics = open[1]->Send(HttpRequest::Get("/metrics"));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(Sample(metrics->body, "berry_downstream_connections_refused_total"), 1)
      << metrics->body;
  EXPECT_EQ(Sample(metrics->body, "berry_downstream_connections"), 2) << metrics->body;

  // One closes: a new connection gets in (once the proxy has seen the close).
  open.pop_back();
  bool served = false;
  const auto deadline = Clock::now() + 10s;
  while (!served && Clock::now() < deadline) {
    auto response = Chat(proxy.url, "chat");
    served = response.ok() && response->status == 200;
    if (!served) {
      std::this_thread::sleep_for(20ms);
    }
  }
  EXPECT_TRUE(served);

  proxy.process->Signal(SIGTERM);
  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
}

TEST(ProxyProcess, MaxConnectionsOutOfRangeExitsTwo) {
  auto process = Process::Spawn({kProxy, "--config", "/nonexistent", "--max-connections", "-1"});
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->Wait(10s), 2);
  EXPECT_TRUE(process->WaitForErr("max-connections", 2s)) << process->err();
}

TEST(ProxyProcess, MissingStateDirIsCreatedPrivateAtStart) {
  ConfigFile scratch;  // only for its directory
  const std::string parent = scratch.path() + ".state";
  const std::string state_dir = parent + "/nested";
  // Managed mode with no control plane listening: the proxy starts and keeps retrying.
  auto process = Process::Spawn({kProxy, "--control-plane", "127.0.0.1:1", "--node-id", "n1",
                                 "--listen", "127.0.0.1:0", "--state-dir", state_dir});
  ASSERT_NE(process, nullptr);
  EXPECT_FALSE(process->LineAfter("berry-proxy listening on ", 10s).empty()) << process->err();
  struct stat info {};
  ASSERT_EQ(::stat(state_dir.c_str(), &info), 0) << process->err();
  EXPECT_TRUE(S_ISDIR(info.st_mode));
  EXPECT_EQ(info.st_mode & 07777, 0700u);
  process->Signal(SIGTERM);
  EXPECT_EQ(process->Wait(15s), 0) << process->err();
  std::filesystem::remove_all(parent);
}

// Plaintext gRPC off loopback would carry route tables, with provider keys, in the clear: refused
// unless --insecure says so (as berry-control-plane refuses such a listener).
TEST(ProxyProcess, PlaintextControlPlaneOffLoopbackIsRefusedWithoutInsecure) {
  auto refused = Process::Spawn(
      {kProxy, "--control-plane", "10.1.2.3:50051", "--node-id", "n1", "--listen", "127.0.0.1:0"});
  ASSERT_NE(refused, nullptr);
  EXPECT_EQ(refused->Wait(10s), 2) << refused->err();
  EXPECT_NE(refused->err().find("--control-plane 10.1.2.3:50051 is not a loopback address"),
            std::string::npos)
      << refused->err();
  EXPECT_EQ(refused->out().find("listening"), std::string::npos) << refused->out();

  // With --insecure it starts (and keeps retrying the unreachable control plane).
  auto allowed = Process::Spawn({kProxy, "--control-plane", "10.1.2.3:50051", "--insecure",
                                 "--node-id", "n1", "--listen", "127.0.0.1:0"});
  ASSERT_NE(allowed, nullptr);
  EXPECT_FALSE(allowed->LineAfter("berry-proxy listening on ", 10s).empty()) << allowed->err();
  allowed->Signal(SIGTERM);
  EXPECT_EQ(allowed->Wait(15s), 0) << allowed->err();
}

TEST(ProxyProcess, StateDirThatCannotBeWrittenRefusesToStart) {
  ConfigFile not_a_directory;
  not_a_directory.Write("a file, not a directory");
  auto process = Process::Spawn({kProxy, "--control-plane", "127.0.0.1:1", "--node-id", "n1",
                                 "--listen", "127.0.0.1:0", "--state-dir", not_a_directory.path()});
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->Wait(10s), 1);
  EXPECT_TRUE(process->WaitForErr("is not a directory", 2s)) << process->err();
  EXPECT_NE(process->err().find("--state-dir"), std::string::npos) << process->err();
  EXPECT_EQ(process->out().find("listening"), std::string::npos) << process->out();
}

TEST(ProxyProcess, SighupWithAnEditedConfigChangesBehaviour) {
  MockProcess one = StartMockProcess("one");
  MockProcess two = StartMockProcess("two");
  ASSERT_FALSE(one.base_url.empty());
  ASSERT_FALSE(two.base_url.empty());
  ConfigFile config;
  config.Write(ChatConfig(one.base_url));
  ProxyProcess proxy = StartProxyProcess(config);
  ASSERT_FALSE(proxy.url.empty()) << proxy.process->err();
  ASSERT_TRUE(WaitUntilServedBy(proxy.url, "chat", "one"));

  config.Write(ChatConfig(two.base_url, "renamed"));
  proxy.process->Signal(SIGHUP);

  EXPECT_TRUE(WaitUntilServedBy(proxy.url, "renamed", "two")) << proxy.process->err();
  auto old_model = Chat(proxy.url, "chat");
  ASSERT_TRUE(old_model.ok());
  EXPECT_EQ(old_model->status, 404);
  proxy.process->Signal(SIGTERM);
  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
}

TEST(ProxyProcess, SighupWithABrokenConfigKeepsTheRunningOne) {
  MockProcess one = StartMockProcess("one");
  ASSERT_FALSE(one.base_url.empty());
  ConfigFile config;
  config.Write(ChatConfig(one.base_url));
  ProxyProcess proxy = StartProxyProcess(config);
  ASSERT_FALSE(proxy.url.empty()) << proxy.process->err();
  ASSERT_TRUE(WaitUntilServedBy(proxy.url, "chat", "one"));

  // Valid TOML, two validation errors: an unknown setting and a dangling provider.
  config.Write(ChatConfig(one.base_url, "renamed") +
               "\n[settings]\nno_such_setting = 1\n\n[models.extra]\n[[models.extra.backends]]\n"
               "provider = \"ghost\"\nmodel = \"up-model\"\n");
  proxy.process->Signal(SIGHUP);

  ASSERT_TRUE(proxy.process->WaitForErr("config rejected"))
      << "exit status so far: " << proxy.process->Wait(0ms).value_or(-1) << "\n"
      << proxy.process->err();
  const std::string err = proxy.process->err();
  EXPECT_NE(err.find("no_such_setting"), std::string::npos) << err;
  EXPECT_NE(err.find("models.extra.backends[0].provider"), std::string::npos) << err;
  EXPECT_TRUE(WaitUntilServedBy(proxy.url, "chat", "one", 2s)) << "the old table was dropped";
  auto renamed = Chat(proxy.url, "renamed");
  ASSERT_TRUE(renamed.ok());
  EXPECT_EQ(renamed->status, 404) << "a broken config was half-applied";
  proxy.process->Signal(SIGTERM);
  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
}

TEST(ProxyProcess, ConfigKeysWithoutEffectAreLoggedAsWarningsAtStartAndOnSighup) {
  MockProcess one = StartMockProcess("one");
  ASSERT_FALSE(one.base_url.empty());
  ConfigFile config;
  config.Write(ChatConfig(one.base_url) + "\n[settings]\nmax_internal_retries = 2\n");
  ProxyProcess proxy = StartProxyProcess(config);
  ASSERT_FALSE(proxy.url.empty()) << proxy.process->err();

  // One operational log line per warning, naming the key and where it is.
  ASSERT_TRUE(proxy.process->WaitForErr(R"("key":"settings.max_internal_retries")"))
      << proxy.process->err();
  const std::string at_start = proxy.process->err();
  EXPECT_NE(at_start.find(R"("msg":"config warning")"), std::string::npos) << at_start;
  EXPECT_NE(at_start.find(config.path() + ":"), std::string::npos) << at_start;
  EXPECT_NE(at_start.find("has no effect"), std::string::npos) << at_start;
  EXPECT_EQ(at_start.find("settings.smart_ai"), std::string::npos) << at_start;
  ASSERT_TRUE(WaitUntilServedBy(proxy.url, "chat", "one")) << "a warning does not stop serving";

  config.Write(ChatConfig(one.base_url, "renamed") +
               "\n[settings.smart_ai]\ninitial_confidence = 0.8\n");
  proxy.process->Signal(SIGHUP);

  EXPECT_TRUE(proxy.process->WaitForErr(R"("key":"settings.smart_ai")")) << proxy.process->err();
  EXPECT_TRUE(WaitUntilServedBy(proxy.url, "renamed", "one")) << "the reload was applied";
  EXPECT_EQ(proxy.process->err().find("sk-process-test-secret"), std::string::npos);
  proxy.process->Signal(SIGTERM);
  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
}

TEST(ProxyProcess, SigtermLetsAStreamInFlightFinishThenExitsZero) {
  const auto setup = StartChatProxy("slow", {"--stream-events", "6", "--stream-interval-ms", "200"},
                                    {"--drain-seconds", "20"});
  ProxyProcess& proxy = setup->proxy;
  ASSERT_FALSE(proxy.url.empty()) << setup->Log();

  std::atomic<bool> started{false};
  absl::StatusOr<StreamedResponse> streamed;
  std::thread client([&] {
    streamed =
        test_support::FetchStreaming(HttpRequest::Post(proxy.url + "/v1/chat/completions",
                                                       ChatBody("chat", R"(,"stream":true)")),
                                     [&](const SseEvent&) {
                                       started = true;
                                       return true;
                                     });
  });
  const auto deadline = Clock::now() + 10s;
  while (!started && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(started) << "the stream never started";

  proxy.process->Signal(SIGTERM);
  const auto signalled = Clock::now();
  client.join();

  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_TRUE(streamed->body_status.ok()) << streamed->body_status;
  EXPECT_TRUE(streamed->done()) << "the drain cut the stream:\n" << streamed->body;
  EXPECT_EQ(streamed->events.size(), 8u);  // 6 content, final, [DONE]
  EXPECT_GE(Clock::now() - signalled, 500ms) << "the stream should still have been running";
  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
  EXPECT_NE(proxy.process->err().find("draining"), std::string::npos) << proxy.process->err();
}

// Kubernetes removes a terminating pod from its Service's endpoints while it sends SIGTERM;
// connections keep arriving until that propagates. With --shutdown-delay-seconds the proxy turns
// not-ready at once but keeps serving through the delay, then drains and exits.
TEST(ProxyProcess, SigtermWithAShutdownDelayTurnsNotReadyAtOnceAndKeepsServing) {
  const auto setup =
      StartChatProxy("mock", {}, {"--shutdown-delay-seconds", "2", "--drain-seconds", "5"});
  ProxyProcess& proxy = setup->proxy;
  ASSERT_FALSE(proxy.url.empty()) << setup->Log();
  auto ready = test_support::Fetch(HttpRequest::Get(proxy.url + "/readyz"));
  ASSERT_TRUE(ready.ok()) << ready.status();
  ASSERT_EQ(ready->status, 200);

  proxy.process->Signal(SIGTERM);
  const auto signalled = Clock::now();
  int readyz = 0;
  while (Clock::now() - signalled < 1500ms) {
    auto response = test_support::Fetch(HttpRequest::Get(proxy.url + "/readyz"));
    ASSERT_TRUE(response.ok()) << "the proxy stopped accepting during the delay: "
                               << response.status();
    readyz = response->status;
    if (readyz == 503) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(readyz, 503) << "still ready after SIGTERM";
  auto healthz = test_support::Fetch(HttpRequest::Get(proxy.url + "/healthz"));
  ASSERT_TRUE(healthz.ok()) << healthz.status();
  EXPECT_EQ(healthz->status, 200) << "liveness must not fail while shutting down";
  auto chat = Chat(proxy.url, "chat");  // a new connection, inside the delay
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->status, 200);
  EXPECT_LT(Clock::now() - signalled, 2s) << "the checks above ran past the delay";

  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
  EXPECT_GE(Clock::now() - signalled, 1900ms) << "exited before the delay was over";
  EXPECT_NE(proxy.process->err().find("not ready, still serving"), std::string::npos)
      << proxy.process->err();
}

TEST(ProxyProcess, SecondSigtermSkipsTheRestOfTheShutdownDelay) {
  const auto setup = StartChatProxy("mock", {}, {"--shutdown-delay-seconds", "120"});
  ProxyProcess& proxy = setup->proxy;
  ASSERT_FALSE(proxy.url.empty()) << setup->Log();

  proxy.process->Signal(SIGTERM);
  ASSERT_TRUE(proxy.process->WaitForErr("not ready, still serving", 10s)) << proxy.process->err();
  const auto second = Clock::now();
  proxy.process->Signal(SIGTERM);
  EXPECT_EQ(proxy.process->Wait(15s), 0) << proxy.process->err();
  EXPECT_LT(Clock::now() - second, 10s);
  EXPECT_NE(proxy.process->err().find("second termination signal"), std::string::npos)
      << proxy.process->err();
}

// The process-level face of RegressionServerTeardown (proxy_regression_test.cc): when main()
// returns, ~HttpServer destroys each worker's io_context before its ProxyHandler, whose upstream
// pool then closes kept-alive sockets through freed Asio services
// (common/http/server.cc). With glibc's default malloc the use-after-free is
// usually silent; with freed memory overwritten (as hardened allocators do) berry-proxy crashes
// on every clean shutdown after it relayed a request, so the exit status of a SIGTERM is a
// SIGSEGV instead of 0.
// Fixed in 26ac1ad (Handler::Shutdown): passes; belongs in ProxyProcess.
TEST(RegressionProcessExit, ExitsZeroOnSigtermAfterRelayingWithFreedMemoryOverwritten) {
  const auto setup = StartChatProxy(
      "one", {}, {}, {"GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.perturb=165"});
  ProxyProcess& proxy = setup->proxy;
  ASSERT_FALSE(proxy.url.empty()) << setup->Log();
  for (int i = 0; i < 4; ++i) {  // likely both workers end up with a pooled connection
    auto response = Chat(proxy.url, "chat");
    ASSERT_TRUE(response.ok()) << response.status();
    ASSERT_EQ(response->status, 200);
  }

  proxy.process->Signal(SIGTERM);

  EXPECT_EQ(proxy.process->Wait(15s), 0) << "128 + 11 = SIGSEGV\n" << proxy.process->err();
}

// data-plane/proxy_main.cc:195 calls ControlPlaneCredentials() — grpc::InsecureChannelCredentials()
// even in standalone mode — which runs grpc_init() and starts three gRPC threads; only at :212
// does main() block SIGHUP, SIGINT and SIGTERM for its sigwait loop. The gRPC threads keep them
// unblocked (/proc/PID/task/*/status: three threads with SigBlk 0), so a SIGHUP or SIGTERM that
// arrives while the main thread is not waiting in sigwait (e.g. while it reloads) goes to a gRPC
// thread, whose default action kills the process: a reload kills the proxy (exit by signal 1), a
// SIGTERM skips the drain and cuts every stream (signal 15). Seen in about 1 of 20 runs of
// SighupWithABrokenConfigKeepsTheRunningOne before StartProxyProcess started the proxy with those
// signals blocked; a burst of SIGHUPs (a config tool touching the file several times) makes it
// near-certain. Starting the proxy with the three signals blocked makes this test pass, which
// confirms the cause. Fix: block the signals first thing in main(), before anything can start a
// thread, or create the credentials only in managed mode and after the mask.
TEST(RegressionProcessSignals, BurstOfSighupsReloadsAndNeverKillsTheProxy) {
  const auto setup = StartChatProxy("one", {}, {}, {}, /*blocked_signals=*/{});
  ProxyProcess& proxy = setup->proxy;
  ASSERT_FALSE(proxy.url.empty()) << setup->Log();
  ASSERT_TRUE(WaitUntilServedBy(proxy.url, "chat", "one"));

  // SIGHUPs every 100 us for up to 2 s (the burst's shape, not a synchronisation): some land
  // while the main thread is busy reloading. Stops early once the proxy died.
  const auto burst_end = Clock::now() + 2s;
  while (Clock::now() < burst_end && !proxy.process->Wait(0ms)) {
    proxy.process->Signal(SIGHUP);
    std::this_thread::sleep_for(100us);
  }

  EXPECT_TRUE(proxy.process->WaitForErr("route table loaded", 5s));
  ASSERT_EQ(proxy.process->Wait(500ms), std::nullopt)
      << "berry-proxy died of a SIGHUP (128 + 1 = 129)\n"
      << proxy.process->err();
  EXPECT_TRUE(WaitUntilServedBy(proxy.url, "chat", "one", 2s));
}

}  // namespace
}  // namespace berry::itest::proxy_process_test
