// The downstream (client-facing) HTTP/1.1 server that berry-proxy and the control plane's HTTP
// side both run: one event loop per worker thread, each with its own SO_REUSEPORT listener on
// the same address, keep-alive, pipelined requests answered in order, header and body size limits,
// read deadlines (a client that trickles its headers is cut off), and graceful drain.
//
// The server parses requests and owns connections; what to answer is the business of a
// per-worker `Handler` made by the factory on that worker's thread, so handlers keep per-worker
// state (upstream pools, pickers, metric caches) without locks.
//
// Threads: Create/Start/BeginDrain/WaitIdle/Stop are called from one controlling thread
// (main). Everything else runs on the worker threads.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/http/deadline.h"
#include "common/http/read_message.h"
#include "common/http/request_arena.h"
#include "common/http/wire.h"

namespace berry::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// A request's fields and body live in its arena (request_arena.h).
using RequestBody = http::basic_string_body<char, std::char_traits<char>, ArenaAllocator>;
using Request = http::request<RequestBody, ArenaFields>;
using Response = http::response<http::string_body>;
using ResponseHeader = http::response<http::empty_body>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  // 0 = pick one (every worker then shares the port the first one got)
  int threads = 1;
  // Waiting for the first byte of the next request on a kept-alive connection.
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(75);
  // From the first byte of a request to the end of its headers.
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);
  // From the end of the headers to the end of the body.
  std::chrono::milliseconds body_timeout = std::chrono::seconds(60);
  // Any single write to the client.
  std::chrono::milliseconds write_timeout = std::chrono::seconds(60);
  uint32_t header_limit_bytes = 64 * 1024;
  // Open client connections allowed at once, over all workers; 0 = no limit. A connection
  // accepted beyond it is answered 503 at once (an OpenAI-shaped error, `Connection: close`)
  // and closed; the connections already open are served as before.
  int64_t max_connections = 0;
};

// The one read a client connection keeps between two requests. Started while a request is
// being answered, it is the disconnect watch (a client that closes or resets makes it fail);
// once the answer is out, the session waits on that same read for the next request, and reads
// the rest of a request through it too (ClientSession::Fill). A kept-alive connection so makes
// one read per request, and no read that is cancelled only to be started again (Asio tries every
// new read once before it waits: that try is a system call).
//
// Bytes it reads go into the session's buffer: the next, possibly pipelined, request. While the
// read is pending the buffer is the read's: nobody may consume, prepare or commit (a flat_buffer
// that is emptied or grows moves the bytes the read writes into). Start() is called only with
// the buffer empty (Downstream::WatchForDisconnect, or a request read that ran out of bytes) and
// the buffer is touched again only after Wait(), so the rule holds by construction.
class ClientRead {
 public:
  ClientRead(net::ip::tcp::socket& socket, beast::flat_buffer& buffer)
      : socket_(socket), buffer_(buffer), wake_(socket.get_executor()) {}
  ClientRead(const ClientRead&) = delete;
  ClientRead& operator=(const ClientRead&) = delete;

  // Starts the read unless one is in progress or an error it ended with is yet to be collected.
  void Start();
  bool pending() const { return pending_; }
  // The read ended with an error other than a cancel: the client closed or reset.
  bool client_gone() const { return gone_; }
  // Called (once) when the read ends with such an error; replaced by the next call; nullptr to
  // stop.
  void OnGone(std::function<void()> on_gone) { on_gone_ = std::move(on_gone); }
  // Starts the read if needed and waits for its end: its error, or success with the bytes in the
  // buffer.
  net::awaitable<beast::error_code> Wait();

 private:
  void Done(beast::error_code ec, size_t n);

  net::ip::tcp::socket& socket_;
  beast::flat_buffer& buffer_;
  bool pending_ = false;
  bool gone_ = false;
  std::optional<beast::error_code> result_;  // of the read that ended, until collected
  std::function<void()> on_gone_;
  // Wait() sleeps on this timer until Done() cancels it: it is a wake-up signal, not a timeout,
  // so it is set to expire never. The waiting coroutine is so held by an operation Asio owns:
  // when the io_context goes away with the connection still open, Asio destroys the operation
  // and with it the coroutine (a handler kept here, inside the coroutine's own frame, would keep
  // the frame alive for ever).
  net::steady_timer wake_;
  bool waiting_ = false;
};

