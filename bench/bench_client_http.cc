#include "bench/bench_client_http.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>

#include "absl/status/status.h"

namespace berry::bench {
namespace {

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return AsciiLower(x) == AsciiLower(y);
         });
}

std::string_view TrimWhitespace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

bool IsTokenChar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
    return true;
  }
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Whether the comma-separated `list` holds `token` (case-insensitive).
bool ListHas(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const size_t comma = list.find(',');
    if (EqualsIgnoreCase(TrimWhitespace(list.substr(0, comma)), token)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    list.remove_prefix(comma + 1);
  }
  return false;
}

// Whether the last coding in a Transfer-Encoding list is chunked.
bool LastCodingIsChunked(std::string_view list) {
  const size_t comma = list.rfind(',');
  if (comma != std::string_view::npos) {
    list.remove_prefix(comma + 1);
  }
  return EqualsIgnoreCase(TrimWhitespace(list), "chunked");
}

std::string_view HeaderName(std::string_view line) {
  return line.substr(0, std::min(line.find(':'), line.size()));
}

}  // namespace

absl::StatusOr<Target> ParseTarget(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.size() < kScheme.size() || !EqualsIgnoreCase(url.substr(0, kScheme.size()), kScheme)) {
    return absl::InvalidArgumentError("--target must be http://HOST:PORT/PATH (plain HTTP)");
  }
  url.remove_prefix(kScheme.size());
  const size_t slash = url.find_first_of("/?");
  Target target;
  target.authority = std::string(url.substr(0, slash));
  if (slash == std::string_view::npos || url[slash] == '?') {
    // push_back, not = "/": GCC 12 warns falsely (-Wrestrict) about assigning a literal here.
    target.path.push_back('/');
  }
  if (slash != std::string_view::npos) {
    target.path.append(url.substr(slash));
  }
  std::string_view authority = target.authority;
  if (authority.find('@') != std::string_view::npos) {
    return absl::InvalidArgumentError("--target must not carry user information");
  }
  std::string_view host = authority;
  std::string_view port;
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError("--target has an unterminated [IPv6] host");
    }
    host = authority.substr(1, close - 1);
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return absl::InvalidArgumentError("--target has junk after the [IPv6] host");
      }
      port = rest.substr(1);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    return absl::InvalidArgumentError("--target has no host");
  }
  target.host = std::string(host);
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return absl::InvalidArgumentError("--target has a bad port");
    }
    target.port = static_cast<uint16_t>(value);
  }
  return target;
}

absl::Status CheckHeaderLine(std::string_view line) {
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError("--header wants \"Name: value\"");
  }
  if (!std::all_of(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(colon), IsTokenChar)) {
    return absl::InvalidArgumentError("--header name is not an HTTP token");
  }
  if (line.find_first_of("\r\n") != std::string_view::npos) {
    return absl::InvalidArgumentError("--header must not contain CR or LF");
  }
  if (EqualsIgnoreCase(HeaderName(line), "content-length") ||
      EqualsIgnoreCase(HeaderName(line), "transfer-encoding")) {
    return absl::InvalidArgumentError("--header cannot set the body framing");
  }
  return absl::OkStatus();
}

std::string BuildRequest(const Target& target, const std::vector<std::string>& headers,
                         const std::string* body) {
  auto has = [&headers](std::string_view name) {
    return std::any_of(headers.begin(), headers.end(), [name](const std::string& line) {
      return EqualsIgnoreCase(HeaderName(line), name);
    });
  };
  std::string out;
  out.append(body != nullptr ? "POST " : "GET ").append(target.path).append(" HTTP/1.1\r\n");
  if (!has("host")) {
    out.append("Host: ").append(target.authority).append("\r\n");
  }
  for (const std::string& line : headers) {
    out.append(line).append("\r\n");
  }
  if (body != nullptr) {
    if (!has("content-type")) {
      out.append("Content-Type: application/json\r\n");
    }
    out.append("Content-Length: ").append(std::to_string(body->size())).append("\r\n\r\n");
    out.append(*body);
  } else {
    out.append("\r\n");
  }
  return out;
}

// ----------------------------------------------------------------------------------------------
// ResponseDecoder

