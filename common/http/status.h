// A small HTTP side for a process's health and metrics: /healthz (and /health), /readyz,
// /metrics, and any further GET paths that answer JSON. Served by HttpServer like everything
// else; the control plane's --http-listen and berry-proxy's --admin-listen run it.
// Threads: one handler per server worker; the endpoint functions are called on worker threads.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "common/http/server.h"

namespace berry::server {

struct Readiness {
  bool ready = false;
  std::string body;  // JSON, answered with 200 when ready, else 503
};

struct StatusEndpoints {
  std::function<Readiness()> ready;      // /readyz
  std::function<std::string()> metrics;  // /metrics body (Prometheus text 0.0.4)
  // Further GET paths and the JSON they answer with (the control plane's /proxies, /backends).
  std::map<std::string, std::function<std::string()>, std::less<>> json;
};

class StatusHandler final : public Handler {
 public:
  explicit StatusHandler(const StatusEndpoints& endpoints) : endpoints_(endpoints) {}

  uint64_t body_limit() override { return 1024; }
  net::awaitable<void> Handle(Request& request, Downstream& downstream) override;
  net::awaitable<void> HandleBadRequest(http::status status, std::string_view reason,
                                        Downstream& downstream) override;

 private:
  const StatusEndpoints& endpoints_;
};

}  // namespace berry::server
