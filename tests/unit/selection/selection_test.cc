// Selection: one behaviour per test. Distribution tests draw 100,000 picks from a seeded
// generator; with that many draws one share's standard deviation is at most 0.16 percentage
// points, so the stated tolerances (one point unless said otherwise) sit at six sigma or more.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/selection/picker.h"
#include "common/selection/runtime_state.h"
#include "common/selection/snapshot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/selection/allocation_counter.h"

namespace berry::selection::selection_test {
namespace {

namespace v1 = berry::v1;
using ::testing::HasSubstr;

constexpr int kDraws = 100000;

// One backend of the model under test; the defaults are the TOML defaults.
struct BackendSpec {
  std::string id;
  double weight = 1;
  uint32_t priority = 1;
  bool enabled = true;
  std::vector<std::string> tags = {};
  v1::HealthStatus health = v1::HEALTH_STATUS_UNKNOWN;
  double effective_weight = 0;  // 0 = the same as weight
  std::string provider = "p";   // "off" is a disabled provider
  uint64_t budget_rpm = 0;      // Backend.budget.requests_per_minute (0 = none)
};

// A table with providers "p" (enabled) and "off" (disabled), both with the TOML default of 3
// for max_retries, the model "m" under test, and a model "other" with one backend "x".
v1::RouteTable Table(v1::Strategy strategy, const std::vector<BackendSpec>& backends,
                     uint32_t panic_threshold_percent = 50) {
  v1::RouteTable table;
  table.mutable_settings()->set_panic_threshold_percent(panic_threshold_percent);
  for (const char* id : {"off", "p"}) {
    v1::Provider* provider = table.add_providers();
    provider->set_id(id);
    provider->set_enabled(std::string_view(id) == "p");
    provider->set_max_retries(3);
  }
  v1::CustomModel* model = table.add_models();
  model->set_id("m");
  model->set_name("m");
  model->set_enabled(true);
  model->set_strategy(strategy);
  for (const BackendSpec& spec : backends) {
    v1::Backend* backend = model->add_backends();
    backend->set_id(spec.id);
    backend->set_provider_id(spec.provider);
    backend->set_upstream_model("upstream-" + spec.id);
    backend->set_weight(spec.weight);
    backend->set_priority(spec.priority);
    backend->set_enabled(spec.enabled);
    for (const std::string& tag : spec.tags) {
      backend->add_tags(tag);
    }
    backend->set_health(spec.health);
    backend->set_effective_weight(spec.effective_weight);
    backend->mutable_budget()->set_requests_per_minute(spec.budget_rpm);
  }
  v1::CustomModel* other = table.add_models();
  other->set_id("other");
  other->set_name("other");
  other->set_enabled(true);
  v1::Backend* x = other->add_backends();
  x->set_id("x");
  x->set_provider_id("p");
  x->set_weight(1);
  x->set_enabled(true);
  return table;
}

template <typename T>
T ValueOrDie(absl::StatusOr<T> value) {
  if (!value.ok()) {
    ADD_FAILURE() << value.status();
    std::abort();
  }
  return *std::move(value);
}

// The model "m" of a table, with the state every worker shares, one worker's picker and a
// seeded generator.
class Harness {
 public:
  explicit Harness(v1::RouteTable table, uint64_t seed = 42)
      : state_(RuntimeState::Create(ValueOrDie(Snapshot::Create(std::move(table))))),
        picker_(state_),
        rng_(seed) {}

  const Snapshot& snapshot() const { return state_->snapshot(); }
  const std::shared_ptr<const RuntimeState>& state() const { return state_; }
  Picker& picker() { return picker_; }
  std::mt19937_64& rng() { return rng_; }
  const CompiledModel& model() const { return *ValueOrDie(snapshot().FindModel("m")); }

  const CompiledBackend& backend(std::string_view id) const {
    for (const CompiledBackend& backend : snapshot().backends()) {
      if (backend.id() == id) {
        return backend;
      }
    }
    ADD_FAILURE() << "no backend " << id;
    std::abort();
  }
  uint32_t index(std::string_view id) const { return backend(id).index(); }
  BackendRuntime& runtime(std::string_view id) const { return state_->backend(backend(id)); }

  absl::StatusOr<PickResult> Pick(const PickRequest& request = {}) {
    return picker_.Pick(model(), request, rng_);
  }
  std::string PickId(const PickRequest& request = {}) {
    absl::StatusOr<PickResult> pick = Pick(request);
    if (!pick.ok()) {
      ADD_FAILURE() << pick.status();
      return "";
    }
    return pick->backend->id();
  }
  // The ids of `n` picks, concatenated (tests use one-letter ids).
  std::string Sequence(int n, const PickRequest& request = {}) {
    std::string ids;
    for (int i = 0; i < n; ++i) {
      ids += PickId(request);
    }
    return ids;
  }
  // Share of `n` picks per backend id.
  std::map<std::string, double> Shares(int n = kDraws, const PickRequest& request = {}) {
    std::map<std::string, double> shares;
    for (int i = 0; i < n; ++i) {
      shares[PickId(request)] += 1.0 / n;
    }
    return shares;
  }

 private:
  std::shared_ptr<const RuntimeState> state_;
  Picker picker_;
  std::mt19937_64 rng_;
};

// --- weighted_random -----------------------------------------------------------------------

TEST(WeightedRandom, SplitsThreeToOneWithinOnePercent) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a", .weight = 3}, {.id = "b"}}));
  std::map<std::string, double> shares = h.Shares();
  EXPECT_NEAR(shares["a"], 0.75, 0.01);
  EXPECT_NEAR(shares["b"], 0.25, 0.01);
}

TEST(WeightedRandom, IsWhatAnUnspecifiedStrategyMeans) {
  Harness h(Table(v1::STRATEGY_UNSPECIFIED, {{.id = "a", .weight = 3}, {.id = "b"}}));
  EXPECT_EQ(h.model().strategy(), v1::STRATEGY_WEIGHTED_RANDOM);
  EXPECT_NEAR(h.Shares()["a"], 0.75, 0.01);
}

TEST(WeightedRandom, DrawsByEffectiveWeight) {
  // a is configured three times heavier, but its health factor of 1/3 evens it out.
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM,
                  {{.id = "a", .weight = 3, .effective_weight = 1}, {.id = "b"}}));
  EXPECT_NEAR(h.Shares()["a"], 0.5, 0.01);
}

// --- round_robin ---------------------------------------------------------------------------

