// A client's request body through the proxy's scanner and model rewrite
// (data-plane/openai/request_body.h), checked against Boost.JSON's own parser.
//
// Input: byte 0 picks the upstream model name (some need escaping); the rest is the body.
//
// Properties: a body the scanner accepts is one JSON object Boost.JSON parses too, with the same
// `model` and `stream`; for every such body the rewritten one parses, its `model` is the upstream
// name, and with `model` taken out of both they are equal (the rewrite changes nothing else).
// A body is refused as invalid JSON exactly when Boost.JSON refuses it, and never with an
// internal error.
#include <boost/json/parse.hpp>
#include <boost/json/parse_options.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "data-plane/openai/request_body.h"
#include "tests/fuzz/byte_source.h"

namespace {

constexpr std::string_view kUpstreamModels[] = {
    "gpt-4o", "", "a\"b\\c", "line\nbreak\ttab\x01", "caf\xc3\xa9 \xe2\x82\xac", "m/1:2@x"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  const std::string_view upstream =
      kUpstreamModels[berry::fuzz::TakeByte(body) % std::size(kUpstreamModels)];

  boost::json::parse_options options;
  options.max_depth = berry::openai::kMaxRequestDepth;
  boost::system::error_code ec;
  const boost::json::value reference = boost::json::parse(body, ec, {}, options);

  const auto fields = berry::openai::ScanRequestBody(body);
  if (!fields.ok()) {
    // A client error, never an internal one; "not valid JSON" exactly when Boost.JSON says so.
    FUZZ_CHECK(fields.status().code() == absl::StatusCode::kInvalidArgument);
    const bool invalid =
        absl::StartsWith(fields.status().message(), "request body is not valid JSON");
    FUZZ_CHECK(invalid == static_cast<bool>(ec));
    return 0;
  }
  // Accepted: Boost.JSON agrees it is an object with that model.
  FUZZ_CHECK(!ec);
  FUZZ_CHECK(reference.is_object());
  const boost::json::object& in = reference.as_object();
  const boost::json::value* model = in.if_contains("model");
  FUZZ_CHECK(model != nullptr && model->is_string());
  FUZZ_CHECK(std::string_view(model->as_string()) == fields->model);
  FUZZ_CHECK(!fields->model.empty());
  const boost::json::value* stream = in.if_contains("stream");
  FUZZ_CHECK(stream == nullptr ? !fields->stream
                               : (stream->is_bool() && stream->as_bool() == fields->stream));

  const std::string rewritten = berry::openai::RewriteModel(body, *fields, upstream);
  boost::json::value after = boost::json::parse(rewritten, ec, {}, options);
  FUZZ_CHECK(!ec);
  FUZZ_CHECK(after.is_object());
  boost::json::object& out = after.as_object();
  const boost::json::value* new_model = out.if_contains("model");
  FUZZ_CHECK(new_model != nullptr && new_model->is_string() &&
             std::string_view(new_model->as_string()) == upstream);
  boost::json::object in_rest = in;
  in_rest.erase("model");
  out.erase("model");
  // Compared serialized: Boost.JSON reads a number like 0e333 as NaN (0 × inf), and NaN != NaN
  // (regression test RewriteModel.FuzzerFindingKeepsEveryOtherMember).
  FUZZ_CHECK(boost::json::serialize(in_rest) == boost::json::serialize(out));
  return 0;
}
