#include "data-plane/openai/request_body.h"

#include <algorithm>
#include <boost/json/basic_parser_impl.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/json/json_escape.h"
#include "common/strings/views.h"

namespace berry::openai {
namespace {

using boost::json::error_code;
using JsonStringView = boost::json::string_view;

enum class Field : uint8_t { kOther, kModel, kStream, kStreamOptions, kIncludeUsage, kMaxTokens };

// Field errors in the order the client reads about them; kNone = no error yet.
enum class FieldError : uint8_t {
  kNone,
  kModelNotString,
  kStreamNotBool,
  kDuplicateModel,
  kDuplicateStream,
};

std::string_view FieldErrorMessage(FieldError error) {
  switch (error) {
    case FieldError::kModelNotString:
      return "'model' must be a non-empty string";
    case FieldError::kStreamNotBool:
      return "'stream' must be a boolean";
    case FieldError::kDuplicateModel:
      return "duplicate field 'model'";
    case FieldError::kDuplicateStream:
      return "duplicate field 'stream'";
    case FieldError::kNone:
      break;
  }
  return "";
}

// Names a key that Boost.JSON may hand over in pieces (when it holds escapes), keeping only a
// short prefix: every name we look for is short, so a longer key is simply "other".
class KeyAssembler {
 public:
  void AppendPart(std::string_view part) {
    started_ = true;
    if (part.size() > sizeof(buf_) - len_) {
      overflow_ = true;
      return;
    }
    if (!part.empty()) {
      std::memcpy(buf_ + len_, part.data(), part.size());
    }
    len_ += part.size();
  }

  // Classifies the key whose final piece is `last`, then resets for the next key.
  Field Finish(std::string_view last, bool top_level, bool in_stream_options) {
    std::string_view key = last;
    if (started_) {
      AppendPart(last);
      key = overflow_ ? std::string_view() : std::string_view(buf_, len_);
    }
    started_ = false;
    overflow_ = false;
    len_ = 0;
    if (top_level) {
      if (key == "model") {
        return Field::kModel;
      }
      if (key == "stream") {
        return Field::kStream;
      }
      if (key == "stream_options") {
        return Field::kStreamOptions;
      }
      if (key == "max_tokens" || key == "max_completion_tokens") {
        return Field::kMaxTokens;
      }
    } else if (in_stream_options && key == "include_usage") {
      return Field::kIncludeUsage;
    }
    return Field::kOther;
  }

 private:
  char buf_[24];  // "max_completion_tokens" is the longest name looked for
  size_t len_ = 0;
  bool started_ = false;
  bool overflow_ = false;
};

// basic_parser handler. depth_ counts open containers, so members of the top-level object are
// seen at depth_ == 1 and members of `stream_options` at depth_ == 2.
class RequestHandler {
 public:
  // Limits basic_parser reads from its handler; the names are Boost's.
  // NOLINTBEGIN(readability-identifier-naming)
  static constexpr size_t max_object_size = static_cast<size_t>(-1);
  static constexpr size_t max_array_size = static_cast<size_t>(-1);
  static constexpr size_t max_key_size = static_cast<size_t>(-1);
  static constexpr size_t max_string_size = static_cast<size_t>(-1);
  // NOLINTEND(readability-identifier-naming)

  RequestHandler(std::string_view body, RequestFields& fields) : body_(body), fields_(fields) {}

  bool top_is_object() const { return top_is_object_; }
  bool model_seen() const { return model_seen_; }
  bool model_range_known() const { return model_range_known_; }
  size_t model_member_index() const { return model_member_index_; }
  FieldError field_error() const { return field_error_; }

  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }

  bool on_object_begin(error_code&) {
    if (depth_ == 0) {
      top_is_object_ = true;
    } else if (depth_ == 1) {
      const Field field = TakeField();
      if (field == Field::kStreamOptions) {
        in_stream_options_ = true;
        fields_.has_stream_options = true;
      } else {
        RejectNonString(field);
        RejectNonBool(field);
      }
    } else {
      TakeField();
    }
    ++depth_;
    return true;
  }

  bool on_object_end(size_t, error_code&) {
    --depth_;
    if (depth_ == 1) {
      in_stream_options_ = false;
    }
    return true;
  }

  bool on_array_begin(error_code&) {
    OnScalar();
    ++depth_;
    return true;
  }

  bool on_array_end(size_t, error_code&) {
    --depth_;
    return true;
  }

  bool on_key_part(JsonStringView part, size_t, error_code&) {
    key_.AppendPart(part);
    return true;
  }

  bool on_key(JsonStringView last, size_t, error_code&) {
    pending_ = key_.Finish(last, depth_ == 1, depth_ == 2 && in_stream_options_);
    if (depth_ != 1) {
      return true;
    }
    if (pending_ == Field::kModel) {
      if (model_key_seen_) {
        RecordError(FieldError::kDuplicateModel);
      }
      model_key_seen_ = true;
      model_member_index_ = member_index_;
    } else if (pending_ == Field::kStream) {
      if (stream_key_seen_) {
        RecordError(FieldError::kDuplicateStream);
      }
      stream_key_seen_ = true;
    }
    ++member_index_;
    return true;
  }

