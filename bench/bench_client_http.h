// The HTTP/1.1 pieces of berry-bench-client: the target URL, the one serialized request every
// connection sends, an incremental response decoder that works inside a connection's own read
// buffer, and the time stamp the mock provider puts into its stream events.
//
// The decoder exists (rather than Beast's parser) so that a connection needs one small buffer
// and nothing per response: chunk framing is squeezed out in place, so the decoded body is
// contiguous whatever the chunks and reads, and a finished response leaves no state behind. Each
// decoder belongs to one connection and is used from the load thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace berry::bench {

// `http://HOST[:PORT][/PATH]`; HOST may be an IP literal ([v6] in brackets) or a name.
struct Target {
  std::string host;  // brackets removed
  uint16_t port = 80;
  std::string authority;  // for the Host header, as given in the URL
  std::string path;       // "/" when the URL has none; includes any query
};

absl::StatusOr<Target> ParseTarget(std::string_view url);

// Checks a `--header` value ("Name: value"): a token name, no CR or LF anywhere.
absl::Status CheckHeaderLine(std::string_view line);

// The request every connection sends, byte for byte: POST with `body` as application/json when
// `body` is set, else GET. `headers` ("Name: value") are sent verbatim after Host; one named
// Host or Content-Type replaces the default.
std::string BuildRequest(const Target& target, const std::vector<std::string>& headers,
                         const std::string* body);

struct ResponseHead {
  int status = 0;
  // Whether the connection can carry another request after this response.
  bool keep_alive = true;
};

class ResponseDecoder {
 public:
  enum class Step {
    kNeedMore,  // read more, then Decode() again
    kHead,      // head() is the final (non-1xx) head; Decode() again for the body
    kDone,      // the response is complete
    kError,     // error() says why; the connection cannot be used any more
  };

  // `keep_body`: collect the decoded body for body()/Consume(); otherwise it is skipped.
  ResponseDecoder(size_t initial_capacity, bool keep_body)
      : capacity_(initial_capacity), keep_body_(keep_body) {}

  // Where the next read goes. Moves live bytes to the front first and doubles the buffer (up to
  // kMaxBuffer) only when a single head, chunk-size line or unconsumed body fills it. Empty when
  // the limit is hit; error() then says so.
  std::span<char> ReadSpace();
  void Commit(size_t n) { raw_end_ += n; }

  Step Decode();
  // The peer closed the connection: completes a close-delimited body, otherwise an error.
  Step Eof();

  // Decoded body not yet consumed (keep_body only).
  std::string_view body() const { return {buffer_.get() + body_begin_, body_end_ - body_begin_}; }
  void Consume(size_t n) { body_begin_ += n; }

  // Prepares for the next response on the same connection. Bytes already read past the
  // finished one stay.
  void Next();
  // Forgets everything, for a new connection.
  void Clear();

  // Bytes read but not part of any response seen so far.
  bool has_unparsed_bytes() const { return raw_end_ > raw_begin_; }
  // Nothing of a response has been read yet.
  bool idle() const { return state_ == State::kHead && raw_end_ == raw_begin_; }
  const ResponseHead& head() const { return head_; }
  const char* error() const { return error_; }

  static constexpr size_t kMaxBuffer = 1 << 20;
  static constexpr size_t kMaxHead = 64 << 10;

 private:
  enum class State {
    kHead,
    kChunkSize,
    kChunkData,
    kChunkEnd,
    kTrailer,
    kLengthBody,
    kCloseBody,
    kDone,
    kError,
  };

  // Parses one head if it is all there. Skips an interim (1xx) head, saying so in `interim`.
  Step ParseHead(bool* interim);
  // Moves `n` raw bytes into the decoded body (or skips them).
  void TakeBody(size_t n);
  Step Fail(const char* why);
  size_t raw_available() const { return raw_end_ - raw_begin_; }

  // Layout: [body_begin_, body_end_) decoded body, then (after a gap left by squeezed-out chunk
  // framing) [raw_begin_, raw_end_) bytes not yet decoded, then free space up to capacity_.
  std::unique_ptr<char[]> buffer_;
  size_t capacity_;
  size_t body_begin_ = 0;
  size_t body_end_ = 0;
  size_t raw_begin_ = 0;
  size_t raw_end_ = 0;
  // Bytes after raw_begin_ already searched for the end of the head.
  size_t head_scanned_ = 0;
  // Bytes of body or of the current chunk still to come.
  uint64_t remaining_ = 0;
  size_t trailer_bytes_ = 0;
  State state_ = State::kHead;
  ResponseHead head_;
  const char* error_ = "";
  bool keep_body_;
};

// The first `"mock_sent_ns":<integer>` in an event's data (the mock provider's send time), or
// -1. The events themselves are split by common/http/sse.h.
int64_t MockSentNs(std::string_view data);

}  // namespace berry::bench
