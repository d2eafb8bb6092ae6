// LoadReporter against an in-process fake control plane: sequence numbers, deltas, the interval
// the server sets, and exactly-once delivery across reconnects.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/route_table/compile.h"
#include "data-plane/managed/control_plane_client.h"
#include "data-plane/proxy/clock.h"
#include "data-plane/proxy/route_store.h"
#include "tests/unit/managed/fake_control_plane.h"
#include "tests/unit/managed/test_tables.h"

namespace berry::managed::load_reporter_test {
namespace {

namespace v1 = berry::v1;
using namespace std::chrono_literals;
using testing::BackendIdOf;
using testing::FakeControlPlane;
using testing::FakeScript;
using testing::TableOn;
using testing::TestClientOptions;
using testing::WaitUntil;

class LoadReporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(routes_.Apply(TableOn("a.example", {"chat", "embed"})).ok());
  }

  std::unique_ptr<LoadReporter> Report(const FakeControlPlane& server) {
    const ClientOptions options = TestClientOptions(server.target());
    auto reporter = std::make_unique<LoadReporter>(options, MakeChannel(options), routes_);
    reporter->Start();
    return reporter;
  }
  // Starts server_ playing `script` and reporter_ reporting to it; false (with a test failure)
  // when the server cannot listen.
  bool Serve(FakeScript script = {}) {
    server_ = FakeControlPlane::Start(std::move(script));
    if (server_ == nullptr) return false;
    reporter_ = Report(*server_);
    return true;
  }

  // `count` attempts started on `model`'s backend.
  void Issue(const std::string& model, int count) {
    const auto current = routes_.Current();
    ASSERT_NE(current, nullptr);
    for (uint32_t i = 0; i < current->load->size(); ++i) {
      if (current->load->id(i) == BackendIdOf(model)) {
        for (int n = 0; n < count; ++n) {
          current->load->backend(i).RecordIssued();
        }
        return;
      }
    }
    FAIL() << "no backend for model " << model;
  }

  static bool WaitForReports(const FakeControlPlane& server, size_t count) {
    return WaitUntil([&] { return server.reports().size() >= count; });
  }

  // What `report` says about `model`'s backend; zero when it does not mention it.
  static uint64_t IssuedOn(const v1::StreamLoadReportsRequest& report, const std::string& model) {
    for (const v1::BackendStats& stats : report.backend_stats()) {
      if (stats.backend_id() == BackendIdOf(model)) {
        return stats.issued();
      }
    }
    return 0;
  }

  proxy::RouteStore routes_;
  std::unique_ptr<FakeControlPlane> server_;
  std::unique_ptr<LoadReporter> reporter_;  // stops before server_ goes
};

TEST_F(LoadReporterTest, OpensEachStreamWithItsNode) {
  ASSERT_TRUE(Serve());
  ASSERT_TRUE(WaitUntil([&] {
    const auto streams = server_->report_streams();
    return !streams.empty() && !streams[0].empty();
  }));
  const v1::StreamLoadReportsRequest hello = server_->report_streams()[0][0];
  EXPECT_EQ(hello.node().id(), "node-1");
  EXPECT_EQ(hello.sequence(), 0u) << "the opening message is not a report";
  EXPECT_EQ(hello.backend_stats_size(), 0);
}

TEST_F(LoadReporterTest, ReportsCarrySequenceNumbersCountingUpFromOne) {
  ASSERT_TRUE(Serve());
  for (size_t round = 1; round <= 3; ++round) {
    Issue("chat", 1);
    ASSERT_TRUE(WaitForReports(*server_, round)) << "round " << round;
  }
  const auto reports = server_->reports();
  ASSERT_EQ(reports.size(), 3u);
  for (size_t i = 0; i < reports.size(); ++i) {
    EXPECT_EQ(reports[i].sequence(), i + 1);
    EXPECT_EQ(reports[i].node().id(), "node-1");
  }
}

