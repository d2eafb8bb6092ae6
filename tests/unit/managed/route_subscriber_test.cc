// RouteSubscriber against an in-process fake control plane: what it announces, what it applies,
// ACKs, NACKs and persists, and how it follows the server going away and coming back.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data-plane/managed/control_plane_client.h"
#include "data-plane/proxy/proxy_metrics.h"
#include "data-plane/proxy/route_store.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/unit/managed/fake_control_plane.h"
#include "tests/unit/managed/test_tables.h"

namespace berry::managed::route_subscriber_test {
namespace {

namespace v1 = berry::v1;
using namespace std::chrono_literals;
using google::protobuf::util::MessageDifferencer;
using testing::Damaged;
using testing::FakeControlPlane;
using testing::FakeScript;
using ::testing::HasSubstr;
using testing::TableOn;
using testing::TestClientOptions;
using testing::UnusedPort;
using testing::WaitUntil;

v1::StreamRoutesResponse Offer(const v1::RouteTable& table) {
  v1::StreamRoutesResponse response;
  response.set_version_info(table.version_info());
  *response.mutable_route_table() = table;
  return response;
}

class RouteSubscriberTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "berry-state-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    state_dir_ = pattern;
  }
  void TearDown() override {
    subscriber_.reset();
    server_.reset();
    std::filesystem::remove_all(state_dir_);
  }

  ClientOptions Options(const std::string& target) const {
    ClientOptions options = TestClientOptions(target);
    options.node.set_build_version("berry-proxy test");
    options.state_dir = state_dir_;
    return options;
  }

  std::unique_ptr<RouteSubscriber> Subscribe(const ClientOptions& options) {
    channel_ = MakeChannel(options);
    auto subscriber = std::make_unique<RouteSubscriber>(options, channel_, routes_, metrics_);
    subscriber->Start();
    return subscriber;
  }
  std::unique_ptr<RouteSubscriber> Subscribe(const FakeControlPlane& server) {
    return Subscribe(Options(server.target()));
  }
  // Starts server_ playing `script` and subscriber_ subscribed to it; false (with a test
  // failure) when the server cannot listen.
  bool Serve(FakeScript script = {}) {
    server_ = FakeControlPlane::Start(std::move(script));
    if (server_ == nullptr) return false;
    subscriber_ = Subscribe(*server_);
    return true;
  }

  // Serves table_a_ then `second`: the subscriber must NACK `second` (nonce "2") with `code` and
  // a message naming `text`, name the version it keeps, and keep serving table_a_.
  void ExpectSecondTableNacked(const v1::RouteTable& second, absl::StatusCode code,
                               std::string_view text) {
    ASSERT_TRUE(Serve({.route_responses = {Offer(table_a_), Offer(second)}}));
    ASSERT_TRUE(WaitForMessages(*server_, 3));
    const v1::StreamRoutesRequest nack = Message(*server_, 2);
    EXPECT_EQ(nack.response_nonce(), "2");
    EXPECT_EQ(nack.version_info(), table_a_.version_info()) << "names the version it keeps";
    ASSERT_TRUE(nack.has_error_detail());
    EXPECT_EQ(nack.error_detail().code(), static_cast<int32_t>(code));
    EXPECT_THAT(nack.error_detail().message(), HasSubstr(text));
    EXPECT_EQ(CurrentVersion(), table_a_.version_info());
    EXPECT_EQ(metrics_.route_table_reloads_failed->Value(), 1.0);
  }

  // Waits until the `stream`-th route stream the server saw holds `count` messages.
  static bool WaitForMessages(const FakeControlPlane& server, size_t count, size_t stream = 0) {
    return WaitUntil([&] {
      const auto streams = server.route_streams();
      return streams.size() > stream && streams[stream].size() >= count;
    });
  }
  static v1::StreamRoutesRequest Message(const FakeControlPlane& server, size_t index,
                                         size_t stream = 0) {
    return server.route_streams().at(stream).at(index);
  }

  std::string CurrentVersion() const {
    const auto current = routes_.Current();
    return current != nullptr ? current->version() : "";
  }

  std::string state_dir_;
  proxy::RouteStore routes_;
  proxy::ProxyMetrics metrics_{routes_};
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<FakeControlPlane> server_;
  std::unique_ptr<RouteSubscriber> subscriber_;  // stops before server_ goes
  const v1::RouteTable table_a_ = TableOn("a.example", {"chat"});
  const v1::RouteTable table_b_ = TableOn("a.example", {"chat", "embed"});
};

