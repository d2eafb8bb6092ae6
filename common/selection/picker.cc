#include "common/selection/picker.h"

#include <algorithm>
#include <array>
#include <limits>
#include <string>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace berry::selection {
namespace {

using ExclusionCounts = std::array<size_t, kExclusionCount>;

// The tried list holds a handful of entries: a loop the compiler inlines beats anything fancier.
bool Contains(std::span<const uint32_t> values, uint32_t value) {
  for (const uint32_t v : values) {
    if (v == value) {
      return true;
    }
  }
  return false;
}

size_t UniformIndex(size_t n, absl::BitGenRef rng) { return absl::Uniform<size_t>(rng, 0, n); }

// Uniform over [0, n) without `other`; n >= 2.
size_t UniformIndexOtherThan(size_t n, size_t other, absl::BitGenRef rng) {
  const size_t index = UniformIndex(n - 1, rng);
  return index >= other ? index + 1 : index;
}

// The position a weighted draw lands on; `cumulative` holds running sums of positive weights.
size_t DrawWeighted(std::span<const double> cumulative, absl::BitGenRef rng) {
  const double point = absl::Uniform<double>(rng, 0.0, cumulative.back());
  const auto it = std::upper_bound(cumulative.begin(), cumulative.end(), point);
  return it == cumulative.end() ? cumulative.size() - 1 : it - cumulative.begin();
}

// Says why nothing is left: "every backend is disabled", or a breakdown when reasons mix.
// `unusable` counts candidates that are ejected or unhealthy (with no panic to fall back on).
absl::Status NoBackendError(const CompiledModel& model, const ExclusionCounts& excluded,
                            size_t unusable, size_t cooling, size_t spent) {
  struct Reason {
    size_t count;
    const char* some;
    const char* every;
  };
  const auto count = [&excluded](Exclusion why) { return excluded[static_cast<size_t>(why)]; };
  const Reason reasons[] = {
      {count(Exclusion::kBackendDisabled), "disabled", "every backend is disabled"},
      {count(Exclusion::kProviderDisabled), "on a disabled provider",
       "every backend is on a disabled provider"},
      {count(Exclusion::kDraining), "draining", "every backend is draining"},
      {count(Exclusion::kTagMismatch), "not matching the user's tags",
       "no backend matches the user's tags"},
      {count(Exclusion::kAlreadyTried), "already tried",
       "every backend was already tried by this request"},
      {count(Exclusion::kDialect), "on a provider whose API has no such endpoint",
       "every backend is on a provider whose API has no such endpoint"},
      {count(Exclusion::kRetryBudgetSpent), "on a provider whose retry budget is spent",
       "every backend is on a provider whose retry budget this request has spent"},
      {unusable, "ejected or unhealthy", "every backend is ejected or unhealthy"},
      {cooling, "cooling down after an upstream 429",
       "every backend is cooling down after an upstream 429"},
      {spent, "out of budget", "every backend's budget (or its provider's) is spent for now"},
  };
  const size_t total = model.backends().size();
  std::string why = total == 0 ? "it has no backends" : "";
  std::vector<std::string> parts;
  for (const Reason& reason : reasons) {
    if (reason.count == total && total > 0) {
      why = reason.every;
    } else if (reason.count > 0) {
      parts.push_back(absl::StrCat(reason.count, " ", reason.some));
    }
  }
  if (why.empty()) {
    why = absl::StrCat("of its ", total, " backends, ", absl::StrJoin(parts, ", "));
  }
  return absl::UnavailableError(
      absl::StrCat("no backend is available for model \"", model.name(), "\": ", why));
}

}  // namespace

Picker::Picker(std::shared_ptr<const RuntimeState> state) { Reset(std::move(state)); }

void Picker::Reset(std::shared_ptr<const RuntimeState> state) {
  state_ = std::move(state);
  const Snapshot& snapshot = state_->snapshot();
  candidates_.assign(snapshot.max_backends_per_model(), 0);
  usable_.assign(snapshot.max_backends_per_model(), 0);
  cumulative_.assign(snapshot.max_backends_per_model(), 0.0);
  round_robin_current_.assign(snapshot.round_robin_slots(), 0.0);
}

