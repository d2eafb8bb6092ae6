#include "tests/unit/managed/fake_control_plane.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "google/protobuf/util/time_util.h"

namespace berry::managed::testing {

namespace v1 = berry::v1;

std::unique_ptr<FakeControlPlane> FakeControlPlane::Start(FakeScript script, int port) {
  std::unique_ptr<FakeControlPlane> fake(new FakeControlPlane(std::move(script)));
  grpc::ServerBuilder builder;
  int selected = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &selected);
  builder.RegisterService(fake.get());
  fake->server_ = builder.BuildAndStart();
  if (fake->server_ == nullptr || selected == 0) {
    ADD_FAILURE() << "the fake control plane cannot listen on 127.0.0.1:" << port;
    return nullptr;
  }
  fake->port_ = selected;
  return fake;
}

ClientOptions TestClientOptions(const std::string& target) {
  ClientOptions options;
  options.target = target;
  options.credentials = grpc::InsecureChannelCredentials();
  options.node.set_id("node-1");
  options.initial_backoff = std::chrono::milliseconds(50);
  options.max_backoff = std::chrono::milliseconds(500);
  return options;
}

FakeControlPlane::~FakeControlPlane() {
  if (server_ != nullptr) {
    // A deadline in the past cancels every open stream at once, like a control plane that died.
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
}

std::vector<std::vector<v1::StreamRoutesRequest>> FakeControlPlane::route_streams() const {
  absl::MutexLock lock(&mu_);
  return route_streams_;
}

std::vector<std::vector<v1::StreamLoadReportsRequest>> FakeControlPlane::report_streams() const {
  absl::MutexLock lock(&mu_);
  return report_streams_;
}

std::vector<v1::StreamLoadReportsRequest> FakeControlPlane::reports() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::StreamLoadReportsRequest> all;
  for (const auto& stream : report_streams_) {
    for (const auto& message : stream) {
      if (message.sequence() > 0) {
        all.push_back(message);
      }
    }
  }
  return all;
}

grpc::Status FakeControlPlane::StreamRoutes(
    grpc::ServerContext* /*context*/,
    grpc::ServerReaderWriter<v1::StreamRoutesResponse, v1::StreamRoutesRequest>* stream) {
  size_t index = 0;
  {
    absl::MutexLock lock(&mu_);
    index = route_streams_.size();
    route_streams_.emplace_back();
  }
  v1::StreamRoutesRequest request;
  bool first = true;
  while (stream->Read(&request)) {
    {
      absl::MutexLock lock(&mu_);
      route_streams_[index].push_back(request);
    }
    if (!first) {
      continue;
    }
    first = false;
    int nonce = 0;
    for (v1::StreamRoutesResponse response : script_.route_responses) {
      response.set_nonce(std::to_string(++nonce));
      if (!stream->Write(response)) {
        return grpc::Status::OK;
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status FakeControlPlane::StreamLoadReports(
    grpc::ServerContext* /*context*/,
    grpc::ServerReaderWriter<v1::StreamLoadReportsResponse, v1::StreamLoadReportsRequest>* stream) {
  size_t index = 0;
  {
    absl::MutexLock lock(&mu_);
    index = report_streams_.size();
    report_streams_.emplace_back();
  }
  v1::StreamLoadReportsRequest request;
  while (stream->Read(&request)) {
    v1::StreamLoadReportsResponse response;
    *response.mutable_report_interval() =
        google::protobuf::util::TimeUtil::MillisecondsToDuration(script_.report_interval.count());
    {
      absl::MutexLock lock(&mu_);
      report_streams_[index].push_back(request);
      // Like the real server: the first message (no sequence) only learns the interval.
      if (script_.ack_reports && request.sequence() > 0) {
        highest_sequence_ = std::max(highest_sequence_, request.sequence());
        response.set_acked_sequence(highest_sequence_);
      }
    }
    if (!stream->Write(response)) {
      break;
    }
  }
  return grpc::Status::OK;
}

bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= until) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

int UnusedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    ADD_FAILURE() << "socket() failed";
    return 0;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  } else {
    ADD_FAILURE() << "cannot bind a loopback port";
  }
  ::close(fd);
  return port;
}

}  // namespace berry::managed::testing