TEST_F(RouteSubscriberTest, FirstRequestCarriesTheNodeAndTheVersionItServes) {
  ASSERT_TRUE(routes_.Apply(table_a_).ok());  // as if loaded from --state-dir
  ASSERT_TRUE(Serve());
  ASSERT_TRUE(WaitForMessages(*server_, 1));
  const v1::StreamRoutesRequest hello = Message(*server_, 0);
  EXPECT_EQ(hello.node().id(), "node-1");
  EXPECT_EQ(hello.node().build_version(), "berry-proxy test");
  EXPECT_EQ(hello.version_info(), table_a_.version_info());
  EXPECT_EQ(hello.response_nonce(), "");
  EXPECT_FALSE(hello.has_error_detail());
}

TEST_F(RouteSubscriberTest, FirstRequestOfAProxyWithoutATableHasNoVersion) {
  ASSERT_TRUE(Serve());
  ASSERT_TRUE(WaitForMessages(*server_, 1));
  const v1::StreamRoutesRequest hello = Message(*server_, 0);
  EXPECT_EQ(hello.node().id(), "node-1");
  EXPECT_EQ(hello.version_info(), "");
}

TEST_F(RouteSubscriberTest, AppliesAValidTableAndAcksItsVersionAndNonce) {
  ASSERT_TRUE(Serve({.route_responses = {Offer(table_a_)}}));
  ASSERT_TRUE(WaitForMessages(*server_, 2));
  const v1::StreamRoutesRequest ack = Message(*server_, 1);
  EXPECT_EQ(ack.response_nonce(), "1");
  EXPECT_EQ(ack.version_info(), table_a_.version_info());
  EXPECT_FALSE(ack.has_error_detail());
  EXPECT_EQ(CurrentVersion(), table_a_.version_info());
  EXPECT_EQ(metrics_.route_table_reloads_ok->Value(), 1.0);
  EXPECT_EQ(metrics_.route_table_reloads_failed->Value(), 0.0);
}

TEST_F(RouteSubscriberTest, NacksATableWhoseVersionDoesNotMatchItsContentAndKeepsTheOldOne) {
  ExpectSecondTableNacked(Damaged(table_b_), absl::StatusCode::kDataLoss, "version_info");
}

TEST_F(RouteSubscriberTest, NacksATableTheRouteStoreRefusesAndKeepsTheOldOne) {
  routes_.set_allowed_upstream_hosts({"a.example"});
  ExpectSecondTableNacked(TableOn("b.example", {"chat"}), absl::StatusCode::kPermissionDenied,
                          "b.example");
}

TEST_F(RouteSubscriberTest, PersistsEachTableItAppliesToTheStateDir) {
  ASSERT_TRUE(Serve({.route_responses = {Offer(table_a_), Offer(table_b_)}}));
  ASSERT_TRUE(WaitForMessages(*server_, 3));
  auto persisted = LoadPersistedTable(state_dir_);
  ASSERT_TRUE(persisted.ok()) << persisted.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*persisted, table_b_));
}

TEST_F(RouteSubscriberTest, DoesNotPersistATableItRejects) {
  ASSERT_TRUE(Serve({.route_responses = {Offer(table_a_), Offer(Damaged(table_b_))}}));
  ASSERT_TRUE(WaitForMessages(*server_, 3));
  auto persisted = LoadPersistedTable(state_dir_);
  ASSERT_TRUE(persisted.ok()) << persisted.status();
  EXPECT_EQ(persisted->version_info(), table_a_.version_info());
}

// Persistence is best effort: a state dir that cannot be written is logged, and the proxy still
// serves and ACKs the table.
TEST_F(RouteSubscriberTest, AppliesAndAcksATableWhenTheStateDirCannotBeWritten) {
  auto server = FakeControlPlane::Start({.route_responses = {Offer(table_a_)}});
  ASSERT_NE(server, nullptr);
  ClientOptions options = Options(server->target());
  options.state_dir = state_dir_ + "/does/not/exist";
  auto subscriber = Subscribe(options);
  ASSERT_TRUE(WaitForMessages(*server, 2));
  const v1::StreamRoutesRequest ack = Message(*server, 1);
  EXPECT_EQ(ack.version_info(), table_a_.version_info());
  EXPECT_FALSE(ack.has_error_detail());
  EXPECT_EQ(CurrentVersion(), table_a_.version_info());
}

