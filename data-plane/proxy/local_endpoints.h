// What berry-proxy answers itself, without an upstream: /healthz (and /health), /readyz,
// /metrics (unless an --admin-listen serves it instead), GET /v1/models[/{id}], CORS preflights
// (OPTIONS /v1/*), 405 for a relayed path called with another method than POST, and 404 for any
// other path.
//
// Threads: one LocalEndpoints per worker; RouteStore and ProxyMetrics are shared and
// thread-safe.
#pragma once

#include <string_view>

#include "common/http/status.h"
#include "data-plane/proxy/exchange.h"
#include "data-plane/proxy/proxy_metrics.h"
#include "data-plane/proxy/route_store.h"

namespace berry::proxy {

// /readyz: ready once a route table is loaded (`generation`, the one in force), until shutdown.
server::Readiness ProxyReadiness(const RouteStore& routes, const RouteGeneration* generation);

class LocalEndpoints {
 public:
  // Both must outlive this.
  LocalEndpoints(const RouteStore& routes, ProxyMetrics& metrics)
      : routes_(routes), metrics_(metrics) {}

  // Answers any request that is not a POST to a relayed path.
  net::awaitable<void> Serve(Exchange& exchange);

 private:
  net::awaitable<void> ListModels(Exchange& exchange, std::string_view model_id);

  const RouteStore& routes_;
  ProxyMetrics& metrics_;
};

}  // namespace berry::proxy
