// Pick cost: look a custom model up by name in a 10,000-model table, then pick one of its
// backends — what the data plane does for every attempt of every request. Results and how to
// read them: bench/README.md.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "benchmark/benchmark.h"
#include "berry/v1/route_table.pb.h"
#include "common/selection/picker.h"
#include "common/selection/runtime_state.h"
#include "common/selection/snapshot.h"

namespace berry::selection {
namespace {

namespace v1 = berry::v1;

constexpr int kModels = 10000;
// Models under measurement, spread evenly over the table; each iteration uses the next one, so
// the lookups and picks do not all hit the same cache lines.
constexpr int kMeasuredModels = 64;
constexpr int kOtherModelBackends = 2;

struct Fixture {
  std::shared_ptr<const RuntimeState> state;
  std::vector<std::string> names;            // of the measured models
  std::vector<std::vector<uint32_t>> tried;  // per measured model: its first backend
};

void AddModel(v1::RouteTable& table, int index, v1::Strategy strategy, int backends) {
  v1::CustomModel* model = table.add_models();
  model->set_id("model-" + std::to_string(index));
  model->set_name("custom-model-" + std::to_string(index));
  model->set_enabled(true);
  model->set_strategy(strategy);
  for (int i = 0; i < backends; ++i) {
    v1::Backend* backend = model->add_backends();
    backend->set_id(model->id() + "/p/" + std::to_string(i));
    backend->set_provider_id("p");
    backend->set_upstream_model("upstream-" + std::to_string(i));
    backend->set_weight(1 + i % 4);
    backend->set_effective_weight(1 + i % 4);
    backend->set_priority(1 + i % 3);
    backend->set_enabled(true);
  }
}

// 10,000 models: the measured ones have `backends` backends and `strategy`, the others two
// weighted_random backends. Built once per (strategy, backends).
const Fixture& GetFixture(v1::Strategy strategy, int backends) {
  static auto* fixtures = new std::map<std::pair<int, int>, Fixture>();
  Fixture& fixture = (*fixtures)[{strategy, backends}];
  if (fixture.state != nullptr) {
    return fixture;
  }
  v1::RouteTable table;
  table.mutable_settings()->set_panic_threshold_percent(50);
  v1::Provider* provider = table.add_providers();
  provider->set_id("p");
  provider->set_enabled(true);
  provider->set_max_retries(3);  // the TOML default: retries may stay on "p"
  constexpr int kStride = kModels / kMeasuredModels;
  for (int i = 0; i < kModels; ++i) {
    const bool measured = i % kStride == 0 && i / kStride < kMeasuredModels;
    AddModel(table, i, measured ? strategy : v1::STRATEGY_WEIGHTED_RANDOM,
             measured ? backends : kOtherModelBackends);
    if (measured) {
      fixture.names.push_back(table.models(i).name());
    }
  }
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Create(std::move(table));
  if (!snapshot.ok()) {
    std::fprintf(stderr, "selection_bench: %s\n", snapshot.status().ToString().c_str());
    std::abort();
  }
  fixture.state = RuntimeState::Create(*std::move(snapshot));
  for (const std::string& name : fixture.names) {
    fixture.tried.push_back({(*fixture.state->snapshot().FindModel(name))->backends()[0].index()});
  }
  return fixture;
}

// One lookup and one pick per iteration. `retry` names the model's first backend as already
// tried, which sends every pick through the general filtering pass instead of the view the
// snapshot precomputed for first attempts.
void RunPicks(benchmark::State& state, v1::Strategy strategy, bool retry) {
  const Fixture& fixture = GetFixture(strategy, static_cast<int>(state.range(0)));
  Picker picker(fixture.state);
  absl::InsecureBitGen rng;
  const Snapshot& snapshot = fixture.state->snapshot();
  size_t next = 0;
  for (auto _ : state) {
    const size_t i = next++ % kMeasuredModels;
    const absl::StatusOr<const CompiledModel*> model = snapshot.FindModel(fixture.names[i]);
    PickRequest request{.now_ns = 1};
    if (retry) {
      request.tried = fixture.tried[i];
    }
    absl::StatusOr<PickResult> pick = picker.Pick(**model, request, rng);
    benchmark::DoNotOptimize(pick);
  }
}

void BM_FindModel(benchmark::State& state) {
  const Fixture& fixture = GetFixture(v1::STRATEGY_WEIGHTED_RANDOM, kOtherModelBackends);
  size_t next = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        fixture.state->snapshot().FindModel(fixture.names[next++ % kMeasuredModels]));
  }
}

// Names read "<path>/<strategy>/<backends per model>", e.g. "first_attempt/failover/256".
void RegisterPickBenchmarks() {
  const std::pair<const char*, v1::Strategy> strategies[] = {
      {"weighted_random", v1::STRATEGY_WEIGHTED_RANDOM},
      {"round_robin", v1::STRATEGY_ROUND_ROBIN},
      {"least_requests", v1::STRATEGY_LEAST_REQUESTS},
      {"failover", v1::STRATEGY_FAILOVER},
  };
  benchmark::RegisterBenchmark("find_model", BM_FindModel);
  for (const bool retry : {false, true}) {
    for (const auto& [name, strategy] : strategies) {
      const std::string full = std::string(retry ? "retry/" : "first_attempt/") + name;
      benchmark::RegisterBenchmark(full.c_str(), RunPicks, strategy, retry)
          ->Arg(2)
          ->Arg(16)
          ->Arg(256);
    }
  }
}

}  // namespace
}  // namespace berry::selection

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  berry::selection::RegisterPickBenchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
