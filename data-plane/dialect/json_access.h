// Reading untrusted JSON the way every translator here does: parse without throwing (nesting
// bounded like request bodies), and read a field as a string or a count with a neutral value
// when it is absent or of another type. Internal to berry_dialect; pure inline functions, any
// thread.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string_view>

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

}  // namespace berry::dialect::internal
