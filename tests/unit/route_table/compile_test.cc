#include "common/route_table/compile.h"

#include <gtest/gtest.h>

#include <string>

#include "common/crypto/sha256.h"

namespace berry::route_table::compile_test {
namespace {

namespace v1 = berry::v1;

constexpr char kBase[] = R"toml(
[settings]
request_timeout_seconds = 45
panic_threshold_percent = 30

[providers.zeta]
base_url = "https://zeta.example/v1"
api_key = "sk-zeta-secret"
models = ["m2", "m1", "m1"]
headers = { "X-B" = "2", "X-A" = "1" }

[providers.alpha]
name = "Alpha"
base_url = "http://alpha.example:8080/v1"
api_key = "sk-alpha-secret"
models = ["a1"]
tls_verify = false

[models.chat]
name = "chat-public"
strategy = "failover"
[[models.chat.backends]]
provider = "zeta"
model = "m1"
weight = 3
priority = 1
tags = ["b", "a"]
[[models.chat.backends]]
provider = "alpha"
model = "a1"
weight = 1.5
priority = 2
[[models.chat.backends]]
provider = "zeta"
model = "m1"
weight = 1

[models.embed]
[[models.embed.backends]]
provider = "alpha"
model = "a1"

[users.bob]
token = "berry-bob-token-123456"
allowed_models = ["chat", "embed"]
tags = ["z", "a"]
[users.bob.rate_limit]
requests_per_minute = 10
requests_per_day = 100
tokens_per_hour = 5000
)toml";

v1::RouteTable MustCompile(const std::string& toml) {
  config::LoadResult result = config::Parse(toml, "test.toml");
  if (!result.config) {
    std::string all;
    for (const auto& e : result.errors) {
      all += e.ToString() + "\n";
    }
    ADD_FAILURE() << "config did not load:\n" << all;
    return {};
  }
  return Compile(*result.config);
}

TEST(Compile, SameConfigGivesByteIdenticalTableAndVersion) {
  const v1::RouteTable a = MustCompile(kBase);
  const v1::RouteTable b = MustCompile(kBase);
  EXPECT_EQ(CanonicalBytes(a), CanonicalBytes(b));
  EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString());
  EXPECT_EQ(a.version_info(), b.version_info());
  EXPECT_EQ(a.version_info().size(), 16u);
}

TEST(Compile, TomlLayoutAndTableOrderDoNotChangeTheVersion) {
  // The same content with the tables in another order, other spacing and comments.
  const std::string reordered = R"toml(
# users first this time
[users.bob]
tags = ["a", "z"]
allowed_models = ["embed", "chat"]
token = "berry-bob-token-123456"
rate_limit = { tokens_per_hour = 5000, requests_per_day = 100, requests_per_minute = 10 }

[models.embed]
backends = [ { provider = "alpha", model = "a1" } ]

[models.chat]
strategy   =   "failover"
name = "chat-public"
[[models.chat.backends]]
provider = "zeta"
model = "m1"
weight = 3.0
tags = ["a", "b"]
[[models.chat.backends]]
provider = "alpha"
model = "a1"
weight = 1.5
priority = 2
[[models.chat.backends]]
provider = "zeta"
model = "m1"

[providers.alpha]
name = "Alpha"
base_url = "http://alpha.example:8080/v1"
api_key = "sk-alpha-secret"
models = ["a1"]
tls_verify = false
[providers.zeta]
base_url = "https://zeta.example/v1"
api_key = "sk-zeta-secret"
models = ["m1", "m2"]
headers = { "X-A" = "1", "X-B" = "2" }

[settings]
panic_threshold_percent = 30
request_timeout_seconds = 45
)toml";
  EXPECT_EQ(MustCompile(reordered).version_info(), MustCompile(kBase).version_info());
}

TEST(Compile, ChangingAWeightChangesTheVersion) {
  std::string changed = kBase;
  changed.replace(changed.find("weight = 1.5"), 12, "weight = 2.5");
  EXPECT_NE(MustCompile(changed).version_info(), MustCompile(kBase).version_info());
}

TEST(Compile, ChangingAProviderKeyChangesTheVersion) {
  // A rotated key must reach the proxies, so it is part of the content hash.
  std::string changed = kBase;
  changed.replace(changed.find("sk-zeta-secret"), 14, "sk-zeta-rotate");
  EXPECT_NE(MustCompile(changed).version_info(), MustCompile(kBase).version_info());
}

