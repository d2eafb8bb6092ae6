#include "tests/support/mock_upstream.h"

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cstdio>
#include <exception>
#include <memory_resource>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/json/json_escape.h"
#include "common/strings/views.h"
#include "tests/support/certs.h"
#include "tests/support/text.h"

namespace berry::test_support {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = net::ip::tcp;
using berry::json::AppendJsonString;
using Clock = std::chrono::steady_clock;

constexpr auto kUseTuple = net::as_tuple(net::use_awaitable);

// Request headers and body live in a per-request arena: a typical request costs no heap
// allocation for its fields, and the whole arena is dropped at once.
using ArenaAlloc = std::pmr::polymorphic_allocator<char>;
using RequestBody = http::basic_string_body<char, std::char_traits<char>, ArenaAlloc>;
using RequestParser = http::request_parser<RequestBody, ArenaAlloc>;

constexpr size_t kHeaderLimit = size_t{64} * 1024;
constexpr size_t kRequestArenaBytes = 4096;
constexpr size_t kJsonArenaBytes = 16384;

enum class Endpoint {
  kChat,
  kCompletions,
  kEmbeddings,
  kModels,
  kModel,
  kNotFound,
  kMethodNotAllowed,
};

Endpoint Route(http::verb verb, std::string_view target, std::string_view* model_id) {
  std::string_view path = target.substr(0, target.find('?'));
  auto expect = [verb](http::verb want, Endpoint e) {
    return verb == want ? e : Endpoint::kMethodNotAllowed;
  };
  if (path == "/v1/chat/completions") {
    return expect(http::verb::post, Endpoint::kChat);
  }
  if (path == "/v1/completions") {
    return expect(http::verb::post, Endpoint::kCompletions);
  }
  if (path == "/v1/embeddings") {
    return expect(http::verb::post, Endpoint::kEmbeddings);
  }
  if (path == "/v1/models") {
    return expect(http::verb::get, Endpoint::kModels);
  }
  constexpr std::string_view kModelPrefix = "/v1/models/";
  if (path.starts_with(kModelPrefix) && path.size() > kModelPrefix.size()) {
    *model_id = path.substr(kModelPrefix.size());
    return expect(http::verb::get, Endpoint::kModel);
  }
  return Endpoint::kNotFound;
}

// What the mock needs from a request body: parsed once, into a thread-local arena, and copied
// out so nothing points into the arena across a suspension.
struct BodyFields {
  bool is_object = false;
  bool has_model = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage is true
  size_t inputs = 1;           // embeddings: how many vectors to return
};

BodyFields ParseBody(std::string_view body, std::string* model) {
  BodyFields fields;
  model->clear();
  if (body.empty()) {
    return fields;
  }
  thread_local std::array<unsigned char, kJsonArenaBytes> space;
  json::monotonic_resource arena(space.data(), space.size());
  boost::system::error_code ec;
  json::value doc = json::parse(body, ec, json::storage_ptr(&arena));
  if (ec || !doc.is_object()) {
    return fields;
  }
  fields.is_object = true;
  const json::object& obj = doc.get_object();
  if (const json::value* m = obj.if_contains("model"); m != nullptr && m->is_string()) {
    fields.has_model = true;
    model->assign(m->get_string().data(), m->get_string().size());
  }
  if (const json::value* s = obj.if_contains("stream"); s != nullptr && s->is_bool()) {
    fields.stream = s->get_bool();
  }
  if (const json::value* o = obj.if_contains("stream_options"); o != nullptr && o->is_object()) {
    const json::value* u = o->get_object().if_contains("include_usage");
    fields.include_usage = u != nullptr && u->is_bool() && u->get_bool();
  }
  if (const json::value* in = obj.if_contains("input"); in != nullptr && in->is_array()) {
    const json::array& arr = in->get_array();
    // A list of strings or of token lists is a batch; a flat list of integers is one input.
    if (!arr.empty() && !arr.front().is_number()) {
      fields.inputs = arr.size();
    }
  }
  return fields;
}

void AppendUsage(std::string& out, const Usage& u, bool with_completion) {
  if (with_completion) {
    text::Append(out, R"("usage":{"prompt_tokens":)", u.prompt_tokens, R"(,"completion_tokens":)",
                 u.completion_tokens, R"(,"total_tokens":)", u.prompt_tokens + u.completion_tokens,
                 "}");
  } else {
    text::Append(out, R"("usage":{"prompt_tokens":)", u.prompt_tokens, R"(,"total_tokens":)",
                 u.prompt_tokens, "}");
  }
}

void AppendErrorBody(std::string& out, std::string_view message, std::string_view type) {
  out += R"({"error":{"message":)";
  AppendJsonString(out, message);
  out += R"(,"type":)";
  AppendJsonString(out, type);
  out += R"(,"param":null,"code":null}})";
}

bool BearerMatches(std::string_view authorization, std::string_view key) {
  constexpr std::string_view kBearer = "Bearer ";
  return text::StartsWithIgnoreCase(authorization, kBearer) &&
         authorization.substr(kBearer.size()) == key;
}

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view Reason(int status) {
  std::string_view r = http::obsolete_reason(http::int_to_status(static_cast<unsigned>(status)));
  return r.empty() || r.front() == '<' ? std::string_view("Mock Status") : r;
}

// The per-request facts the response formatting needs.
struct Exchange {
  Endpoint endpoint = Endpoint::kNotFound;
  unsigned version = 11;
  bool keep_alive = true;
  uint64_t sequence = 0;
  int64_t created = 0;
  size_t inputs = 1;
  // The request asked for stream_options.include_usage: usage comes in a chunk of its own
  // (empty `choices`) after the finish_reason chunk, as OpenAI sends it. Otherwise the mock puts
  // `usage` on the finish_reason chunk.
  bool include_usage = false;
  bool unauthorized = false;  // Options::api_key is set and the request did not carry it
  std::string_view model;     // the body's model (session scratch) or the target's id
};

// Reused buffers of one connection: after the first few requests, formatting allocates nothing.
struct Scratch {
  std::string out;
  std::string event;
  std::string model;
};

}  // namespace

