// HealthChecker: providers of the route table are probed with GET {base_url}/models against the
// mock upstream; verdicts follow consecutive results with thresholds, reach the sink only when
// they change, and are cleared when a provider leaves the table. Intervals are overridden to tens
// of milliseconds and tests wait on conditions (the sink's events, the mock's requests) with a
// deadline; the jitter is seeded.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "berry/v1/route_table.pb.h"
#include "common/http/client.h"
#include "common/metrics/metrics.h"
#include "control-plane/health/fleet_health_sink.h"
#include "control-plane/health/health_checker.h"
#include "control-plane/stats/fleet_stats.h"
#include "gtest/gtest.h"
#include "tests/support/certs.h"
#include "tests/support/mock_anthropic.h"
#include "tests/support/mock_gemini.h"
#include "tests/support/mock_upstream.h"

namespace berry::control_plane::health_test {
namespace {

namespace v1 = berry::v1;
using std::chrono::milliseconds;
using test_support::Behavior;
using test_support::MockUpstream;
using SteadyClock = std::chrono::steady_clock;

constexpr milliseconds kWait{5000};

// Records every verdict change, with how many requests the provider's mock had received by
// then: probes of one provider are sequential, so that is the number of the deciding probe.
class RecordingSink : public HealthSink {
 public:
  struct Event {
    std::string provider;
    std::optional<bool> healthy;
    uint64_t probes = 0;  // requests the watched mock had received; 0 when not watched
    SteadyClock::time_point at;
  };

  void Watch(const std::string& provider, const MockUpstream* mock) {
    absl::MutexLock lock(&mu_);
    watched_[provider] = mock;
  }

  void OnProviderHealth(std::string_view provider_id, std::optional<bool> healthy) override {
    absl::MutexLock lock(&mu_);
    Event event{std::string(provider_id), healthy, 0, SteadyClock::now()};
    if (auto it = watched_.find(event.provider); it != watched_.end()) {
      event.probes = it->second->request_count();
    }
    events_.push_back(std::move(event));
  }

  std::vector<Event> events() const {
    absl::MutexLock lock(&mu_);
    return events_;
  }

  std::vector<Event> EventsFor(const std::string& provider) const {
    std::vector<Event> out;
    for (Event& event : events()) {
      if (event.provider == provider) {
        out.push_back(std::move(event));
      }
    }
    return out;
  }

  // Waits until `provider` has an event reporting `healthy`; false on timeout.
  bool WaitFor(const std::string& provider, std::optional<bool> healthy,
               milliseconds timeout = kWait) const {
    const std::function<bool()> seen = [&] {
      return std::any_of(events_.begin(), events_.end(), [&](const Event& e) {
        return e.provider == provider && e.healthy == healthy;
      });
    };
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&seen, &std::function<bool()>::operator()),
                                absl::FromChrono(timeout));
  }

  // Waits until at least `n` events were recorded; false on timeout.
  bool WaitForEvents(size_t n, milliseconds timeout = kWait) const {
    const std::function<bool()> enough = [&] { return events_.size() >= n; };
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&enough, &std::function<bool()>::operator()),
                                absl::FromChrono(timeout));
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, const MockUpstream*> watched_ ABSL_GUARDED_BY(mu_);
};

std::unique_ptr<MockUpstream> NewMock(MockUpstream::Options options = {}) {
  auto mock = MockUpstream::Create(std::move(options));
  EXPECT_TRUE(mock.ok()) << mock.status();
  return mock.ok() ? *std::move(mock) : nullptr;
}

std::unique_ptr<MockUpstream> NewMock(Behavior behavior) {
  MockUpstream::Options options;
  options.default_behavior = std::move(behavior);
  return NewMock(std::move(options));
}

v1::Provider Provider(const std::string& id, const std::string& base_url,
                      const std::string& api_key = "sk-test") {
  v1::Provider provider;
  provider.set_id(id);
  provider.set_name(id);
  provider.set_base_url(base_url);
  provider.set_api_key(api_key);
  provider.set_enabled(true);
  provider.set_tls_verify(true);
  return provider;
}