TEST(ComputeVersion, IgnoresTheCurrentVersionInfo) {
  v1::RouteTable table = MustCompile(kBase);
  const std::string version = table.version_info();
  table.set_version_info("something-else");
  EXPECT_EQ(ComputeVersion(table), version);
  StampVersion(table);
  EXPECT_EQ(table.version_info(), version);
}

TEST(ComputeVersion, OverlayingHealthChangesTheVersion) {
  v1::RouteTable table = MustCompile(kBase);
  const std::string before = table.version_info();
  table.mutable_models(0)->mutable_backends(0)->set_health(v1::HEALTH_STATUS_UNHEALTHY);
  StampVersion(table);
  EXPECT_NE(table.version_info(), before);
}

TEST(Compile, SettingsBecomeDurationsAndCounts) {
  const v1::Settings s = MustCompile(kBase).settings();
  EXPECT_EQ(s.request_timeout().seconds(), 45);
  EXPECT_EQ(s.panic_threshold_percent(), 30u);
  EXPECT_EQ(s.health_check_interval().seconds(), 30);  // default
  EXPECT_EQ(s.health_check_timeout().seconds(), 10);
  EXPECT_EQ(s.stream_idle_timeout().seconds(), 60);
  EXPECT_EQ(s.max_retries(), 3u);
  EXPECT_EQ(s.circuit_breaker_failure_threshold(), 5u);
  EXPECT_EQ(s.circuit_breaker_timeout().seconds(), 60);
  EXPECT_EQ(s.recovery_check_interval().seconds(), 120);
  EXPECT_EQ(s.max_internal_retries(), 2u);
  EXPECT_EQ(s.max_request_body_bytes(), 33554432u);
}

TEST(Compile, ProvidersAreSortedByIdWithSortedModelsAndHeaders) {
  const v1::RouteTable table = MustCompile(kBase);
  ASSERT_EQ(table.providers_size(), 2);
  const v1::Provider& alpha = table.providers(0);
  const v1::Provider& zeta = table.providers(1);
  EXPECT_EQ(alpha.id(), "alpha");
  EXPECT_EQ(alpha.name(), "Alpha");
  EXPECT_FALSE(alpha.tls_verify());
  EXPECT_EQ(alpha.timeout().seconds(), 30);
  EXPECT_EQ(zeta.id(), "zeta");
  EXPECT_EQ(zeta.name(), "zeta");  // defaults to the table key
  ASSERT_EQ(zeta.models_size(), 2);
  EXPECT_EQ(zeta.models(0), "m1");
  EXPECT_EQ(zeta.models(1), "m2");
  ASSERT_EQ(zeta.headers_size(), 2);
  EXPECT_EQ(zeta.headers(0).name(), "X-A");
  EXPECT_EQ(zeta.headers(1).name(), "X-B");
  EXPECT_EQ(zeta.api_key(), "sk-zeta-secret");
  EXPECT_EQ(zeta.backend_type(), "openai");
}

// A provider's max_retries is its per-request retry budget; 0 is a real budget (no failover
// onto it), not "unset".
TEST(Compile, ProviderMaxRetriesIsCopiedZeroIncluded) {
  std::string toml = kBase;
  const std::string alpha_line = "tls_verify = false";  // in [providers.alpha]
  toml.insert(toml.find(alpha_line) + alpha_line.size(), "\nmax_retries = 0");
  const v1::RouteTable table = MustCompile(toml);
  ASSERT_EQ(table.providers_size(), 2);
  EXPECT_EQ(table.providers(0).max_retries(), 0u);
  EXPECT_EQ(table.providers(1).max_retries(), 3u);  // default
}

TEST(Compile, BackendsKeepConfigOrderWithStableUniqueIds) {
  const v1::RouteTable table = MustCompile(kBase);
  const v1::CustomModel& chat = table.models(0);
  EXPECT_EQ(chat.id(), "chat");
  EXPECT_EQ(chat.name(), "chat-public");
  EXPECT_EQ(chat.strategy(), v1::STRATEGY_FAILOVER);
  ASSERT_EQ(chat.backends_size(), 3);
  EXPECT_EQ(chat.backends(0).id(), "chat/zeta/m1");
  EXPECT_EQ(chat.backends(1).id(), "chat/alpha/a1");
  EXPECT_EQ(chat.backends(2).id(), "chat/zeta/m1#2");
  EXPECT_EQ(chat.backends(1).priority(), 2u);
  EXPECT_EQ(chat.backends(2).priority(), 1u);  // default
  EXPECT_EQ(chat.backends(0).tags(0), "a");
  EXPECT_EQ(chat.backends(0).tags(1), "b");
}

