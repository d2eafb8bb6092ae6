// The key tables of schema.h drive reading, emitting and diffing; these tests hold the emitter
// and the diff to the reader: what is emitted reads back into the same config, and only keys
// that change something are emitted.
#include "common/config/schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <variant>

#include "common/config/config.h"

namespace berry::config::schema_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// Every variable is set, to a value naming it (so tokens stay unique).
LoadOptions AnyEnv() {
  return LoadOptions{.env = [](const std::string& name) -> std::optional<std::string> {
    return "value-of-" + name;
  }};
}

std::string Describe(const std::vector<ConfigError>& problems) {
  std::string out;
  for (const ConfigError& problem : problems) {
    out += problem.ToString() + "\n";
  }
  return out;
}

// A config that uses every kind of value the tables know: quoted ids, a literal `${`, header
// tables, unset and set rate limits, repeated backends, non-ASCII text, fractional weights.
constexpr std::string_view kEverything = R"(
[settings]
request_timeout_seconds = 45
max_retries = 0
panic_threshold_percent = 0
max_internal_retries = 1
[settings.smart_ai]
initial_confidence = 0.8

[providers."api.example.com"]
name = "Example \"quoted\" ü"
base_url = "https://api.example.com/v1/"
api_key = "sk-$${not-a-var}-${KEY}"
models = ["m2", "m1", "m1"]
headers = { "OpenAI-Organization" = "org-1", X-Extra = "a\tb" }
enabled = false
timeout_seconds = 7
max_retries = 0
tls_verify = false
billing_mode = "per_request"
[providers."api.example.com".budget]
requests_per_minute = 500
tokens_per_minute = 200000

[providers.local]
base_url = "http://127.0.0.1:8080"
api_key = ""
models = ["small"]

[models.chat]
name = "chat-v1"
strategy = "smart_weighted_failover"
[[models.chat.backends]]
provider = "api.example.com"
model = "m1"
weight = 0.1
priority = 0
tags = ["eu", "gold"]
billing_mode = "per_request"
budget = { requests_per_day = 1000 }
[[models.chat.backends]]
provider = "api.example.com"
model = "m1"
weight = 2.5
enabled = false
[[models.chat.backends]]
provider = "local"
model = "small"
priority = 1000

[models."odd id"]
enabled = false
[[models."odd id".backends]]
provider = "local"
model = "small"

[users.alice]
token = "${ALICE}"
allowed_models = ["chat-v1", "odd id"]
tags = ["eu"]
[users.alice.rate_limit]
requests_per_minute = 10
requests_per_day = 1000

[users.bob]
name = "Bob"
token = "bob-token"
enabled = false
)";

// What reading the emitted text must give back: the same config, except keys with no effect,
// which are never emitted and so read back as their defaults.
Settings WithoutNoEffectKeys(Settings settings) {
  static const Settings defaults;
  for (const Field<Settings>& field : kSettingsFields) {
    if (!field.rule.no_effect.empty()) {
      std::visit([&](auto member) { settings.*member = defaults.*member; }, field.member);
    }
  }
  return settings;
}

void ExpectSameConfig(const Config& original, const Config& read_back) {
  EXPECT_EQ(read_back.settings(), WithoutNoEffectKeys(original.settings()));
  EXPECT_EQ(read_back.providers(), original.providers());
  EXPECT_EQ(read_back.models(), original.models());
  EXPECT_EQ(read_back.users(), original.users());
}

// emit -> read gives the original config, without warnings, and emit -> read -> emit is a
// fixed point; redacted, it also loads without warnings and is a fixed point.
void ExpectRoundTrip(const LoadResult& loaded) {
  ASSERT_THAT(loaded.errors, IsEmpty()) << Describe(loaded.errors);
  const Config& original = *loaded.config;

  const std::string emitted = EmitToml(original, {.redact_secrets = false});
  const LoadResult read = Parse(emitted, "emitted.toml", AnyEnv());
  ASSERT_THAT(read.errors, IsEmpty()) << Describe(read.errors) << emitted;
  EXPECT_THAT(read.warnings, IsEmpty()) << Describe(read.warnings) << emitted;
  ExpectSameConfig(original, *read.config);
  EXPECT_EQ(EmitToml(*read.config, {.redact_secrets = false}), emitted);

  const std::string redacted = EmitToml(original);
  const LoadResult read_redacted = Parse(redacted, "redacted.toml", AnyEnv());
  ASSERT_THAT(read_redacted.errors, IsEmpty()) << Describe(read_redacted.errors) << redacted;
  EXPECT_THAT(read_redacted.warnings, IsEmpty()) << Describe(read_redacted.warnings);
  EXPECT_EQ(EmitToml(*read_redacted.config), redacted);
}

