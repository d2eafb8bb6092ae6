// MockUpstream: an OpenAI-compatible provider on 127.0.0.1 for tests and benchmarks of the
// proxy. It serves `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
// `GET /v1/models` and `GET /v1/models/{id}` over HTTP/1.1 (keep-alive, pipelining answered in
// order) or HTTPS, answers in the OpenAI shapes with `model` echoed from the request, and streams
// SSE (`chat.completion.chunk` events, a final chunk with `usage` — or, when the request asks for
// stream_options.include_usage, a final chunk and then a `usage` chunk with empty `choices`, as
// OpenAI sends them — then `data: [DONE]`) when the
// request body says `"stream": true`.
//
// What it does per request is programmable while it runs (`Behavior`): normal answers, failures
// with a chosen status and body, hangs, streams that break after k events, connections closed or
// reset before a response; globally, per model (the request body's `model`), or as a queue of
// one-shot behaviours consumed by the next requests. It records every request it reads
// (method, target, all headers, body, arrival time, connection) and counts connections, so tests
// can assert on what the proxy sent and whether it reused connections.
//
// Every streamed event carries `"mock_sent_ns"`: std::chrono::steady_clock (CLOCK_MONOTONIC)
// nanoseconds taken just before the event was written, comparable across processes on one host,
// so a benchmark can measure the delay the proxy adds per event. JSON answers carry the same value
// in the `x-mock-sent-ns` response header.
//
// Threads: `Create` starts `threads` event loops, each with its own io_context; accepted
// connections are spread over them round-robin. Every public method is thread-safe and may be
// called while requests are in flight, from any thread except the mock's own loops (`Stop` joins
// them). The request path takes one uncontended mutex per request and logs nothing.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace berry::test_support {

// Token counts reported in `usage`; total_tokens is their sum.
struct Usage {
  int64_t prompt_tokens = 10;
  int64_t completion_tokens = 20;
};

// What the mock does with one request to a known endpoint (unknown paths always get 404, wrong
// methods 405 and a missing or wrong API key 401, whatever the behaviour). Start from a factory and
// adjust fields.
struct Behavior {
  enum class Kind {
    // Like a provider: JSON, or SSE when the request body has `"stream": true`
    // (embeddings and models are always JSON).
    kNormal,
    // JSON even when the request asked to stream.
    kJson,
    // SSE even when the request did not ask to stream (chat and completions only).
    kStream,
    // Answer `status` with `body` (default: an OpenAI-shaped error), keep-alive honoured.
    kFail,
    // Read the request and never answer; the connection stays open until the client closes it,
    // `hang_for` passes, or the mock stops.
    kHang,
    // SSE response headers and `close_after_events` content events, then drop the TCP
    // connection (no final chunk, no [DONE], no chunked terminator).
    kCloseMidStream,
    // Read the request, then close the connection (FIN) without sending a byte.
    kCloseBeforeResponse,
    // Read the request, then reset the connection (RST) without sending a byte.
    kResetBeforeResponse,
    // Read the request, send `raw` as it is (a response no parser should trust: a garbage
    // status line, a 1xx before the answer, headers over a limit, a Content-Length longer than
    // the body, broken chunked framing), `raw_piece` bytes at a time with `stream_interval`
    // between pieces (0 = all at once), then end the connection as `raw_end` says.
    kRaw,
  };
  // How a kRaw answer ends.
  enum class RawEnd { kClose, kReset, kHang };

