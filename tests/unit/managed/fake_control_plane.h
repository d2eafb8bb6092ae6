// An in-process stand-in for berry-control-plane's RouteDiscoveryService, for unit tests of the
// managed-mode client (RouteSubscriber, LoadReporter). It listens on 127.0.0.1 (port 0 unless a
// test restarts it on the port a previous one had), records every message it receives, stream by
// stream, and plays a script the test fixes when it starts the server:
//   StreamRoutes       after the first request, sends `route_responses` in order (nonces "1",
//                      "2", ...), then only reads.
//   StreamLoadReports  answers every message with `report_interval` and, when `ack_reports`, the
//                      highest sequence received so far on any stream.
// Destroying it is the control plane going away: open streams are cancelled at once.
//
// Threads: the gRPC server's own threads run the handlers; the accessors may be called from any
// thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "berry/v1/discovery.grpc.pb.h"
#include "data-plane/managed/control_plane_client.h"

namespace berry::managed::testing {

struct FakeScript {
  std::vector<berry::v1::StreamRoutesResponse> route_responses;
  std::chrono::milliseconds report_interval{100};
  bool ack_reports = true;
};

class FakeControlPlane final : public berry::v1::RouteDiscoveryService::Service {
 public:
  // Null (with a test failure) when it cannot listen. `port` 0 picks a free one.
  static std::unique_ptr<FakeControlPlane> Start(FakeScript script, int port = 0);
  ~FakeControlPlane() override;

  int port() const { return port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

  // Messages received, one vector per stream in the order the streams opened.
  std::vector<std::vector<berry::v1::StreamRoutesRequest>> route_streams() const;
  std::vector<std::vector<berry::v1::StreamLoadReportsRequest>> report_streams() const;
  // Every load report received (messages with a sequence), in order, across streams.
  std::vector<berry::v1::StreamLoadReportsRequest> reports() const;

  grpc::Status StreamRoutes(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<berry::v1::StreamRoutesResponse, berry::v1::StreamRoutesRequest>*
          stream) override;
  grpc::Status StreamLoadReports(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<berry::v1::StreamLoadReportsResponse,
                               berry::v1::StreamLoadReportsRequest>* stream) override;

 private:
  explicit FakeControlPlane(FakeScript script) : script_(std::move(script)) {}

  const FakeScript script_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  mutable absl::Mutex mu_;
  std::vector<std::vector<berry::v1::StreamRoutesRequest>> route_streams_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<berry::v1::StreamLoadReportsRequest>> report_streams_
      ABSL_GUARDED_BY(mu_);
  uint64_t highest_sequence_ ABSL_GUARDED_BY(mu_) = 0;
};

// Polls `condition` every 10 ms until it holds or `timeout` passes; true if it held.
bool WaitUntil(const std::function<bool()>& condition,
               std::chrono::milliseconds timeout = std::chrono::seconds(20));

// What a managed client under test is given: `target` in plaintext, node "node-1", and backoffs
// of 50 ms to 500 ms so that reconnects happen within a test.
ClientOptions TestClientOptions(const std::string& target);

// A loopback port nothing listens on (bound once, then released).
int UnusedPort();

}  // namespace berry::managed::testing
