// ControlPlane in-process: a config file in a temporary directory, a mock provider, the gRPC and
// HTTP servers on port 0, and a StreamRoutes client speaking like berry-proxy. The table it is
// served, the versions published on a config edit, a reload or a health change, the JSON views
// and Stop are checked over the wire. Waits are bounded by gRPC deadlines and condition waits;
// the health checker's jitter is seeded and its interval shortened where a test needs probes.
#include "control-plane/control_plane.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "berry/v1/discovery.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/support/http_client.h"
#include "tests/support/mock_upstream.h"

namespace berry::control_plane::control_plane_test {
namespace {

namespace v1 = berry::v1;
using test_support::Behavior;
using test_support::MockUpstream;

// The node list forgets a node its retention after its last stream ended (pods come and go under
// new names), and never one that is connected.
TEST(RoutePublisher, ForgetsANodeGoneForLongerThanTheRetention) {
  absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  RoutePublisher publisher(absl::Minutes(10), [&now] { return now; });
  publisher.RecordConnected("gone", "10.0.0.1:1");
  publisher.RecordConnected("staying", "10.0.0.2:1");
  publisher.RecordAck("gone", "v1");
  publisher.RecordDisconnected("gone");
  const auto ids = [&publisher] {
    std::string out;
    for (const NodeStatus& node : publisher.Nodes()) {
      absl::StrAppend(&out, node.node_id, node.connected ? "+" : "-", " ");
    }
    return out;
  };
  EXPECT_EQ(ids(), "gone- staying+ ");

  now += absl::Minutes(9);
  EXPECT_EQ(ids(), "gone- staying+ ");
  now += absl::Minutes(2);
  EXPECT_EQ(ids(), "staying+ ");
  publisher.RecordConnected("new", "10.0.0.3:1");  // prunes the map itself, not only the view
  EXPECT_EQ(ids(), "new+ staying+ ");
  EXPECT_EQ(publisher.connected_count(), 2);

  // A node that comes back is a node again, with nothing ACKed from its earlier life.
  publisher.RecordConnected("gone", "10.0.0.1:2");
  const auto nodes = publisher.Nodes();
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_EQ(nodes[0].node_id, "gone");
  EXPECT_TRUE(nodes[0].acked_version.empty());
}

constexpr auto kWait = std::chrono::seconds(10);
constexpr char kBackend[] = "chat/p/mock-model";

std::string ConfigToml(const std::string& base_url, int weight) {
  return absl::StrCat("[providers.p]\nbase_url = \"", base_url,
                      "\"\napi_key = \"sk-test\"\nmodels = [\"mock-model\"]\n\n"
                      "[models.chat]\n[[models.chat.backends]]\nprovider = \"p\"\n"
                      "model = \"mock-model\"\nweight = ",
                      weight, "\n");
}

// The backend `kBackend` of a table, if it has it.
const v1::Backend* FindBackend(const v1::RouteTable& table) {
  for (const auto& model : table.models()) {
    for (const auto& backend : model.backends()) {
      if (backend.id() == kBackend) return &backend;
    }
  }
  return nullptr;
}

// One StreamRoutes stream, ACKing every table like berry-proxy. Every read is bounded by the
// stream's deadline.
class RouteClient {
 public:
  RouteClient(const std::string& address, const std::string& node_id)
      : stub_(v1::RouteDiscoveryService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    context_.set_deadline(std::chrono::system_clock::now() + 3 * kWait);
    stream_ = stub_->StreamRoutes(&context_);
    v1::StreamRoutesRequest hello;
    hello.mutable_node()->set_id(node_id);
    stream_->Write(hello);
  }
  ~RouteClient() {
    if (!finished_) {
      context_.TryCancel();
      (void)Finish();
    }
  }

  // Reads (and ACKs) tables until one satisfies `done`; nullopt when the stream ends first.
  std::optional<v1::StreamRoutesResponse> ReadUntil(
      const std::function<bool(const v1::StreamRoutesResponse&)>& done) {
    v1::StreamRoutesResponse response;
    while (stream_->Read(&response)) {
      v1::StreamRoutesRequest ack;
      ack.set_version_info(response.version_info());
      ack.set_response_nonce(response.nonce());
      stream_->Write(ack);
      if (done(response)) return response;
    }
    return std::nullopt;
  }
  std::optional<v1::StreamRoutesResponse> ReadNext() {
    return ReadUntil([](const v1::StreamRoutesResponse&) { return true; });
  }
  // Once only.
  grpc::Status Finish() {
    finished_ = true;
    return stream_->Finish();
  }

