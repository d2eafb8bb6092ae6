// A connection's read side for wire::ReadMessage (common/http/read_message.h) that reads from a
// fuzzer's bytes instead of a socket: each Fill() appends the next piece, then the end of the
// stream. The fuzzer's first byte picks how the rest is cut, so the parsers see the same bytes
// arrive whole, a byte at a time, or anything between.
#pragma once

#include <algorithm>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace berry::fuzz {

class ByteSource {
 public:
  // `piece` bytes per Fill; 0 = everything in one.
  ByteSource(std::string_view bytes, size_t piece) : rest_(bytes), piece_(piece) {}

  boost::beast::flat_buffer& buffer() { return buffer_; }

  boost::asio::awaitable<boost::system::error_code> Fill() {
    if (rest_.empty()) {
      co_return boost::asio::error::eof;
    }
    const size_t n = piece_ == 0 ? rest_.size() : std::min(piece_, rest_.size());
    auto room = buffer_.prepare(n);
    std::memcpy(room.data(), rest_.data(), n);
    buffer_.commit(n);
    rest_.remove_prefix(n);
    ++fills_;
    co_return boost::system::error_code{};
  }

  boost::system::error_code Translate(boost::system::error_code ec) const { return ec; }

  // Bytes not parsed yet: buffered, or still to arrive.
  size_t remaining() const { return rest_.size() + buffer_.size(); }
  size_t fills() const { return fills_; }

 private:
  std::string_view rest_;
  size_t piece_;
  boost::beast::flat_buffer buffer_;
  size_t fills_ = 0;
};

// Takes the first byte of a fuzzer input (0 when empty) and leaves the rest in `data`.
inline uint8_t TakeByte(std::string_view& data) {
  if (data.empty()) {
    return 0;
  }
  const auto byte = static_cast<uint8_t>(data.front());
  data.remove_prefix(1);
  return byte;
}

// A piece size from a control byte: whole (0), one byte, or small and odd sizes in between.
inline size_t PieceSize(uint8_t control) {
  switch (control % 8) {
    case 0:
      return 0;
    case 1:
      return 1;
    case 2:
      return 2;
    case 3:
      return 7;
    default:
      return 1 + control / 8;  // 1..32
  }
}

// How many times `what` occurs in `text`, overlapping occurrences included.
inline size_t Count(std::string_view text, std::string_view what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string_view::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

// Fuzz targets check properties with this: a violated one is a bug, reported as a crash.
#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      ::fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
      ::abort();                                                                      \
    }                                                                                 \
  } while (0)

}  // namespace berry::fuzz