absl::StatusOr<PickResult> Picker::Pick(const CompiledModel& model, const PickRequest& request,
                                        absl::BitGenRef rng) {
  budget_credit_pending_ = false;
  const Snapshot& snapshot = state_->snapshot();
  if (!snapshot.Owns(model)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model \"", model.name(), "\" is not from the snapshot this picker is bound to"));
  }
  if (request.user_tags != nullptr && request.user_tags->tagged() &&
      !request.user_tags->InternedBy(snapshot)) {
    return absl::InvalidArgumentError("user tags were interned against another snapshot");
  }
  if (!model.enabled()) {
    return absl::NotFoundError(absl::StrCat("model \"", model.name(), "\" does not exist"));
  }

  View view;
  if (CanUseFastView(model, request)) {
    view = model.fast_view_;
  } else {
    absl::StatusOr<View> filtered = Filter(model, request);
    if (!filtered.ok()) {
      return filtered.status();
    }
    view = *filtered;
  }
  return PickResult{&model.backends_[Choose(model, view, rng)], view.panic};
}

bool Picker::CanUseFastView(const CompiledModel& model, const PickRequest& request) const {
  const bool tags_restrict =
      request.user_tags != nullptr && request.user_tags->tagged() && model.has_tagged_backends_;
  return model.fast_view_valid_ && request.tried.empty() && !tags_restrict &&
         !(request.openai_only && model.has_other_dialects_) &&
         !(request.budgets != nullptr && model.has_budgets_) &&
         state_->model(model.index()).ejection_horizon_ns() <= request.now_ns;
}

bool Picker::RetryBudgetSpent(const CompiledBackend& backend,
                              std::span<const uint32_t> tried) const {
  // Backends of one provider share its table entry, so the pointer identifies the provider.
  const std::span<const CompiledBackend> all = state_->snapshot().backends();
  uint32_t spent = 0;
  for (const uint32_t index : tried.subspan(1)) {  // tried[0] was the first attempt
    spent += index < all.size() && all[index].provider_ == backend.provider_ ? 1 : 0;
  }
  return spent >= backend.provider_->max_retries();
}

absl::StatusOr<Picker::View> Picker::Filter(const CompiledModel& model,
                                            const PickRequest& request) {
  const RuntimeState& runtime = *state_;
  const Snapshot& snapshot = runtime.snapshot();
  ExclusionCounts excluded{};
  size_t candidates = 0;
  size_t usable = 0;
  size_t cooling = 0;  // cooling down: not candidates at all (the provider said when to return)
  size_t spent = 0;    // out of budget: not candidates either
  for (const uint32_t local : model.order_) {
    const CompiledBackend& backend = model.backends_[local];
    Exclusion why = backend.exclusion();
    if (why == Exclusion::kNone && request.user_tags != nullptr &&
        !snapshot.TagsAllow(backend, *request.user_tags)) {
      why = Exclusion::kTagMismatch;
    }
    if (why == Exclusion::kNone && request.openai_only && !backend.openai_dialect_) {
      why = Exclusion::kDialect;
    }
    if (why == Exclusion::kNone && Contains(request.tried, backend.index())) {
      why = Exclusion::kAlreadyTried;
    }
    if (why == Exclusion::kNone && !request.tried.empty() &&
        RetryBudgetSpent(backend, request.tried)) {
      why = Exclusion::kRetryBudgetSpent;
    }
    if (why != Exclusion::kNone) {
      ++excluded[static_cast<size_t>(why)];
      continue;
    }
    if (runtime.backend(backend).CoolingDownAt(request.now_ns)) {
      ++cooling;
      continue;
    }
    if (request.budgets != nullptr && backend.has_budget_ &&
        request.budgets->Spent(backend, request.now_ns)) {
      ++spent;
      budget_credit_pending_ =
          budget_credit_pending_ || request.budgets->CreditPending(backend, request.now_ns);
      continue;
    }
    candidates_[candidates++] = local;
    if (backend.health() != berry::v1::HEALTH_STATUS_UNHEALTHY &&
        !runtime.backend(backend).EjectedAt(request.now_ns)) {
      usable_[usable++] = local;
    }
  }
  // No candidates at all, or every candidate unusable with panic switched off (threshold 0).
  if (usable == 0 && !snapshot.Panics(0, candidates)) {
    return NoBackendError(model, excluded, candidates, cooling, spent);
  }
  const bool panic = snapshot.Panics(usable, candidates);
  const std::span<const uint32_t> members =
      panic ? std::span(candidates_).first(candidates) : std::span(usable_).first(usable);
  View view = model.MakeView(members, cumulative_);
  view.panic = panic;
  return view;
}