std::span<char> ResponseDecoder::ReadSpace() {
  if (buffer_ == nullptr) {
    // Allocated on first use, so connections that never get this far cost nothing.
    buffer_ = std::make_unique<char[]>(capacity_);
  }
  // Squeeze out consumed body and chunk framing; what is live is usually a partial event.
  if (body_begin_ != 0 || raw_begin_ != body_end_) {
    const size_t body_size = body_end_ - body_begin_;
    const size_t raw_size = raw_available();
    if (body_size > 0) {
      std::memmove(buffer_.get(), buffer_.get() + body_begin_, body_size);
    }
    if (raw_size > 0) {
      std::memmove(buffer_.get() + body_size, buffer_.get() + raw_begin_, raw_size);
    }
    body_begin_ = 0;
    body_end_ = body_size;
    raw_begin_ = body_size;
    raw_end_ = body_size + raw_size;
  }
  if (raw_end_ == capacity_) {
    if (capacity_ >= kMaxBuffer) {
      Fail("response head or event larger than 1 MiB");
      return {};
    }
    const size_t grown = std::min(capacity_ * 2, kMaxBuffer);
    auto bigger = std::make_unique<char[]>(grown);
    std::memcpy(bigger.get(), buffer_.get(), raw_end_);
    buffer_ = std::move(bigger);
    capacity_ = grown;
  }
  return {buffer_.get() + raw_end_, capacity_ - raw_end_};
}

void ResponseDecoder::Next() {
  state_ = State::kHead;
  head_ = ResponseHead();
  head_scanned_ = 0;
  remaining_ = 0;
  trailer_bytes_ = 0;
  body_begin_ = body_end_ = raw_begin_;
}

void ResponseDecoder::Clear() {
  Next();
  body_begin_ = body_end_ = raw_begin_ = raw_end_ = 0;
  error_ = "";
}

ResponseDecoder::Step ResponseDecoder::Fail(const char* why) {
  state_ = State::kError;
  error_ = why;
  return Step::kError;
}

void ResponseDecoder::TakeBody(size_t n) {
  if (keep_body_) {
    if (body_end_ != raw_begin_) {
      std::memmove(buffer_.get() + body_end_, buffer_.get() + raw_begin_, n);
    }
    body_end_ += n;
  }
  raw_begin_ += n;
}

ResponseDecoder::Step ResponseDecoder::ParseHead(bool* interim) {
  const std::string_view raw(buffer_.get() + raw_begin_, raw_available());
  const size_t end = raw.find("\r\n\r\n", head_scanned_);
  if (end == std::string_view::npos) {
    if (raw.size() > kMaxHead) {
      return Fail("response head larger than 64 KiB");
    }
    head_scanned_ = raw.size() < 3 ? 0 : raw.size() - 3;
    return Step::kNeedMore;
  }
  std::string_view lines = raw.substr(0, end + 2);
  raw_begin_ += end + 4;
  head_scanned_ = 0;
  body_begin_ = body_end_ = raw_begin_;

  // Status line: HTTP/1.x SSS [reason]
  const size_t eol = lines.find("\r\n");
  const std::string_view status_line = lines.substr(0, eol);
  lines.remove_prefix(eol + 2);
  if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.") || status_line[8] != ' ' ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    return Fail("malformed status line");
  }
  const char minor = status_line[7];
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (status_line[i] < '0' || status_line[i] > '9') {
      return Fail("malformed status code");
    }
    status = status * 10 + (status_line[i] - '0');
  }
  if (minor != '0' && minor != '1') {
    return Fail("unsupported HTTP version");
  }

  bool chunked = false;
  bool has_length = false;
  bool other_coding = false;
  bool connection_close = false;
  bool connection_keep_alive = false;
  uint64_t length = 0;
  while (!lines.empty()) {
    const size_t line_end = lines.find("\r\n");
    const std::string_view line = lines.substr(0, line_end);
    lines.remove_prefix(line_end + 2);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 || line.front() == ' ' ||
        line.front() == '\t') {
      return Fail("malformed header line");
    }
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = TrimWhitespace(line.substr(colon + 1));
    if (EqualsIgnoreCase(name, "content-length")) {
      uint64_t parsed = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed);
      if (value.empty() || ec != std::errc() || p != value.data() + value.size() ||
          (has_length && parsed != length)) {
        return Fail("bad Content-Length");
      }
      has_length = true;
      length = parsed;
    } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
      if (LastCodingIsChunked(value)) {
        chunked = true;
      } else {
        other_coding = true;
      }
    } else if (EqualsIgnoreCase(name, "connection")) {
      connection_close = connection_close || ListHas(value, "close");
      connection_keep_alive = connection_keep_alive || ListHas(value, "keep-alive");
    }
  }

  if (status >= 100 && status < 200) {
    if (status == 101) {
      return Fail("unexpected 101 Switching Protocols");
    }
    // An interim response (100 Continue, 103 Early Hints): the real one follows.
    *interim = true;
    return Step::kNeedMore;
  }
  head_.status = status;
  head_.keep_alive = minor == '1' ? !connection_close : connection_keep_alive && !connection_close;
  if (status == 204 || status == 304) {
    state_ = State::kDone;
  } else if (chunked && !other_coding) {
    state_ = State::kChunkSize;
  } else if (other_coding || !has_length) {
    // Delimited by the server closing the connection.
    head_.keep_alive = false;
    state_ = State::kCloseBody;
  } else if (length == 0) {
    state_ = State::kDone;
  } else {
    remaining_ = length;
    state_ = State::kLengthBody;
  }
  return Step::kHead;
}

