// What the translators here share: reading untrusted JSON the same way (parse without throwing,
// nesting bounded like request bodies; a field read as a string or a count, with a neutral value
// when it is absent or of another type), the refusal of an invalid field, and ids for what a
// provider left unnamed. Internal to berry_dialect; inline functions, any thread.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/strings/views.h"
#include "data-plane/dialect/anthropic.h"  // RequestError
#include "data-plane/openai/request_body.h"

namespace berry::dialect::internal {

inline std::optional<boost::json::value> Parse(std::string_view text) {
  boost::json::parse_options options;
  options.max_depth = openai::kMaxRequestDepth;
  boost::system::error_code ec;
  boost::json::value value =
      boost::json::parse(boost::json::string_view(text.data(), text.size()), ec, {}, options);
  if (ec) {
    return std::nullopt;
  }
  return value;
}

inline std::string_view View(const boost::json::string& s) { return {s.data(), s.size()}; }

// The string at `key` of `object`, or "" when absent or not a string.
inline std::string_view StringAt(const boost::json::object& object, std::string_view key) {
  const boost::json::value* v = object.if_contains(key);
  return v != nullptr && v->is_string() ? View(v->get_string()) : std::string_view();
}

// The non-negative integer at `key` of `object`, or 0 when absent, negative or not an integer.
inline uint64_t Count(const boost::json::object& object, std::string_view key) {
  const boost::json::value* v = object.if_contains(key);
  if (v == nullptr) {
    return 0;
  }
  if (v->is_uint64()) {
    return v->get_uint64();
  }
  if (v->is_int64() && v->get_int64() > 0) {
    return static_cast<uint64_t>(v->get_int64());
  }
  return 0;
}

// A field whose value is wrong whatever the backend: "'<param>' <why>".
inline RequestError Invalid(std::string param, std::string_view why) {
  RequestError error;
  error.message = absl::StrCat("'", param, "' ", strings::Absl(why));
  error.param = std::move(param);
  return error;
}

// 16 hex digits from a per-thread generator seeded once from the system: ids for messages,
// completions and tool calls the provider did not name.
inline std::string RandomHex() {
  thread_local std::mt19937_64 generator{(static_cast<uint64_t>(std::random_device{}()) << 32) ^
                                         std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t bits = generator();
  std::string out(16, '0');
  for (char& c : out) {
    c = kHex[bits & 0xf];
    bits >>= 4;
  }
  return out;
}

}  // namespace berry::dialect::internal