  bool on_string_part(JsonStringView part, size_t, error_code&) {
    if (depth_ == 1 && pending_ == Field::kModel) {
      fields_.model.append(part.data(), part.size());
      model_in_pieces_ = true;
    }
    return true;
  }

  bool on_string(JsonStringView last, size_t total, error_code&) {
    const Field field = TakeField();
    if (depth_ == 1) {
      if (field == Field::kModel) {
        OnModelString(last, total);
      }
      RejectNonBool(field);
    } else if (depth_ == 2 && field == Field::kIncludeUsage) {
      fields_.include_usage = false;
    }
    return true;
  }

  bool on_number_part(JsonStringView, error_code&) { return true; }
  bool on_int64(int64_t value, JsonStringView, error_code&) {
    if (depth_ == 1 && pending_ == Field::kMaxTokens && value > 0) {
      fields_.max_tokens = std::max(fields_.max_tokens, static_cast<uint64_t>(value));
    }
    return OnScalar();
  }
  bool on_uint64(uint64_t value, JsonStringView, error_code&) {
    if (depth_ == 1 && pending_ == Field::kMaxTokens) {
      fields_.max_tokens = std::max(fields_.max_tokens, value);
    }
    return OnScalar();
  }
  bool on_double(double, JsonStringView, error_code&) { return OnScalar(); }

  bool on_bool(bool value, error_code&) {
    const Field field = TakeField();
    if (depth_ == 1) {
      if (field == Field::kStream) {
        fields_.stream = value;
      }
      RejectNonString(field);
    } else if (depth_ == 2 && field == Field::kIncludeUsage) {
      fields_.include_usage = value;
    }
    return true;
  }

  bool on_null(error_code&) {
    // `"stream": null` is the OpenAI API's documented default (false), so it is accepted.
    const Field field = TakeField();
    if (depth_ == 1) {
      RejectNonString(field);
    } else if (depth_ == 2 && field == Field::kIncludeUsage) {
      fields_.include_usage = false;
    }
    return true;
  }

  bool on_comment_part(JsonStringView, error_code&) { return true; }
  bool on_comment(JsonStringView, error_code&) { return true; }

 private:
  // The key the next value belongs to (kOther outside objects we care about), consumed by it.
  Field TakeField() { return std::exchange(pending_, Field::kOther); }

  // A number, array start or any other value that is neither string nor bool nor null.
  bool OnScalar() {
    const Field field = TakeField();
    if (depth_ == 1) {
      RejectNonString(field);
      RejectNonBool(field);
    } else if (depth_ == 2 && field == Field::kIncludeUsage) {
      fields_.include_usage = false;
    }
    return true;
  }

  void RejectNonString(Field field) {
    if (field == Field::kModel) {
      RecordError(FieldError::kModelNotString);
    }
  }

  void RejectNonBool(Field field) {
    if (field == Field::kStream) {
      RecordError(FieldError::kStreamNotBool);
    }
  }

  void RecordError(FieldError error) {
    if (field_error_ == FieldError::kNone) {
      field_error_ = error;
    }
  }

  void OnModelString(JsonStringView last, size_t total) {
    model_seen_ = true;
    if (model_in_pieces_) {
      fields_.model.append(last.data(), last.size());
    } else {
      fields_.model.assign(last.data(), last.size());
      // An unescaped string arrives whole, as a view into the input: its position is the
      // token's. An escaped one is decoded into Boost's scratch buffer; ScanRequestBody then
      // finds the token by re-walking the top-level members.
      const std::less<> before;
      const char* begin = body_.data();
      const char* end = body_.data() + body_.size();
      if (last.size() == total && !before(last.data(), begin) &&
          !before(end, last.data() + last.size())) {
        const auto offset = static_cast<size_t>(last.data() - begin);
        if (offset >= 1 && offset + last.size() < body_.size() && body_[offset - 1] == '"' &&
            body_[offset + last.size()] == '"') {
          fields_.model_begin = offset - 1;
          fields_.model_end = offset + last.size() + 1;
          model_range_known_ = true;
        }
      }
    }
    model_in_pieces_ = false;
    if (fields_.model.empty()) {
      RecordError(FieldError::kModelNotString);
    }
  }

  std::string_view body_;
  RequestFields& fields_;
  KeyAssembler key_;
  size_t depth_ = 0;
  size_t member_index_ = 0;
  size_t model_member_index_ = 0;
  Field pending_ = Field::kOther;
  FieldError field_error_ = FieldError::kNone;
  bool top_is_object_ = false;
  bool in_stream_options_ = false;
  bool model_key_seen_ = false;
  bool stream_key_seen_ = false;
  bool model_seen_ = false;
  bool model_in_pieces_ = false;
  bool model_range_known_ = false;
};

// Minimal walker over a document the parser already accepted: it only needs to tell strings
// (with their escapes) from structure, so it never decodes anything.
class ValidatedJsonWalker {
 public:
  explicit ValidatedJsonWalker(std::string_view text) : text_(text) {}

