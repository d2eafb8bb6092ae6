#include "data-plane/proxy/header_policy.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/rfc7230.hpp>

#include "common/http/wire.h"

namespace berry::proxy {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

constexpr std::string_view kAllowOrigin = "*";
constexpr std::string_view kExposeHeaders = "x-request-id";
constexpr std::string_view kAnthropicVersion = "anthropic-version";

// Calls emit(name, value) for every field of a relayed upstream response, CORS last.
template <typename Emit>
void ForEachRelayedResponseField(const upstream::ResponseFields& fields, Emit&& emit) {
  const std::string_view connection_tokens = fields[http::field::connection];
  for (const auto& field : fields) {
    const http::field name = field.name();
    if (name == http::field::access_control_allow_origin ||
        name == http::field::access_control_expose_headers ||
        HeaderPolicy::IsHopByHopOrOwn(name, field.name_string(), connection_tokens)) {
      continue;
    }
    emit(field.name_string(), field.value());
  }
  emit("Access-Control-Allow-Origin", kAllowOrigin);
  emit("Access-Control-Expose-Headers", kExposeHeaders);
}

}  // namespace

bool HeaderPolicy::IsHopByHopOrOwn(http::field field, std::string_view name,
                                   std::string_view connection_tokens) {
  switch (field) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_authenticate:
    case http::field::proxy_authorization:
    case http::field::proxy_connection:
    case http::field::te:
    case http::field::trailer:
    case http::field::transfer_encoding:
    case http::field::upgrade:
    case http::field::content_length:
    case http::field::host:
      return true;
    default:
      break;
  }
  if (beast::iequals(name, "x-request-id")) {
    return true;
  }
  // A header the Connection header names is hop-by-hop too.
  if (!connection_tokens.empty()) {
    for (auto token : http::token_list(connection_tokens)) {
      if (beast::iequals(token, name)) {
        return true;
      }
    }
  }
  return false;
}

void HeaderPolicy::AppendUpstreamRequestFields(std::string& head,
                                               const server::ArenaFields& client_fields,
                                               const ProviderRoute& route,
                                               std::string_view request_id) {
  const auto configured = [&route](std::string_view name) {
    for (const auto& header : route.headers) {
      if (beast::iequals(header.first, name)) {
        return true;
      }
    }
    return false;
  };
  const bool anthropic = route.dialect == route_table::Dialect::kAnthropic;
  // An Anthropic client's own anthropic-version wins over the provider's (it knows the shapes it
  // reads); other providers get no anthropic-* headers.
  const bool client_version = anthropic && !client_fields[kAnthropicVersion].empty();
  const std::string_view connection_tokens = client_fields[http::field::connection];
  for (const auto& field : client_fields) {
    const http::field name = field.name();
    const std::string_view name_string = field.name_string();
    if (IsHopByHopOrOwn(name, name_string, connection_tokens) ||
        name == http::field::authorization || name == http::field::expect ||
        name == http::field::accept_encoding || beast::iequals(name_string, "x-api-key")) {
      // The client's key is a Berry token; the body must arrive uncompressed (we read `usage`
      // and split SSE events).
      continue;
    }
    const bool anthropic_header =
        name_string.size() >= 10 && beast::iequals(name_string.substr(0, 10), "anthropic-");
    if (anthropic_header && !anthropic) {
      continue;
    }
    if (!route.headers.empty() && configured(name_string) &&
        !(client_version && beast::iequals(name_string, kAnthropicVersion))) {
      continue;  // the provider's configured value wins
    }
    wire::AppendField(head, name_string, field.value());
  }
  if (!configured("host")) {
    wire::AppendField(head, "Host", route.endpoint.host_header);
  }
  if (!route.authorization.empty() && !configured("authorization")) {
    wire::AppendField(head, "Authorization", route.authorization);
  }
  if (!configured("x-request-id")) {
    wire::AppendField(head, "x-request-id", request_id);
  }
  for (const auto& [name, value] : route.headers) {
    if (client_version && beast::iequals(name, kAnthropicVersion)) {
      continue;
    }
    wire::AppendField(head, name, value);
  }
}

void HeaderPolicy::AppendRelayedResponseFields(std::string& head,
                                               const upstream::ResponseFields& upstream_fields) {
  ForEachRelayedResponseField(upstream_fields,
                              [&head](std::string_view name, std::string_view value) {
                                wire::AppendField(head, name, value);
                              });
}

void HeaderPolicy::CopyRelayedResponseFields(const upstream::ResponseFields& upstream_fields,
                                             http::fields& to) {
  ForEachRelayedResponseField(
      upstream_fields,
      [&to](std::string_view name, std::string_view value) { to.insert(name, value); });
}

void HeaderPolicy::AddCors(std::string_view path, http::fields& response) {
  if (path.starts_with("/v1/")) {
    response.set(http::field::access_control_allow_origin, kAllowOrigin);
    response.set(http::field::access_control_expose_headers, kExposeHeaders);
  }
}

void HeaderPolicy::SetPreflight(const server::ArenaFields& request_fields, http::fields& response) {
  response.set(http::field::access_control_allow_origin, kAllowOrigin);
  response.set(http::field::access_control_allow_methods, "GET, POST, OPTIONS");
  const auto requested = request_fields[http::field::access_control_request_headers];
  response.set(http::field::access_control_allow_headers,
               requested.empty() ? beast::string_view("authorization, content-type") : requested);
  response.set(http::field::access_control_max_age, "86400");
}

}  // namespace berry::proxy
