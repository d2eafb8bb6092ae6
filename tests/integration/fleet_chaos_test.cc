// Chaos with real processes under load: a front load balancer standing in for the Kubernetes
// Service (a new connection goes to a proxy whose /readyz answers 200), three managed proxies,
// their control plane behind a relay that can stop carrying packets, two mock providers, and
// steady load of chat requests and streams from a user whose limit is held fleet-wide. One
// after another, under that load:
//   1. the control plane is SIGKILLed and, 2 s later, restarted;
//   2. a config is pushed (new weights) and reaches every proxy;
//   3. one proxy is restarted as a rolling update: SIGTERM (it answers /readyz 503 and keeps
//      serving for its shutdown delay, then drains), exit 0, a new process on the same node id
//      and state directory;
//   4. a provider goes down (every connection reset before an answer) and comes back;
//   5. the path to the control plane goes dead without a FIN or RST for longer than the
//      proxies' keepalive allows, while a config is pushed; then it carries packets again and
//      the pushed config reaches every proxy.
// It holds when no client request fails: every chat request is answered 200 and every stream
// completes with [DONE].
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/integration/fleet_fixture.h"
#include "tests/support/tcp_balancer.h"

namespace berry::fleet_test::fleet_chaos_test {
namespace {

using test_support::Behavior;
using test_support::TcpBalancer;

constexpr char kToken[] = "berry-chaos-0123456789abcdef";
constexpr int kLoadThreads = 4;

// The port of "http://127.0.0.1:PORT" or "127.0.0.1:PORT"; 0 when there is none.
uint16_t PortOf(std::string_view address) {
  const size_t colon = address.rfind(':');
  uint16_t port = 0;
  if (colon == std::string_view::npos) {
    return 0;
  }
  const std::string_view digits = address.substr(colon + 1);
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  return error == std::errc() && end == digits.data() + digits.size() ? port : 0;
}

// Steady load through the front balancer: every thread alternates a chat request and a stream
// (5 events, 30 ms apart) as user "chaos", one connection each, until Stop().
class Load {
 public:
  explicit Load(std::string url) : url_(std::move(url)), start_(Clock::now()) {
    for (int i = 0; i < kLoadThreads; ++i) {
      threads_.emplace_back([this, i] { Run(i); });
    }
  }
  ~Load() { Stop(); }

  void Stop() {
    stop_.store(true);
    for (std::thread& thread : threads_) {
      if (thread.joinable()) {
        thread.join();
      }
    }
  }

  uint64_t sent() const { return sent_.load(); }
  uint64_t streams() const { return streams_.load(); }
  uint64_t failed() const { return failed_.load(); }
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  std::string failures() const {
    absl::MutexLock lock(&mu_);
    return failures_;
  }

 private:
  void Run(int thread) {
    for (uint64_t n = 0; !stop_.load(); ++n) {
      const bool stream = (n + thread) % 2 == 1;
      test_support::HttpRequest request = test_support::HttpRequest::Post(
          url_ + "/v1/chat/completions",
          absl::StrCat(R"({"model":"chat","messages":[{"role":"user","content":"hi"}])",
                       stream ? R"(,"stream":true})" : "}"));
      request.headers.emplace_back("Authorization", absl::StrCat("Bearer ", kToken));
      request.timeout = 15s;
      ++sent_;
      if (stream) {
        ++streams_;
        const auto response = test_support::FetchStreaming(request, {});
        if (!response.ok()) {
          Fail("stream", response.status().ToString());
        } else if (response->status != 200 || !response->body_status.ok() ||
                   !response->done()) {
          Fail("stream", absl::StrCat(response->status, " ", response->body_status.ToString(),
                                      " ", response->body.substr(0, 300)));
        }
      } else {
        const auto response = test_support::Fetch(request);
        if (!response.ok()) {
          Fail("chat", response.status().ToString());
        } else if (response->status != 200 ||
                   response->body.find("\"choices\"") == std::string::npos) {
          Fail("chat", absl::StrCat(response->status, " ", response->body.substr(0, 300)));
        }
      }
    }
  }

  void Fail(std::string_view kind, const std::string& what) {
    ++failed_;
    const double at = std::chrono::duration<double>(Clock::now() - start_).count();
    absl::MutexLock lock(&mu_);
    if (failures_.size() < 4000) {
      absl::StrAppend(&failures_, "  at ", at, " s, ", std::string(kind), ": ", what, "\n");
    }
  }