TEST(RoundRobin, RepeatsNginxSmoothSequenceForWeightsFiveOneOne) {
  Harness h(Table(v1::STRATEGY_ROUND_ROBIN, {{.id = "a", .weight = 5}, {.id = "b"}, {.id = "c"}}));
  EXPECT_EQ(h.Sequence(21),
            "aabacaa"
            "aabacaa"
            "aabacaa");
}

TEST(RoundRobin, KeepsOneSequencePerPicker) {
  Harness h(Table(v1::STRATEGY_ROUND_ROBIN, {{.id = "a", .weight = 5}, {.id = "b"}, {.id = "c"}}));
  Picker second_worker(h.state());
  std::string first;
  std::string second;
  for (int i = 0; i < 7; ++i) {
    first += h.PickId();
    second += ValueOrDie(second_worker.Pick(h.model(), {}, h.rng())).backend->id();
  }
  EXPECT_EQ(first, "aabacaa");
  EXPECT_EQ(second, "aabacaa");
}

TEST(RoundRobin, SkipsAnEjectedBackend) {
  Harness h(Table(v1::STRATEGY_ROUND_ROBIN, {{.id = "a"}, {.id = "b"}, {.id = "c"}}));
  h.runtime("b").EjectUntil(1000);
  EXPECT_EQ(h.Sequence(6, {.now_ns = 1}), "acacac");
}

TEST(RoundRobin, StartsOverWhenThePickerIsReset) {
  Harness h(Table(v1::STRATEGY_ROUND_ROBIN, {{.id = "a", .weight = 5}, {.id = "b"}, {.id = "c"}}));
  EXPECT_EQ(h.Sequence(3), "aab");
  h.picker().Reset(h.state());
  EXPECT_EQ(h.Sequence(7), "aabacaa");
}

// --- random --------------------------------------------------------------------------------

TEST(Random, IgnoresWeightsAndSplitsEvenlyWithinOnePercent) {
  Harness h(Table(v1::STRATEGY_RANDOM, {{.id = "a", .weight = 9}, {.id = "b"}}));
  EXPECT_NEAR(h.Shares()["a"], 0.5, 0.01);
}

// --- failover ------------------------------------------------------------------------------

TEST(Failover, PicksHeaviestBackendOfLowestPriorityTierWithConfigOrderOnTies) {
  Harness h(Table(v1::STRATEGY_FAILOVER, {{.id = "a", .weight = 9, .priority = 2},
                                          {.id = "b", .weight = 1, .priority = 1},
                                          {.id = "c", .weight = 3, .priority = 1},
                                          {.id = "d", .weight = 3, .priority = 1}}));
  EXPECT_EQ(h.Sequence(5), "ccccc");
}

TEST(Failover, FallsThroughTiersInPriorityOrderAsTiersAreEjected) {
  Harness h(
      Table(v1::STRATEGY_FAILOVER,
            {{.id = "c", .priority = 3}, {.id = "a", .priority = 1}, {.id = "b", .priority = 2}},
            /*panic_threshold_percent=*/0));
  const PickRequest now{.now_ns = 10};
  EXPECT_EQ(h.PickId(now), "a");
  h.runtime("a").EjectUntil(100);
  EXPECT_EQ(h.PickId(now), "b");
  h.runtime("b").EjectUntil(100);
  EXPECT_EQ(h.PickId(now), "c");
}

TEST(Failover, ReturnsToTheFirstTierWhenItsEjectionEnds) {
  Harness h(Table(v1::STRATEGY_FAILOVER, {{.id = "a", .priority = 1}, {.id = "b", .priority = 2}}));
  h.runtime("a").EjectUntil(1000);
  EXPECT_EQ(h.PickId({.now_ns = 999}), "b");
  EXPECT_EQ(h.PickId({.now_ns = 1000}), "a");
}

// --- weighted_failover and the smart strategies --------------------------------------------

TEST(WeightedFailover, SplitsByWeightInsideTheLowestTierOnly) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_FAILOVER, {{.id = "a", .weight = 3, .priority = 1},
                                                   {.id = "b", .weight = 1, .priority = 1},
                                                   {.id = "c", .weight = 100, .priority = 2}}));
  std::map<std::string, double> shares = h.Shares();
  EXPECT_NEAR(shares["a"], 0.75, 0.01);
  EXPECT_EQ(shares.count("c"), 0u);
}

TEST(WeightedFailover, MovesToTheNextTierWhenTheLowestIsEjected) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_FAILOVER, {{.id = "a", .priority = 1},
                                                   {.id = "b", .weight = 3, .priority = 2},
                                                   {.id = "c", .weight = 1, .priority = 2}}));
  h.runtime("a").EjectUntil(1000);
  std::map<std::string, double> shares = h.Shares(kDraws, {.now_ns = 1});
  EXPECT_EQ(shares.count("a"), 0u);
  EXPECT_NEAR(shares["b"], 0.75, 0.01);
}

TEST(SmartWeightedFailover, DrawsByEffectiveWeightInsideTheLowestTier) {
  Harness h(Table(v1::STRATEGY_SMART_WEIGHTED_FAILOVER,
                  {{.id = "a", .weight = 1, .priority = 1, .effective_weight = 0.25},
                   {.id = "b", .weight = 1, .priority = 1, .effective_weight = 0.75},
                   {.id = "c", .weight = 50, .priority = 2}}));
  std::map<std::string, double> shares = h.Shares();
  EXPECT_NEAR(shares["b"], 0.75, 0.01);
  EXPECT_EQ(shares.count("c"), 0u);
}

TEST(SmartAi, PicksLikeSmartWeightedFailoverAndKeepsItsName) {
  Harness h(Table(v1::STRATEGY_SMART_AI,
                  {{.id = "a", .weight = 1, .priority = 1, .effective_weight = 0.25},
                   {.id = "b", .weight = 1, .priority = 1, .effective_weight = 0.75},
                   {.id = "c", .weight = 50, .priority = 2}}));
  EXPECT_EQ(h.model().strategy(), v1::STRATEGY_SMART_AI);
  std::map<std::string, double> shares = h.Shares();
  EXPECT_NEAR(shares["b"], 0.75, 0.01);
  EXPECT_EQ(shares.count("c"), 0u);
}

// --- least_latency -------------------------------------------------------------------------

