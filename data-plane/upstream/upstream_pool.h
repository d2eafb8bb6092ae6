// The proxy's pool of upstream connections, one per worker: connections to providers (common/http
// client.h) kept alive per (scheme, host, port, verification), handed out again while they are
// younger than the idle timeout, at most `max_idle_per_endpoint` kept per endpoint.
//
// Threads: a pool belongs to one worker's io_context and is used only on that thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/http/client.h"

namespace berry::upstream {

struct PoolOptions {
  size_t max_idle_per_endpoint = 64;
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);
};

class Pool {
 public:
  Pool(net::io_context& io_context, std::shared_ptr<const TlsContexts> tls_contexts,
       PoolOptions options = {});

  // A kept-alive connection to `endpoint` if one is idle (reused() is true), else nullptr: then
  // Connect(). (Not a coroutine: the common case costs no coroutine frame.)
  std::unique_ptr<Connection> TakeIdle(const Endpoint& endpoint);
  // A fresh connection, connected (and TLS-handshaken) within `timeout` (Connection::Open).
  net::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(
      const Endpoint& endpoint, std::chrono::steady_clock::duration timeout,
      ConnectError* error_kind);
  // Returns a connection whose response was read completely and that may be kept alive.
  void Release(std::unique_ptr<Connection> connection);
  // Closes every idle connection (shutdown).
  void Clear();

  size_t idle_count() const;

 private:
  net::io_context& io_context_;
  std::shared_ptr<const TlsContexts> tls_contexts_;
  PoolOptions options_;
  absl::flat_hash_map<std::string, std::vector<std::unique_ptr<Connection>>> idle_;
};

}  // namespace berry::upstream
