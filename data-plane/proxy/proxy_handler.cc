#include "data-plane/proxy/proxy_handler.h"

#include <algorithm>
#include <array>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <memory>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/http/wire.h"
#include "common/json/json_escape.h"
#include "common/log/log.h"
#include "data-plane/openai/errors.h"
#include "data-plane/openai/request_body.h"
#include "data-plane/openai/sse.h"
#include "data-plane/openai/usage.h"

namespace berry::proxy {
namespace {

using Clock = std::chrono::steady_clock;
using openai::ErrorKind;

int64_t MonotonicNs(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Clock::duration Seconds(const google::protobuf::Duration& d, int64_t fallback) {
  return std::chrono::seconds(d.seconds() > 0 ? d.seconds() : fallback);
}

// Headers that describe one connection (RFC 9110, 7.6.1) and headers the proxy sets itself;
// neither direction forwards them.
bool IsHopByHopOrOwn(http::field field, std::string_view name, std::string_view connection_tokens) {
  switch (field) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_authenticate:
    case http::field::proxy_authorization:
    case http::field::proxy_connection:
    case http::field::te:
    case http::field::trailer:
    case http::field::transfer_encoding:
    case http::field::upgrade:
    case http::field::content_length:
    case http::field::host:
      return true;
    default:
      break;
  }
  if (beast::iequals(name, "x-request-id")) {
    return true;
  }
  // A header the Connection header names is hop-by-hop too.
  if (!connection_tokens.empty()) {
    for (auto token : http::token_list(connection_tokens)) {
      if (beast::iequals(token, name)) {
        return true;
      }
    }
  }
  return false;
}

// The upstream response's end-to-end fields, then the CORS fields every /v1/ answer carries
// (replacing any the provider sent).
void AppendRelayedFields(std::string& head, const upstream::ResponseFields& fields,
                         std::string_view connection_tokens) {
  for (const auto& field : fields) {
    const http::field name = field.name();
    if (name == http::field::access_control_allow_origin ||
        name == http::field::access_control_expose_headers ||
        IsHopByHopOrOwn(name, field.name_string(), connection_tokens)) {
      continue;
    }
    wire::AppendField(head,
                      std::string_view(field.name_string().data(), field.name_string().size()),
                      std::string_view(field.value().data(), field.value().size()));
  }
  wire::AppendField(head, "Access-Control-Allow-Origin", "*");
  wire::AppendField(head, "Access-Control-Expose-Headers", "x-request-id");
}

// Whether the response parser can deliver more body from what the connection has already
// buffered, without waiting for the network: any buffered byte of a body that is not chunked; a
// whole next chunk (size line and data) of a chunked one. A stream relay that fell behind takes
// that along into the same write, but must not wait for an event that has not arrived yet.
bool CanContinueWithoutReading(const upstream::ResponseParser& parser,
                               const beast::flat_buffer& buffer) {
  const auto bytes = buffer.data();
  std::string_view buffered(static_cast<const char*>(bytes.data()), bytes.size());
  if (!parser.chunked()) {
    return !buffered.empty();
  }
  if (buffered.starts_with("\r\n")) {
    buffered.remove_prefix(2);  // the end of the chunk just delivered
  }
  uint64_t size = 0;
  size_t digits = 0;
  for (; digits < buffered.size() && digits < 16; ++digits) {
    const char c = buffered[digits];
    int value;
    if (c >= '0' && c <= '9') {
      value = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      value = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      value = c - 'A' + 10;
    } else {
      break;
    }
    size = size * 16 + static_cast<uint64_t>(value);
  }
  if (digits == 0 || size == 0) {
    return false;  // not a chunk header, or the last chunk: the normal path reads it
  }
  const size_t line_end = buffered.find("\r\n", digits);
  return line_end != std::string_view::npos && buffered.size() - (line_end + 2) >= size;
}

// Timeouts of a relayed stream without a timer per read and per write: one timer per stream,
// re-armed only when it fires (about once per idle timeout), checks when the upstream last
// delivered and how long the write in progress has been hanging. Once the stream is over,
// `active` is cleared and the timer cancelled; its handler then touches nothing else.
struct StreamWatchdog {
  explicit StreamWatchdog(net::io_context& io_context) : timer(io_context) {}
  net::steady_timer timer;
  Clock::time_point last_read;
  bool active = true;
  bool idle_expired = false;
};

void ArmStreamWatchdog(const std::shared_ptr<StreamWatchdog>& watchdog, Clock::duration idle,
                       upstream::Connection* connection, Downstream* downstream) {
  const Clock::duration write_timeout = downstream->write_timeout();
  Clock::time_point next = std::min(watchdog->last_read + idle, Clock::now() + write_timeout);
  if (const auto since = downstream->write_pending_since()) {
    next = std::min(next, *since + write_timeout);
  }
  watchdog->timer.expires_at(next);
  watchdog->timer.async_wait([watchdog, idle, connection, downstream](beast::error_code ec) {
    if (ec || !watchdog->active) {
      return;
    }
    const Clock::time_point now = Clock::now();
    if (now - watchdog->last_read >= idle) {
      watchdog->idle_expired = true;
      connection->Cancel();
      return;
    }
    if (const auto since = downstream->write_pending_since();
        since && now - *since >= downstream->write_timeout()) {
      downstream->Abort();  // the client stopped reading
      return;
    }
    ArmStreamWatchdog(watchdog, idle, connection, downstream);
  });
}

bool IsEventStream(std::string_view content_type) {
  constexpr std::string_view kEventStream = "text/event-stream";
  return content_type.size() >= kEventStream.size() &&
         beast::iequals(content_type.substr(0, kEventStream.size()), kEventStream);
}

// Abseil's Debian build has its own string_view type.
std::string_view View(absl::string_view text) { return {text.data(), text.size()}; }

bool IsRetryableStatus(int status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

// The OpenAI endpoints berry relays, by path: the upstream path after the base URL.
std::string_view RelayedPath(std::string_view path) {
  static constexpr std::array<std::string_view, 3> kPaths = {"/v1/chat/completions",
                                                             "/v1/completions", "/v1/embeddings"};
  for (std::string_view p : kPaths) {
    if (path == p) {
      return p.substr(3);  // drop "/v1": base_url carries the version
    }
  }
  return {};
}

}  // namespace

// One request's state across attempts.
struct ProxyHandler::Exchange {
  Exchange(Request& request, Downstream& downstream)
      : request(request), downstream(downstream), start(Clock::now()) {
    std::string_view target = request.target();
    const size_t q = target.find('?');
    path = target.substr(0, q);
    if (q != std::string_view::npos) {
      query = target.substr(q);
    }
  }

