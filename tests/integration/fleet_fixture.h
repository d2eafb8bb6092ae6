// The fleet as an operator runs it: one berry-control-plane process, managed berry-proxy
// processes (each with its own --node-id and --state-dir), in-process mock providers, and a TOML
// config in a temp directory that tests edit the way editors and ConfigMaps do (write a temp
// file, rename it over the config). Every wait polls a condition with a deadline (`/proxies`,
// `/backends`, `/metrics`, `/readyz`); every port is chosen by the kernel, except where a test
// restarts the control plane on the gRPC port it had.
//
// Threads: a fixture belongs to the test's thread; Process collects a child's output on two
// reader threads of its own; the free functions may be called from any thread.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <boost/json.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "berry/v1/route_table.pb.h"
#include "tests/integration/child_process.h"
#include "tests/support/http_client.h"
#include "tests/support/mock_upstream.h"

namespace berry::fleet_test {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Deadlines are generous: the machine is shared with other builds and tests, and a condition
// that holds returns at once anyway.
inline constexpr std::chrono::milliseconds kStartTimeout = 30s;
inline constexpr std::chrono::milliseconds kConvergeTimeout = 30s;

// Polls `condition` every `every` until it holds (true) or `timeout` passes (false).
bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
               std::chrono::milliseconds every = 50ms);

// Fleet programs take SIGHUP, SIGINT and SIGTERM with sigwait: spawn them with
// itest::kSigwaitSignals blocked (see KnownBugProcessSignals in proxy_process_test.cc).
using Process = itest::ChildProcess;

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "berry-fleet-");
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// <dir>/config.toml, replaced atomically on every Write (temp file + rename).
class ConfigFile {
 public:
  explicit ConfigFile(const TempDir& dir) : path_(dir.path() + "/config.toml") {}
  // False (with a test failure) when the file cannot be written.
  bool Write(std::string_view toml) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// --- HTTP ------------------------------------------------------------------------------------

absl::StatusOr<test_support::HttpResponse> Get(const std::string& url,
                                               std::chrono::milliseconds timeout = 5s);
// GET `url` and parse the body as JSON.
absl::StatusOr<boost::json::value> GetJson(const std::string& url);
// `{"model":MODEL,"messages":[...]}` POSTed to <proxy_url>/v1/chat/completions.
absl::StatusOr<test_support::HttpResponse> Chat(const std::string& proxy_url,
                                                std::string_view model);
// The value of the sample `name` (e.g. `berry_cp_nacks_total` or
// `berry_cp_health_checks_total{provider="b",result="failure"}`: the labels as rendered) in
// Prometheus text; nullopt when absent.
std::optional<double> MetricValue(std::string_view text, std::string_view sample);

// --- JSON ------------------------------------------------------------------------------------

std::string JsonString(const boost::json::value& value, std::string_view key);
double JsonNumber(const boost::json::value& value, std::string_view key);

// --- processes -------------------------------------------------------------------------------

// A berry-control-plane process.
struct ControlPlane {
  std::unique_ptr<Process> process;
  std::string grpc_address;  // "127.0.0.1:PORT"
  std::string http_url;      // "http://127.0.0.1:PORT"

  // Starts it on `config` with --report-interval-seconds 1; `grpc_listen` "127.0.0.1:0" lets the
  // kernel pick. An error (with its stderr) when it does not print its listening line.
  static absl::StatusOr<std::unique_ptr<ControlPlane>> TryStart(
      const std::string& config, const std::string& grpc_listen = "127.0.0.1:0",
      const std::vector<std::string>& extra = {});
  // TryStart, or nullptr with a test failure.
  static std::unique_ptr<ControlPlane> Start(const std::string& config,
                                             const std::string& grpc_listen = "127.0.0.1:0",
                                             const std::vector<std::string>& extra = {});

  absl::StatusOr<boost::json::value> Proxies() const { return GetJson(http_url + "/proxies"); }
  absl::StatusOr<boost::json::value> Backends() const { return GetJson(http_url + "/backends"); }
  // The sample's value on /metrics; nullopt when absent or unreachable.
  std::optional<double> Metric(std::string_view sample) const;
  // /proxies' top-level "version": the table every proxy should hold; empty when unreachable.
  std::string Version() const;
  // The /proxies entry of `node_id`; null when absent.
  std::optional<boost::json::object> Node(const std::string& node_id) const;
  // True when every one of `node_ids` is connected and has ACKed `version`.
  bool AllAcked(const std::vector<std::string>& node_ids, const std::string& version) const;
  // The /backends entry of `backend_id`; null when absent.
  std::optional<boost::json::object> Backend(const std::string& backend_id) const;
};

struct ProxyOptions {
  std::string control_plane;  // HOST:PORT
  std::string node_id;
  std::string state_dir;
  std::vector<std::string> extra;  // more flags, e.g. {"--allowed-upstream-hosts", "127.0.0.1"}
};

// A managed berry-proxy process on 127.0.0.1:0, --threads 1, --access-log off.
struct Proxy {
  std::unique_ptr<Process> process;
  std::string url;  // "http://127.0.0.1:PORT"
  ProxyOptions options;

