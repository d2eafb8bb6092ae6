#include "common/http/server.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <mutex>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/http/inline_io.h"

namespace berry::server {
namespace {

constexpr auto kNoThrow = net::as_tuple(net::use_awaitable);
using ReusePort = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

// A client's x-request-id is echoed only if it is short printable ASCII without spaces, so it
// cannot break log lines or response headers.
bool AcceptableRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) {
    return false;
  }
  for (const char c : id) {
    if (c <= 0x20 || c >= 0x7f) {
      return false;
    }
  }
  return true;
}

}  // namespace

// One event loop with its listener and handler.
struct HttpServer::Worker {
  // One thread runs each io_context, and only that thread touches its sockets (others post to
  // it): the reactor needs no per-socket locking.
  explicit Worker(int index) : index(index), io_context(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO) {}

  int index;
  // Destroyed after io_context (declared first): the coroutine frames the io_context destroys
  // still refer to the handler. The handler's own sockets go earlier, in Handler::Shutdown().
  std::unique_ptr<Handler> handler;
  // For the requests in progress; destroyed after io_context too (their frames give blocks back).
  ArenaBlocks arena_blocks;
  net::io_context io_context;
  net::ip::tcp::acceptor acceptor{io_context};
  absl::BitGen rng;  // request ids
  // Connections waiting for their next request; closed on drain. Worker thread only.
  absl::flat_hash_set<net::ip::tcp::socket*> idle;
};

namespace {

// Into the session's string, which keeps its capacity from request to request.
std::string_view NewRequestId(absl::BitGen& rng, std::string& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t bits = absl::Uniform<uint64_t>(rng);
  id.resize(16);
  for (char& c : id) {
    c = kHex[bits & 0xf];
    bits >>= 4;
  }
  return id;
}

}  // namespace

void ClientRead::Start() {
  if (pending_ || (result_ && *result_)) {
    return;
  }
  result_.reset();
  pending_ = true;
  // The buffer's spare room, as Beast's reads take it (at most 64 KiB), or 4 KiB when it has
  // little (the first read of a connection).
  const size_t spare = buffer_.capacity() - buffer_.size();
  const size_t room = spare >= 512 ? std::min<size_t>(spare, size_t{64} * 1024) : 4096;
  socket_.async_read_some(buffer_.prepare(room),
                          [this](beast::error_code ec, size_t n) { Done(ec, n); });
}

void ClientRead::Done(beast::error_code ec, size_t n) {
  pending_ = false;
  buffer_.commit(n);
  result_ = ec;
  if (ec && ec != net::error::operation_aborted) {
    gone_ = true;  // closed or reset
    if (on_gone_) {
      std::function<void()> gone = std::move(on_gone_);
      on_gone_ = nullptr;
      gone();
    }
  }
  if (waiting_) {
    wake_.cancel();  // resumes Wait()
  }
}

net::awaitable<beast::error_code> ClientRead::Wait() {
  Start();
  while (pending_) {
    waiting_ = true;
    wake_.expires_at(net::steady_timer::time_point::max());
    co_await wake_.async_wait(kNoThrow);
    waiting_ = false;
  }
  const beast::error_code ec = result_.value_or(beast::error_code{});
  result_.reset();
  co_return ec;
}

ClientSession::ClientSession(net::ip::tcp::socket socket) : socket_(std::move(socket)) {}

net::awaitable<void> ClientSession::Close() {
  beast::error_code ignored;
  if (read_.pending()) {
    socket_.cancel(ignored);
    co_await read_.Wait();  // its handler refers to this object
  }
  socket_.shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  socket_.close(ignored);
}

ReadFailure ClassifyReadError(RequestPhase phase, beast::error_code ec) {
  const bool header = phase == RequestPhase::kHeader;
  if (ec == http::error::end_of_stream || ec == net::error::eof ||
      ec == net::error::connection_reset || ec == http::error::partial_message) {
    return {};  // the client went away mid-request: nobody to answer
  }
  if (ec == http::error::header_limit) {
    return {true, http::status::request_header_fields_too_large, "request headers are too large"};
  }
  if (ec == http::error::body_limit) {
    // In the header phase: a Content-Length over the limit, refused as soon as the headers are
    // complete.
    return {true, http::status::payload_too_large, "request body is larger than the limit"};
  }
  if (ec == beast::error::timeout) {
    return {
        true, http::status::request_timeout,
        header ? "timed out reading the request headers" : "timed out reading the request body"};
  }
  return {true, http::status::bad_request,
          header ? "malformed HTTP request" : "malformed HTTP request body"};
}