TEST(LeastLatency, TriesBackendsWithoutASampleFirst) {
  Harness h(Table(v1::STRATEGY_LEAST_LATENCY, {{.id = "a"}, {.id = "b"}, {.id = "c"}}));
  h.runtime("a").RecordTtfb(0.01);
  std::map<std::string, double> shares = h.Shares();
  EXPECT_EQ(shares.count("a"), 0u);
  EXPECT_NEAR(shares["b"], 0.5, 0.01);  // spread over the unsampled, not piled onto one
}

TEST(LeastLatency, PicksLowestEwmaAndExploresTheOthersAtTheDocumentedShare) {
  Harness h(Table(v1::STRATEGY_LEAST_LATENCY, {{.id = "a"}, {.id = "b"}, {.id = "c"}}));
  h.runtime("a").RecordTtfb(0.3);
  h.runtime("b").RecordTtfb(0.1);
  h.runtime("c").RecordTtfb(0.2);
  std::map<std::string, double> shares = h.Shares();
  const double explore = kLeastLatencyExploreProbability;
  EXPECT_NEAR(shares["b"], 1 - explore, 0.005);
  EXPECT_NEAR(shares["a"], explore / 2, 0.005);
  EXPECT_NEAR(shares["c"], explore / 2, 0.005);
}

TEST(LeastLatency, EwmaTakesTheFirstSampleThenMovesByAlpha) {
  Harness h(Table(v1::STRATEGY_LEAST_LATENCY, {{.id = "a"}}));
  BackendRuntime& a = h.runtime("a");
  EXPECT_LT(a.ttfb_ewma_seconds(), 0);
  a.RecordTtfb(1.0);
  EXPECT_DOUBLE_EQ(a.ttfb_ewma_seconds(), 1.0);
  a.RecordTtfb(2.0);
  EXPECT_DOUBLE_EQ(a.ttfb_ewma_seconds(), 1.0 + kTtfbEwmaAlpha * (2.0 - 1.0));
  a.RecordTtfb(-1.0);  // ignored
  EXPECT_DOUBLE_EQ(a.ttfb_ewma_seconds(), 1.0 + kTtfbEwmaAlpha);
}

// --- least_requests ------------------------------------------------------------------------

TEST(LeastRequests, NeverPicksTheMostLoadedOfThreeAndFavoursTheLeastLoaded) {
  Harness h(Table(v1::STRATEGY_LEAST_REQUESTS, {{.id = "a"}, {.id = "b"}, {.id = "c"}}));
  for (int i = 0; i < 5; ++i) {
    h.runtime("b").BeginRequest();
    h.runtime("c").BeginRequest();
    h.runtime("c").BeginRequest();
  }
  // Two distinct draws out of three: a wins both pairs it is in, b only the pair (b, c).
  std::map<std::string, double> shares = h.Shares();
  EXPECT_NEAR(shares["a"], 2.0 / 3, 0.01);
  EXPECT_NEAR(shares["b"], 1.0 / 3, 0.01);
  EXPECT_EQ(shares.count("c"), 0u);
}

TEST(LeastRequests, ScalesInFlightByWeight) {
  // a: 4 in flight / weight 4 = 1; b: 2 in flight / weight 1 = 2.
  Harness h(Table(v1::STRATEGY_LEAST_REQUESTS, {{.id = "a", .weight = 4}, {.id = "b"}}));
  for (int i = 0; i < 4; ++i) {
    h.runtime("a").BeginRequest();
  }
  h.runtime("b").BeginRequest();
  h.runtime("b").BeginRequest();
  EXPECT_EQ(h.Sequence(20), std::string(20, 'a'));
}

TEST(LeastRequests, BreaksTiesTowardTheHigherWeight) {
  Harness h(Table(v1::STRATEGY_LEAST_REQUESTS, {{.id = "a"}, {.id = "b", .weight = 2}}));
  EXPECT_EQ(h.Sequence(20), std::string(20, 'b'));
}

TEST(LeastRequests, SeesRequestsEndingAgain) {
  Harness h(Table(v1::STRATEGY_LEAST_REQUESTS, {{.id = "a", .weight = 2}, {.id = "b"}}));
  h.runtime("a").BeginRequest();
  EXPECT_EQ(h.PickId(), "b");
  h.runtime("a").EndRequest();
  EXPECT_EQ(h.PickId(), "a");
}

// --- panic ---------------------------------------------------------------------------------

TEST(Panic, BelowThresholdDrawsFromEveryCandidateAndIsFlagged) {
  Harness h(
      Table(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a"}, {.id = "b"}, {.id = "c"}, {.id = "d"}}));
  h.runtime("a").EjectUntil(1000);
  h.runtime("b").EjectUntil(1000);
  h.runtime("c").EjectUntil(1000);  // 1 of 4 usable = 25% < 50%
  std::map<std::string, int> picks;
  bool always_panic = true;
  for (int i = 0; i < kDraws; ++i) {
    PickResult pick = ValueOrDie(h.Pick({.now_ns = 1}));
    always_panic = always_panic && pick.panic;
    ++picks[pick.backend->id()];
  }
  EXPECT_TRUE(always_panic);
  for (const char* id : {"a", "b", "c", "d"}) {
    EXPECT_NEAR(picks[id] / double{kDraws}, 0.25, 0.01) << id;
  }
}

TEST(Panic, AtTheThresholdEjectedBackendsAreSkippedWithoutPanic) {
  Harness h(
      Table(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a"}, {.id = "b"}, {.id = "c"}, {.id = "d"}}));
  h.runtime("a").EjectUntil(1000);
  h.runtime("b").EjectUntil(1000);  // 2 of 4 usable = 50%: not below
  for (int i = 0; i < 1000; ++i) {
    PickResult pick = ValueOrDie(h.Pick({.now_ns = 1}));
    ASSERT_FALSE(pick.panic);
    ASSERT_THAT(pick.backend->id(), ::testing::AnyOf("c", "d"));
  }
}

TEST(Panic, UnhealthyBackendIsSkippedLikeAnEjectedOne) {
  Harness h(Table(v1::STRATEGY_ROUND_ROBIN,
                  {{.id = "a", .health = v1::HEALTH_STATUS_UNHEALTHY}, {.id = "b"}}));
  EXPECT_EQ(h.Sequence(4), "bbbb");
  EXPECT_FALSE(ValueOrDie(h.Pick()).panic);
}

TEST(Panic, NeverReachesADrainingBackend) {
  Harness h(Table(v1::STRATEGY_FAILOVER,
                  {{.id = "a", .priority = 1, .health = v1::HEALTH_STATUS_DRAINING},
                   {.id = "b", .priority = 2}}));
  h.runtime("b").EjectUntil(1000);  // the only candidate, unusable: panic
  PickResult pick = ValueOrDie(h.Pick({.now_ns = 1}));
  EXPECT_EQ(pick.backend->id(), "b");
  EXPECT_TRUE(pick.panic);
}

TEST(Panic, ZeroThresholdWithEveryBackendEjectedIsUnavailable) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a"}, {.id = "b"}},
                  /*panic_threshold_percent=*/0));
  h.runtime("a").EjectUntil(1000);
  h.runtime("b").EjectUntil(1000);
  absl::StatusOr<PickResult> pick = h.Pick({.now_ns = 1});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pick.status().message(),
              HasSubstr("no backend is available for model \"m\": every backend is ejected or "
                        "unhealthy"));
}