// ----------------------------------------------------------------------------------------------
// Behavior

Behavior Behavior::Json() {
  Behavior b;
  b.kind = Kind::kJson;
  return b;
}

Behavior Behavior::Stream(int events, std::chrono::microseconds interval) {
  Behavior b;
  b.kind = Kind::kStream;
  b.stream_events = events;
  b.stream_interval = interval;
  return b;
}

Behavior Behavior::Fail(int status, std::string body) {
  Behavior b;
  b.kind = Kind::kFail;
  b.status = status;
  b.body = std::move(body);
  return b;
}

Behavior Behavior::Hang() {
  Behavior b;
  b.kind = Kind::kHang;
  return b;
}

Behavior Behavior::CloseMidStream(int after_events, std::chrono::microseconds interval) {
  Behavior b;
  b.kind = Kind::kCloseMidStream;
  b.close_after_events = after_events;
  b.stream_interval = interval;
  return b;
}

Behavior Behavior::CloseBeforeResponse() {
  Behavior b;
  b.kind = Kind::kCloseBeforeResponse;
  return b;
}

Behavior Behavior::ResetBeforeResponse() {
  Behavior b;
  b.kind = Kind::kResetBeforeResponse;
  return b;
}

Behavior Behavior::Raw(std::string bytes, RawEnd end) {
  Behavior b;
  b.kind = Kind::kRaw;
  b.raw = std::move(bytes);
  b.raw_end = end;
  return b;
}

std::optional<std::string> RecordedRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (text::EqualsIgnoreCase(k, name)) {
      return v;
    }
  }
  return std::nullopt;
}

// ----------------------------------------------------------------------------------------------
// Server: listener, event loops, and the per-connection coroutine.

class MockUpstream::Server {
 public:
  explicit Server(MockUpstream& owner) : owner_(owner), options_(owner.options_) {}
  ~Server() { Stop(); }

  absl::Status Start();
  void Stop();

 private:
  // Keeps connections_open() right however a session ends, including being destroyed unstarted
  // when the mock stops.
  class ConnectionGuard {
   public:
    explicit ConnectionGuard(MockUpstream* owner) : owner_(owner) {}
    ConnectionGuard(ConnectionGuard&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)) {}
    ConnectionGuard& operator=(ConnectionGuard&&) = delete;
    ~ConnectionGuard() {
      if (owner_ != nullptr) {
        owner_->NoteConnectionClosed();
      }
    }

   private:
    MockUpstream* owner_;
  };

  net::awaitable<void> AcceptLoop(tcp::acceptor acceptor);
  net::awaitable<void> Session(tcp::socket socket, bool reset, uint64_t id, ConnectionGuard guard);
  template <class Stream>
  net::awaitable<void> Serve(Stream& stream, uint64_t connection_id);
  // Answers one request; false = close the connection.
  template <class Stream>
  net::awaitable<bool> Respond(Stream& stream, beast::flat_buffer& buffer, net::steady_timer& timer,
                               Scratch& s, const Exchange& x, const BodyFields& fields,
                               const Behavior& b);
  template <class Stream>
  net::awaitable<bool> SendStream(Stream& stream, beast::flat_buffer& buffer,
                                  net::steady_timer& timer, Scratch& s, const Exchange& x,
                                  const Behavior& b);
  template <class Stream>
  net::awaitable<bool> Write(Stream& stream, std::string& out);
  template <class Stream>
  net::awaitable<void> SendRaw(Stream& stream, beast::flat_buffer& buffer, net::steady_timer& timer,
                               Scratch& s, const Behavior& b);
  // Sleeps for `d`; on plain TCP it watches the connection meanwhile, so a client that goes away
  // is noticed at once (bytes that arrive, e.g. a pipelined request, are kept in `buffer`).
  // Returns false if the connection is gone.
  template <class Stream>
  net::awaitable<bool> Sleep(Stream& stream, beast::flat_buffer& buffer, net::steady_timer& timer,
                             std::chrono::microseconds d);
  template <class Stream>
  net::awaitable<void> Hang(Stream& stream, std::chrono::milliseconds hang_for);

  void AppendHead(std::string& out, int status, std::string_view content_type,
                  std::optional<size_t> content_length, bool chunked, const Exchange& x,
                  bool keep_alive, const Behavior* b) const;
  void AppendJsonAnswer(std::string& out, const Exchange& x, const Behavior& b) const;
  void AppendModel(std::string& out, std::string_view id) const;
  // `data: {"id":...,"object":...,"created":...,"model":...` of a stream event.
  static void FormatEventHead(std::string& event, const Exchange& x);
  // The separate usage chunk of a stream whose request asked for include_usage.
  void FormatUsageEvent(std::string& event, const Exchange& x, const Behavior& b) const;
  void FormatEvent(std::string& event, const Exchange& x, const Behavior& b, int index,
                   bool final) const;

  MockUpstream& owner_;
  const Options& options_;
  std::optional<net::ssl::context> ssl_;
  std::vector<std::unique_ptr<net::io_context>> contexts_;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  std::once_flag stopped_;
};

