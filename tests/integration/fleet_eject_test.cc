// Fleet-wide failure detection and 429 cooldowns, with real processes: a berry-control-plane and
// three managed berry-proxy processes (node-1 = A, node-2 = B, node-3 = C) in front of two mock
// providers serving one model. Load goes through A only; what B and C do is what is measured.
//
// Settings are the defaults (30 s probes, 3 failures to fail a probe verdict, 5 consecutive
// failures to eject, 60 s ejections), except recovery_check_interval_seconds = 1, which only
// sets how often a provider the fleet has ejected is probed, so that recovery takes seconds.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/fleet_fixture.h"

namespace berry::fleet_test::fleet_eject_test {
namespace {

using test_support::Behavior;

// Sends chat requests through one proxy, one at a time, until stopped.
class Load {
 public:
  explicit Load(const Proxy& proxy)
      : thread_([this, &proxy] {
          while (!stop_) {
            (void)Chat(proxy.url, "chat");
            ++sent_;
          }
        }) {}
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;
  ~Load() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  int sent() const { return sent_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0};
  std::thread thread_;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class FleetEject : public FleetTest {
 protected:
  // Default settings but for the recovery probe period; "chat" on a/up-a and b/up-b.
  std::string DefaultsConfig() const {
    return "[settings]\nrecovery_check_interval_seconds = 1\n\n" +
           ProviderToml("a", a_->base_url(), {"up-a", "up-a2"}) +
           ProviderToml("b", b_->base_url(), {"up-b"}) +
           ModelToml("chat", {{"a", "up-a"}, {"b", "up-b"}});
  }

  // Starts the fleet and waits until every proxy serves and B and C have each sent b traffic.
  void StartAndWarmUp() {
    StartFleet(DefaultsConfig());
    ASSERT_FALSE(HasFatalFailure());
    WaitEveryProxyReady();
    ASSERT_FALSE(HasFatalFailure());
    for (size_t i = 1; i < proxies_.size(); ++i) {
      ASSERT_TRUE(WaitUntil([&] { return ServedBy(*proxies_[i]) == "b"; }, 10s, 0ms))
          << proxies_[i]->options.node_id << " never sends b traffic";
    }
  }

  // Whether proxy `index` holds (applied and persisted) a table in which `wanted` holds.
  bool Holds(size_t index, const std::function<bool(const berry::v1::RouteTable&)>& wanted) const {
    const auto table = proxies_[index]->PersistedTable();
    return table.has_value() && wanted(*table);
  }

  static const berry::v1::Backend* Find(const berry::v1::RouteTable& table, std::string_view id) {
    for (const auto& model : table.models()) {
      for (const auto& backend : model.backends()) {
        if (backend.id() == id) {
          return &backend;
        }
      }
    }
    return nullptr;
  }
};

TEST_F(FleetEject, BackendFailingOnOneProxyLeavesEveryProxysRotationWithinTwoSeconds) {
  StartAndWarmUp();
  ASSERT_FALSE(HasFatalFailure());
  const std::string backend_b = BackendId("chat", "b", "up-b");
  const auto unhealthy = [&](const berry::v1::RouteTable& table) {
    return HealthIn(table, backend_b) == kUnhealthy;
  };

  Load load(*proxies_[0]);
  ASSERT_TRUE(WaitUntil([&] { return load.sent() >= 20; }, kConvergeTimeout));
  b_->SetDefaultBehavior(Behavior::Fail(503));  // chat and probes alike
  const auto failing_since = Clock::now();
  ASSERT_TRUE(
      WaitUntil([&] { return Holds(1, unhealthy) && Holds(2, unhealthy); }, kConvergeTimeout, 10ms))
      << "B and C never took b out of rotation\n"
      << Describe(control_plane_->Backends());
  const auto detected = Clock::now() - failing_since;
  std::printf("[ measured ] b failing on A -> out of B's and C's rotation in %.3f s\n",
              Seconds(detected));
  EXPECT_LT(detected, 2s);
  EXPECT_GE(control_plane_->Metric("berry_cp_proxy_ejections_total").value_or(0), 1);
  load.Stop();

  // B and C send b nothing now (A ejected it itself).
  const size_t b_before = ChatRequests(*b_).size();
  for (size_t i = 1; i < proxies_.size(); ++i) {
    for (int n = 0; n < 20; ++n) {
      EXPECT_EQ(ServedBy(*proxies_[i]), "a") << proxies_[i]->options.node_id;
    }
  }
  EXPECT_EQ(ChatRequests(*b_).size(), b_before) << "B or C still sends b traffic";

  // b recovers: the probes of an ejected provider (every recovery_check_interval) bring it back
  // to B and C.
  b_->ResetBehaviors();
  const auto recovering_since = Clock::now();
  for (size_t i = 1; i < proxies_.size(); ++i) {
    EXPECT_TRUE(WaitUntil([&] { return ServedBy(*proxies_[i]) == "b"; }, kConvergeTimeout, 0ms))
        << proxies_[i]->options.node_id << " never sends b traffic again\n"
        << Describe(control_plane_->Backends());
  }
  std::printf("[ measured ] b healthy again -> back in B's and C's rotation in %.3f s\n",
              Seconds(Clock::now() - recovering_since));
}

TEST_F(FleetEject, UpstreamRateLimitOnOneProxyCoolsTheBackendDownOnEveryProxyUntilRetryAfter) {
  StartAndWarmUp();
  ASSERT_FALSE(HasFatalFailure());
  const std::string backend_a = BackendId("chat", "a", "up-a");
  const std::string backend_b = BackendId("chat", "b", "up-b");
  const auto both_cooling = [&](const berry::v1::RouteTable& table) {
    const auto* a = Find(table, backend_a);
    const auto* b = Find(table, backend_b);
    return a != nullptr && b != nullptr && a->has_cooldown_until() && b->has_cooldown_until();
  };

  // Both providers answer 429 with Retry-After: 2 (b in the x-ratelimit-reset form). One request
  // through A tries both (the second as a retry) and gets the last 429 passed through.
  Behavior limited = Behavior::Fail(429);
  limited.headers = {{"Retry-After", "2"}};
  a_->SetDefaultBehavior(limited);
  limited.headers = {{"x-ratelimit-remaining-requests", "0"}, {"x-ratelimit-reset-requests", "2s"}};
  b_->SetDefaultBehavior(limited);
  const auto limited_at = Clock::now();
  auto first = Chat(proxies_[0]->url, "chat");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->status, 429) << first->body;
  // The providers are fine again at once; the fleet must still wait the time they named.
  a_->ResetBehaviors();
  b_->ResetBehaviors();

