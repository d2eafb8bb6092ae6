#include "data-plane/openai/usage.h"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cstring>
#include <utility>

namespace berry::openai {
namespace {

using boost::json::error_code;
using JsonStringView = boost::json::string_view;

// Every key we look for is short; a key delivered in pieces (escaped) is matched only against
// them.
enum class Key : uint8_t { kOther, kUsage, kPromptTokens, kCompletionTokens };

// Parses JSON with real-world nesting (responses echo tool schemas) but bounds the recursion.
constexpr size_t kMaxDepth = 128;

class UsageHandler {
 public:
  // Limits basic_parser reads from its handler; the names are Boost's.
  // NOLINTBEGIN(readability-identifier-naming)
  static constexpr size_t max_object_size = static_cast<size_t>(-1);
  static constexpr size_t max_array_size = static_cast<size_t>(-1);
  static constexpr size_t max_key_size = static_cast<size_t>(-1);
  static constexpr size_t max_string_size = static_cast<size_t>(-1);
  // NOLINTEND(readability-identifier-naming)

  // The last top-level `usage` wins, as in most JSON readers.
  std::optional<Usage> result() const {
    if (!usage_is_object_ || (!has_prompt_ && !has_completion_)) {
      return std::nullopt;
    }
    return usage_;
  }

  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }

  bool on_object_begin(error_code&) {
    if (depth_ == 1 && TakeKey() == Key::kUsage) {
      in_usage_ = true;
      usage_is_object_ = true;
      usage_ = Usage{};
      has_prompt_ = false;
      has_completion_ = false;
    } else {
      OnValue();
    }
    ++depth_;
    return true;
  }

  bool on_object_end(size_t, error_code&) {
    --depth_;
    if (depth_ == 1) {
      in_usage_ = false;
    }
    return true;
  }

  bool on_array_begin(error_code&) {
    OnValue();
    ++depth_;
    return true;
  }

  bool on_array_end(size_t, error_code&) {
    --depth_;
    return true;
  }

  bool on_key_part(JsonStringView part, size_t, error_code&) {
    if (part.size() > sizeof(key_buf_) - key_len_) {
      key_overflow_ = true;
    } else if (!part.empty()) {
      std::memcpy(key_buf_ + key_len_, part.data(), part.size());
      key_len_ += part.size();
    }
    key_in_pieces_ = true;
    return true;
  }

  bool on_key(JsonStringView last, size_t, error_code& ec) {
    std::string_view key(last.data(), last.size());
    if (key_in_pieces_) {
      on_key_part(last, 0, ec);
      key = key_overflow_ ? std::string_view() : std::string_view(key_buf_, key_len_);
      key_in_pieces_ = false;
      key_overflow_ = false;
      key_len_ = 0;
    }
    pending_ = Key::kOther;
    if (depth_ == 1 && key == "usage") {
      pending_ = Key::kUsage;
    } else if (depth_ == 2 && in_usage_) {
      if (key == "prompt_tokens") {
        pending_ = Key::kPromptTokens;
      } else if (key == "completion_tokens") {
        pending_ = Key::kCompletionTokens;
      }
    }
    return true;
  }

  bool on_string_part(JsonStringView, size_t, error_code&) { return true; }
  bool on_string(JsonStringView, size_t, error_code&) { return OnValue(); }
  bool on_number_part(JsonStringView, error_code&) { return true; }

  bool on_int64(int64_t value, JsonStringView, error_code&) {
    if (value < 0) {
      return OnValue();
    }
    return OnCount(static_cast<uint64_t>(value));
  }

  bool on_uint64(uint64_t value, JsonStringView, error_code&) { return OnCount(value); }
  bool on_double(double, JsonStringView, error_code&) { return OnValue(); }
  bool on_bool(bool, error_code&) { return OnValue(); }
  bool on_null(error_code&) { return OnValue(); }
  bool on_comment_part(JsonStringView, error_code&) { return true; }
  bool on_comment(JsonStringView, error_code&) { return true; }

 private:
  Key TakeKey() { return std::exchange(pending_, Key::kOther); }

  // Any value that is not a usable count; a non-object top-level `usage` cancels an earlier one.
  bool OnValue() {
    if (TakeKey() == Key::kUsage) {
      usage_is_object_ = false;
    }
    return true;
  }

  bool OnCount(uint64_t value) {
    const Key key = TakeKey();
    if (depth_ == 2 && in_usage_) {
      if (key == Key::kPromptTokens) {
        usage_.prompt_tokens = value;
        has_prompt_ = true;
      } else if (key == Key::kCompletionTokens) {
        usage_.completion_tokens = value;
        has_completion_ = true;
      }
    } else if (key == Key::kUsage) {
      usage_is_object_ = false;
    }
    return true;
  }

  char key_buf_[24];
  size_t key_len_ = 0;
  bool key_in_pieces_ = false;
  bool key_overflow_ = false;
  size_t depth_ = 0;
  Key pending_ = Key::kOther;
  bool in_usage_ = false;
  bool usage_is_object_ = false;
  bool has_prompt_ = false;
  bool has_completion_ = false;
  Usage usage_;
};

}  // namespace

namespace {

// Whether some `"usage"` in the text is followed by `:` and an object. Streams that ask for
// usage carry `"usage":null` in every chunk but the last; those skip the parse.
bool MayCarryUsageObject(std::string_view json) {
  // Searched without the opening quote: 'u' is far rarer in JSON than '"', which makes the
  // search several times faster on every streamed event.
  constexpr std::string_view kKey = "usage\"";
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  for (size_t at = json.find(kKey); at != std::string_view::npos; at = json.find(kKey, at + 1)) {
    if (at == 0 || json[at - 1] != '"') {
      continue;
    }
    size_t i = at + kKey.size();
    while (i < json.size() && is_space(json[i])) {
      ++i;
    }
    if (i >= json.size() || json[i] != ':') {
      continue;
    }
    ++i;
    while (i < json.size() && is_space(json[i])) {
      ++i;
    }
    if (i < json.size() && json[i] == '{') {
      return true;
    }
  }
  return false;
}

}  // namespace

std::optional<Usage> ExtractUsage(std::string_view json) {
  if (!MayCarryUsageObject(json)) {
    return std::nullopt;
  }
  boost::json::parse_options options;
  options.max_depth = kMaxDepth;
  boost::json::basic_parser<UsageHandler> parser(options);
  error_code ec;
  const size_t consumed = parser.write_some(/*more=*/false, json.data(), json.size(), ec);
  if (ec || consumed != json.size()) {
    return std::nullopt;
  }
  return parser.handler().result();
}

bool IsUsageOnlyChunk(std::string_view json) {
  boost::system::error_code ec;
  const boost::json::value value = boost::json::parse(json, ec);
  if (ec || !value.is_object()) {
    return false;
  }
  const boost::json::object& chunk = value.get_object();
  const boost::json::value* usage = chunk.if_contains("usage");
  if (usage == nullptr || !usage->is_object()) {
    return false;
  }
  const boost::json::value* choices = chunk.if_contains("choices");
  return choices == nullptr || (choices->is_array() && choices->get_array().empty());
}

}  // namespace berry::openai