absl::Status MockUpstream::Server::Start() {
  if (options_.threads < 1) {
    return absl::InvalidArgumentError("MockUpstream: threads must be >= 1");
  }
  if (options_.tls) {
    std::string cert = options_.tls_cert_pem;
    std::string key = options_.tls_key_pem;
    if (cert.empty() != key.empty()) {
      return absl::InvalidArgumentError("MockUpstream: set both tls_cert_pem and tls_key_pem");
    }
    if (cert.empty()) {
      absl::StatusOr<TestPki> pki = GenerateTestPki();
      if (!pki.ok()) {
        return pki.status();
      }
      cert = pki->server_cert_pem;
      key = pki->server_key_pem;
      owner_.ca_pem_ = pki->ca_cert_pem;
    }
    ssl_.emplace(net::ssl::context::tls_server);
    boost::system::error_code ec;
    ssl_->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                          net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                          net::ssl::context::no_tlsv1_1,
                      ec);
    if (!ec) {
      ssl_->use_certificate_chain(net::buffer(cert), ec);
    }
    if (!ec) {
      ssl_->use_private_key(net::buffer(key), net::ssl::context::pem, ec);
    }
    if (!ec && !options_.tls_client_ca_pem.empty()) {
      ssl_->add_certificate_authority(net::buffer(options_.tls_client_ca_pem), ec);
      if (!ec) {
        ssl_->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert, ec);
      }
    }
    if (ec) {
      return absl::InvalidArgumentError(
          text::Cat("MockUpstream: TLS setup failed: ", ec.message()));
    }
  }

  for (int i = 0; i < options_.threads; ++i) {
    contexts_.push_back(std::make_unique<net::io_context>(1));
    work_.push_back(net::make_work_guard(*contexts_.back()));
  }

  boost::system::error_code ec;
  net::ip::address address = net::ip::make_address(options_.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        text::Cat("MockUpstream: bad host '", options_.host, "': ", ec.message()));
  }
  tcp::endpoint endpoint(address, options_.port);
  tcp::acceptor acceptor(*contexts_.front());
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor.set_option(net::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return absl::UnavailableError(text::Cat("MockUpstream: cannot listen on ", options_.host, ":",
                                            options_.port, ": ", ec.message()));
  }
  owner_.port_ = acceptor.local_endpoint().port();

  net::co_spawn(*contexts_.front(), AcceptLoop(std::move(acceptor)),
                [](const std::exception_ptr& e) {
                  if (e) {
                    std::fputs("mock upstream: accept loop ended by an exception\n", stderr);
                  }
                });
  for (auto& ctx : contexts_) {
    threads_.emplace_back([c = ctx.get()] { c->run(); });
  }
  return absl::OkStatus();
}

void MockUpstream::Server::Stop() {
  std::call_once(stopped_, [this] {
    work_.clear();
    for (auto& ctx : contexts_) {
      ctx->stop();
    }
    for (auto& t : threads_) {
      t.join();
    }
    // Destroying a context destroys the coroutine frames still suspended on it, which closes
    // their sockets. The acceptor's context goes first: its pending accept holds a socket that
    // belongs to another context.
    for (auto& ctx : contexts_) {
      ctx.reset();
    }
  });
}

net::awaitable<void> MockUpstream::Server::AcceptLoop(tcp::acceptor acceptor) {
  net::steady_timer backoff(acceptor.get_executor());
  size_t next = 0;
  for (;;) {
    net::io_context& ctx = *contexts_[next];
    next = (next + 1) % contexts_.size();
    auto [ec, socket] =
        co_await acceptor.async_accept(net::any_io_executor(ctx.get_executor()), kUseTuple);
    if (ec == net::error::operation_aborted) {
      co_return;
    }
    if (ec) {
      // Out of descriptors and the like: back off instead of spinning.
      backoff.expires_after(std::chrono::milliseconds(10));
      co_await backoff.async_wait(kUseTuple);
      continue;
    }
    MockUpstream::Connection c = owner_.NoteConnectionOpened();
    net::co_spawn(ctx, Session(std::move(socket), c.reset, c.id, ConnectionGuard(&owner_)),
                  [](const std::exception_ptr& e) {
                    if (e) {
                      try {
                        std::rethrow_exception(e);
                      } catch (const std::exception& ex) {
                        std::fprintf(stderr, "mock upstream: session failed: %s\n", ex.what());
                      } catch (...) {
                        std::fputs("mock upstream: session failed\n", stderr);
                      }
                    }
                  });
  }
}

net::awaitable<void> MockUpstream::Server::Session(tcp::socket socket, bool reset, uint64_t id,
                                                   [[maybe_unused]] ConnectionGuard guard) {
  boost::system::error_code ec;
  if (reset) {
    socket.set_option(net::socket_base::linger(true, 0), ec);
    socket.close(ec);
    co_return;
  }
  socket.set_option(tcp::no_delay(true), ec);
  if (!ssl_) {
    beast::tcp_stream stream(std::move(socket));
    co_await Serve(stream, id);
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    co_return;
  }
  beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *ssl_);
  beast::get_lowest_layer(stream).expires_after(options_.io_timeout);
  auto [hs_ec] = co_await stream.async_handshake(net::ssl::stream_base::server, kUseTuple);
  if (hs_ec) {
    co_return;
  }
  co_await Serve(stream, id);
  // No close_notify exchange: most clients never answer it, and every response the mock sends
  // is length-delimited or chunked, so truncation is detectable without it.
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
}

