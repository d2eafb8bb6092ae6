// Relays a whole (non-streaming) upstream response: reads it completely, within the request
// timeout and the body limit, before the client sees anything, so a failure while reading can
// still go to another backend. A 429/5xx answer is kept on the exchange for the retry loop
// (it is what the client gets if no other backend answers); anything else goes to the client
// with the headers HeaderPolicy relays, and its `usage` is counted.
//
// Threads: one UnaryRelay per worker, on that worker's thread.
#pragma once

#include <cstdint>
#include <memory>

#include "data-plane/proxy/attempt_stats.h"
#include "data-plane/proxy/clock.h"
#include "data-plane/proxy/exchange.h"
#include "data-plane/upstream/upstream_pool.h"

namespace berry::proxy {

class UnaryRelay {
 public:
  // All must outlive this. `strings` holds the response bodies between requests.
  UnaryRelay(upstream::Pool& pool, StringPool& strings, AttemptStats& stats, const Clock& clock,
             uint64_t max_response_body_bytes)
      : pool_(pool),
        strings_(strings),
        stats_(stats),
        clock_(clock),
        max_response_body_bytes_(max_response_body_bytes) {}

  // `parser` holds the response head of an attempt that started at `attempt_start`; the
  // connection goes back to the pool when the response was read completely and may be kept.
  // An Anthropic or Gemini provider's answer (`route`'s dialect) is translated to OpenAI's
  // shapes first: a message or GenerateContentResponse to a chat.completion, an error to an
  // OpenAI error (Anthropic's 529 counting as 503).
  net::awaitable<void> Relay(Exchange& exchange, const selection::CompiledBackend& backend,
                             const ProviderRoute& route,
                             std::unique_ptr<upstream::Connection>& connection,
                             upstream::ResponseParser& parser, Clock::TimePoint attempt_start,
                             Clock::Duration request_timeout);

  // HTTP statuses worth another backend: 429, 500, 502, 503, 504.
  static bool IsRetryableStatus(int status) {
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
  }

 private:
  upstream::Pool& pool_;
  StringPool& strings_;
  AttemptStats& stats_;
  const Clock& clock_;
  uint64_t max_response_body_bytes_;
};

}  // namespace berry::proxy