  Kind kind = Kind::kNormal;
  // kFail: the response status, body and Content-Type. An empty body means
  // {"error":{"message":"mock upstream failure","type":"server_error",...}}.
  int status = 500;
  std::string body;
  std::string content_type = "application/json";
  // kNormal/kJson: when non-empty, sent verbatim instead of the generated JSON.
  std::string json_body;
  // Extra response headers (e.g. Retry-After), on every kind that answers.
  std::vector<std::pair<std::string, std::string>> headers;
  // Wait this long after reading the request before answering (or closing, for the kinds that
  // close): the upstream's time to first byte. While it waits (here and between streamed
  // events) a plain-HTTP mock watches the connection, so a client that goes away ends the
  // exchange at once (counted in streams_aborted() for streams); over TLS that is noticed at the
  // next write.
  std::chrono::microseconds headers_delay{0};
  // Streaming: this many content events, then a final chunk with finish_reason and `usage`, then
  // `data: [DONE]`. The response headers go out with the first event; every later event,
  // including the final chunk, follows `stream_interval` after the previous one. With a zero
  // interval the whole stream is one write.
  int stream_events = 3;
  std::chrono::microseconds stream_interval{0};
  // kCloseMidStream: content events sent before the connection is dropped (0 = headers only).
  int close_after_events = 1;
  // The assistant's text: the message content of JSON answers, and each streamed event's delta.
  std::string content = "Hello from the mock upstream.";
  Usage usage;
  // kRaw: the bytes, how many go out per write (0 = all in one), and what follows them.
  std::string raw;
  size_t raw_piece = 0;
  RawEnd raw_end = RawEnd::kClose;
  // kHang: give up (close) after this long, so an abandoned test cannot pin a connection forever.
  std::chrono::milliseconds hang_for = std::chrono::hours(1);

  static Behavior Normal() { return {}; }
  static Behavior Json();
  static Behavior Stream(int events, std::chrono::microseconds interval = {});
  static Behavior Fail(int status, std::string body = {});
  static Behavior Hang();
  static Behavior CloseMidStream(int after_events, std::chrono::microseconds interval = {});
  static Behavior CloseBeforeResponse();
  static Behavior ResetBeforeResponse();
  static Behavior Raw(std::string bytes, RawEnd end = RawEnd::kClose);
};

// One request as the mock read it.
struct RecordedRequest {
  std::string method;
  std::string target;  // as sent, query string included
  // Every header in arrival order, names as sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The body's top-level `model` and `stream`, when the body is a JSON object that has them.
  std::string model;
  bool stream = false;
  // 1-based accept order of the connection that carried it: equal ids = one TCP connection.
  uint64_t connection_id = 0;
  // 1-based arrival order since start (or the last ClearRecorded()).
  uint64_t sequence = 0;
  // When the whole request had been read.
  std::chrono::steady_clock::time_point received_at;

  // The first value of header `name` (case-insensitive), if present.
  std::optional<std::string> Header(std::string_view name) const;
};

struct MockUpstreamOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0 = any free port; see MockUpstream::port()
  int threads = 1;    // event loops; each accepted connection lives on one of them
  bool tls = false;
  // TLS server identity. Both empty = generate a fresh test CA and a localhost certificate;
  // MockUpstream::ca_pem() then returns the CA to trust.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // Non-empty = require a client certificate signed by this CA (mTLS).
  std::string tls_client_ca_pem;
  // Identifies this mock among several: sent as `x-mock-upstream` header and as
  // `system_fingerprint` in JSON answers and chunks. Empty = neither is sent.
  std::string name;
  // Non-empty = every request must carry `Authorization: Bearer <api_key>`, or gets 401 (an
  // OpenAI-shaped error; no behaviour is consumed). Empty = any or no key is accepted.
  std::string api_key;
  // Listed by GET /v1/models; GET /v1/models/{id} answers 404 for others.
  std::vector<std::string> models = {"mock-model"};
  // Keep a copy of every request for requests(). Benchmarks turn it off; counting continues.
  bool record_requests = true;
  size_t max_recorded_requests = 100000;  // later requests are counted, not stored
  size_t max_request_body_bytes = size_t{32} * 1024 * 1024;
  // A connection waiting for its next request is closed after idle_timeout; every write (and a
  // TLS handshake) must finish within io_timeout.
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::milliseconds io_timeout = std::chrono::seconds(30);
  int embedding_dimensions = 8;
  Behavior default_behavior;
};

class MockUpstream {
 public:
  using Options = MockUpstreamOptions;

  // Binds (port 0 = pick one), starts the event loops and returns a running mock.
  static absl::StatusOr<std::unique_ptr<MockUpstream>> Create(Options options = {});

  MockUpstream(const MockUpstream&) = delete;
  MockUpstream& operator=(const MockUpstream&) = delete;
  ~MockUpstream();

