// A provider's response body or stream chunk through the usage parser
// (data-plane/openai/usage.h), checked against Boost.JSON's own parser.
//
// Properties: found usage comes from a document Boost.JSON parses, whose top-level `usage` is an
// object; when the text is unambiguous (one `"usage"`, one `"prompt_tokens"`, no escapes) and its
// top-level usage has a non-negative integer `prompt_tokens`, the parser finds that number.
#include <boost/json/parse.hpp>
#include <boost/json/parse_options.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "data-plane/openai/usage.h"
#include "tests/fuzz/byte_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  const auto usage = berry::openai::ExtractUsage(json);

  boost::json::parse_options options;
  options.max_depth = 128;  // the usage parser's own limit
  boost::system::error_code ec;
  const boost::json::value reference = boost::json::parse(json, ec, {}, options);
  const boost::json::object* usage_object = nullptr;
  if (!ec && reference.is_object()) {
    if (const auto* found = reference.as_object().if_contains("usage")) {
      usage_object = found->if_object();
    }
  }
  if (usage) {
    FUZZ_CHECK(usage_object != nullptr);
  }
  if (usage_object != nullptr && berry::fuzz::Count(json, "\"usage\"") == 1 &&
      berry::fuzz::Count(json, "\"prompt_tokens\"") == 1 &&
      json.find('\\') == std::string_view::npos) {
    const auto* prompt = usage_object->if_contains("prompt_tokens");
    if (prompt != nullptr &&
        (prompt->is_uint64() || (prompt->is_int64() && prompt->as_int64() >= 0))) {
      const uint64_t expected =
          prompt->is_uint64() ? prompt->as_uint64() : static_cast<uint64_t>(prompt->as_int64());
      FUZZ_CHECK(usage.has_value());
      FUZZ_CHECK(usage->prompt_tokens == expected);
    }
  }
  return 0;
}
