// The proxy's pool of upstream connections, one per worker: connections to providers (common/http
// client.h) kept alive per (scheme, host, port, verification), handed out again while they are
// younger than the idle timeout, at most `max_idle_per_endpoint` kept per endpoint. Idle
// connections past the timeout are closed by a sweep over every endpoint at most once a second,
// on the worker's next Release or TakeIdle: those of a provider no table names any more (or of an
// endpoint traffic left) do not stay open for good.
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
  // The clock idle times are measured on (tests).
  std::chrono::steady_clock::time_point (*now)() = &std::chrono::steady_clock::now;
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
  // Closes the connections idle for longer than the timeout, of every endpoint, when a second
  // has passed since the last sweep.
  void SweepIfDue(std::chrono::steady_clock::time_point now);

  PoolOptions options_;
  // Per endpoint, oldest first (Release appends, TakeIdle takes the newest).
  absl::flat_hash_map<std::string, std::vector<std::unique_ptr<Connection>>> idle_;
  std::chrono::steady_clock::time_point next_sweep_{};
};

}  // namespace berry::upstream
