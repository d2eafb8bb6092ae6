// How fast one control plane brings a large fleet to a new config: 100 simulated proxies (each
// its own gRPC channel and TCP connection, speaking StreamRoutes like berry-proxy: hello with the
// node id, then an ACK for every table), one config edit at a time, timed from the rename of the
// config file until every stream has received and ACKed the new version, and until /proxies
// shows it. Prints the median over a few edits; bench/README.md records the figure.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "berry/v1/discovery.grpc.pb.h"
#include "tests/integration/fleet_fixture.h"

namespace berry::fleet_test::fleet_scale_test {
namespace {

constexpr int kStreams = 100;
constexpr int kEdits = 5;

// One StreamRoutes client that ACKs every table, on its own thread and channel. Like berry-proxy
// it opens a new stream when one fails (a connection attempt can fail on a loaded machine), so
// the figure measures the control plane, not the first connect.
class SimulatedProxy {
 public:
  SimulatedProxy(const std::string& target, std::string node_id) : node_id_(std::move(node_id)) {
    grpc::ChannelArguments args;
    // A channel of its own, not a shared subchannel: one TCP connection per simulated proxy.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    channel_ = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    stub_ = berry::v1::RouteDiscoveryService::NewStub(channel_);
    thread_ = std::thread([this] { Run(); });
  }

  ~SimulatedProxy() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      if (context_ != nullptr) {
        context_->TryCancel();
      }
    }
    thread_.join();
  }

  // When this client ACKed `version`; nullopt if it has not.
  std::optional<Clock::time_point> AckedAt(const std::string& version) const {
    absl::MutexLock lock(&mu_);
    const auto it = acked_at_.find(version);
    return it == acked_at_.end() ? std::nullopt : std::optional(it->second.steady);
  }
  // The same on the wall clock, to compare with the control plane's log times.
  absl::Time AckedAtWallTime(const std::string& version) const {
    absl::MutexLock lock(&mu_);
    const auto it = acked_at_.find(version);
    return it == acked_at_.end() ? absl::InfinitePast() : it->second.wall;
  }

  // Whether the table of `version` marked every backend HEALTHY.
  bool AllHealthyIn(const std::string& version) const {
    absl::MutexLock lock(&mu_);
    return healthy_versions_.contains(version);
  }

  // Streams that ended (and were opened again) so far.
  int reconnects() const {
    absl::MutexLock lock(&mu_);
    return reconnects_;
  }

  // Where the client is, for failure messages.
  std::string Describe() const {
    absl::MutexLock lock(&mu_);
    return absl::StrCat(node_id_, ": channel state ", static_cast<int>(channel_->GetState(false)),
                        ", ", acked_at_.size(), " tables ACKed, ", reconnects_,
                        " streams ended, last error: ", last_error_);
  }

 private:
  void Run() {
    for (;;) {
      grpc::ClientContext context;
      context.set_wait_for_ready(true);
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) {
          return;
        }
        context_ = &context;
      }
      RunStream(context);
      absl::MutexLock lock(&mu_);
      context_ = nullptr;
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(100))) {
        return;
      }
      ++reconnects_;
    }
  }

  void RunStream(grpc::ClientContext& context) {
    auto stream = stub_->StreamRoutes(&context);
    berry::v1::StreamRoutesRequest hello;
    hello.mutable_node()->set_id(node_id_);
    hello.mutable_node()->set_build_version("fleet-scale-test");
    berry::v1::StreamRoutesResponse response;
    if (stream->Write(hello)) {
      while (stream->Read(&response)) {
        berry::v1::StreamRoutesRequest ack;
        ack.set_version_info(response.version_info());
        ack.set_response_nonce(response.nonce());
        if (!stream->Write(ack)) {
          break;
        }
        const Ack now{Clock::now(), absl::Now()};
        bool healthy = true;
        for (const auto& model : response.route_table().models()) {
          for (const auto& backend : model.backends()) {
            healthy &= backend.health() == berry::v1::HEALTH_STATUS_HEALTHY;
          }
        }
        absl::MutexLock lock(&mu_);
        acked_at_.emplace(response.version_info(), now);
        if (healthy) {
          healthy_versions_.insert(response.version_info());
        }
      }
    }
    const grpc::Status status = stream->Finish();
    absl::MutexLock lock(&mu_);
    last_error_ = absl::StrCat(status.error_code(), " ", status.error_message());
  }

  const std::string node_id_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<berry::v1::RouteDiscoveryService::Stub> stub_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  struct Ack {
    Clock::time_point steady;
    absl::Time wall;
  };
  std::map<std::string, Ack> acked_at_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> healthy_versions_ ABSL_GUARDED_BY(mu_);
  int reconnects_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// "N connected; acked: V1 x N1, V2 x N2" from /proxies.
