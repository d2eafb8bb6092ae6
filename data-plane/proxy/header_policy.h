// Which headers cross the proxy, in both directions, decided in one place:
//
//   client → upstream   the client's end-to-end headers, except Authorization and x-api-key
//                       (Berry's user token; the provider's key replaces it), Expect and
//                       Accept-Encoding (the body must arrive uncompressed: the relays read
//                       `usage` and split SSE events), anthropic-* to a provider that is not
//                       Anthropic, and any the provider's configured headers set (except the
//                       client's anthropic-version, which wins); then Host, the provider's
//                       Authorization, x-request-id and the configured headers.
//   upstream → client   the upstream's end-to-end headers, then the CORS headers every /v1/
//                       answer carries (replacing any the provider sent).
//   proxy → client      answers the proxy makes itself on /v1/ carry the same CORS headers;
//                       OPTIONS /v1/* is a CORS preflight any origin passes.
//
// Neither direction forwards hop-by-hop headers (RFC 9110, 7.6.1: Connection, Keep-Alive, TE,
// Trailer, Transfer-Encoding, Upgrade, Proxy-*, and whatever Connection names) or the headers
// the proxy frames itself (Content-Length, Host, x-request-id).
//
// Stateless; any thread. Writes straight into the head strings of common/http/wire.h on the
// hot path (no allocation beyond the string's own growth).
#pragma once

#include <string>
#include <string_view>

#include "common/http/client.h"
#include "common/http/server.h"
#include "data-plane/proxy/route_store.h"

namespace berry::proxy {

class HeaderPolicy {
 public:
  // A header neither direction forwards: hop-by-hop (including those `connection_tokens`, the
  // message's Connection header, names) or one the proxy sets itself.
  static bool IsHopByHopOrOwn(boost::beast::http::field field, std::string_view name,
                              std::string_view connection_tokens);

  // The upstream request's header fields (everything between the request line and the framing
  // Content-Length), appended to `head`.
  static void AppendUpstreamRequestFields(std::string& head,
                                          const server::ArenaFields& client_fields,
                                          const ProviderRoute& route, std::string_view request_id);

  // The fields of a relayed upstream response as the client gets them: appended to a response
  // head after its status line, or copied into a message.
  static void AppendRelayedResponseFields(std::string& head,
                                          const upstream::ResponseFields& upstream_fields);
  static void CopyRelayedResponseFields(const upstream::ResponseFields& upstream_fields,
                                        boost::beast::http::fields& to);

  // An answer the proxy makes itself: CORS fields when `path` is under /v1/ (browsers calling
  // the API directly need them on the actual response, not only on the preflight).
  static void AddCors(std::string_view path, boost::beast::http::fields& response);

  // The answer to a CORS preflight: any origin may call with GET, POST and OPTIONS and with the
  // headers it asks for (authorization and content-type when it names none).
  static void SetPreflight(const server::ArenaFields& request_fields,
                           boost::beast::http::fields& response);
};

}  // namespace berry::proxy
