#include "tests/integration/fleet_fixture.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/support/certs.h"

extern char** environ;

namespace berry::fleet_test {

using test_support::HttpRequest;
using test_support::HttpResponse;
using test_support::MockUpstream;
using test_support::RecordedRequest;

bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
               std::chrono::milliseconds every) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (condition()) {
      return true;
    }
    if (Clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(every);
  }
}

// --- files ---------------------------------------------------------------------------------------

TempDir::TempDir(std::string_view prefix) {
  auto dir = test_support::MakeTempDir(prefix);
  EXPECT_TRUE(dir.ok()) << dir.status();
  path_ = dir.ok() ? *dir : "/tmp";
}

TempDir::~TempDir() {
  if (path_ != "/tmp") {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
}

bool ConfigFile::Write(std::string_view toml) const {
  const std::string next = path_ + ".next";
  {
    std::ofstream out(next, std::ios::binary | std::ios::trunc);
    out << toml;
    out.flush();
    if (!out) {
      ADD_FAILURE() << "cannot write " << next;
      return false;
    }
  }
  if (std::rename(next.c_str(), path_.c_str()) != 0) {
    ADD_FAILURE() << "cannot rename " << next << " over " << path_;
    return false;
  }
  return true;
}

// --- HTTP ------------------------------------------------------------------------------------

absl::StatusOr<HttpResponse> Get(const std::string& url, std::chrono::milliseconds timeout) {
  HttpRequest request = HttpRequest::Get(url);
  request.timeout = timeout;
  return test_support::Fetch(request);
}

absl::StatusOr<boost::json::value> GetJson(const std::string& url) {
  auto response = Get(url);
  if (!response.ok()) {
    return response.status();
  }
  if (response->status != 200) {
    return absl::UnavailableError(absl::StrCat(url, " answered ", response->status));
  }
  boost::system::error_code error;
  boost::json::value value = boost::json::parse(response->body, error);
  if (error) {
    return absl::DataLossError(absl::StrCat(url, " is not JSON: ", response->body));
  }
  return value;
}

absl::StatusOr<HttpResponse> Chat(const std::string& proxy_url, std::string_view model) {
  HttpRequest request =
      HttpRequest::Post(proxy_url + "/v1/chat/completions",
                        absl::StrCat(R"({"model":")", std::string(model),
                                     R"(","messages":[{"role":"user","content":"hi"}]})"));
  request.timeout = 10s;
  return test_support::Fetch(request);
}

std::optional<double> MetricValue(std::string_view text, std::string_view sample) {
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (line.starts_with('#') || !line.starts_with(sample) || line.size() <= sample.size() ||
        line[sample.size()] != ' ') {
      continue;
    }
    std::string value(line.substr(sample.size() + 1));
    char* parsed_end = nullptr;
    const double number = std::strtod(value.c_str(), &parsed_end);
    if (parsed_end != value.c_str()) {
      return number;
    }
  }
  return std::nullopt;
}

// --- JSON ------------------------------------------------------------------------------------

std::string JsonString(const boost::json::value& value, std::string_view key) {
  if (!value.is_object()) {
    return {};
  }
  const auto* found =
      value.as_object().if_contains(boost::json::string_view(key.data(), key.size()));
  return found != nullptr && found->is_string() ? std::string(found->as_string()) : std::string();
}

double JsonNumber(const boost::json::value& value, std::string_view key) {
  if (!value.is_object()) {
    return 0;
  }
  const auto* found =
      value.as_object().if_contains(boost::json::string_view(key.data(), key.size()));
  if (found == nullptr) {
    return 0;
  }
  if (found->is_int64()) {
    return static_cast<double>(found->as_int64());
  }
  if (found->is_uint64()) {
    return static_cast<double>(found->as_uint64());
  }
  return found->is_double() ? found->as_double() : 0;
}

