// HeaderPolicy: which headers cross the proxy, one behaviour per test, on plain field sets (no
// sockets).
#include "data-plane/proxy/header_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace berry::proxy::header_policy_test {
namespace {

namespace http = boost::beast::http;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;
using Fields = std::vector<std::pair<std::string, std::string>>;

// "Name: value\r\n" lines back into pairs.
Fields ParseHead(std::string_view head) {
  Fields fields;
  while (!head.empty()) {
    const size_t end = head.find("\r\n");
    const std::string_view line = head.substr(0, end);
    const size_t colon = line.find(": ");
    fields.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 2)));
    head.remove_prefix(end == std::string_view::npos ? head.size() : end + 2);
  }
  return fields;
}

template <typename F>
Fields ToPairs(const F& from) {
  Fields fields;
  for (const auto& field : from) {
    fields.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  return fields;
}

ProviderRoute Route(std::vector<std::pair<std::string, std::string>> headers = {}) {
  ProviderRoute route;
  route.endpoint.host_header = "api.example.com";
  route.authorization = "Bearer sk-provider";
  route.headers = std::move(headers);
  return route;
}

Fields UpstreamRequestFields(const server::ArenaFields& client, const ProviderRoute& route) {
  std::string head;
  HeaderPolicy::AppendUpstreamRequestFields(head, client, route, "req-1");
  return ParseHead(head);
}

TEST(HeaderPolicy, HopByHopHeadersAreNotForwarded) {
  for (const http::field field :
       {http::field::connection, http::field::keep_alive, http::field::proxy_authorization,
        http::field::te, http::field::trailer, http::field::transfer_encoding, http::field::upgrade,
        http::field::content_length, http::field::host}) {
    EXPECT_TRUE(HeaderPolicy::IsHopByHopOrOwn(field, std::string(http::to_string(field)), ""))
        << http::to_string(field);
  }
}

TEST(HeaderPolicy, HeadersTheConnectionHeaderNamesAreHopByHop) {
  EXPECT_TRUE(HeaderPolicy::IsHopByHopOrOwn(http::field::unknown, "X-Session", "close, x-session"));
  EXPECT_FALSE(HeaderPolicy::IsHopByHopOrOwn(http::field::unknown, "X-Other", "close, x-session"));
}

TEST(HeaderPolicy, RequestIdIsTheProxysOwnInAnyCase) {
  EXPECT_TRUE(HeaderPolicy::IsHopByHopOrOwn(http::field::unknown, "X-Request-ID", ""));
  EXPECT_FALSE(HeaderPolicy::IsHopByHopOrOwn(http::field::content_type, "Content-Type", ""));
}

TEST(HeaderPolicy, UpstreamRequestCarriesEndToEndHeadersAndThenTheProvidersOwn) {
  server::ArenaFields client;
  client.insert("Content-Type", "application/json");
  client.insert("User-Agent", "sdk/1.0");
  client.insert("Host", "berry.local");

  EXPECT_THAT(
      UpstreamRequestFields(client, Route()),
      ElementsAre(Pair("Content-Type", "application/json"), Pair("User-Agent", "sdk/1.0"),
                  Pair("Host", "api.example.com"), Pair("Authorization", "Bearer sk-provider"),
                  Pair("x-request-id", "req-1")));
}

TEST(HeaderPolicy, ClientCredentialsAndEncodingNegotiationStayBehind) {
  server::ArenaFields client;
  client.insert("Authorization", "Bearer berry-client-token");
  client.insert("Accept-Encoding", "gzip");
  client.insert("Expect", "100-continue");
  client.insert("X-Request-Id", "client-chosen");
  client.insert("Connection", "keep-alive, x-hop");
  client.insert("X-Hop", "1");

  const Fields fields = UpstreamRequestFields(client, Route());

  EXPECT_THAT(fields, ElementsAre(Pair("Host", "api.example.com"),
                                  Pair("Authorization", "Bearer sk-provider"),
                                  Pair("x-request-id", "req-1")));
}

TEST(HeaderPolicy, ConfiguredProviderHeadersWinOverTheClientsAndTheDefaults) {
  server::ArenaFields client;
  client.insert("OpenAI-Organization", "client-org");
  client.insert("Accept", "application/json");
  const ProviderRoute route =
      Route({{"openai-organization", "org-1"}, {"Host", "gateway.internal"}});

  EXPECT_THAT(
      UpstreamRequestFields(client, route),
      ElementsAre(Pair("Accept", "application/json"), Pair("Authorization", "Bearer sk-provider"),
                  Pair("x-request-id", "req-1"), Pair("openai-organization", "org-1"),
                  Pair("Host", "gateway.internal")));
}

TEST(HeaderPolicy, ProviderWithoutKeySendsNoAuthorization) {
  ProviderRoute route = Route();
  route.authorization.clear();

  EXPECT_THAT(UpstreamRequestFields(server::ArenaFields(), route),
              ElementsAre(Pair("Host", "api.example.com"), Pair("x-request-id", "req-1")));
}

upstream::ResponseFields UpstreamResponse() {
  upstream::ResponseFields fields;
  fields.insert("Content-Type", "application/json");
  fields.insert("Access-Control-Allow-Origin", "https://provider.example");
  fields.insert("Transfer-Encoding", "chunked");
  fields.insert("Connection", "x-trace");
  fields.insert("X-Trace", "t-1");
  fields.insert("x-request-id", "upstream-id");
  fields.insert("OpenAI-Processing-Ms", "12");
  return fields;
}

TEST(HeaderPolicy, RelayedResponseKeepsEndToEndHeadersAndEndsWithOurCors) {
  std::string head;
  HeaderPolicy::AppendRelayedResponseFields(head, UpstreamResponse());

  EXPECT_THAT(ParseHead(head), ElementsAre(Pair("Content-Type", "application/json"),
                                           Pair("OpenAI-Processing-Ms", "12"),
                                           Pair("Access-Control-Allow-Origin", "*"),
                                           Pair("Access-Control-Expose-Headers", "x-request-id")));
}

TEST(HeaderPolicy, CopiedResponseFieldsAreTheRelayedOnes) {
  std::string head;
  HeaderPolicy::AppendRelayedResponseFields(head, UpstreamResponse());
  http::fields copied;
  HeaderPolicy::CopyRelayedResponseFields(UpstreamResponse(), copied);

  EXPECT_EQ(ToPairs(copied), ParseHead(head));
}

TEST(HeaderPolicy, ProxyMadeAnswersGetCorsOnlyUnderV1) {
  http::fields api;
  HeaderPolicy::AddCors("/v1/models", api);
  http::fields probe;
  HeaderPolicy::AddCors("/healthz", probe);

  EXPECT_THAT(ToPairs(api), ElementsAre(Pair("Access-Control-Allow-Origin", "*"),
                                        Pair("Access-Control-Expose-Headers", "x-request-id")));
  EXPECT_THAT(ToPairs(probe), IsEmpty());
}

TEST(HeaderPolicy, CorsOnAKeptUpstreamAnswerIsNotDoubled) {
  http::fields kept;
  HeaderPolicy::CopyRelayedResponseFields(UpstreamResponse(), kept);
  HeaderPolicy::AddCors("/v1/chat/completions", kept);

  EXPECT_EQ(kept.count(http::field::access_control_allow_origin), 1u);
  EXPECT_EQ(kept[http::field::access_control_allow_origin], "*");
}

TEST(HeaderPolicy, PreflightAllowsTheRequestedHeaders) {
  server::ArenaFields request;
  request.insert(http::field::access_control_request_headers, "x-custom, authorization");
  http::fields response;
  HeaderPolicy::SetPreflight(request, response);

  EXPECT_THAT(ToPairs(response),
              ElementsAre(Pair("Access-Control-Allow-Origin", "*"),
                          Pair("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                          Pair("Access-Control-Allow-Headers", "x-custom, authorization"),
                          Pair("Access-Control-Max-Age", "86400")));
}

TEST(HeaderPolicy, PreflightWithoutRequestedHeadersAllowsAuthorizationAndContentType) {
  http::fields response;
  HeaderPolicy::SetPreflight(server::ArenaFields(), response);

  EXPECT_EQ(response[http::field::access_control_allow_headers], "authorization, content-type");
}

}  // namespace
}  // namespace berry::proxy::header_policy_test