// --- upstream 429 cooldowns ---------------------------------------------------------------

TEST(Cooldown, CoolingBackendIsSkippedUntilItsTimeAndNotEvenAPanicReachesIt) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a"}, {.id = "b"}}));
  EXPECT_TRUE(h.runtime("a").CoolDownUntil(1000));
  EXPECT_FALSE(h.runtime("a").CoolDownUntil(500)) << "a cooldown only moves forward";
  for (int i = 0; i < 200; ++i) {
    PickResult pick = ValueOrDie(h.Pick({.now_ns = 1}));
    ASSERT_EQ(pick.backend->id(), "b");
    ASSERT_FALSE(pick.panic);
  }
  // b ejected too: a panic would draw from every candidate, but a cooling backend is none.
  h.runtime("b").EjectUntil(1000);
  PickResult pick = ValueOrDie(h.Pick({.now_ns = 1}));
  EXPECT_EQ(pick.backend->id(), "b");
  EXPECT_TRUE(pick.panic);
  // At its time, a is back.
  std::map<std::string, double> shares = h.Shares(1000, {.now_ns = 1000});
  EXPECT_GT(shares["a"], 0.3);
}

TEST(Cooldown, EveryBackendCoolingDownIsUnavailableAndSaysSo) {
  Harness h(Table(v1::STRATEGY_FAILOVER, {{.id = "a"}, {.id = "b"}}));
  h.runtime("a").CoolDownUntil(1000);
  h.runtime("b").CoolDownUntil(2000);
  absl::StatusOr<PickResult> pick = h.Pick({.now_ns = 1});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pick.status().message(),
              HasSubstr("every backend is cooling down after an upstream 429"));
  EXPECT_EQ(ValueOrDie(h.Pick({.now_ns = 1500})).backend->id(), "a");
}

// --- budgets -------------------------------------------------------------------------------

// Says "spent" for the backend ids in `spent` (credit pending for those in `pending`), and
// counts what it was asked.
class FakeBudgets : public BudgetGate {
 public:
  bool Spent(const CompiledBackend& backend, int64_t /*now_ns*/) const override {
    ++asked;
    return spent.contains(backend.id());
  }
  bool CreditPending(const CompiledBackend& backend, int64_t /*now_ns*/) const override {
    return pending.contains(backend.id());
  }
  std::set<std::string> spent;
  std::set<std::string> pending;
  mutable int asked = 0;
};

TEST(Budgets, ASpentBackendIsNoCandidateAndOnlyBudgetedOnesAreAsked) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM,
                  {{.id = "a", .budget_rpm = 10}, {.id = "b"}, {.id = "c", .budget_rpm = 10}}));
  EXPECT_TRUE(h.backend("a").has_budget());
  EXPECT_FALSE(h.backend("b").has_budget());
  FakeBudgets budgets;
  budgets.spent = {"a"};
  const std::map<std::string, double> shares = h.Shares(1000, {.budgets = &budgets});
  EXPECT_EQ(shares.count("a"), 0u);
  EXPECT_GT(shares.at("b"), 0.4);
  EXPECT_GT(shares.at("c"), 0.4);
  EXPECT_EQ(budgets.asked, 2000) << "one question per budgeted backend per pick";
  // With every budgeted backend spent and b ejected, the panic still never reaches a or c.
  budgets.spent = {"a", "c"};
  h.runtime("b").EjectUntil(1000);
  PickResult pick = ValueOrDie(h.Pick({.now_ns = 1, .budgets = &budgets}));
  EXPECT_EQ(pick.backend->id(), "b");
  EXPECT_TRUE(pick.panic);
}

TEST(Budgets, EveryBackendSpentIsUnavailableAndSaysSo) {
  Harness h(
      Table(v1::STRATEGY_FAILOVER, {{.id = "a", .budget_rpm = 1}, {.id = "b", .budget_rpm = 1}}));
  FakeBudgets budgets;
  budgets.spent = {"a", "b"};
  absl::StatusOr<PickResult> pick = h.Pick({.budgets = &budgets});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pick.status().message(), HasSubstr("budget"));
  EXPECT_FALSE(h.picker().budget_credit_pending()) << "nothing said more credit may come";
  // Credit pending on a spent backend: the failed pick says so, for the request to wait on.
  budgets.pending = {"b"};
  EXPECT_FALSE(h.Pick({.budgets = &budgets}).ok());
  EXPECT_TRUE(h.picker().budget_credit_pending());
  // ... but not when that backend is no candidate for another reason (already tried).
  const std::vector<uint32_t> tried = {h.backend("b").index()};
  EXPECT_FALSE(h.Pick({.tried = tried, .budgets = &budgets}).ok());
  EXPECT_FALSE(h.picker().budget_credit_pending());
  // Without the gate (nothing to respect) the budgets do not exist for the picker.
  EXPECT_EQ(ValueOrDie(h.Pick()).backend->id(), "a");
  EXPECT_FALSE(h.picker().budget_credit_pending());
}

// --- tags ----------------------------------------------------------------------------------

TEST(Tags, UntaggedUserReachesEveryBackend) {
  Harness h(Table(v1::STRATEGY_RANDOM, {{.id = "a", .tags = {"premium"}}, {.id = "b"}}));
  const UserTags untagged = h.snapshot().InternUserTags(std::vector<std::string>{});
  EXPECT_FALSE(untagged.tagged());
  EXPECT_NEAR(h.Shares(kDraws, {.user_tags = &untagged})["a"], 0.5, 0.01);
  EXPECT_NEAR(h.Shares(kDraws, {.user_tags = nullptr})["a"], 0.5, 0.01);
}

