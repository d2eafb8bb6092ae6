#include "data-plane/managed/control_plane_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "common/metrics/metrics.h"
#include "common/route_table/compile.h"
#include "common/strings/views.h"
#include "data-plane/proxy/clock.h"
#include "google/protobuf/util/time_util.h"

namespace berry::managed {
namespace {

namespace v1 = berry::v1;
using google::protobuf::util::TimeUtil;

constexpr char kTableFile[] = "route_table.pb";

}  // namespace

std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& options) {
  grpc::ChannelArguments args;
  const int keepalive_ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(options.keepalive).count());
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, keepalive_ms / 2);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Our own backoff drives reconnects; keep gRPC's from stacking minutes on top of it.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options.max_backoff.count()));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(options.initial_backoff.count()));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(options.initial_backoff.count()));
  return grpc::CreateCustomChannel(options.target, options.credentials, args);
}

absl::Status PrepareStateDir(const std::string& state_dir) {
  std::error_code ec;
  const std::filesystem::path dir(state_dir);
  if (!std::filesystem::exists(dir, ec)) {
    if (dir.has_parent_path() && !dir.parent_path().empty()) {
      std::filesystem::create_directories(dir.parent_path(), ec);
    }
    if (::mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create ", state_dir, ": ", std::strerror(errno)));
    }
  }
  struct stat st {};
  if (::stat(state_dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot use ", state_dir, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(state_dir, " is not a directory"));
  }
  // access(2) says yes to root for any mode; only writing tells.
  std::string probe = absl::StrCat(state_dir, "/.berry-write-test-XXXXXX");
  const int fd = ::mkstemp(probe.data());
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write to ", state_dir, ": ", std::strerror(errno)));
  }
  ::close(fd);
  ::unlink(probe.c_str());
  return absl::OkStatus();
}

absl::StatusOr<v1::RouteTable> LoadPersistedTable(const std::string& state_dir) {
  const std::string path = absl::StrCat(state_dir, "/", kTableFile);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("no persisted route table at ", path));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  v1::RouteTable table;
  if (!table.ParseFromString(buffer.str())) {
    return absl::DataLossError(absl::StrCat(path, " is not a route table"));
  }
  if (route_table::ComputeVersion(table) != table.version_info()) {
    return absl::DataLossError(absl::StrCat(path, " is damaged: its content hash does not match"));
  }
  return table;
}

absl::Status PersistTable(const std::string& state_dir, const v1::RouteTable& table) {
  const std::string path = absl::StrCat(state_dir, "/", kTableFile);
  const std::string temp = absl::StrCat(path, ".tmp");
  const std::string bytes = table.SerializeAsString();
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot write ", temp, ": ", std::strerror(errno)));
  }
  ::fchmod(fd, 0600);  // an existing file keeps its mode through O_CREAT
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n <= 0) {
      ::close(fd);
      return absl::UnavailableError(
          absl::StrCat("cannot write ", temp, ": ", std::strerror(errno)));
    }
    written += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot replace ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::chrono::milliseconds Backoff::Next() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return Next(rng);
}

std::chrono::milliseconds Backoff::Next(absl::BitGenRef rng) {
  const auto ceiling = next_;
  next_ = std::min(max_, next_ * 2);
  // Jitter: a fleet that lost the control plane together does not return in lock-step.
  std::uniform_int_distribution<int64_t> jitter(ceiling.count() / 2, ceiling.count());
  return std::chrono::milliseconds(jitter(rng));
}

void StreamLoop::Start() {
  thread_ = std::thread([this] { Run(); });
}

void StreamLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (context_ != nullptr) {
      context_->TryCancel();
    }
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

bool StreamLoop::WaitForStopLocked(std::chrono::milliseconds timeout) {
  return mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::FromChrono(timeout));
}