// One client connection: its socket, the buffer its requests are read into, its deadline and
// its one read, plus the scratch strings its responses reuse. It is the read side its requests
// are read through (wire::ReadMessage: Fill waits on the ClientRead).
//
// Lifetimes are the member order: the deadline and the read refer to the socket and the buffer,
// so they are declared after them and destroyed first. A read still pending refers to this
// object: the session calls Close() (which cancels it and waits for it) before it lets go.
class ClientSession {
 public:
  explicit ClientSession(net::ip::tcp::socket socket);
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;

  net::ip::tcp::socket& socket() { return socket_; }
  deadline::SocketDeadline& deadline() { return deadline_; }
  ClientRead& read() { return read_; }
  // Response heads, reused by every request on this connection; the request id's storage too.
  std::string& head_buffer() { return head_buffer_; }
  std::string& request_id() { return request_id_; }
  // Bytes of a next request are here already (pipelined, or read by the disconnect watch).
  bool has_buffered() const { return buffer_.size() > 0; }

  // For wire::ReadMessage.
  beast::flat_buffer& buffer() { return buffer_; }
  net::awaitable<beast::error_code> Fill() { return read_.Wait(); }
  beast::error_code Translate(beast::error_code ec) const { return deadline_.Translate(ec); }

  // Cancels a pending read and waits for it, then shuts the connection down.
  net::awaitable<void> Close();

 private:
  net::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
  // Cancel, not close: a client cut off reading its request still gets its 408.
  deadline::SocketDeadline deadline_{socket_, deadline::SocketDeadline::OnExpiry::kCancel};
  ClientRead read_{socket_, buffer_};
  std::string head_buffer_;
  std::string request_id_;
};

// Where reading a request failed, and what the client is told.
enum class RequestPhase { kHeader, kBody };
struct ReadFailure {
  // False: the client went away in the middle of its request; nobody to answer, just close.
  bool answer = false;
  http::status status = http::status::bad_request;  // 400, 408, 413 or 431
  std::string_view reason;
};
// The answer to an error `ec` (not none) reading a request in `phase`.
ReadFailure ClassifyReadError(RequestPhase phase, beast::error_code ec);

// One client connection as a handler sees it while answering one request.
class Downstream {
 public:
  // `session`'s buffers and read serve every request on the connection.
  Downstream(ClientSession& session, std::string_view request_id, bool keep_alive,
             std::chrono::milliseconds write_timeout, ArenaAllocator arena);
  ~Downstream();
  Downstream(const Downstream&) = delete;
  Downstream& operator=(const Downstream&) = delete;

  std::string_view request_id() const { return request_id_; }
  // The request's arena, for what the handler needs only while answering it (the upstream
  // response's fields).
  ArenaAllocator arena() const { return arena_; }
  // Whether the connection stays open after this response; a handler may turn it off.
  bool keep_alive() const { return keep_alive_; }
  void set_keep_alive(bool keep_alive) { keep_alive_ = keep_alive; }
  // True once anything of the response was written: retries are over for this request.
  bool started() const { return started_; }
  bool failed() const { return failed_ || session_.read().client_gone(); }

  // A complete response. Sets x-request-id, Connection and Content-Length.
  net::awaitable<bool> Write(Response& response);
  // The same, for a head the caller writes itself (a relayed upstream response, without
  // building a Beast message): BeginHead() starts the head with the status line and returns it
  // for the caller to append fields to (wire::AppendField; no framing fields, no x-request-id);
  // WriteWithBody() completes it and sends it with `body`.
  std::string& BeginHead(unsigned status);
  net::awaitable<bool> WriteWithBody(std::string_view body);
  // A streamed response: header (sent chunked), then chunks, then the end. Each returns false
  // once the client is gone.
  net::awaitable<bool> WriteHeader(ResponseHeader& header);
  net::awaitable<bool> WriteChunk(std::string_view data);
  net::awaitable<bool> WriteEnd();

  // For long streams: from now on chunk writes arm no timer each (a timer per write costs more
  // than the write); the caller's watchdog reads write_pending_since() instead and calls
  // Abort() when a write has hung for too long.
  void UseWatchdogForWrites();
  std::chrono::milliseconds write_timeout() const { return write_timeout_; }
  // When the write in progress started; nullopt when none is.
  std::optional<std::chrono::steady_clock::time_point> write_pending_since() const;
  // Cancels whatever is in progress on the client connection: a pending write fails.
  void Abort();