  // Closes the listener and every connection and joins the loops. Idempotent. Must not be
  // called from one of the mock's own loops.
  void Stop();

  uint16_t port() const { return port_; }
  // "http://127.0.0.1:PORT/v1" (https with TLS): what a provider's base_url would be.
  std::string base_url() const;
  // The CA that signed the generated server certificate; empty when the caller supplied one.
  const std::string& ca_pem() const { return ca_pem_; }
  const Options& options() const { return options_; }

  // --- behaviour -----------------------------------------------------------------------------
  // Which behaviour a request gets, first match wins: the model's one-shot queue, the global
  // one-shot queue, the model's behaviour, the default behaviour.
  void SetDefaultBehavior(Behavior behavior);
  void SetModelBehavior(std::string_view model, Behavior behavior);
  void ClearModelBehavior(std::string_view model);
  // One-shot: the next request (for `model`) gets `behavior`; several calls queue up in order.
  void EnqueueBehavior(Behavior behavior);
  void EnqueueModelBehavior(std::string_view model, Behavior behavior);
  size_t queued_behaviors() const;
  // Back to options().default_behavior, no per-model behaviours, empty queues.
  void ResetBehaviors();
  // The next `n` accepted connections are reset (RST) before a byte is read: what a provider
  // that is down at the TCP level looks like once the connect succeeded.
  void ResetNextConnections(int n);

  // --- recording -----------------------------------------------------------------------------
  std::vector<RecordedRequest> requests() const;
  std::optional<RecordedRequest> last_request() const;
  // Requests read since start or the last ClearRecorded(), recorded or not.
  uint64_t request_count() const;
  // Waits until request_count() >= n; false on timeout.
  bool WaitForRequests(uint64_t n, std::chrono::milliseconds timeout) const;
  void ClearRecorded();

  // --- connections and streams ---------------------------------------------------------------
  uint64_t connections_accepted() const;
  uint64_t connections_open() const;
  // Waits until exactly `n` connections are open; false on timeout.
  bool WaitForOpenConnections(uint64_t n, std::chrono::milliseconds timeout) const;
  // SSE responses written to the end / cut short because a write failed (the client went away).
  uint64_t streams_completed() const;
  uint64_t streams_aborted() const;
  // Wait until streams_completed() / streams_aborted() >= n; false on timeout. (A client can
  // have read the whole stream a moment before the mock counts it.)
  bool WaitForCompletedStreams(uint64_t n, std::chrono::milliseconds timeout) const;
  bool WaitForAbortedStreams(uint64_t n, std::chrono::milliseconds timeout) const;

 private:
  class Server;  // the Asio side, in mock_upstream.cc
  using BehaviorPtr = std::shared_ptr<const Behavior>;

  struct Connection {
    uint64_t id;
    bool reset;
  };

  explicit MockUpstream(Options options);

  // Called once per request read: counts it (its number goes to `sequence`), stores `record`
  // (when recording), and for `routable` requests picks the behaviour. One lock.
  BehaviorPtr BeginRequest(std::string_view model, bool routable, RecordedRequest* record,
                           uint64_t* sequence);
  BehaviorPtr ResolveBehaviorLocked(std::string_view model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Connection NoteConnectionOpened();
  void NoteConnectionClosed();
  void NoteStreamEnded(bool completed);

  const Options options_;
  uint16_t port_ = 0;
  std::string ca_pem_;

  mutable absl::Mutex mu_;
  BehaviorPtr default_behavior_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, BehaviorPtr> model_behaviors_ ABSL_GUARDED_BY(mu_);
  std::deque<BehaviorPtr> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::deque<BehaviorPtr>> model_queues_ ABSL_GUARDED_BY(mu_);
  size_t model_queued_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<RecordedRequest> recorded_ ABSL_GUARDED_BY(mu_);
  uint64_t request_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t connections_accepted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t connections_open_ ABSL_GUARDED_BY(mu_) = 0;
  int reset_next_connections_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t streams_completed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t streams_aborted_ ABSL_GUARDED_BY(mu_) = 0;

  std::unique_ptr<Server> server_;
};

}  // namespace berry::test_support