void StreamLoop::Run() {
  Backoff backoff(options_.initial_backoff, options_.max_backoff);
  for (;;) {
    grpc::ClientContext context;
    // Wait for the channel instead of failing fast: a call made while the channel is between
    // connection attempts would fail at once and put our backoff on top of gRPC's, so a proxy
    // started before its control plane took seconds to notice it had come up. Stop() cancels.
    context.set_wait_for_ready(true);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        return;
      }
      context_ = &context;
    }
    const auto started = std::chrono::steady_clock::now();
    RunStream(context);
    {
      absl::MutexLock lock(&mu_);
      context_ = nullptr;
    }
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(30)) {
      backoff.Reset();  // the stream was healthy for a while: reconnect quickly
    }
    absl::MutexLock lock(&mu_);
    if (WaitForStopLocked(backoff.Next())) {
      return;
    }
    BetweenStreamsLocked();
  }
}

RouteSubscriber::RouteSubscriber(ClientOptions options, std::shared_ptr<grpc::Channel> channel,
                                 proxy::RouteStore& routes, proxy::ProxyMetrics& metrics)
    : StreamLoop(std::move(options)),
      stub_(v1::RouteDiscoveryService::NewStub(std::move(channel))),
      routes_(routes),
      metrics_(metrics) {}

void RouteSubscriber::RunStream(grpc::ClientContext& context) {
  auto stream = stub_->StreamRoutes(&context);
  v1::StreamRoutesRequest hello;
  *hello.mutable_node() = options_.node;
  if (const auto current = routes_.Current()) {
    hello.set_version_info(current->version());
  }
  v1::StreamRoutesResponse response;
  if (stream->Write(hello)) {
    // The stream is up once the hello went out on a ready channel. Waiting for a first table
    // instead left a proxy that already serves the current one (restarted from --state-dir, or
    // reconnecting while the control plane stayed up) "not connected" for good: the control
    // plane sends nothing to a proxy that holds its current table.
    if (!connected_.exchange(true)) {
      log::Info("connected to the control plane", {{"target", options_.target}});
    }
    while (stream->Read(&response)) {
      v1::StreamRoutesRequest reply;
      reply.set_response_nonce(response.nonce());
      v1::RouteTable table = std::move(*response.mutable_route_table());
      absl::Status status = absl::OkStatus();
      if (route_table::ComputeVersion(table) != response.version_info()) {
        status = absl::DataLossError("version_info does not match the table's content");
      } else {
        status = routes_.Apply(table);
      }
      if (status.ok()) {
        metrics_.route_table_reloads_ok->Increment();
        reply.set_version_info(response.version_info());
        log::Info("route table applied", {{"version", response.version_info()}});
        if (!options_.state_dir.empty()) {
          if (absl::Status persisted = PersistTable(options_.state_dir, table); !persisted.ok()) {
            log::Warn("cannot persist the route table",
                      {{"error", strings::Std(persisted.message())}});
          }
        }
      } else {
        metrics_.route_table_reloads_failed->Increment();
        if (const auto current = routes_.Current()) {
          reply.set_version_info(current->version());
        }
        reply.mutable_error_detail()->set_code(static_cast<int32_t>(status.code()));
        reply.mutable_error_detail()->set_message(std::string(strings::Std(status.message())));
        log::Error(
            "route table rejected; the current one stays in force",
            {{"version", response.version_info()}, {"reason", strings::Std(status.message())}});
      }
      if (!stream->Write(reply)) {
        break;
      }
    }
  }
  const grpc::Status status = stream->Finish();
  if (status.error_code() == grpc::StatusCode::CANCELLED) {
    connected_ = false;
    return;  // Stop()
  }
  if (connected_.exchange(false) || !status.ok()) {
    log::Warn("control plane stream ended; serving the last table and reconnecting",
              {{"target", options_.target}, {"status", status.error_message()}});
  }
}

LoadReporter::LoadReporter(ClientOptions options, std::shared_ptr<grpc::Channel> channel,
                           proxy::RouteStore& routes)
    : StreamLoop(std::move(options)),
      stub_(v1::RouteDiscoveryService::NewStub(std::move(channel))),
      routes_(routes),
      interval_start_(std::chrono::system_clock::now()) {}

size_t LoadReporter::pending() const {
  absl::MutexLock lock(&mu_);
  return unacked_.size();
}