std::string Summary(const absl::StatusOr<boost::json::value>& proxies) {
  if (!proxies.ok()) {
    return proxies.status().ToString();
  }
  std::map<std::string, int> acked;
  int connected = 0;
  for (const auto& node : proxies->as_object().at("proxies").as_array()) {
    ++acked[JsonString(node, "acked_version")];
    const auto* flag = node.as_object().if_contains("connected");
    connected += flag != nullptr && flag->is_bool() && flag->as_bool() ? 1 : 0;
  }
  std::string out = absl::StrCat("version ", JsonString(*proxies, "version"), ", ", connected,
                                 " connected; acked:");
  for (const auto& [version, count] : acked) {
    absl::StrAppend(&out, " ", version.empty() ? "(none)" : version, " x ", count);
  }
  return out;
}

// The time of the last `"msg":"<message>"` line of the control plane's JSON log.
std::optional<absl::Time> LastLogTime(const std::string& log, std::string_view message) {
  const size_t at = log.rfind(absl::StrCat(R"("msg":")", std::string(message), R"(")"));
  if (at == std::string::npos) {
    return std::nullopt;
  }
  const size_t line = log.rfind('\n', at);
  const size_t start = log.find(R"("time":")", line == std::string::npos ? 0 : line);
  if (start == std::string::npos || start > at) {
    return std::nullopt;
  }
  const size_t end = log.find('"', start + 8);
  absl::Time time;
  std::string error;
  if (!absl::ParseTime("%Y-%m-%dT%H:%M:%E*SZ", log.substr(start + 8, end - start - 8), &time,
                       &error)) {
    return std::nullopt;
  }
  return time;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

std::string Config(const test_support::MockUpstream& mock, double weight) {
  return SettingsToml() + ProviderToml("a", mock.base_url(), {"up-a", "up-a2"}) +
         ModelToml("chat", {{"a", "up-a", weight}, {"a", "up-a2", 1.0}});
}

TEST(FleetScale, HundredStreamsAllAckAConfigEdit) {
  const auto test_deadline = Clock::now() + 60s;
  auto mock = StartMock("a", {"up-a", "up-a2"});
  ASSERT_NE(mock, nullptr);
  TempDir dir;
  ConfigFile config(dir);
  ASSERT_TRUE(config.Write(Config(*mock, 1.0)));
  auto control_plane = ControlPlane::Start(config.path());
  ASSERT_NE(control_plane, nullptr);

  std::vector<std::string> node_ids;
  std::vector<std::unique_ptr<SimulatedProxy>> fleet;
  for (int i = 0; i < kStreams; ++i) {
    node_ids.push_back(absl::StrCat("sim-", i));
    fleet.push_back(std::make_unique<SimulatedProxy>(control_plane->grpc_address, node_ids.back()));
  }
  const auto all_acked_by_streams = [&](const std::string& version) {
    return std::all_of(fleet.begin(), fleet.end(),
                       [&](const auto& proxy) { return proxy->AckedAt(version).has_value(); });
  };
  const auto stragglers = [&](const std::string& version) {
    std::string out;
    for (const auto& proxy : fleet) {
      if (!proxy->AckedAt(version)) {
        absl::StrAppend(&out, "\n  ", proxy->Describe());
      }
    }
    return out;
  };
  // Converged: the probes gave their verdict, so the table (every backend HEALTHY) stops
  // changing, and all 100 streams ACKed it.
  std::string version;
  ASSERT_TRUE(WaitUntil(
      [&] {
        version = control_plane->Version();
        return fleet.front()->AllHealthyIn(version) && all_acked_by_streams(version) &&
               control_plane->AllAcked(node_ids, version);
      },
      kConvergeTimeout))
      << Summary(control_plane->Proxies()) << "; streams without " << version << ":"
      << stragglers(version) << "\n"
      << control_plane->process->err();
  EXPECT_EQ(control_plane->Metric("berry_cp_connected_proxies"), kStreams);

  std::vector<double> streams_ms;
  std::vector<double> proxies_ms;
  std::vector<double> reload_ms;  // from the control plane's "config loaded" log line
  for (int edit = 1; edit <= kEdits && Clock::now() < test_deadline - 10s; ++edit) {
    const std::string old_version = version;
    const auto edited = Clock::now();
    ASSERT_TRUE(config.Write(Config(*mock, 1.0 + edit)));

    ASSERT_TRUE(WaitUntil(
        [&] {
          version = control_plane->Version();
          return version != old_version && all_acked_by_streams(version);
        },
        kConvergeTimeout, 1ms))
        << "edit " << edit << " did not reach every stream:" << stragglers(version);
    Clock::time_point last_ack = edited;
    for (const auto& proxy : fleet) {
      last_ack = std::max(last_ack, *proxy->AckedAt(version));
    }
    ASSERT_TRUE(WaitUntil([&] { return control_plane->AllAcked(node_ids, version); },
                          kConvergeTimeout, 5ms))
        << "edit " << edit << ": every stream ACKed " << version << " but /proxies says "
        << Summary(control_plane->Proxies()) << "\n"
        << control_plane->process->err();
    const auto shown = Clock::now();
    streams_ms.push_back(std::chrono::duration<double, std::milli>(last_ack - edited).count());
    if (const auto loaded = LastLogTime(control_plane->process->err(), "config loaded")) {
      absl::Time last_wall = *loaded;
      for (const auto& proxy : fleet) {
        last_wall = std::max(last_wall, proxy->AckedAtWallTime(version));
      }
      reload_ms.push_back(absl::ToDoubleMilliseconds(last_wall - *loaded));
    }
    proxies_ms.push_back(std::chrono::duration<double, std::milli>(shown - edited).count());
  }

  ASSERT_GE(streams_ms.size(), 3u) << "too slow to measure within the test's bound";
  int reconnects = 0;
  for (const auto& proxy : fleet) {
    reconnects += proxy->reconnects();
  }
  std::printf(
      "[ scale    ] %d StreamRoutes streams, %zu config edits: edit -> all %d ACKed median %.1f ms "
      "(min %.1f, max %.1f); -> /proxies shows all ACKed median %.1f ms (includes the control "
      "plane's 100 ms settle after a file event); config loaded -> all %d ACKed median %.1f ms; "
      "%d stream reconnects\n",
      kStreams, streams_ms.size(), kStreams, Median(streams_ms),
      *std::min_element(streams_ms.begin(), streams_ms.end()),
      *std::max_element(streams_ms.begin(), streams_ms.end()), Median(proxies_ms), kStreams,
      reload_ms.empty() ? -1.0 : Median(reload_ms), reconnects);
  RecordProperty("streams", kStreams);
  RecordProperty("edit_to_all_acked_median_ms", absl::StrCat(Median(streams_ms)));
  RecordProperty("edit_to_proxies_json_median_ms", absl::StrCat(Median(proxies_ms)));
  EXPECT_LT(Median(streams_ms), 5000) << "a config edit takes seconds to reach 100 proxies";
}

}  // namespace
}  // namespace berry::fleet_test::fleet_scale_test