template <class Stream>
net::awaitable<void> MockUpstream::Server::Serve(Stream& stream, uint64_t connection_id) {
  auto& lowest = beast::get_lowest_layer(stream);
  beast::flat_buffer buffer;
  net::steady_timer timer(co_await net::this_coro::executor);
  Scratch s;
  alignas(std::max_align_t) std::array<std::byte, kRequestArenaBytes> arena_space;

  for (;;) {
    std::pmr::monotonic_buffer_resource arena(arena_space.data(), arena_space.size());
    RequestParser parser(std::piecewise_construct, std::make_tuple(ArenaAlloc(&arena)),
                         std::make_tuple(ArenaAlloc(&arena)));
    parser.header_limit(kHeaderLimit);
    parser.body_limit(options_.max_request_body_bytes);

    // Read one request; answer `Expect: 100-continue` once the header is in.
    lowest.expires_after(options_.idle_timeout);
    bool continue_sent = false;
    boost::system::error_code ec;
    while (!parser.is_done()) {
      std::tie(ec, std::ignore) = co_await http::async_read_some(stream, buffer, parser, kUseTuple);
      if (ec) {
        break;
      }
      if (!continue_sent && parser.is_header_done() && !parser.is_done() &&
          text::EqualsIgnoreCase(parser.get()[http::field::expect], "100-continue")) {
        continue_sent = true;
        s.out.assign("HTTP/1.1 100 Continue\r\n\r\n");
        if (!co_await Write(stream, s.out)) {
          co_return;
        }
        lowest.expires_after(options_.idle_timeout);
      }
    }
    if (ec) {
      int status = 0;
      if (ec == http::error::body_limit) {
        status = 413;
      } else if (ec == http::error::header_limit) {
        status = 431;
      } else if (ec.category() ==
                     beast::http::make_error_code(http::error::bad_method).category() &&
                 ec != http::error::end_of_stream && ec != http::error::partial_message &&
                 ec != http::error::short_read) {
        status = 400;
      }
      if (status != 0) {
        Exchange x;
        s.out.clear();
        s.event.clear();
        AppendErrorBody(s.event, text::Cat("mock upstream: ", ec.message()),
                        "invalid_request_error");
        AppendHead(s.out, status, "application/json", s.event.size(), false, x, false, nullptr);
        s.out += s.event;
        co_await Write(stream, s.out);
      }
      co_return;
    }

    auto& req = parser.get();
    Exchange x;
    std::string_view model_id;
    x.endpoint = Route(req.method(), req.target(), &model_id);
    x.version = req.version();
    x.keep_alive = req.keep_alive();
    const BodyFields fields =
        ParseBody(std::string_view(req.body().data(), req.body().size()), &s.model);
    x.inputs = fields.inputs;
    x.include_usage = fields.include_usage;
    x.model = s.model;

    x.unauthorized = !options_.api_key.empty() &&
                     !BearerMatches(req[http::field::authorization], options_.api_key);
    const bool routable = x.endpoint != Endpoint::kNotFound &&
                          x.endpoint != Endpoint::kMethodNotAllowed && !x.unauthorized;
    BehaviorPtr behavior;
    if (options_.record_requests) {
      RecordedRequest rec;
      rec.received_at = Clock::now();
      rec.method = std::string(req.method_string());
      rec.target = std::string(req.target());
      rec.headers.reserve(static_cast<size_t>(std::distance(req.begin(), req.end())));
      for (const auto& field : req) {
        rec.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
      }
      rec.body.assign(req.body().data(), req.body().size());
      rec.model = s.model;
      rec.stream = fields.stream;
      rec.connection_id = connection_id;
      behavior = owner_.BeginRequest(s.model, routable, &rec, &x.sequence);
    } else {
      behavior = owner_.BeginRequest(s.model, routable, nullptr, &x.sequence);
    }
    if (x.endpoint == Endpoint::kModel) {
      x.model = model_id;  // in the target, which lives as long as the parser: past Respond
    }
    x.created = UnixSeconds();

    static const Behavior fallback;
    // Chosen before the co_await: GCC 12 mishandles conditional expressions inside one.
    const Behavior& chosen = behavior ? *behavior : fallback;
    const bool keep_open = co_await Respond(stream, buffer, timer, s, x, fields, chosen);
    if (!keep_open) {
      co_return;
    }
  }
}

