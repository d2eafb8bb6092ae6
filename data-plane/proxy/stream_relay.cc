#include "data-plane/proxy/stream_relay.h"

#include <algorithm>
#include <array>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/string.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "common/http/sse.h"
#include "data-plane/dialect/anthropic.h"
#include "data-plane/dialect/gemini.h"
#include "data-plane/openai/errors.h"
#include "data-plane/openai/usage.h"
#include "data-plane/proxy/header_policy.h"

namespace berry::proxy {
namespace {

// The watchdog's timer runs on the real steady clock, so its bookkeeping does too.
using SteadyClock = std::chrono::steady_clock;

// Timeouts of a relayed stream without a timer per read and per write: one timer per stream,
// re-armed only when it fires (about once per idle timeout), checks when the upstream last
// delivered and how long the write in progress has been hanging. Once the stream is over,
// `active` is cleared and the timer cancelled; its handler then touches nothing else.
struct StreamWatchdog {
  explicit StreamWatchdog(net::io_context& io_context) : timer(io_context) {}
  net::steady_timer timer;
  SteadyClock::time_point last_read;
  bool active = true;
  bool idle_expired = false;
};

void ArmStreamWatchdog(const std::shared_ptr<StreamWatchdog>& watchdog, SteadyClock::duration idle,
                       upstream::Connection* connection, Downstream* downstream) {
  const SteadyClock::duration write_timeout = downstream->write_timeout();
  SteadyClock::time_point next =
      std::min(watchdog->last_read + idle, SteadyClock::now() + write_timeout);
  if (const auto since = downstream->write_pending_since()) {
    next = std::min(next, *since + write_timeout);
  }
  watchdog->timer.expires_at(next);
  watchdog->timer.async_wait([watchdog, idle, connection, downstream](beast::error_code ec) {
    if (ec || !watchdog->active) {
      return;
    }
    const SteadyClock::time_point now = SteadyClock::now();
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

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

bool StreamRelay::IsEventStream(std::string_view content_type) {
  constexpr std::string_view kEventStream = "text/event-stream";
  return content_type.size() >= kEventStream.size() &&
         beast::iequals(content_type.substr(0, kEventStream.size()), kEventStream);
}

// A stream relay that fell behind takes what is buffered along into the same write, but must not
// wait for an event that has not arrived yet.
bool StreamRelay::CanContinueWithoutReading(const upstream::ResponseParser& parser,
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

net::awaitable<bool> StreamRelay::Relay(Exchange& exchange,
                                        const selection::CompiledBackend& backend,
                                        const ProviderRoute& route,
                                        upstream::Connection& connection,
                                        upstream::ResponseParser& parser) {
  const RouteGeneration& generation = *exchange.generation;
  ResponseHeader header{static_cast<http::status>(parser.get().result_int()), 11};
  HeaderPolicy::CopyRelayedResponseFields(parser.get().base(), header.base());
  exchange.status = static_cast<int>(header.result_int());
  exchange.answered = true;
  if (!co_await exchange.downstream.WriteHeader(header)) {
    exchange.client_gone = true;
    co_return false;
  }

  sse::SseEventSplitter splitter;
  std::optional<openai::Usage> usage;
  std::optional<dialect::AnthropicStream> anthropic;
  std::optional<dialect::GeminiStream> gemini;
  std::string translated;
  if (route.dialect == route_table::Dialect::kAnthropic) {
    anthropic.emplace(exchange.fields.include_usage, UnixSeconds());
  } else if (route.dialect == route_table::Dialect::kGemini) {
    gemini.emplace(exchange.fields.include_usage, exchange.model->name(), UnixSeconds());
  }
  const bool translating = anthropic || gemini;
  // The proxy asked for the usage chunk on the client's behalf: events are relayed one by one,
  // without it (the others re-framed as data events, which is all OpenAI streams hold).
  const bool strip_usage = !translating && InjectsStreamUsage(exchange);
  const auto translation_failed = [&] {
    return (anthropic && anthropic->failed()) || (gemini && gemini->failed());
  };
  const auto idle_timeout = SecondsOr(generation.settings().stream_idle_timeout(), 60);
  std::array<char, size_t{8} * 1024> piece;
  exchange.downstream.WatchForDisconnect([&exchange, &connection] {
    exchange.client_gone = true;
    connection.Cancel();
  });
  connection.ExpiresNever();
  exchange.downstream.UseWatchdogForWrites();
  auto watchdog = std::make_shared<StreamWatchdog>(io_context_);
  watchdog->last_read = SteadyClock::now();
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
    watchdog->last_read = SteadyClock::now();
    if (n > 0 && translating) {
      translated.clear();
      splitter.Feed(std::string_view(piece.data(), n), [&](std::string_view event) {
        if (anthropic) {
          anthropic->OnData(event, translated);
        } else if (gemini) {
          gemini->OnData(event, translated);
        }
      });
      if (!translated.empty() && !co_await exchange.downstream.WriteChunk(translated)) {
        exchange.client_gone = true;
        break;
      }
      if (translation_failed()) {
        break;  // the error event went out; the stream is over
      }
    } else if (n > 0 && strip_usage) {
      translated.clear();
      splitter.Feed(std::string_view(piece.data(), n), [&](std::string_view event) {
        if (auto found = openai::ExtractUsage(event)) {
          usage = found;
          if (openai::IsUsageOnlyChunk(event)) {
            return;
          }
        }
        sse::AppendDataEvent(event, translated);
      });
      if (!translated.empty() && !co_await exchange.downstream.WriteChunk(translated)) {
        exchange.client_gone = true;
        break;
      }
    } else if (n > 0) {
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
  // Gemini ends a stream by ending the body: its usage chunk and [DONE] follow then.
  if (gemini && !broken && !exchange.client_gone && !gemini->failed()) {
    translated.clear();
    gemini->OnEnd(translated);
    if (!translated.empty() && !co_await exchange.downstream.WriteChunk(translated)) {
      exchange.client_gone = true;
    }
  }
  exchange.downstream.StopWatching();
  if (anthropic) {
    usage = anthropic->usage();
  } else if (gemini) {
    usage = gemini->usage();
  }
  if (usage) {
    stats_.RecordUsage(exchange, backend, *usage);
  }
  if (exchange.client_gone) {
    exchange.downstream.set_keep_alive(false);
    connection.Cancel();  // the upstream call is abandoned with the client
    co_return false;
  }
  if (translation_failed()) {
    // The provider said why in its error event, which went to the client translated.
    exchange.error = "upstream stream ended with an error event";
    stats_.CountStreamBroken(exchange, backend);
    stats_.RecordOutcome(generation, backend, outlier::Outcome::kStreamBroken);
    exchange.downstream.set_keep_alive(false);
    connection.Cancel();
    co_return false;
  }
  if (!broken && ((anthropic && !anthropic->finished()) || (gemini && !gemini->finished()))) {
    // Ended cleanly, but without message_stop (Anthropic) or a finishReason (Gemini).
    broken = http::error::partial_message;
  }
  if (broken) {
    const bool timed_out = watchdog->idle_expired || broken == beast::error::timeout;
    exchange.error = timed_out ? "upstream stream went idle" : "upstream stream broke off";
    stats_.CountStreamBroken(exchange, backend);
    stats_.RecordOutcome(generation, backend,
                         timed_out ? outlier::Outcome::kTimeout : outlier::Outcome::kStreamBroken);
    // One error event, then the connection closes without the chunked terminator, so no client
    // can mistake the stream for a complete one.
    // A translated or stripped stream only ever wrote whole events.
    std::string tail = translating || strip_usage || splitter.AtEventBoundary() ? "" : "\n\n";
    tail += openai::SseErrorEvent(timed_out
                                      ? "upstream stream timed out: no data within the idle timeout"
                                      : "upstream stream broke off before it finished");
    co_await exchange.downstream.WriteChunk(tail);
    exchange.downstream.set_keep_alive(false);
    co_return false;
  }
  co_await exchange.downstream.WriteEnd();
  exchange.error.clear();
  stats_.RecordOutcome(generation, backend, outlier::Outcome::kSuccess);
  co_return parser.get().keep_alive();
}

}  // namespace berry::proxy
