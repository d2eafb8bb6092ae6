// One request's state as it goes through the request path (proxy_handler.h): what admission
// found out, the attempts made, and what the access log and metrics record at the end. Every
// part of the request path (Admission, LocalEndpoints, UpstreamAttempt, UnaryRelay, StreamRelay,
// AttemptStats) reads and writes the Exchange of the request it serves.
//
// Threads: an Exchange lives on one worker's thread, inside one request's coroutine.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "common/http/server.h"
#include "common/selection/snapshot.h"
#include "data-plane/auth/client_directory.h"
#include "data-plane/auth/rate_limiter.h"
#include "data-plane/openai/request_body.h"
#include "data-plane/proxy/clock.h"
#include "data-plane/proxy/route_store.h"

namespace berry::proxy {

// The shared HTTP layer's names the request path uses throughout.
namespace net = server::net;
namespace beast = server::beast;
namespace http = server::http;
using server::Downstream;
using server::Handler;
using server::HttpServer;
using server::PooledString;
using server::Request;
using server::Response;
using server::ResponseHeader;
using server::ServerOptions;
using server::StringPool;

struct WorkerGeneration;  // worker_generation.h

inline constexpr std::string_view kChatCompletionsPath = "/v1/chat/completions";
// Anthropic's Messages API in front (dialect/messages_front.h): served by backends of every
// dialect; its errors are Anthropic-shaped.
inline constexpr std::string_view kMessagesPath = "/v1/messages";
// How Anthropic's clients send a key; Berry takes a user token there too (Authorization wins).
inline constexpr std::string_view kApiKeyHeader = "x-api-key";

// An error answer decided without waiting for anything.
struct ErrorReply {
  int status;
  std::string body;  // OpenAI's error JSON
  int retry_after_seconds = 0;
  // Refused by a rate limit (counted in berry_rate_limited_total).
  bool rate_limited = false;
  // Rate-limit refusals: x-ratelimit-limit-requests (0 = no such headers), and the window's
  // remaining requests and seconds until it has room (x-ratelimit-remaining/reset-requests).
  // When `tokens`, the same in tokens, sent as x-ratelimit-*-tokens.
  uint64_t limit_requests = 0;
  uint64_t remaining_requests = 0;
  int64_t reset_requests_seconds = 0;
  bool tokens = false;
  // Decision::credit_pending: the proxy may wait for the control plane's answer and admit again.
  bool credit_pending = false;
};

// What Admission establishes about a request: who calls, what the body asks for, which custom
// model serves it. Filled as far as admission got, also when it refused the request.
struct Admitted {
  const auth::Client* client = nullptr;
  const selection::CompiledModel* model = nullptr;
  openai::RequestFields fields;
  // Tokens reserved for a token-limited client (reserved 0 = none), settled when it is over.
  auth::TokenHold token_hold;
  // The request limits admitted it (a second admission, after waiting for credit, does not
  // spend them again).
  bool requests_admitted = false;
  // Where the request limits counted it (reserved 1; 0 = not counted): a request refused by its
  // token limit gives it back (Admission::ReleaseRequest).
  auth::TokenHold request_hold;
};

// True when the proxy asks an OpenAI-dialect upstream for a stream's usage on its own (a
// token-limited client, or a model with a token budget, streaming without stream_options): the
// usage chunk is then stripped.
inline bool InjectsStreamUsage(const Admitted& admitted) {
  return (admitted.token_hold.reserved > 0 ||
          (admitted.model != nullptr && admitted.model->has_token_budgets())) &&
         admitted.fields.stream && !admitted.fields.has_stream_options;
}

// One request's state across attempts (Admitted's fields included).
struct Exchange : Admitted {
  Exchange(Request& request, Downstream& downstream, Clock::TimePoint start)
      : request(request), downstream(downstream), start(start) {
    std::string_view target = request.target();
    const size_t q = target.find('?');
    path = target.substr(0, q);
    if (q != std::string_view::npos) {
      query = target.substr(q);
    }
  }