TEST(Tags, TaggedUserReachesOnlyUntaggedAndTagSharingBackends) {
  Harness h(
      Table(v1::STRATEGY_RANDOM,
            {{.id = "a", .tags = {"eu", "premium"}}, {.id = "b", .tags = {"basic"}}, {.id = "c"}}));
  const UserTags premium = h.snapshot().InternUserTags(std::vector<std::string>{"premium"});
  std::map<std::string, double> shares = h.Shares(kDraws, {.user_tags = &premium});
  EXPECT_EQ(shares.count("b"), 0u);
  EXPECT_NEAR(shares["a"], 0.5, 0.01);
  EXPECT_NEAR(shares["c"], 0.5, 0.01);
}

TEST(Tags, UserWhoseTagsNoBackendCarriesReachesOnlyUntaggedBackends) {
  Harness h(Table(v1::STRATEGY_RANDOM, {{.id = "a", .tags = {"premium"}}, {.id = "b"}}));
  const UserTags gold = h.snapshot().InternUserTags(std::vector<std::string>{"gold"});
  EXPECT_TRUE(gold.tagged());
  EXPECT_EQ(h.Sequence(20, {.user_tags = &gold}), std::string(20, 'b'));
}

TEST(Tags, NoBackendMatchingTheUsersTagsIsUnavailable) {
  Harness h(Table(v1::STRATEGY_RANDOM, {{.id = "a", .tags = {"premium"}}}));
  const UserTags basic = h.snapshot().InternUserTags(std::vector<std::string>{"basic"});
  absl::StatusOr<PickResult> pick = h.Pick({.user_tags = &basic});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pick.status().message(), HasSubstr("no backend matches the user's tags"));
}

TEST(Tags, MatchIsExactWithMoreThanSixtyFourDistinctTags) {
  // Tag ids 3 and 67 share a bloom bit; only a real match may pass.
  std::vector<BackendSpec> backends;
  backends.reserve(70);
  for (int i = 0; i < 70; ++i) {
    backends.push_back({.id = "b" + std::to_string(i), .tags = {"t" + std::to_string(i)}});
  }
  Harness h(Table(v1::STRATEGY_RANDOM, backends));
  const UserTags user = h.snapshot().InternUserTags(std::vector<std::string>{"t67"});
  std::map<std::string, double> shares = h.Shares(1000, {.user_tags = &user});
  EXPECT_EQ(shares.size(), 1u);
  EXPECT_EQ(shares.count("b67"), 1u);
}

TEST(Tags, UserTagsFromAnotherSnapshotAreRejected) {
  Harness h(Table(v1::STRATEGY_RANDOM, {{.id = "a", .tags = {"premium"}}}));
  Harness other(Table(v1::STRATEGY_RANDOM, {{.id = "a", .tags = {"premium"}}}));
  const UserTags foreign = other.snapshot().InternUserTags(std::vector<std::string>{"premium"});
  EXPECT_EQ(h.Pick({.user_tags = &foreign}).status().code(), absl::StatusCode::kInvalidArgument);
}

// --- retries -------------------------------------------------------------------------------

TEST(Retries, AlreadyTriedBackendsAreNotPickedAgain) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM,
                  {{.id = "a", .weight = 100}, {.id = "b", .weight = 100}, {.id = "c"}}));
  const std::vector<uint32_t> tried = {h.index("a"), h.index("b")};
  EXPECT_EQ(h.Sequence(20, {.tried = tried}), std::string(20, 'c'));
}

TEST(Retries, EveryBackendTriedIsUnavailable) {
  Harness h(Table(v1::STRATEGY_FAILOVER, {{.id = "a"}, {.id = "b"}}));
  const std::vector<uint32_t> tried = {h.index("b"), h.index("a")};
  absl::StatusOr<PickResult> pick = h.Pick({.tried = tried});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pick.status().message(), HasSubstr("every backend was already tried"));
}

// --- dialects -------------------------------------------------------------------------------

// Table() plus provider "claude" with backend_type `type`.
v1::RouteTable TableWithDialect(v1::Strategy strategy, const std::vector<BackendSpec>& backends,
                                std::string_view type = "anthropic") {
  v1::RouteTable table = Table(strategy, backends);
  v1::Provider* provider = table.add_providers();
  provider->set_id("claude");
  provider->set_enabled(true);
  provider->set_max_retries(3);
  provider->set_backend_type(std::string(type));
  return table;
}

TEST(Dialect, OpenAiOnlyRequestsSkipOtherDialectsEvenFirstInLine) {
  for (const std::string_view type : {"anthropic", "claude", "gemini"}) {
    Harness h(TableWithDialect(
        v1::STRATEGY_FAILOVER,
        {{.id = "a", .priority = 1, .provider = "claude"}, {.id = "b", .priority = 2}}, type));
    EXPECT_EQ(h.PickId(), "a") << "chat completions may go anywhere";
    EXPECT_EQ(h.Sequence(20, {.openai_only = true}), std::string(20, 'b')) << type;
    EXPECT_FALSE(h.backend("a").openai_dialect());
    EXPECT_TRUE(h.backend("b").openai_dialect());
  }
}

TEST(Dialect, OnlyOtherDialectsIsUnavailableForOpenAiOnlyRequestsAndSaysWhy) {
  Harness h(TableWithDialect(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a", .provider = "claude"},
                                                            {.id = "b", .provider = "claude"}}));
  absl::StatusOr<PickResult> pick = h.Pick({.openai_only = true});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pick.status().message(),
              HasSubstr("every backend is on a provider whose API has no such endpoint"));
}

// --- per-provider retry budgets -------------------------------------------------------------

// Table() plus providers "q" and "r" with max_retries `q_budget` and `r_budget` ("p" has 3).
v1::RouteTable TableWithBudgets(v1::Strategy strategy, const std::vector<BackendSpec>& backends,
                                uint32_t q_budget, uint32_t r_budget = 3) {
  v1::RouteTable table = Table(strategy, backends);
  for (const auto& [id, budget] : {std::pair{"q", q_budget}, std::pair{"r", r_budget}}) {
    v1::Provider* provider = table.add_providers();
    provider->set_id(id);
    provider->set_enabled(true);
    provider->set_max_retries(budget);
  }
  return table;
}

TEST(RetryBudget, FirstAttemptMayGoToAProviderWithAZeroBudget) {
  Harness h(TableWithBudgets(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a", .provider = "q"}},
                             /*q_budget=*/0));
  EXPECT_EQ(h.PickId(), "a");
}

