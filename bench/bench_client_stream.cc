// Many concurrent SSE streams: connect them all (a bounded number of connects in flight), send
// every request in one burst, then read. Each read is stamped once and every event it completes
// is timed against that stamp; events are scanned where they lie in the connection's buffer.
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "bench/bench_client_http.h"
#include "bench/bench_client_load.h"
#include "common/http/sse.h"

namespace berry::bench {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using boost::system::error_code;

// Per stream; grows only for an event (or head) that does not fit.
constexpr size_t kReadBuffer = 4 << 10;

class StreamRun {
 public:
  explicit StreamRun(const StreamOptions& options) : options_(options) {}

  absl::StatusOr<StreamResult> Run();

 private:
  struct Stream {
    explicit Stream(net::io_context& io) : socket(io), decoder(kReadBuffer, /*keep_body=*/true) {}
    tcp::socket socket;
    ResponseDecoder decoder;
    sse::SseEventSplitter events;
    int64_t sent_ns = 0;
    bool connected = false;
    bool sent = false;
    bool got_event = false;
    bool done_seen = false;
    bool counted = false;  // completed or failed
    bool closed = false;
  };

  void ConnectNext();
  void OnConnected(Stream& s, const error_code& ec);
  void SendAll();
  void Send(Stream& s);
  void SendDue();
  void Read(Stream& s);
  void OnRead(Stream& s, const error_code& ec, size_t n);
  // Feeds the body decoded so far to the stream's event splitter and counts what it completes.
  void ScanEvents(Stream& s, int64_t now_ns);
  void Complete(Stream& s, int64_t now_ns);
  void Fail(Stream& s, std::string_view why);
  void Close(Stream& s);
  void Counted(int64_t now_ns);
  void OnTimeout();
  void Finish(int64_t now_ns);

  const StreamOptions& options_;
  // Declared before everything holding I/O objects, so it is destroyed after them.
  net::io_context io_{1};
  net::steady_timer deadline_{io_};
  net::steady_timer ramp_{io_};
  size_t next_send_ = 0;
  std::vector<std::unique_ptr<Stream>> streams_;
  size_t next_connect_ = 0;
  size_t connects_done_ = 0;
  int64_t connected_ = 0;
  int64_t open_ = 0;
  int64_t counted_ = 0;
  int64_t start_ns_ = 0;
  int64_t connected_ns_ = 0;
  int64_t end_ns_ = 0;
  StreamResult result_;
  bool finished_ = false;
};

absl::StatusOr<StreamResult> StreamRun::Run() {
  const auto n = static_cast<size_t>(options_.streams);
  result_.streams = options_.streams;
  streams_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    streams_.push_back(std::make_unique<Stream>(io_));
  }
  result_.ttfe_ns.reserve(n);
  result_.delays_ns.reserve(n * 16);

  start_ns_ = SteadyNowNs();
  deadline_.expires_after(std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(options_.timeout_s)));
  deadline_.async_wait([this](const error_code& ec) {
    if (!ec) {
      OnTimeout();
    }
  });
  const size_t first_wave = std::min(n, static_cast<size_t>(options_.connect_concurrency));
  for (size_t i = 0; i < first_wave; ++i) {
    ConnectNext();
  }
  io_.run();

  if (connected_ == 0) {
    return absl::UnavailableError("no connection to " + options_.endpoint.address().to_string() +
                                  ":" + std::to_string(options_.endpoint.port()) +
                                  " was opened; first error: " + result_.first_error);
  }
  if (connected_ns_ == 0) {
    connected_ns_ = end_ns_;
  }
  result_.connect_s = static_cast<double>(connected_ns_ - start_ns_) / 1e9;
  result_.wall_s = static_cast<double>(end_ns_ - start_ns_) / 1e9;
  return std::move(result_);
}

void StreamRun::ConnectNext() {
  Stream& s = *streams_[next_connect_++];
  s.socket.async_connect(options_.endpoint,
                         [this, &s](const error_code& ec) { OnConnected(s, ec); });
}

void StreamRun::OnConnected(Stream& s, const error_code& ec) {
  if (finished_) {
    return;
  }
  ++connects_done_;
  if (ec) {
    Fail(s, "connect: " + ec.message());
  } else {
    s.connected = true;
    ++connected_;
    error_code nodelay_ec;
    s.socket.set_option(tcp::no_delay(true), nodelay_ec);
  }
  if (finished_) {
    return;
  }
  if (next_connect_ < streams_.size()) {
    ConnectNext();
  } else if (connects_done_ == streams_.size()) {
    SendAll();
  }
}

void StreamRun::SendAll() {
  connected_ns_ = SteadyNowNs();
  if (options_.ramp_ms <= 0) {
    for (auto& stream : streams_) {
      Send(*stream);
    }
    return;
  }
  SendDue();
}

