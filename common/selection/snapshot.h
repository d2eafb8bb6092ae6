// The selection snapshot: a RouteTable compiled once into the shape a pick needs — custom models
// found by name in O(1), each with its backends in one contiguous array, priority tiers sorted,
// tags interned to small ids, and the "nothing is wrong" candidate set (with its cumulative
// weights) precomputed so that the common pick does no scan at all.
//
// A Snapshot is immutable after Create(); any thread may read it. Per-backend state that changes
// while the snapshot is in force (ejection, in-flight count, latency) lives in RuntimeState
// (runtime_state.h); the per-worker pick itself is Picker (picker.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "berry/v1/route_table.pb.h"

namespace berry::selection {

class Snapshot;

// Why a backend is not a candidate for a pick; the first reason that applies wins. The first
// three come from the table, the last four from the request.
enum class Exclusion : uint8_t {
  kNone,
  kBackendDisabled,
  kProviderDisabled,
  kDraining,
  kTagMismatch,
  kAlreadyTried,
  kRetryBudgetSpent,  // a retry, and the provider's max_retries for this request are used up
  kDialect,           // the request needs OpenAI's API and the provider speaks another
};
inline constexpr size_t kExclusionCount = 8;

// A user's tags, interned against one Snapshot (Snapshot::InternUserTags). Build it once per
// client key per snapshot, not per request. A default-constructed UserTags is untagged and
// reaches every backend of any snapshot.
class UserTags {
 public:
  UserTags() = default;

  // True when the user has at least one tag, even one no backend carries: such a user reaches
  // only untagged backends.
  bool tagged() const { return tagged_; }
  // The tag ids are only meaningful to the snapshot that interned them.
  bool InternedBy(const Snapshot& snapshot) const { return snapshot_ == &snapshot; }

 private:
  friend class Snapshot;

  const Snapshot* snapshot_ = nullptr;  // the snapshot the ids below belong to
  bool tagged_ = false;
  uint64_t bloom_ = 0;         // bit (id % 64) for every id
  std::vector<uint32_t> ids_;  // sorted ids of the user's tags that some backend carries
};

// One backend of a custom model, as compiled. Backends of one model are contiguous in
// Snapshot::backends(), in config order.
class CompiledBackend {
 public:
  // 0..N-1 over the whole snapshot: the key for RuntimeState::backend().
  uint32_t index() const { return index_; }
  // Position within the model's backends (config order).
  uint32_t local_index() const { return local_index_; }
  const std::string& id() const { return config_->id(); }
  // The backend and provider as the table gives them (upstream model name, base URL, key...).
  const berry::v1::Backend& config() const { return *config_; }
  const berry::v1::Provider& provider() const { return *provider_; }
  double weight() const { return config_->weight(); }
  // weight x fleet health factor; equals weight when the table leaves it unset (0).
  double effective_weight() const { return effective_weight_; }
  uint32_t priority() const { return config_->priority(); }
  // The table's own reason this backend takes no traffic: kNone, kBackendDisabled,
  // kProviderDisabled or kDraining (never tags or retries, which depend on the request).
  Exclusion exclusion() const { return exclusion_; }
  // Backend enabled and its provider enabled.
  bool enabled() const {
    return exclusion_ != Exclusion::kBackendDisabled && exclusion_ != Exclusion::kProviderDisabled;
  }
  // HEALTH_STATUS_UNSPECIFIED and values this build does not know read as UNKNOWN.
  berry::v1::HealthStatus health() const { return health_; }
  // The provider speaks OpenAI's API (backend_type "openai" or unset), so it serves every
  // relayed endpoint; other dialects serve chat completions only.
  bool openai_dialect() const { return openai_dialect_; }
  // The backend or its provider has a budget (Backend.budget, Provider.budget).
  bool has_budget() const { return has_budget_; }

 private:
  friend class Snapshot;
  friend class CompiledModel;
  friend class Picker;

  const berry::v1::Backend* config_ = nullptr;
  const berry::v1::Provider* provider_ = nullptr;
  uint32_t index_ = 0;
  uint32_t local_index_ = 0;
  double effective_weight_ = 0;
  double pick_weight_ = 0;  // weight or effective_weight, whichever the model's strategy uses
  berry::v1::HealthStatus health_ = berry::v1::HEALTH_STATUS_UNKNOWN;
  Exclusion exclusion_ = Exclusion::kNone;
  bool openai_dialect_ = true;
  bool has_budget_ = false;
  uint64_t tag_bloom_ = 0;          // bit (id % 64) for every tag id
  std::span<const uint32_t> tags_;  // sorted, distinct tag ids
};

// A custom model as compiled: its strategy reduced to a pick rule and its backends.
class CompiledModel {
 public:
  // Position in Snapshot::models().
  uint32_t index() const { return index_; }
  // What clients send in the request's `model` field.
  const std::string& name() const { return config_->name(); }
  const std::string& id() const { return config_->id(); }
  // As configured, except that STRATEGY_UNSPECIFIED reads as STRATEGY_WEIGHTED_RANDOM.
  berry::v1::Strategy strategy() const { return strategy_; }
  bool enabled() const { return config_->enabled(); }
  const berry::v1::CustomModel& config() const { return *config_; }
  // A backend of it, or that backend's provider, has a budget; ... a token budget (tokens_per_*).
  bool has_budgets() const { return has_budgets_; }
  bool has_token_budgets() const { return has_token_budgets_; }
  // In config order; backends()[i].local_index() == i.
  std::span<const CompiledBackend> backends() const { return backends_; }

 private:
  friend class Snapshot;
  friend class Picker;

