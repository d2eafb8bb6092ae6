// Socket I/O done at once when it can be, without a trip through the event loop.
//
// An Asio operation that could complete at once still completes through the event loop (its
// handler is posted), and every such trip resumes the waiting coroutine through several
// layers. A relayed request made five of them for work that needed no waiting: parsing a
// request already in the read buffer (header, then body), a write the socket took whole (to
// the provider, then to the client), and a response body that came with its header. These
// helpers do that work at once; only what really has to wait goes to an asynchronous operation.
//
// Threads: the socket's.
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>

namespace berry::wire {

// Feeds `parser` the bytes `buffer` already holds, consuming what it takes: up to the end of
// the header when `header_only`, else as far into the body as the bytes go. need_more (read
// more) and need_buffer (give the body more room) are not errors; anything else the parser
// reports is returned.
template <bool isRequest, class DynamicBuffer>
boost::system::error_code ParseBuffered(boost::beast::http::basic_parser<isRequest>& parser,
                                        DynamicBuffer& buffer, bool header_only) {
  namespace http = boost::beast::http;
  boost::system::error_code ec;
  while (buffer.size() > 0 && !parser.is_done() && !(header_only && parser.is_header_done())) {
    const size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more || ec == http::error::need_buffer) {
      return {};
    }
    if (ec || used == 0) {
      break;
    }
  }
  return ec;
}

// Writes as much of `buffers` as `socket` (in non-blocking mode) takes without waiting and
// returns how much that was; would_block is not an error.
template <class Socket, class ConstBuffers>
size_t WriteNow(Socket& socket, const ConstBuffers& buffers, boost::system::error_code& ec) {
  const size_t written = socket.write_some(buffers, ec);
  if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
    ec = {};
    return 0;
  }
  return written;
}

}  // namespace berry::wire