TEST(EmitToml, EveryKindOfValueRoundTrips) {
  ExpectRoundTrip(Parse(kEverything, "everything.toml", AnyEnv()));
}

TEST(EmitToml, ExampleConfigsRoundTrip) {
  for (const char* name : {"full.toml", "demo.toml", "berry-api.toml"}) {
    SCOPED_TRACE(name);
    ExpectRoundTrip(LoadFile(std::string(BERRY_SOURCE_DIR) + "/examples/" + name, AnyEnv()));
  }
}

TEST(EmitToml, KeysThatOnlyWarnAreNotEmitted) {
  const LoadResult loaded = Parse(kEverything, "everything.toml", AnyEnv());
  ASSERT_THAT(loaded.errors, IsEmpty()) << Describe(loaded.errors);
  ASSERT_EQ(loaded.warnings.size(), 2u) << "max_internal_retries and smart_ai warn when read";
  const std::string emitted = EmitToml(*loaded.config);
  EXPECT_THAT(emitted, Not(HasSubstr("max_internal_retries")));
  EXPECT_THAT(emitted, Not(HasSubstr("smart_ai]")));
  EXPECT_THAT(emitted, HasSubstr("max_request_body_bytes = 33554432"))
      << "defaults of keys that matter are emitted";
}

TEST(EmitToml, SecretsAreRedactedAndTokensStayUnique) {
  const LoadResult loaded = Parse(kEverything, "everything.toml", AnyEnv());
  ASSERT_THAT(loaded.errors, IsEmpty()) << Describe(loaded.errors);
  const std::string redacted = EmitToml(*loaded.config);
  for (const char* secret : {"value-of-KEY", "org-1", "a\\tb", "value-of-ALICE", "bob-token"}) {
    EXPECT_THAT(redacted, Not(HasSubstr(secret)));
  }
  EXPECT_THAT(redacted, HasSubstr(R"(api_key = "<redacted>")"));
  EXPECT_THAT(redacted, HasSubstr(R"(OpenAI-Organization = "<redacted>")"));
  EXPECT_THAT(redacted, HasSubstr(R"(token = "<redacted:alice>")"));
  EXPECT_THAT(redacted, HasSubstr(R"(token = "<redacted:bob>")"));
}

TEST(EmitToml, ALiteralDollarBraceIsWrittenEscaped) {
  const LoadResult loaded = Parse(kEverything, "everything.toml", AnyEnv());
  ASSERT_THAT(loaded.errors, IsEmpty()) << Describe(loaded.errors);
  EXPECT_EQ(loaded.config->FindProvider("api.example.com")->api_key,
            "sk-${not-a-var}-value-of-KEY");
  EXPECT_THAT(EmitToml(*loaded.config, {.redact_secrets = false}),
              HasSubstr(R"(api_key = "sk-$${not-a-var}-value-of-KEY")"));
}

TEST(EmitToml, FloatsPrintAsWrittenAndKeepEveryDigit) {
  const LoadResult loaded = Parse(kEverything, "everything.toml", AnyEnv());
  ASSERT_THAT(loaded.errors, IsEmpty()) << Describe(loaded.errors);
  const std::string emitted = EmitToml(*loaded.config);
  EXPECT_THAT(emitted, HasSubstr("weight = 0.1\n")) << emitted;
  EXPECT_THAT(emitted, HasSubstr("weight = 2.5\n")) << emitted;

  // A weight that six digits would round is printed in full and reads back the same.
  std::string precise(kEverything);
  const size_t at = precise.find("weight = 0.1");
  ASSERT_NE(at, std::string::npos);
  precise.replace(at, std::string("weight = 0.1").size(), "weight = 0.123456789");
  const LoadResult precise_loaded = Parse(precise, "precise.toml", AnyEnv());
  ASSERT_THAT(precise_loaded.errors, IsEmpty()) << Describe(precise_loaded.errors);
  const std::string precise_emitted = EmitToml(*precise_loaded.config);
  const LoadResult read = Parse(precise_emitted, "emitted.toml", AnyEnv());
  ASSERT_THAT(read.errors, IsEmpty()) << Describe(read.errors);
  EXPECT_EQ(read.config->models().front().backends.front().weight, 0.123456789) << precise_emitted;
}

