// An SSE body through the splitter (common/http/sse.h) the proxy watches streams with, cut into
// pieces two ways.
//
// Input: byte 0 picks the piece size and the event limit; the rest is the stream.
//
// Properties: the events delivered do not depend on how the stream is cut; the buffer stays
// within the limit; every event is counted once, delivered or skipped.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/sse.h"
#include "tests/fuzz/byte_source.h"

namespace {

constexpr size_t kEventLimits[] = {4, 16, 256, berry::sse::SseEventSplitter::kDefaultMaxEventBytes};

struct Run {
  std::vector<std::string> events;
  uint64_t skipped = 0;
  bool done = false;
  bool boundary = false;
};

Run Split(std::string_view stream, size_t piece, size_t limit) {
  berry::sse::SseEventSplitter splitter(limit);
  Run run;
  while (!stream.empty()) {
    const size_t n = piece == 0 ? stream.size() : std::min(piece, stream.size());
    splitter.Feed(stream.substr(0, n),
                  [&](std::string_view data) { run.events.emplace_back(data); });
    FUZZ_CHECK(splitter.buffer_capacity() <= limit);
    stream.remove_prefix(n);
  }
  run.skipped = splitter.skipped_events();
  run.done = splitter.IsDone();
  run.boundary = splitter.AtEventBoundary();
  FUZZ_CHECK(splitter.events() == run.events.size());
  return run;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view stream(reinterpret_cast<const char*>(data), size);
  const uint8_t control = berry::fuzz::TakeByte(stream);
  const size_t limit = kEventLimits[(control / 8) % std::size(kEventLimits)];
  const Run whole = Split(stream, 0, limit);
  const Run pieces = Split(
      stream, berry::fuzz::PieceSize(control) == 0 ? 1 : berry::fuzz::PieceSize(control), limit);
  FUZZ_CHECK(whole.events == pieces.events);
  FUZZ_CHECK(whole.skipped == pieces.skipped);
  FUZZ_CHECK(whole.done == pieces.done);
  FUZZ_CHECK(whole.boundary == pieces.boundary);
  for (const auto& event : whole.events) {
    FUZZ_CHECK(event.size() <= limit);
  }
  return 0;
}
