#include "data-plane/proxy/upstream_attempt.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/http/wire.h"
#include "data-plane/dialect/anthropic.h"
#include "data-plane/dialect/gemini.h"
#include "data-plane/dialect/messages_front.h"
#include "data-plane/openai/errors.h"
#include "data-plane/openai/request_body.h"
#include "data-plane/proxy/header_policy.h"

namespace berry::proxy {
namespace {

// Interim (1xx) answers skipped before a provider's real one; more is a broken provider.
constexpr int kMaxInterimResponses = 8;

// The upstream request: the request line, the headers HeaderPolicy relays and adds, the body
// with `model` rewritten (or, for an Anthropic provider, translated to a Messages API request;
// for a Gemini provider, to a generateContent request whose target names the model and which
// does not carry the client's query string). A Messages request (/v1/messages) is rewritten
// likewise for an Anthropic provider and otherwise translated to a chat request first, which an
// OpenAI provider gets at /chat/completions and a Gemini provider translated once more.
// Written straight into `head` and `body` (common/http/wire.h). Fails only when the provider's
// dialect cannot express the request.
std::optional<dialect::RequestError> BuildUpstreamRequest(const Exchange& exchange,
                                                          const selection::CompiledBackend& backend,
                                                          const ProviderRoute& route,
                                                          std::string& head, std::string& body) {
  std::string_view path = RelayedPath(exchange.path);
  std::string_view query = exchange.query;
  std::string gemini_path;
  // What the Gemini translation starts from: the client's chat request, or the one a Messages
  // request means.
  std::string chat_body;
  std::string_view gemini_source = exchange.request.body();
  if (exchange.messages_front()) {
    if (route.dialect == route_table::Dialect::kAnthropic) {
      openai::RewriteModel(exchange.request.body(), exchange.fields,
                           backend.config().upstream_model(), body);
    } else {
      std::string& chat = route.dialect == route_table::Dialect::kGemini ? chat_body : body;
      if (auto error = dialect::MessagesToChatRequest(exchange.request.body(),
                                                      backend.config().upstream_model(), chat)) {
        return error;
      }
      path = RelayedPath(kChatCompletionsPath);
      gemini_source = chat_body;
    }
  } else if (route.dialect == route_table::Dialect::kAnthropic) {
    if (auto error = dialect::ToAnthropicRequest(exchange.request.body(),
                                                 backend.config().upstream_model(), body)) {
      return error;
    }
    path = "/messages";
  } else if (route.dialect == route_table::Dialect::kOpenAi) {
    openai::RewriteModel(exchange.request.body(), exchange.fields,
                         backend.config().upstream_model(), body);
    if (InjectsStreamUsage(exchange)) {
      openai::AddIncludeUsage(body);  // the usage chunk is stripped on the way back
    }
  }
  if (route.dialect == route_table::Dialect::kGemini) {
    if (auto error = dialect::ToGeminiRequest(gemini_source, body)) {
      return error;
    }
    gemini_path = dialect::GeminiPath(backend.config().upstream_model(), exchange.fields.stream);
    path = gemini_path;
    query = exchange.fields.stream ? dialect::kGeminiStreamQuery : std::string_view();
  }
  head.reserve(1024);
  const auto method = exchange.request.method_string();
  wire::AppendRequestLine(head, std::string_view(method.data(), method.size()),
                          {route.endpoint.path_prefix, path, query});
  HeaderPolicy::AppendUpstreamRequestFields(head, exchange.request, route,
                                            exchange.downstream.request_id());
  const http::verb verb = exchange.request.method();
  if (!body.empty() || verb == http::verb::post || verb == http::verb::put ||
      verb == http::verb::patch) {
    wire::AppendContentLength(head, body.size());
  }
  head.append(wire::kCrLf);
  return std::nullopt;
}

}  // namespace

UpstreamAttempt::UpstreamAttempt(net::io_context& io_context,
                                 std::shared_ptr<const upstream::TlsContexts> tls,
                                 AttemptStats& stats, const Clock& clock,
                                 uint64_t max_response_body_bytes)
    : pool_(io_context, std::move(tls)),
      stats_(stats),
      clock_(clock),
      unary_(pool_, strings_, stats, clock, max_response_body_bytes),
      stream_(io_context, stats) {}

net::awaitable<void> UpstreamAttempt::Run(Exchange& exchange,
                                          const selection::CompiledBackend& backend) {
  const RouteGeneration& generation = *exchange.generation;
  const ProviderRoute& route = generation.provider_for(backend);
  stats_.BeginAttempt(generation, backend);
  absl::Cleanup end_attempt = [this, &generation, &backend] {
    stats_.EndAttempt(generation, backend);
  };

  PooledString upstream_head(strings_);
  PooledString upstream_body(strings_);
  if (auto error = BuildUpstreamRequest(exchange, backend, route, *upstream_head, *upstream_body)) {
    // Not the backend's fault: another backend of the model may speak a dialect that can.
    exchange.dialect_error = ErrorReply{
        400, openai::ErrorJson(openai::ErrorKind::kInvalidRequest, error->message, error->param)};
    exchange.error = error->message;
    ++exchange.dialect_refusals;
    co_return;
  }

  const Clock::TimePoint attempt_start = clock_.Now();
  const auto request_timeout = SecondsOr(generation.settings().request_timeout(), 30);
  const auto first_byte_timeout =
      std::min(request_timeout, SecondsOr(backend.provider().timeout(), 30));

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
        stats_.FailAttempt(exchange, backend,
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
    connection->ExpiresAfter(first_byte_timeout - (clock_.Now() - attempt_start));
    parser.emplace(std::piecewise_construct, std::make_tuple(),
                   std::make_tuple(exchange.downstream.arena()));
    parser->body_limit(boost::none);
    beast::error_code ec = co_await connection->RoundTrip(*upstream_head, *upstream_body, *parser);
    // Interim answers (100 Continue, 103 Early Hints, ...) come before the real one: skipped,
    // within the first-byte deadline, at most kMaxInterimResponses of them.
    int interim = 0;
    for (; !ec && parser->get().result_int() / 100 == 1; ++interim) {
      if (interim == kMaxInterimResponses) {
        ec = beast::http::error::bad_status;
        break;
      }
      parser.emplace(std::piecewise_construct, std::make_tuple(),
                     std::make_tuple(exchange.downstream.arena()));
      parser->body_limit(boost::none);
      ec = co_await connection->ReadHeader(*parser);
    }
    exchange.downstream.StopWatching();
    if (exchange.client_gone) {
      co_return;
    }
    if (!ec) {
      break;
    }
    if (ec == beast::error::timeout) {
      stats_.FailAttempt(exchange, backend, outlier::Outcome::kTimeout,
                         "upstream timed out before the first byte");
      co_return;
    }
    if (connection->reused() && !fresh && interim == 0 && !parser->got_some() &&
        connection->buffer().size() == 0) {
      continue;
    }
    stats_.FailAttempt(exchange, backend, outlier::Outcome::kConnectError,
                       absl::StrCat("upstream connection failed: ", ec.message()));
    co_return;
  }

  // The first-byte deadline is over; until the next upstream read sets one, none applies (a
  // deadline would otherwise close the connection while the client is being written to).
  connection->ExpiresNever();
  stats_.RecordTtfb(exchange, backend, clock_.SecondsSince(attempt_start));
  int status = static_cast<int>(parser->get().result_int());
  if (route.dialect == route_table::Dialect::kAnthropic) {
    status = dialect::NormalizeAnthropicStatus(status);
  }

  if (!UnaryRelay::IsRetryableStatus(status) && status < 300 &&
      StreamRelay::IsEventStream(parser->get()[http::field::content_type])) {
    exchange.backend = &backend;
    if (co_await stream_.Relay(exchange, backend, route, *connection, *parser)) {
      pool_.Release(std::move(connection));
    }
    co_return;
  }
  // A whole response: read completely before the client sees anything, so a failure here can
  // still go to another backend.
  co_await unary_.Relay(exchange, backend, route, connection, *parser, attempt_start,
                        request_timeout);
}

}  // namespace berry::proxy
