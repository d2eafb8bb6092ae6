// Open-loop, fixed-rate load: request i is due at start + i/rate whatever the server does. Due
// requests wait in a FIFO (just the index range [next_, due_)) for a free connection, and
// latency runs from the due time, so queueing behind a slow server shows up in the figures.
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "bench/bench_client_http.h"
#include "bench/bench_client_load.h"

namespace berry::bench {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using boost::system::error_code;

constexpr size_t kReadBuffer = 16 << 10;
// Between attempts to reopen a connection the server refused.
constexpr auto kReconnectDelay = std::chrono::milliseconds(20);

std::chrono::steady_clock::time_point AsTimePoint(int64_t ns) {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns));
}

std::string EndpointText(const tcp::endpoint& endpoint) {
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

class RateRun {
 public:
  explicit RateRun(const RateOptions& options)
      : options_(options),
        interval_ns_(1e9 / options.rate),
        warmup_requests_(static_cast<int64_t>(std::llround(options.warmup_s * options.rate))),
        measured_requests_(static_cast<int64_t>(std::llround(options.duration_s * options.rate))),
        total_requests_(warmup_requests_ + measured_requests_) {}

  absl::StatusOr<RateResult> Run();

 private:
  struct Connection {
    explicit Connection(net::io_context& io)
        : socket(io), retry(io), decoder(kReadBuffer, /*keep_body=*/false) {}
    tcp::socket socket;
    net::steady_timer retry;
    ResponseDecoder decoder;
    // Bumped whenever the socket is closed, so completions for the old socket are ignored.
    uint64_t generation = 0;
    int64_t request = -1;  // the request in flight, -1 when none
    bool idle = false;     // listed in idle_
  };

  int64_t ScheduledNs(int64_t index) const {
    return start_ns_ + static_cast<int64_t>(static_cast<double>(index) * interval_ns_);
  }
  bool Measured(int64_t index) const { return index >= warmup_requests_; }

  void Tick();
  void Release(Connection& c);
  void Send(Connection& c, int64_t index);
  void Read(Connection& c);
  void OnRead(Connection& c, const error_code& ec, size_t n);
  void Answered(Connection& c, int64_t now_ns);
  void Broken(Connection& c, std::string_view what);
  void Reconnect(Connection& c);
  void MaybeFinish();

  const RateOptions& options_;
  const double interval_ns_;
  const int64_t warmup_requests_;
  const int64_t measured_requests_;
  const int64_t total_requests_;
  // Declared before everything holding I/O objects, so it is destroyed after them.
  net::io_context io_{1};
  net::steady_timer tick_{io_};
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<Connection*> idle_;
  int64_t start_ns_ = 0;
  int64_t next_ = 0;  // the next request to send
  int64_t due_ = 0;   // requests whose scheduled time has come
  int64_t measured_done_ = 0;
  int64_t last_answer_ns_ = 0;
  std::string connect_error_;
  RateResult result_;
  bool finished_ = false;
};

absl::StatusOr<RateResult> RateRun::Run() {
  // Open the whole pool up front (loopback connects are immediate): a run that cannot even do
  // that would measure nothing meaningful.
  connections_.reserve(static_cast<size_t>(options_.connections));
  for (int i = 0; i < options_.connections; ++i) {
    auto c = std::make_unique<Connection>(io_);
    error_code ec;
    c->socket.connect(options_.endpoint, ec);
    if (!ec) {
      c->socket.set_option(tcp::no_delay(true), ec);
    }
    if (ec) {
      return absl::UnavailableError("connect to " + EndpointText(options_.endpoint) + ": " +
                                    ec.message());
    }
    connections_.push_back(std::move(c));
  }
  result_.requests = measured_requests_;
  result_.latencies_ns.reserve(static_cast<size_t>(measured_requests_));
  idle_.reserve(connections_.size());
  for (auto& c : connections_) {
    c->idle = true;
    idle_.push_back(c.get());
    Read(*c);
  }
  start_ns_ = SteadyNowNs();
  Tick();
  io_.run();

  if (const int64_t unanswered = measured_requests_ - measured_done_; unanswered > 0) {
    result_.errors += unanswered;
    if (result_.first_error.empty()) {
      result_.first_error = "no response within --timeout-s";
      if (!connect_error_.empty()) {
        result_.first_error += "; reconnect: " + connect_error_;
      }
    }
  }
  // Over at least the measured period, so answers that stopped coming early show as a shortfall.
  const int64_t measured_start_ns = ScheduledNs(warmup_requests_);
  const double span_ns =
      std::max(options_.duration_s * 1e9, static_cast<double>(last_answer_ns_ - measured_start_ns));
  result_.achieved_rps = static_cast<double>(result_.ok + result_.non2xx) * 1e9 / span_ns;
  return std::move(result_);
}

void RateRun::Tick() {
  if (finished_) {
    return;
  }
  const int64_t now = SteadyNowNs();
  while (due_ < total_requests_ && ScheduledNs(due_) <= now) {
    ++due_;
  }
  while (next_ < due_ && !idle_.empty()) {
    Connection* c = idle_.back();
    idle_.pop_back();
    c->idle = false;
    Send(*c, next_++);
  }
  if (due_ < total_requests_) {
    tick_.expires_at(AsTimePoint(ScheduledNs(due_)));
    tick_.async_wait([this](const error_code& ec) {
      if (!ec) {
        Tick();
      }
    });
    return;
  }
  // Everything is sent or queued; answers still outstanding get until the timeout.
  tick_.expires_at(AsTimePoint(ScheduledNs(total_requests_ - 1)) +
                   std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::duration<double>(options_.timeout_s)));
  tick_.async_wait([this](const error_code& ec) {
    if (!ec) {
      finished_ = true;
      io_.stop();
    }
  });
}

