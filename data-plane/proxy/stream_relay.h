// Relays an SSE (text/event-stream) upstream response as it arrives: the head (with the headers
// HeaderPolicy relays) with the first body bytes — a stream that fails before those is a failed
// attempt that another backend may retry — then the bytes, taking along whatever the connection
// already buffered so a relay that fell behind catches up with fewer, larger writes. `usage` is
// read from the events on the way. One watchdog timer per stream enforces the idle timeout between
// upstream reads and the write timeout towards the client. A stream that breaks after it started
// ends with an OpenAI error event and a connection closed without the chunked terminator.
//
// Threads: one StreamRelay per worker, on that worker's thread.
#pragma once

#include <string_view>

#include "data-plane/proxy/attempt_stats.h"
#include "data-plane/proxy/exchange.h"
#include "data-plane/upstream/upstream_pool.h"

namespace berry::proxy {

class StreamRelay {
 public:
  // Both must outlive this.
  StreamRelay(net::io_context& io_context, AttemptStats& stats)
      : io_context_(io_context), stats_(stats) {}

  // Relays the stream whose head `parser` holds; true when the upstream connection may be kept
  // alive afterwards. An Anthropic or Gemini provider's stream (`route`'s dialect) is translated
  // event by event into chat.completion.chunk events; one that ends without message_stop
  // (Anthropic) or a finishReason (Gemini), or with an error event, ends like a broken stream
  // (an error event, no terminator).
  net::awaitable<bool> Relay(Exchange& exchange, const selection::CompiledBackend& backend,
                             const ProviderRoute& route, upstream::Connection& connection,
                             upstream::ResponseParser& parser);

  // Whether `content_type` is text/event-stream (parameters allowed).
  static bool IsEventStream(std::string_view content_type);

  // Whether the response parser can deliver more body from what the connection has already
  // buffered, without waiting for the network: any buffered byte of a body that is not
  // chunked; a whole next chunk (size line and data) of a chunked one.
  static bool CanContinueWithoutReading(const upstream::ResponseParser& parser,
                                        const beast::flat_buffer& buffer);

 private:
  // Sends the response head: the exchange is answered from here on (no failover after it).
  static net::awaitable<bool> Start(Exchange& exchange, ResponseHeader& header);

  net::io_context& io_context_;
  AttemptStats& stats_;
};

}  // namespace berry::proxy