void LoadReporter::CollectLocked() {
  const auto generation = routes_.Current();
  if (generation == nullptr) {
    return;
  }
  const auto now = std::chrono::system_clock::now();
  v1::StreamLoadReportsRequest report;
  const auto fill_histogram = [](v1::LatencyHistogram* out, const auto& counts,
                                 const auto& previous_counts, double sum, double previous_sum) {
    for (const double bound : metrics::kLatencyBuckets) {
      out->add_bounds(bound);
    }
    uint64_t total = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      const uint64_t delta = counts[i] - previous_counts[i];
      out->add_counts(delta);
      total += delta;
    }
    out->set_count(total);
    out->set_sum(sum - previous_sum);
  };
  absl::flat_hash_map<std::string, Reported> next_reported;
  const int64_t now_ns = proxy::Clock::System().MonotonicNs();
  for (uint32_t i = 0; i < generation->load->size(); ++i) {
    const std::string& id = generation->load->id(i);
    const proxy::BackendLoad& counters = generation->load->backend(i);
    const proxy::BackendLoad::Totals totals = counters.Read();
    Reported& entry = next_reported[id];
    if (const auto it = reported_.find(id);
        it != reported_.end() && it->second.counters == &counters) {
      entry = it->second;
    } else {
      entry.counters = &counters;  // new counters, from zero: a new backend or one that came back
    }
    proxy::BackendLoad::Totals& previous = entry.totals;
    const uint32_t in_flight = generation->runtime->backend(i).in_flight();
    // A new ejection or 429 cooldown of this proxy's own: reported with the time it still runs.
    const int64_t ejection_end = generation->outliers->state().backend(i).ejection_end_ns();
    const int64_t cooldown_until = counters.cooldown_until_ns();
    const bool new_ejection = ejection_end > now_ns && ejection_end != entry.ejection_end_ns;
    const bool new_cooldown = cooldown_until > now_ns && cooldown_until != entry.cooldown_until_ns;
    entry.ejection_end_ns = ejection_end;
    entry.cooldown_until_ns = cooldown_until;
    if (!new_ejection && !new_cooldown && in_flight == 0 &&
        static_cast<const load_report::AttemptCounts&>(totals) == previous &&
        totals.latency_sum == previous.latency_sum && totals.ttfb_sum == previous.ttfb_sum) {
      continue;
    }
    v1::BackendStats* stats = report.add_backend_stats();
    stats->set_backend_id(id);
    totals.WriteDelta(previous, *stats);
    stats->set_in_flight(in_flight);
    if (new_ejection) {
      *stats->mutable_ejected_for() = TimeUtil::NanosecondsToDuration(ejection_end - now_ns);
    }
    if (new_cooldown) {
      *stats->mutable_cooldown_for() = TimeUtil::NanosecondsToDuration(cooldown_until - now_ns);
    }
    fill_histogram(stats->mutable_latency(), totals.latency_counts, previous.latency_counts,
                   totals.latency_sum, previous.latency_sum);
    fill_histogram(stats->mutable_ttfb(), totals.ttfb_counts, previous.ttfb_counts, totals.ttfb_sum,
                   previous.ttfb_sum);
    previous = totals;
  }
  // Backends that left the table are forgotten (what they did since the last report is lost with
  // their counters).
  reported_ = std::move(next_reported);
  reported_load_ = generation->load;
  if (report.backend_stats_size() == 0) {
    interval_start_ = now;
    return;
  }
  *report.mutable_node() = options_.node;
  report.set_sequence(next_sequence_++);
  *report.mutable_interval_start() =
      TimeUtil::TimeTToTimestamp(std::chrono::system_clock::to_time_t(interval_start_));
  *report.mutable_interval() = TimeUtil::MillisecondsToDuration(
      std::chrono::duration_cast<std::chrono::milliseconds>(now - interval_start_).count());
  interval_start_ = now;
  unacked_.push_back(std::move(report));
  collected_.push_back(std::chrono::steady_clock::now());
}

void LoadReporter::Wake() {
  // One way to wake the loop: the nudge the request path uses for ejections and cooldowns. A
  // lease runs dry only on a request, so there is a table (and a nudge) by then.
  if (const auto generation = routes_.Current()) {
    generation->load->nudge().Nudge();
  }
}