  const std::string url_;
  const Clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> streams_{0};
  std::atomic<uint64_t> failed_{0};
  mutable absl::Mutex mu_;
  std::string failures_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

class FleetChaos : public FleetTest {
 protected:
  // Streams take 5 events 30 ms apart, so some are always in flight when something happens.
  static Behavior Answering() {
    Behavior behavior = Behavior::Normal();
    behavior.stream_events = 5;
    behavior.stream_interval = std::chrono::milliseconds(30);
    return behavior;
  }

  std::string ChaosConfig(double weight_a, double weight_b) const {
    return Config(ModelToml("chat", {{"a", "up-a", weight_a}, {"b", "up-b", weight_b}})) +
           absl::StrCat("[users.chaos]\ntoken = \"", kToken,
                        "\"\n[users.chaos.rate_limit]\nrequests_per_minute = 1000000\n");
  }

  // A managed proxy of the fleet, reaching the control plane through the relay, its access log
  // on stdout (shown when the test fails).
  std::unique_ptr<Proxy> StartProxy(size_t index) {
    return Proxy::Start({relay_->address(), absl::StrCat("node-", index + 1),
                         state_dirs_[index]->path(),
                         {"--shutdown-delay-seconds", "1", "--drain-seconds", "10",
                          "--control-plane-keepalive-seconds", "10", "--access-log", "stdout"}});
  }

  double SumOverProxies(std::string_view sample) const {
    double sum = 0;
    for (const auto& proxy : proxies_) {
      sum += proxy->Metric(sample).value_or(0);
    }
    return sum;
  }

