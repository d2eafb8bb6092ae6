// The two load patterns of berry-bench-client. Each run owns a private single-threaded
// io_context and returns once its load is over; call from one thread at a time.
//
//  - RunRate: open-loop, fixed-rate requests over a pool of keep-alive connections (wrk2's
//    model). Latency runs from each request's *scheduled* send time, so a stalled server is not
//    hidden by the client waiting for it (coordinated omission).
//  - RunStream: many concurrent SSE streams, timing each event against the mock upstream's
//    `mock_sent_ns` stamp (same machine, same monotonic clock).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace berry::bench {

// Nanoseconds on std::chrono::steady_clock (CLOCK_MONOTONIC), the clock of every time here.
inline int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct RateOptions {
  boost::asio::ip::tcp::endpoint endpoint;
  std::string request;  // serialized once, written as is for every request
  double rate = 0;      // requests per second
  double duration_s = 0;
  double warmup_s = 1;
  int connections = 1;
  // How long to wait, after the last scheduled send, for responses still outstanding.
  double timeout_s = 60;
};

struct RateResult {
  int64_t requests = 0;  // scheduled in the measured period
  int64_t ok = 0;        // 2xx
  int64_t non2xx = 0;
  int64_t errors = 0;  // transport or protocol errors, and requests unanswered at the timeout
  // Answered requests (ok + non2xx) per second, from the first scheduled send of the measured
  // period to the last answer, or over the measured duration if that is longer.
  double achieved_rps = 0;
  std::vector<int64_t> latencies_ns;  // of the ok responses
  int64_t reconnects = 0;             // attempts to (re)open a connection after the start
  std::string first_error;
};

// UnavailableError when the connection pool cannot be opened.
absl::StatusOr<RateResult> RunRate(const RateOptions& options);

struct StreamOptions {
  boost::asio::ip::tcp::endpoint endpoint;
  std::string request;
  int streams = 1;
  int connect_concurrency = 512;
  // The requests go out spread evenly over this many milliseconds (0: in one burst), so that
  // the streams' events arrive spread out rather than in lockstep.
  int ramp_ms = 0;
  double timeout_s = 60;  // for the whole run
};

struct StreamResult {
  int64_t streams = 0;
  int64_t completed = 0;  // saw data: [DONE]
  int64_t failed = 0;
  int64_t events = 0;              // data events other than [DONE]
  std::vector<int64_t> delays_ns;  // receipt minus mock_sent_ns, per event carrying it
  std::vector<int64_t> ttfe_ns;    // request sent to first event, per stream that got one
  int64_t peak_open = 0;
  double connect_s = 0;  // establishing the connections
  double wall_s = 0;     // start of connecting to the end of the last stream
  std::string first_error;
};

// UnavailableError when not a single connection could be opened.
absl::StatusOr<StreamResult> RunStream(const StreamOptions& options);

}  // namespace berry::bench