v1::RouteTable Table(std::vector<v1::Provider> providers) {
  v1::RouteTable table;
  for (v1::Provider& provider : providers) {
    *table.add_providers() = std::move(provider);
  }
  return table;
}

// Probes every 50 ms (the recovery interval too), a generous timeout, a fixed seed.
HealthCheckerOptions FastOptions() {
  HealthCheckerOptions options;
  options.interval = absl::Milliseconds(50);
  options.recovery_interval = absl::Milliseconds(50);
  options.timeout = absl::Seconds(2);
  options.seed = 42;
  return options;
}

std::unique_ptr<HealthChecker> StartChecker(HealthSink& sink, HealthCheckerOptions options,
                                            const v1::RouteTable& table) {
  auto checker = HealthChecker::Create(sink, std::move(options));
  EXPECT_TRUE(checker.ok()) << checker.status();
  if (!checker.ok()) {
    return nullptr;
  }
  (*checker)->Update(table);
  (*checker)->Start();
  return *std::move(checker);
}

// The value of one rendered series, e.g. `name{label="v"}`; nullopt when absent.
std::optional<double> Metric(const metrics::Registry& registry, const std::string& series) {
  const std::string text = registry.Render();
  const std::string prefix = series + " ";
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      end = text.size();
    }
    const std::string_view line(text.data() + start, end - start);
    if (line.substr(0, prefix.size()) == prefix) {
      return std::stod(std::string(line.substr(prefix.size())));
    }
    start = end + 1;
  }
  return std::nullopt;
}

std::string Checks(const std::string& provider, const std::string& result) {
  return "berry_cp_health_checks_total{provider=\"" + provider + "\",result=\"" + result + "\"}";
}

// The TLS trust store with the mock's generated CA added.
std::shared_ptr<const upstream::TlsContexts> TrustingMock(const MockUpstream& mock) {
  auto dir = test_support::MakeTempDir("berry-health-test-");
  EXPECT_TRUE(dir.ok()) << dir.status();
  const std::string ca_file = *dir + "/ca.pem";
  std::ofstream(ca_file, std::ios::binary) << mock.ca_pem();
  auto contexts = upstream::TlsContexts::Create(ca_file);
  EXPECT_TRUE(contexts.ok()) << contexts.status();
  return contexts.ok() ? *contexts : nullptr;
}

// Gaps between consecutive requests the mock received from `first` (0-based) on.
std::vector<milliseconds> GapsFrom(const MockUpstream& mock, size_t first) {
  const std::vector<test_support::RecordedRequest> requests = mock.requests();
  std::vector<milliseconds> gaps;
  for (size_t i = first + 1; i < requests.size(); ++i) {
    gaps.push_back(std::chrono::duration_cast<milliseconds>(requests[i].received_at -
                                                            requests[i - 1].received_at));
  }
  return gaps;
}

TEST(HealthCheckerTest, HealthyProviderIsReportedHealthyAtItsFirstSuccess) {
  auto mock = NewMock();
  RecordingSink sink;
  sink.Watch("p", mock.get());
  metrics::Registry registry;
  auto checker = HealthChecker::Create(sink, FastOptions());
  ASSERT_TRUE(checker.ok()) << checker.status();
  ASSERT_TRUE((*checker)->RegisterMetrics(registry).ok());
  (*checker)->Update(Table({Provider("p", mock->base_url())}));
  (*checker)->Start();

  ASSERT_TRUE(sink.WaitFor("p", true));
  const auto events = sink.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].probes, 1u);
  EXPECT_EQ((*checker)->ProviderHealth("p"), true);
  EXPECT_EQ(Metric(registry, "berry_cp_provider_healthy{provider=\"p\"}"), 1.0);
  EXPECT_GE(Metric(registry, Checks("p", "success")).value_or(0), 1.0);
  EXPECT_EQ(Metric(registry, Checks("p", "failure")), 0.0);
}