  // Calls `on_gone` (on this worker) if the client closes or resets the connection while the
  // handler is waiting on the upstream; at once if that was already seen. Stop with
  // StopWatching(); at most one watch at a time.
  //
  // The watch is the connection's ClientRead (no extra system call: the socket is in the event
  // loop already). Bytes it reads are the client's next, pipelined request: they go into the
  // session's read buffer and end the watching for this request. The read stays pending after
  // the request; the session waits on it for the next one.
  void WatchForDisconnect(std::function<void()> on_gone);
  void StopWatching();

 private:
  // Ends head_ with x-request-id, the framing headers and the empty line.
  void FinishHead(bool chunked, size_t body_size);

  // Writes `buffers` under the write timeout (or the watchdog); false once the client is gone.
  template <typename Buffers>
  net::awaitable<bool> Send(Buffers buffers);

  ClientSession& session_;
  std::string& head_;
  wire::ChunkLineStorage chunk_line_;
  std::string_view request_id_;  // in the session's storage
  bool keep_alive_;
  bool started_ = false;
  bool failed_ = false;
  unsigned status_ = 0;  // of the head being written
  std::chrono::milliseconds write_timeout_;
  ArenaAllocator arena_;
  bool watchdog_writes_ = false;
  std::chrono::steady_clock::time_point write_started_{};  // {} = no write in progress
};

// Per-worker request handling.
class Handler {
 public:
  virtual ~Handler() = default;
  // Largest body accepted now (the current route table's max_request_body_bytes). Called before
  // each request is read, on the worker's thread.
  virtual uint64_t body_limit() = 0;
  // Answers `request` through `downstream`. Must write exactly one response unless the client
  // is gone. `request_id` is the client's x-request-id if acceptable, else a fresh one.
  virtual net::awaitable<void> Handle(Request& request, Downstream& downstream) = 0;
  // Called once after the worker's thread has stopped and before its io_context is destroyed:
  // release every I/O object the handler owns (kept-alive upstream connections), since those
  // must not outlive the io_context's services.
  virtual void Shutdown() {}
  // Answers a request that could not be read: `status` 400/408/413/431 with a reason.
  virtual net::awaitable<void> HandleBadRequest(http::status status, std::string_view reason,
                                                Downstream& downstream) = 0;
};

using HandlerFactory =
    std::function<std::unique_ptr<Handler>(int worker_index, net::io_context& io_context)>;

class HttpServer {
 public:
  // Binds every worker's listener (so a port conflict fails here, before anything runs).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(ServerOptions options,
                                                            const HandlerFactory& factory);
  ~HttpServer();

  uint16_t port() const { return port_; }
  // Starts the worker threads.
  void Start();
  // Stops accepting; idle keep-alive connections close; requests in flight (streams included)
  // go on, each answered with `Connection: close`.
  void BeginDrain();
  // Waits until no request is in flight or `timeout` passes; true when idle.
  bool WaitIdle(std::chrono::milliseconds timeout);
  // Cancels whatever is left and joins the workers. Idempotent.
  void Stop();

  // Requests being handled right now, over all workers.
  int64_t active_requests() const { return active_requests_.load(std::memory_order_relaxed); }
  // Client connections open right now, and those refused so far for ServerOptions::
  // max_connections; over all workers, any thread.
  int64_t open_connections() const { return connections_.open.load(std::memory_order_relaxed); }
  uint64_t refused_connections() const {
    return connections_.refused.load(std::memory_order_relaxed);
  }

  struct ConnectionCounts {
    std::atomic<int64_t> open{0};
    std::atomic<uint64_t> refused{0};
  };

  struct Worker;

 private:
  HttpServer() = default;

  ServerOptions options_;
  uint16_t port_ = 0;
  // Before the workers: a session's frame, destroyed with its worker's io_context, counts itself
  // out of it.
  ConnectionCounts connections_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::atomic<int64_t> active_requests_{0};
  std::atomic<bool> draining_{false};
  bool stopped_ = false;
};

}  // namespace berry::server
