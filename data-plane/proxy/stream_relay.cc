#include "data-plane/proxy/stream_relay.h"

#include <algorithm>
#include <array>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/string.hpp>
#include <chrono>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "common/http/sse.h"
#include "data-plane/dialect/anthropic.h"
#include "data-plane/dialect/gemini.h"
#include "data-plane/dialect/messages_front.h"
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

// The error event that ends `events` (what a stream sent, in the client's shape), as a JSON
// answer to pass on when no other backend takes the request: its status from the provider's
// error code or type (overloaded or unavailable: 503; rate limited: 429; else 502).
Response ErrorEventAsResponse(std::string_view events) {
  const size_t at = events.rfind("data: ");
  std::string_view json = at == std::string_view::npos ? "" : events.substr(at + 6);
  while (!json.empty() && (json.back() == '\n' || json.back() == '\r')) {
    json.remove_suffix(1);
  }
  const auto names = [json](std::initializer_list<std::string_view> values) {
    for (const std::string_view value : values) {
      if (json.find(value) != std::string_view::npos) {
        return true;
      }
    }
    return false;
  };
  int status = 502;
  if (names({R"("overloaded_error")", R"("UNAVAILABLE")"})) {
    status = 503;
  } else if (names({R"("rate_limit_error")", R"("RESOURCE_EXHAUSTED")"})) {
    status = 429;
  }
  Response response{static_cast<http::status>(status), 11};
  response.set(http::field::content_type, "application/json");
  response.body().assign(json);
  return response;
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// What a stream's events become on the way to the client. The bytes pass unchanged when the
// provider speaks what the client does (OpenAI to /v1/chat/..., Anthropic to /v1/messages) and
// the events are only watched (for usage, and for an Anthropic stream's end); otherwise each
// event is translated: Anthropic's or Gemini's to chat chunks, chat chunks to Anthropic's events,
// Gemini's to Anthropic's through chat chunks.
class StreamTranslator {
 public:
  StreamTranslator(const Exchange& exchange, route_table::Dialect dialect) {
    const bool messages = exchange.messages_front();
    const int64_t created = UnixSeconds();
    if (dialect == route_table::Dialect::kAnthropic) {
      anthropic_.emplace(exchange.fields.include_usage, created);
      rewrites_ = !messages;
    } else if (dialect == route_table::Dialect::kGemini) {
      gemini_.emplace(messages || exchange.fields.include_usage, exchange.model->name(), created);
      rewrites_ = true;
    }
    if (messages && dialect != route_table::Dialect::kAnthropic) {
      messages_.emplace(exchange.model->name());
      rewrites_ = true;
    }
    messages_front_ = messages;
    // The proxy asked for the usage chunk on the client's behalf: events are relayed one by
    // one, without it (the others re-framed as data events, which is all OpenAI streams hold).
    strip_usage_ =
        !rewrites_ && dialect == route_table::Dialect::kOpenAi && InjectsStreamUsage(exchange);
    rewrites_ = rewrites_ || strip_usage_;
  }

  // Whether the client gets what OnData writes rather than the upstream bytes.
  bool rewrites() const { return rewrites_; }

  // One upstream event's `data`.
  void OnData(std::string_view data, std::string& out) {
    if (gemini_ && messages_) {
      scratch_.clear();
      gemini_->OnData(data, scratch_);
      ToMessages(out);
    } else if (gemini_) {
      gemini_->OnData(data, out);
    } else if (messages_) {
      messages_->OnData(data, out);
    } else if (anthropic_) {
      scratch_.clear();
      anthropic_->OnData(data, rewrites_ ? out : scratch_);
    } else if (auto found = openai::ExtractUsage(data)) {
      usage_ = found;
      if (strip_usage_ && !openai::IsUsageOnlyChunk(data)) {
        sse::AppendDataEvent(data, out);
      }
    } else if (strip_usage_) {
      sse::AppendDataEvent(data, out);
    }
  }

  // The upstream body ended cleanly (Gemini ends its stream so: the usage chunk and [DONE]
  // follow then).
  void OnEnd(std::string& out) {
    if (gemini_ && messages_) {
      scratch_.clear();
      gemini_->OnEnd(scratch_);
      ToMessages(out);
    } else if (gemini_) {
      gemini_->OnEnd(out);
    }
    if (messages_) {
      messages_->OnEnd(out);
    }
  }

  // The stream ended as the provider ends a complete one (OpenAI's passed-through streams are
  // not checked).
  bool finished() const {
    if (messages_) {
      return messages_->finished();
    }
    if (gemini_) {
      return gemini_->finished();
    }
    return !anthropic_ || anthropic_->finished();
  }
  // An error event arrived (and went to the client, translated or not): the stream is over.
  bool failed() const {
    if (messages_) {
      return messages_->failed();
    }
    if (gemini_) {
      return gemini_->failed();
    }
    return anthropic_ && anthropic_->failed();
  }
  std::optional<openai::Usage> usage() const {
    if (messages_) {
      return messages_->usage();
    }
    if (gemini_) {
      return gemini_->usage();
    }
    return anthropic_ ? anthropic_->usage() : usage_;
  }
  // The event that ends a stream broken after it started, in the client's shape.
  std::string ErrorEvent(std::string_view message) const {
    return messages_front_ ? dialect::MessagesSseErrorEvent(message)
                           : openai::SseErrorEvent(message);
  }

 private:
  // The chat chunks GeminiStream wrote into scratch_, on to MessagesStream.
  void ToMessages(std::string& out) {
    middle_.Feed(scratch_, [this, &out](std::string_view chunk) { messages_->OnData(chunk, out); });
  }

  std::optional<dialect::AnthropicStream> anthropic_;
  std::optional<dialect::GeminiStream> gemini_;
  std::optional<dialect::MessagesStream> messages_;
  sse::SseEventSplitter middle_;
  std::string scratch_;
  std::optional<openai::Usage> usage_;
  bool rewrites_ = false;
  bool strip_usage_ = false;
  bool messages_front_ = false;
};

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

net::awaitable<bool> StreamRelay::Start(Exchange& exchange, ResponseHeader& header) {
  exchange.status = static_cast<int>(header.result_int());
  exchange.answered = true;
  co_return co_await exchange.downstream.WriteHeader(header);
}

net::awaitable<bool> StreamRelay::Relay(Exchange& exchange,
                                        const selection::CompiledBackend& backend,
                                        const ProviderRoute& route,
                                        upstream::Connection& connection,
                                        upstream::ResponseParser& parser) {
  const RouteGeneration& generation = *exchange.generation;
  // The head goes to the client with the first body bytes, not before: a stream that breaks,
  // goes idle or opens with an error event before it sent anything is a failed attempt, and
  // another backend can still take the request.
  ResponseHeader header{static_cast<http::status>(parser.get().result_int()), 11};
  HeaderPolicy::CopyRelayedResponseFields(parser.get().base(), header.base());
  bool started = false;

  sse::SseEventSplitter splitter;
  StreamTranslator translator(exchange, route.dialect);
  const bool translating = translator.rewrites();
  std::string translated;
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
    if (n > 0) {
      const std::string_view data(piece.data(), n);
      translated.clear();
      // Whether an error event ended the stream before anything else was for the client: the
      // first event passed through, or the first to produce translated output.
      bool error_first = false;
      size_t events = 0;
      splitter.Feed(data, [&](std::string_view event) {
        const size_t before = translated.size();
        const bool failed_before = translator.failed();
        translator.OnData(event, translated);
        if (!failed_before && translator.failed()) {
          error_first = translating ? before == 0 : events == 0;
        }
        ++events;
      });
      const std::string_view to_client = translating ? std::string_view(translated) : data;
      if (!started && error_first) {
        // The provider's first word is an error: nothing went out, another backend may serve,
        // and with none left the client gets that error as the answer.
        exchange.last_upstream_response = ErrorEventAsResponse(to_client);
        break;
      }
      // (Plain statements around each co_await: GCC 12 mishandles it inside && and ?:.)
      if (!to_client.empty() && !started) {
        started = co_await Start(exchange, header);
        if (!started) {
          exchange.client_gone = true;
          break;
        }
      }
      if (!to_client.empty() && !co_await exchange.downstream.WriteChunk(to_client)) {
        exchange.client_gone = true;
        break;
      }
      if (translator.failed()) {
        break;  // the error event went out; the stream is over
      }
    }
    if (ec) {
      broken = ec;
      break;
    }
  }
  if (!started && !exchange.client_gone) {
    if (broken || translator.failed()) {
      exchange.downstream.StopWatching();
      const bool timed_out = watchdog->idle_expired || broken == beast::error::timeout;
      stats_.FailAttempt(exchange, backend,
                         timed_out ? outlier::Outcome::kTimeout : outlier::Outcome::kStreamBroken,
                         timed_out ? "upstream stream sent nothing within the idle timeout"
                                   : "upstream stream failed before its first event");
      connection.Cancel();
      co_return false;
    }
  }
  if (!broken && !exchange.client_gone && !translator.failed()) {
    translated.clear();
    translator.OnEnd(translated);
    if (!started) {
      // Everything came at the end (or nothing at all): the head goes now.
      started = co_await Start(exchange, header);
      if (!started) {
        exchange.client_gone = true;
      }
    }
    if (!exchange.client_gone && !translated.empty() &&
        !co_await exchange.downstream.WriteChunk(translated)) {
      exchange.client_gone = true;
    }
  }
  exchange.downstream.StopWatching();
  const std::optional<openai::Usage> usage = translator.usage();
  if (usage) {
    stats_.RecordUsage(exchange, backend, *usage);
  }
  if (exchange.client_gone) {
    exchange.downstream.set_keep_alive(false);
    connection.Cancel();  // the upstream call is abandoned with the client
    co_return false;
  }
  if (translator.failed()) {
    // The provider said why in its error event, which went to the client (translated or not).
    exchange.error = "upstream stream ended with an error event";
    stats_.CountStreamBroken(exchange, backend);
    stats_.RecordOutcome(generation, backend, outlier::Outcome::kStreamBroken);
    exchange.downstream.set_keep_alive(false);
    connection.Cancel();
    co_return false;
  }
  if (!broken && !translator.finished()) {
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
    // A translated stream only ever wrote whole events.
    std::string tail = translating || splitter.AtEventBoundary() ? "" : "\n\n";
    tail += translator.ErrorEvent(timed_out
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