TEST(HealthCheckerTest, ProbeSendsTheKeyAndHeadersToTheModelsEndpoint) {
  MockUpstream::Options options;
  options.api_key = "sk-provider-key";  // anything else gets 401
  auto mock = NewMock(options);
  RecordingSink sink;
  v1::Provider provider = Provider("p", mock->base_url(), "sk-provider-key");
  v1::Header* header = provider.add_headers();
  header->set_name("OpenAI-Organization");
  header->set_value("org-1");
  auto checker = StartChecker(sink, FastOptions(), Table({provider}));

  ASSERT_TRUE(sink.WaitFor("p", true));
  const auto request = mock->requests().at(0);
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.target, "/v1/models");
  EXPECT_EQ(request.Header("Authorization"), "Bearer sk-provider-key");
  EXPECT_EQ(request.Header("OpenAI-Organization"), "org-1");
  EXPECT_EQ(request.Header("Host"), "127.0.0.1:" + std::to_string(mock->port()));
}

TEST(HealthCheckerTest, AnthropicProviderIsProbedWithItsOwnKeyHeaders) {
  // The mock answers 401 without the right x-api-key and 400 without anthropic-version.
  auto mock = test_support::MockAnthropic::Start();
  ASSERT_TRUE(mock.ok()) << mock.status();
  RecordingSink sink;
  for (const std::string type : {"anthropic", "claude"}) {
    SCOPED_TRACE(type);
    v1::Provider provider = Provider(type, (*mock)->base_url(), "sk-ant-test");
    provider.set_backend_type(type);
    auto checker = StartChecker(sink, FastOptions(), Table({provider}));
    ASSERT_TRUE(sink.WaitFor(type, true));
  }
  const test_support::AnthropicRequest request = (*mock)->requests().at(0);
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.target, "/v1/models");
  EXPECT_EQ(request.Header("x-api-key"), "sk-ant-test");
  EXPECT_EQ(request.Header("anthropic-version"), "2023-06-01");
  EXPECT_FALSE(request.Header("Authorization").has_value());

  v1::Provider wrong = Provider("wrong", (*mock)->base_url(), "sk-ant-wrong");
  wrong.set_backend_type("anthropic");
  auto checker = StartChecker(sink, FastOptions(), Table({wrong}));
  EXPECT_TRUE(sink.WaitFor("wrong", false));
}

TEST(HealthCheckerTest, GeminiProviderIsProbedWithItsOwnKeyHeader) {
  // The mock answers 403 without x-goog-api-key and 400 with a wrong one.
  auto mock = test_support::MockGemini::Start();
  ASSERT_TRUE(mock.ok()) << mock.status();
  RecordingSink sink;
  v1::Provider provider = Provider("google", (*mock)->base_url(), "gm-test-key");
  provider.set_backend_type("gemini");
  {
    auto checker = StartChecker(sink, FastOptions(), Table({provider}));
    ASSERT_TRUE(sink.WaitFor("google", true));
  }
  const test_support::GeminiRequest request = (*mock)->requests().at(0);
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.target, "/v1beta/models");
  EXPECT_EQ(request.Header("x-goog-api-key"), "gm-test-key");
  EXPECT_FALSE(request.Header("Authorization").has_value());

  v1::Provider wrong = Provider("wrong", (*mock)->base_url(), "gm-wrong");
  wrong.set_backend_type("gemini");
  auto checker = StartChecker(sink, FastOptions(), Table({wrong}));
  EXPECT_TRUE(sink.WaitFor("wrong", false));
}

