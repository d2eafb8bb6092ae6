#include "data-plane/proxy/admission.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/strings/views.h"
#include "data-plane/auth/rate_limiter.h"
#include "data-plane/openai/errors.h"
#include "data-plane/openai/request_body.h"

namespace berry::proxy {
namespace {

using openai::ErrorKind;

ErrorReply RateLimitReply(const auth::Decision& decision, bool tokens, std::string& error) {
  const char* const unit = tokens ? "tokens" : "requests";
  const std::string window(auth::WindowName(decision.window));
  error = absl::StrCat("rate limit: ", decision.limit, " ", unit, " per ", window);
  return ErrorReply{
      429,
      openai::ErrorJson(ErrorKind::kRateLimited,
                        absl::StrCat("Rate limit reached: ", decision.limit, " ", unit, " per ",
                                     window, ". Retry after ", decision.reset_after_seconds, "s.")),
      static_cast<int>(decision.reset_after_seconds),
      /*rate_limited=*/true,
      decision.limit,
      decision.remaining,
      decision.reset_after_seconds,
      tokens,
      decision.credit_pending};
}

}  // namespace

uint64_t ReservedTokens(std::string_view body, const openai::RequestFields& fields) {
  const uint64_t prompt = (body.size() + 3) / 4;
  return prompt + (fields.max_tokens > 0 ? fields.max_tokens : kDefaultCompletionReserve);
}

uint64_t TokensToCharge(const Exchange& exchange) {
  if (exchange.usage_reported) {
    return exchange.prompt_tokens + exchange.completion_tokens;
  }
  if (exchange.answered && exchange.backend != nullptr && exchange.status >= 200 &&
      exchange.status < 300) {
    return exchange.token_hold.reserved;
  }
  return 0;
}

const auth::Client* Admission::Authenticate(const RouteGeneration& generation,
                                            std::string_view authorization,
                                            std::string_view api_key, std::string* error) {
  auto client = authorization.empty() && !api_key.empty()
                    ? generation.clients->AuthenticateToken(api_key)
                    : generation.clients->Authenticate(authorization);
  if (!client.ok()) {
    *error = std::string(client.status().message());
    return nullptr;
  }
  return *client;
}

std::optional<ErrorReply> Admission::Admit(const RouteGeneration* generation_or_null,
                                           std::string_view authorization, std::string_view api_key,
                                           std::string_view body, Admitted& admitted,
                                           std::string& error) const {
  if (generation_or_null == nullptr) {
    error = "no route table loaded";
    return ErrorReply{503,
                      openai::ErrorJson(ErrorKind::kNoBackendAvailable, "no route table loaded")};
  }
  const RouteGeneration& generation = *generation_or_null;

  // A second admission (after waiting for credit) starts where the first one was refused.
  if (admitted.client == nullptr) {
    admitted.client = Authenticate(generation, authorization, api_key, &error);
    if (admitted.client == nullptr) {
      return ErrorReply{401, openai::ErrorJson(ErrorKind::kInvalidApiKey, error)};
    }
  }
  const auth::Client& client = *admitted.client;
  // Managed: one monotonic clock read serves the request and token leases.
  const int64_t now_ns = generation.fleet != nullptr ? clock_.MonotonicNs() : 0;

  // Managed: the fleet-wide leases; standalone: this proxy's own windows.
  if (!admitted.requests_admitted) {
    const auth::Decision decision =
        generation.fleet != nullptr
            ? generation.fleet->Admit(client, now_ns, &admitted.request_hold)
            : generation.limiter->Check(client, clock_.UnixSeconds(), &admitted.request_hold);
    if (!decision.allowed) {
      return RateLimitReply(decision, /*tokens=*/false, error);
    }
    admitted.requests_admitted = true;
  }

  if (admitted.model == nullptr) {
    auto fields = openai::ScanRequestBody(body);
    if (!fields.ok()) {
      error = std::string(fields.status().message());
      return ErrorReply{400, openai::ErrorJson(ErrorKind::kInvalidRequest,
                                               strings::Std(fields.status().message()))};
    }
    admitted.fields = *std::move(fields);

    auto model = generation.snapshot().FindModel(admitted.fields.model);
    if (!model.ok()) {
      error = "model not found";
      return ErrorReply{
          404, openai::ErrorJson(
                   ErrorKind::kModelNotFound,
                   absl::StrCat("The model '", admitted.fields.model, "' does not exist"), "model")};
    }
    if (!client.MayUse((*model)->name())) {
      error = "model not allowed";
      return ErrorReply{403, openai::ErrorJson(ErrorKind::kModelNotAllowed,
                                               absl::StrCat("This API key may not use the model '",
                                                            admitted.fields.model, "'"),
                                               "model")};
    }
    admitted.model = *model;
  }

  // Tokens last: the estimate needs the body, and a request refused above reserves nothing. (A
  // request refused here has counted against the request limits already.)
  const bool limits_tokens = generation.fleet != nullptr ? generation.fleet->LimitsTokens(client)
                                                         : generation.limiter->LimitsTokens(client);
  if (limits_tokens) {
    const uint64_t tokens = ReservedTokens(body, admitted.fields);
    const auth::Decision reserved =
        generation.fleet != nullptr
            ? generation.fleet->ReserveTokens(client, tokens, now_ns, admitted.token_hold)
            : generation.limiter->ReserveTokens(client, tokens, clock_.UnixSeconds(),
                                                admitted.token_hold);
    if (!reserved.allowed) {
      return RateLimitReply(reserved, /*tokens=*/true, error);
    }
  }
  return std::nullopt;
}

void Admission::ReleaseRequest(const RouteGeneration& generation, Admitted& admitted) const {
  if (admitted.request_hold.reserved == 0 || admitted.client == nullptr) {
    return;
  }
  if (generation.fleet != nullptr) {
    generation.fleet->Release(*admitted.client, admitted.request_hold, clock_.MonotonicNs());
  } else {
    generation.limiter->Release(*admitted.client, admitted.request_hold);
  }
  admitted.request_hold = {};
  admitted.requests_admitted = false;
}

void Admission::SettleTokens(const Exchange& exchange, Clock::TimePoint end) const {
  if (exchange.token_hold.reserved == 0 || exchange.generation == nullptr ||
      exchange.client == nullptr) {
    return;
  }
  const RouteGeneration& generation = *exchange.generation;
  const uint64_t used = TokensToCharge(exchange);
  if (generation.fleet != nullptr) {
    generation.fleet->SettleTokens(
        *exchange.client, exchange.token_hold, used,
        std::chrono::duration_cast<std::chrono::nanoseconds>(end.time_since_epoch()).count());
  } else {
    generation.limiter->SettleTokens(*exchange.client, exchange.token_hold, used,
                                     clock_.UnixSeconds());
  }
}

}  // namespace berry::proxy
