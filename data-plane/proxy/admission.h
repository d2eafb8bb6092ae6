// Whether a relayed request may go on, decided before any backend is picked (DESIGN.md,
// "Request path"): a route table is loaded (503), the bearer token names an enabled client
// (401), the client is within its rate limits on the wall clock (429 with Retry-After), the body
// is JSON with a `model` (400), that custom model exists (404) and the client may use it (403).
//
// A token-limited client's request also reserves its estimated tokens (ReservedTokens) after the
// model checks (429 with x-ratelimit-*-tokens when they do not fit), settled by SettleTokens once
// the exchange is over.
//
// Threads: one Admission per worker; Admit() allocates only for refusals.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "data-plane/proxy/clock.h"
#include "data-plane/proxy/exchange.h"
#include "data-plane/proxy/route_store.h"

namespace berry::proxy {

// Completion tokens reserved for a request that names no max_tokens / max_completion_tokens.
inline constexpr uint64_t kDefaultCompletionReserve = 512;

// The tokens a request reserves: its prompt estimated as body bytes / 4 (rounded up), plus its
// max_tokens / max_completion_tokens, or kDefaultCompletionReserve when it names neither.
uint64_t ReservedTokens(std::string_view body, const openai::RequestFields& fields);

// What a finished exchange is charged against its reservation: the usage the upstream reported;
// else, once a successful (2xx) answer started, the whole reservation (a stream cut before its
// usage chunk); else nothing (no upstream produced an answer, or it was an error).
uint64_t TokensToCharge(const Exchange& exchange);

class Admission {
 public:
  // `clock` (its wall time) places requests in rate-limit windows; it must outlive this.
  explicit Admission(const Clock& clock) : clock_(clock) {}

  // The client the Authorization header value names — or, when the request has none, its
  // `x-api-key` header (how Anthropic's clients send a key) — or nullptr with the reason in
  // `error`.
  static const auth::Client* Authenticate(const RouteGeneration& generation,
                                          std::string_view authorization, std::string_view api_key,
                                          std::string* error);

  // Checks a request to relay. `generation` may be null (no table yet). Fills `admitted` as far
  // as it got (the client once authenticated, the body's fields once scanned, the model once
  // allowed) and returns nullopt when the request may go on, else the answer to give, with the
  // access log's reason in `error`. Called again with the same `admitted` (after waiting for
  // credit), it resumes at the check that refused: authentication, the request limits and the
  // body scan are not done twice.
  std::optional<ErrorReply> Admit(const RouteGeneration* generation, std::string_view authorization,
                                  std::string_view api_key, std::string_view body,
                                  Admitted& admitted, std::string& error) const;

  // Gives back the request the request limits counted for `admitted` (if any): it was refused
  // afterwards by its token limit, so it was never made.
  void ReleaseRequest(const RouteGeneration& generation, Admitted& admitted) const;

  // Replaces the exchange's token reservation (if any) by TokensToCharge. Once per exchange.
  // `end` is when the exchange ended (managed leases are settled at that monotonic time).
  void SettleTokens(const Exchange& exchange, Clock::TimePoint end) const;

 private:
  const Clock& clock_;
};

}  // namespace berry::proxy