TEST(HealthCheckerTest, ProbesNeverPostAnythingSoNoTokensAreSpent) {
  auto mock = NewMock();
  RecordingSink sink;
  auto checker = StartChecker(sink, FastOptions(), Table({Provider("p", mock->base_url())}));

  ASSERT_TRUE(mock->WaitForRequests(4, kWait));
  checker->Stop();
  for (const auto& request : mock->requests()) {
    EXPECT_EQ(request.method, "GET");
    EXPECT_EQ(request.target, "/v1/models");
    EXPECT_TRUE(request.body.empty());
  }
}

TEST(HealthCheckerTest, WrongKeyMakesProviderUnhealthy) {
  MockUpstream::Options options;
  options.api_key = "sk-right";
  auto mock = NewMock(options);
  RecordingSink sink;
  auto checker =
      StartChecker(sink, FastOptions(), Table({Provider("p", mock->base_url(), "sk-wrong")}));

  EXPECT_TRUE(sink.WaitFor("p", false));
}

TEST(HealthCheckerTest, FailingProviderBecomesUnhealthyAfterExactlyTheThreshold) {
  auto mock = NewMock(Behavior::Fail(503));
  RecordingSink sink;
  sink.Watch("p", mock.get());
  HealthCheckerOptions options = FastOptions();
  options.unhealthy_threshold = 3;
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));

  ASSERT_TRUE(sink.WaitFor("p", false));
  const auto events = sink.events();
  ASSERT_EQ(events.size(), 1u);  // no verdict at all before the third failure
  EXPECT_EQ(events[0].probes, 3u);
  EXPECT_EQ(checker->ProviderHealth("p"), false);
}

TEST(HealthCheckerTest, UnhealthyProviderRecoversAfterConsecutiveSuccesses) {
  auto mock = NewMock();  // answers normally once the queue is used up
  mock->EnqueueBehavior(Behavior::Normal());
  mock->EnqueueBehavior(Behavior::Fail(503));
  mock->EnqueueBehavior(Behavior::Fail(503));
  RecordingSink sink;
  sink.Watch("p", mock.get());
  HealthCheckerOptions options = FastOptions();
  options.unhealthy_threshold = 2;
  options.healthy_threshold = 2;
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));

  ASSERT_TRUE(sink.WaitForEvents(3));
  checker->Stop();
  const auto events = sink.events();
  ASSERT_EQ(events.size(), 3u);
  // Probe 1 succeeds (healthy at once), 2 and 3 fail (unhealthy), 4 succeeds (not yet), 5
  // succeeds (healthy again).
  EXPECT_EQ(events[0].healthy, true);
  EXPECT_EQ(events[0].probes, 1u);
  EXPECT_EQ(events[1].healthy, false);
  EXPECT_EQ(events[1].probes, 3u);
  EXPECT_EQ(events[2].healthy, true);
  EXPECT_EQ(events[2].probes, 5u);
}

TEST(HealthCheckerTest, HangingProviderCountsAsTimeout) {
  auto mock = NewMock(Behavior::Hang());
  RecordingSink sink;
  metrics::Registry registry;
  HealthCheckerOptions options = FastOptions();
  options.timeout = absl::Milliseconds(200);
  options.unhealthy_threshold = 1;
  auto checker = HealthChecker::Create(sink, options);
  ASSERT_TRUE(checker.ok()) << checker.status();
  ASSERT_TRUE((*checker)->RegisterMetrics(registry).ok());
  (*checker)->Update(Table({Provider("p", mock->base_url())}));
  (*checker)->Start();

  ASSERT_TRUE(sink.WaitFor("p", false));
  const auto first = mock->requests().at(0);
  EXPECT_GE(sink.events().at(0).at - first.received_at, milliseconds(150));
  EXPECT_GE(Metric(registry, Checks("p", "timeout")).value_or(0), 1.0);
  EXPECT_EQ(Metric(registry, Checks("p", "failure")), 0.0);
  EXPECT_EQ(Metric(registry, "berry_cp_provider_healthy{provider=\"p\"}"), 0.0);
}