TEST_F(LoadReporterTest, EachReportCarriesOnlyWhatHappenedSinceThePreviousOne) {
  ASSERT_TRUE(Serve());
  Issue("chat", 3);
  ASSERT_TRUE(WaitForReports(*server_, 1));
  Issue("chat", 2);
  ASSERT_TRUE(WaitForReports(*server_, 2));
  const auto reports = server_->reports();
  EXPECT_EQ(IssuedOn(reports[0], "chat"), 3u);
  EXPECT_EQ(IssuedOn(reports[1], "chat"), 2u);
}

TEST_F(LoadReporterTest, BackendsWithoutActivityAreLeftOutOfAReport) {
  ASSERT_TRUE(Serve());
  Issue("chat", 1);
  ASSERT_TRUE(WaitForReports(*server_, 1));
  const v1::StreamLoadReportsRequest report = server_->reports()[0];
  ASSERT_EQ(report.backend_stats_size(), 1);
  EXPECT_EQ(report.backend_stats(0).backend_id(), BackendIdOf("chat"));
}

// A negative check needs some waiting: ten report intervals (100 ms each) without a report.
TEST_F(LoadReporterTest, NothingIsReportedWhileNothingHappens) {
  ASSERT_TRUE(Serve());
  ASSERT_TRUE(WaitUntil([&] { return !server_->report_streams().empty(); }));
  EXPECT_FALSE(WaitUntil([&] { return !server_->reports().empty(); }, 1s));
  EXPECT_EQ(reporter_->pending(), 0u);
}

// The client starts at 5 s between reports; the server asks for 100 ms. Three reports, each
// waiting for the previous one, take about 0.3 s at 100 ms and at least 10 s at 5 s.
TEST_F(LoadReporterTest, ReportsAtTheIntervalTheServerSets) {
  FakeScript script;
  script.report_interval = 100ms;
  ASSERT_TRUE(Serve(script));
  const auto deadline = std::chrono::steady_clock::now() + 9s;
  for (size_t round = 1; round <= 3; ++round) {
    Issue("chat", 1);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    ASSERT_TRUE(WaitUntil([&] { return server_->reports().size() >= round; }, left))
        << "report " << round << " not in time for a 100 ms interval";
  }
}