TEST(Compile, StandaloneHealthIsUnknownAndEffectiveWeightIsTheWeight) {
  const v1::RouteTable table = MustCompile(kBase);
  for (const v1::Backend& b : table.models(0).backends()) {
    EXPECT_EQ(b.health(), v1::HEALTH_STATUS_UNKNOWN) << b.id();
    EXPECT_DOUBLE_EQ(b.effective_weight(), b.weight()) << b.id();
  }
}

TEST(Compile, DefaultStrategyIsWeightedRandom) {
  EXPECT_EQ(MustCompile(kBase).models(1).strategy(), v1::STRATEGY_WEIGHTED_RANDOM);
}

TEST(Compile, EveryStrategyNameMapsToItsEnum) {
  const std::pair<const char*, v1::Strategy> cases[] = {
      {"weighted_random", v1::STRATEGY_WEIGHTED_RANDOM},
      {"round_robin", v1::STRATEGY_ROUND_ROBIN},
      {"random", v1::STRATEGY_RANDOM},
      {"least_latency", v1::STRATEGY_LEAST_LATENCY},
      {"least_requests", v1::STRATEGY_LEAST_REQUESTS},
      {"failover", v1::STRATEGY_FAILOVER},
      {"weighted_failover", v1::STRATEGY_WEIGHTED_FAILOVER},
      {"smart_weighted_failover", v1::STRATEGY_SMART_WEIGHTED_FAILOVER},
      {"smart_ai", v1::STRATEGY_SMART_AI},
  };
  for (const auto& [name, expected] : cases) {
    std::string toml = kBase;
    toml.replace(toml.find("\"failover\""), 10, std::string("\"") + name + "\"");
    EXPECT_EQ(MustCompile(toml).models(0).strategy(), expected) << name;
  }
}

TEST(Compile, ClientTokensTravelOnlyAsSha256Digests) {
  const v1::RouteTable table = MustCompile(kBase);
  ASSERT_EQ(table.client_keys_size(), 1);
  EXPECT_EQ(table.client_keys(0).token_sha256(), crypto::Sha256Bytes("berry-bob-token-123456"));
  EXPECT_EQ(table.SerializeAsString().find("berry-bob-token-123456"), std::string::npos);
}

TEST(Compile, AllowedModelsAreNormalisedToClientFacingNames) {
  const v1::ClientKey bob = MustCompile(kBase).client_keys(0);
  ASSERT_EQ(bob.allowed_models_size(), 2);
  EXPECT_EQ(bob.allowed_models(0), "chat-public");  // "chat" is the table id
  EXPECT_EQ(bob.allowed_models(1), "embed");
}

TEST(Compile, RateLimitsCarryOverWithZeroForUnset) {
  const v1::RateLimit limit = MustCompile(kBase).client_keys(0).rate_limit();
  EXPECT_EQ(limit.requests_per_minute(), 10u);
  EXPECT_EQ(limit.requests_per_hour(), 0u);
  EXPECT_EQ(limit.requests_per_day(), 100u);
  EXPECT_EQ(limit.tokens_per_minute(), 0u);
  EXPECT_EQ(limit.tokens_per_hour(), 5000u);
  EXPECT_EQ(limit.tokens_per_day(), 0u);
}

TEST(Compile, UserTagsAreSorted) {
  const v1::ClientKey bob = MustCompile(kBase).client_keys(0);
  ASSERT_EQ(bob.tags_size(), 2);
  EXPECT_EQ(bob.tags(0), "a");
  EXPECT_EQ(bob.tags(1), "z");
}

TEST(Compile, NoUsersMeansNoClientKeys) {
  const std::string open = R"toml(
[providers.p]
base_url = "http://127.0.0.1:1/v1"
api_key = "k"
models = ["m"]
[models.x]
[[models.x.backends]]
provider = "p"
model = "m"
)toml";
  EXPECT_EQ(MustCompile(open).client_keys_size(), 0);
}

}  // namespace
}  // namespace berry::route_table::compile_test
