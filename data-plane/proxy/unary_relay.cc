#include "data-plane/proxy/unary_relay.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "data-plane/dialect/anthropic.h"
#include "data-plane/dialect/gemini.h"
#include "data-plane/dialect/messages_front.h"
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

// A provider's answer in the shape the client speaks, in place: OpenAI's for /v1/chat/...,
// Anthropic's for /v1/messages. An Anthropic error keeps Anthropic's status (529 included) here;
// an Anthropic answer to a Messages request passes unchanged. The reason when a 2xx body is not
// what the provider answers.
std::optional<std::string> TranslateAnswer(const Exchange& exchange, route_table::Dialect dialect,
                                           int& status, std::string& body) {
  const bool ok = status >= 200 && status < 300;
  const bool messages = exchange.messages_front();
  std::string translated;
  if (dialect == route_table::Dialect::kAnthropic) {
    if (messages) {
      return std::nullopt;
    }
    if (!ok) {
      dialect::TranslatedError error = dialect::FromAnthropicError(status, body);
      status = error.status;
      body = std::move(error.body);
      return std::nullopt;
    }
    if (!dialect::FromAnthropicResponse(body, UnixSeconds(), translated)) {
      return absl::StrCat("upstream answered ", status,
                          " with a body that is not an Anthropic message");
    }
    body = std::move(translated);
    return std::nullopt;
  }
  if (dialect == route_table::Dialect::kGemini) {
    if (!ok) {
      dialect::TranslatedError error = dialect::FromGeminiError(status, body);
      status = error.status;
      body = std::move(error.body);
    } else if (!dialect::FromGeminiResponse(body, exchange.model->name(), UnixSeconds(),
                                            translated)) {
      return absl::StrCat("upstream answered ", status,
                          " with a body that is not a Gemini GenerateContentResponse");
    } else {
      body = std::move(translated);
    }
  }
  // OpenAI-shaped now.
  if (!messages) {
    return std::nullopt;
  }
  if (!ok) {
    body = dialect::MessagesErrorFromOpenAi(status, body);
    return std::nullopt;
  }
  if (!dialect::ChatToMessagesResponse(body, exchange.model->name(), translated)) {
    return absl::StrCat("upstream answered ", status, " with a body that is not a chat.completion");
  }
  body = std::move(translated);
  return std::nullopt;
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

  if (auto failure = TranslateAnswer(exchange, route.dialect, status, body)) {
    stats_.FailAttempt(exchange, backend, outlier::Outcome::kStreamBroken, *std::move(failure));
    co_return;
  }
  const bool passed_through =
      route.dialect == (exchange.messages_front() ? route_table::Dialect::kAnthropic
                                                  : route_table::Dialect::kOpenAi);
  if (!passed_through) {
    // Whatever the provider (or a gateway in between) sent, the body is JSON now.
    parser.get().set(http::field::content_type, "application/json");
  }
  // The status the answer counts as for retries, failover and outlier detection.
  const int counted = route.dialect == route_table::Dialect::kAnthropic
                          ? dialect::NormalizeAnthropicStatus(status)
                          : status;

  stats_.RecordOutcome(*exchange.generation, backend, outlier::OutcomeForStatus(counted));
  if (counted == 429) {
    stats_.RecordRateLimited(*exchange.generation, backend, parser.get().base());
  }
  exchange.backend = &backend;
  if (IsRetryableStatus(counted)) {
    exchange.last_timed_out = false;
    exchange.error = absl::StrCat("upstream answered ", status);
    exchange.last_upstream_response = KeptForRetry(status, parser.get().base(), std::move(body));
    co_return;
  }
  exchange.error.clear();  // an earlier attempt may have failed; this one answers
  if (const auto usage =
          exchange.messages_front() ? dialect::MessagesUsage(body) : openai::ExtractUsage(body)) {
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
