// RouteDiscoveryService, the control plane's side (DESIGN.md, "Control plane ⇄ proxy protocol"):
// every connected proxy holds a StreamRoutes stream on which it receives the full RouteTable
// whenever its content changes, and ACKs or NACKs each one; and a StreamLoadReports stream on which
// it sends per-interval deltas that are folded into fleet statistics.
//
// Threads: gRPC callback API. Reactors run on gRPC's threads; Publish() may be called from any
// thread (config reloads, health changes) and hands the new table to every stream without
// blocking on any of them. Each stream keeps at most one write in flight and only ever queues the
// latest table (state of the world: an older one is never worth sending).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "berry/v1/discovery.grpc.pb.h"

namespace berry::control_plane {

// What the control plane knows about one proxy.
struct NodeStatus {
  std::string node_id;
  std::string address;  // peer of its routes stream
  absl::Time connected_since;
  std::string acked_version;
  std::string nacked_version;
  std::string nack_reason;
  absl::Time last_report_time;
  bool connected = false;
  absl::Time disconnected_since;  // when `connected` last turned false
};

class RouteStream;

// The table every proxy should hold, and who holds what.
class RoutePublisher {
 public:
  // A node whose last stream ended `retention` ago is forgotten (pods come and go under new
  // names; the list must not grow with every one of them). `now` is the clock (tests).
  explicit RoutePublisher(absl::Duration retention = absl::Minutes(10),
                          std::function<absl::Time()> now = &absl::Now)
      : retention_(retention), now_(std::move(now)) {}

  // Sets the table to serve. Returns false (and sends nothing) when its version is the one
  // already published: pushes happen only on a content change.
  bool Publish(std::shared_ptr<const berry::v1::RouteTable> table);
  std::shared_ptr<const berry::v1::RouteTable> Current() const;

  // Every node connected now or within the retention, sorted by id.
  std::vector<NodeStatus> Nodes() const;
  int connected_count() const;

  // Counters for /metrics.
  uint64_t pushes() const;
  uint64_t nacks() const;

  // Called by the streams.
  void Attach(RouteStream* stream);
  void Detach(RouteStream* stream);
  void RecordConnected(const std::string& node_id, const std::string& address);
  void RecordDisconnected(const std::string& node_id);
  void RecordAck(const std::string& node_id, const std::string& version);
  void RecordNack(const std::string& node_id, const std::string& version,
                  const std::string& reason);
  void RecordReport(const std::string& node_id);
  void CountPush();  // lock-free

 private:
  // Drops the nodes gone for longer than the retention.
  void PruneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ExpiredLocked(const NodeStatus& node, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !node.connected && now - node.disconnected_since >= retention_;
  }

  const absl::Duration retention_;
  const std::function<absl::Time()> now_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const berry::v1::RouteTable> current_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<RouteStream*> streams_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, NodeStatus> nodes_ ABSL_GUARDED_BY(mu_);
  // Counted while a stream holds its own lock, so not under mu_ (lock order: publisher, stream).
  std::atomic<uint64_t> pushes_{0};
  uint64_t nacks_ ABSL_GUARDED_BY(mu_) = 0;
};

// Where load reports go: `fold` returns the highest sequence folded for the node (the ack);
// `closed` is told when a node's report stream ends (its in-flight gauge stops counting).
struct ReportSink {
  std::function<uint64_t(const berry::v1::StreamLoadReportsRequest& report,
                         const std::string& node_id)>
      fold;
  std::function<void(const std::string& node_id)> closed;
  // Fleet-wide limits: answers a report's quota account (quota.proto); nullopt = no answer.
  // Optional.
  std::function<std::optional<berry::v1::QuotaGrants>(
      const berry::v1::StreamLoadReportsRequest& report, const std::string& node_id)>
      quota;
};

class DiscoveryService final : public berry::v1::RouteDiscoveryService::CallbackService {
 public:
  DiscoveryService(RoutePublisher& publisher, ReportSink reports,
                   absl::Duration report_interval = absl::Seconds(5));

  grpc::ServerBidiReactor<berry::v1::StreamRoutesRequest, berry::v1::StreamRoutesResponse>*
  StreamRoutes(grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<berry::v1::StreamLoadReportsRequest,
                          berry::v1::StreamLoadReportsResponse>*
  StreamLoadReports(grpc::CallbackServerContext* context) override;

 private:
  RoutePublisher& publisher_;
  ReportSink reports_;
  absl::Duration report_interval_;
};

}  // namespace berry::control_plane