TEST(HealthCheckerTest, RefusedConnectionCountsAsFailure) {
  auto mock = NewMock();
  const std::string base_url = mock->base_url();
  mock->Stop();  // nothing listens on that port any more
  RecordingSink sink;
  metrics::Registry registry;
  HealthCheckerOptions options = FastOptions();
  options.unhealthy_threshold = 1;
  auto checker = HealthChecker::Create(sink, options);
  ASSERT_TRUE(checker.ok()) << checker.status();
  ASSERT_TRUE((*checker)->RegisterMetrics(registry).ok());
  (*checker)->Update(Table({Provider("p", base_url)}));
  (*checker)->Start();

  ASSERT_TRUE(sink.WaitFor("p", false));
  EXPECT_GE(Metric(registry, Checks("p", "failure")).value_or(0), 1.0);
  EXPECT_EQ(Metric(registry, Checks("p", "timeout")), 0.0);
}

TEST(HealthCheckerTest, HttpsProviderTrustedThroughTestCaIsHealthy) {
  MockUpstream::Options mock_options;
  mock_options.tls = true;
  mock_options.api_key = "sk-test";
  auto mock = NewMock(mock_options);
  RecordingSink sink;
  HealthCheckerOptions options = FastOptions();
  options.tls_contexts = TrustingMock(*mock);
  ASSERT_NE(options.tls_contexts, nullptr);
  ASSERT_EQ(mock->base_url().rfind("https://", 0), 0u);
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));

  EXPECT_TRUE(sink.WaitFor("p", true));
}

TEST(HealthCheckerTest, HttpsProviderWithUntrustedCertificateIsUnhealthy) {
  MockUpstream::Options mock_options;
  mock_options.tls = true;
  auto mock = NewMock(mock_options);
  RecordingSink sink;
  HealthCheckerOptions options = FastOptions();
  options.unhealthy_threshold = 1;  // the system store does not know the test CA
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));

  EXPECT_TRUE(sink.WaitFor("p", false));
  EXPECT_EQ(mock->request_count(), 0u);
}

TEST(HealthCheckerTest, UpdateRemovesProviderClearsItsVerdictAndAddsNewOnes) {
  auto mock_a = NewMock();
  auto mock_b = NewMock();
  RecordingSink sink;
  sink.Watch("a", mock_a.get());
  metrics::Registry registry;
  auto checker = HealthChecker::Create(sink, FastOptions());
  ASSERT_TRUE(checker.ok()) << checker.status();
  ASSERT_TRUE((*checker)->RegisterMetrics(registry).ok());
  (*checker)->Update(Table({Provider("a", mock_a->base_url())}));
  (*checker)->Start();
  ASSERT_TRUE(sink.WaitFor("a", true));

  (*checker)->Update(Table({Provider("b", mock_b->base_url())}));
  ASSERT_TRUE(sink.WaitFor("a", std::nullopt));
  ASSERT_TRUE(sink.WaitFor("b", true));
  const uint64_t probes_of_a = sink.EventsFor("a").back().probes;
  ASSERT_TRUE(mock_b->WaitForRequests(mock_b->request_count() + 3, kWait));
  EXPECT_EQ(mock_a->request_count(), probes_of_a);  // no probe after the removal
  EXPECT_EQ((*checker)->ProviderHealth("a"), std::nullopt);
  EXPECT_EQ(Metric(registry, "berry_cp_provider_healthy{provider=\"a\"}"), std::nullopt);
  EXPECT_EQ(Metric(registry, Checks("a", "success")), std::nullopt);
  EXPECT_EQ(Metric(registry, "berry_cp_provider_healthy{provider=\"b\"}"), 1.0);
}