TEST(RetryBudget, ZeroBudgetKeepsEveryRetryOffTheProvider) {
  Harness h(
      TableWithBudgets(v1::STRATEGY_WEIGHTED_RANDOM,
                       {{.id = "a"}, {.id = "b", .provider = "q"}, {.id = "c", .provider = "q"}},
                       /*q_budget=*/0));
  const std::vector<uint32_t> tried = {h.index("a")};
  absl::StatusOr<PickResult> pick = h.Pick({.tried = tried});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(pick.status().message(),
            "no backend is available for model \"m\": of its 3 backends, 1 already tried, 2 on a "
            "provider whose retry budget is spent");
}

TEST(RetryBudget, ZeroBudgetAlsoKeepsARetryOffTheProviderTheRequestStartedOn) {
  Harness h(TableWithBudgets(v1::STRATEGY_FAILOVER,
                             {{.id = "a", .provider = "q"}, {.id = "b", .provider = "q"}},
                             /*q_budget=*/0));
  const std::vector<uint32_t> tried = {h.index("a")};
  EXPECT_EQ(h.Pick({.tried = tried}).status().code(), absl::StatusCode::kUnavailable);
}

TEST(RetryBudget, TheFirstAttemptDoesNotSpendTheBudgetOfItsProvider) {
  Harness h(TableWithBudgets(
      v1::STRATEGY_FAILOVER,
      {{.id = "a", .provider = "q"}, {.id = "b", .provider = "q"}, {.id = "c", .provider = "q"}},
      /*q_budget=*/1));
  const std::vector<uint32_t> first_failed = {h.index("a")};
  EXPECT_EQ(h.PickId({.tried = first_failed}), "b") << "one retry onto q is allowed";

  const std::vector<uint32_t> retry_failed = {h.index("a"), h.index("b")};
  absl::StatusOr<PickResult> pick = h.Pick({.tried = retry_failed});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pick.status().message(),
              HasSubstr("2 already tried, 1 on a provider whose retry budget is spent"));
}

TEST(RetryBudget, AProviderTakesAtMostItsBudgetOfARequestsRetries) {
  Harness h(TableWithBudgets(v1::STRATEGY_ROUND_ROBIN,
                             {{.id = "a"},
                              {.id = "b", .provider = "q"},
                              {.id = "c", .provider = "q"},
                              {.id = "d", .provider = "q"},
                              {.id = "e"}},
                             /*q_budget=*/2));
  const std::vector<uint32_t> one_retry_on_q = {h.index("a"), h.index("b")};
  EXPECT_EQ(h.Sequence(30, {.tried = one_retry_on_q}).find_first_not_of("cde"), std::string::npos);
  const std::vector<uint32_t> two_retries_on_q = {h.index("a"), h.index("b"), h.index("c")};
  EXPECT_EQ(h.Sequence(30, {.tried = two_retries_on_q}), std::string(30, 'e'));
}

TEST(RetryBudget, EachProviderHasItsOwnBudget) {
  Harness h(TableWithBudgets(v1::STRATEGY_RANDOM,
                             {{.id = "a"},
                              {.id = "b", .provider = "q"},
                              {.id = "c", .provider = "q"},
                              {.id = "d", .provider = "r"},
                              {.id = "e", .provider = "r"}},
                             /*q_budget=*/1, /*r_budget=*/1));
  const std::vector<uint32_t> tried = {h.index("a"), h.index("b")};
  std::map<std::string, double> shares = h.Shares(1000, {.tried = tried});
  EXPECT_EQ(shares.count("c"), 0u) << "q spent its one retry on b";
  // r's two backends share every pick (uniform: 0.5 each, one sigma 1.6 points).
  EXPECT_NEAR(shares["d"], 0.5, 0.1);
  EXPECT_NEAR(shares["e"], 0.5, 0.1);
}

TEST(RetryBudget, TheDefaultBudgetOfThreeAllowsThreeRetriesOntoOneProvider) {
  Harness h(TableWithBudgets(v1::STRATEGY_FAILOVER,
                             {{.id = "a"}, {.id = "b"}, {.id = "c"}, {.id = "d"}, {.id = "e"}},
                             /*q_budget=*/0));
  const std::vector<uint32_t> two_retries = {h.index("a"), h.index("b"), h.index("c")};
  EXPECT_EQ(h.PickId({.tried = two_retries}), "d");
  const std::vector<uint32_t> three_retries = {h.index("a"), h.index("b"), h.index("c"),
                                               h.index("d")};
  EXPECT_THAT(h.Pick({.tried = three_retries}).status().message(),
              HasSubstr("4 already tried, 1 on a provider whose retry budget is spent"));
}

TEST(RetryBudget, CheckingBudgetsDoesNotAllocate) {
  Harness h(
      TableWithBudgets(v1::STRATEGY_WEIGHTED_FAILOVER,
                       {{.id = "a"}, {.id = "b", .provider = "q"}, {.id = "c", .provider = "r"}},
                       /*q_budget=*/1, /*r_budget=*/0));
  const std::vector<uint32_t> tried = {h.index("a")};
  const uint64_t before = testing::AllocationCount();
  int failures = 0;
  for (int i = 0; i < 1000; ++i) {
    failures += h.Pick({.tried = tried}).ok() ? 0 : 1;
  }
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(testing::AllocationCount() - before, 0u);
}

// --- nothing to pick -----------------------------------------------------------------------

TEST(NoBackend, AllBackendsDisabledIsUnavailableAndSaysSo) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM,
                  {{.id = "a", .enabled = false}, {.id = "b", .enabled = false}}));
  absl::StatusOr<PickResult> pick = h.Pick();
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(pick.status().message(),
            "no backend is available for model \"m\": every backend is disabled");
}

TEST(NoBackend, DisabledProviderIsUnavailableAndSaysSo) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a", .provider = "off"}}));
  EXPECT_FALSE(h.backend("a").enabled());
  EXPECT_THAT(h.Pick().status().message(), HasSubstr("every backend is on a disabled provider"));
}

TEST(NoBackend, AllDrainingIsUnavailableAndSaysSo) {
  Harness h(Table(v1::STRATEGY_ROUND_ROBIN, {{.id = "a", .health = v1::HEALTH_STATUS_DRAINING}}));
  absl::StatusOr<PickResult> pick = h.Pick();
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pick.status().message(), HasSubstr("every backend is draining"));
}

