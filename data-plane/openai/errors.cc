#include "data-plane/openai/errors.h"

#include "common/json/json_escape.h"

namespace berry::openai {
namespace {

constexpr std::string_view kInvalidRequestError = "invalid_request_error";
constexpr std::string_view kUpstreamError = "upstream_error";

void AppendStringOrNull(std::string& out, std::string_view value) {
  if (value.empty()) {
    out.append("null");
  } else {
    json::AppendJsonString(out, value);
  }
}

}  // namespace

ErrorSpec SpecFor(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidRequest:
      return {400, kInvalidRequestError, ""};
    case ErrorKind::kInvalidApiKey:
      return {401, kInvalidRequestError, "invalid_api_key"};
    case ErrorKind::kModelNotAllowed:
      return {403, kInvalidRequestError, "model_not_allowed"};
    case ErrorKind::kModelNotFound:
      return {404, kInvalidRequestError, "model_not_found"};
    case ErrorKind::kUnknownUrl:
      return {404, kInvalidRequestError, "unknown_url"};
    case ErrorKind::kMethodNotAllowed:
      return {405, kInvalidRequestError, "method_not_allowed"};
    case ErrorKind::kRequestTooLarge:
      return {413, kInvalidRequestError, "request_too_large"};
    case ErrorKind::kRateLimited:
      return {429, "rate_limit_error", "rate_limit_exceeded"};
    case ErrorKind::kInternal:
      return {500, "server_error", "internal_error"};
    case ErrorKind::kBadGateway:
      return {502, kUpstreamError, "bad_gateway"};
    case ErrorKind::kNoBackendAvailable:
      return {503, kUpstreamError, "no_backend_available"};
    case ErrorKind::kUpstreamTimeout:
      return {504, kUpstreamError, "upstream_timeout"};
  }
  // Only reachable with a value outside the enum; treat it as our own bug.
  return {500, "server_error", "internal_error"};
}

std::string ErrorJson(std::string_view message, std::string_view type, std::string_view param,
                      std::string_view code) {
  std::string out;
  out.reserve(64 + message.size() + type.size() + param.size() + code.size());
  out.append(R"({"error":{"message":)");
  json::AppendJsonString(out, message);
  out.append(R"(,"type":)");
  json::AppendJsonString(out, type);
  out.append(R"(,"param":)");
  AppendStringOrNull(out, param);
  out.append(R"(,"code":)");
  AppendStringOrNull(out, code);
  out.append("}}");
  return out;
}

std::string ErrorJson(ErrorKind kind, std::string_view message, std::string_view param) {
  const ErrorSpec spec = SpecFor(kind);
  return ErrorJson(message, spec.type, param, spec.code);
}

std::string SseErrorEvent(std::string_view message) {
  std::string out;
  out.reserve(64 + message.size());
  out.append(R"(data: {"error":{"message":)");
  json::AppendJsonString(out, message);
  out.append(R"(,"type":")");
  out.append(kUpstreamError);
  out.append("\"}}\n\n");
  return out;
}

}  // namespace berry::openai
