// The one loop that reads an HTTP/1.1 message, request or response, from a connection: parse
// what the connection's buffer already holds; if that does not get the parser where the caller
// wants it, read once more from the socket into the buffer, and again. The client side
// (server.h, ClientSession) and the provider side (client.h, Connection) both read through it.
//
// Threads: the connection's.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <type_traits>

#include "common/http/inline_io.h"

namespace berry::wire {

// How far ReadMessage reads.
enum class ReadUntil {
  kHeader,    // to the end of the header (body bytes stay in the buffer)
  kMessage,   // to the end of the message
  kSomeBody,  // for a buffer_body parser: until it placed at least one body byte, or the end
};

struct ReadResult {
  boost::system::error_code ec;
  // Body bytes placed into a buffer_body parser's room (0 for other bodies).
  size_t body_bytes = 0;
};

// No hook: see ReadMessage.
struct NoHook {};

// What the end of the stream means for `parser` (as Beast's read operations take it): the end of
// a body delimited by the connection's close (no error), a message cut short (partial_message),
// or no message at all (end_of_stream).
template <class Parser>
boost::system::error_code AtEndOfStream(Parser& parser) {
  if (!parser.got_some()) {
    return boost::beast::http::error::end_of_stream;
  }
  boost::system::error_code ec;
  parser.put_eof(ec);
  return ec;
}

// Reads into `parser` from `source` until `until`. `source` is one connection's read side:
//
//   beast::flat_buffer& buffer();        bytes read and not parsed yet; ReadMessage consumes what
//                                        the parser takes and leaves the rest (a pipelined next
//                                        message) for the next read
//   net::awaitable<error_code> Fill();   one read from the socket into buffer() (committed);
//                                        the end of the stream as net::error::eof
//   error_code Translate(error_code);    the error, or beast::error::timeout if the
//                                        connection's deadline caused it
//
// `before_fill` (optional) is awaited before each Fill — that is, only when the buffered bytes
// were not enough: it arms a deadline, or writes "100 Continue". It returns
// net::awaitable<error_code>; an error ends the read with it.
//
// Errors: what the parser reports (need_more and need_buffer are not errors), what a read
// reports, translated; an end of stream per AtEndOfStream (partial_message if the parser is still
// short of `until`).
template <class Source, class Parser, class Hook = NoHook>
boost::asio::awaitable<ReadResult> ReadMessage(Source& source, Parser& parser, ReadUntil until,
                                               Hook before_fill = {}) {
  constexpr bool kBufferBody =
      std::is_same_v<typename Parser::value_type::body_type, boost::beast::http::buffer_body>;
  size_t room = 0;
  if constexpr (kBufferBody) {
    room = parser.get().body().size;
  }
  const auto placed = [&]() -> size_t {
    if constexpr (kBufferBody) {
      return room - parser.get().body().size;
    } else {
      return 0;
    }
  };
  const auto reached = [&] {
    switch (until) {
      case ReadUntil::kHeader:
        return parser.is_header_done();
      case ReadUntil::kSomeBody:
        return parser.is_done() || placed() > 0;
      case ReadUntil::kMessage:
        break;
    }
    return parser.is_done();
  };
  boost::system::error_code ec;
  for (;;) {
    ec = ParseBuffered(parser, source.buffer(), until == ReadUntil::kHeader);
    if (ec || reached()) {
      break;
    }
    if constexpr (!std::is_same_v<Hook, NoHook>) {
      ec = co_await before_fill();
      if (ec) {
        break;
      }
    }
    ec = co_await source.Fill();
    if (ec == boost::asio::error::eof) {
      ec = AtEndOfStream(parser);
      if (!ec && !reached()) {
        ec = boost::beast::http::error::partial_message;
      }
      break;
    }
    if (ec) {
      break;
    }
  }
  co_return ReadResult{source.Translate(ec), placed()};
}

}  // namespace berry::wire
