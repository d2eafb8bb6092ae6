// AttemptStats: what happened to a request reaches every sink from the one place — the Prometheus
// registry, the load counters for the control plane, the selection runtime, the outlier detector
// and the access log — on a route table compiled from TOML and a manual clock (no sockets are
// connected; the exchange's client connection is never used).
#include "data-plane/proxy/attempt_stats.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <memory_resource>
#include <string>

#include "common/config/config.h"
#include "common/route_table/compile.h"
#include "data-plane/proxy/worker_generation.h"
#include "tests/support/manual_clock.h"

namespace berry::proxy::attempt_stats_test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::string_view kConfig = R"(
[providers.p]
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-p-secret"
models = ["up-a", "up-b"]

[models.chat]
[[models.chat.backends]]
provider = "p"
model = "up-a"
[[models.chat.backends]]
provider = "p"
model = "up-b"
)";

class AttemptStatsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const config::LoadResult loaded = config::Parse(kConfig, "attempt_stats_test.toml");
    ASSERT_TRUE(loaded.config.has_value());
    ASSERT_TRUE(routes_.Apply(route_table::Compile(*loaded.config)).ok());
    generation_ = routes_.Current();
    ASSERT_NE(generation_, nullptr);
    ASSERT_EQ(pipe2(log_pipe_, O_NONBLOCK | O_CLOEXEC), 0);
    access_log_ = std::make_unique<AccessLog>(log_pipe_[1]);
    stats_ = std::make_unique<AttemptStats>(metrics_, *access_log_, clock_);
    pinned_ = std::make_unique<WorkerGeneration>(generation_, metrics_);

    request_.method(http::verb::post);
    request_.target("/v1/chat/completions");
  }

  void TearDown() override {
    stats_.reset();
    pinned_.reset();
    access_log_.reset();  // its writer thread writes to the pipe until then
    close(log_pipe_[0]);
    close(log_pipe_[1]);
  }

  const selection::CompiledModel& model() const { return generation_->snapshot().models()[0]; }
  const selection::CompiledBackend& backend(size_t i) const { return model().backends()[i]; }

  std::unique_ptr<Exchange> NewExchange() {
    auto exchange = std::make_unique<Exchange>(request_, downstream_, clock_.Now());
    exchange->pinned = pinned_.get();
    exchange->generation = generation_.get();
    exchange->model = &model();
    return exchange;
  }

  // Everything the access log has written since the last call.
  std::string LogLines() {
    access_log_->Flush();
    std::string out;
    char buffer[4096];
    ssize_t n = 0;
    while ((n = read(log_pipe_[0], buffer, sizeof(buffer))) > 0) {
      out.append(buffer, static_cast<size_t>(n));
    }
    return out;
  }

  test_support::ManualClock clock_{1'700'000'000};
  RouteStore routes_;
  ProxyMetrics metrics_{routes_};
  std::shared_ptr<const RouteGeneration> generation_;
  int log_pipe_[2] = {-1, -1};
  std::unique_ptr<AccessLog> access_log_;
  std::unique_ptr<AttemptStats> stats_;
  std::unique_ptr<WorkerGeneration> pinned_;

  net::io_context io_;
  server::ClientSession session_{net::ip::tcp::socket(io_)};
  server::Downstream downstream_{session_, "req-0001", true, 1s,
                                 server::ArenaAllocator(std::pmr::new_delete_resource())};
  Request request_;
};

TEST_F(AttemptStatsTest, AnAnsweredRequestReachesEverySink) {
  auto exchange = NewExchange();
  const selection::CompiledBackend& b = backend(1);

  stats_->BeginAttempt(*generation_, b);
  EXPECT_EQ(generation_->runtime->backend(b).in_flight(), 1u);
  clock_.Advance(200ms);
  stats_->RecordTtfb(*exchange, b, 0.2);
  stats_->RecordUsage(*exchange, b, {.prompt_tokens = 11, .completion_tokens = 7});
  stats_->RecordOutcome(*generation_, b, outlier::Outcome::kSuccess);
  stats_->EndAttempt(*generation_, b);
  EXPECT_EQ(generation_->runtime->backend(b).in_flight(), 0u);
  EXPECT_DOUBLE_EQ(generation_->runtime->backend(b).ttfb_ewma_seconds(), 0.2);

  clock_.Advance(300ms);
  exchange->backend = &b;
  exchange->status = 200;
  exchange->answered = true;
  stats_->Finish(*exchange, clock_.Now());

  const BackendLoad::Totals load = generation_->load->backend(b.index()).Read();
  EXPECT_EQ(load.issued, 1u);
  EXPECT_EQ(load.succeeded, 1u);
  EXPECT_EQ(load.prompt_tokens, 11u);
  EXPECT_EQ(load.completion_tokens, 7u);
  EXPECT_NEAR(load.latency_sum, 0.5, 1e-9) << "latency is measured on the injected clock";
  EXPECT_NEAR(load.ttfb_sum, 0.2, 1e-9);
  EXPECT_EQ(generation_->load->backend(backend(0).index()).Read().issued, 0u);

  const std::string text = metrics_.registry().Render();
  // prometheus-cpp writes labels in name order.
  const std::string backend_label = "backend=\"" + b.id() + "\"";
  const std::string labels = backend_label + ",model=\"chat\"";
  EXPECT_THAT(text, HasSubstr("berry_requests_total{" + backend_label +
                              ",code=\"200\",model=\"chat\"} 1\n"))
      << text;
  EXPECT_THAT(text, HasSubstr("berry_request_duration_seconds_count{" + labels + "} 1\n"));
  EXPECT_THAT(text, HasSubstr("berry_request_duration_seconds_sum{" + labels + "} 0.5\n"));
  EXPECT_THAT(text, HasSubstr("berry_upstream_ttfb_seconds_count{" + labels + "} 1\n"));
  EXPECT_THAT(text, HasSubstr("berry_tokens_total{" + backend_label +
                              ",kind=\"prompt\",model=\"chat\"} 11\n"));
  EXPECT_THAT(text, HasSubstr("berry_tokens_total{" + backend_label +
                              ",kind=\"completion\",model=\"chat\"} 7\n"));

  const std::string line = LogLines();
  EXPECT_THAT(line, HasSubstr(R"("request_id":"req-0001")")) << line;
  EXPECT_THAT(line, HasSubstr(R"("backend":")" + b.id() + "\"")) << line;
  EXPECT_THAT(line, HasSubstr(R"("status":200,"duration":0.500000,"ttfb":0.200000,)")) << line;
  EXPECT_THAT(line, HasSubstr(R"("prompt_tokens":11,"completion_tokens":7})")) << line;
}