Downstream::Downstream(ClientSession& session, std::string_view request_id, bool keep_alive,
                       std::chrono::milliseconds write_timeout, ArenaAllocator arena)
    : session_(session),
      head_(session.head_buffer()),
      request_id_(request_id),
      keep_alive_(keep_alive),
      write_timeout_(write_timeout),
      arena_(arena) {}

std::string& Downstream::BeginHead(unsigned status) {
  status_ = status;
  head_.clear();
  wire::AppendStatusLine(head_, status);
  return head_;
}

void Downstream::FinishHead(bool chunked, size_t body_size) {
  wire::AppendField(head_, "x-request-id", request_id_);
  if (!keep_alive_) {
    wire::AppendField(head_, "Connection", "close");
  }
  if (chunked) {
    wire::AppendField(head_, "Transfer-Encoding", "chunked");
  } else if (!wire::StatusHasNoBody(status_)) {
    wire::AppendContentLength(head_, body_size);
  }
  head_.append(wire::kCrLf);
  started_ = true;
}

namespace {

net::awaitable<bool> Immediately(bool result) { co_return result; }

}  // namespace

// The Write* functions below are not coroutines themselves: each returns this one's awaitable,
// so a write costs one coroutine frame, not two.
template <typename Buffers>
net::awaitable<bool> Downstream::Send(Buffers buffers) {
  // Whatever the socket takes at once goes without a trip through the event loop (and without
  // touching the deadline); only a rest that has to wait is written asynchronously.
  beast::error_code ec;
  const size_t written = wire::WriteNow(session_.socket(), buffers, ec);
  if (!ec && written < net::buffer_size(buffers)) {
    if (watchdog_writes_) {
      write_started_ = std::chrono::steady_clock::now();
    } else {
      session_.deadline().ExpiresAfter(write_timeout_);
    }
    beast::buffers_suffix<Buffers> rest(buffers);
    rest.consume(written);
    auto [write_ec, n] = co_await net::async_write(session_.socket(), rest, kNoThrow);
    write_started_ = {};
    ec = write_ec;
  }
  failed_ = static_cast<bool>(ec);
  co_return !failed_;
}

net::awaitable<bool> Downstream::WriteWithBody(std::string_view body) {
  if (wire::StatusHasNoBody(status_)) {
    body = {};
  }
  FinishHead(false, body.size());
  return Send(std::array<net::const_buffer, 2>{net::buffer(head_), net::buffer(body)});
}

net::awaitable<bool> Downstream::Write(Response& response) {
  wire::AppendFieldsExceptFraming(BeginHead(response.result_int()), response.base(),
                                  "x-request-id");
  return WriteWithBody(response.body());
}

net::awaitable<bool> Downstream::WriteHeader(ResponseHeader& header) {
  wire::AppendFieldsExceptFraming(BeginHead(header.result_int()), header.base(), "x-request-id");
  FinishHead(true, 0);
  return Send(net::buffer(head_));
}

void Downstream::UseWatchdogForWrites() {
  watchdog_writes_ = true;
  session_.deadline().ExpiresNever();
}

std::optional<std::chrono::steady_clock::time_point> Downstream::write_pending_since() const {
  if (write_started_ == std::chrono::steady_clock::time_point{}) {
    return std::nullopt;
  }
  return write_started_;
}

void Downstream::Abort() {
  beast::error_code ignored;
  session_.socket().cancel(ignored);
}

net::awaitable<bool> Downstream::WriteChunk(std::string_view data) {
  if (failed_) {
    return Immediately(false);
  }
  if (data.empty()) {
    return Immediately(true);  // an empty chunk would end the body
  }
  return Send(
      std::array<net::const_buffer, 3>{net::buffer(wire::ChunkSizeLine(data.size(), chunk_line_)),
                                       net::buffer(data), net::buffer(wire::kCrLf)});
}

net::awaitable<bool> Downstream::WriteEnd() {
  if (failed_) {
    return Immediately(false);
  }
  return Send(net::buffer(wire::kLastChunk));
}

void Downstream::WatchForDisconnect(std::function<void()> on_gone) {
  ClientRead& read = session_.read();
  if (read.client_gone()) {
    on_gone();
    return;
  }
  if (session_.has_buffered()) {
    return;  // the client sent more (a pipelined request): it is alive
  }
  read.OnGone(std::move(on_gone));
  session_.deadline().ExpiresNever();  // the wait for the upstream has timeouts of its own
  read.Start();
}

void Downstream::StopWatching() { session_.read().OnGone(nullptr); }

Downstream::~Downstream() { StopWatching(); }  // the read outlives this request

