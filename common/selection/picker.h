// Picks the backend that serves one attempt of one request, by the custom model's strategy
// (DESIGN.md, "Strategies"):
//
//   weighted_random (default)   probability ∝ effective_weight (weight x health factor)
//   round_robin                 smooth weighted round robin (nginx), by weight, per Picker
//   random                      uniform
//   least_latency               lowest TTFB EWMA; backends without a sample first; with
//                               probability kLeastLatencyExploreProbability another usable one
//   least_requests              two distinct random usable backends, the lower
//                               in_flight / weight wins; ties go to the higher weight
//   failover                    lowest priority tier with a usable backend, its highest weight
//                               (ties: config order)
//   weighted_failover           weighted random by weight inside that tier
//   smart_weighted_failover,    weighted random by effective_weight inside that tier
//   smart_ai
//
// Candidates are the model's backends that are enabled, on an enabled provider, not draining,
// tag-compatible with the user, able to serve the endpoint (openai_only), not yet tried by this
// request and, on a retry, on a provider whose retry budget this request has not spent; the usable
// ones are also neither ejected nor unhealthy. When usable * 100 < panic_threshold_percent *
// candidates the pick is a panic: it draws from every candidate and says so (the caller counts
// berry_panic_total). A backend cooling down after an upstream 429 (BackendRuntime::CoolDownUntil)
// is no candidate at all: the provider named the time to come back, so not even a panic sends
// to it.
//
// Budgets (Provider.budget, Backend.budget): a backend whose budget, or whose provider's, is
// spent for now (PickRequest::budgets says so) is no candidate either, like a cooling-down one.
//
// Per-provider retry budget: a pick with a non-empty `tried` is a retry. A provider with
// max_retries = N takes at most N of one request's retries: a retry skips its backends once N
// of the earlier retries (the entries of `tried` after the first) went to them. The first
// attempt is never limited, so N = 0 means a request may start on the provider but never fails
// over onto it. The request's total (Settings.max_retries) is the caller's to enforce.
//
// Cost: no allocation, nothing proportional to the table. With no retries, no tag restriction
// and no ejected backend in the model, a pick reads a view precomputed by the Snapshot: O(1)
// for random, failover and least_requests, O(log n) for the weighted draws, O(n) for round robin
// and least_latency (n = the model's backends). Otherwise one O(n) filtering pass comes first.
//
// One Picker per worker thread; it is not thread-safe. The Snapshot and RuntimeState it reads
// may be shared by every worker.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/statusor.h"
#include "common/selection/runtime_state.h"
#include "common/selection/snapshot.h"

namespace berry::selection {

// least_latency's exploration share: with this probability a pick goes to a uniformly drawn
// usable backend other than the fastest, so the EWMAs of the others stay current.
inline constexpr double kLeastLatencyExploreProbability = 0.05;

// Says whether a backend's budget (or its provider's) is spent: the data plane's fleet-wide
// budgets implement it (data-plane/quota/fleet_limits.h). Called from any worker thread.
class BudgetGate {
 public:
  virtual ~BudgetGate() = default;
  // True when `backend` may not take a request at `now_ns` (PickRequest::now_ns's clock).
  virtual bool Spent(const CompiledBackend& backend, int64_t now_ns) const = 0;
  // Asked only of a Spent backend: true when credit may come soon (an ask for more is on its
  // way), so that a request may wait for it rather than be refused.
  virtual bool CreditPending(const CompiledBackend& backend, int64_t now_ns) const = 0;
};

struct PickRequest {
  // The user's tags, interned against the picker's snapshot; nullptr = untagged.
  const UserTags* user_tags = nullptr;
  // Backends (CompiledBackend::index()) this request already tried, in attempt order: a retry
  // goes elsewhere. tried[0] is the first attempt and every later entry a retry, which is what
  // the per-provider retry budgets count.
  std::span<const uint32_t> tried = {};
  // Now on the monotonic clock the ejection deadlines use, in nanoseconds.
  int64_t now_ns = 0;
  // The request is for an endpoint only OpenAI's API has (/v1/completions, /v1/embeddings):
  // backends on providers of another dialect are not candidates.
  bool openai_only = false;
  // Budgets to respect; nullptr = none (backends with a budget are then unlimited).
  const BudgetGate* budgets = nullptr;
};

struct PickResult {
  const CompiledBackend* backend = nullptr;
  // The usable share was below the panic threshold, so ejection and health were ignored.
  bool panic = false;
};

class Picker {
 public:
  explicit Picker(std::shared_ptr<const RuntimeState> state);

  // Binds the picker to a new snapshot's state (the worker saw a new generation). Allocates
  // the scratch the picks reuse; round robin starts over.
  void Reset(std::shared_ptr<const RuntimeState> state);

  const RuntimeState& state() const { return *state_; }
  const Snapshot& snapshot() const { return state_->snapshot(); }

  // Chooses a backend of `model`, which must come from snapshot(). Errors: NotFound for a
  // disabled model; Unavailable when no backend can take the request, with a message saying
  // why (disabled, draining, tags, already tried, retry budget spent, ejected); InvalidArgument
  // for a model or user tags from another snapshot.
  absl::StatusOr<PickResult> Pick(const CompiledModel& model, const PickRequest& request,
                                  absl::BitGenRef rng);
  // After a Pick: a backend that was no candidate only for its budget has credit pending
  // (BudgetGate::CreditPending). What a failed pick may wait on.
  bool budget_credit_pending() const { return budget_credit_pending_; }

 private:
  using View = CompiledModel::View;

  bool CanUseFastView(const CompiledModel& model, const PickRequest& request) const;
  // Whether a retry may not go to `backend`: its provider's max_retries are used up by `tried`.
  bool RetryBudgetSpent(const CompiledBackend& backend, std::span<const uint32_t> tried) const;
  absl::StatusOr<View> Filter(const CompiledModel& model, const PickRequest& request);
  uint32_t Choose(const CompiledModel& model, const View& view, absl::BitGenRef rng);
  uint32_t SmoothRoundRobin(const CompiledModel& model, std::span<const uint32_t> members);
  uint32_t LeastLatency(const CompiledModel& model, std::span<const uint32_t> members,
                        absl::BitGenRef rng) const;
  uint32_t LeastRequests(const CompiledModel& model, std::span<const uint32_t> members,
                         absl::BitGenRef rng) const;

  std::shared_ptr<const RuntimeState> state_;
  // Scratch for the filtering pass, max_backends_per_model() long.
  std::vector<uint32_t> candidates_;
  std::vector<uint32_t> usable_;
  std::vector<double> cumulative_;
  // Smooth round robin's current weights, at model.round_robin_base_ + local index.
  std::vector<double> round_robin_current_;
  bool budget_credit_pending_ = false;
};

}  // namespace berry::selection
