#include "common/selection/snapshot.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/route_table/dialect.h"
#include "common/strings/views.h"

namespace berry::selection {
namespace {

bool LimitsTokens(const v1::RateLimit& limit) {
  return limit.tokens_per_minute() > 0 || limit.tokens_per_hour() > 0 || limit.tokens_per_day() > 0;
}

bool LimitsAnything(const v1::RateLimit& limit) {
  return limit.requests_per_minute() > 0 || limit.requests_per_hour() > 0 ||
         limit.requests_per_day() > 0 || LimitsTokens(limit);
}

namespace v1 = berry::v1;

v1::HealthStatus NormalizeHealth(v1::HealthStatus health) {
  switch (health) {
    case v1::HEALTH_STATUS_HEALTHY:
    case v1::HEALTH_STATUS_UNHEALTHY:
    case v1::HEALTH_STATUS_DRAINING:
      return health;
    default:  // unspecified, unknown, or newer than this build: no verdict, treated as healthy
      return v1::HEALTH_STATUS_UNKNOWN;
  }
}

std::string Where(const v1::CustomModel& model, const v1::Backend& backend) {
  return absl::StrCat("model \"", model.name(), "\", backend \"", backend.id(), "\": ");
}

}  // namespace

CompiledModel::View CompiledModel::MakeView(std::span<const uint32_t> members,
                                            std::span<double> scratch) const {
  View view;
  view.members = members;
  view.tier_size = members.size();
  if (rule_ == Rule::kWeighted) {
    double sum = 0;
    for (size_t i = 0; i < members.size(); ++i) {
      sum += backends_[members[i]].pick_weight_;
      scratch[i] = sum;
    }
    view.cumulative = scratch.first(members.size());
  }
  if (tiered_ && !members.empty()) {
    const uint32_t lowest = backends_[members[0]].priority();
    size_t size = 1;
    while (size < members.size() && backends_[members[size]].priority() == lowest) {
      ++size;
    }
    view.tier_size = size;
  }
  return view;
}

absl::StatusOr<std::shared_ptr<const Snapshot>> Snapshot::Create(v1::RouteTable table) {
  // Not make_shared: the constructor is private.
  std::shared_ptr<Snapshot> snapshot(new Snapshot());
  snapshot->table_ = std::move(table);
  if (absl::Status status = snapshot->Compile(); !status.ok()) {
    return status;
  }
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

absl::Status Snapshot::Compile() {
  if (panic_threshold_percent() > 100) {
    return absl::InvalidArgumentError(absl::StrCat(
        "settings: panic_threshold_percent must be 0-100, got ", panic_threshold_percent()));
  }
  for (const v1::Provider& provider : table_.providers()) {
    if (provider.id().empty()) {
      return absl::InvalidArgumentError("a provider has an empty id");
    }
    if (!provider_by_id_.emplace(provider.id(), &provider).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("provider id \"", provider.id(), "\" appears twice"));
    }
  }
  if (absl::Status status = ValidateIds(); !status.ok()) {
    return status;
  }

  size_t backend_count = 0;
  size_t tag_count = 0;
  for (const v1::CustomModel& model : table_.models()) {
    backend_count += model.backends_size();
    for (const v1::Backend& backend : model.backends()) {
      tag_count += backend.tags_size();
    }
  }
  models_.reserve(table_.models_size());
  backends_.reserve(backend_count);
  tag_pool_.reserve(tag_count);
  order_pool_.reserve(backend_count);
  fast_member_pool_.reserve(backend_count);
  fast_cumulative_pool_.reserve(backend_count);

  for (int i = 0; i < table_.models_size(); ++i) {
    if (absl::Status status = CompileModel(table_.models(i), static_cast<uint32_t>(i));
        !status.ok()) {
      return status;
    }
  }
  exact_tag_bloom_ = tag_ids_.size() <= 64;
  return absl::OkStatus();
}

absl::Status Snapshot::ValidateIds() const {
  absl::flat_hash_set<std::string_view> model_ids;
  absl::flat_hash_set<std::string_view> model_names;
  absl::flat_hash_set<std::string_view> backend_ids;
  for (const v1::CustomModel& model : table_.models()) {
    if (model.id().empty() || model.name().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("model \"", model.id(), "\" named \"",
                                                     model.name(), "\": id and name must be set"));
    }
    if (!model_ids.insert(model.id()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("model id \"", model.id(), "\" appears twice"));
    }
    if (!model_names.insert(model.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("model name \"", model.name(), "\" is used by two models"));
    }
    for (const v1::Backend& backend : model.backends()) {
      if (backend.id().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model \"", model.name(), "\": a backend has an empty id"));
      }
      // Runtime state (ejections, latency) follows a backend across tables by its id.
      if (!backend_ids.insert(backend.id()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("backend id \"", backend.id(), "\" appears twice"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Snapshot::CompileModel(const v1::CustomModel& config, uint32_t index) {
  CompiledModel& model = models_.emplace_back();
  model.config_ = &config;
  model.index_ = index;
  model.strategy_ = config.strategy();
  bool by_effective_weight = false;
  using Rule = CompiledModel::Rule;
  switch (config.strategy()) {
    case v1::STRATEGY_UNSPECIFIED:
      model.strategy_ = v1::STRATEGY_WEIGHTED_RANDOM;
      [[fallthrough]];
    case v1::STRATEGY_WEIGHTED_RANDOM:
      model.rule_ = Rule::kWeighted;
      by_effective_weight = true;
      break;
    case v1::STRATEGY_ROUND_ROBIN:
      model.rule_ = Rule::kSmoothRoundRobin;
      break;
    case v1::STRATEGY_RANDOM:
      model.rule_ = Rule::kUniform;
      break;
    case v1::STRATEGY_LEAST_LATENCY:
      model.rule_ = Rule::kLeastLatency;
      break;
    case v1::STRATEGY_LEAST_REQUESTS:
      model.rule_ = Rule::kLeastRequests;
      break;
    case v1::STRATEGY_FAILOVER:
      model.rule_ = Rule::kFirst;
      model.tiered_ = true;
      break;
    case v1::STRATEGY_WEIGHTED_FAILOVER:
      model.rule_ = Rule::kWeighted;
      model.tiered_ = true;
      break;
    case v1::STRATEGY_SMART_WEIGHTED_FAILOVER:
    case v1::STRATEGY_SMART_AI:
      model.rule_ = Rule::kWeighted;
      model.tiered_ = true;
      by_effective_weight = true;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("model \"", config.name(), "\": unknown strategy ", config.strategy()));
  }

  const size_t first = backends_.size();
  for (const v1::Backend& backend_config : config.backends()) {
    absl::StatusOr<CompiledBackend> backend = CompileBackend(config, backend_config);
    if (!backend.ok()) {
      return backend.status();
    }
    backend->index_ = static_cast<uint32_t>(backends_.size());
    backend->local_index_ = static_cast<uint32_t>(backends_.size() - first);
    backend->pick_weight_ = by_effective_weight ? backend->effective_weight_ : backend->weight();
    model.has_tagged_backends_ |= !backend->tags_.empty();
    model.has_other_dialects_ |= !backend->openai_dialect_;
    model.has_budgets_ |= backend->has_budget_;
    model.has_token_budgets_ |=
        LimitsTokens(backend_config.budget()) || LimitsTokens(backend->provider().budget());
    backends_.push_back(*backend);
  }
  const size_t count = backends_.size() - first;
  model.backends_ = std::span<const CompiledBackend>(backends_).subspan(first, count);
  if (model.rule_ == Rule::kSmoothRoundRobin) {
    model.round_robin_base_ = static_cast<uint32_t>(round_robin_slots_);
    round_robin_slots_ += count;
  }
  max_backends_per_model_ = std::max(max_backends_per_model_, count);
  BuildOrderAndFastView(model);
  model_by_name_.emplace(config.name(), index);
  return absl::OkStatus();
}

absl::StatusOr<CompiledBackend> Snapshot::CompileBackend(const v1::CustomModel& model,
                                                         const v1::Backend& config) {
  const auto provider = provider_by_id_.find(config.provider_id());
  if (provider == provider_by_id_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(model, config), "unknown provider \"", config.provider_id(), "\""));
  }
  if (!(config.weight() > 0) || !std::isfinite(config.weight())) {
    return absl::InvalidArgumentError(absl::StrCat(
        Where(model, config), "weight must be a positive finite number, got ", config.weight()));
  }
  const double effective = config.effective_weight();
  if (!(effective >= 0) || !std::isfinite(effective)) {
    return absl::InvalidArgumentError(absl::StrCat(
        Where(model, config), "effective_weight must be finite and >= 0, got ", effective));
  }

  CompiledBackend backend;
  backend.config_ = &config;
  backend.provider_ = provider->second;
  backend.effective_weight_ = effective > 0 ? effective : config.weight();  // 0 = not set
  backend.health_ = NormalizeHealth(config.health());
  backend.openai_dialect_ =
      route_table::ParseDialect(backend.provider_->backend_type()) == route_table::Dialect::kOpenAi;
  backend.has_budget_ =
      LimitsAnything(config.budget()) || LimitsAnything(backend.provider_->budget());
  if (!config.enabled()) {
    backend.exclusion_ = Exclusion::kBackendDisabled;
  } else if (!backend.provider_->enabled()) {
    backend.exclusion_ = Exclusion::kProviderDisabled;
  } else if (backend.health_ == v1::HEALTH_STATUS_DRAINING) {
    backend.exclusion_ = Exclusion::kDraining;
  }

  const auto first_tag = static_cast<std::ptrdiff_t>(tag_pool_.size());
  for (const std::string& tag : config.tags()) {
    const auto [it, inserted] = tag_ids_.try_emplace(tag, static_cast<uint32_t>(tag_ids_.size()));
    tag_pool_.push_back(it->second);
  }
  std::sort(tag_pool_.begin() + first_tag, tag_pool_.end());
  tag_pool_.erase(std::unique(tag_pool_.begin() + first_tag, tag_pool_.end()), tag_pool_.end());
  backend.tags_ = std::span<const uint32_t>(tag_pool_).subspan(first_tag);
  for (uint32_t id : backend.tags_) {
    backend.tag_bloom_ |= uint64_t{1} << (id % 64);
  }
  return backend;
}

void Snapshot::BuildOrderAndFastView(CompiledModel& model) {
  const auto n = static_cast<uint32_t>(model.backends_.size());
  const size_t order_first = order_pool_.size();
  for (uint32_t i = 0; i < n; ++i) {
    order_pool_.push_back(i);
  }
  const std::span<uint32_t> order = std::span(order_pool_).subspan(order_first, n);
  if (model.tiered_) {
    // Lowest priority first; within a tier the heaviest first (failover's pick); the stable sort
    // keeps config order between equals.
    std::stable_sort(order.begin(), order.end(), [&model](uint32_t a, uint32_t b) {
      const CompiledBackend& x = model.backends_[a];
      const CompiledBackend& y = model.backends_[b];
      if (x.priority() != y.priority()) {
        return x.priority() < y.priority();
      }
      return x.pick_weight_ > y.pick_weight_;
    });
  }
  model.order_ = order;

  // The fast view: what the general filter produces when nothing at runtime excludes anyone.
  const size_t fast_first = fast_member_pool_.size();
  size_t candidates = 0;
  for (uint32_t local : order) {
    const CompiledBackend& backend = model.backends_[local];
    if (backend.exclusion_ != Exclusion::kNone) {
      continue;
    }
    ++candidates;
    if (backend.health_ != v1::HEALTH_STATUS_UNHEALTHY) {
      fast_member_pool_.push_back(local);
    }
  }
  const std::span<const uint32_t> members = std::span(fast_member_pool_).subspan(fast_first);
  const size_t cumulative_first = fast_cumulative_pool_.size();
  fast_cumulative_pool_.resize(cumulative_first + members.size());
  model.fast_view_ =
      model.MakeView(members, std::span(fast_cumulative_pool_).subspan(cumulative_first));
  model.fast_view_valid_ = !members.empty() && !Panics(members.size(), candidates);
}

absl::StatusOr<const CompiledModel*> Snapshot::FindModel(std::string_view name) const {
  const auto it = model_by_name_.find(name);
  if (it == model_by_name_.end() || !models_[it->second].enabled()) {
    return absl::NotFoundError(absl::StrCat("model \"", strings::Absl(name), "\" does not exist"));
  }
  return &models_[it->second];
}

bool Snapshot::TagsAllow(const CompiledBackend& backend, const UserTags& user) const {
  if (!user.tagged_ || backend.tags_.empty()) {
    return true;
  }
  if ((backend.tag_bloom_ & user.bloom_) == 0) {
    return false;
  }
  if (exact_tag_bloom_) {
    return true;
  }
  // More than 64 distinct tags: the bloom bits collide, so intersect the sorted id lists.
  auto a = backend.tags_.begin();
  auto b = user.ids_.begin();
  while (a != backend.tags_.end() && b != user.ids_.end()) {
    if (*a == *b) {
      return true;
    }
    if (*a < *b) {
      ++a;
    } else {
      ++b;
    }
  }
  return false;
}

void Snapshot::AddUserTag(UserTags& user, std::string_view tag) const {
  user.tagged_ = true;
  // A tag no backend carries cannot match; the user still counts as tagged.
  if (const auto it = tag_ids_.find(tag); it != tag_ids_.end()) {
    user.ids_.push_back(it->second);
  }
}

void Snapshot::FinishUserTags(UserTags& user) {
  std::sort(user.ids_.begin(), user.ids_.end());
  user.ids_.erase(std::unique(user.ids_.begin(), user.ids_.end()), user.ids_.end());
  for (uint32_t id : user.ids_) {
    user.bloom_ |= uint64_t{1} << (id % 64);
  }
}

}  // namespace berry::selection
