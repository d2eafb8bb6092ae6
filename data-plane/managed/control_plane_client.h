// Managed mode: a berry-proxy that takes its route tables from berry-control-plane
// (DESIGN.md, "Control plane ⇄ proxy protocol").
//
// RouteSubscriber holds a StreamRoutes stream: it opens with the node and the version it holds,
// applies each table atomically (RouteStore::Apply), ACKs it, or NACKs it with the reason and keeps
// serving the old one; it persists the last good table to --state-dir (mode 0600: it holds keys)
// so a restart without a control plane still serves; it reconnects with jittered, capped
// exponential backoff and never blocks the request path.
//
// LoadReporter holds a StreamLoadReports stream and sends per-backend deltas at the interval the
// server asks for, and at once when a backend was just ejected by this proxy's outlier detector
// or cooled down after an upstream 429 (ReportNudge): such a report carries
// BackendStats.ejected_for / cooldown_for, which the control plane spreads to the whole fleet.
// Every report has a sequence number; reports stay queued until the server acks them, and after a
// reconnect the unacked ones are sent again with the same numbers, so counts are neither lost nor
// double-counted.
//
// Threads: each runs its own thread(s); Start/Stop from main.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "berry/v1/discovery.grpc.pb.h"
#include "data-plane/proxy/load_stats.h"
#include "data-plane/proxy/proxy_metrics.h"
#include "data-plane/proxy/route_store.h"
#include "data-plane/quota/fleet_limits.h"

namespace berry::managed {

struct ClientOptions {
  std::string target;  // host:port of berry-control-plane
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  berry::v1::Node node;
  std::string state_dir;  // empty = no persistence
  std::chrono::milliseconds initial_backoff{250};
  std::chrono::milliseconds max_backoff{15000};
  // A keepalive ping goes out this long after the last one, and the connection is given up
  // (and dialled again) when the ping is not answered within half of it: a control plane
  // behind a path that silently stopped carrying packets is left within 1.5 x this. The
  // control plane permits pings every 10 s, so no less than that.
  std::chrono::seconds keepalive{20};
};

// Builds the channel with keepalive pings (ClientOptions::keepalive).
std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& options);

// Makes `state_dir` ready for PersistTable at start: a missing directory is created (mode 0700;
// missing parents too), and the directory must take a file (a probe file is written and
// removed). FailedPrecondition naming the path and the reason otherwise: not a directory, cannot
// be created, not writable.
absl::Status PrepareStateDir(const std::string& state_dir);

// The last good table in `state_dir`, if any.
absl::StatusOr<berry::v1::RouteTable> LoadPersistedTable(const std::string& state_dir);
// Writes `table` atomically (temp file + fsync + rename), mode 0600.
absl::Status PersistTable(const std::string& state_dir, const berry::v1::RouteTable& table);

// Capped exponential backoff with "equal jitter": the n-th delay is uniform in
// [ceiling/2, ceiling], where the ceiling starts at `initial` and doubles up to `max`. The
// random half spreads a fleet that lost the control plane together; the fixed half keeps a
// stream the server refuses at once from being retried in a tight loop.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max)
      : initial_(initial), max_(max), next_(initial) {}
  // Draws from a per-thread generator seeded from std::random_device.
  std::chrono::milliseconds Next();
  // Draws from `rng` (tests pass a seeded one).
  std::chrono::milliseconds Next(absl::BitGenRef rng);
  void Reset() { next_ = initial_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds next_;
};

// One long-lived stream to the control plane, opened again with backoff whenever it ends, until
// Stop(). Subclasses run one stream in RunStream and must call Stop() in their destructors.
class StreamLoop {
 public:
  virtual ~StreamLoop() = default;
  void Start();
  // Cancels the stream in progress and joins the thread. Idempotent.
  void Stop();

 protected:
  explicit StreamLoop(ClientOptions options) : options_(std::move(options)) {}

  // Runs one stream until it ends; Stop() cancels `context`.
  virtual void RunStream(grpc::ClientContext& context) = 0;
  // Between two streams (after the backoff wait), with mu_ held.
  virtual void BetweenStreamsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {}
  // Waits up to `timeout`; true once Stop() was called.
  bool WaitForStopLocked(std::chrono::milliseconds timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClientOptions options_;
  mutable absl::Mutex mu_;

 private:
  void Run();

  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;
};

class RouteSubscriber final : public StreamLoop {
 public:
  RouteSubscriber(ClientOptions options, std::shared_ptr<grpc::Channel> channel,
                  proxy::RouteStore& routes, proxy::ProxyMetrics& metrics);
  ~RouteSubscriber() override { Stop(); }

  // True from the moment its opening message reached the control plane until the stream ends.
  bool connected() const { return connected_.load(); }

 private:
  void RunStream(grpc::ClientContext& context) override;

  std::unique_ptr<berry::v1::RouteDiscoveryService::Stub> stub_;
  proxy::RouteStore& routes_;
  proxy::ProxyMetrics& metrics_;
  std::atomic<bool> connected_{false};
};

class LoadReporter final : public StreamLoop {
 public:
  LoadReporter(ClientOptions options, std::shared_ptr<grpc::Channel> channel,
               proxy::RouteStore& routes);
  ~LoadReporter() override { Stop(); }

  // Reports queued and not yet acknowledged (tests, metrics).
  size_t pending() const;

  // Managed fleet-wide limits: the reporter also carries `quota`'s accounts (quota.proto) and
  // hands it the grants. Set before Start; must outlive this.
  void set_quota(fleet::QuotaClient* quota) { quota_ = quota; }
  // Sends the quota account now rather than at the next 100 ms tick (a lease ran dry), through
  // the same ReportNudge an ejection uses. Any thread.
  void Wake();

 private:
  void RunStream(grpc::ClientContext& context) override;
  // Keeps turning counters into reports while disconnected.
  void BetweenStreamsLocked() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { CollectLocked(); }
  // Turns the counters into a delta report (nothing when nothing happened).
  void CollectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues a report carrying only the quota account, when there is one to send.
  void CollectQuotaLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::unique_ptr<berry::v1::RouteDiscoveryService::Stub> stub_;
  proxy::RouteStore& routes_;
  std::chrono::milliseconds interval_ ABSL_GUARDED_BY(mu_){5000};
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  std::deque<berry::v1::StreamLoadReportsRequest> unacked_ ABSL_GUARDED_BY(mu_);
  // When each of unacked_ was collected (the same order): a report's `age` when it is written.
  std::deque<std::chrono::steady_clock::time_point> collected_ ABSL_GUARDED_BY(mu_);
  // What has been turned into reports, by backend id: the counters read and their totals then.
  // A backend that leaves the table and comes back gets new counters starting at zero; comparing
  // `counters` tells them apart from the old ones.
  struct Reported {
    const proxy::BackendLoad* counters = nullptr;
    proxy::BackendLoad::Totals totals;
    // The ejection end and local 429 cooldown end (monotonic ns) last reported.
    int64_t ejection_end_ns = 0;
    int64_t cooldown_until_ns = 0;
  };
  absl::flat_hash_map<std::string, Reported> reported_ ABSL_GUARDED_BY(mu_);
  // The counters `reported_` points at (it holds the ids of this one only), kept alive so that
  // no new counters can be allocated at one of their addresses.
  std::shared_ptr<const proxy::LoadStats> reported_load_ ABSL_GUARDED_BY(mu_);
  std::chrono::system_clock::time_point interval_start_ ABSL_GUARDED_BY(mu_);
  fleet::QuotaClient* quota_ = nullptr;
};

}  // namespace berry::managed