template <class Stream>
net::awaitable<bool> MockUpstream::Server::Respond(Stream& stream, beast::flat_buffer& buffer,
                                                   net::steady_timer& timer, Scratch& s,
                                                   const Exchange& x, const BodyFields& fields,
                                                   const Behavior& b) {
  using Kind = Behavior::Kind;
  s.out.clear();
  s.event.clear();

  if (x.unauthorized) {
    AppendErrorBody(s.event, "mock upstream: incorrect API key provided", "invalid_request_error");
    AppendHead(s.out, 401, "application/json", s.event.size(), false, x, x.keep_alive, nullptr);
    s.out += s.event;
    co_return co_await Write(stream, s.out) && x.keep_alive;
  }
  if (x.endpoint == Endpoint::kNotFound || x.endpoint == Endpoint::kMethodNotAllowed) {
    const bool not_found = x.endpoint == Endpoint::kNotFound;
    AppendErrorBody(s.event,
                    not_found ? "mock upstream: unknown path" : "mock upstream: method not allowed",
                    "invalid_request_error");
    AppendHead(s.out, not_found ? 404 : 405, "application/json", s.event.size(), false, x,
               x.keep_alive, nullptr);
    s.out += s.event;
    co_return co_await Write(stream, s.out) && x.keep_alive;
  }

  if (b.kind != Kind::kHang && b.headers_delay.count() > 0) {
    if (!co_await Sleep(stream, buffer, timer, b.headers_delay)) {
      co_return false;
    }
  }

  auto& socket = beast::get_lowest_layer(stream).socket();
  boost::system::error_code ignored;
  const bool streamable = x.endpoint == Endpoint::kChat || x.endpoint == Endpoint::kCompletions;
  switch (b.kind) {
    case Kind::kHang:
      co_await Hang(stream, b.hang_for);
      co_return false;
    case Kind::kCloseBeforeResponse:
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
      co_return false;
    case Kind::kResetBeforeResponse:
      socket.set_option(net::socket_base::linger(true, 0), ignored);
      socket.close(ignored);
      co_return false;
    case Kind::kRaw:
      co_await SendRaw(stream, buffer, timer, s, b);
      co_return false;
    case Kind::kFail: {
      if (b.body.empty()) {
        AppendErrorBody(s.event, "mock upstream failure", "server_error");
      } else {
        s.event.assign(b.body);
      }
      AppendHead(s.out, b.status, b.content_type, s.event.size(), false, x, x.keep_alive, &b);
      s.out += s.event;
      co_return co_await Write(stream, s.out) && x.keep_alive;
    }
    case Kind::kNormal:
    case Kind::kJson:
    case Kind::kStream:
    case Kind::kCloseMidStream:
      break;
  }

  const bool needs_model = streamable || x.endpoint == Endpoint::kEmbeddings;
  if (needs_model && (!fields.is_object || !fields.has_model)) {
    AppendErrorBody(s.event,
                    fields.is_object ? "mock upstream: you must provide a model parameter"
                                     : "mock upstream: the body is not a JSON object",
                    "invalid_request_error");
    AppendHead(s.out, 400, "application/json", s.event.size(), false, x, x.keep_alive, &b);
    s.out += s.event;
    co_return co_await Write(stream, s.out) && x.keep_alive;
  }
  if (b.kind == Kind::kCloseMidStream && !streamable) {
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    co_return false;
  }
  const bool stream_it =
      streamable && (b.kind == Kind::kStream || b.kind == Kind::kCloseMidStream ||
                     (b.kind == Kind::kNormal && fields.stream));
  if (stream_it) {
    co_return co_await SendStream(stream, buffer, timer, s, x, b);
  }

  int status = 200;
  if (x.endpoint == Endpoint::kModel &&
      std::find(options_.models.begin(), options_.models.end(), x.model) == options_.models.end()) {
    status = 404;
    AppendErrorBody(s.event, text::Cat("The model '", x.model, "' does not exist"),
                    "invalid_request_error");
  } else if (!b.json_body.empty()) {
    s.event.assign(b.json_body);
  } else {
    AppendJsonAnswer(s.event, x, b);
  }
  AppendHead(s.out, status, "application/json", s.event.size(), false, x, x.keep_alive, &b);
  s.out += s.event;
  co_return co_await Write(stream, s.out) && x.keep_alive;
}

template <class Stream>
net::awaitable<bool> MockUpstream::Server::SendStream(Stream& stream, beast::flat_buffer& buffer,
                                                      net::steady_timer& timer, Scratch& s,
                                                      const Exchange& x, const Behavior& b) {
  const bool breaks = b.kind == Behavior::Kind::kCloseMidStream;
  const int events = std::max(0, breaks ? b.close_after_events : b.stream_events);
  // HTTP/1.0 has no chunked encoding: the stream is delimited by closing the connection.
  const bool chunked = x.version >= 11;
  const bool keep_alive = x.keep_alive && chunked && !breaks;
  const bool spaced = b.stream_interval.count() > 0;

  auto append_chunk = [&s, chunked](std::string_view data) {
    if (chunked) {
      char hex[20];
      int n = std::snprintf(hex, sizeof hex, "%zx\r\n", data.size());
      s.out.append(hex, static_cast<size_t>(n));
      s.out.append(data);
      s.out.append("\r\n");
    } else {
      s.out.append(data);
    }
  };
  auto abort = [this] {
    owner_.NoteStreamEnded(false);
    return false;
  };

  AppendHead(s.out, 200, "text/event-stream", std::nullopt, chunked, x, keep_alive, &b);
  for (int i = 0; i < events; ++i) {
    if (i > 0 && spaced) {
      if (!co_await Write(stream, s.out) ||
          !co_await Sleep(stream, buffer, timer, b.stream_interval)) {
        co_return abort();
      }
    }
    FormatEvent(s.event, x, b, i, false);
    append_chunk(s.event);
  }
  if (breaks) {
    // Deliberately broken: what was promised as a chunked stream just stops.
    if (!co_await Write(stream, s.out)) {
      co_return abort();
    }
    auto& socket = beast::get_lowest_layer(stream).socket();
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    co_return false;
  }
  if (events > 0 && spaced) {
    if (!co_await Write(stream, s.out) ||
        !co_await Sleep(stream, buffer, timer, b.stream_interval)) {
      co_return abort();
    }
  }
  FormatEvent(s.event, x, b, events, true);
  append_chunk(s.event);
  if (x.include_usage) {
    FormatUsageEvent(s.event, x, b);
    append_chunk(s.event);
  }
  append_chunk("data: [DONE]\n\n");
  if (chunked) {
    s.out.append("0\r\n\r\n");
  }
  if (!co_await Write(stream, s.out)) {
    co_return abort();
  }
  owner_.NoteStreamEnded(true);
  co_return keep_alive;
}