  // What the strategies reduce to. weighted_random is a weighted draw over one tier,
  // weighted_failover and the smart ones a weighted draw over the lowest usable tier.
  enum class Rule : uint8_t {
    kWeighted,
    kSmoothRoundRobin,
    kUniform,
    kLeastLatency,
    kLeastRequests,
    kFirst,  // failover: members are tier-sorted, so the first one wins
  };

  // The backends one pick draws from, in the model's iteration order.
  struct View {
    std::span<const uint32_t> members;   // local indices
    std::span<const double> cumulative;  // running sum of pick weights (kWeighted only)
    size_t tier_size = 0;  // leading members in the lowest priority tier (all when untiered)
    bool panic = false;
  };

  // Describes `members` as a View, writing cumulative weights into `scratch` (at least
  // members.size() long) when the rule draws by weight.
  View MakeView(std::span<const uint32_t> members, std::span<double> scratch) const;

  const berry::v1::CustomModel* config_ = nullptr;
  uint32_t index_ = 0;
  berry::v1::Strategy strategy_ = berry::v1::STRATEGY_WEIGHTED_RANDOM;
  Rule rule_ = Rule::kWeighted;
  bool tiered_ = false;  // iteration order is (priority, -weight, config order)
  bool has_tagged_backends_ = false;
  bool has_other_dialects_ = false;  // a backend's provider does not speak OpenAI's API
  bool has_budgets_ = false;         // a backend or its provider has a budget
  bool has_token_budgets_ = false;   // ... a token budget
  uint32_t round_robin_base_ = 0;    // first slot of this model in a Picker's round robin state
  std::span<const CompiledBackend> backends_;
  std::span<const uint32_t> order_;  // local indices in iteration order
  // The view when every enabled, non-draining, healthy backend is usable and the request has
  // no tag restriction and no retries; valid only if it would not be a panic.
  bool fast_view_valid_ = false;
  View fast_view_;
};

class Snapshot {
 public:
  // Compiles `table`. Fails with InvalidArgument naming the model/backend for a table it cannot
  // serve from: duplicate or empty ids and names, a backend naming an unknown provider, a weight
  // that is not a positive finite number, an unknown strategy, a panic threshold above 100.
  static absl::StatusOr<std::shared_ptr<const Snapshot>> Create(berry::v1::RouteTable table);

  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  // The enabled model clients call `name`; NotFound otherwise (unknown and disabled models look
  // the same to a client). No allocation on success.
  absl::StatusOr<const CompiledModel*> FindModel(std::string_view name) const;

  // Every model, enabled or not, in table order.
  std::span<const CompiledModel> models() const { return models_; }
  // Every backend; backends()[i].index() == i.
  std::span<const CompiledBackend> backends() const { return backends_; }
  const berry::v1::RouteTable& table() const { return table_; }
  uint32_t panic_threshold_percent() const { return table_.settings().panic_threshold_percent(); }
  // Largest backend count of any model: what a Picker preallocates.
  size_t max_backends_per_model() const { return max_backends_per_model_; }
  // Slots a Picker keeps for smooth round robin (one per backend of a round_robin model).
  size_t round_robin_slots() const { return round_robin_slots_; }

  // Interns a user's tags (any range of string-like values, e.g. ClientKey::tags()).
  template <typename Range>
  UserTags InternUserTags(const Range& tags) const {
    UserTags user;
    user.snapshot_ = this;
    for (const auto& tag : tags) {
      AddUserTag(user, tag);
    }
    FinishUserTags(user);
    return user;
  }

  // The panic rule: a pick ignores ejection and health when fewer than panic_threshold_percent
  // of the candidates (backends the request may use at all) are usable.
  bool Panics(size_t usable, size_t candidates) const {
    return uint64_t{usable} * 100 < uint64_t{panic_threshold_percent()} * candidates;
  }

  // True if `model` is one of this snapshot's models.
  bool Owns(const CompiledModel& model) const {
    return model.index_ < models_.size() && &models_[model.index_] == &model;
  }
  // The tag rule: an untagged user reaches every backend; a tagged user reaches untagged
  // backends and backends sharing at least one tag. `user` must come from this snapshot.
  bool TagsAllow(const CompiledBackend& backend, const UserTags& user) const;

 private:
  Snapshot() = default;

  absl::Status Compile();
  absl::Status ValidateIds() const;
  absl::Status CompileModel(const berry::v1::CustomModel& config, uint32_t index);
  absl::StatusOr<CompiledBackend> CompileBackend(const berry::v1::CustomModel& model,
                                                 const berry::v1::Backend& config);
  void BuildOrderAndFastView(CompiledModel& model);
  void AddUserTag(UserTags& user, std::string_view tag) const;
  static void FinishUserTags(UserTags& user);

  berry::v1::RouteTable table_;
  // Every vector below is reserved to its final size before it is filled, so the spans handed
  // out while compiling stay valid.
  std::vector<CompiledModel> models_;
  std::vector<CompiledBackend> backends_;
  std::vector<uint32_t> tag_pool_;
  std::vector<uint32_t> order_pool_;
  std::vector<uint32_t> fast_member_pool_;
  std::vector<double> fast_cumulative_pool_;
  // Keys point into table_.
  absl::flat_hash_map<std::string_view, uint32_t> model_by_name_;
  absl::flat_hash_map<std::string_view, const berry::v1::Provider*> provider_by_id_;
  absl::flat_hash_map<std::string_view, uint32_t> tag_ids_;
  bool exact_tag_bloom_ = true;  // at most 64 distinct tags: a bloom hit is a real match
  size_t max_backends_per_model_ = 0;
  size_t round_robin_slots_ = 0;
};

}  // namespace berry::selection
