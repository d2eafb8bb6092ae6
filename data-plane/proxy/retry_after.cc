#include "data-plane/proxy/retry_after.h"

#include <cmath>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "common/strings/views.h"

namespace berry::proxy {
namespace {

constexpr double kMaxSeconds = 365.0 * 24 * 3600;

std::optional<std::chrono::nanoseconds> FromSeconds(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > kMaxSeconds) {
    return std::nullopt;
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(std::llround(seconds * 1e9)));
}

// The unit at the start of `text` in seconds, and its length; {0, 0} when there is none.
std::pair<double, size_t> Unit(std::string_view text) {
  struct Known {
    std::string_view name;
    double seconds;
  };
  // Longest first: "ms" before "m", "ns" and "us" before nothing else they prefix.
  static constexpr Known kUnits[] = {{"ms", 1e-3}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6},
                                     {"ns", 1e-9}, {"h", 3600},  {"m", 60},
                                     {"s", 1}};
  for (const Known& unit : kUnits) {
    if (text.substr(0, unit.name.size()) == unit.name) {
      return {unit.seconds, unit.name.size()};
    }
  }
  return {0, 0};
}

}  // namespace

std::optional<std::chrono::nanoseconds> ParseRateLimitDuration(std::string_view text) {
  text = strings::Std(absl::StripAsciiWhitespace(strings::Absl(text)));
  if (text.empty()) {
    return std::nullopt;
  }
  double bare = 0;
  if (absl::SimpleAtod(strings::Absl(text), &bare)) {
    return FromSeconds(bare);  // "1.5": seconds (also "inf"/"nan", which FromSeconds refuses)
  }
  double total = 0;
  while (!text.empty()) {
    size_t digits = 0;
    while (digits < text.size() &&
           (absl::ascii_isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.')) {
      ++digits;
    }
    double number = 0;
    if (digits == 0 || !absl::SimpleAtod(strings::Absl(text.substr(0, digits)), &number)) {
      return std::nullopt;
    }
    text.remove_prefix(digits);
    const auto [seconds, length] = Unit(text);
    if (length == 0) {
      return std::nullopt;  // a number without a unit in a compound duration
    }
    text.remove_prefix(length);
    total += number * seconds;
  }
  return FromSeconds(total);
}

std::optional<std::chrono::nanoseconds> ParseRetryAfter(std::string_view text,
                                                        int64_t now_unix_seconds) {
  text = strings::Std(absl::StripAsciiWhitespace(strings::Absl(text)));
  double seconds = 0;
  if (absl::SimpleAtod(strings::Absl(text), &seconds)) {
    return FromSeconds(seconds);
  }
  absl::Time when;
  std::string error;
  if (!absl::ParseTime("%a, %d %b %Y %H:%M:%S GMT", std::string(text), absl::UTCTimeZone(), &when,
                       &error)) {
    return std::nullopt;
  }
  const int64_t wait = absl::ToUnixSeconds(when) - now_unix_seconds;
  return FromSeconds(static_cast<double>(wait > 0 ? wait : 0));
}

std::optional<std::chrono::nanoseconds> UpstreamRetryAfter(const upstream::ResponseFields& fields,
                                                           int64_t now_unix_seconds) {
  if (const auto it = fields.find(boost::beast::http::field::retry_after); it != fields.end()) {
    if (auto wait = ParseRetryAfter(std::string_view(it->value().data(), it->value().size()),
                                    now_unix_seconds)) {
      return wait;
    }
  }
  std::optional<std::chrono::nanoseconds> longest;
  for (const std::string_view kind : {"requests", "tokens"}) {
    const std::string reset = std::string("x-ratelimit-reset-").append(kind);
    const std::string remaining = std::string("x-ratelimit-remaining-").append(kind);
    const auto reset_it = fields.find(reset);
    if (reset_it == fields.end()) {
      continue;
    }
    if (const auto left = fields.find(remaining); left != fields.end()) {
      int64_t count = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(
                               absl::string_view(left->value().data(), left->value().size())),
                           &count) &&
          count > 0) {
        continue;  // that window still has room: not why we were refused
      }
    }
    if (auto wait = ParseRateLimitDuration(
            std::string_view(reset_it->value().data(), reset_it->value().size()))) {
      longest = longest ? std::max(*longest, *wait) : *wait;
    }
  }
  return longest;
}

}  // namespace berry::proxy