ResponseDecoder::Step ResponseDecoder::Decode() {
  for (;;) {
    switch (state_) {
      case State::kHead: {
        if (raw_available() == 0) {
          return Step::kNeedMore;
        }
        bool interim = false;
        const Step step = ParseHead(&interim);
        if (interim) {
          continue;
        }
        return step;
      }
      case State::kChunkSize: {
        const char* begin = buffer_.get() + raw_begin_;
        const char* nl = static_cast<const char*>(std::memchr(begin, '\n', raw_available()));
        if (nl == nullptr) {
          if (raw_available() > 1024) {
            return Fail("chunk-size line too long");
          }
          return Step::kNeedMore;
        }
        uint64_t size = 0;
        const char* p = begin;
        const char* digits_end = begin;
        for (; p < nl && digits_end - begin < 16; ++p) {
          const char c = *p;
          int digit = 0;
          if (c >= '0' && c <= '9') {
            digit = c - '0';
          } else if (c >= 'a' && c <= 'f') {
            digit = c - 'a' + 10;
          } else if (c >= 'A' && c <= 'F') {
            digit = c - 'A' + 10;
          } else {
            break;
          }
          size = size * 16 + static_cast<uint64_t>(digit);
          digits_end = p + 1;
        }
        // After the digits: optional whitespace, then a ;extension or the end of the line.
        if (digits_end == begin || (p < nl && *p != ';' && *p != ' ' && *p != '\t' && *p != '\r')) {
          return Fail("bad chunk size");
        }
        raw_begin_ += static_cast<size_t>(nl - begin) + 1;
        if (size == 0) {
          state_ = State::kTrailer;
        } else {
          remaining_ = size;
          state_ = State::kChunkData;
        }
        continue;
      }
      case State::kChunkData:
      case State::kLengthBody: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, raw_available()));
        if (n == 0) {
          return Step::kNeedMore;
        }
        TakeBody(n);
        remaining_ -= n;
        if (remaining_ == 0) {
          state_ = state_ == State::kChunkData ? State::kChunkEnd : State::kDone;
        }
        continue;
      }
      case State::kChunkEnd: {
        if (raw_available() < 2) {
          return Step::kNeedMore;
        }
        if (buffer_[raw_begin_] != '\r' || buffer_[raw_begin_ + 1] != '\n') {
          return Fail("missing CRLF after chunk data");
        }
        raw_begin_ += 2;
        state_ = State::kChunkSize;
        continue;
      }
      case State::kTrailer: {
        const char* begin = buffer_.get() + raw_begin_;
        const char* nl = static_cast<const char*>(std::memchr(begin, '\n', raw_available()));
        if (nl == nullptr) {
          if (trailer_bytes_ + raw_available() > kMaxHead) {
            return Fail("trailers larger than 64 KiB");
          }
          return Step::kNeedMore;
        }
        const size_t line = static_cast<size_t>(nl - begin) + 1;
        raw_begin_ += line;
        trailer_bytes_ += line;
        if (line == 1 || (line == 2 && *begin == '\r')) {
          state_ = State::kDone;
        }
        continue;
      }
      case State::kCloseBody:
        if (raw_available() > 0) {
          TakeBody(raw_available());
        }
        return Step::kNeedMore;
      case State::kDone:
        return Step::kDone;
      case State::kError:
        return Step::kError;
    }
  }
}

ResponseDecoder::Step ResponseDecoder::Eof() {
  switch (state_) {
    case State::kCloseBody:
      state_ = State::kDone;
      return Step::kDone;
    case State::kDone:
      return Step::kDone;
    case State::kError:
      return Step::kError;
    case State::kHead:
      return Fail(raw_available() == 0 ? "connection closed before a response"
                                       : "connection closed inside the response head");
    default:
      return Fail("connection closed inside the response body");
  }
}

// ----------------------------------------------------------------------------------------------
// Server-Sent Events

int64_t MockSentNs(std::string_view data) {
  constexpr std::string_view kSentField = "\"mock_sent_ns\":";
  // glibc's memmem: the field sits near the end of a few hundred bytes of JSON.
  const void* field = memmem(data.data(), data.size(), kSentField.data(), kSentField.size());
  if (field == nullptr) {
    return -1;
  }
  const char* digits = static_cast<const char*>(field) + kSentField.size();
  const char* data_end = data.data() + data.size();
  while (digits < data_end && *digits == ' ') {
    ++digits;
  }
  int64_t value = 0;
  auto [p, ec] = std::from_chars(digits, data_end, value);
  return ec == std::errc() && p != digits && value >= 0 ? value : -1;
}

}  // namespace berry::bench