TEST(HealthCheckerTest, UpdateKeepsTheCountsOfProvidersThatStay) {
  auto mock = NewMock(Behavior::Fail(503));
  auto other = NewMock();
  RecordingSink sink;
  sink.Watch("p", mock.get());
  HealthCheckerOptions options = FastOptions();
  options.interval = absl::Milliseconds(200);
  options.recovery_interval = absl::Milliseconds(200);
  options.unhealthy_threshold = 3;
  const v1::Provider p = Provider("p", mock->base_url());
  auto checker = StartChecker(sink, options, Table({p}));

  ASSERT_TRUE(mock->WaitForRequests(2, kWait));
  checker->Update(Table({p, Provider("q", other->base_url())}));

  ASSERT_TRUE(sink.WaitFor("p", false));
  const auto events = sink.EventsFor("p");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].probes, 3u);  // a reset would have needed three more failures
}

TEST(HealthCheckerTest, ChangedBaseUrlStartsTheProviderOver) {
  auto old_mock = NewMock();
  auto new_mock = NewMock();
  RecordingSink sink;
  auto checker = StartChecker(sink, FastOptions(), Table({Provider("p", old_mock->base_url())}));
  ASSERT_TRUE(sink.WaitFor("p", true));

  checker->Update(Table({Provider("p", new_mock->base_url())}));
  ASSERT_TRUE(sink.WaitForEvents(3));
  const auto events = sink.events();
  EXPECT_EQ(events[1].healthy, std::nullopt);
  EXPECT_EQ(events[2].healthy, true);
  EXPECT_GE(new_mock->request_count(), 1u);
}

TEST(HealthCheckerTest, DisabledProviderIsNotProbed) {
  auto enabled_mock = NewMock();
  auto disabled_mock = NewMock();
  RecordingSink sink;
  v1::Provider disabled = Provider("off", disabled_mock->base_url());
  disabled.set_enabled(false);
  auto checker = StartChecker(sink, FastOptions(),
                              Table({Provider("on", enabled_mock->base_url()), disabled}));

  // Several rounds of the enabled provider are proof enough that the other one was skipped.
  ASSERT_TRUE(enabled_mock->WaitForRequests(4, kWait));
  EXPECT_EQ(disabled_mock->request_count(), 0u);
  EXPECT_TRUE(sink.EventsFor("off").empty());
}

TEST(HealthCheckerTest, DisablingProviderClearsItsVerdict) {
  auto mock = NewMock();
  RecordingSink sink;
  v1::Provider provider = Provider("p", mock->base_url());
  auto checker = StartChecker(sink, FastOptions(), Table({provider}));
  ASSERT_TRUE(sink.WaitFor("p", true));

  provider.set_enabled(false);
  checker->Update(Table({provider}));
  EXPECT_TRUE(sink.WaitFor("p", std::nullopt));
}

TEST(HealthCheckerTest, FirstProbesOfProvidersAreSpreadOverTheInterval) {
  auto mock = NewMock();
  RecordingSink sink;
  std::vector<v1::Provider> providers;
  for (int i = 0; i < 10; ++i) {
    v1::Provider provider = Provider("p" + std::to_string(i), mock->base_url());
    v1::Header* header = provider.add_headers();
    header->set_name("x-provider");
    header->set_value(provider.id());
    providers.push_back(std::move(provider));
  }
  HealthCheckerOptions options = FastOptions();
  options.interval = absl::Seconds(1);
  const auto started = SteadyClock::now();
  auto checker = StartChecker(sink, options, Table(providers));

  ASSERT_TRUE(sink.WaitForEvents(10));
  checker->Stop();
  absl::flat_hash_map<std::string, SteadyClock::time_point> first;
  for (const auto& request : mock->requests()) {
    first.try_emplace(request.Header("x-provider").value_or(""), request.received_at);
  }
  ASSERT_EQ(first.size(), 10u);
  SteadyClock::time_point earliest = SteadyClock::time_point::max();
  SteadyClock::time_point latest = SteadyClock::time_point::min();
  for (const auto& [id, at] : first) {
    earliest = std::min(earliest, at);
    latest = std::max(latest, at);
  }
  // Ten uniform offsets in one second (fixed seed): far from lock-step, and all within the
  // first interval (plus scheduling slack).
  EXPECT_GE(latest - earliest, milliseconds(200));
  EXPECT_LT(latest - started, milliseconds(1500));
}

