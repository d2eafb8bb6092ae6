#include "data-plane/proxy/exchange.h"

#include <utility>

#include "data-plane/dialect/messages_front.h"
#include "data-plane/proxy/header_policy.h"

namespace berry::proxy {

net::awaitable<void> Send(Exchange& exchange, Response& response) {
  HeaderPolicy::AddCors(exchange.path, response);
  exchange.status = static_cast<int>(response.result_int());
  exchange.answered = true;
  co_await exchange.downstream.Write(response);
}

namespace {

// The proxy's own errors are made OpenAI-shaped; a Messages client reads Anthropic's shape.
std::string ForFront(const Exchange& exchange, int status, std::string body) {
  if (exchange.messages_front()) {
    return dialect::MessagesErrorFromOpenAi(status, body);
  }
  return body;
}

}  // namespace

net::awaitable<void> SendError(Exchange& exchange, int status, std::string body,
                               int retry_after_seconds) {
  body = ForFront(exchange, status, std::move(body));
  Response response{static_cast<http::status>(status), 11};
  response.set(http::field::content_type, "application/json");
  if (retry_after_seconds > 0) {
    response.set(http::field::retry_after, std::to_string(retry_after_seconds));
  }
  response.body() = std::move(body);
  co_await Send(exchange, response);
}

net::awaitable<void> SendRefusal(Exchange& exchange, ErrorReply reply) {
  Response response{static_cast<http::status>(reply.status), 11};
  response.set(http::field::content_type, "application/json");
  if (reply.retry_after_seconds > 0) {
    response.set(http::field::retry_after, std::to_string(reply.retry_after_seconds));
  }
  if (reply.limit_requests > 0) {
    const bool tokens = reply.tokens;
    response.set(tokens ? "x-ratelimit-limit-tokens" : "x-ratelimit-limit-requests",
                 std::to_string(reply.limit_requests));
    response.set(tokens ? "x-ratelimit-remaining-tokens" : "x-ratelimit-remaining-requests",
                 std::to_string(reply.remaining_requests));
    response.set(tokens ? "x-ratelimit-reset-tokens" : "x-ratelimit-reset-requests",
                 std::to_string(reply.reset_requests_seconds) + "s");
  }
  response.body() = ForFront(exchange, reply.status, std::move(reply.body));
  co_await Send(exchange, response);
}

}  // namespace berry::proxy
