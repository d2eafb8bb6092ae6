#include "common/json/json_escape.h"

#include <array>
#include <cstddef>
#include <cstdint>

namespace berry::json {
namespace {

constexpr char kHex[] = "0123456789abcdef";
constexpr std::string_view kReplacement = "\\ufffd";

// Printable ASCII other than '"' and '\\': copied as it is.
constexpr std::array<bool, 256> kVerbatim = [] {
  std::array<bool, 256> table{};
  for (int c = 0x20; c < 0x80; ++c) {
    table[c] = c != '"' && c != '\\';
  }
  return table;
}();

// Length of the well-formed UTF-8 sequence starting at text[i] (whose lead byte is >= 0x80), or 0
// when it is malformed or truncated (RFC 3629: no overlongs, no surrogates, nothing past
// U+10FFFF).
size_t Utf8SequenceLength(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const auto is_cont = [&](size_t k) { return k < text.size() && (byte(k) & 0xC0) == 0x80; };
  const uint8_t lead = byte(i);
  if (lead >= 0xC2 && lead <= 0xDF) {
    return is_cont(i + 1) ? 2 : 0;
  }
  if (lead >= 0xE0 && lead <= 0xEF) {
    if (!is_cont(i + 1) || !is_cont(i + 2)) {
      return 0;
    }
    const uint8_t second = byte(i + 1);
    if ((lead == 0xE0 && second < 0xA0) || (lead == 0xED && second > 0x9F)) {
      return 0;  // overlong, or a UTF-16 surrogate
    }
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    if (!is_cont(i + 1) || !is_cont(i + 2) || !is_cont(i + 3)) {
      return 0;
    }
    const uint8_t second = byte(i + 1);
    if ((lead == 0xF0 && second < 0x90) || (lead == 0xF4 && second > 0x8F)) {
      return 0;  // overlong, or past U+10FFFF
    }
    return 4;
  }
  return 0;
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view text) {
  out.reserve(out.size() + text.size() + 2);
  out.push_back('"');
  size_t run_start = 0;  // start of the pending run of bytes copied verbatim
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (kVerbatim[c]) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (const size_t n = Utf8SequenceLength(text, i); n != 0) {
        i += n;
        continue;
      }
    }
    out.append(text.data() + run_start, i - run_start);
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (c < 0x20) {
          const char escaped[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
          out.append(escaped, sizeof(escaped));
        } else {
          out.append(kReplacement);
        }
        break;
    }
    ++i;
    run_start = i;
  }
  out.append(text.data() + run_start, text.size() - run_start);
  out.push_back('"');
}

}  // namespace berry::json
