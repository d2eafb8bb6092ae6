// One worker's hold on one route-table generation: the generation itself, the worker's picker
// bound to its snapshot, and the worker's metric children for its models and backends. A request
// pins the hold in force when it starts and uses it to its end (ProxyHandler), so a reload in
// the middle of a request changes nothing for that request: its failover picks from the same
// table, its metrics land on the same labels, and the generation, which the RouteStore has since
// replaced, stays alive until the last request on it ends. Then the hold is destroyed, and the
// metric series of models and backends the new table dropped can be pruned
// (ProxyMetrics::PruneRemoved).
//
// Threads: owned and used by one worker.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>

#include "common/selection/picker.h"
#include "data-plane/proxy/proxy_metrics.h"
#include "data-plane/proxy/route_store.h"

namespace berry::proxy {

struct WorkerGeneration {
  WorkerGeneration(std::shared_ptr<const RouteGeneration> generation, ProxyMetrics& shared)
      : routes(std::move(generation)),
        picker(routes->runtime),
        metrics(shared, routes->snapshot()) {}
  WorkerGeneration(const WorkerGeneration&) = delete;
  WorkerGeneration& operator=(const WorkerGeneration&) = delete;

  const std::shared_ptr<const RouteGeneration> routes;  // never null
  selection::Picker picker;
  GenerationMetrics metrics;
  uint32_t exchanges = 0;  // requests on this worker that pinned it and have not ended
};

}  // namespace berry::proxy