TEST(NoBackend, MixedReasonsAreCountedOneByOne) {
  Harness h(Table(v1::STRATEGY_LEAST_REQUESTS, {{.id = "a", .enabled = false},
                                                {.id = "b", .health = v1::HEALTH_STATUS_DRAINING},
                                                {.id = "c"}}));
  const std::vector<uint32_t> tried = {h.index("c")};
  EXPECT_EQ(h.Pick({.tried = tried}).status().message(),
            "no backend is available for model \"m\": of its 3 backends, 1 disabled, "
            "1 draining, 1 already tried");
}

TEST(NoBackend, ModelWithoutBackendsIsUnavailable) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM, {}));
  EXPECT_THAT(h.Pick().status().message(), HasSubstr("it has no backends"));
}

// --- snapshot ------------------------------------------------------------------------------

TEST(Snapshot, FindsModelsByTheNameClientsSendNotById) {
  v1::RouteTable table = Table(v1::STRATEGY_RANDOM, {{.id = "a"}});
  table.mutable_models(0)->set_id("gpt_4o");
  table.mutable_models(0)->set_name("gpt-4o");
  std::shared_ptr<const Snapshot> snapshot = ValueOrDie(Snapshot::Create(table));
  EXPECT_TRUE(snapshot->FindModel("gpt-4o").ok());
  EXPECT_EQ(snapshot->FindModel("gpt_4o").status().code(), absl::StatusCode::kNotFound);
}

TEST(Snapshot, UnknownModelIsNotFound) {
  std::shared_ptr<const Snapshot> snapshot =
      ValueOrDie(Snapshot::Create(Table(v1::STRATEGY_RANDOM, {{.id = "a"}})));
  absl::StatusOr<const CompiledModel*> model = snapshot->FindModel("gpt-5");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(model.status().message(), "model \"gpt-5\" does not exist");
}

TEST(Snapshot, DisabledModelIsNotFound) {
  v1::RouteTable table = Table(v1::STRATEGY_RANDOM, {{.id = "a"}});
  table.mutable_models(0)->set_enabled(false);
  std::shared_ptr<const Snapshot> snapshot = ValueOrDie(Snapshot::Create(table));
  EXPECT_EQ(snapshot->FindModel("m").status().code(), absl::StatusCode::kNotFound);
}

TEST(Snapshot, NumbersBackendsContiguouslyPerModel) {
  std::shared_ptr<const Snapshot> snapshot = ValueOrDie(
      Snapshot::Create(Table(v1::STRATEGY_RANDOM, {{.id = "a"}, {.id = "b"}, {.id = "c"}})));
  ASSERT_EQ(snapshot->backends().size(), 4u);
  for (uint32_t i = 0; i < snapshot->backends().size(); ++i) {
    EXPECT_EQ(snapshot->backends()[i].index(), i);
  }
  const CompiledModel& m = *ValueOrDie(snapshot->FindModel("m"));
  EXPECT_EQ(m.backends()[2].id(), "c");
  EXPECT_EQ(m.backends()[2].local_index(), 2u);
  EXPECT_EQ(m.backends()[2].config().upstream_model(), "upstream-c");
  EXPECT_EQ(snapshot->max_backends_per_model(), 3u);
}

absl::Status CreateStatus(const v1::RouteTable& table) { return Snapshot::Create(table).status(); }

TEST(Snapshot, RejectsBackendNamingAnUnknownProvider) {
  const absl::Status status =
      CreateStatus(Table(v1::STRATEGY_RANDOM, {{.id = "a", .provider = "nope"}}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "model \"m\", backend \"a\": unknown provider \"nope\"");
}

TEST(Snapshot, RejectsNonPositiveWeight) {
  EXPECT_THAT(CreateStatus(Table(v1::STRATEGY_RANDOM, {{.id = "a", .weight = 0}})).message(),
              HasSubstr("weight must be a positive finite number"));
  EXPECT_FALSE(CreateStatus(Table(v1::STRATEGY_RANDOM, {{.id = "a", .weight = -1}})).ok());
}

TEST(Snapshot, RejectsNegativeEffectiveWeight) {
  EXPECT_THAT(
      CreateStatus(Table(v1::STRATEGY_RANDOM, {{.id = "a", .effective_weight = -1}})).message(),
      HasSubstr("effective_weight"));
}

TEST(Snapshot, RejectsTwoModelsWithOneName) {
  v1::RouteTable table = Table(v1::STRATEGY_RANDOM, {{.id = "a"}});
  table.mutable_models(1)->set_name("m");
  EXPECT_THAT(CreateStatus(table).message(), HasSubstr("model name \"m\" is used by two models"));
}

TEST(Snapshot, RejectsDuplicateBackendIds) {
  EXPECT_THAT(CreateStatus(Table(v1::STRATEGY_RANDOM, {{.id = "a"}, {.id = "a"}})).message(),
              HasSubstr("backend id \"a\" appears twice"));
}

TEST(Snapshot, RejectsUnknownStrategy) {
  EXPECT_THAT(CreateStatus(Table(static_cast<v1::Strategy>(42), {{.id = "a"}})).message(),
              HasSubstr("unknown strategy 42"));
}

TEST(Snapshot, RejectsPanicThresholdAboveOneHundred) {
  EXPECT_THAT(CreateStatus(Table(v1::STRATEGY_RANDOM, {{.id = "a"}}, 101)).message(),
              HasSubstr("panic_threshold_percent"));
}

// --- runtime state and picker plumbing -----------------------------------------------------

TEST(RuntimeState, FollowsBackendsByIdIntoTheNextSnapshot) {
  Harness h(Table(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "a"}, {.id = "b"}}));
  h.runtime("a").EjectUntil(500);
  h.runtime("b").RecordTtfb(0.25);
  h.runtime("b").BeginRequest();

  std::shared_ptr<const Snapshot> next = ValueOrDie(Snapshot::Create(
      Table(v1::STRATEGY_WEIGHTED_RANDOM, {{.id = "new"}, {.id = "b", .weight = 7}, {.id = "a"}})));
  std::shared_ptr<const RuntimeState> state = RuntimeState::Create(next, h.state().get());
  const auto runtime = [&](std::string_view id) -> BackendRuntime& {
    for (const CompiledBackend& backend : next->backends()) {
      if (backend.id() == id) {
        return state->backend(backend);
      }
    }
    std::abort();
  };
  EXPECT_EQ(runtime("a").ejected_until_ns(), 500);
  EXPECT_DOUBLE_EQ(runtime("b").ttfb_ewma_seconds(), 0.25);
  EXPECT_EQ(runtime("b").in_flight(), 1u);
  h.runtime("b").EndRequest();  // a request that started under the old table ends
  EXPECT_EQ(runtime("b").in_flight(), 0u);
  EXPECT_EQ(runtime("new").ejected_until_ns(), 0);
  EXPECT_LT(runtime("new").ttfb_ewma_seconds(), 0);
}