template <class Stream>
net::awaitable<void> MockUpstream::Server::SendRaw(Stream& stream, beast::flat_buffer& buffer,
                                                   net::steady_timer& timer, Scratch& s,
                                                   const Behavior& b) {
  const size_t piece = b.raw_piece == 0 ? b.raw.size() : b.raw_piece;
  for (size_t at = 0; at < b.raw.size(); at += piece) {
    s.out.assign(b.raw, at, piece);
    if (!co_await Write(stream, s.out)) {
      co_return;
    }
    if (at + piece < b.raw.size() && b.stream_interval.count() > 0 &&
        !co_await Sleep(stream, buffer, timer, b.stream_interval)) {
      co_return;
    }
  }
  auto& socket = beast::get_lowest_layer(stream).socket();
  boost::system::error_code ignored;
  switch (b.raw_end) {
    case Behavior::RawEnd::kClose:
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
      break;
    case Behavior::RawEnd::kReset:
      socket.set_option(net::socket_base::linger(true, 0), ignored);
      socket.close(ignored);
      break;
    case Behavior::RawEnd::kHang:
      co_await Hang(stream, b.hang_for);
      break;
  }
}

template <class Stream>
net::awaitable<bool> MockUpstream::Server::Write(Stream& stream, std::string& out) {
  beast::get_lowest_layer(stream).expires_after(options_.io_timeout);
  auto [ec, n] = co_await net::async_write(stream, net::buffer(out), kUseTuple);
  out.clear();
  co_return !ec;
}

template <class Stream>
net::awaitable<bool> MockUpstream::Server::Sleep(Stream& stream, beast::flat_buffer& buffer,
                                                 net::steady_timer& timer,
                                                 std::chrono::microseconds d) {
  using namespace net::experimental::awaitable_operators;
  timer.expires_after(d);
  if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
    // TLS records cannot be read safely while a read might be cancelled halfway, so only
    // plain TCP watches for the client going away.
    auto& socket = stream.socket();
    for (;;) {
      auto result = co_await (timer.async_wait(kUseTuple) ||
                              socket.async_read_some(buffer.prepare(4096), kUseTuple));
      if (result.index() == 0) {
        co_return true;
      }
      auto [ec, n] = std::get<1>(result);
      if (ec) {
        co_return false;
      }
      buffer.commit(n);
      if (buffer.size() > kHeaderLimit) {
        // A client flooding us while we stream: stop watching, just wait.
        break;
      }
    }
  }
  co_await timer.async_wait(kUseTuple);
  co_return true;
}

template <class Stream>
net::awaitable<void> MockUpstream::Server::Hang(Stream& stream,
                                                std::chrono::milliseconds hang_for) {
  // Drain (and ignore) whatever the client sends, so its close is seen and the session ends.
  auto& lowest = beast::get_lowest_layer(stream);
  lowest.expires_after(hang_for);
  std::array<char, 1024> sink;
  for (;;) {
    auto [ec, n] = co_await lowest.async_read_some(net::buffer(sink), kUseTuple);
    if (ec) {
      co_return;
    }
  }
}

void MockUpstream::Server::AppendHead(std::string& out, int status, std::string_view content_type,
                                      std::optional<size_t> content_length, bool chunked,
                                      const Exchange& x, bool keep_alive, const Behavior* b) const {
  text::Append(out, x.version >= 11 ? "HTTP/1.1 " : "HTTP/1.0 ", status, " ", Reason(status),
               "\r\nContent-Type: ", content_type, "\r\n");
  if (content_length) {
    text::Append(out, "Content-Length: ", *content_length, "\r\n");
  } else {
    out += "Cache-Control: no-cache\r\n";
    if (chunked) {
      out += "Transfer-Encoding: chunked\r\n";
    }
  }
  if (!keep_alive) {
    out += "Connection: close\r\n";
  } else if (x.version < 11) {
    out += "Connection: keep-alive\r\n";
  }
  if (!options_.name.empty()) {
    text::Append(out, "x-mock-upstream: ", options_.name, "\r\n");
  }
  text::Append(out, "x-mock-sent-ns: ", SteadyNanos(), "\r\n");
  if (b != nullptr) {
    for (const auto& [name, value] : b->headers) {
      text::Append(out, name, ": ", value, "\r\n");
    }
  }
  out += "\r\n";
}

void MockUpstream::Server::AppendModel(std::string& out, std::string_view id) const {
  out += R"({"id":)";
  AppendJsonString(out, id);
  out += R"(,"object":"model","created":1700000000,"owned_by":"berry-mock"})";
}