// Sends every request whose turn has come (request i at i/N of the ramp), then waits 1 ms.
void StreamRun::SendDue() {
  if (finished_) {
    return;
  }
  const int64_t ramp_ns = int64_t{options_.ramp_ms} * 1'000'000;
  const auto n = static_cast<int64_t>(streams_.size());
  const int64_t elapsed = SteadyNowNs() - connected_ns_;
  while (next_send_ < streams_.size() &&
         static_cast<int64_t>(next_send_) * ramp_ns / n <= elapsed) {
    Send(*streams_[next_send_++]);
  }
  if (next_send_ < streams_.size()) {
    ramp_.expires_after(std::chrono::milliseconds(1));
    ramp_.async_wait([this](const error_code& ec) {
      if (!ec) {
        SendDue();
      }
    });
  }
}

void StreamRun::Send(Stream& s) {
  if (!s.connected || s.counted) {
    return;
  }
  s.sent = true;
  s.sent_ns = SteadyNowNs();
  ++open_;
  result_.peak_open = std::max(result_.peak_open, open_);
  net::async_write(s.socket, net::buffer(options_.request),
                   [this, &s](const error_code& ec, size_t) {
                     if (ec && !s.closed && !finished_) {
                       Fail(s, "write: " + ec.message());
                     }
                   });
  Read(s);
}

void StreamRun::Read(Stream& s) {
  const std::span<char> space = s.decoder.ReadSpace();
  if (space.empty()) {
    Fail(s, s.decoder.error());
    return;
  }
  s.socket.async_read_some(net::buffer(space.data(), space.size()),
                           [this, &s](const error_code& ec, size_t n) {
                             if (!s.closed && !finished_) {
                               OnRead(s, ec, n);
                             }
                           });
}

void StreamRun::OnRead(Stream& s, const error_code& ec, size_t n) {
  const int64_t now = SteadyNowNs();
  ResponseDecoder::Step step;
  if (ec == net::error::eof) {
    step = s.decoder.Eof();
  } else if (ec) {
    if (s.done_seen) {
      Close(s);
    } else {
      Fail(s, "read: " + ec.message());
    }
    return;
  } else {
    s.decoder.Commit(n);
    step = s.decoder.Decode();
    if (step == ResponseDecoder::Step::kHead) {
      if (const int status = s.decoder.head().status; status != 200) {
        Fail(s, "HTTP " + std::to_string(status));
        return;
      }
      step = s.decoder.Decode();
    }
  }
  switch (step) {
    case ResponseDecoder::Step::kNeedMore:
      ScanEvents(s, now);
      if (!s.closed) {
        Read(s);
      }
      return;
    case ResponseDecoder::Step::kDone:
      ScanEvents(s, now);
      if (!s.done_seen) {
        Fail(s, "stream ended without [DONE]");
      }
      Close(s);
      return;
    case ResponseDecoder::Step::kHead:
    case ResponseDecoder::Step::kError:
      if (s.done_seen) {
        Close(s);
      } else {
        Fail(s, s.decoder.error());
      }
      return;
  }
}

void StreamRun::ScanEvents(Stream& s, int64_t now_ns) {
  s.events.Feed(s.decoder.body(), [&](std::string_view data) {
    if (!s.got_event) {
      s.got_event = true;
      result_.ttfe_ns.push_back(now_ns - s.sent_ns);
    }
    if (data == "[DONE]") {
      if (!s.done_seen) {
        s.done_seen = true;
        Complete(s, now_ns);
      }
      return;
    }
    ++result_.events;
    if (const int64_t sent_ns = MockSentNs(data); sent_ns >= 0) {
      result_.delays_ns.push_back(now_ns - sent_ns);
    }
  });
  s.decoder.Consume(s.decoder.body().size());
}

void StreamRun::Complete(Stream& s, int64_t now_ns) {
  if (s.counted) {
    return;
  }
  s.counted = true;
  ++result_.completed;
  --open_;
  Counted(now_ns);
}

void StreamRun::Fail(Stream& s, std::string_view why) {
  if (!s.counted) {
    s.counted = true;
    ++result_.failed;
    if (s.sent) {
      --open_;
    }
    if (result_.first_error.empty()) {
      result_.first_error = std::string(why);
    }
    Close(s);
    Counted(SteadyNowNs());
    return;
  }
  Close(s);
}

void StreamRun::Close(Stream& s) {
  if (s.closed) {
    return;
  }
  s.closed = true;
  error_code ignored;
  s.socket.close(ignored);
}

void StreamRun::Counted(int64_t now_ns) {
  if (++counted_ == static_cast<int64_t>(streams_.size())) {
    Finish(now_ns);
  }
}

void StreamRun::OnTimeout() {
  if (finished_) {
    return;
  }
  const int64_t now = SteadyNowNs();
  for (auto& stream : streams_) {
    Stream& s = *stream;
    if (!s.counted) {
      s.counted = true;
      ++result_.failed;
      if (result_.first_error.empty()) {
        result_.first_error = "timeout";
      }
    }
  }
  Finish(now);
}

void StreamRun::Finish(int64_t now_ns) {
  if (finished_) {
    return;
  }
  finished_ = true;
  end_ns_ = now_ns;
  io_.stop();
}

}  // namespace

absl::StatusOr<StreamResult> RunStream(const StreamOptions& options) {
  StreamRun run(options);
  return run.Run();
}

}  // namespace berry::bench