uint32_t Picker::Choose(const CompiledModel& model, const View& view, absl::BitGenRef rng) {
  using Rule = CompiledModel::Rule;
  const std::span<const uint32_t> members = view.members;
  switch (model.rule_) {
    case Rule::kWeighted:
      return members[DrawWeighted(view.cumulative.first(view.tier_size), rng)];
    case Rule::kFirst:
      return members.front();
    case Rule::kUniform:
      return members[UniformIndex(members.size(), rng)];
    case Rule::kSmoothRoundRobin:
      return SmoothRoundRobin(model, members);
    case Rule::kLeastLatency:
      return LeastLatency(model, members, rng);
    case Rule::kLeastRequests:
      return LeastRequests(model, members, rng);
  }
  return members.front();  // unreachable: every rule is handled above
}

// nginx's smooth weighted round robin: every member gains its weight, the one with the most
// current weight wins (first in config order on ties) and gives back the total.
uint32_t Picker::SmoothRoundRobin(const CompiledModel& model, std::span<const uint32_t> members) {
  double* const current = round_robin_current_.data() + model.round_robin_base_;
  double total = 0;
  uint32_t best = members.front();
  double best_current = -std::numeric_limits<double>::infinity();
  for (const uint32_t local : members) {
    const double weight = model.backends_[local].pick_weight_;
    current[local] += weight;
    total += weight;
    if (current[local] > best_current) {
      best = local;
      best_current = current[local];
    }
  }
  current[best] -= total;
  return best;
}

uint32_t Picker::LeastLatency(const CompiledModel& model, std::span<const uint32_t> members,
                              absl::BitGenRef rng) const {
  size_t best = 0;
  double best_ewma = std::numeric_limits<double>::infinity();
  size_t unsampled = 0;
  size_t chosen_unsampled = 0;
  for (size_t i = 0; i < members.size(); ++i) {
    const double ewma = state_->backend(model.backends_[members[i]]).ttfb_ewma_seconds();
    if (ewma < 0) {
      // Reservoir sampling: a uniform choice among the unsampled in one pass, so concurrent
      // requests do not all pile onto the first one while its sample is outstanding.
      if (UniformIndex(++unsampled, rng) == 0) {
        chosen_unsampled = i;
      }
    } else if (ewma < best_ewma) {
      best = i;
      best_ewma = ewma;
    }
  }
  if (unsampled > 0) {
    return members[chosen_unsampled];
  }
  if (members.size() > 1 && absl::Bernoulli(rng, kLeastLatencyExploreProbability)) {
    return members[UniformIndexOtherThan(members.size(), best, rng)];
  }
  return members[best];
}

uint32_t Picker::LeastRequests(const CompiledModel& model, std::span<const uint32_t> members,
                               absl::BitGenRef rng) const {
  if (members.size() == 1) {
    return members.front();
  }
  const size_t first = UniformIndex(members.size(), rng);
  const size_t second = UniformIndexOtherThan(members.size(), first, rng);
  const CompiledBackend& a = model.backends_[members[first]];
  const CompiledBackend& b = model.backends_[members[second]];
  // in_flight(a) / weight(a) against in_flight(b) / weight(b), without dividing.
  const double load_a = static_cast<double>(state_->backend(a).in_flight()) * b.pick_weight_;
  const double load_b = static_cast<double>(state_->backend(b).in_flight()) * a.pick_weight_;
  if (load_a != load_b) {
    return load_a < load_b ? members[first] : members[second];
  }
  return b.pick_weight_ > a.pick_weight_ ? members[second] : members[first];
}

}  // namespace berry::selection