void MockUpstream::Server::AppendJsonAnswer(std::string& out, const Exchange& x,
                                            const Behavior& b) const {
  auto fingerprint = [&] {
    if (!options_.name.empty()) {
      out += R"(,"system_fingerprint":)";
      AppendJsonString(out, options_.name);
    }
  };
  switch (x.endpoint) {
    case Endpoint::kChat:
      text::Append(out, R"({"id":"chatcmpl-mock-)", x.sequence,
                   R"(","object":"chat.completion","created":)", x.created, R"(,"model":)");
      AppendJsonString(out, x.model);
      fingerprint();
      out += R"(,"choices":[{"index":0,"message":{"role":"assistant","content":)";
      AppendJsonString(out, b.content);
      out += R"(},"logprobs":null,"finish_reason":"stop"}],)";
      AppendUsage(out, b.usage, true);
      out += "}";
      return;
    case Endpoint::kCompletions:
      text::Append(out, R"({"id":"cmpl-mock-)", x.sequence,
                   R"(","object":"text_completion","created":)", x.created, R"(,"model":)");
      AppendJsonString(out, x.model);
      fingerprint();
      out += R"(,"choices":[{"text":)";
      AppendJsonString(out, b.content);
      out += R"(,"index":0,"logprobs":null,"finish_reason":"stop"}],)";
      AppendUsage(out, b.usage, true);
      out += "}";
      return;
    case Endpoint::kEmbeddings:
      out += R"({"object":"list","data":[)";
      for (size_t i = 0; i < x.inputs; ++i) {
        text::Append(out, i == 0 ? "" : ",", R"({"object":"embedding","index":)", i,
                     R"(,"embedding":[)");
        for (int d = 0; d < options_.embedding_dimensions; ++d) {
          // Deterministic, distinct per input: 0.1 .. 0.9.
          text::Append(out, d == 0 ? "" : ",", "0.", (i + static_cast<size_t>(d)) % 9 + 1);
        }
        out += "]}";
      }
      out += R"(],"model":)";
      AppendJsonString(out, x.model);
      out += ",";
      AppendUsage(out, b.usage, false);
      out += "}";
      return;
    case Endpoint::kModels:
      out += R"({"object":"list","data":[)";
      for (size_t i = 0; i < options_.models.size(); ++i) {
        if (i > 0) {
          out += ",";
        }
        AppendModel(out, options_.models[i]);
      }
      out += "]}";
      return;
    case Endpoint::kModel:
      AppendModel(out, x.model);
      return;
    case Endpoint::kNotFound:
    case Endpoint::kMethodNotAllowed:
      return;
  }
}

void MockUpstream::Server::FormatEventHead(std::string& event, const Exchange& x) {
  event.clear();
  const bool chat = x.endpoint == Endpoint::kChat;
  text::Append(event, R"(data: {"id":")", chat ? "chatcmpl-mock-" : "cmpl-mock-", x.sequence,
               R"(","object":")", chat ? "chat.completion.chunk" : "text_completion",
               R"(","created":)", x.created, R"(,"model":)");
  AppendJsonString(event, x.model);
}

void MockUpstream::Server::FormatEvent(std::string& event, const Exchange& x, const Behavior& b,
                                       int index, bool final) const {
  FormatEventHead(event, x);
  const bool chat = x.endpoint == Endpoint::kChat;
  if (!options_.name.empty()) {
    event += R"(,"system_fingerprint":)";
    AppendJsonString(event, options_.name);
  }
  if (chat) {
    event += R"(,"choices":[{"index":0,"delta":{)";
    if (!final) {
      if (index == 0) {
        event += R"("role":"assistant",)";
      }
      event += R"("content":)";
      AppendJsonString(event, b.content);
    }
    event += R"(},"logprobs":null,"finish_reason":)";
  } else {
    event += R"(,"choices":[{"text":)";
    AppendJsonString(event, final ? std::string_view() : std::string_view(b.content));
    event += R"(,"index":0,"logprobs":null,"finish_reason":)";
  }
  event += final ? R"("stop"}],)" : "null}],";
  if (final && !x.include_usage) {
    AppendUsage(event, b.usage, true);
    event += ",";
  }
  text::Append(event, R"("mock_seq":)", index, R"(,"mock_sent_ns":)", SteadyNanos(), "}\n\n");
}

void MockUpstream::Server::FormatUsageEvent(std::string& event, const Exchange& x,
                                            const Behavior& b) const {
  FormatEventHead(event, x);
  event += R"(,"choices":[],)";
  AppendUsage(event, b.usage, true);
  text::Append(event, R"(,"mock_sent_ns":)", SteadyNanos(), "}\n\n");
}

// ----------------------------------------------------------------------------------------------
// MockUpstream

MockUpstream::MockUpstream(Options options)
    : options_(std::move(options)),
      default_behavior_(std::make_shared<const Behavior>(options_.default_behavior)) {}

MockUpstream::~MockUpstream() { Stop(); }

absl::StatusOr<std::unique_ptr<MockUpstream>> MockUpstream::Create(Options options) {
  std::unique_ptr<MockUpstream> mock(new MockUpstream(std::move(options)));
  mock->server_ = std::make_unique<Server>(*mock);
  if (absl::Status s = mock->server_->Start(); !s.ok()) {
    return s;
  }
  return mock;
}

void MockUpstream::Stop() {
  if (server_ != nullptr) {
    server_->Stop();
  }
}

std::string MockUpstream::base_url() const {
  const bool v6 = options_.host.find(':') != std::string::npos;
  return text::Cat(options_.tls ? "https://" : "http://", v6 ? "[" : "", options_.host,
                   v6 ? "]" : "", ":", port_, "/v1");
}

void MockUpstream::SetDefaultBehavior(Behavior behavior) {
  auto b = std::make_shared<const Behavior>(std::move(behavior));
  absl::MutexLock lock(&mu_);
  default_behavior_ = std::move(b);
}

