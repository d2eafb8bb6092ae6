// How long an upstream that answered 429 asked us to wait, from its response headers:
//
//   Retry-After: 2 | 1.5 | Wed, 21 Oct 2026 07:28:00 GMT    (RFC 9110: seconds or an HTTP-date;
//                                                            fractions are accepted too)
//   x-ratelimit-reset-requests / x-ratelimit-reset-tokens:  "1.5", "20ms", "6m0s", "1h2m3.5s"
//                                                            (OpenAI's Go-style durations, or
//                                                            bare seconds)
//
// Retry-After wins when present and valid. Otherwise the longest x-ratelimit-reset-* whose
// matching x-ratelimit-remaining-* is absent or 0 (a reset of a window that still has room is
// not why we were refused). The result is capped by the caller. Pure functions; any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/http/client.h"

namespace berry::proxy {

// "2", "1.5" (seconds), or a Go-style duration ("20ms", "6m0s", "1h2m3.5s", "0.5s"; units h, m,
// s, ms, us/µs, ns). nullopt for anything else, or a negative or absurd (> 1 year) value.
std::optional<std::chrono::nanoseconds> ParseRateLimitDuration(std::string_view text);

// Retry-After's value: seconds (as ParseRateLimitDuration's bare-number form) or an IMF-fixdate
// HTTP-date taken relative to `now_unix_seconds` (a date in the past reads as 0).
std::optional<std::chrono::nanoseconds> ParseRetryAfter(std::string_view text,
                                                        int64_t now_unix_seconds);

// The wait a 429 response names (see the header comment); nullopt when it names none.
std::optional<std::chrono::nanoseconds> UpstreamRetryAfter(const upstream::ResponseFields& fields,
                                                           int64_t now_unix_seconds);

}  // namespace berry::proxy
