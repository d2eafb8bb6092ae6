// HTTPS upstreams: verified against the trusted CAs by default, refused (502) when the
// certificate cannot be verified, and accepted unverified only when the provider says
// tls_verify = false.
#include <gtest/gtest.h>

#include <string>

#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_tls_test {
namespace {

std::unique_ptr<MockUpstream> StartTlsMock() {
  MockUpstream::Options options;
  options.tls = true;  // a fresh test CA and a certificate for localhost / 127.0.0.1
  return StartMock("secure", options);
}

std::string TlsConfig(const MockUpstream& mock, std::string_view provider_extra = "") {
  return ProviderToml("secure", mock.base_url(), {"up-model"}, provider_extra) +
         ModelToml("chat") + BackendToml("chat", "secure");
}

TEST(ProxyTls, HttpsUpstreamVerifiedWithTheTrustedTestCa) {
  auto mock = StartTlsMock();
  ASSERT_TRUE(mock->base_url().starts_with("https://"));
  TestProxyOptions options;
  options.extra_ca_pem = mock->ca_pem();
  auto proxy = StartProxy(TlsConfig(*mock), options);

  const HttpResponse response = Chat(*proxy, "chat");
  const StreamedResponse streamed = StreamChat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(mock->last_request()->Header("Authorization").value_or(""), "Bearer sk-secure-secret");
  EXPECT_TRUE(streamed.done()) << streamed.body;
}

TEST(ProxyTls, UntrustedCertificateIsABadGateway) {
  auto mock = StartTlsMock();
  auto proxy = StartProxy(TlsConfig(*mock));  // the test CA is not trusted

  const HttpResponse response = Chat(*proxy, "chat");

  ExpectOpenAiError(response, 502, "upstream_error", "bad_gateway");
  EXPECT_EQ(mock->request_count(), 0u) << "no request may be sent over an unverified connection";
}

TEST(ProxyTls, CertificateForAnotherHostIsRefused) {
  MockUpstream::Options mock_options;
  mock_options.tls = true;
  mock_options.host = "0.0.0.0";  // reachable as 127.0.0.2 too, which the certificate lacks
  auto mock = StartMock("secure", mock_options);
  TestProxyOptions options;
  options.extra_ca_pem = mock->ca_pem();
  const std::string url = "https://127.0.0.2:" + std::to_string(mock->port()) + "/v1";
  auto proxy = StartProxy(ProviderToml("secure", url) + ModelToml("chat") +
                              BackendToml("chat", "secure"),
                          options);

  const HttpResponse response = Chat(*proxy, "chat");

  ExpectOpenAiError(response, 502, "upstream_error", "bad_gateway");
  EXPECT_GE(mock->connections_accepted(), 1u) << "the connection itself must have worked";
  EXPECT_EQ(mock->request_count(), 0u) << "a request went out to a host the certificate lacks";
}

TEST(ProxyTls, TlsVerifyFalseAcceptsAnUntrustedCertificate) {
  auto mock = StartTlsMock();
  auto proxy = StartProxy(TlsConfig(*mock, "tls_verify = false"));

  const HttpResponse response = Chat(*proxy, "chat");

  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(mock->request_count(), 1u);
}

}  // namespace
}  // namespace berry::itest::proxy_tls_test