void LoadReporter::CollectQuotaLocked() {
  std::optional<v1::QuotaReport> account =
      quota_->Collect(proxy::Clock::System().MonotonicNs(), /*connected=*/true);
  if (!account.has_value()) {
    return;
  }
  v1::StreamLoadReportsRequest report;
  *report.mutable_node() = options_.node;
  report.set_sequence(next_sequence_++);
  *report.mutable_interval_start() =
      TimeUtil::TimeTToTimestamp(std::chrono::system_clock::to_time_t(interval_start_));
  *report.mutable_quota() = *std::move(account);
  unacked_.push_back(std::move(report));
  collected_.push_back(std::chrono::steady_clock::now());
}

void LoadReporter::RunStream(grpc::ClientContext& context) {
  auto stream = stub_->StreamLoadReports(&context);
  v1::StreamLoadReportsRequest hello;
  *hello.mutable_node() = options_.node;
  bool alive = stream->Write(hello);
  // Acks and interval changes arrive on their own thread; writes happen here.
  bool read_side_ended = false;  // guarded by mu_
  std::thread reader([&] {
    v1::StreamLoadReportsResponse response;
    while (stream->Read(&response)) {
      if (quota_ != nullptr && response.has_quota()) {
        quota_->OnAnswer(response.quota(), proxy::Clock::System().MonotonicNs());
      }
      absl::MutexLock lock(&mu_);
      if (response.has_report_interval()) {
        const int64_t ms = TimeUtil::DurationToMilliseconds(response.report_interval());
        interval_ = std::chrono::milliseconds(std::max<int64_t>(ms, 100));
      }
      while (!unacked_.empty() && unacked_.front().sequence() <= response.acked_sequence()) {
        unacked_.pop_front();
        collected_.pop_front();
      }
    }
    absl::MutexLock lock(&mu_);
    read_side_ended = true;
  });
  uint64_t sent_up_to = 0;  // the highest sequence written on this stream
  auto last_collect = std::chrono::steady_clock::now();
  uint64_t seen_nudges = 0;
  while (alive) {
    std::vector<v1::StreamLoadReportsRequest> to_send;
    // Short waits, so an interval the server changes (its first answer) applies at once; a nudge
    // (an ejection, a 429 cooldown or a dry lease on the request path) ends the wait and is
    // reported now.
    bool nudged = false;
    std::chrono::milliseconds wait{100};
    if (const auto generation = routes_.Current()) {
      const uint64_t count = generation->load->nudge().Wait(seen_nudges, absl::Milliseconds(100));
      nudged = count != seen_nudges;
      seen_nudges = count;
      wait = std::chrono::milliseconds(0);
    }
    {
      absl::MutexLock lock(&mu_);
      // Quota accounts go out within 100 ms, at once when a lease ran dry (Wake() nudges).
      if (WaitForStopLocked(std::min(interval_, wait))) {
        break;
      }
      // The server ended the stream (it went away or restarted). Reconnect now, not at the next
      // failed write: with no new traffic there may be no next write, and the reports it never
      // acknowledged would wait on a dead stream instead of being sent again.
      if (read_side_ended) {
        break;
      }
      const auto now = std::chrono::steady_clock::now();
      if (nudged || now - last_collect >= interval_) {
        last_collect = now;
        CollectLocked();
      }
      if (quota_ != nullptr) {
        CollectQuotaLocked();
      }
      for (size_t i = 0; i < unacked_.size(); ++i) {
        if (unacked_[i].sequence() > sent_up_to) {
          to_send.push_back(unacked_[i]);
          const auto age = std::max(std::chrono::steady_clock::duration::zero(),
                                    std::chrono::steady_clock::now() - collected_[i]);
          *to_send.back().mutable_age() = TimeUtil::NanosecondsToDuration(
              std::chrono::duration_cast<std::chrono::nanoseconds>(age).count());
        }
      }
    }
    for (const auto& report : to_send) {
      if (!stream->Write(report)) {
        alive = false;
        break;
      }
      sent_up_to = report.sequence();
    }
  }
  context.TryCancel();
  reader.join();
  stream->Finish();
  if (quota_ != nullptr) {
    quota_->OnStreamLost();
  }
}

}  // namespace berry::managed
