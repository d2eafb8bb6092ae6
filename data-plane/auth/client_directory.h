// Who is calling: the route table's client keys compiled for authentication. A request's
// `Authorization: Bearer <token>` is hashed with SHA-256 and looked up by digest; the token
// itself is never stored, compared, logged or echoed in an error.
//
// A ClientDirectory is built once per RouteTable and is immutable afterwards: every worker thread
// may call Authenticate() and read the Clients concurrently. Clients live as long as their
// directory. Per-client state that changes (rate-limit counters) lives in RateLimiter
// (rate_limiter.h), which carries it from one directory to the next by client id.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "berry/v1/route_table.pb.h"

namespace berry::auth {

class Client {
 public:
  // The `[users.<id>]` key; empty for the anonymous client of an open gateway.
  const std::string& id() const { return config_.id(); }
  const std::string& name() const { return config_.name(); }
  // Sorted; pass to selection::Snapshot::InternUserTags().
  const google::protobuf::RepeatedPtrField<std::string>& tags() const { return config_.tags(); }
  // 0 on a window = no limit there.
  const berry::v1::RateLimit& rate_limit() const { return config_.rate_limit(); }
  bool enabled() const { return config_.enabled(); }
  // 0..ClientDirectory::clients().size()-1 for keyed clients, in table order. The anonymous
  // client of an open gateway has index 0 and belongs to no slot.
  uint32_t index() const { return index_; }
  // True only for the client an open gateway hands out.
  bool anonymous() const { return anonymous_; }
  // The key as the table gives it (token_sha256 included: a digest, not a secret token).
  const berry::v1::ClientKey& config() const { return config_; }

  // Whether the client may call the custom model clients know as `model_name`. An empty
  // allowed_models list allows every model. One hash lookup, no allocation.
  bool MayUse(std::string_view model_name) const {
    return all_models_ || allowed_models_.contains(model_name);
  }

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

 private:
  friend class ClientDirectory;
  Client() = default;

  berry::v1::ClientKey config_;
  uint32_t index_ = 0;
  bool anonymous_ = false;
  bool all_models_ = true;
  // Views into config_.allowed_models(); the Client never moves once built.
  absl::flat_hash_set<std::string_view> allowed_models_;
};

class ClientDirectory {
 public:
  // Compiles the table's client keys. InvalidArgument naming the key's id for a digest that is
  // not 32 bytes, a digest shared by two keys, or an empty or duplicate id.
  static absl::StatusOr<std::shared_ptr<const ClientDirectory>> Create(
      const berry::v1::RouteTable& table);

  ClientDirectory(const ClientDirectory&) = delete;
  ClientDirectory& operator=(const ClientDirectory&) = delete;

  // True when the table has no client keys: every request is served as the anonymous client,
  // which may use every model and has no rate limit.
  bool open() const { return client_count_ == 0; }

  // The client behind an Authorization header value (`Bearer <token>`; the scheme is
  // case-insensitive and surrounding whitespace is ignored). An open directory returns the
  // anonymous client whatever the header says. Otherwise Unauthenticated with a message fit for
  // an OpenAI 401 body — and never containing any part of the token:
  // - empty header: "missing API key: send Authorization: Bearer <key> or x-api-key: <key>"
  // - not `Bearer <token>`: "malformed Authorization header: expected Bearer <key>"
  // - no key has this digest: "invalid API key"
  // - key disabled: "API key disabled"
  // Thread-safe; allocates nothing on success.
  absl::StatusOr<const Client*> Authenticate(std::string_view authorization_header_value) const;
  // The same for a bare token (Anthropic's `x-api-key: <key>` carries no scheme); a token that
  // is not token text is "malformed Authorization header: expected Bearer <key>" too.
  absl::StatusOr<const Client*> AuthenticateToken(std::string_view token) const;

  // Keyed clients in table order; clients()[i].index() == i. Empty for an open gateway.
  std::span<const Client> clients() const { return {clients_.get(), client_count_}; }
  // By `[users.<id>]` key; nullptr when absent.
  const Client* FindById(std::string_view id) const;
  // The client an open gateway hands out (exists for closed directories too, unused there).
  const Client& anonymous() const { return anonymous_; }

 private:
  ClientDirectory() = default;

  // A fixed array, never moved after Create(): Clients hold views into their own configs.
  std::unique_ptr<Client[]> clients_;
  size_t client_count_ = 0;
  Client anonymous_;
  // Keys are views into each Client's config (32 raw digest bytes / the id).
  absl::flat_hash_map<std::string_view, uint32_t> by_digest_;
  absl::flat_hash_map<std::string_view, uint32_t> by_id_;
};

}  // namespace berry::auth
