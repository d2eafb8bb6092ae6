// A TCP load balancer for fault tests, on 127.0.0.1: what a Kubernetes Service is in front of
// berry-proxy pods (a new connection goes to one ready target, round robin; a target is probed
// every `probe_every` and is ready from its first 200 until three probes in a row fail, as a
// readiness probe with failureThreshold 3), and what the network is between a proxy and its
// control plane (one target, no probe).
//
// Blackhole(true) is a path that silently stopped carrying packets: no byte moves in either
// direction on any connection, open or new, and nothing is closed (no FIN, no RST); the bytes
// already read are held, and TCP's own backpressure holds the rest. Blackhole(false) lets
// everything through again, as TCP retransmission would.
//
// A connection whose target refuses the connect is tried on the next ready target (as
// haproxy's redispatch does); when no target takes it, it is closed (counted in unserved()).
//
// Threads: one event-loop thread and one prober thread of its own; every method may be called
// from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace berry::test_support {

class TcpBalancer {
 public:
  struct Target {
    uint16_t port = 0;        // on 127.0.0.1
    std::string ready_path;  // e.g. "/readyz"; empty = always ready
  };

  static absl::StatusOr<std::unique_ptr<TcpBalancer>> Start(
      std::vector<Target> targets,
      std::chrono::milliseconds probe_every = std::chrono::milliseconds(100));
  TcpBalancer(const TcpBalancer&) = delete;
  TcpBalancer& operator=(const TcpBalancer&) = delete;
  // Closes the listener and every connection.
  ~TcpBalancer();

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  std::string url() const;      // "http://127.0.0.1:PORT"

  // Points target `index` elsewhere (a restarted process on a new port); not ready until its
  // probe says so. Connections already relayed stay where they are.
  void SetTarget(size_t index, Target target);
  // Whether target `index` is in rotation (always true without a ready path).
  bool ready(size_t index) const;
  void Blackhole(bool on);

  uint64_t connections() const { return connections_.load(); }  // accepted
  uint64_t unserved() const { return unserved_.load(); }        // closed: no target took them

 private:
  struct State;
  TcpBalancer() = default;
  void Probe();

  uint16_t port_ = 0;
  std::chrono::milliseconds probe_every_{100};
  std::shared_ptr<State> state_;  // the event loop's side
  mutable absl::Mutex mu_;
  std::vector<Target> targets_ ABSL_GUARDED_BY(mu_);
  static constexpr int kFailureThreshold = 3;
  std::vector<bool> ready_ ABSL_GUARDED_BY(mu_);
  std::vector<int> failures_ ABSL_GUARDED_BY(mu_);  // probes failed in a row
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> blackhole_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> unserved_{0};
  std::thread loop_;
  std::thread prober_;

  friend struct TcpBalancerAccess;
};

}  // namespace berry::test_support