 private:
  std::unique_ptr<v1::RouteDiscoveryService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRoutesRequest, v1::StreamRoutesResponse>>
      stream_;
  bool finished_ = false;
};

class ControlPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "berry-cp-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ + "/config.toml";
  }
  void TearDown() override {
    client_.reset();
    plane_.reset();
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  // Replaces the config file atomically, as editors and ConfigMap updates do.
  void WriteConfig(const std::string& toml) {
    const std::string temp = path_ + ".tmp";
    FILE* file = std::fopen(temp.c_str(), "w");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(std::fwrite(toml.data(), 1, toml.size(), file), toml.size());
    ASSERT_EQ(std::fclose(file), 0);
    ASSERT_EQ(std::rename(temp.c_str(), path_.c_str()), 0);
  }

  ControlPlaneOptions Options() const {
    ControlPlaneOptions options;
    options.config_path = path_;
    options.grpc_listen = "127.0.0.1:0";
    options.http_port = 0;
    options.grpc_shutdown_grace = absl::Milliseconds(100);
    // One probe a day (at a seeded offset): tests that want probes shorten it.
    options.health.interval = absl::Hours(24);
    options.health.seed = 1;
    return options;
  }

  // Creates and starts the control plane on the config written so far.
  void StartPlane(ControlPlaneOptions options) {
    auto plane = ControlPlane::Create(std::move(options));
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = *std::move(plane);
    created_version_ = CurrentVersion();  // published by Create, before any probe runs
    ASSERT_TRUE(plane_->Start().ok());
    ASSERT_NE(plane_->grpc_port(), 0);
    ASSERT_NE(plane_->http_port(), 0);
  }

  // Starts a mock provider answering `behavior`, writes a config routing "chat" to it (weight
  // 2) and starts the control plane.
  void StartWithProvider(ControlPlaneOptions options, Behavior behavior = Behavior::Normal()) {
    MockUpstream::Options mock_options;
    mock_options.default_behavior = std::move(behavior);
    auto mock = MockUpstream::Create(std::move(mock_options));
    ASSERT_TRUE(mock.ok()) << mock.status();
    mock_ = *std::move(mock);
    WriteConfig(ConfigToml(mock_->base_url(), 2));
    StartPlane(std::move(options));
  }

  // Opens a StreamRoutes stream as `node_id` and reads its first table into first_.
  void ConnectProxy(const std::string& node_id) {
    client_ = std::make_unique<RouteClient>(plane_->grpc_address(), node_id);
    auto first = client_->ReadNext();
    ASSERT_TRUE(first.has_value());
    first_ = *std::move(first);
  }

  absl::StatusOr<test_support::HttpResponse> Get(const std::string& path) const {
    return test_support::Fetch(
        test_support::HttpRequest::Get(absl::StrCat("http://", plane_->http_address(), path)));
  }

  std::string CurrentVersion() const { return plane_->publisher().Current()->version_info(); }

  std::string dir_;
  std::string path_;
  std::unique_ptr<MockUpstream> mock_;
  std::unique_ptr<ControlPlane> plane_;
  std::unique_ptr<RouteClient> client_;
  v1::StreamRoutesResponse first_;
  std::string created_version_;
};

TEST_F(ControlPlaneTest, InvalidConfigIsRefusedWithEveryErrorAndNothingListens) {
  WriteConfig("[providers.p]\nbase_url = \"not a url\"\n");
  auto plane = ControlPlane::Create(Options());
  ASSERT_FALSE(plane.ok());
  EXPECT_EQ(plane.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plane.status().message().find(path_ + " is invalid"), std::string_view::npos)
      << plane.status();
  EXPECT_NE(plane.status().message().find("providers.p.base_url"), std::string_view::npos)
      << plane.status();
}

TEST_F(ControlPlaneTest, StreamsTheCompiledTableToAConnectingProxy) {
  StartWithProvider(Options());
  ConnectProxy("node-1");
  EXPECT_FALSE(first_.version_info().empty());
  EXPECT_EQ(first_.version_info(), CurrentVersion());
  const v1::Backend* backend = FindBackend(first_.route_table());
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->weight(), 2);
}

TEST_F(ControlPlaneTest, PublishesANewVersionWhenTheWatchedFileChanges) {
  StartWithProvider(Options());
  ConnectProxy("node-1");

  WriteConfig(ConfigToml(mock_->base_url(), 5));
  const auto edited = client_->ReadUntil([](const v1::StreamRoutesResponse& response) {
    const v1::Backend* backend = FindBackend(response.route_table());
    return backend != nullptr && backend->weight() == 5;
  });
  ASSERT_TRUE(edited.has_value());
  EXPECT_NE(edited->version_info(), first_.version_info());
}

