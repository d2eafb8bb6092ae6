// A provider's response bytes, as berry-proxy reads them (common/http/client.cc and
// data-plane/proxy/{stream,unary}_relay.cc): the head through wire::ReadMessage into the
// proxy's buffer_body parser, then the body piece by piece (Content-Length, chunked, or to the
// end of the stream), every piece fed to the SSE splitter and each event's data to the usage
// parser, as a stream relay does; the relay's look-ahead over the buffered chunk framing is
// asked after every piece.
//
// Input: byte 0 picks how the bytes arrive, byte 1 the relay's piece size and the splitter's
// event limit; the rest is the response.
//
// Properties: every read places no more than the room it was given; the splitter never holds
// more than its limit; the loop ends.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/client.h"
#include "common/http/read_message.h"
#include "common/http/sse.h"
#include "data-plane/openai/usage.h"
#include "data-plane/proxy/stream_relay.h"
#include "tests/fuzz/byte_source.h"

namespace {

namespace net = boost::asio;
using berry::fuzz::ByteSource;
using berry::upstream::ResponseParser;

constexpr size_t kPieces[] = {1, 3, 64, 1024, 16384};
constexpr size_t kEventLimits[] = {8, 64, berry::sse::SseEventSplitter::kDefaultMaxEventBytes};

net::awaitable<void> ReadResponse(ByteSource& source, size_t piece_size, size_t event_limit) {
  std::pmr::monotonic_buffer_resource arena;
  ResponseParser parser(std::piecewise_construct, std::make_tuple(),
                        std::make_tuple(berry::upstream::MessageAllocator(&arena)));
  parser.body_limit(boost::none);
  auto head = co_await berry::wire::ReadMessage(source, parser, berry::wire::ReadUntil::kHeader);
  if (head.ec) {
    co_return;
  }
  (void)parser.get().result_int();
  (void)parser.get().keep_alive();
  (void)berry::proxy::StreamRelay::IsEventStream(
      parser.get()[boost::beast::http::field::content_type]);
  berry::sse::SseEventSplitter splitter(event_limit);
  std::string body;
  std::vector<char> piece(piece_size);
  size_t previous_remaining = source.remaining() + 1;
  while (!parser.is_done()) {
    // Each round either consumes input or ends the message.
    FUZZ_CHECK(source.remaining() < previous_remaining || parser.is_done());
    previous_remaining = source.remaining();
    auto& room = parser.get().body();
    room.data = piece.data();
    room.size = piece.size();
    auto read =
        co_await berry::wire::ReadMessage(source, parser, berry::wire::ReadUntil::kSomeBody);
    FUZZ_CHECK(read.body_bytes <= piece.size());
    const std::string_view data(piece.data(), read.body_bytes);
    splitter.Feed(data, [](std::string_view event) { (void)berry::openai::ExtractUsage(event); });
    FUZZ_CHECK(splitter.buffer_capacity() <= event_limit);
    (void)splitter.AtEventBoundary();
    if (body.size() < 1 << 20) {
      body.append(data);
    }
    if (read.ec) {
      co_return;
    }
    (void)berry::proxy::StreamRelay::CanContinueWithoutReading(parser, source.buffer());
  }
  (void)berry::openai::ExtractUsage(body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const uint8_t arrival = berry::fuzz::TakeByte(input);
  const uint8_t sizes = berry::fuzz::TakeByte(input);
  ByteSource source(input, berry::fuzz::PieceSize(arrival));
  net::io_context io;
  bool finished = false;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        co_await ReadResponse(source, kPieces[sizes % std::size(kPieces)],
                              kEventLimits[(sizes / 8) % std::size(kEventLimits)]);
        finished = true;
      },
      net::detached);
  io.run();
  FUZZ_CHECK(finished);
  return 0;
}