TEST(RuntimeState, AnEjectionAfterTheSwitchIsSeenByTheNewSnapshotsPicks) {
  Harness h(Table(v1::STRATEGY_FAILOVER, {{.id = "a", .priority = 1}, {.id = "b", .priority = 2}}));
  Harness next(
      Table(v1::STRATEGY_FAILOVER, {{.id = "a", .priority = 1}, {.id = "b", .priority = 2}}));
  next.picker().Reset(RuntimeState::Create(next.state()->shared_snapshot(), h.state().get()));
  h.runtime("a").EjectUntil(1000);  // recorded through the old state
  EXPECT_EQ(ValueOrDie(next.picker().Pick(next.model(), {.now_ns = 1}, next.rng())).backend->id(),
            "b");
}

TEST(Picker, RejectsAModelFromAnotherSnapshot) {
  Harness h(Table(v1::STRATEGY_RANDOM, {{.id = "a"}}));
  Harness other(Table(v1::STRATEGY_RANDOM, {{.id = "a"}}));
  EXPECT_EQ(h.picker().Pick(other.model(), {}, h.rng()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Picker, HandlesAThousandBackendsInOneModel) {
  std::vector<BackendSpec> backends;
  backends.reserve(1000);
  for (int i = 0; i < 1000; ++i) {
    backends.push_back({.id = "b" + std::to_string(i), .priority = static_cast<uint32_t>(i)});
  }
  Harness round_robin(Table(v1::STRATEGY_ROUND_ROBIN, backends));
  std::map<std::string, double> shares = round_robin.Shares(1000);
  EXPECT_EQ(shares.size(), 1000u);  // equal weights: each exactly once per round

  Harness failover(Table(v1::STRATEGY_FAILOVER, backends, /*panic_threshold_percent=*/0));
  for (int i = 0; i < 999; ++i) {
    failover.runtime("b" + std::to_string(i)).EjectUntil(1000);
  }
  EXPECT_EQ(failover.PickId({.now_ns = 1}), "b999");
}

// --- the precomputed fast view ---------------------------------------------------------------

// Every strategy: a first attempt (served from the snapshot's precomputed view) and the general
// filtering pass (forced here by naming another model's backend as tried, which changes nothing
// else) make identical picks from identically seeded generators.
class FastViewTest : public ::testing::TestWithParam<v1::Strategy> {};

TEST_P(FastViewTest, GeneralPathPicksExactlyLikeThePrecomputedView) {
  const v1::RouteTable table = Table(
      GetParam(), {{.id = "a", .weight = 3, .priority = 2, .effective_weight = 1.5},
                   {.id = "b", .weight = 1, .priority = 2},
                   {.id = "c", .weight = 2, .priority = 1, .health = v1::HEALTH_STATUS_UNHEALTHY},
                   {.id = "d", .weight = 5, .priority = 3},
                   {.id = "e", .enabled = false}});
  Harness fast(table);
  Harness general(table);
  for (Harness* h : {&fast, &general}) {
    h->runtime("a").RecordTtfb(0.2);
    h->runtime("b").RecordTtfb(0.1);
    h->runtime("d").RecordTtfb(0.3);
    h->runtime("a").BeginRequest();
  }
  const std::vector<uint32_t> elsewhere = {general.index("x")};
  EXPECT_EQ(fast.Sequence(2000), general.Sequence(2000, {.tried = elsewhere}));
}

INSTANTIATE_TEST_SUITE_P(AllStrategies, FastViewTest,
                         ::testing::Values(v1::STRATEGY_UNSPECIFIED, v1::STRATEGY_WEIGHTED_RANDOM,
                                           v1::STRATEGY_ROUND_ROBIN, v1::STRATEGY_RANDOM,
                                           v1::STRATEGY_LEAST_LATENCY, v1::STRATEGY_LEAST_REQUESTS,
                                           v1::STRATEGY_FAILOVER, v1::STRATEGY_WEIGHTED_FAILOVER,
                                           v1::STRATEGY_SMART_WEIGHTED_FAILOVER,
                                           v1::STRATEGY_SMART_AI),
                         [](const ::testing::TestParamInfo<v1::Strategy>& info) {
                           return v1::Strategy_Name(info.param);
                         });

// --- allocation ----------------------------------------------------------------------------

TEST(Allocation, PicksDoNotAllocateOnEitherPath) {
  for (v1::Strategy strategy :
       {v1::STRATEGY_WEIGHTED_RANDOM, v1::STRATEGY_ROUND_ROBIN, v1::STRATEGY_RANDOM,
        v1::STRATEGY_LEAST_LATENCY, v1::STRATEGY_LEAST_REQUESTS, v1::STRATEGY_FAILOVER,
        v1::STRATEGY_WEIGHTED_FAILOVER, v1::STRATEGY_SMART_AI}) {
    Harness h(Table(strategy, {{.id = "a", .tags = {"premium"}},
                               {.id = "b", .weight = 2, .priority = 2},
                               {.id = "c", .weight = 3}}));
    h.runtime("c").EjectUntil(1000);
    const UserTags premium = h.snapshot().InternUserTags(std::vector<std::string>{"premium"});
    const std::vector<uint32_t> tried = {h.index("b")};
    // After the ejection ends the precomputed view serves; the others take the general pass.
    const PickRequest requests[] = {
        {.now_ns = 2000}, {}, {.user_tags = &premium, .now_ns = 1}, {.tried = tried}};
    int failures = 0;
    const uint64_t before = testing::AllocationCount();
    for (int i = 0; i < 1000; ++i) {
      for (const PickRequest& request : requests) {
        failures += h.Pick(request).ok() ? 0 : 1;
      }
    }
    const uint64_t allocations = testing::AllocationCount() - before;
    EXPECT_EQ(failures, 0) << v1::Strategy_Name(strategy);
    EXPECT_EQ(allocations, 0u) << v1::Strategy_Name(strategy);

    // The counter does see allocations: an error's message is built on the heap.
    const std::vector<uint32_t> all = {h.index("a"), h.index("b"), h.index("c")};
    const uint64_t before_error = testing::AllocationCount();
    EXPECT_FALSE(h.Pick({.tried = all}).ok());
    EXPECT_GT(testing::AllocationCount(), before_error);
  }
}

}  // namespace
}  // namespace berry::selection::selection_test
