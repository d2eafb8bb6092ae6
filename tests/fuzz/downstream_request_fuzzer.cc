// A client connection's bytes, as berry-proxy's server reads them (common/http/server.cc,
// RunSession): requests parsed one after another off one connection (pipelined, keep-alive),
// with the server's parser, arena, header limit and a body limit, through wire::ReadMessage;
// a failed read classified as the server classifies it. Content-Length and chunked bodies.
//
// Input: byte 0 picks how the bytes arrive (piece size), byte 1 the body limit; the rest is the
// connection's stream.
//
// Properties: a request read whole has a body no larger than the limit, and exactly its
// Content-Length when it has one; every failure that is answered is 400, 408, 413 or 431; the
// loop ends (every request consumes bytes).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/http/read_message.h"
#include "common/http/request_arena.h"
#include "common/http/server.h"
#include "tests/fuzz/byte_source.h"

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using berry::fuzz::ByteSource;
using berry::server::ArenaAllocator;
using berry::server::RequestBody;

// Not the 32 MiB default: Beast reserves a declared Content-Length up front, and under ASan each
// such reservation costs seconds (without it, untouched pages cost nothing).
constexpr uint64_t kBodyLimits[] = {0, 1, 16, 1024, 65536};

net::awaitable<void> ReadAll(ByteSource& source, berry::server::ArenaBlocks& blocks,
                             uint64_t body_limit, uint32_t header_limit) {
  for (int requests = 0;; ++requests) {
    FUZZ_CHECK(requests < 100000);
    if (source.buffer().size() == 0) {
      // Idle between requests: the server waits for the next byte (or the end).
      if (co_await source.Fill()) {
        co_return;
      }
    }
    berry::server::RequestArena arena(blocks);
    http::request_parser<RequestBody, ArenaAllocator> parser(std::piecewise_construct,
                                                             std::make_tuple(arena.allocator()),
                                                             std::make_tuple(arena.allocator()));
    parser.header_limit(header_limit);
    parser.body_limit(body_limit);
    const size_t before = source.remaining();
    const auto ec =
        (co_await berry::wire::ReadMessage(source, parser, berry::wire::ReadUntil::kMessage)).ec;
    if (ec) {
      const auto failure = berry::server::ClassifyReadError(
          parser.is_header_done() ? berry::server::RequestPhase::kBody
                                  : berry::server::RequestPhase::kHeader,
          ec);
      if (failure.answer) {
        const unsigned status = static_cast<unsigned>(failure.status);
        FUZZ_CHECK(status == 400 || status == 408 || status == 413 || status == 431);
        FUZZ_CHECK(!failure.reason.empty());
      }
      co_return;  // the server answers (or not) and closes
    }
    FUZZ_CHECK(parser.is_done());
    FUZZ_CHECK(source.remaining() < before);
    const auto declared = parser.content_length();
    const bool chunked = parser.chunked();
    auto request = parser.release();
    FUZZ_CHECK(request.body().size() <= body_limit);
    if (!chunked && declared) {
      FUZZ_CHECK(*declared == request.body().size());
    }
    // What the handler reads of every request.
    (void)request["x-request-id"];
    (void)request.target();
    (void)request.method_string();
    if (!request.keep_alive()) {
      co_return;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const uint8_t arrival = berry::fuzz::TakeByte(input);
  const uint8_t limits = berry::fuzz::TakeByte(input);
  const uint64_t body_limit = kBodyLimits[limits % std::size(kBodyLimits)];
  const uint32_t header_limit = (limits & 0x80) != 0 ? 256 : 64 * 1024;
  ByteSource source(input, berry::fuzz::PieceSize(arrival));
  berry::server::ArenaBlocks blocks;
  net::io_context io;
  bool finished = false;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        co_await ReadAll(source, blocks, body_limit, header_limit);
        finished = true;
      },
      net::detached);
  io.run();
  FUZZ_CHECK(finished);
  return 0;
}
