// Test PKI: a throwaway certificate authority, a server certificate for `localhost` and
// 127.0.0.1/::1, and a client certificate, all generated at test time with the OpenSSL 3 API so
// no private key is ever committed. Tests use the server pair for HTTPS listeners (the mock
// upstream, later the proxy) and the client pair for mTLS between the control plane and proxies.
//
// Threads: every function is self-contained and may be called from any thread.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace berry::test_support {

// PEM-encoded certificates and PKCS#8 private keys. Keys are EC P-256: fast to generate, accepted
// by OpenSSL, Asio's ssl::context and gRPC alike.
struct TestPki {
  std::string ca_cert_pem;
  std::string ca_key_pem;
  // CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1; EKU serverAuth; signed by the CA.
  std::string server_cert_pem;
  std::string server_key_pem;
  // CN=berry-test-client; EKU clientAuth; signed by the same CA.
  std::string client_cert_pem;
  std::string client_key_pem;
};

struct TestPkiOptions {
  // Validity starts an hour in the past (clock skew between processes is irrelevant on one host,
  // but a certificate that becomes valid "now" can fail a check made in the same second).
  std::chrono::hours valid_for{24};
  std::string ca_common_name = "Berry Test CA";
  std::string client_common_name = "berry-test-client";
};

// Generates a fresh CA and the server and client certificates it signs.
absl::StatusOr<TestPki> GenerateTestPki(const TestPkiOptions& options = {});

// Paths of a TestPki written to disk, for binaries that take `--tls-ca FILE` style flags.
struct TestPkiFiles {
  std::string dir;
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
};

// Writes `pki` into `dir` (created if missing) as ca.pem, server.pem, server-key.pem,
// client.pem, client-key.pem; key files get mode 0600. The CA key is not written.
absl::StatusOr<TestPkiFiles> WriteTestPki(const TestPki& pki, std::string_view dir);

// Creates a fresh private directory under $TMPDIR (or /tmp) named `<prefix>XXXXXX`.
absl::StatusOr<std::string> MakeTempDir(std::string_view prefix = "berry-test-");

}  // namespace berry::test_support