// Ejections and 429 cooldowns do not wait for the interval (a minute here): they are nudged out.
TEST_F(LoadReporterTest, AnEjectionOrACooldownIsReportedAtOnceWithTheTimeItStillRuns) {
  FakeScript script;
  script.report_interval = 60s;
  ASSERT_TRUE(Serve(script));
  ASSERT_TRUE(WaitUntil([&] { return !server_->report_streams().empty(); }));
  const auto current = routes_.Current();
  uint32_t chat = 0;
  while (current->load->id(chat) != BackendIdOf("chat")) {
    ++chat;
  }
  const int64_t now_ns = proxy::Clock::System().MonotonicNs();
  bool ejected = false;
  for (uint32_t n = 0; n < current->outliers->failure_threshold(); ++n) {
    ejected |= current->outliers->Record(chat, outlier::Outcome::kStatus5xx, now_ns).ejected;
  }
  ASSERT_TRUE(ejected);
  current->load->nudge().Nudge();  // what AttemptStats does on an ejection
  ASSERT_TRUE(WaitUntil([&] { return server_->reports().size() >= 1; }, 2s))
      << "the ejection waited for the interval";
  const v1::BackendStats first = server_->reports()[0].backend_stats(0);
  EXPECT_EQ(first.backend_id(), BackendIdOf("chat"));
  ASSERT_TRUE(first.has_ejected_for());
  EXPECT_GT(first.ejected_for().seconds(), 50);  // 60 s by default, minus the time it took
  EXPECT_LE(first.ejected_for().seconds(), 60);
  EXPECT_FALSE(first.has_cooldown_for());

  current->load->backend(chat).NoteCooldown(proxy::Clock::System().MonotonicNs() + 2'000'000'000);
  current->load->nudge().Nudge();
  ASSERT_TRUE(WaitUntil([&] { return server_->reports().size() >= 2; }, 2s));
  const v1::BackendStats second = server_->reports()[1].backend_stats(0);
  ASSERT_TRUE(second.has_cooldown_for());
  EXPECT_LE(second.cooldown_for().seconds(), 2);
  EXPECT_FALSE(second.has_ejected_for()) << "the same ejection is reported once";
}

TEST_F(LoadReporterTest, AnAcknowledgedReportIsForgotten) {
  ASSERT_TRUE(Serve());
  Issue("chat", 1);
  ASSERT_TRUE(WaitForReports(*server_, 1));
  EXPECT_TRUE(WaitUntil([&] { return reporter_->pending() == 0; }));
}

// The server went away before acknowledging report 1: the reporter reconnects on its own (no
// new traffic needed) and sends it again, with the same number and the same counts.
TEST_F(LoadReporterTest, AnUnacknowledgedReportIsSentAgainAfterAReconnect) {
  FakeScript silent;
  silent.ack_reports = false;
  auto first = FakeControlPlane::Start(silent);
  ASSERT_NE(first, nullptr);
  const int port = first->port();
  auto reporter = Report(*first);
  Issue("chat", 3);
  ASSERT_TRUE(WaitForReports(*first, 1));
  EXPECT_EQ(reporter->pending(), 1u);
  first.reset();

  auto second = FakeControlPlane::Start({}, port);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(WaitForReports(*second, 1)) << "report 1 was not sent again";
  const v1::StreamLoadReportsRequest again = second->reports()[0];
  EXPECT_EQ(again.sequence(), 1u);
  EXPECT_EQ(IssuedOn(again, "chat"), 3u);
  EXPECT_TRUE(WaitUntil([&] { return reporter->pending() == 0; }));
  EXPECT_EQ(second->reports().size(), 1u) << "sent more than once";
}

TEST_F(LoadReporterTest, AnAcknowledgedReportIsNeverSentAgain) {
  auto first = FakeControlPlane::Start({});
  ASSERT_NE(first, nullptr);
  const int port = first->port();
  auto reporter = Report(*first);
  Issue("chat", 3);
  ASSERT_TRUE(WaitForReports(*first, 1));
  ASSERT_TRUE(WaitUntil([&] { return reporter->pending() == 0; }));
  first.reset();

  auto second = FakeControlPlane::Start({}, port);
  ASSERT_NE(second, nullptr);
  Issue("chat", 2);
  ASSERT_TRUE(WaitForReports(*second, 1));
  const auto reports = second->reports();
  for (const auto& report : reports) {
    EXPECT_NE(report.sequence(), 1u) << "report 1 was acknowledged and sent again";
  }
  EXPECT_EQ(reports[0].sequence(), 2u);
  EXPECT_EQ(IssuedOn(reports[0], "chat"), 2u);
}

// A backend that leaves the table and comes back later gets new counters, starting at zero; its
// next report counts from there, not from what the old counters had reached.
TEST_F(LoadReporterTest, ABackendRemovedAndAddedBackIsCountedFromZero) {
  ASSERT_TRUE(Serve());
  Issue("chat", 5);
  ASSERT_TRUE(WaitForReports(*server_, 1));
  ASSERT_TRUE(routes_.Apply(TableOn("a.example", {"embed"})).ok());
  ASSERT_TRUE(routes_.Apply(TableOn("a.example", {"chat", "embed"})).ok());
  Issue("chat", 2);
  ASSERT_TRUE(WaitForReports(*server_, 2));
  EXPECT_EQ(IssuedOn(server_->reports()[1], "chat"), 2u);
}

TEST_F(LoadReporterTest, StopReturnsPromptlyWhileConnected) {
  ASSERT_TRUE(Serve());
  ASSERT_TRUE(WaitUntil([&] { return !server_->report_streams().empty(); }));
  const auto started = std::chrono::steady_clock::now();
  reporter_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

}  // namespace
}  // namespace berry::managed::load_reporter_test