  // The [begin, end) range of the value of the index-th member (0-based) of the top-level
  // object, or nullopt if the text is not shaped as expected.
  std::optional<std::pair<size_t, size_t>> MemberValue(size_t index) {
    SkipWhitespace();
    if (!Consume('{')) {
      return std::nullopt;
    }
    for (size_t member = 0;; ++member) {
      SkipWhitespace();
      if (!SkipString()) {
        return std::nullopt;
      }
      SkipWhitespace();
      if (!Consume(':')) {
        return std::nullopt;
      }
      SkipWhitespace();
      const size_t begin = pos_;
      if (!SkipValue()) {
        return std::nullopt;
      }
      if (member == index) {
        return std::make_pair(begin, pos_);
      }
      SkipWhitespace();
      if (!Consume(',')) {
        return std::nullopt;
      }
    }
  }

 private:
  bool Consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void SkipWhitespace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool SkipString() {
    if (!Consume('"')) {
      return false;
    }
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return true;
      }
      pos_ += c == '\\' ? 2 : 1;
    }
    return false;
  }

  bool SkipValue() {
    if (pos_ >= text_.size()) {
      return false;
    }
    const char first = text_[pos_];
    if (first == '"') {
      return SkipString();
    }
    if (first == '{' || first == '[') {
      size_t depth = 0;
      while (pos_ < text_.size()) {
        const char c = text_[pos_];
        if (c == '"') {
          if (!SkipString()) {
            return false;
          }
          continue;
        }
        ++pos_;
        if (c == '{' || c == '[') {
          ++depth;
        } else if ((c == '}' || c == ']') && --depth == 0) {
          return true;
        }
      }
      return false;
    }
    // Number or literal: runs to the next delimiter.
    while (pos_ < text_.size() && std::strchr(",}] \t\n\r", text_[pos_]) == nullptr) {
      ++pos_;
    }
    return true;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

[[noreturn]] void DieOnBadRange(const RequestFields& fields, size_t body_size) {
  std::fprintf(stderr,
               "berry::openai::RewriteModel: model range [%zu, %zu) is not a string token of a "
               "%zu-byte body; the fields were not scanned from this body\n",
               fields.model_begin, fields.model_end, body_size);
  std::abort();
}

}  // namespace

absl::StatusOr<RequestFields> ScanRequestBody(std::string_view body) {
  boost::json::parse_options options;
  options.max_depth = kMaxRequestDepth;
  RequestFields fields;
  boost::json::basic_parser<RequestHandler> parser(options, body, fields);
  error_code ec;
  const size_t consumed = parser.write_some(/*more=*/false, body.data(), body.size(), ec);
  if (!ec && consumed < body.size()) {
    ec = boost::json::error::extra_data;
  }
  if (ec) {
    // On failure write_some reports how far it got, which is where the problem is.
    return absl::InvalidArgumentError(
        absl::StrCat("request body is not valid JSON: ", ec.message(), " at byte ", consumed));
  }
  const RequestHandler& handler = parser.handler();
  if (!handler.top_is_object()) {
    return absl::InvalidArgumentError("request body must be a JSON object");
  }
  if (handler.field_error() != FieldError::kNone) {
    const std::string_view message = FieldErrorMessage(handler.field_error());
    return absl::InvalidArgumentError(strings::Absl(message));
  }
  if (!handler.model_seen()) {
    return absl::InvalidArgumentError("missing required field 'model'");
  }
  if (!handler.model_range_known()) {
    const auto range = ValidatedJsonWalker(body).MemberValue(handler.model_member_index());
    if (!range || range->second - range->first < 2 || body[range->first] != '"') {
      return absl::InternalError("could not locate the 'model' value in a valid request body");
    }
    fields.model_begin = range->first;
    fields.model_end = range->second;
  }
  return fields;
}

void RewriteModel(std::string_view body, const RequestFields& fields,
                  std::string_view upstream_model, std::string& out) {
  if (fields.model_begin >= fields.model_end || fields.model_end > body.size() ||
      fields.model_end - fields.model_begin < 2 || body[fields.model_begin] != '"' ||
      body[fields.model_end - 1] != '"') {
    DieOnBadRange(fields, body.size());
  }
  out.clear();
  out.reserve(body.size() - (fields.model_end - fields.model_begin) + upstream_model.size() + 2);
  out.append(body.data(), fields.model_begin);
  json::AppendJsonString(out, upstream_model);
  out.append(body.data() + fields.model_end, body.size() - fields.model_end);
}

std::string RewriteModel(std::string_view body, const RequestFields& fields,
                         std::string_view upstream_model) {
  std::string out;
  RewriteModel(body, fields, upstream_model, out);
  return out;
}

void AddIncludeUsage(std::string& body) {
  static constexpr std::string_view kMember = R"("stream_options":{"include_usage":true},)";
  const size_t brace = body.find('{');
  if (brace == std::string::npos) {
    std::fprintf(stderr, "berry: AddIncludeUsage on a body that is not a JSON object\n");
    std::abort();
  }
  body.insert(brace + 1, kMember);
}

}  // namespace berry::openai
