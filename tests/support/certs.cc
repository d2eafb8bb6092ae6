#include "tests/support/certs.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "tests/support/text.h"

namespace berry::test_support {
namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct ExtDeleter {
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, ExtDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

// Drains OpenSSL's thread-local error queue into a status, so the reason is never lost.
absl::Status OpenSslError(std::string_view what) {
  std::string detail;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    text::Append(detail, detail.empty() ? "" : "; ", buf);
  }
  return absl::InternalError(text::Cat(what, " failed", detail.empty() ? "" : ": ", detail));
}

absl::StatusOr<PkeyPtr> NewEcKey() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (key == nullptr) {
    return OpenSslError("EVP_PKEY_Q_keygen(EC P-256)");
  }
  return key;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
  if (ext == nullptr) {
    return OpenSslError(text::Cat("X509V3_EXT_nconf_nid(", OBJ_nid2sn(nid), "=", value, ")"));
  }
  if (X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslError("X509_add_ext");
  }
  return absl::OkStatus();
}

struct Extension {
  int nid;
  const char* value;
};

// Builds a certificate for `key` named `common_name`. With `issuer == nullptr` it is self-signed
// (the CA); otherwise it is signed by `issuer`/`issuer_key`.
absl::StatusOr<X509Ptr> NewCertificate(EVP_PKEY* key, const std::string& common_name, X509* issuer,
                                       EVP_PKEY* issuer_key, std::chrono::hours valid_for,
                                       const std::vector<Extension>& extensions) {
  X509Ptr cert(X509_new());
  if (cert == nullptr) {
    return OpenSslError("X509_new");
  }
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return OpenSslError("X509_set_version");
  }
  // A random 127-bit serial: unique per run, positive as RFC 5280 requires.
  BnPtr serial(BN_new());
  if (serial == nullptr || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return OpenSslError("serial number");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                      static_cast<long>(valid_for.count()) * 3600) == nullptr) {
    return OpenSslError("validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("Berry tests"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1) {
    return OpenSslError("subject name");
  }
  X509* signer = issuer != nullptr ? issuer : cert.get();
  EVP_PKEY* signer_key = issuer_key != nullptr ? issuer_key : key;
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)) != 1) {
    return OpenSslError("X509_set_issuer_name");
  }
  if (X509_set_pubkey(cert.get(), key) != 1) {
    return OpenSslError("X509_set_pubkey");
  }
  for (const Extension& ext : extensions) {
    if (absl::Status s = AddExtension(cert.get(), signer, ext.nid, ext.value); !s.ok()) {
      return s;
    }
  }
  if (X509_sign(cert.get(), signer_key, EVP_sha256()) == 0) {
    return OpenSslError("X509_sign");
  }
  return cert;
}

absl::StatusOr<std::string> BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len < 0) {
    return OpenSslError("BIO_get_mem_data");
  }
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslError("PEM_write_bio_X509");
  }
  return BioToString(bio.get());
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("PEM_write_bio_PrivateKey");
  }
  return BioToString(bio.get());
}

// A signed leaf certificate and its key, both as PEM.
struct Leaf {
  std::string cert_pem;
  std::string key_pem;
};

absl::StatusOr<Leaf> NewLeaf(const std::string& common_name, X509* ca, EVP_PKEY* ca_key,
                             std::chrono::hours valid_for,
                             const std::vector<Extension>& extensions) {
  absl::StatusOr<PkeyPtr> key = NewEcKey();
  if (!key.ok()) {
    return key.status();
  }
  absl::StatusOr<X509Ptr> cert =
      NewCertificate(key->get(), common_name, ca, ca_key, valid_for, extensions);
  if (!cert.ok()) {
    return cert.status();
  }
  absl::StatusOr<std::string> cert_pem = CertToPem(cert->get());
  absl::StatusOr<std::string> key_pem = KeyToPem(key->get());
  if (!cert_pem.ok()) {
    return cert_pem.status();
  }
  if (!key_pem.ok()) {
    return key_pem.status();
  }
  return Leaf{*std::move(cert_pem), *std::move(key_pem)};
}