// --- control plane ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ControlPlane>> ControlPlane::TryStart(
    const std::string& config, const std::string& grpc_listen,
    const std::vector<std::string>& extra) {
  std::vector<std::string> args = {BERRY_CONTROL_PLANE_BINARY,
                                   "--config",
                                   config,
                                   "--grpc-listen",
                                   grpc_listen,
                                   "--http-listen",
                                   "127.0.0.1:0",
                                   "--report-interval-seconds",
                                   "1"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto plane = std::make_unique<ControlPlane>();
  plane->process = Process::Spawn(args, {}, itest::kSigwaitSignals);
  if (plane->process == nullptr) {
    return absl::InternalError("cannot spawn berry-control-plane");
  }
  // "berry-control-plane listening on grpc HOST:PORT http HOST:PORT"
  const std::string line =
      plane->process->LineAfter("berry-control-plane listening on grpc ", kStartTimeout);
  const size_t http = line.find(" http ");
  if (http == std::string::npos) {
    plane->process->Kill();
    return absl::UnavailableError(absl::StrCat("berry-control-plane did not start (exit ",
                                               plane->process->Wait(0ms).value_or(-1), "):\n",
                                               plane->process->err()));
  }
  plane->grpc_address = line.substr(0, http);
  plane->http_url = "http://" + line.substr(http + 6);
  return plane;
}

std::unique_ptr<ControlPlane> ControlPlane::Start(const std::string& config,
                                                  const std::string& grpc_listen,
                                                  const std::vector<std::string>& extra) {
  auto plane = TryStart(config, grpc_listen, extra);
  if (!plane.ok()) {
    ADD_FAILURE() << plane.status().message();
    return nullptr;
  }
  return *std::move(plane);
}

std::optional<double> ControlPlane::Metric(std::string_view sample) const {
  auto response = Get(http_url + "/metrics");
  if (!response.ok() || response->status != 200) {
    return std::nullopt;
  }
  return MetricValue(response->body, sample);
}

std::string ControlPlane::Version() const {
  auto proxies = Proxies();
  return proxies.ok() ? JsonString(*proxies, "version") : std::string();
}

std::optional<boost::json::object> ControlPlane::Node(const std::string& node_id) const {
  auto proxies = Proxies();
  if (!proxies.ok() || !proxies->is_object()) {
    return std::nullopt;
  }
  const auto* list = proxies->as_object().if_contains("proxies");
  if (list == nullptr || !list->is_array()) {
    return std::nullopt;
  }
  for (const auto& node : list->as_array()) {
    if (JsonString(node, "node_id") == node_id) {
      return node.as_object();
    }
  }
  return std::nullopt;
}

bool ControlPlane::AllAcked(const std::vector<std::string>& node_ids,
                            const std::string& version) const {
  auto proxies = Proxies();
  if (!proxies.ok() || !proxies->is_object() || version.empty()) {
    return false;
  }
  const auto* list = proxies->as_object().if_contains("proxies");
  if (list == nullptr || !list->is_array()) {
    return false;
  }
  size_t acked = 0;
  for (const std::string& id : node_ids) {
    for (const auto& node : list->as_array()) {
      const auto* connected =
          node.is_object() ? node.as_object().if_contains("connected") : nullptr;
      if (JsonString(node, "node_id") == id && JsonString(node, "acked_version") == version &&
          connected != nullptr && connected->is_bool() && connected->as_bool()) {
        ++acked;
        break;
      }
    }
  }
  return acked == node_ids.size();
}

std::optional<boost::json::object> ControlPlane::Backend(const std::string& backend_id) const {
  auto backends = Backends();
  if (!backends.ok() || !backends->is_object()) {
    return std::nullopt;
  }
  const auto* list = backends->as_object().if_contains("backends");
  if (list == nullptr || !list->is_array()) {
    return std::nullopt;
  }
  for (const auto& backend : list->as_array()) {
    if (JsonString(backend, "backend_id") == backend_id) {
      return backend.as_object();
    }
  }
  return std::nullopt;
}

// --- proxy -----------------------------------------------------------------------------------

std::unique_ptr<Proxy> Proxy::Start(ProxyOptions options) {
  std::vector<std::string> args = {BERRY_PROXY_BINARY,
                                   "--control-plane",
                                   options.control_plane,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--threads",
                                   "1",
                                   "--access-log",
                                   "off"};
  if (!options.node_id.empty()) {  // else the proxy names itself after its host
    args.push_back("--node-id");
    args.push_back(options.node_id);
  }
  if (!options.state_dir.empty()) {
    args.push_back("--state-dir");
    args.push_back(options.state_dir);
  }
  args.insert(args.end(), options.extra.begin(), options.extra.end());
  auto proxy = std::make_unique<Proxy>();
  proxy->options = std::move(options);
  proxy->process = Process::Spawn(args, {}, itest::kSigwaitSignals);
  if (proxy->process == nullptr) {
    return nullptr;
  }
  proxy->url = proxy->process->LineAfter("berry-proxy listening on ", kStartTimeout);
  if (proxy->url.empty()) {
    ADD_FAILURE() << "berry-proxy " << proxy->options.node_id << " did not start (exit "
                  << proxy->process->Wait(0ms).value_or(-1) << "):\n"
                  << proxy->process->err();
    return nullptr;
  }
  return proxy;
}

int Proxy::ReadyzStatus() const {
  auto response = Get(url + "/readyz");
  return response.ok() ? response->status : 0;
}

std::optional<double> Proxy::Metric(std::string_view sample) const {
  auto response = Get(url + "/metrics");
  if (!response.ok() || response->status != 200) {
    return std::nullopt;
  }
  return MetricValue(response->body, sample);
}

std::optional<berry::v1::RouteTable> Proxy::PersistedTable() const {
  std::ifstream in(PersistedTablePath(), std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  berry::v1::RouteTable table;
  if (!table.ParseFromIstream(&in)) {
    return std::nullopt;
  }
  return table;
}

std::string HealthIn(const berry::v1::RouteTable& table, std::string_view backend_id) {
  for (const auto& model : table.models()) {
    for (const auto& backend : model.backends()) {
      if (backend.id() == backend_id) {
        return berry::v1::HealthStatus_Name(backend.health());
      }
    }
  }
  return {};
}

// --- mocks -----------------------------------------------------------------------------------

std::string KeyOf(std::string_view mock_name) {
  return absl::StrCat("sk-fleet-", std::string(mock_name), "-secret");
}

std::unique_ptr<MockUpstream> StartMock(const std::string& name, std::vector<std::string> models) {
  MockUpstream::Options options;
  options.name = name;
  options.api_key = KeyOf(name);
  options.models = std::move(models);
  auto mock = MockUpstream::Create(std::move(options));
  if (!mock.ok()) {
    ADD_FAILURE() << "mock " << name << " did not start: " << mock.status();
    return nullptr;
  }
  return *std::move(mock);
}

std::vector<RecordedRequest> ChatRequests(const MockUpstream& mock) {
  std::vector<RecordedRequest> chats;
  for (RecordedRequest& request : mock.requests()) {
    if (request.method == "POST" && request.target == "/v1/chat/completions") {
      chats.push_back(std::move(request));
    }
  }
  return chats;
}

// --- TOML ------------------------------------------------------------------------------------

std::string SettingsToml(std::string_view extra) {
  return absl::StrCat(
      "[settings]\nhealth_check_interval_seconds = 1\nhealth_check_timeout_seconds = 1\n",
      std::string(extra), "\n");
}

std::string ProviderToml(std::string_view id, std::string_view base_url,
                         const std::vector<std::string>& models) {
  std::string list;
  for (const std::string& model : models) {
    absl::StrAppend(&list, list.empty() ? "" : ", ", "\"", model, "\"");
  }
  return absl::StrCat("[providers.", std::string(id), "]\nbase_url = \"", std::string(base_url),
                      "\"\napi_key = \"", KeyOf(id), "\"\nmodels = [", list, "]\n\n");
}

std::string ModelToml(std::string_view id, const std::vector<BackendSpec>& backends) {
  std::string toml = absl::StrCat("[models.", std::string(id), "]\n");
  for (const BackendSpec& backend : backends) {
    char weight[32];
    std::snprintf(weight, sizeof weight, "%.3f", backend.weight);
    absl::StrAppend(&toml, "[[models.", std::string(id), ".backends]]\nprovider = \"",
                    backend.provider, "\"\nmodel = \"", backend.model, "\"\nweight = ", weight,
                    "\n");
  }
  return toml + "\n";
}

std::string BackendId(std::string_view model, std::string_view provider,
                      std::string_view upstream_model) {
  return absl::StrCat(std::string(model), "/", std::string(provider), "/",
                      std::string(upstream_model));
}

// --- the fleet -------------------------------------------------------------------------------

void FleetTest::SetUp() {
  a_ = StartMock("a", {"up-a", "up-a2"});
  b_ = StartMock("b", {"up-b"});
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
}

void FleetTest::TearDown() {
  proxies_.clear();
  control_plane_.reset();
}

std::string FleetTest::Config(const std::string& models, std::string_view b_base_url) const {
  return SettingsToml() + ProviderToml("a", a_->base_url(), {"up-a", "up-a2"}) +
         ProviderToml("b", b_base_url.empty() ? b_->base_url() : b_base_url, {"up-b"}) + models;
}

void FleetTest::StartFleet(const std::string& toml,
                           const std::vector<std::vector<std::string>>& proxy_flags) {
  ASSERT_TRUE(config_.Write(toml));
  control_plane_ = ControlPlane::Start(config_.path());
  ASSERT_NE(control_plane_, nullptr);
  for (size_t i = 0; i < proxy_flags.size(); ++i) {
    state_dirs_.push_back(std::make_unique<TempDir>("berry-fleet-state-"));
    auto proxy = Proxy::Start({control_plane_->grpc_address, absl::StrCat("node-", i + 1),
                               state_dirs_.back()->path(), proxy_flags[i]});
    ASSERT_NE(proxy, nullptr);
    node_ids_.push_back(proxy->options.node_id);
    proxies_.push_back(std::move(proxy));
  }
}

std::string FleetTest::WaitForEveryProxyToHold(
    const std::function<bool(const berry::v1::RouteTable&)>& wanted, std::string_view what) {
  std::string version;
  const bool held = WaitUntil(
      [&] {
        version = control_plane_->Version();
        for (const auto& proxy : proxies_) {
          const auto table = proxy->PersistedTable();
          if (!table || table->version_info() != version || !wanted(*table)) {
            return false;
          }
        }
        return control_plane_->AllAcked(node_ids_, version) && control_plane_->Version() == version;
      },
      kConvergeTimeout);
  EXPECT_TRUE(held) << "the proxies never held a table where " << what
                    << "; /proxies: " << Describe(control_plane_->Proxies())
                    << "\n/backends: " << Describe(control_plane_->Backends());
  return held ? version : std::string();
}

void FleetTest::WaitEveryProxyReady() {
  for (const auto& proxy : proxies_) {
    ASSERT_TRUE(WaitUntil([&] { return proxy->ReadyzStatus() == 200; }, kConvergeTimeout))
        << proxy->options.node_id << " never got a table:\n"
        << proxy->process->err();
  }
}

std::string FleetTest::WaitConverged() {
  return WaitForEveryProxyToHold(
      [](const berry::v1::RouteTable& table) {
        for (const auto& model : table.models()) {
          for (const auto& backend : model.backends()) {
            if (backend.health() != berry::v1::HEALTH_STATUS_HEALTHY) {
              return false;
            }
          }
        }
        return true;
      },
      "every backend is healthy");
}

std::string FleetTest::WaitForNewVersionAckedByAll(const std::string& old) {
  std::string version;
  const bool acked = WaitUntil(
      [&] {
        version = control_plane_->Version();
        return version != old && control_plane_->AllAcked(node_ids_, version);
      },
      kConvergeTimeout);
  EXPECT_TRUE(acked) << "no new version reached every proxy; /proxies: "
                     << Describe(control_plane_->Proxies());
  return acked ? version : std::string();
}

void FleetTest::RestartControlPlane(const std::function<void()>& while_down) {
  ASSERT_NE(control_plane_, nullptr);
  const std::string grpc_address = control_plane_->grpc_address;
  control_plane_->process->Kill();
  control_plane_.reset();
  if (while_down) {
    while_down();
  }
  absl::Status last = absl::OkStatus();
  WaitUntil(
      [&] {
        auto plane = ControlPlane::TryStart(config_.path(), grpc_address);
        if (!plane.ok()) {
          last = plane.status();
          return false;
        }
        control_plane_ = *std::move(plane);
        return true;
      },
      10s, 200ms);
  ASSERT_NE(control_plane_, nullptr)
      << "could not listen on " << grpc_address << " again: " << last.message();
}

std::string FleetTest::Health(const std::string& backend_id) const {
  auto backend = control_plane_->Backend(backend_id);
  return backend ? JsonString(*backend, "health") : std::string();
}

std::string FleetTest::Describe(const absl::StatusOr<boost::json::value>& json) {
  return json.ok() ? boost::json::serialize(*json) : json.status().ToString();
}

std::string FleetTest::ServedBy(const Proxy& proxy) {
  auto response = Chat(proxy.url, "chat");
  if (!response.ok() || response->status != 200) {
    return {};
  }
  return response->Header("x-mock-upstream").value_or("");
}

}  // namespace berry::fleet_test