TEST_F(RouteSubscriberTest, ConnectedWhileItsStreamIsUp) {
  ASSERT_TRUE(Serve({.route_responses = {Offer(table_a_)}}));
  EXPECT_TRUE(WaitUntil([&] { return subscriber_->connected(); }));
}

// The control plane sends nothing to a proxy that already serves its current table (a restart
// from --state-dir, a stream that broke while the control plane stayed up): the stream is up all
// the same, and berry_control_plane_connected must say so.
TEST_F(RouteSubscriberTest, ConnectedWhenTheServerHasNoNewTableForIt) {
  ASSERT_TRUE(routes_.Apply(table_a_).ok());
  ASSERT_TRUE(Serve());
  ASSERT_TRUE(WaitForMessages(*server_, 1));
  EXPECT_TRUE(WaitUntil([&] { return subscriber_->connected(); }));
}

TEST_F(RouteSubscriberTest, NotConnectedWhileNoServerAnswers) {
  ClientOptions options = Options("127.0.0.1:" + std::to_string(UnusedPort()));
  auto subscriber = Subscribe(options);
  // The stream has tried the channel and found nothing there.
  ASSERT_TRUE(
      WaitUntil([&] { return channel_->GetState(false) == GRPC_CHANNEL_TRANSIENT_FAILURE; }));
  EXPECT_FALSE(subscriber->connected());
}

TEST_F(RouteSubscriberTest, NotConnectedAfterTheServerGoesAway) {
  ASSERT_TRUE(Serve({.route_responses = {Offer(table_a_)}}));
  ASSERT_TRUE(WaitUntil([&] { return subscriber_->connected(); }));
  // Connected means the stream is open; the table may still be on its way.
  ASSERT_TRUE(WaitUntil([&] { return CurrentVersion() == table_a_.version_info(); }));
  server_.reset();
  EXPECT_TRUE(WaitUntil([&] { return !subscriber_->connected(); }));
  EXPECT_EQ(CurrentVersion(), table_a_.version_info()) << "keeps serving its last table";
}

TEST_F(RouteSubscriberTest, ReconnectsWhenTheServerComesBackAndAnnouncesTheVersionItServes) {
  auto first = FakeControlPlane::Start({.route_responses = {Offer(table_a_)}});
  ASSERT_NE(first, nullptr);
  const int port = first->port();
  auto subscriber = Subscribe(*first);
  ASSERT_TRUE(WaitForMessages(*first, 2));
  first.reset();

  auto second = FakeControlPlane::Start({.route_responses = {Offer(table_b_)}}, port);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(WaitForMessages(*second, 2));
  const v1::StreamRoutesRequest hello = Message(*second, 0);
  EXPECT_EQ(hello.node().id(), "node-1");
  EXPECT_EQ(hello.version_info(), table_a_.version_info());
  EXPECT_EQ(Message(*second, 1).version_info(), table_b_.version_info());
  EXPECT_EQ(CurrentVersion(), table_b_.version_info());
  EXPECT_TRUE(WaitUntil([&] { return subscriber->connected(); }));
}

// The bound is generous for a loaded machine; without cancellation Stop() would not return at all
// (the server holds the stream open; a wait-for-ready call waits for the channel forever).
constexpr auto kPrompt = 5s;

TEST_F(RouteSubscriberTest, StopReturnsPromptlyWhileConnected) {
  ASSERT_TRUE(Serve({.route_responses = {Offer(table_a_)}}));
  ASSERT_TRUE(WaitForMessages(*server_, 2));
  const auto started = std::chrono::steady_clock::now();
  subscriber_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, kPrompt);
  EXPECT_FALSE(subscriber_->connected());
}

TEST_F(RouteSubscriberTest, StopReturnsPromptlyWhileWaitingForTheChannel) {
  ClientOptions options = Options("127.0.0.1:" + std::to_string(UnusedPort()));
  options.initial_backoff = 1s;
  options.max_backoff = 60s;
  auto subscriber = Subscribe(options);
  ASSERT_TRUE(
      WaitUntil([&] { return channel_->GetState(false) == GRPC_CHANNEL_TRANSIENT_FAILURE; }));
  const auto started = std::chrono::steady_clock::now();
  subscriber->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, kPrompt);
}

}  // namespace
}  // namespace berry::managed::route_subscriber_test
