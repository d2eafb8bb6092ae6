#include "data-plane/auth/client_directory.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/crypto/sha256.h"

namespace berry::auth {
namespace {

constexpr size_t kDigestSize = 32;

// char arrays rather than std::string_view: Debian's absl::string_view does not convert from it.
constexpr char kMissingKey[] =
    "missing API key: send Authorization: Bearer <key> or x-api-key: <key>";
constexpr char kMalformedHeader[] = "malformed Authorization header: expected Bearer <key>";
constexpr char kInvalidKey[] = "invalid API key";
constexpr char kDisabledKey[] = "API key disabled";

// HTTP optional whitespace.
bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && IsSpace(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

// A token is one run of visible ASCII and non-ASCII bytes: no spaces, no control characters.
bool IsTokenText(std::string_view token) {
  for (const char c : token) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte == 0x7f) {
      return false;
    }
  }
  return !token.empty();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ClientDirectory>> ClientDirectory::Create(
    const berry::v1::RouteTable& table) {
  std::shared_ptr<ClientDirectory> directory(new ClientDirectory());
  directory->anonymous_.anonymous_ = true;
  directory->anonymous_.config_.set_name("anonymous");
  directory->anonymous_.config_.set_enabled(true);

  const int count = table.client_keys_size();
  directory->clients_.reset(new Client[static_cast<size_t>(count)]);
  directory->client_count_ = static_cast<size_t>(count);
  directory->by_digest_.reserve(static_cast<size_t>(count));
  directory->by_id_.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const berry::v1::ClientKey& key = table.client_keys(i);
    if (key.id().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("client key #", i, " has an empty id"));
    }
    if (key.token_sha256().size() != kDigestSize) {
      return absl::InvalidArgumentError(absl::StrCat("client key \"", key.id(),
                                                     "\": token_sha256 must be ", kDigestSize,
                                                     " bytes, got ", key.token_sha256().size()));
    }
    Client& client = directory->clients_[static_cast<size_t>(i)];
    client.config_ = key;
    client.index_ = static_cast<uint32_t>(i);
    client.all_models_ = key.allowed_models().empty();
    client.allowed_models_.reserve(static_cast<size_t>(key.allowed_models_size()));
    for (const std::string& model : client.config_.allowed_models()) {
      client.allowed_models_.insert(model);
    }
    if (const auto [it, inserted] = directory->by_id_.emplace(client.id(), client.index_);
        !inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("client key \"", key.id(), "\" appears more than once"));
    }
    if (const auto [it, inserted] =
            directory->by_digest_.emplace(client.config_.token_sha256(), client.index_);
        !inserted) {
      // Two users with one token could not be told apart; name both, never the token.
      return absl::InvalidArgumentError(
          absl::StrCat("client keys \"", directory->clients_[it->second].id(), "\" and \"",
                       key.id(), "\" have the same token"));
    }
  }
  return directory;
}

absl::StatusOr<const Client*> ClientDirectory::Authenticate(
    std::string_view authorization_header_value) const {
  if (open()) {
    return &anonymous_;
  }
  const std::string_view value = TrimSpace(authorization_header_value);
  if (value.empty()) {
    return absl::UnauthenticatedError(kMissingKey);
  }
  size_t scheme_end = 0;
  while (scheme_end < value.size() && !IsSpace(value[scheme_end])) {
    ++scheme_end;
  }
  if (!EqualsIgnoreAsciiCase(value.substr(0, scheme_end), "bearer")) {
    return absl::UnauthenticatedError(kMalformedHeader);
  }
  return AuthenticateToken(value.substr(scheme_end));
}

absl::StatusOr<const Client*> ClientDirectory::AuthenticateToken(
    std::string_view token_value) const {
  if (open()) {
    return &anonymous_;
  }
  const std::string_view token = TrimSpace(token_value);
  if (token.empty()) {
    return absl::UnauthenticatedError(kMissingKey);
  }
  if (!IsTokenText(token)) {
    return absl::UnauthenticatedError(kMalformedHeader);
  }

  const crypto::Sha256Digest digest = crypto::Sha256(token);
  const std::string_view digest_bytes(reinterpret_cast<const char*>(digest.data()), digest.size());
  // The hash lookup compares digests in variable time, which is harmless: an attacker learns at
  // most a prefix of the SHA-256 of a token they chose. The final equality is constant time so
  // the match itself does not depend on where two digests differ.
  const auto it = by_digest_.find(digest_bytes);
  if (it == by_digest_.end()) {
    return absl::UnauthenticatedError(kInvalidKey);
  }
  const Client& client = clients_[it->second];
  if (!crypto::ConstantTimeEquals(client.config_.token_sha256(), digest_bytes)) {
    return absl::UnauthenticatedError(kInvalidKey);
  }
  if (!client.enabled()) {
    return absl::UnauthenticatedError(kDisabledKey);
  }
  return &client;
}

const Client* ClientDirectory::FindById(std::string_view id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &clients_[it->second];
}

}  // namespace berry::auth
