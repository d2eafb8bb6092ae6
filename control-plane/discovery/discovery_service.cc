#include "control-plane/discovery/discovery_service.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "google/protobuf/util/time_util.h"

namespace berry::control_plane {

namespace v1 = berry::v1;

// Shared shape of both streams: one read and at most one write in flight, further writes
// coalesced into the latest pending message, Finish exactly once, delete in OnDone.
template <typename Request, typename Response>
class StreamBase : public grpc::ServerBidiReactor<Request, Response> {
 protected:
  // Queues `response`, replacing a pending one that has not started yet.
  void Send(Response response) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (finishing_) {
      return;
    }
    pending_ = std::move(response);
    MaybeWriteLocked();
  }

  void FinishOnce(grpc::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (finishing_) {
      return;
    }
    finishing_ = true;
    final_status_ = std::move(status);
    if (!writing_) {
      this->Finish(final_status_);
    }
  }

  void OnWriteDone(bool ok) override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok && !finishing_) {
      finishing_ = true;  // the peer is gone
      final_status_ = grpc::Status::OK;
    }
    if (finishing_) {
      this->Finish(final_status_);
      return;
    }
    MaybeWriteLocked();
  }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || !pending_) {
      return;
    }
    in_flight_ = *std::move(pending_);
    pending_.reset();
    writing_ = true;
    OnStartWrite(in_flight_);
    this->StartWrite(&in_flight_);
  }

 protected:
  // Called (under the lock) just before a message goes out.
  virtual void OnStartWrite(Response&) {}

  absl::Mutex mu_;

 private:
  std::optional<Response> pending_ ABSL_GUARDED_BY(mu_);
  Response in_flight_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

class RouteStream final : public StreamBase<v1::StreamRoutesRequest, v1::StreamRoutesResponse> {
 public:
  RouteStream(RoutePublisher& publisher, grpc::CallbackServerContext* context)
      : publisher_(publisher), peer_(context->peer()) {
    StartRead(&request_);
  }

  // A new table for this proxy (any thread).
  void Offer(const std::shared_ptr<const v1::RouteTable>& table) {
    if (table == nullptr) {
      return;
    }
    v1::StreamRoutesResponse response;
    response.set_version_info(table->version_info());
    *response.mutable_route_table() = *table;
    Send(std::move(response));
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status::OK);  // the proxy closed its side or went away
      return;
    }
    if (node_id_.empty()) {
      if (!request_.has_node() || request_.node().id().empty()) {
        FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the first StreamRoutes message must carry node.id"));
        return;
      }
      node_id_ = request_.node().id();
      publisher_.RecordConnected(node_id_, peer_);
      log::Info("proxy connected",
                {{"node", node_id_}, {"peer", peer_}, {"holds", request_.version_info()}});
      if (!request_.version_info().empty()) {
        // What the proxy serves now (it may be an older table it keeps after a NACK).
        publisher_.RecordAck(node_id_, request_.version_info());
      }
      publisher_.Attach(this);  // sends the current table unless the proxy holds it
    } else if (!request_.response_nonce().empty()) {
      HandleAckOrNack();
    }
    StartRead(&request_);
  }

  void OnDone() override {
    publisher_.Detach(this);
    if (!node_id_.empty()) {
      publisher_.RecordDisconnected(node_id_);
      log::Info("proxy disconnected", {{"node", node_id_}});
    }
    delete this;
  }

  const std::string& node_id() const { return node_id_; }

 private:
  void OnStartWrite(v1::StreamRoutesResponse& outgoing) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // The nonce is stamped here so it is the one the ACK/NACK will echo.
    outgoing.set_nonce(absl::StrCat(++nonce_counter_));
    last_nonce_ = outgoing.nonce();
    last_sent_version_ = outgoing.version_info();
    publisher_.CountPush();
  }

  void HandleAckOrNack() {
    std::string sent_version;
    {
      absl::MutexLock lock(&mu_);
      if (request_.response_nonce() != last_nonce_) {
        return;  // answers a table that has since been superseded
      }
      sent_version = last_sent_version_;
    }
    if (request_.has_error_detail()) {
      publisher_.RecordNack(node_id_, sent_version, request_.error_detail().message());
      log::Warn("proxy rejected a route table", {{"node", node_id_},
                                                 {"version", sent_version},
                                                 {"reason", request_.error_detail().message()},
                                                 {"keeps", request_.version_info()}});
    } else {
      publisher_.RecordAck(node_id_, request_.version_info());
    }
  }

  RoutePublisher& publisher_;
  std::string peer_;
  std::string node_id_;  // set by the first read; reads are serialised
  v1::StreamRoutesRequest request_;
  uint64_t nonce_counter_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_nonce_ ABSL_GUARDED_BY(mu_);
  std::string last_sent_version_ ABSL_GUARDED_BY(mu_);
};

class ReportStream final
    : public StreamBase<v1::StreamLoadReportsRequest, v1::StreamLoadReportsResponse> {
 public:
  ReportStream(RoutePublisher& publisher, const ReportSink& sink, absl::Duration interval)
      : publisher_(publisher), sink_(sink), interval_(interval) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status::OK);
      return;
    }
    if (node_id_.empty()) {
      if (!request_.has_node() || request_.node().id().empty()) {
        FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the first StreamLoadReports message must carry node.id"));
        return;
      }
      node_id_ = request_.node().id();
    }
    v1::StreamLoadReportsResponse response;
    *response.mutable_report_interval() = google::protobuf::util::TimeUtil::MillisecondsToDuration(
        absl::ToInt64Milliseconds(interval_));
    if (request_.sequence() > 0 || request_.backend_stats_size() > 0) {
      response.set_acked_sequence(sink_.fold(request_, node_id_));
      publisher_.RecordReport(node_id_);
      if (sink_.quota) {
        if (std::optional<v1::QuotaGrants> grants = sink_.quota(request_, node_id_)) {
          *response.mutable_quota() = *std::move(grants);
        }
      }
    }
    Send(std::move(response));
    StartRead(&request_);
  }

  void OnDone() override {
    if (!node_id_.empty() && sink_.closed) {
      sink_.closed(node_id_);
    }
    delete this;
  }

 private:
  RoutePublisher& publisher_;
  const ReportSink& sink_;
  absl::Duration interval_;
  std::string node_id_;
  v1::StreamLoadReportsRequest request_;
};