absl::Status WriteFile(const std::string& path, std::string_view content, bool secret) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::InternalError(
        text::Cat("cannot open ", path, " for writing: ", std::strerror(errno)));
  }
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) {
    return absl::InternalError(text::Cat("cannot write ", path));
  }
  if (secret && chmod(path.c_str(), 0600) != 0) {
    return absl::InternalError(text::Cat("chmod 0600 ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TestPki> GenerateTestPki(const TestPkiOptions& options) {
  ERR_clear_error();
  absl::StatusOr<PkeyPtr> ca_key = NewEcKey();
  if (!ca_key.ok()) {
    return ca_key.status();
  }
  absl::StatusOr<X509Ptr> ca =
      NewCertificate(ca_key->get(), options.ca_common_name, nullptr, nullptr, options.valid_for,
                     {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                      {NID_key_usage, "critical,keyCertSign,cRLSign"},
                      {NID_subject_key_identifier, "hash"},
                      {NID_authority_key_identifier, "keyid:always"}});
  if (!ca.ok()) {
    return ca.status();
  }
  absl::StatusOr<Leaf> server =
      NewLeaf("localhost", ca->get(), ca_key->get(), options.valid_for,
              {{NID_basic_constraints, "critical,CA:FALSE"},
               {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
               {NID_ext_key_usage, "serverAuth"},
               {NID_subject_key_identifier, "hash"},
               {NID_authority_key_identifier, "keyid:always"},
               {NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1"}});
  if (!server.ok()) {
    return server.status();
  }
  absl::StatusOr<Leaf> client =
      NewLeaf(options.client_common_name, ca->get(), ca_key->get(), options.valid_for,
              {{NID_basic_constraints, "critical,CA:FALSE"},
               {NID_key_usage, "critical,digitalSignature"},
               {NID_ext_key_usage, "clientAuth"},
               {NID_subject_key_identifier, "hash"},
               {NID_authority_key_identifier, "keyid:always"}});
  if (!client.ok()) {
    return client.status();
  }
  absl::StatusOr<std::string> ca_pem = CertToPem(ca->get());
  if (!ca_pem.ok()) {
    return ca_pem.status();
  }
  absl::StatusOr<std::string> ca_key_pem = KeyToPem(ca_key->get());
  if (!ca_key_pem.ok()) {
    return ca_key_pem.status();
  }
  TestPki pki;
  pki.ca_cert_pem = *std::move(ca_pem);
  pki.ca_key_pem = *std::move(ca_key_pem);
  pki.server_cert_pem = std::move(server->cert_pem);
  pki.server_key_pem = std::move(server->key_pem);
  pki.client_cert_pem = std::move(client->cert_pem);
  pki.client_key_pem = std::move(client->key_pem);
  return pki;
}

absl::StatusOr<TestPkiFiles> WriteTestPki(const TestPki& pki, std::string_view dir) {
  std::string d(dir);
  if (mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(text::Cat("mkdir ", d, ": ", std::strerror(errno)));
  }
  TestPkiFiles files;
  files.dir = d;
  files.ca_cert = text::Cat(d, "/ca.pem");
  files.server_cert = text::Cat(d, "/server.pem");
  files.server_key = text::Cat(d, "/server-key.pem");
  files.client_cert = text::Cat(d, "/client.pem");
  files.client_key = text::Cat(d, "/client-key.pem");
  struct Item {
    const std::string& path;
    const std::string& content;
    bool secret;
  };
  for (const Item& item : {Item{files.ca_cert, pki.ca_cert_pem, false},
                           Item{files.server_cert, pki.server_cert_pem, false},
                           Item{files.server_key, pki.server_key_pem, true},
                           Item{files.client_cert, pki.client_cert_pem, false},
                           Item{files.client_key, pki.client_key_pem, true}}) {
    if (absl::Status s = WriteFile(item.path, item.content, item.secret); !s.ok()) {
      return s;
    }
  }
  return files;
}

absl::StatusOr<std::string> MakeTempDir(std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      text::Cat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/", prefix, "XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    return absl::InternalError(text::Cat("mkdtemp ", templ, ": ", std::strerror(errno)));
  }
  return std::string(buf.data());
}

}  // namespace berry::test_support