TEST(HealthCheckerTest, UnhealthyProviderIsProbedAtTheRecoveryInterval) {
  auto mock = NewMock(Behavior::Fail(503));
  RecordingSink sink;
  sink.Watch("p", mock.get());
  HealthCheckerOptions options = FastOptions();
  options.interval = absl::Seconds(1);
  options.recovery_interval = absl::Milliseconds(50);
  options.unhealthy_threshold = 1;
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));

  ASSERT_TRUE(sink.WaitFor("p", false));
  const uint64_t at_verdict = sink.events().at(0).probes;
  ASSERT_TRUE(mock->WaitForRequests(at_verdict + 4, milliseconds(2000)));
  checker->Stop();
  const auto gaps = GapsFrom(*mock, at_verdict - 1);
  ASSERT_GE(gaps.size(), 4u);
  for (const milliseconds gap : gaps) {
    EXPECT_GE(gap, milliseconds(40));   // 50 ms - 10% jitter
    EXPECT_LT(gap, milliseconds(500));  // the normal interval would be 1 s ± 10%
  }
}

TEST(HealthCheckerTest, FleetEjectedProviderIsProbedAtTheRecoveryInterval) {
  auto mock = NewMock();
  RecordingSink sink;
  sink.Watch("p", mock.get());
  HealthCheckerOptions options = FastOptions();
  options.interval = absl::Seconds(1);
  options.recovery_interval = absl::Milliseconds(50);
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));
  ASSERT_TRUE(sink.WaitFor("p", true));

  // The wait in progress (about 1 s) is shortened at once.
  checker->SetFleetEjected("p", true);
  ASSERT_TRUE(mock->WaitForRequests(5, milliseconds(900)));
  checker->Stop();
  for (const milliseconds gap : GapsFrom(*mock, 1)) {
    EXPECT_LT(gap, milliseconds(500));
  }
}

// A proxy reported an ejection: the provider is probed now, not at the end of a one-minute wait,
// and the sink hears of the passing probe with the time it started.
TEST(HealthCheckerTest, ProbeNowProbesAtOnceAndReportsThePassingProbesStart) {
  auto mock = NewMock();
  class Sink : public RecordingSink {
   public:
    void OnProbeSucceeded(std::string_view provider_id, absl::Time started) override {
      absl::MutexLock lock(&mu);
      if (provider_id == "p") {
        starts.push_back(started);
      }
    }
    bool WaitPassed(size_t n) const {
      absl::MutexLock lock(&mu);
      auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return starts.size() >= n; };
      return mu.AwaitWithTimeout(absl::Condition(&enough), absl::FromChrono(kWait));
    }
    absl::Time last() const {
      absl::MutexLock lock(&mu);
      return starts.back();
    }
    mutable absl::Mutex mu;
    std::vector<absl::Time> starts ABSL_GUARDED_BY(mu);
  } sink;
  sink.Watch("p", mock.get());
  HealthCheckerOptions options = FastOptions();
  options.interval = absl::Seconds(60);
  options.recovery_interval = absl::Seconds(60);
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));
  // The first probe comes at a seeded random offset within the minute; ask for one now.
  checker->ProbeNow("p");
  ASSERT_TRUE(mock->WaitForRequests(1, milliseconds(2000))) << "ProbeNow did not probe";
  ASSERT_TRUE(sink.WaitFor("p", true));
  ASSERT_TRUE(sink.WaitPassed(1));
  // The next one is due about a minute later: a probe within two seconds is ProbeNow's.
  const uint64_t probes = mock->request_count();
  const absl::Time asked = absl::Now();
  checker->ProbeNow("p");
  EXPECT_TRUE(mock->WaitForRequests(probes + 1, milliseconds(2000)));
  ASSERT_TRUE(sink.WaitPassed(2));
  EXPECT_GE(sink.last(), asked) << "the passing probe's start is when it started";
  checker->ProbeNow("unknown");  // ignored
  checker->Stop();
}