namespace {

// Times the reads of a request: the header timeout from the first read of its header, the body
// timeout from the first read of its body (after "100 Continue" when the client waits for it).
// Nothing happens for a request that is read from the buffer whole.
class RequestReadTimer {
 public:
  RequestReadTimer(ClientSession& session, const ServerOptions& options)
      : session_(session), options_(options) {}

  // Before each read of the request from the socket.
  template <class Parser>
  net::awaitable<beast::error_code> BeforeFill(Parser& parser) {
    if (!parser.is_header_done()) {
      if (!header_armed_) {
        header_armed_ = true;
        session_.deadline().ExpiresAfter(options_.header_timeout);
      }
      co_return beast::error_code{};
    }
    if (!body_armed_) {
      body_armed_ = true;
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        session_.deadline().ExpiresAfter(options_.write_timeout);
        auto [ec, n] =
            co_await net::async_write(session_.socket(), net::buffer(kContinue), kNoThrow);
        if (ec) {
          continue_failed_ = true;
          co_return ec;
        }
      }
      session_.deadline().ExpiresAfter(options_.body_timeout);
    }
    co_return beast::error_code{};
  }

  // Writing "100 Continue" failed: the connection is closed without an answer.
  bool continue_failed() const { return continue_failed_; }

 private:
  ClientSession& session_;
  const ServerOptions& options_;
  bool header_armed_ = false;
  bool body_armed_ = false;
  bool continue_failed_ = false;
};

net::awaitable<void> RunSession(HttpServer::Worker& worker, const ServerOptions& options,
                                std::atomic<int64_t>& active_requests,
                                HttpServer::ConnectionCounts& connections,
                                const std::atomic<bool>& draining, net::ip::tcp::socket socket) {
  // Counted from the accept (AcceptLoop) to the end of the session, however it ends.
  const absl::Cleanup closed = [&connections] {
    connections.open.fetch_sub(1, std::memory_order_relaxed);
  };
  ClientSession session(std::move(socket));
  Handler& handler = *worker.handler;
  for (;;) {
    if (!session.has_buffered()) {
      if (draining.load(std::memory_order_relaxed)) {
        break;
      }
      // Idle between requests: the only state a drain may close the connection in.
      worker.idle.insert(&session.socket());
      session.deadline().ExpiresAfter(options.idle_timeout);
      // Often already pending: the previous request's disconnect watch.
      const beast::error_code ec = co_await session.read().Wait();
      worker.idle.erase(&session.socket());
      if (ec) {
        break;
      }
    }

    RequestArena arena(worker.arena_blocks);
    http::request_parser<RequestBody, ArenaAllocator> parser(std::piecewise_construct,
                                                             std::make_tuple(arena.allocator()),
                                                             std::make_tuple(arena.allocator()));
    parser.header_limit(options.header_limit_bytes);
    parser.body_limit(handler.body_limit());
    // Usually the whole request is in the buffer already: parsed at once, no read operation.
    RequestReadTimer timer(session, options);
    const beast::error_code read_ec =
        (co_await wire::ReadMessage(session, parser, wire::ReadUntil::kMessage, [&] {
          return timer.BeforeFill(parser);
        })).ec;
    std::optional<ReadFailure> failure;
    if (read_ec) {
      if (timer.continue_failed()) {
        break;
      }
      failure = ClassifyReadError(
          parser.is_header_done() ? RequestPhase::kBody : RequestPhase::kHeader, read_ec);
      if (!failure->answer) {
        break;
      }
    }
    active_requests.fetch_add(1, std::memory_order_relaxed);
    if (failure) {
      // The stream is out of sync with the framing: answer and close.
      Downstream downstream(session, NewRequestId(worker.rng, session.request_id()), false,
                            options.write_timeout, arena.allocator());
      co_await handler.HandleBadRequest(failure->status, failure->reason, downstream);
      active_requests.fetch_sub(1, std::memory_order_relaxed);
      break;
    }
    Request request = parser.release();
    std::string& request_id = session.request_id();
    const auto client_id = request["x-request-id"];
    if (AcceptableRequestId(client_id)) {
      request_id.assign(client_id.data(), client_id.size());
    } else {
      NewRequestId(worker.rng, request_id);
    }
    Downstream downstream(session, request_id,
                          request.keep_alive() && !draining.load(std::memory_order_relaxed),
                          options.write_timeout, arena.allocator());
    co_await handler.Handle(request, downstream);
    active_requests.fetch_sub(1, std::memory_order_relaxed);
    if (!downstream.keep_alive() || downstream.failed()) {
      break;
    }
  }
  co_await session.Close();
}

