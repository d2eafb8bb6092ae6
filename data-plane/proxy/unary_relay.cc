#include "data-plane/proxy/unary_relay.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "data-plane/dialect/anthropic.h"
#include "data-plane/dialect/gemini.h"
#include "data-plane/openai/usage.h"
#include "data-plane/proxy/header_policy.h"

namespace berry::proxy {
namespace {

// A retryable upstream answer (429/5xx), kept as a message: it is what the client gets if no
// other backend answers.
Response KeptForRetry(int status, const upstream::ResponseFields& upstream_fields,
                      std::string body) {
  Response response{static_cast<http::status>(status), 11};
  HeaderPolicy::CopyRelayedResponseFields(upstream_fields, response.base());
  response.body() = std::move(body);
  return response;
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

net::awaitable<void> UnaryRelay::Relay(
    Exchange& exchange, const selection::CompiledBackend& backend, const ProviderRoute& route,
    std::unique_ptr<upstream::Connection>& connection, upstream::ResponseParser& parser,
    Clock::TimePoint attempt_start, Clock::Duration request_timeout) {
  int status = static_cast<int>(parser.get().result_int());
  // The body is read straight into its string.
  PooledString pooled_body(strings_);
  std::string& body = *pooled_body;
  if (const auto length = parser.content_length()) {
    body.reserve(std::min<uint64_t>(*length, max_response_body_bytes_ + 1));
  }
  connection->ExpiresAfter(request_timeout - (clock_.Now() - attempt_start));
  upstream::Connection* raw = connection.get();
  exchange.downstream.WatchForDisconnect([&exchange, raw] {
    exchange.client_gone = true;
    raw->Cancel();
  });
  beast::error_code ec;
  while (!parser.is_done()) {
    const size_t had = body.size();
    // Exactly what is left when the length is known (no zero-filling of spare room), else
    // growing steps.
    size_t room = std::max<size_t>(4096, had);
    if (const auto left = parser.content_length_remaining(); left && *left > 0) {
      room = static_cast<size_t>(std::min<uint64_t>(*left, 1 << 20));
    }
    body.resize(had + room);
    auto [read_ec, n] = co_await connection->ReadSome(parser, body.data() + had, room);
    body.resize(had + n);
    if (read_ec) {
      ec = read_ec;
      break;
    }
    if (body.size() > max_response_body_bytes_) {
      ec = http::error::body_limit;
      break;
    }
  }
  exchange.downstream.StopWatching();
  if (exchange.client_gone) {
    co_return;
  }
  if (ec) {
    stats_.FailAttempt(
        exchange, backend,
        ec == beast::error::timeout ? outlier::Outcome::kTimeout : outlier::Outcome::kStreamBroken,
        absl::StrCat("upstream response broke off: ", ec.message()));
    co_return;
  }
  if (parser.get().keep_alive()) {
    pool_.Release(std::move(connection));
  }

  if (route.dialect == route_table::Dialect::kAnthropic) {
    if (status >= 200 && status < 300) {
      std::string translated;
      if (!dialect::FromAnthropicResponse(body, UnixSeconds(), translated)) {
        stats_.FailAttempt(exchange, backend, outlier::Outcome::kStreamBroken,
                           absl::StrCat("upstream answered ", status,
                                        " with a body that is not an Anthropic message"));
        co_return;
      }
      body = std::move(translated);
    } else {
      dialect::TranslatedError error = dialect::FromAnthropicError(status, body);
      status = error.status;
      body = std::move(error.body);
    }
    // Whatever the provider (or a gateway in between) sent, the body is JSON now.
    parser.get().set(http::field::content_type, "application/json");
  } else if (route.dialect == route_table::Dialect::kGemini) {
    if (status >= 200 && status < 300) {
      std::string translated;
      if (!dialect::FromGeminiResponse(body, exchange.model->name(), UnixSeconds(), translated)) {
        stats_.FailAttempt(
            exchange, backend, outlier::Outcome::kStreamBroken,
            absl::StrCat("upstream answered ", status,
                         " with a body that is not a Gemini GenerateContentResponse"));
        co_return;
      }
      body = std::move(translated);
    } else {
      dialect::TranslatedError error = dialect::FromGeminiError(status, body);
      status = error.status;
      body = std::move(error.body);
    }
    parser.get().set(http::field::content_type, "application/json");
  }

  stats_.RecordOutcome(*exchange.generation, backend, outlier::OutcomeForStatus(status));
  if (status == 429) {
    stats_.RecordRateLimited(*exchange.generation, backend, parser.get().base());
  }
  exchange.backend = &backend;
  if (IsRetryableStatus(status)) {
    exchange.last_timed_out = false;
    exchange.error = absl::StrCat("upstream answered ", status);
    exchange.last_upstream_response = KeptForRetry(status, parser.get().base(), std::move(body));
    co_return;
  }
  exchange.error.clear();  // an earlier attempt may have failed; this one answers
  if (const auto usage = openai::ExtractUsage(body)) {
    stats_.RecordUsage(exchange, backend, *usage);
  }
  // Relayed without building a response message: the upstream fields go straight into the head.
  std::string& head = exchange.downstream.BeginHead(status);
  HeaderPolicy::AppendRelayedResponseFields(head, parser.get().base());
  exchange.status = status;
  exchange.answered = true;
  co_await exchange.downstream.WriteWithBody(body);
}

}  // namespace berry::proxy