void RateRun::Release(Connection& c) {
  if (next_ < due_) {
    Send(c, next_++);
  } else {
    c.idle = true;
    idle_.push_back(&c);
  }
}

void RateRun::Send(Connection& c, int64_t index) {
  c.request = index;
  net::async_write(c.socket, net::buffer(options_.request),
                   [this, &c, generation = c.generation](const error_code& ec, size_t) {
                     if (ec && generation == c.generation && !finished_) {
                       Broken(c, "write: " + ec.message());
                     }
                   });
}

void RateRun::Read(Connection& c) {
  const std::span<char> space = c.decoder.ReadSpace();
  if (space.empty()) {
    Broken(c, c.decoder.error());
    return;
  }
  c.socket.async_read_some(net::buffer(space.data(), space.size()),
                           [this, &c, generation = c.generation](const error_code& ec, size_t n) {
                             if (generation == c.generation && !finished_) {
                               OnRead(c, ec, n);
                             }
                           });
}

void RateRun::OnRead(Connection& c, const error_code& ec, size_t n) {
  const int64_t now = SteadyNowNs();
  ResponseDecoder::Step step;
  if (ec == net::error::eof) {
    if (c.request < 0 && c.decoder.idle()) {
      // The server closed a keep-alive connection between requests: just reopen it.
      Reconnect(c);
      return;
    }
    step = c.decoder.Eof();
  } else if (ec) {
    Broken(c, "read: " + ec.message());
    return;
  } else {
    c.decoder.Commit(n);
    if (c.request < 0) {
      Broken(c, "bytes from the server with no request outstanding");
      return;
    }
    step = c.decoder.Decode();
    if (step == ResponseDecoder::Step::kHead) {
      step = c.decoder.Decode();
    }
  }
  switch (step) {
    case ResponseDecoder::Step::kNeedMore:
      if (ec) {
        Broken(c, c.decoder.error());
      } else {
        Read(c);
      }
      return;
    case ResponseDecoder::Step::kDone:
      Answered(c, now);
      return;
    case ResponseDecoder::Step::kHead:
    case ResponseDecoder::Step::kError:
      Broken(c, c.decoder.error());
      return;
  }
}

void RateRun::Answered(Connection& c, int64_t now_ns) {
  const int64_t index = c.request;
  c.request = -1;
  if (Measured(index)) {
    ++measured_done_;
    last_answer_ns_ = now_ns;
    if (const int status = c.decoder.head().status; status >= 200 && status < 300) {
      ++result_.ok;
      result_.latencies_ns.push_back(now_ns - ScheduledNs(index));
    } else {
      ++result_.non2xx;
    }
  }
  if (c.decoder.head().keep_alive && !c.decoder.has_unparsed_bytes()) {
    c.decoder.Next();
    Read(c);
    Release(c);
  } else {
    Reconnect(c);
  }
  MaybeFinish();
}

void RateRun::Broken(Connection& c, std::string_view what) {
  if (const int64_t index = c.request; index >= 0) {
    c.request = -1;
    if (Measured(index)) {
      ++measured_done_;
      ++result_.errors;
      if (result_.first_error.empty()) {
        result_.first_error = std::string(what);
      }
    }
  }
  Reconnect(c);
  MaybeFinish();
}

void RateRun::Reconnect(Connection& c) {
  ++c.generation;
  error_code ignored;
  c.socket.close(ignored);
  c.decoder.Clear();
  c.request = -1;
  if (c.idle) {
    c.idle = false;
    std::erase(idle_, &c);
  }
  ++result_.reconnects;
  c.socket.async_connect(options_.endpoint,
                         [this, &c, generation = c.generation](const error_code& ec) {
                           if (generation != c.generation || finished_) {
                             return;
                           }
                           if (ec) {
                             connect_error_ = ec.message();
                             c.retry.expires_after(kReconnectDelay);
                             c.retry.async_wait([this, &c, generation](const error_code& wait_ec) {
                               if (!wait_ec && generation == c.generation && !finished_) {
                                 Reconnect(c);
                               }
                             });
                             return;
                           }
                           error_code nodelay_ec;
                           c.socket.set_option(tcp::no_delay(true), nodelay_ec);
                           Read(c);
                           Release(c);
                         });
}

void RateRun::MaybeFinish() {
  if (measured_done_ == measured_requests_ && !finished_) {
    finished_ = true;
    io_.stop();
  }
}

}  // namespace

absl::StatusOr<RateResult> RunRate(const RateOptions& options) {
  RateRun run(options);
  return run.Run();
}

}  // namespace berry::bench