  Request& request;
  Downstream& downstream;
  Clock::time_point start;
  std::string_view path;
  std::string_view query;  // "?..." or empty

  const RouteGeneration* generation = nullptr;
  const auth::Client* client = nullptr;
  const selection::CompiledModel* model = nullptr;
  const selection::CompiledBackend* backend = nullptr;  // of the attempt that answered
  openai::RequestFields fields;
  absl::InlinedVector<uint32_t, 8> tried;
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
  std::string error;  // for the access log

  // The last failed attempt, answered to the client when every attempt failed.
  bool last_timed_out = false;
  std::optional<Response> last_upstream_response;  // a 429/5xx from upstream, passed through
};

ProxyHandler::ProxyHandler(net::io_context& io_context, RouteStore& routes, ProxyMetrics& metrics,
                           std::shared_ptr<const upstream::TlsContexts> tls, AccessLog& access_log,
                           ProxyOptions options)
    : io_context_(io_context),
      routes_(routes),
      metrics_(metrics),
      pool_(io_context, std::move(tls)),
      access_log_(access_log),
      options_(options) {}

ProxyHandler::~ProxyHandler() { pool_.Clear(); }

void ProxyHandler::Refresh() {
  const uint64_t generation = routes_.generation();
  if (generation == seen_generation_) {
    return;
  }
  generation_ = routes_.Current();
  seen_generation_ = generation_ ? generation_->generation : 0;
  if (generation_) {
    if (picker_) {
      picker_->Reset(generation_->runtime);
    } else {
      picker_.emplace(generation_->runtime);
    }
  }
  metrics_.Reset(generation_ ? &generation_->snapshot() : nullptr);
}

uint64_t ProxyHandler::body_limit() {
  Refresh();
  if (generation_ == nullptr || generation_->settings().max_request_body_bytes() == 0) {
    return 32ull << 20;
  }
  return generation_->settings().max_request_body_bytes();
}

net::awaitable<void> ProxyHandler::Handle(Request& request, Downstream& downstream) {
  Refresh();
  Exchange exchange(request, downstream);
  exchange.generation = generation_.get();
  metrics_.shared().inflight->Increment();
  co_await Route(exchange);
  metrics_.shared().inflight->Decrement();
  Finish(exchange);
}

net::awaitable<void> ProxyHandler::HandleBadRequest(http::status status, std::string_view reason,
                                                    Downstream& downstream) {
  Response response{status, 11};
  const ErrorKind kind = status == http::status::payload_too_large ? ErrorKind::kRequestTooLarge
                                                                   : ErrorKind::kInvalidRequest;
  response.set(http::field::content_type, "application/json");
  response.body() = openai::ErrorJson(kind, reason);
  co_await downstream.Write(response);
  metrics_.CountRequest(nullptr, nullptr, static_cast<int>(status));
  AccessLogEntry entry;
  entry.request_id = downstream.request_id();
  entry.status = static_cast<int>(status);
  entry.error = reason;
  access_log_.Write(entry);
}

void ProxyHandler::Finish(Exchange& exchange) {
  if (exchange.local_endpoint) {
    metrics_.shared().CountLocalEndpoint(exchange.path, exchange.status);
  } else if (exchange.status != 0) {
    metrics_.CountRequest(exchange.model, exchange.backend, exchange.status);
  }
  if (exchange.model != nullptr && exchange.backend != nullptr) {
    const double seconds = SecondsSince(exchange.start);
    metrics_.ObserveDuration(*exchange.model, *exchange.backend, seconds);
    BackendLoad& load = exchange.generation->load->backend(exchange.backend->index());
    load.ObserveLatency(seconds);
    load.AddTokens(exchange.prompt_tokens, exchange.completion_tokens);
  }
  if (!access_log_.enabled()) {
    return;
  }
  AccessLogEntry entry;
  entry.request_id = exchange.downstream.request_id();
  entry.user = exchange.client != nullptr ? std::string_view(exchange.client->id()) : "";
  entry.method = exchange.request.method_string();
  entry.path = exchange.path;
  entry.model = exchange.model != nullptr ? std::string_view(exchange.model->name()) : "";
  entry.backend = exchange.backend != nullptr ? std::string_view(exchange.backend->id()) : "";
  entry.status = exchange.client_gone && !exchange.answered ? 499 : exchange.status;
  entry.duration_seconds = SecondsSince(exchange.start);
  entry.ttfb_seconds = exchange.ttfb;
  entry.retries = exchange.retries;
  entry.stream = exchange.fields.stream;
  entry.panic = exchange.panic;
  entry.prompt_tokens = exchange.prompt_tokens;
  entry.completion_tokens = exchange.completion_tokens;
  entry.error = exchange.error;
  access_log_.Write(entry);
}

net::awaitable<void> ProxyHandler::Send(Exchange& exchange, Response& response) {
  if (exchange.path.starts_with("/v1/")) {
    // Browsers calling the API directly need CORS on the actual response too.
    response.set(http::field::access_control_allow_origin, "*");
    response.set(http::field::access_control_expose_headers, "x-request-id");
  }
  exchange.status = response.result_int();
  exchange.answered = true;
  co_await exchange.downstream.Write(response);
}

net::awaitable<void> ProxyHandler::SendError(Exchange& exchange, int status, std::string body,
                                             int retry_after_seconds) {
  Response response{static_cast<http::status>(status), 11};
  response.set(http::field::content_type, "application/json");
  if (retry_after_seconds > 0) {
    response.set(http::field::retry_after, std::to_string(retry_after_seconds));
  }
  response.body() = std::move(body);
  co_await Send(exchange, response);
}

net::awaitable<void> ProxyHandler::Route(Exchange& exchange) {
  if (exchange.request.method() == http::verb::post && !RelayedPath(exchange.path).empty()) {
    return Proxy(exchange);
  }
  return ServeLocal(exchange);
}

net::awaitable<void> ProxyHandler::ServeLocal(Exchange& exchange) {
  const std::string_view path = exchange.path;
  const http::verb method = exchange.request.method();
  const auto json_reply = [&](http::status status, std::string body) -> net::awaitable<void> {
    Response response{status, 11};
    response.set(http::field::content_type, "application/json");
    response.body() = std::move(body);
    co_await Send(exchange, response);
  };
  const auto method_not_allowed = [&](std::string_view allow) -> net::awaitable<void> {
    Response response{http::status::method_not_allowed, 11};
    response.set(http::field::content_type, "application/json");
    response.set(http::field::allow, allow);
    response.body() = openai::ErrorJson(
        ErrorKind::kMethodNotAllowed,
        absl::StrCat("method ", std::string(exchange.request.method_string()),
                     " is not allowed on ", std::string(path), "; use ", std::string(allow)));
    co_await Send(exchange, response);
  };

  exchange.local_endpoint =
      path == "/healthz" || path == "/health" || path == "/readyz" || path == "/metrics";
  if (path == "/healthz" || path == "/health") {
    co_await json_reply(http::status::ok, R"({"status":"ok"})");
    co_return;
  }
  if (path == "/readyz") {
    if (routes_.shutting_down()) {
      exchange.error = "shutting down";
      co_await json_reply(http::status::service_unavailable,
                          R"({"status":"not ready","reason":"shutting down"})");
    } else if (exchange.generation == nullptr) {
      exchange.error = "no route table loaded";
      co_await json_reply(http::status::service_unavailable,
                          R"({"status":"not ready","reason":"no route table loaded"})");
    } else {
      std::string body = R"({"status":"ready","version":)";
      json::AppendJsonString(body, exchange.generation->version());
      body += "}";
      co_await json_reply(http::status::ok, std::move(body));
    }
    co_return;
  }
  if (path == "/metrics") {
    Response response{http::status::ok, 11};
    response.set(http::field::content_type, metrics::kContentType);
    response.body() = metrics_.shared().registry().Render();
    co_await Send(exchange, response);
    co_return;
  }
  if (method == http::verb::options && path.starts_with("/v1/")) {
    // CORS preflight: any origin may call with these methods and headers.
    Response response{http::status::no_content, 11};
    response.set(http::field::access_control_allow_origin, "*");
    response.set(http::field::access_control_allow_methods, "GET, POST, OPTIONS");
    const auto requested = exchange.request[http::field::access_control_request_headers];
    response.set(http::field::access_control_allow_headers,
                 requested.empty() ? beast::string_view("authorization, content-type") : requested);
    response.set(http::field::access_control_max_age, "86400");
    exchange.status = 204;
    exchange.answered = true;
    co_await exchange.downstream.Write(response);
    co_return;
  }
  if (!RelayedPath(path).empty()) {
    co_await method_not_allowed("POST");  // Route() sent the POSTs to Proxy()
    co_return;
  }
  if (path == "/v1/models" || path.starts_with("/v1/models/")) {
    if (method != http::verb::get) {
      co_await method_not_allowed("GET");
    } else {
      // (Computed first: GCC 12 miscompiles a conditional expression inside co_await.)
      std::string_view model_id;
      if (path.size() > 11) {
        model_id = path.substr(11);
      }
      co_await ListModels(exchange, model_id);
    }
    co_return;
  }
  exchange.error = "unknown path";
  co_await json_reply(http::status::not_found,
                      openai::ErrorJson(ErrorKind::kUnknownUrl,
                                        absl::StrCat("unknown request URL: ",
                                                     std::string(exchange.request.method_string()),
                                                     " ", std::string(path))));
}

const auth::Client* ProxyHandler::Authenticate(Exchange& exchange, std::string* error) {
  auto client =
      exchange.generation->clients->Authenticate(exchange.request[http::field::authorization]);
  if (!client.ok()) {
    *error = std::string(client.status().message());
    return nullptr;
  }
  return *client;
}

net::awaitable<void> ProxyHandler::ListModels(Exchange& exchange, std::string_view model_id) {
  if (exchange.generation == nullptr) {
    exchange.error = "no route table loaded";
    co_await SendError(exchange, 503,
                       openai::ErrorJson(ErrorKind::kNoBackendAvailable, "no route table loaded"));
    co_return;
  }
  std::string error;
  exchange.client = Authenticate(exchange, &error);
  if (exchange.client == nullptr) {
    exchange.error = error;
    co_await SendError(exchange, 401, openai::ErrorJson(ErrorKind::kInvalidApiKey, error));
    co_return;
  }
  const auto model_json = [](std::string& out, const selection::CompiledModel& model) {
    out += R"({"id":)";
    json::AppendJsonString(out, model.name());
    out += R"(,"object":"model","created":0,"owned_by":"berry"})";
  };
  Response response{http::status::ok, 11};
  response.set(http::field::content_type, "application/json");
  if (!model_id.empty()) {
    auto model = exchange.generation->snapshot().FindModel(model_id);
    if (!model.ok() || !exchange.client->MayUse((*model)->name())) {
      exchange.error = "model not found";
      co_await SendError(
          exchange, 404,
          openai::ErrorJson(ErrorKind::kModelNotFound,
                            absl::StrCat("The model '", std::string(model_id), "' does not exist"),
                            "model"));
      co_return;
    }
    model_json(response.body(), **model);
  } else {
    std::string& body = response.body();
    body = R"({"object":"list","data":[)";
    bool first = true;
    for (const selection::CompiledModel& model : exchange.generation->snapshot().models()) {
      if (!model.enabled() || !exchange.client->MayUse(model.name())) {
        continue;
      }
      if (!first) {
        body += ',';
      }
      first = false;
      model_json(body, model);
    }
    body += "]}";
  }
  co_await Send(exchange, response);
}

std::optional<ProxyHandler::ErrorReply> ProxyHandler::Admit(Exchange& exchange) {
  if (exchange.generation == nullptr) {
    exchange.error = "no route table loaded";
    return ErrorReply{503,
                      openai::ErrorJson(ErrorKind::kNoBackendAvailable, "no route table loaded")};
  }
  const RouteGeneration& generation = *exchange.generation;

  std::string error;
  exchange.client = Authenticate(exchange, &error);
  if (exchange.client == nullptr) {
    exchange.error = error;
    return ErrorReply{401, openai::ErrorJson(ErrorKind::kInvalidApiKey, error)};
  }
  const auth::Client& client = *exchange.client;

  const int64_t now_unix = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  const auth::Decision decision = generation.limiter->Check(client, now_unix);
  if (!decision.allowed) {
    metrics_.CountRateLimited(client.id());
    const std::string window(auth::WindowName(decision.window));
    exchange.error = absl::StrCat("rate limit: ", decision.limit, " requests per ", window);
    return ErrorReply{429,
                      openai::ErrorJson(ErrorKind::kRateLimited,
                                        absl::StrCat("Rate limit reached: ", decision.limit,
                                                     " requests per ", window, ". Retry after ",
                                                     decision.reset_after_seconds, "s.")),
                      static_cast<int>(decision.reset_after_seconds)};
  }

  auto fields = openai::ScanRequestBody(exchange.request.body());
  if (!fields.ok()) {
    exchange.error = std::string(fields.status().message());
    return ErrorReply{
        400, openai::ErrorJson(ErrorKind::kInvalidRequest, View(fields.status().message()))};
  }
  exchange.fields = *std::move(fields);

  auto model = generation.snapshot().FindModel(exchange.fields.model);
  if (!model.ok()) {
    exchange.error = "model not found";
    return ErrorReply{
        404, openai::ErrorJson(
                 ErrorKind::kModelNotFound,
                 absl::StrCat("The model '", exchange.fields.model, "' does not exist"), "model")};
  }
  if (!client.MayUse((*model)->name())) {
    exchange.error = "model not allowed";
    return ErrorReply{403, openai::ErrorJson(ErrorKind::kModelNotAllowed,
                                             absl::StrCat("This API key may not use the model '",
                                                          exchange.fields.model, "'"),
                                             "model")};
  }
  exchange.model = *model;
  return std::nullopt;
}

const selection::CompiledBackend* ProxyHandler::PickBackend(Exchange& exchange,
                                                            std::string* error) {
  const RouteGeneration& generation = *exchange.generation;
  const auth::Client& client = *exchange.client;
  selection::PickRequest pick_request;
  pick_request.user_tags =
      client.anonymous() ? &generation.untagged : &generation.user_tags[client.index()];
  pick_request.tried = exchange.tried;
  pick_request.now_ns = MonotonicNs(Clock::now());
  auto pick = picker_->Pick(*exchange.model, pick_request, rng_);
  if (!pick.ok()) {
    *error = std::string(pick.status().message());
    return nullptr;
  }
  if (pick->panic) {
    exchange.panic = true;
    metrics_.CountPanic(*exchange.model);
  }
  if (!exchange.tried.empty()) {
    ++exchange.retries;
    metrics_.CountRetry(*exchange.model);
  }
  exchange.tried.push_back(pick->backend->index());
  return pick->backend;
}

ProxyHandler::ErrorReply ProxyHandler::FailureReply(Exchange& exchange,
                                                    std::string_view pick_error) {
  if (exchange.tried.empty()) {
    exchange.error = std::string(pick_error);
    return {503, openai::ErrorJson(ErrorKind::kNoBackendAvailable, pick_error)};
  }
  if (exchange.last_timed_out) {
    return {504, openai::ErrorJson(ErrorKind::kUpstreamTimeout,
                                   absl::StrCat("no backend answered in time after ",
                                                exchange.tried.size(), " attempt(s)"))};
  }
  return {502,
          openai::ErrorJson(ErrorKind::kBadGateway,
                            absl::StrCat("no backend could be reached after ",
                                         exchange.tried.size(), " attempt(s): ", exchange.error))};
}

// The hot path keeps its coroutine frame small (what is decided without waiting is done in
// plain functions): a frame over 1020 bytes bypasses Asio's recycling allocator and costs a
// malloc and a free per request.
net::awaitable<void> ProxyHandler::Proxy(Exchange& exchange) {
  if (std::optional<ErrorReply> rejected = Admit(exchange)) {
    co_await SendError(exchange, rejected->status, std::move(rejected->body),
                       rejected->retry_after_seconds);
    co_return;
  }
  const uint32_t max_attempts = exchange.generation->settings().max_retries() + 1;
  std::string pick_error;
  for (uint32_t attempt = 0; attempt < max_attempts; ++attempt) {
    const selection::CompiledBackend* backend = PickBackend(exchange, &pick_error);
    if (backend == nullptr) {
      break;
    }
    co_await Attempt(exchange, *backend);
    if (exchange.answered || exchange.client_gone) {
      co_return;
    }
  }
  // Every attempt failed, or nothing could be picked.
  if (!exchange.tried.empty() && exchange.last_upstream_response) {
    co_await Send(exchange, *exchange.last_upstream_response);
    co_return;
  }
  ErrorReply reply = FailureReply(exchange, pick_error);
  co_await SendError(exchange, reply.status, std::move(reply.body));
}

namespace {

void RecordOutcome(const RouteGeneration& generation, const selection::CompiledBackend& backend,
                   outlier::Outcome outcome) {
  generation.load->backend(backend.index()).RecordOutcome(outcome);
  const auto result =
      generation.outliers->Record(backend.index(), outcome, MonotonicNs(Clock::now()));
  if (result.ejected) {
    log::Warn("backend ejected", {{"backend", backend.id()},
                                  {"reason", outlier::OutcomeName(outcome)},
                                  {"multiplier", std::to_string(result.multiplier)}});
  }
}

void FailAttempt(ProxyHandler::Exchange& exchange, const selection::CompiledBackend& backend,
                 outlier::Outcome outcome, std::string message) {
  exchange.last_timed_out = outcome == outlier::Outcome::kTimeout;
  exchange.error = std::move(message);
  exchange.backend = &backend;
  RecordOutcome(*exchange.generation, backend, outcome);
}

// The upstream request: the client's end-to-end headers, the provider's key and headers, the
// body with `model` rewritten. Written straight into `head` and `body` (common/http/wire.h).
void BuildUpstreamRequest(const ProxyHandler::Exchange& exchange,
                          const selection::CompiledBackend& backend, const ProviderRoute& route,
                          std::string& head, std::string& body) {
  const auto configured = [&route](std::string_view name) {
    for (const auto& header : route.headers) {
      if (beast::iequals(header.first, name)) {
        return true;
      }
    }
    return false;
  };
  openai::RewriteModel(exchange.request.body(), exchange.fields, backend.config().upstream_model(),
                       body);
  head.reserve(1024);
  const auto method = exchange.request.method_string();
  wire::AppendRequestLine(head, std::string_view(method.data(), method.size()),
                          {route.endpoint.path_prefix, RelayedPath(exchange.path), exchange.query});
  const std::string_view connection_tokens = exchange.request[http::field::connection];
  for (const auto& field : exchange.request) {
    const http::field name = field.name();
    const std::string_view name_string(field.name_string().data(), field.name_string().size());
    if (IsHopByHopOrOwn(name, name_string, connection_tokens) ||
        name == http::field::authorization || name == http::field::expect ||
        name == http::field::accept_encoding) {
      continue;  // the body must arrive uncompressed: we read `usage` and split SSE events
    }
    if (!route.headers.empty() && configured(name_string)) {
      continue;  // the provider's configured value wins
    }
    wire::AppendField(head, name_string,
                      std::string_view(field.value().data(), field.value().size()));
  }
  if (!configured("host")) {
    wire::AppendField(head, "Host", route.endpoint.host_header);
  }
  if (!route.authorization.empty() && !configured("authorization")) {
    wire::AppendField(head, "Authorization", route.authorization);
  }
  if (!configured("x-request-id")) {
    wire::AppendField(head, "x-request-id", exchange.downstream.request_id());
  }
  for (const auto& [name, value] : route.headers) {
    wire::AppendField(head, name, value);
  }
  const http::verb verb = exchange.request.method();
  if (!body.empty() || verb == http::verb::post || verb == http::verb::put ||
      verb == http::verb::patch) {
    wire::AppendContentLength(head, body.size());
  }
  head.append(wire::kCrLf);
}

// A retryable upstream answer (429/5xx), kept as a message: it is what the client gets if no
// other backend answers.
Response KeptForRetry(int status, const upstream::ResponseFields& upstream_fields,
                      std::string body) {
  Response response{static_cast<http::status>(status), 11};
  const std::string_view upstream_connection = upstream_fields[http::field::connection];
  for (const auto& field : upstream_fields) {
    if (!IsHopByHopOrOwn(field.name(), field.name_string(), upstream_connection)) {
      response.insert(field.name_string(), field.value());
    }
  }
  response.body() = std::move(body);
  return response;
}

}  // namespace

net::awaitable<void> ProxyHandler::Attempt(Exchange& exchange,
                                           const selection::CompiledBackend& backend) {
  const RouteGeneration& generation = *exchange.generation;
  const ProviderRoute& route = generation.provider_for(backend);
  selection::BackendRuntime& runtime = generation.runtime->backend(backend);
  BackendLoad& load = generation.load->backend(backend.index());
  runtime.BeginRequest();
  load.RecordIssued();
  absl::Cleanup end_request = [&runtime] { runtime.EndRequest(); };

  PooledString upstream_head(strings_);
  PooledString upstream_body(strings_);
  BuildUpstreamRequest(exchange, backend, route, *upstream_head, *upstream_body);

  const Clock::time_point attempt_start = Clock::now();
  const auto request_timeout = Seconds(generation.settings().request_timeout(), 30);
  const auto first_byte_timeout =
      std::min(request_timeout, Seconds(backend.provider().timeout(), 30));

  std::unique_ptr<upstream::Connection> connection;
  std::optional<upstream::ResponseParser> parser;
  // A kept-alive connection the provider already closed fails before any response byte: that is
  // retried once on a fresh connection and is not the backend's fault.
  for (bool fresh = false;; fresh = true) {
    connection = fresh ? nullptr : pool_.TakeIdle(route.endpoint);
    if (connection == nullptr) {
      upstream::ConnectError connect_error = upstream::ConnectError::kNone;
      auto connected = co_await pool_.Connect(route.endpoint, first_byte_timeout, &connect_error);
      if (!connected.ok()) {
        FailAttempt(exchange, backend,
                    connect_error == upstream::ConnectError::kTimeout
                        ? outlier::Outcome::kTimeout
                        : outlier::Outcome::kConnectError,
                    std::string(connected.status().message()));
        co_return;
      }
      connection = *std::move(connected);
    }
    upstream::Connection* raw = connection.get();
    exchange.downstream.WatchForDisconnect([&exchange, raw] {
      exchange.client_gone = true;
      raw->Cancel();
    });
    connection->ExpiresAfter(first_byte_timeout - (Clock::now() - attempt_start));
    parser.emplace(std::piecewise_construct, std::make_tuple(),
                   std::make_tuple(exchange.downstream.arena()));
    parser->body_limit(boost::none);
    const beast::error_code ec =
        co_await connection->RoundTrip(*upstream_head, *upstream_body, *parser);
    exchange.downstream.StopWatching();
    if (exchange.client_gone) {
      co_return;
    }
    if (!ec) {
      break;
    }
    if (ec == beast::error::timeout) {
      FailAttempt(exchange, backend, outlier::Outcome::kTimeout,
                  "upstream timed out before the first byte");
      co_return;
    }
    if (connection->reused() && !fresh && !parser->got_some() && connection->buffer().size() == 0) {
      continue;
    }
    FailAttempt(exchange, backend, outlier::Outcome::kConnectError,
                absl::StrCat("upstream connection failed: ", ec.message()));
    co_return;
  }

  // The first-byte deadline is over; until the next upstream read sets one, none applies (a
  // deadline would otherwise close the connection while the client is being written to).
  connection->ExpiresNever();
  exchange.ttfb = SecondsSince(attempt_start);
  runtime.RecordTtfb(exchange.ttfb);
  load.ObserveTtfb(exchange.ttfb);
  metrics_.ObserveTtfb(*exchange.model, backend, exchange.ttfb);
  const int status = parser->get().result_int();
  const bool retryable = IsRetryableStatus(status);

  if (!retryable && status < 300 && IsEventStream(parser->get()[http::field::content_type])) {
    exchange.backend = &backend;
    if (co_await RelayStream(exchange, backend, *connection, *parser)) {
      pool_.Release(std::move(connection));
    }
    co_return;
  }

  // A whole response: read it completely before the client sees anything, so a failure here can
  // still go to another backend. The body is read straight into its string.
  PooledString pooled_body(strings_);
  std::string& body = *pooled_body;
  if (const auto length = parser->content_length()) {
    body.reserve(std::min<uint64_t>(*length, options_.max_response_body_bytes + 1));
  }
  connection->ExpiresAfter(request_timeout - (Clock::now() - attempt_start));
  upstream::Connection* raw = connection.get();
  exchange.downstream.WatchForDisconnect([&exchange, raw] {
    exchange.client_gone = true;
    raw->Cancel();
  });
  beast::error_code ec;
  while (!parser->is_done()) {
    const size_t had = body.size();
    // Exactly what is left when the length is known (no zero-filling of spare room), else
    // growing steps.
    size_t room = std::max<size_t>(4096, had);
    if (const auto left = parser->content_length_remaining(); left && *left > 0) {
      room = static_cast<size_t>(std::min<uint64_t>(*left, 1 << 20));
    }
    body.resize(had + room);
    auto [read_ec, n] = co_await connection->ReadSome(*parser, body.data() + had, room);
    body.resize(had + n);
    if (read_ec) {
      ec = read_ec;
      break;
    }
    if (body.size() > options_.max_response_body_bytes) {
      ec = http::error::body_limit;
      break;
    }
  }
  exchange.downstream.StopWatching();
  if (exchange.client_gone) {
    co_return;
  }
  if (ec) {
    FailAttempt(
        exchange, backend,
        ec == beast::error::timeout ? outlier::Outcome::kTimeout : outlier::Outcome::kStreamBroken,
        absl::StrCat("upstream response broke off: ", ec.message()));
    co_return;
  }
  if (parser->get().keep_alive()) {
    pool_.Release(std::move(connection));
  }

  RecordOutcome(generation, backend, outlier::OutcomeForStatus(status));
  exchange.backend = &backend;
  if (retryable) {
    exchange.last_timed_out = false;
    exchange.error = absl::StrCat("upstream answered ", status);
    exchange.last_upstream_response = KeptForRetry(status, parser->get().base(), std::move(body));
    co_return;
  }
  exchange.error.clear();  // an earlier attempt may have failed; this one answers
  if (const auto usage = openai::ExtractUsage(body)) {
    exchange.prompt_tokens = usage->prompt_tokens;
    exchange.completion_tokens = usage->completion_tokens;
    metrics_.CountTokens(*exchange.model, backend, usage->prompt_tokens, usage->completion_tokens);
  }
  // Relayed without building a response message: the upstream fields go straight into the head.
  const auto& upstream_fields = parser->get().base();
  std::string& head = exchange.downstream.BeginHead(status);
  AppendRelayedFields(head, upstream_fields, upstream_fields[http::field::connection]);
  exchange.status = status;
  exchange.answered = true;
  co_await exchange.downstream.WriteWithBody(body);
}

net::awaitable<bool> ProxyHandler::RelayStream(Exchange& exchange,
                                               const selection::CompiledBackend& backend,
                                               upstream::Connection& connection,
                                               upstream::ResponseParser& parser) {
  const RouteGeneration& generation = *exchange.generation;
  ResponseHeader header{static_cast<http::status>(parser.get().result_int()), 11};
  const std::string_view upstream_connection = parser.get()[http::field::connection];
  for (const auto& field : parser.get()) {
    if (!IsHopByHopOrOwn(field.name(), field.name_string(), upstream_connection)) {
      header.insert(field.name_string(), field.value());
    }
  }
  header.set(http::field::access_control_allow_origin, "*");
  header.set(http::field::access_control_expose_headers, "x-request-id");
  exchange.status = header.result_int();
  exchange.answered = true;
  if (!co_await exchange.downstream.WriteHeader(header)) {
    exchange.client_gone = true;
    co_return false;
  }

  openai::SseEventSplitter splitter;
  std::optional<openai::Usage> usage;
  const auto idle_timeout = Seconds(generation.settings().stream_idle_timeout(), 60);
  std::array<char, 8 * 1024> piece;
  exchange.downstream.WatchForDisconnect([&exchange, &connection] {
    exchange.client_gone = true;
    connection.Cancel();
  });
  connection.ExpiresNever();
  exchange.downstream.UseWatchdogForWrites();
  auto watchdog = std::make_shared<StreamWatchdog>(io_context_);
  watchdog->last_read = Clock::now();
  ArmStreamWatchdog(watchdog, idle_timeout, &connection, &exchange.downstream);
  absl::Cleanup stop_watchdog = [&watchdog] {
    watchdog->active = false;
    watchdog->timer.cancel();
  };
  beast::error_code broken;
  while (!parser.is_done()) {
    // Whatever the connection has already buffered is taken along (no system call for it), so
    // a relay that fell behind catches up with fewer, larger writes.
    size_t n = 0;
    beast::error_code ec;
    do {
      auto [read_ec, got] =
          co_await connection.ReadSome(parser, piece.data() + n, piece.size() - n);
      ec = read_ec;
      n += got;
    } while (!ec && !parser.is_done() && piece.size() - n >= 1024 &&
             CanContinueWithoutReading(parser, connection.buffer()));
    watchdog->last_read = Clock::now();
    if (n > 0) {
      const std::string_view data(piece.data(), n);
      splitter.Feed(data, [&usage](std::string_view event) {
        if (auto found = openai::ExtractUsage(event)) {
          usage = found;
        }
      });
      if (!co_await exchange.downstream.WriteChunk(data)) {
        exchange.client_gone = true;
        break;
      }
    }
    if (ec) {
      broken = ec;
      break;
    }
  }
  exchange.downstream.StopWatching();
  if (usage) {
    exchange.prompt_tokens = usage->prompt_tokens;
    exchange.completion_tokens = usage->completion_tokens;
    metrics_.CountTokens(*exchange.model, backend, usage->prompt_tokens, usage->completion_tokens);
  }
  if (exchange.client_gone) {
    exchange.downstream.set_keep_alive(false);
    connection.Cancel();  // the upstream call is abandoned with the client
    co_return false;
  }
  if (broken) {
    const bool timed_out = watchdog->idle_expired || broken == beast::error::timeout;
    exchange.error = timed_out ? "upstream stream went idle" : "upstream stream broke off";
    metrics_.CountStreamBroken(*exchange.model, backend);
    RecordOutcome(generation, backend,
                  timed_out ? outlier::Outcome::kTimeout : outlier::Outcome::kStreamBroken);
    // One error event, then the connection closes without the chunked terminator, so no client
    // can mistake the stream for a complete one.
    std::string tail = splitter.AtEventBoundary() ? "" : "\n\n";
    tail += openai::SseErrorEvent(timed_out
                                      ? "upstream stream timed out: no data within the idle timeout"
                                      : "upstream stream broke off before it finished");
    co_await exchange.downstream.WriteChunk(tail);
    exchange.downstream.set_keep_alive(false);
    co_return false;
  }
  co_await exchange.downstream.WriteEnd();
  exchange.error.clear();
  RecordOutcome(generation, backend, outlier::Outcome::kSuccess);
  co_return parser.get().keep_alive();
}

}  // namespace berry::proxy