  std::unique_ptr<TcpBalancer> relay_;  // proxies -> control plane
  std::unique_ptr<TcpBalancer> front_;  // clients -> proxies
};

TEST_F(FleetChaos, NoClientRequestFailsThroughKillsPushesARollingRestartAProviderOutageAndACut) {
  a_->SetDefaultBehavior(Answering());
  b_->SetDefaultBehavior(Answering());
  ASSERT_TRUE(config_.Write(ChaosConfig(1, 1)));
  control_plane_ = ControlPlane::Start(config_.path());
  ASSERT_NE(control_plane_, nullptr);
  auto relay = TcpBalancer::Start({{PortOf(control_plane_->grpc_address), ""}});
  ASSERT_TRUE(relay.ok()) << relay.status();
  relay_ = *std::move(relay);
  std::vector<TcpBalancer::Target> targets;
  for (size_t i = 0; i < 3; ++i) {
    state_dirs_.push_back(std::make_unique<TempDir>("berry-chaos-state-"));
    auto proxy = StartProxy(i);
    ASSERT_NE(proxy, nullptr);
    node_ids_.push_back(proxy->options.node_id);
    targets.push_back({PortOf(proxy->url), "/readyz"});
    proxies_.push_back(std::move(proxy));
  }
  auto front = TcpBalancer::Start(targets);
  ASSERT_TRUE(front.ok()) << front.status();
  front_ = *std::move(front);
  std::string version = WaitConverged();
  ASSERT_FALSE(version.empty());
  ASSERT_TRUE(WaitUntil([&] { return front_->ready(0) && front_->ready(1) && front_->ready(2); },
                        kConvergeTimeout));

  Load load(front_->url());
  std::string steps;  // when each step began, in seconds of load
  const auto step = [&](std::string_view what) {
    absl::StrAppend(&steps, std::string(what), " at ", load.seconds(), " s; ");
  };
  std::this_thread::sleep_for(2s);
  step("kill");

  // 1. The control plane dies without a word and comes back 2 s later.
  RestartControlPlane([] { std::this_thread::sleep_for(2s); });
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(WaitUntil([&] { return control_plane_->AllAcked(node_ids_, control_plane_->Version()); },
                        kConvergeTimeout))
      << Describe(control_plane_->Proxies());
  const uint64_t after_kill = load.sent();

  // 2. A config push.
  step("push");
  version = control_plane_->Version();
  ASSERT_TRUE(config_.Write(ChaosConfig(3, 1)));
  version = WaitForNewVersionAckedByAll(version);
  ASSERT_FALSE(version.empty());
  const uint64_t after_push = load.sent();

  // 3. A rolling update of node-2: it leaves the balancer's rotation through /readyz, drains,
  // exits 0 and a new process takes its place.
  step("rolling restart");
  proxies_[1]->process->Signal(SIGTERM);
  EXPECT_TRUE(WaitUntil([&] { return !front_->ready(1); }, 5s))
      << "the balancer never saw node-2 not ready";
  const std::optional<int> exit_code = proxies_[1]->process->Wait(20s);
  EXPECT_EQ(exit_code, std::optional<int>(0)) << proxies_[1]->process->err();
  proxies_[1] = StartProxy(1);
  ASSERT_NE(proxies_[1], nullptr);
  front_->SetTarget(1, {PortOf(proxies_[1]->url), "/readyz"});
  ASSERT_TRUE(WaitUntil([&] { return front_->ready(1); }, kConvergeTimeout));
  ASSERT_TRUE(WaitUntil([&] { return control_plane_->AllAcked(node_ids_, control_plane_->Version()); },
                        kConvergeTimeout))
      << Describe(control_plane_->Proxies());
  const uint64_t after_restart = load.sent();

  // 4. Provider b goes down (resets every request before answering), then comes back.
  step("provider outage");
  const double retries_before = SumOverProxies("berry_retries_total{model=\"chat\"}");
  b_->SetDefaultBehavior(Behavior::ResetBeforeResponse());
  std::this_thread::sleep_for(3s);
  b_->SetDefaultBehavior(Answering());
  const double retries_during = SumOverProxies("berry_retries_total{model=\"chat\"}");
  EXPECT_GT(retries_during, retries_before) << "no request met the outage: nothing was tested";
  std::this_thread::sleep_for(2s);
  const uint64_t after_outage = load.sent();

  // 5. The path to the control plane stops carrying packets, with no FIN or RST, for longer
  // than a keepalive ping may go unanswered (1.5 x 10 s); a config is pushed meanwhile. When
  // the path works again the proxies are (re)connected and take it.
  version = control_plane_->Version();
  step("cut");
  relay_->Blackhole(true);
  ASSERT_TRUE(config_.Write(ChaosConfig(1, 1)));
  std::this_thread::sleep_for(17s);
  EXPECT_NE(control_plane_->Version(), version) << "the pushed config was never published";
  EXPECT_FALSE(control_plane_->AllAcked(node_ids_, control_plane_->Version()))
      << "a proxy took the pushed config through a path that carries nothing";
  relay_->Blackhole(false);
  step("cut restored");
  version = WaitForNewVersionAckedByAll(version);
  EXPECT_FALSE(version.empty());
  std::this_thread::sleep_for(1s);
  load.Stop();

  std::cout << "chaos: " << load.sent() << " requests (" << load.streams()
            << " streams) through the front balancer, failed: " << load.failed()
            << "; sent by the end of each step: kill " << after_kill << ", push " << after_push
            << ", rolling restart " << after_restart << ", provider outage " << after_outage
            << ", cut " << load.sent() << "; connections " << front_->connections()
            << ", unserved " << front_->unserved() << "\n";
  RecordProperty("requests", static_cast<int>(load.sent()));
  RecordProperty("failed", static_cast<int>(load.failed()));
  // On failure: each proxy's log, and its access-log lines of requests that took a second or
  // more or were not answered 200.
  std::string logs;
  for (const auto& proxy : proxies_) {
    if (load.failed() == 0) {
      break;
    }
    absl::StrAppend(&logs, "--- ", proxy->options.node_id, ":\n", proxy->process->err());
    const std::string out = proxy->process->out();
    for (size_t at = 0, end = 0; at < out.size(); at = end + 1) {
      end = std::min(out.find('\n', at), out.size());
      const std::string line = out.substr(at, end - at);
      if (line.find("\"status\":200") == std::string::npos ||
          line.find("\"duration\":0") == std::string::npos) {
        absl::StrAppend(&logs, "access: ", line, "\n");
      }
    }
  }
  EXPECT_EQ(load.failed(), 0u) << load.failures() << "steps: " << steps << logs;
  EXPECT_EQ(front_->unserved(), 0u);
  EXPECT_GT(load.sent(), 200u);
  EXPECT_GT(load.streams(), 100u);
}

}  // namespace
}  // namespace berry::fleet_test::fleet_chaos_test