  static std::unique_ptr<Proxy> Start(ProxyOptions options);
  // GET /readyz status; 0 when unreachable.
  int ReadyzStatus() const;
  // The sample's value on the proxy's /metrics; nullopt when absent or unreachable.
  std::optional<double> Metric(std::string_view sample) const;
  // The table this proxy last applied, as it persisted it in --state-dir (written before the
  // ACK); nullopt when there is none yet or it cannot be parsed.
  std::optional<berry::v1::RouteTable> PersistedTable() const;
  std::string PersistedTablePath() const { return options.state_dir + "/route_table.pb"; }
};

// The health of backend `backend_id` in `table` ("HEALTH_STATUS_..."), empty when absent.
std::string HealthIn(const berry::v1::RouteTable& table, std::string_view backend_id);

// --- mocks -----------------------------------------------------------------------------------

// An in-process mock provider called `name` (its `x-mock-upstream` header) requiring the key
// KeyOf(name) and listing `models`.
std::unique_ptr<test_support::MockUpstream> StartMock(const std::string& name,
                                                      std::vector<std::string> models);
std::string KeyOf(std::string_view mock_name);
// The chat completions the mock received (health probes are GETs and not counted).
std::vector<test_support::RecordedRequest> ChatRequests(const test_support::MockUpstream& mock);

// --- TOML ------------------------------------------------------------------------------------

// [settings] with 1 s health checks, so a fresh control plane reaches its verdicts (and a stable
// table version) within a few seconds, plus `extra` lines.
std::string SettingsToml(std::string_view extra = "");
// [providers.<id>] with the mock's key.
std::string ProviderToml(std::string_view id, std::string_view base_url,
                         const std::vector<std::string>& models);
struct BackendSpec {
  std::string provider;
  std::string model;
  double weight = 1.0;
};
std::string ModelToml(std::string_view id, const std::vector<BackendSpec>& backends);
// RouteTable backend ids are "<model id>/<provider id>/<upstream model>".
std::string BackendId(std::string_view model, std::string_view provider,
                      std::string_view upstream_model);

// --- the fleet -------------------------------------------------------------------------------

inline constexpr char kHealthy[] = "HEALTH_STATUS_HEALTHY";
inline constexpr char kUnhealthy[] = "HEALTH_STATUS_UNHEALTHY";

// Two mock providers, "a" (serving up-a and up-a2) and "b" (serving up-b), a config directory,
// and — once a test calls StartFleet — a control plane and managed proxies node-1, node-2, ...
// each with its own --state-dir.
class FleetTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Settings, both providers (b at `b_base_url` when given), and `models`.
  std::string Config(const std::string& models, std::string_view b_base_url = "") const;
  // "chat" served by provider a's up-a alone.
  std::string ChatOnA() const { return Config(ModelToml("chat", {{"a", "up-a"}})); }
  // "chat" served by provider b's up-b alone.
  std::string ChatOnB() const { return Config(ModelToml("chat", {{"b", "up-b"}})); }
  // "chat" spread evenly over a's up-a and b's up-b.
  std::string ChatOnBoth() const {
    return Config(ModelToml("chat", {{"a", "up-a"}, {"b", "up-b"}}));
  }

  // Writes `toml`, starts the control plane and one proxy per entry of `proxy_flags` (its extra
  // flags). Check HasFatalFailure() after it.
  void StartFleet(const std::string& toml,
                  const std::vector<std::vector<std::string>>& proxy_flags = {{}, {}, {}});

  // Waits until every proxy answers /readyz with 200 (it holds a table); a failure names the
  // proxy that never did, with its log. Check HasFatalFailure() after it.
  void WaitEveryProxyReady();
  // Waits until every proxy holds (has applied, persisted and ACKed) the table in force, and
  // `wanted` holds for it; returns its version (empty, with a failure, on timeout).
  std::string WaitForEveryProxyToHold(
      const std::function<bool(const berry::v1::RouteTable&)>& wanted, std::string_view what);
  // Waits until every proxy holds a table in which every backend is HEALTHY: the 1 s probes
  // gave their verdicts, so health no longer moves the version. Returns that version.
  std::string WaitConverged();
  // Waits until the version in force differs from `old` and every proxy ACKed it; returns it.
  std::string WaitForNewVersionAckedByAll(const std::string& old);
  // SIGKILLs the control plane and starts a new one on the same gRPC address (the one the
  // proxies know), retrying for a while if something else holds the port for a moment. Check
  // HasFatalFailure() after it.
  // `while_down` runs after the kill, before the new one starts.
  void RestartControlPlane(const std::function<void()>& while_down = {});

  // The backend's health on /backends ("HEALTH_STATUS_..."), empty when absent.
  std::string Health(const std::string& backend_id) const;
  static std::string Describe(const absl::StatusOr<boost::json::value>& json);
  // Sends one chat request through `proxy` and returns which mock answered it ("" unless 200).
  static std::string ServedBy(const Proxy& proxy);

  std::unique_ptr<test_support::MockUpstream> a_;
  std::unique_ptr<test_support::MockUpstream> b_;
  TempDir dir_;
  ConfigFile config_{dir_};
  std::unique_ptr<ControlPlane> control_plane_;
  std::vector<std::unique_ptr<TempDir>> state_dirs_;
  std::vector<std::unique_ptr<Proxy>> proxies_;
  std::vector<std::string> node_ids_;
};

}  // namespace berry::fleet_test
