// Server-Sent Events (text/event-stream bodies), read the one way everything here reads them:
// the proxy observes an upstream's stream as it relays it, to find each event's `data:` payload
// (the final chunk's `usage`, the `[DONE]` marker) and to know whether the bytes relayed so far
// end between events (it forwards bytes as they arrive; this class only watches them); the test
// HTTP client (tests/support) and the benchmark's load generator (bench/) collect the events
// they receive. One instance per stream, used by one thread; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/functional/function_ref.h"

namespace berry::sse {

// Splits an SSE byte stream into events per the WHATWG EventSource parsing rules: lines end with
// "\r\n", "\n" or "\r"; a blank line ends an event; `data` fields are joined with "\n"; comment
// lines (":...") and other fields (event, id, retry, unknown) are ignored; a leading UTF-8 BOM is
// skipped; a block without `data` delivers nothing.
//
// Memory is bounded: an event whose lines (field names included, line terminators excluded) add
// up to more than `max_event_bytes` is skipped and counted, and the buffer never holds more than
// `max_event_bytes` bytes, however the stream is cut into pieces. No allocation per event once the
// buffer has grown to the largest event seen.
class SseEventSplitter {
 public:
  static constexpr size_t kDefaultMaxEventBytes = size_t{64} * 1024;

  explicit SseEventSplitter(size_t max_event_bytes = kDefaultMaxEventBytes);

  SseEventSplitter(const SseEventSplitter&) = delete;
  SseEventSplitter& operator=(const SseEventSplitter&) = delete;
  SseEventSplitter(SseEventSplitter&&) noexcept = default;
  SseEventSplitter& operator=(SseEventSplitter&&) noexcept = default;

  // Observes the next `bytes` of the stream (any size, cut anywhere) and calls `on_data` with the
  // `data` payload of every event they complete, in order. The view is valid only during the call.
  void Feed(std::string_view bytes, absl::FunctionRef<void(std::string_view data)> on_data);

  // True when the bytes fed so far end exactly between events (including before any byte), so
  // the proxy can append its own event directly; false mid-line or mid-event, where it must first
  // end the pending event (e.g. with "\n\n").
  bool AtEventBoundary() const;

  // True once an event whose payload is exactly "[DONE]" was delivered.
  bool IsDone() const { return done_; }

  // Events delivered to `on_data`, and events skipped for exceeding max_event_bytes.
  uint64_t events() const { return events_; }
  uint64_t skipped_events() const { return skipped_events_; }

  // Bytes currently allocated for incomplete events; never above max_event_bytes.
  size_t buffer_capacity() const { return capacity_; }

 private:
  void ProcessBytes(std::string_view bytes, absl::FunctionRef<void(std::string_view)> on_data);
  void AppendPartialLine(std::string_view part);
  void CompleteLine(std::string_view line, bool line_is_buffered,
                    absl::FunctionRef<void(std::string_view)> on_data);
  void EndEvent(absl::FunctionRef<void(std::string_view)> on_data);
  void StartSkipping();
  void Append(std::string_view bytes);
  // Copies a held first data line into the buffer (before anything else is appended, and before
  // the bytes it points into go away).
  void Materialize();

  size_t max_event_bytes_;
  // [0, data_len_) holds the current event's data lines, each followed by '\n'; [data_len_,
  // size_) holds the start of a line that began in an earlier Feed.
  std::unique_ptr<char[]> buf_;
  size_t capacity_ = 0;
  size_t size_ = 0;
  size_t data_len_ = 0;
  size_t partial_len_ = 0;  // bytes of the unfinished line seen so far (also while skipping)
  size_t event_bytes_ = 0;  // bytes of the current event's finished, non-blank lines
  uint64_t events_ = 0;
  uint64_t skipped_events_ = 0;
  uint8_t bom_matched_ = 0;  // bytes of a leading BOM matched; kBomDecided once settled
  bool in_event_ = false;    // a non-blank line finished since the last blank line
  bool skipping_ = false;
  bool after_cr_ = false;  // the last byte fed was '\r': a following '\n' belongs to it
  bool done_ = false;
  // The usual event, one `data:` line inside one Feed, is delivered straight from the caller's
  // bytes: its first data line is held as a view and copied only if the event goes on.
  bool holding_ = false;
  std::string_view held_;
};

// Appends one event carrying `data` (a payload as SseEventSplitter delivers it: lines joined by
// '\n') to `out`: a "data: " line per line, then the blank line that ends the event.
void AppendDataEvent(std::string_view data, std::string& out);

}  // namespace berry::sse