TEST(HealthCheckerTest, LongerRecoveryIntervalNeverSlowsProbesOfUnhealthyProvider) {
  auto mock = NewMock(Behavior::Fail(503));
  RecordingSink sink;
  sink.Watch("p", mock.get());
  HealthCheckerOptions options = FastOptions();
  options.recovery_interval = absl::Seconds(60);
  options.unhealthy_threshold = 1;
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));

  ASSERT_TRUE(sink.WaitFor("p", false));
  EXPECT_TRUE(mock->WaitForRequests(sink.events().at(0).probes + 3, kWait));
}

TEST(HealthCheckerTest, StopCancelsAnInFlightProbePromptly) {
  auto mock = NewMock(Behavior::Hang());
  RecordingSink sink;
  HealthCheckerOptions options = FastOptions();
  options.timeout = absl::Seconds(30);
  auto checker = StartChecker(sink, options, Table({Provider("p", mock->base_url())}));
  ASSERT_TRUE(mock->WaitForRequests(1, kWait));

  const auto before = SteadyClock::now();
  checker->Stop();
  EXPECT_LT(SteadyClock::now() - before, milliseconds(1000));
  EXPECT_TRUE(mock->WaitForOpenConnections(0, kWait));  // the probe's connection is closed
  checker->Stop();                                      // idempotent
  EXPECT_TRUE(sink.events().empty());
}

TEST(HealthCheckerTest, CreateRejectsInvalidOptions) {
  RecordingSink sink;
  HealthCheckerOptions zero_threshold;
  zero_threshold.unhealthy_threshold = 0;
  EXPECT_EQ(HealthChecker::Create(sink, zero_threshold).status().code(),
            absl::StatusCode::kInvalidArgument);
  HealthCheckerOptions big_jitter;
  big_jitter.jitter = 0.7;
  EXPECT_EQ(HealthChecker::Create(sink, big_jitter).status().code(),
            absl::StatusCode::kInvalidArgument);
  HealthCheckerOptions zero_interval;
  zero_interval.interval = absl::ZeroDuration();
  EXPECT_EQ(HealthChecker::Create(sink, zero_interval).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HealthCheckerTest, RegisteringMetricsTwiceFails) {
  RecordingSink sink;
  auto checker = HealthChecker::Create(sink);
  ASSERT_TRUE(checker.ok()) << checker.status();
  metrics::Registry registry;
  ASSERT_TRUE((*checker)->RegisterMetrics(registry).ok());
  EXPECT_EQ((*checker)->RegisterMetrics(registry).code(), absl::StatusCode::kAlreadyExists);
}

TEST(FleetStatsHealthSinkTest, ProviderVerdictReachesEveryBackendOfTheProvider) {
  auto fleet = FleetStats::Create();
  ASSERT_TRUE(fleet.ok()) << fleet.status();
  FleetStatsHealthSink sink(**fleet);
  v1::RouteTable table = Table({Provider("p", "http://127.0.0.1:1/v1")});
  v1::CustomModel* model = table.add_models();
  model->set_id("chat");
  v1::Backend* backend = model->add_backends();
  backend->set_id("chat/p/m");
  backend->set_provider_id("p");
  backend->set_weight(1.0);

  sink.OnProviderHealth("p", false);
  (*fleet)->Overlay(table);
  EXPECT_EQ(table.models(0).backends(0).health(), v1::HEALTH_STATUS_UNHEALTHY);
  sink.OnProviderHealth("p", std::nullopt);
  (*fleet)->Overlay(table);
  EXPECT_EQ(table.models(0).backends(0).health(), v1::HEALTH_STATUS_UNKNOWN);
}

}  // namespace
}  // namespace berry::control_plane::health_test
