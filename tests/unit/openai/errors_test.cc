#include "data-plane/openai/errors.h"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace berry::openai::errors_test {
namespace {

// Parses `text` as JSON (failing the test if it is not) and returns the "error" object.
boost::json::object ErrorObject(std::string_view text) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(text, ec);
  EXPECT_FALSE(ec) << ec.message() << " in " << text;
  if (ec || !value.is_object() || value.as_object().size() != 1 ||
      !value.as_object().contains("error") || !value.at("error").is_object()) {
    ADD_FAILURE() << "not {\"error\":{...}}: " << text;
    return {};
  }
  return value.at("error").as_object();
}

// The string member `key` of `object`, or a marker saying why there is none.
std::string StringAt(const boost::json::object& object, std::string_view key) {
  const boost::json::value* value = object.if_contains(key);
  if (value == nullptr) {
    return "<missing>";
  }
  if (!value->is_string()) {
    return "<not a string>";
  }
  return std::string(value->as_string());
}

TEST(ErrorJson, HasExactlyMessageTypeParamAndCode) {
  const boost::json::object error =
      ErrorObject(ErrorJson("bad thing", "invalid_request_error", "model", "model_not_found"));
  EXPECT_EQ(error.size(), 4u);
  EXPECT_EQ(StringAt(error, "message"), "bad thing");
  EXPECT_EQ(StringAt(error, "type"), "invalid_request_error");
  EXPECT_EQ(StringAt(error, "param"), "model");
  EXPECT_EQ(StringAt(error, "code"), "model_not_found");
}

TEST(ErrorJson, WritesNullForAnEmptyParamAndCode) {
  EXPECT_EQ(ErrorJson("m", "t"),
            R"({"error":{"message":"m","type":"t","param":null,"code":null}})");
  const boost::json::object error = ErrorObject(ErrorJson("m", "t"));
  EXPECT_EQ(error.size(), 4u);
  EXPECT_TRUE(error.at("param").is_null());
  EXPECT_TRUE(error.at("code").is_null());
}

TEST(ErrorJson, EscapesTheMessage) {
  const std::string message = "quote \" backslash \\ newline \n tab \t bell \x07 caf\xC3\xA9";
  const std::string json = ErrorJson(message, "invalid_request_error");
  EXPECT_NE(json.find(R"(quote \" backslash \\ newline \n tab \t bell \u0007)"), std::string::npos)
      << json;
  EXPECT_EQ(StringAt(ErrorObject(json), "message"), message);
}

TEST(ErrorJson, ReplacesInvalidUtf8SoTheBodyStaysValidJson) {
  const std::string json = ErrorJson("bad \xFF byte \xC3", "upstream_error");
  EXPECT_EQ(StringAt(ErrorObject(json), "message"), "bad \xEF\xBF\xBD byte \xEF\xBF\xBD");
}

TEST(ErrorJson, FillsTypeAndCodeFromTheKind) {
  const boost::json::object error =
      ErrorObject(ErrorJson(ErrorKind::kModelNotFound, "The model 'x' does not exist", "model"));
  EXPECT_EQ(StringAt(error, "message"), "The model 'x' does not exist");
  EXPECT_EQ(StringAt(error, "type"), "invalid_request_error");
  EXPECT_EQ(StringAt(error, "param"), "model");
  EXPECT_EQ(StringAt(error, "code"), "model_not_found");
}

TEST(ErrorJson, LeavesCodeNullForAPlainInvalidRequest) {
  const boost::json::object error = ErrorObject(ErrorJson(ErrorKind::kInvalidRequest, "bad"));
  EXPECT_EQ(StringAt(error, "type"), "invalid_request_error");
  EXPECT_TRUE(error.at("code").is_null());
  EXPECT_TRUE(error.at("param").is_null());
}

struct SpecCase {
  ErrorKind kind;
  int status;
  std::string_view type;
  std::string_view code;
};

TEST(SpecFor, MapsEveryKindToItsStatusTypeAndCode) {
  const SpecCase cases[] = {
      {ErrorKind::kInvalidRequest, 400, "invalid_request_error", ""},
      {ErrorKind::kInvalidApiKey, 401, "invalid_request_error", "invalid_api_key"},
      {ErrorKind::kModelNotAllowed, 403, "invalid_request_error", "model_not_allowed"},
      {ErrorKind::kModelNotFound, 404, "invalid_request_error", "model_not_found"},
      {ErrorKind::kUnknownUrl, 404, "invalid_request_error", "unknown_url"},
      {ErrorKind::kMethodNotAllowed, 405, "invalid_request_error", "method_not_allowed"},
      {ErrorKind::kRequestTooLarge, 413, "invalid_request_error", "request_too_large"},
      {ErrorKind::kRateLimited, 429, "rate_limit_error", "rate_limit_exceeded"},
      {ErrorKind::kInternal, 500, "server_error", "internal_error"},
      {ErrorKind::kBadGateway, 502, "upstream_error", "bad_gateway"},
      {ErrorKind::kNoBackendAvailable, 503, "upstream_error", "no_backend_available"},
      {ErrorKind::kUpstreamTimeout, 504, "upstream_error", "upstream_timeout"},
  };
  for (const SpecCase& c : cases) {
    const ErrorSpec spec = SpecFor(c.kind);
    EXPECT_EQ(spec.http_status, c.status) << static_cast<int>(c.kind);
    EXPECT_EQ(spec.type, c.type) << static_cast<int>(c.kind);
    EXPECT_EQ(spec.code, c.code) << static_cast<int>(c.kind);
  }
}

TEST(SseErrorEvent, IsOneDataEventWithAnUpstreamError) {
  const std::string event = SseErrorEvent("upstream closed the stream");
  EXPECT_EQ(event,
            "data: {\"error\":{\"message\":\"upstream closed the stream\","
            "\"type\":\"upstream_error\"}}\n\n");
}

TEST(SseErrorEvent, CarriesAJsonPayloadWithExactlyMessageAndType) {
  const std::string event = SseErrorEvent("line1\nline2 \"quoted\"");
  ASSERT_EQ(event.rfind("data: ", 0), 0u);
  ASSERT_EQ(event.substr(event.size() - 2), "\n\n");
  const std::string_view payload = std::string_view(event).substr(6, event.size() - 8);
  EXPECT_EQ(payload.find('\n'), std::string_view::npos) << "a raw newline would split the event";
  const boost::json::object error = ErrorObject(payload);
  EXPECT_EQ(error.size(), 2u);
  EXPECT_EQ(StringAt(error, "message"), "line1\nline2 \"quoted\"");
  EXPECT_EQ(StringAt(error, "type"), "upstream_error");
}

}  // namespace
}  // namespace berry::openai::errors_test
