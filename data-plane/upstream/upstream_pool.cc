#include "data-plane/upstream/upstream_pool.h"

#include <utility>

namespace berry::upstream {

Pool::Pool(net::io_context& io_context, std::shared_ptr<const TlsContexts> tls_contexts,
           PoolOptions options)
    : io_context_(io_context), tls_contexts_(std::move(tls_contexts)), options_(options) {}

std::unique_ptr<Connection> Pool::TakeIdle(const Endpoint& endpoint) {
  const auto now = options_.now();
  SweepIfDue(now);
  auto it = idle_.find(endpoint.pool_key);
  if (it == idle_.end()) {
    return nullptr;
  }
  auto& idle = it->second;
  while (!idle.empty()) {
    std::unique_ptr<Connection> connection = std::move(idle.back());
    idle.pop_back();
    if (now - connection->idle_since() < options_.idle_timeout) {
      connection->set_reused();
      return connection;
    }
  }
  return nullptr;
}

net::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Pool::Connect(
    const Endpoint& endpoint, std::chrono::steady_clock::duration timeout,
    ConnectError* error_kind) {
  return Connection::Open(io_context_, *tls_contexts_, endpoint, timeout, error_kind);
}

void Pool::Release(std::unique_ptr<Connection> connection) {
  if (!connection->tcp().is_open() || connection->expired()) {
    return;  // a deadline closed it, possibly just after its last read succeeded
  }
  const auto now = options_.now();
  SweepIfDue(now);
  auto& idle = idle_[connection->pool_key()];
  if (idle.size() >= options_.max_idle_per_endpoint) {
    return;  // closes it
  }
  connection->ExpiresNever();
  connection->set_idle_since(now);
  idle.push_back(std::move(connection));
}

void Pool::SweepIfDue(std::chrono::steady_clock::time_point now) {
  if (now < next_sweep_) {
    return;
  }
  next_sweep_ = now + std::chrono::seconds(1);
  absl::erase_if(idle_, [&](auto& entry) {
    auto& idle = entry.second;
    auto fresh = idle.begin();
    while (fresh != idle.end() && now - (*fresh)->idle_since() >= options_.idle_timeout) {
      ++fresh;
    }
    idle.erase(idle.begin(), fresh);  // closes them
    return idle.empty();
  });
}

void Pool::Clear() { idle_.clear(); }

size_t Pool::idle_count() const {
  size_t count = 0;
  for (const auto& [key, connections] : idle_) {
    count += connections.size();
  }
  return count;
}

}  // namespace berry::upstream
