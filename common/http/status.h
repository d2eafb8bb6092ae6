// The control plane's small HTTP side: /healthz, /readyz and /metrics, served by the same Beast
// server the data plane uses. Threads: one handler per server worker.
#pragma once

#include <functional>
#include <string>

#include "common/http/server.h"

namespace berry::control_plane {

struct StatusEndpoints {
  std::function<bool()> ready;            // /readyz: 200 when true
  std::function<std::string()> metrics;   // /metrics body (Prometheus text 0.0.4)
  std::function<std::string()> proxies;   // /proxies: JSON, every proxy and its ACK state
  std::function<std::string()> backends;  // /backends: JSON, fleet statistics per backend
};

class StatusHandler final : public server::Handler {
 public:
  explicit StatusHandler(const StatusEndpoints& endpoints) : endpoints_(endpoints) {}

  uint64_t body_limit() override { return 1024; }
  server::net::awaitable<void> Handle(server::Request& request,
                                      server::Downstream& downstream) override;
  server::net::awaitable<void> HandleBadRequest(server::http::status status,
                                                std::string_view reason,
                                                server::Downstream& downstream) override;

 private:
  const StatusEndpoints& endpoints_;
};

}  // namespace berry::control_plane