  ASSERT_TRUE(WaitUntil([&] { return Holds(1, both_cooling) && Holds(2, both_cooling); },
                        kConvergeTimeout, 10ms))
      << "B and C never got the cooldowns\n"
      << Describe(control_plane_->Backends());
  const auto pushed = Clock::now() - limited_at;
  std::printf("[ measured ] 429 on A -> cooldown held by B and C in %.3f s\n", Seconds(pushed));
  EXPECT_LT(pushed, 1s);
  EXPECT_GE(control_plane_->Metric("berry_cp_upstream_cooldowns_total").value_or(0), 2);

  // Until the named time, B and C answer 429 with Retry-After themselves and send nothing.
  const size_t a_before = ChatRequests(*a_).size();
  const size_t b_before = ChatRequests(*b_).size();
  int refused = 0;
  while (Clock::now() - limited_at < 1500ms) {
    for (size_t i = 1; i < proxies_.size(); ++i) {
      auto response = Chat(proxies_[i]->url, "chat");
      ASSERT_TRUE(response.ok()) << response.status();
      if (Clock::now() - limited_at >= 1500ms) {
        break;  // the answer may have been decided after the cooldown ended
      }
      EXPECT_EQ(response->status, 429) << response->body;
      EXPECT_TRUE(response->Header("retry-after").has_value());
      EXPECT_NE(response->body.find("rate_limit_error"), std::string::npos) << response->body;
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_EQ(ChatRequests(*a_).size(), a_before) << "a got traffic while cooling down";
  EXPECT_EQ(ChatRequests(*b_).size(), b_before) << "b got traffic while cooling down";

  // After it, both serve again on B and C.
  for (size_t i = 1; i < proxies_.size(); ++i) {
    for (const char* mock : {"a", "b"}) {
      EXPECT_TRUE(WaitUntil([&] { return ServedBy(*proxies_[i]) == mock; }, 10s, 0ms))
          << proxies_[i]->options.node_id << " never sends " << mock << " traffic again";
    }
  }
  const auto back = Clock::now() - limited_at;
  std::printf("[ measured ] Retry-After 2 s -> B and C serve again %.3f s after the 429\n",
              Seconds(back));
  EXPECT_GE(back, 1800ms);
}

}  // namespace
}  // namespace berry::fleet_test::fleet_eject_test