TEST(EmitToml, SectionsComeInReadingOrder) {
  const LoadResult loaded = Parse(kEverything, "everything.toml", AnyEnv());
  ASSERT_THAT(loaded.errors, IsEmpty()) << Describe(loaded.errors);
  const std::string emitted = EmitToml(*loaded.config);
  const size_t settings = emitted.find("[settings]");
  const size_t providers = emitted.find("[providers.");
  const size_t models = emitted.find("[models.");
  const size_t users = emitted.find("[users.");
  EXPECT_EQ(settings, 0u) << emitted;
  EXPECT_LT(settings, providers);
  EXPECT_LT(providers, models);
  EXPECT_LT(models, users);
}

// Every table lists each key once, and a key mapped to a protobuf field names it once.
template <typename T, size_t N>
void ExpectUniqueKeys(const Field<T> (&fields)[N]) {
  std::set<std::string_view> keys;
  std::set<std::string_view> proto_fields;
  for (const Field<T>& field : fields) {
    EXPECT_TRUE(keys.insert(field.key).second) << field.key;
    if (!field.proto_field.empty()) {
      EXPECT_TRUE(proto_fields.insert(field.proto_field).second) << field.proto_field;
    }
  }
}

TEST(Schema, EveryKeyAndProtoFieldAppearsOncePerTable) {
  ExpectUniqueKeys(kSettingsFields);
  ExpectUniqueKeys(kProviderFields);
  ExpectUniqueKeys(kModelFields);
  ExpectUniqueKeys(kBackendFields);
  ExpectUniqueKeys(kUserFields);
  ExpectUniqueKeys(kRateLimitFields);
}

TEST(FieldChanges, NamesEachChangedKeyWithBothValues) {
  Settings before;
  Settings after;
  after.max_retries = 5;
  after.panic_threshold_percent = 10;
  EXPECT_THAT(FieldChanges(before, after),
              ElementsAre("max_retries 3 -> 5", "panic_threshold_percent 50 -> 10"));
  EXPECT_THAT(FieldChanges(before, before), IsEmpty());
}

TEST(FieldChanges, ListsStrategiesAndLimitsReadAsTheyAreWritten) {
  CustomModel before;
  CustomModel after;
  after.strategy = Strategy::kFailover;
  EXPECT_THAT(FieldChanges(before, after), ElementsAre("strategy weighted_random -> failover"));

  Backend old_backend;
  Backend new_backend;
  new_backend.weight = 3;
  new_backend.tags = {"eu"};
  EXPECT_THAT(FieldChanges(old_backend, new_backend),
              ElementsAre("weight 1 -> 3", R"(tags [] -> ["eu"])"));

  RateLimit unlimited;
  RateLimit limited;
  limited.requests_per_hour = 60;
  EXPECT_THAT(FieldChanges(unlimited, limited), ElementsAre("requests_per_hour unlimited -> 60"));
}

TEST(FieldChanges, SecretsChangeWithoutTheirValues) {
  Provider before;
  before.api_key = "sk-old";
  before.headers = {{"X-A", "secret-1"}};
  Provider after = before;
  after.api_key = "sk-new";
  after.headers = {{"X-A", "secret-2"}};
  EXPECT_THAT(FieldChanges(before, after),
              ElementsAre("api_key changed", "headers values changed"));
  after.headers = {{"X-B", "secret-2"}};
  EXPECT_THAT(FieldChanges(before, after),
              ElementsAre("api_key changed", R"(headers ["X-A"] -> ["X-B"])"));

  User old_user;
  old_user.token = "t-1";
  User new_user = old_user;
  new_user.token = "t-2";
  EXPECT_THAT(FieldChanges(old_user, new_user), ElementsAre("token changed"));
}

}  // namespace
}  // namespace berry::config::schema_test