// A connection over ServerOptions::max_connections: whatever the client sent already is read
// (so closing does not reset the connection under the answer), the 503 is written if the socket
// takes it at once, and the connection is closed. Nothing waits: a flood of connections costs
// the worker a few system calls each and never a coroutine or a buffer.
void Refuse(net::ip::tcp::socket& socket) {
  static const std::string kTooMany = [] {
    constexpr std::string_view kBody =
        R"({"error":{"message":"the server is at its connection limit; retry shortly",)"
        R"("type":"server_error","param":null,"code":"too_many_connections"}})";
    return std::string(
               "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               "Retry-After: 1\r\nConnection: close\r\nContent-Length: ") +
           std::to_string(kBody.size()) + "\r\n\r\n" + std::string(kBody);
  }();
  beast::error_code ignored;
  std::array<char, 4096> discard;
  while (socket.read_some(net::buffer(discard), ignored) == discard.size()) {
  }
  wire::WriteNow(socket, net::buffer(kTooMany), ignored);
  socket.shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
}

net::awaitable<void> AcceptLoop(HttpServer::Worker& worker, const ServerOptions& options,
                                std::atomic<int64_t>& active_requests,
                                HttpServer::ConnectionCounts& connections,
                                const std::atomic<bool>& draining) {
  for (;;) {
    auto [ec, socket] = co_await worker.acceptor.async_accept(kNoThrow);
    if (ec) {
      if (ec == net::error::operation_aborted || !worker.acceptor.is_open()) {
        co_return;  // drained
      }
      continue;  // EMFILE and friends: keep serving the connections we have
    }
    beast::error_code ignored;
    socket.set_option(net::ip::tcp::no_delay(true), ignored);
    // For the writes done at once (inline_io.h): a blocking socket would stall the worker.
    beast::error_code mode_ec;
    if (socket.non_blocking(true, mode_ec); mode_ec) {
      continue;  // closes it
    }
    const int64_t open_before = connections.open.fetch_add(1, std::memory_order_relaxed);
    if (options.max_connections > 0 && open_before >= options.max_connections) {
      connections.open.fetch_sub(1, std::memory_order_relaxed);
      connections.refused.fetch_add(1, std::memory_order_relaxed);
      Refuse(socket);
      continue;
    }
    net::co_spawn(
        worker.io_context,
        RunSession(worker, options, active_requests, connections, draining, std::move(socket)),
        net::detached);
  }
}

absl::Status Listen(net::ip::tcp::acceptor& acceptor, const net::ip::tcp::endpoint& endpoint) {
  beast::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor.set_option(net::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor.set_option(ReusePort(true), ec);
  }
  if (!ec) {
    acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", endpoint.address().to_string(),
                                               ":", endpoint.port(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(ServerOptions options,
                                                               const HandlerFactory& factory) {
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", options.host, "' is not an IP address"));
  }
  if (options.threads < 1) {
    return absl::InvalidArgumentError("threads must be at least 1");
  }
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->options_ = std::move(options);
  uint16_t port = server->options_.port;
  for (int i = 0; i < server->options_.threads; ++i) {
    auto worker = std::make_unique<Worker>(i);
    // With port 0 the first listener picks the port and the others join it (SO_REUSEPORT).
    if (absl::Status status = Listen(worker->acceptor, {address, port}); !status.ok()) {
      return status;
    }
    port = worker->acceptor.local_endpoint().port();
    worker->handler = factory(i, worker->io_context);
    server->workers_.push_back(std::move(worker));
  }
  server->port_ = port;
  return server;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Start() {
  for (auto& worker : workers_) {
    net::co_spawn(worker->io_context,
                  AcceptLoop(*worker, options_, active_requests_, connections_, draining_),
                  net::detached);
    threads_.emplace_back([w = worker.get()] { w->io_context.run(); });
  }
}

void HttpServer::BeginDrain() {
  draining_.store(true);
  for (auto& worker : workers_) {
    net::post(worker->io_context, [w = worker.get()] {
      beast::error_code ignored;
      w->acceptor.close(ignored);
      for (net::ip::tcp::socket* socket : w->idle) {
        socket->cancel(ignored);  // its session sees the error and closes
      }
    });
  }
}

bool HttpServer::WaitIdle(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (active_requests_.load() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void HttpServer::Stop() {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  for (auto& worker : workers_) {
    worker->io_context.stop();
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) {
      thread.join();
    }
  }
  for (auto& worker : workers_) {
    worker->handler->Shutdown();
  }
}

}  // namespace berry::server