bool RoutePublisher::Publish(std::shared_ptr<const v1::RouteTable> table) {
  absl::MutexLock lock(&mu_);
  if (current_ != nullptr && table != nullptr &&
      current_->version_info() == table->version_info()) {
    return false;
  }
  current_ = std::move(table);
  for (RouteStream* stream : streams_) {
    stream->Offer(current_);
  }
  return true;
}

std::shared_ptr<const v1::RouteTable> RoutePublisher::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

void RoutePublisher::Attach(RouteStream* stream) {
  absl::MutexLock lock(&mu_);
  streams_.insert(stream);
  const auto it = nodes_.find(stream->node_id());
  const bool holds_current = current_ != nullptr && it != nodes_.end() &&
                             it->second.acked_version == current_->version_info();
  if (!holds_current) {
    stream->Offer(current_);
  }
}

void RoutePublisher::Detach(RouteStream* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

void RoutePublisher::RecordConnected(const std::string& node_id, const std::string& address) {
  absl::MutexLock lock(&mu_);
  PruneLocked();
  NodeStatus& node = nodes_[node_id];
  node.node_id = node_id;
  node.address = address;
  node.connected_since = now_();
  node.connected = true;
  // What the node holds now is what it announces on this stream (recorded next), not what an
  // earlier life of it ACKed: a proxy back without its state dir holds nothing.
  node.acked_version.clear();
}

void RoutePublisher::RecordDisconnected(const std::string& node_id) {
  absl::MutexLock lock(&mu_);
  // A node that reconnected already has a newer stream; only its last stream marks it gone.
  bool other_stream = false;
  for (RouteStream* stream : streams_) {
    other_stream |= stream->node_id() == node_id;
  }
  if (!other_stream) {
    if (const auto it = nodes_.find(node_id); it != nodes_.end()) {
      it->second.connected = false;
      it->second.disconnected_since = now_();
    }
  }
  PruneLocked();
}

void RoutePublisher::PruneLocked() {
  const absl::Time now = now_();
  absl::erase_if(nodes_, [&](const auto& entry) { return ExpiredLocked(entry.second, now); });
}

void RoutePublisher::RecordAck(const std::string& node_id, const std::string& version) {
  absl::MutexLock lock(&mu_);
  if (const auto it = nodes_.find(node_id); it != nodes_.end()) {
    it->second.acked_version = version;
  }
}

void RoutePublisher::RecordNack(const std::string& node_id, const std::string& version,
                                const std::string& reason) {
  absl::MutexLock lock(&mu_);
  ++nacks_;
  if (const auto it = nodes_.find(node_id); it != nodes_.end()) {
    it->second.nacked_version = version;
    it->second.nack_reason = reason;
  }
}

void RoutePublisher::RecordReport(const std::string& node_id) {
  absl::MutexLock lock(&mu_);
  if (const auto it = nodes_.find(node_id); it != nodes_.end()) {
    it->second.last_report_time = now_();
  }
}

void RoutePublisher::CountPush() { pushes_.fetch_add(1, std::memory_order_relaxed); }

std::vector<NodeStatus> RoutePublisher::Nodes() const {
  absl::MutexLock lock(&mu_);
  std::vector<NodeStatus> nodes;
  nodes.reserve(nodes_.size());
  const absl::Time now = now_();
  for (const auto& [id, node] : nodes_) {
    if (!ExpiredLocked(node, now)) {
      nodes.push_back(node);
    }
  }
  std::sort(nodes.begin(), nodes.end(),
            [](const NodeStatus& a, const NodeStatus& b) { return a.node_id < b.node_id; });
  return nodes;
}

int RoutePublisher::connected_count() const {
  absl::MutexLock lock(&mu_);
  int count = 0;
  for (const auto& [id, node] : nodes_) {
    count += node.connected ? 1 : 0;
  }
  return count;
}

uint64_t RoutePublisher::pushes() const { return pushes_.load(std::memory_order_relaxed); }

uint64_t RoutePublisher::nacks() const {
  absl::MutexLock lock(&mu_);
  return nacks_;
}

DiscoveryService::DiscoveryService(RoutePublisher& publisher, ReportSink reports,
                                   absl::Duration report_interval)
    : publisher_(publisher), reports_(std::move(reports)), report_interval_(report_interval) {}

grpc::ServerBidiReactor<v1::StreamRoutesRequest, v1::StreamRoutesResponse>*
DiscoveryService::StreamRoutes(grpc::CallbackServerContext* context) {
  return new RouteStream(publisher_, context);
}

grpc::ServerBidiReactor<v1::StreamLoadReportsRequest, v1::StreamLoadReportsResponse>*
DiscoveryService::StreamLoadReports(grpc::CallbackServerContext* /*context*/) {
  return new ReportStream(publisher_, reports_, report_interval_);
}

}  // namespace berry::control_plane
