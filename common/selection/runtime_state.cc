#include "common/selection/runtime_state.h"

#include <cassert>
#include <cmath>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace berry::selection {

void ModelRuntime::Extend(int64_t until_ns) {
  int64_t horizon = ejection_horizon_ns_.load(std::memory_order_relaxed);
  while (horizon < until_ns && !ejection_horizon_ns_.compare_exchange_weak(
                                   horizon, until_ns, std::memory_order_relaxed)) {
  }
}

void BackendRuntime::EjectUntil(int64_t until_ns) {
  model_->Extend(until_ns);
  ejected_until_ns_.store(until_ns, std::memory_order_relaxed);
}

bool BackendRuntime::CoolDownUntil(int64_t until_ns) {
  int64_t current = cooldown_until_ns_.load(std::memory_order_relaxed);
  while (current < until_ns &&
         !cooldown_until_ns_.compare_exchange_weak(current, until_ns, std::memory_order_relaxed)) {
  }
  if (current >= until_ns) {
    return false;
  }
  model_->Extend(until_ns);
  return true;
}

void BackendRuntime::EndRequest() {
  [[maybe_unused]] const uint32_t before = in_flight_.fetch_sub(1, std::memory_order_relaxed);
  assert(before > 0 && "EndRequest without a matching BeginRequest");
}

void BackendRuntime::RecordTtfb(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) {
    return;
  }
  double average = ttfb_ewma_seconds_.load(std::memory_order_relaxed);
  double next;
  do {
    next = average < 0 ? seconds : average + kTtfbEwmaAlpha * (seconds - average);
  } while (!ttfb_ewma_seconds_.compare_exchange_weak(average, next, std::memory_order_relaxed));
}

std::shared_ptr<const RuntimeState> RuntimeState::Create(std::shared_ptr<const Snapshot> snapshot,
                                                         const RuntimeState* previous) {
  // Keys point into previous->snapshot(), which outlives this function.
  absl::flat_hash_map<std::string_view, std::shared_ptr<ModelRuntime>> old_models;
  absl::flat_hash_map<std::string_view, std::shared_ptr<BackendRuntime>> old_backends;
  if (previous != nullptr) {
    for (const CompiledModel& model : previous->snapshot().models()) {
      old_models.emplace(model.id(), previous->models_[model.index()]);
    }
    for (const CompiledBackend& backend : previous->snapshot().backends()) {
      old_backends.emplace(backend.id(), previous->owners_[backend.index()]);
    }
  }

  std::shared_ptr<RuntimeState> state(new RuntimeState());
  state->models_.reserve(snapshot->models().size());
  state->owners_.resize(snapshot->backends().size());
  size_t fresh = 0;
  for (const CompiledModel& model : snapshot->models()) {
    std::shared_ptr<ModelRuntime> model_state;
    if (const auto it = old_models.find(model.id()); it != old_models.end()) {
      model_state = it->second;
    } else {
      model_state = std::make_shared<ModelRuntime>();
    }
    for (const CompiledBackend& backend : model.backends()) {
      const auto it = old_backends.find(backend.id());
      // A backend id that moved to another model starts clean: its ejections must extend the
      // horizon of the model it serves now.
      if (it != old_backends.end() && it->second->model_ == model_state) {
        state->owners_[backend.index()] = it->second;
      } else {
        ++fresh;
      }
    }
    state->models_.push_back(std::move(model_state));
  }

  const std::shared_ptr<BackendRuntime[]> block(new BackendRuntime[fresh]);
  BackendRuntime* next = block.get();
  for (const CompiledModel& model : snapshot->models()) {
    for (const CompiledBackend& backend : model.backends()) {
      std::shared_ptr<BackendRuntime>& owner = state->owners_[backend.index()];
      if (owner == nullptr) {
        owner = std::shared_ptr<BackendRuntime>(block, next++);
        owner->model_ = state->models_[model.index()];
      }
    }
  }
  state->backends_.reserve(state->owners_.size());
  for (const std::shared_ptr<BackendRuntime>& owner : state->owners_) {
    state->backends_.push_back(owner.get());
  }
  state->snapshot_ = std::move(snapshot);
  return state;
}

}  // namespace berry::selection