  Request& request;
  Downstream& downstream;
  Clock::TimePoint start;
  std::string_view path;
  std::string_view query;  // "?..." or empty

  // A request to Anthropic's Messages API (kMessagesPath) rather than OpenAI's.
  bool messages_front() const { return path == kMessagesPath; }

  // The worker's hold on the generation in force when the request started (null before the
  // first table), and that generation: the request uses them to its end, whatever is published
  // meanwhile.
  WorkerGeneration* pinned = nullptr;
  const RouteGeneration* generation = nullptr;
  const selection::CompiledBackend* backend = nullptr;  // of the attempt that answered
  absl::InlinedVector<uint32_t, 8> tried;
  // Monotonic end of the wait for lease credit (0 = has not waited): 500 ms in all.
  int64_t credit_deadline_ns = 0;
  // FleetStatus::answers of the budgets, read before the last pick (what a wait waits past).
  uint64_t budget_answers_seen = 0;
  // FleetStatus::answers when the request first waited for credit, for a user limit or a
  // budget (kNotWaited until it did; kSilenceChecked once its wait ended with no answer since).
  static constexpr uint64_t kNotWaited = ~uint64_t{0};
  static constexpr uint64_t kSilenceChecked = ~uint64_t{0} - 1;
  uint64_t credit_wait_answers = kNotWaited;
  int status = 0;
  int retries = 0;
  bool panic = false;
  bool answered = false;     // a response (or its header) went to the client
  bool client_gone = false;  // the client disconnected while we waited
  // A probe or scrape (/healthz, /health, /readyz, /metrics): counted apart from API requests,
  // so kubelets and Prometheus do not inflate berry_requests_total.
  bool local_endpoint = false;
  double ttfb = -1;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  bool usage_reported = false;  // the upstream reported `usage` (the two counts above)
  std::string error;            // for the access log

  // The last failed attempt, answered to the client when every attempt failed.
  bool last_timed_out = false;
  std::optional<Response> last_upstream_response;  // a 429/5xx from upstream, passed through
  // A backend whose dialect cannot express the request (an OpenAI field with no Anthropic or
  // Gemini equivalent): the 400 the client gets if no other backend answers.
  std::optional<ErrorReply> dialect_error;
  // Backends in `tried` that were never sent the request because their dialect could not express
  // it: not attempts, so they spend no retry and make no pick after them a retry.
  uint32_t dialect_refusals = 0;
};

// The endpoints berry relays, by path: the upstream path after the base URL ("" for a path that
// is not relayed).
inline std::string_view RelayedPath(std::string_view path) {
  static constexpr std::array<std::string_view, 4> kPaths = {
      "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages"};
  for (std::string_view p : kPaths) {
    if (path == p) {
      return p.substr(3);  // drop "/v1": base_url carries the version
    }
  }
  return {};
}

// A Settings/Provider duration, or `fallback` seconds when unset.
inline Clock::Duration SecondsOr(const google::protobuf::Duration& d, int64_t fallback) {
  return std::chrono::seconds(d.seconds() > 0 ? d.seconds() : fallback);
}

// Writes a response the proxy made (or an upstream answer kept for retry) to the client, with
// the headers HeaderPolicy adds, and records the status on the exchange.
net::awaitable<void> Send(Exchange& exchange, Response& response);
// An OpenAI-shaped JSON error (with Retry-After when retry_after_seconds > 0); on the Messages
// route, the same error in Anthropic's shape.
net::awaitable<void> SendError(Exchange& exchange, int status, std::string body,
                               int retry_after_seconds = 0);
// An admission refusal: SendError plus OpenAI's x-ratelimit-*-requests headers when the reply
// carries a limit.
net::awaitable<void> SendRefusal(Exchange& exchange, ErrorReply reply);

}  // namespace berry::proxy
