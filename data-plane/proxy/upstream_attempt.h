// One attempt of a relayed request on one backend: builds the upstream request (the body with
// `model` rewritten, the headers HeaderPolicy decides), takes a pooled connection or opens one
// within the first-byte timeout, sends the request and waits for the response head, then hands
// the response to StreamRelay (a 2xx text/event-stream) or UnaryRelay (anything else). A failure
// before the client saw anything is recorded on the exchange, so the retry loop can try another
// backend.
//
// Threads: one UpstreamAttempt per worker, on that worker's thread; it owns the worker's
// upstream connection pool.
#pragma once

#include <cstdint>
#include <memory>

#include "data-plane/proxy/attempt_stats.h"
#include "data-plane/proxy/clock.h"
#include "data-plane/proxy/exchange.h"
#include "data-plane/proxy/stream_relay.h"
#include "data-plane/proxy/unary_relay.h"
#include "data-plane/upstream/upstream_pool.h"

namespace berry::proxy {

class UpstreamAttempt {
 public:
  // `stats` and `clock` must outlive this.
  UpstreamAttempt(net::io_context& io_context, std::shared_ptr<const upstream::TlsContexts> tls,
                  AttemptStats& stats, const Clock& clock, uint64_t max_response_body_bytes);

  net::awaitable<void> Run(Exchange& exchange, const selection::CompiledBackend& backend);

  // Closes the idle upstream connections (shutdown).
  void Clear() { pool_.Clear(); }

 private:
  upstream::Pool pool_;
  StringPool strings_;  // upstream request heads and bodies, upstream response bodies
  AttemptStats& stats_;
  const Clock& clock_;
  UnaryRelay unary_;
  StreamRelay stream_;
};

}  // namespace berry::proxy