void MockUpstream::SetModelBehavior(std::string_view model, Behavior behavior) {
  auto b = std::make_shared<const Behavior>(std::move(behavior));
  absl::MutexLock lock(&mu_);
  model_behaviors_.insert_or_assign(std::string(model), std::move(b));
}

void MockUpstream::ClearModelBehavior(std::string_view model) {
  absl::MutexLock lock(&mu_);
  model_behaviors_.erase(strings::Absl(model));
}

void MockUpstream::EnqueueBehavior(Behavior behavior) {
  auto b = std::make_shared<const Behavior>(std::move(behavior));
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(b));
}

void MockUpstream::EnqueueModelBehavior(std::string_view model, Behavior behavior) {
  auto b = std::make_shared<const Behavior>(std::move(behavior));
  absl::MutexLock lock(&mu_);
  model_queues_[strings::Absl(model)].push_back(std::move(b));
  ++model_queued_;
}

size_t MockUpstream::queued_behaviors() const {
  absl::MutexLock lock(&mu_);
  return queue_.size() + model_queued_;
}

void MockUpstream::ResetBehaviors() {
  auto b = std::make_shared<const Behavior>(options_.default_behavior);
  absl::MutexLock lock(&mu_);
  default_behavior_ = std::move(b);
  model_behaviors_.clear();
  queue_.clear();
  model_queues_.clear();
  model_queued_ = 0;
  reset_next_connections_ = 0;
}

void MockUpstream::ResetNextConnections(int n) {
  absl::MutexLock lock(&mu_);
  reset_next_connections_ = std::max(0, n);
}

MockUpstream::BehaviorPtr MockUpstream::ResolveBehaviorLocked(std::string_view model) {
  if (model_queued_ > 0 && !model.empty()) {
    if (auto it = model_queues_.find(strings::Absl(model)); it != model_queues_.end()) {
      BehaviorPtr b = std::move(it->second.front());
      it->second.pop_front();
      --model_queued_;
      if (it->second.empty()) {
        model_queues_.erase(it);
      }
      return b;
    }
  }
  if (!queue_.empty()) {
    BehaviorPtr b = std::move(queue_.front());
    queue_.pop_front();
    return b;
  }
  if (!model.empty() && !model_behaviors_.empty()) {
    if (auto it = model_behaviors_.find(strings::Absl(model)); it != model_behaviors_.end()) {
      return it->second;
    }
  }
  return default_behavior_;
}

MockUpstream::BehaviorPtr MockUpstream::BeginRequest(std::string_view model, bool routable,
                                                     RecordedRequest* record, uint64_t* sequence) {
  absl::MutexLock lock(&mu_);
  *sequence = ++request_count_;
  BehaviorPtr b = routable ? ResolveBehaviorLocked(model) : nullptr;
  if (record != nullptr && recorded_.size() < options_.max_recorded_requests) {
    record->sequence = *sequence;
    recorded_.push_back(std::move(*record));
  }
  return b;
}

MockUpstream::Connection MockUpstream::NoteConnectionOpened() {
  absl::MutexLock lock(&mu_);
  Connection c{++connections_accepted_, false};
  ++connections_open_;
  if (reset_next_connections_ > 0) {
    --reset_next_connections_;
    c.reset = true;
  }
  return c;
}

void MockUpstream::NoteConnectionClosed() {
  absl::MutexLock lock(&mu_);
  --connections_open_;
}

void MockUpstream::NoteStreamEnded(bool completed) {
  absl::MutexLock lock(&mu_);
  ++(completed ? streams_completed_ : streams_aborted_);
}

std::vector<RecordedRequest> MockUpstream::requests() const {
  absl::MutexLock lock(&mu_);
  return recorded_;
}

std::optional<RecordedRequest> MockUpstream::last_request() const {
  absl::MutexLock lock(&mu_);
  if (recorded_.empty()) {
    return std::nullopt;
  }
  return recorded_.back();
}

uint64_t MockUpstream::request_count() const {
  absl::MutexLock lock(&mu_);
  return request_count_;
}

bool MockUpstream::WaitForRequests(uint64_t n, std::chrono::milliseconds timeout) const {
  absl::MutexLock lock(&mu_);
  auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return request_count_ >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::FromChrono(timeout));
}

void MockUpstream::ClearRecorded() {
  absl::MutexLock lock(&mu_);
  recorded_.clear();
  request_count_ = 0;
}

uint64_t MockUpstream::connections_accepted() const {
  absl::MutexLock lock(&mu_);
  return connections_accepted_;
}

uint64_t MockUpstream::connections_open() const {
  absl::MutexLock lock(&mu_);
  return connections_open_;
}

bool MockUpstream::WaitForOpenConnections(uint64_t n, std::chrono::milliseconds timeout) const {
  absl::MutexLock lock(&mu_);
  auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return connections_open_ == n; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::FromChrono(timeout));
}

uint64_t MockUpstream::streams_completed() const {
  absl::MutexLock lock(&mu_);
  return streams_completed_;
}

uint64_t MockUpstream::streams_aborted() const {
  absl::MutexLock lock(&mu_);
  return streams_aborted_;
}

bool MockUpstream::WaitForCompletedStreams(uint64_t n, std::chrono::milliseconds timeout) const {
  absl::MutexLock lock(&mu_);
  auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_completed_ >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::FromChrono(timeout));
}

bool MockUpstream::WaitForAbortedStreams(uint64_t n, std::chrono::milliseconds timeout) const {
  absl::MutexLock lock(&mu_);
  auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_aborted_ >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::FromChrono(timeout));
}

}  // namespace berry::test_support