TEST_F(AttemptStatsTest, FailuresInARowEjectTheBackendOnce) {
  auto exchange = NewExchange();
  const selection::CompiledBackend& b = backend(0);
  const uint32_t threshold = generation_->outliers->failure_threshold();
  ASSERT_GT(threshold, 1u);

  for (uint32_t i = 0; i + 1 < threshold; ++i) {
    stats_->FailAttempt(*exchange, b, outlier::Outcome::kStatus5xx, "upstream 503");
  }
  EXPECT_FALSE(generation_->runtime->backend(b).EjectedAt(clock_.MonotonicNs()));
  stats_->FailAttempt(*exchange, b, outlier::Outcome::kTimeout, "upstream timed out");
  EXPECT_TRUE(generation_->runtime->backend(b).EjectedAt(clock_.MonotonicNs()))
      << "the threshold-th failure in a row ejects";
  EXPECT_FALSE(generation_->runtime->backend(backend(1)).EjectedAt(clock_.MonotonicNs()));

  EXPECT_TRUE(exchange->last_timed_out) << "the last failure was a timeout: the answer is 504";
  EXPECT_EQ(exchange->error, "upstream timed out");
  EXPECT_EQ(exchange->backend, &b);
  const BackendLoad::Totals load = generation_->load->backend(b.index()).Read();
  EXPECT_EQ(load.failed_5xx, threshold - 1);
  EXPECT_EQ(load.failed_timeout, 1u);
  EXPECT_EQ(load.succeeded, 0u);
}

TEST_F(AttemptStatsTest, RetriesAndPanicsAreCountedOnTheExchangeAndTheModel) {
  auto exchange = NewExchange();
  stats_->CountPick(*exchange, /*panic=*/false, /*retry=*/false);
  stats_->CountPick(*exchange, /*panic=*/true, /*retry=*/true);
  stats_->CountPick(*exchange, /*panic=*/false, /*retry=*/true);
  EXPECT_EQ(exchange->retries, 2);
  EXPECT_TRUE(exchange->panic);

  const std::string text = metrics_.registry().Render();
  EXPECT_THAT(text, HasSubstr("berry_retries_total{model=\"chat\"} 2\n")) << text;
  EXPECT_THAT(text, HasSubstr("berry_panic_total{model=\"chat\"} 1\n")) << text;
}

TEST_F(AttemptStatsTest, AClientThatLeftBeforeTheAnswerIsLoggedAs499) {
  auto exchange = NewExchange();
  exchange->backend = &backend(0);
  exchange->status = 200;
  exchange->client_gone = true;
  stats_->Finish(*exchange, clock_.Now());
  EXPECT_THAT(LogLines(), HasSubstr(R"("status":499,)"));
  EXPECT_THAT(metrics_.registry().Render(), HasSubstr("code=\"200\",model=\"chat\"} 1\n"))
      << "the metric counts what the upstream answered";
}

TEST_F(AttemptStatsTest, ProbesAreCountedApartFromApiRequests) {
  request_.method(http::verb::get);
  request_.target("/healthz");
  auto exchange = NewExchange();
  exchange->model = nullptr;
  exchange->local_endpoint = true;
  exchange->status = 200;
  stats_->Finish(*exchange, clock_.Now());

  const std::string text = metrics_.registry().Render();
  EXPECT_THAT(text, HasSubstr("berry_local_requests_total{code=\"200\",path=\"/healthz\"} 1\n"))
      << text;
  EXPECT_THAT(text, Not(HasSubstr("berry_requests_total{"))) << text;
}

TEST_F(AttemptStatsTest, ARefusedRequestIsCountedWithEmptyLabelsAndLogged) {
  stats_->FinishBadRequest(413, "request body over 1024 bytes", "req-0002");
  EXPECT_THAT(metrics_.registry().Render(),
              HasSubstr("berry_requests_total{backend=\"\",code=\"413\",model=\"\"} 1\n"));
  const std::string line = LogLines();
  EXPECT_THAT(line, HasSubstr(R"("request_id":"req-0002")")) << line;
  EXPECT_THAT(line, HasSubstr(R"("status":413,)")) << line;
  EXPECT_THAT(line, HasSubstr(R"("error":"request body over 1024 bytes")")) << line;
}

}  // namespace
}  // namespace berry::proxy::attempt_stats_test