TEST_F(ControlPlaneTest, ReloadKeepsTheRunningConfigWhenTheFileIsInvalid) {
  ControlPlaneOptions options = Options();
  options.watch_config = false;  // only Reload reads the file
  StartWithProvider(std::move(options));
  const std::string before = CurrentVersion();

  WriteConfig("this is not toml [");
  plane_->Reload("test");
  EXPECT_EQ(CurrentVersion(), before);
  EXPECT_EQ(plane_->source().rejected(), 1u);
  auto metrics = Get("/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_NE(metrics->body.find("berry_cp_config_rejected_total 1"), std::string::npos)
      << metrics->body;

  WriteConfig(ConfigToml(mock_->base_url(), 7));
  plane_->Reload("test");
  EXPECT_NE(CurrentVersion(), before);
  const v1::Backend* backend = FindBackend(*plane_->publisher().Current());
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->weight(), 7);
}

TEST_F(ControlPlaneTest, FailingHealthChecksPublishTheBackendUnhealthy) {
  ControlPlaneOptions options = Options();
  options.health.interval = absl::Milliseconds(50);
  options.health.unhealthy_threshold = 1;
  options.recompute_interval = absl::Milliseconds(20);
  StartWithProvider(std::move(options), Behavior::Fail(503));
  ConnectProxy("node-1");

  // The probe may fail before the proxy connects (its first table is then already the
  // unhealthy one) or after (a later push carries it): either way a new version.
  const auto is_unhealthy = [](const v1::StreamRoutesResponse& response) {
    const v1::Backend* backend = FindBackend(response.route_table());
    return backend != nullptr && backend->health() == v1::HEALTH_STATUS_UNHEALTHY;
  };
  const auto unhealthy =
      is_unhealthy(first_) ? std::optional(first_) : client_->ReadUntil(is_unhealthy);
  ASSERT_TRUE(unhealthy.has_value());
  EXPECT_NE(unhealthy->version_info(), created_version_);
  EXPECT_GE(mock_->request_count(), 1u);
}

TEST_F(ControlPlaneTest, StatusEndpointsAnswerWithTheFleetView) {
  StartWithProvider(Options());
  ConnectProxy("node-7");

  for (const char* path : {"/healthz", "/readyz"}) {
    auto response = Get(path);
    ASSERT_TRUE(response.ok()) << path << ": " << response.status();
    EXPECT_EQ(response->status, 200) << path;
  }
  auto missing = Get("/nothing-here");
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->status, 404);

  auto proxies = Get("/proxies");
  ASSERT_TRUE(proxies.ok()) << proxies.status();
  ASSERT_EQ(proxies->status, 200);
  const boost::json::value proxies_json = boost::json::parse(proxies->body);
  EXPECT_EQ(proxies_json.at("version").as_string(), CurrentVersion());
  const auto& nodes = proxies_json.at("proxies").as_array();
  ASSERT_EQ(nodes.size(), 1u) << proxies->body;
  EXPECT_EQ(nodes[0].at("node_id").as_string(), "node-7");
  EXPECT_TRUE(nodes[0].at("connected").as_bool());

  auto backends = Get("/backends");
  ASSERT_TRUE(backends.ok()) << backends.status();
  ASSERT_EQ(backends->status, 200);
  const boost::json::value backends_json = boost::json::parse(backends->body);
  const auto& list = backends_json.at("backends").as_array();
  ASSERT_EQ(list.size(), 1u) << backends->body;
  EXPECT_EQ(list[0].at("backend_id").as_string(), kBackend);
  EXPECT_EQ(list[0].at("provider_id").as_string(), "p");

  auto metrics = Get("/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_NE(metrics->body.find("berry_cp_connected_proxies 1"), std::string::npos) << metrics->body;
}

TEST_F(ControlPlaneTest, StopEndsOpenStreamsClosesTheHttpPortAndIsIdempotent) {
  StartWithProvider(Options());
  ConnectProxy("node-1");
  const std::string http_address = plane_->http_address();

  const auto start = std::chrono::steady_clock::now();
  plane_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, kWait);
  EXPECT_FALSE(client_->ReadNext().has_value());  // the stream ended, well before its deadline
  EXPECT_FALSE(client_->Finish().ok());
  test_support::HttpRequest request =
      test_support::HttpRequest::Get(absl::StrCat("http://", http_address, "/healthz"));
  request.timeout = std::chrono::seconds(2);
  const auto closed = test_support::Fetch(request);
  EXPECT_EQ(closed.status().code(), absl::StatusCode::kUnavailable) << "the port still listens";
  plane_->Stop();
}

}  // namespace
}  // namespace berry::control_plane::control_plane_test
