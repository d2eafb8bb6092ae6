#include "common/config/config.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace berry::config {
// Failure messages show errors the way operators see them (found by argument-dependent lookup,
// so it lives in ConfigError's namespace).
void PrintTo(const ConfigError& error, std::ostream* os) { *os << error.ToString(); }
}  // namespace berry::config

namespace berry::config::config_test {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// ---- Helpers --------------------------------------------------------------------------------

// A small valid config that each test bends into the shape it needs.
constexpr std::string_view kMinimal = R"([providers.p]
base_url = "https://api.example.com/v1"
api_key = "sk-test"
models = ["m1", "m2"]

[models.chat]
[[models.chat.backends]]
provider = "p"
model = "m1"

[users.alice]
token = "alice-token-0123456789"
)";

using Env = std::map<std::string, std::string>;

LoadOptions WithEnv(Env vars) {
  return LoadOptions{.env = [vars = std::move(vars)](const std::string& name) {
    const auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  }};
}

// Tests never depend on the process environment unless they say so.
LoadResult ParseText(std::string_view text, const LoadOptions& options = WithEnv({})) {
  return Parse(text, "test.toml", options);
}

std::string Describe(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const ConfigError& error : errors) {
    out += error.ToString() + "\n";
  }
  return out;
}

// `text` with the first occurrence of `from` replaced by `to`.
std::string Replaced(std::string_view text, std::string_view from, std::string_view to) {
  std::string out(text);
  const size_t at = out.find(from);
  EXPECT_NE(at, std::string::npos) << "test bug: no \"" << from << "\" in the config";
  if (at != std::string::npos) {
    out.replace(at, from.size(), to);
  }
  return out;
}

// `text` with `line` inserted right after the line `anchor` (a table header, say).
std::string WithLineAfter(std::string_view text, std::string_view anchor, std::string_view line) {
  return Replaced(text, std::string(anchor) + "\n",
                  std::string(anchor) + "\n" + std::string(line) + "\n");
}

std::string WithSettings(std::string_view lines) {
  return std::string(kMinimal) + "\n[settings]\n" + std::string(lines) + "\n";
}

// 1-based line of the first occurrence of `needle`.
int LineOf(std::string_view text, std::string_view needle) {
  const size_t at = text.find(needle);
  EXPECT_NE(at, std::string_view::npos) << "test bug: no \"" << needle << "\" in the config";
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(at), '\n'));
}

::testing::Matcher<ConfigError> ErrorAt(const std::string& key_path, int line,
                                        const std::string& reason) {
  return AllOf(Field("key_path", &ConfigError::key_path, key_path),
               Field("line", &ConfigError::line, line),
               Field("reason", &ConfigError::reason, HasSubstr(reason)));
}

// The errors from parsing `text`, which must have failed.
std::vector<ConfigError> ErrorsOf(std::string_view text, const LoadOptions& options = WithEnv({})) {
  LoadResult result = ParseText(text, options);
  EXPECT_FALSE(result.config.has_value()) << "expected errors, the config loaded";
  return result.errors;
}

// Loads `text`, which must be valid; a test using it stops at the first error.
#define ASSERT_LOADS(result_var, text, ...)                                 \
  const LoadResult result_var = ParseText(text __VA_OPT__(, ) __VA_ARGS__); \
  ASSERT_THAT(result_var.errors, IsEmpty()) << Describe(result_var.errors); \
  ASSERT_TRUE(result_var.config.has_value())

std::string ExamplePath(std::string_view name) {
  return std::string(BERRY_SOURCE_DIR) + "/examples/" + std::string(name);
}

// ---- Strategies -----------------------------------------------------------------------------

TEST(StrategyTest, EveryDocumentedNameParses) {
  const std::map<std::string, Strategy> documented = {
      {"weighted_random", Strategy::kWeightedRandom},
      {"round_robin", Strategy::kRoundRobin},
      {"random", Strategy::kRandom},
      {"least_latency", Strategy::kLeastLatency},
      {"least_requests", Strategy::kLeastRequests},
      {"failover", Strategy::kFailover},
      {"weighted_failover", Strategy::kWeightedFailover},
      {"smart_weighted_failover", Strategy::kSmartWeightedFailover},
      {"smart_ai", Strategy::kSmartAi},
  };
  for (const auto& [name, strategy] : documented) {
    EXPECT_EQ(ParseStrategy(name), strategy) << name;
  }
}

TEST(StrategyTest, NameRoundTripsThroughParse) {
  for (const Strategy strategy : kAllStrategies) {
    EXPECT_EQ(ParseStrategy(StrategyName(strategy)), strategy) << StrategyName(strategy);
  }
}

TEST(StrategyTest, UnknownOrDifferentlyCasedNameDoesNotParse) {
  EXPECT_EQ(ParseStrategy("fastest"), std::nullopt);
  EXPECT_EQ(ParseStrategy("Round_Robin"), std::nullopt);
  EXPECT_EQ(ParseStrategy(""), std::nullopt);
}

// ---- Defaults -------------------------------------------------------------------------------

TEST(DefaultsTest, EmptyDocumentLoadsWithDesignSettings) {
  ASSERT_LOADS(result, "");
  const Settings& settings = result.config->settings();
  EXPECT_EQ(settings.health_check_interval_seconds, 30);
  EXPECT_EQ(settings.health_check_timeout_seconds, 10);
  EXPECT_EQ(settings.request_timeout_seconds, 30);
  EXPECT_EQ(settings.stream_idle_timeout_seconds, 60);
  EXPECT_EQ(settings.max_retries, 3);
  EXPECT_EQ(settings.circuit_breaker_failure_threshold, 5);
  EXPECT_EQ(settings.circuit_breaker_timeout_seconds, 60);
  EXPECT_EQ(settings.recovery_check_interval_seconds, 120);
  EXPECT_EQ(settings.max_internal_retries, 2);
  EXPECT_EQ(settings.panic_threshold_percent, 50);
  EXPECT_EQ(settings.max_request_body_bytes, 33554432);
  EXPECT_THAT(result.config->providers(), IsEmpty());
  EXPECT_THAT(result.config->models(), IsEmpty());
  EXPECT_THAT(result.config->users(), IsEmpty());
}

TEST(DefaultsTest, ProviderOptionalKeysTakeTheirDefaults) {
  ASSERT_LOADS(result, kMinimal);
  const Provider expected{.id = "p",
                          .name = "p",
                          .base_url = "https://api.example.com/v1",
                          .api_key = "sk-test",
                          .models = {"m1", "m2"},
                          .headers = {},
                          .enabled = true,
                          .timeout_seconds = 30,
                          .max_retries = 3,
                          .backend_type = "openai",
                          .tls_verify = true,
                          .billing_mode = "per_token",
                          .budget = {}};
  EXPECT_THAT(result.config->providers(), ElementsAre(expected));
}

TEST(DefaultsTest, ModelAndBackendOptionalKeysTakeTheirDefaults) {
  ASSERT_LOADS(result, kMinimal);
  const CustomModel expected{.id = "chat",
                             .name = "chat",
                             .strategy = Strategy::kWeightedRandom,
                             .enabled = true,
                             .backends = {Backend{.provider = "p",
                                                  .model = "m1",
                                                  .weight = 1.0,
                                                  .priority = 1,
                                                  .enabled = true,
                                                  .tags = {},
                                                  .billing_mode = "per_token",
                                                  .budget = {}}}};
  EXPECT_THAT(result.config->models(), ElementsAre(expected));
}

TEST(DefaultsTest, UserOptionalKeysTakeTheirDefaults) {
  ASSERT_LOADS(result, kMinimal);
  const User expected{.id = "alice",
                      .name = "alice",
                      .token = "alice-token-0123456789",
                      .allowed_models = {},
                      .enabled = true,
                      .tags = {},
                      .rate_limit = {}};
  EXPECT_THAT(result.config->users(), ElementsAre(expected));
}

TEST(DefaultsTest, RateLimitsLeftOutAreUnlimited) {
  ASSERT_LOADS(result, WithLineAfter(kMinimal, "token = \"alice-token-0123456789\"",
                                     "rate_limit = { requests_per_hour = 100 }"));
  const RateLimit& limit = result.config->users().front().rate_limit;
  EXPECT_EQ(limit.requests_per_minute, std::nullopt);
  EXPECT_EQ(limit.requests_per_hour, 100);
  EXPECT_EQ(limit.requests_per_day, std::nullopt);
}

// ---- The example configs --------------------------------------------------------------------

class FullExampleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    result_ = LoadFile(ExamplePath("full.toml"), WithEnv({{"OPENAI_API_KEY", "sk-full-openai"},
                                                          {"OPENAI_ORG", "org-full"},
                                                          {"AZURE_OPENAI_KEY", "azure-full-key"},
                                                          {"ALICE_TOKEN", "alice-full-token"}}));
    ASSERT_THAT(result_.errors, IsEmpty()) << Describe(result_.errors);
    ASSERT_TRUE(result_.config.has_value());
  }
  const Config& config() const { return *result_.config; }

 private:
  LoadResult result_;
};

TEST_F(FullExampleTest, EverySettingIsRead) {
  const Settings expected{.health_check_interval_seconds = 15,
                          .health_check_timeout_seconds = 5,
                          .request_timeout_seconds = 45,
                          .stream_idle_timeout_seconds = 90,
                          .max_retries = 2,
                          .circuit_breaker_failure_threshold = 4,
                          .circuit_breaker_timeout_seconds = 30,
                          .recovery_check_interval_seconds = 60,
                          .max_internal_retries = 1,
                          .panic_threshold_percent = 40,
                          .max_request_body_bytes = 16777216};
  EXPECT_EQ(config().settings(), expected);
}

TEST_F(FullExampleTest, EveryProviderKeyIsRead) {
  const Provider azure{.id = "azure-east",
                       .name = "azure-east",
                       .base_url = "https://berry-east.openai.azure.com/openai",
                       .api_key = "azure-full-key",
                       .models = {"gpt-4o"},
                       .headers = {{"api-version", "2024-06-01"}},
                       .enabled = false,
                       .timeout_seconds = 30,
                       .max_retries = 3,
                       .backend_type = "openai",
                       .tls_verify = false,
                       .billing_mode = "per_request",
                       .budget = {}};
  const Provider openai{
      .id = "openai-primary",
      .name = "OpenAI Primary",
      .base_url = "https://api.openai.com/v1",
      .api_key = "sk-full-openai",
      .models = {"gpt-4o", "gpt-4o-mini"},
      .headers = {{"OpenAI-Organization", "org-full"}, {"OpenAI-Project", "proj-berry"}},
      .enabled = true,
      .timeout_seconds = 20,
      .max_retries = 1,
      .backend_type = "openai",
      .tls_verify = true,
      .billing_mode = "per_token",
      .budget = {.requests_per_minute = 500,
                 .requests_per_hour = std::nullopt,
                 .requests_per_day = std::nullopt,
                 .tokens_per_minute = 150000,
                 .tokens_per_hour = std::nullopt,
                 .tokens_per_day = std::nullopt}};
  EXPECT_THAT(config().providers(), ElementsAre(azure, openai));
}

TEST_F(FullExampleTest, EveryModelAndBackendKeyIsRead) {
  const CustomModel gpt_4o{.id = "gpt_4o",
                           .name = "gpt-4o",
                           .strategy = Strategy::kWeightedFailover,
                           .enabled = true,
                           .backends = {Backend{.provider = "openai-primary",
                                                .model = "gpt-4o",
                                                .weight = 3.0,
                                                .priority = 0,
                                                .enabled = true,
                                                .tags = {"premium"},
                                                .billing_mode = "per_token",
                                                .budget = {.requests_per_minute = std::nullopt,
                                                           .requests_per_hour = std::nullopt,
                                                           .requests_per_day = 20000,
                                                           .tokens_per_minute = std::nullopt,
                                                           .tokens_per_hour = std::nullopt,
                                                           .tokens_per_day = std::nullopt}},
                                        Backend{.provider = "azure-east",
                                                .model = "gpt-4o",
                                                .weight = 1.0,
                                                .priority = 2,
                                                .enabled = false,
                                                .tags = {},
                                                .billing_mode = "per_token",
                                                .budget = {}}}};
  const CustomModel mini{.id = "mini",
                         .name = "mini",
                         .strategy = Strategy::kWeightedRandom,
                         .enabled = true,
                         .backends = {Backend{.provider = "openai-primary",
                                              .model = "gpt-4o-mini",
                                              .weight = 1.0,
                                              .priority = 1,
                                              .enabled = true,
                                              .tags = {},
                                              .billing_mode = "per_token",
                                              .budget = {}}}};
  EXPECT_THAT(config().models(), ElementsAre(gpt_4o, mini));
}

TEST_F(FullExampleTest, EveryUserKeyIsRead) {
  const User alice{.id = "alice",
                   .name = "Alice",
                   .token = "alice-full-token",
                   .allowed_models = {"gpt-4o", "mini"},
                   .enabled = true,
                   .tags = {"premium"},
                   .rate_limit = {.requests_per_minute = 60,
                                  .requests_per_hour = 1000,
                                  .requests_per_day = 10000,
                                  .tokens_per_minute = std::nullopt,
                                  .tokens_per_hour = std::nullopt,
                                  .tokens_per_day = std::nullopt}};
  const User ci{.id = "ci",
                .name = "ci",
                .token = "berry-ci-0123456789abcdef",
                .allowed_models = {},
                .enabled = false,
                .tags = {},
                .rate_limit = {}};
  EXPECT_THAT(config().users(), ElementsAre(alice, ci));
}

TEST_F(FullExampleTest, SourceIsTheFilePath) {
  EXPECT_EQ(config().source(), ExamplePath("full.toml"));
}

TEST(BerryApiExampleTest, LoadsUnchangedWithoutEnvironment) {
  const LoadResult result = LoadFile(ExamplePath("berry-api.toml"), WithEnv({}));
  ASSERT_THAT(result.errors, IsEmpty()) << Describe(result.errors);
  ASSERT_TRUE(result.config.has_value());
  const Config& config = *result.config;
  EXPECT_THAT(config.providers(), SizeIs(5));
  EXPECT_THAT(config.models(), SizeIs(4));
  EXPECT_THAT(config.users(), SizeIs(4));
  EXPECT_EQ(config.settings().circuit_breaker_failure_threshold, 5);
  EXPECT_EQ(config.settings().stream_idle_timeout_seconds, 60);  // not in the file: default
}

TEST(BerryApiExampleTest, KeepsStrategiesBackendBillingModesAndHeaders) {
  const LoadResult result = LoadFile(ExamplePath("berry-api.toml"), WithEnv({}));
  ASSERT_TRUE(result.config.has_value()) << Describe(result.errors);
  const Config& config = *result.config;
  ASSERT_NE(config.FindModel("claude-3-opus"), nullptr);
  EXPECT_EQ(config.FindModel("claude-3-opus")->strategy, Strategy::kSmartAi);
  EXPECT_EQ(config.FindModel("claude-3-opus")->backends[0].billing_mode, "per_request");
  ASSERT_NE(config.FindModel("gpt-4"), nullptr);
  EXPECT_EQ(config.FindModel("gpt-4")->strategy, Strategy::kWeightedFailover);
  EXPECT_EQ(config.FindModel("gpt-4")->backends[1].weight, 0.3);
  ASSERT_NE(config.FindProvider("azure_openai"), nullptr);
  EXPECT_EQ(config.FindProvider("azure_openai")->headers.at("api-version"), "2024-02-01");
  EXPECT_EQ(config.FindProvider("anthropic")->backend_type, "claude");
  EXPECT_EQ(config.FindProvider("local_llm")->api_key, "");
}

// ---- Loading files and formatting errors ----------------------------------------------------

TEST(LoadTest, ValidFileLoads) {
  const absl::StatusOr<Config> config = Load(ExamplePath("berry-api.toml"), WithEnv({}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source(), ExamplePath("berry-api.toml"));
}

TEST(LoadTest, MissingFileIsNotFoundNamingThePath) {
  const absl::StatusOr<Config> config = Load("/nonexistent/berry.toml");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr("/nonexistent/berry.toml"));
}

TEST(LoadTest, DirectoryIsNotFoundNamingThePath) {
  const absl::StatusOr<Config> config = Load(BERRY_SOURCE_DIR);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(BERRY_SOURCE_DIR));
}

TEST(LoadTest, InvalidFileIsInvalidArgumentWithOneErrorPerLine) {
  const std::string path = ::testing::TempDir() + "/berry_config_test_invalid.toml";
  std::ofstream(path) << "[settings]\nmax_retries = -1\nsurprise = 1\n";
  const absl::StatusOr<Config> config = Load(path, WithEnv({}));
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(config.status().message()),
            path + ":2:15: settings.max_retries: must be at least 0, got -1\n" + path +
                ":3:1: settings.surprise: unknown key");
  std::remove(path.c_str());
}

TEST(LoadTest, FullExampleWithoutItsEnvironmentNamesEveryMissingVariable) {
  const absl::StatusOr<Config> config = Load(ExamplePath("full.toml"), WithEnv({}));
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string variable :
       {"OPENAI_API_KEY", "OPENAI_ORG", "AZURE_OPENAI_KEY", "ALICE_TOKEN"}) {
    EXPECT_THAT(std::string(config.status().message()),
                HasSubstr("environment variable " + variable + " is not set"));
  }
}

TEST(LoadTest, LoadFileReportsAMissingFileAsOneError) {
  const LoadResult result = LoadFile("/nonexistent/berry.toml");
  EXPECT_FALSE(result.config.has_value());
  ASSERT_THAT(result.errors, SizeIs(1));
  EXPECT_EQ(result.errors[0].file, "/nonexistent/berry.toml");
  EXPECT_THAT(result.errors[0].reason, HasSubstr("cannot open"));
}

TEST(LoadTest, ParsedTextHasNoSourceButErrorsNameTheSourceName) {
  ASSERT_LOADS(result, kMinimal);
  EXPECT_EQ(result.config->source(), "");
  const LoadResult broken = Parse("surprise = 1", "<api>", WithEnv({}));
  ASSERT_THAT(broken.errors, SizeIs(1));
  EXPECT_EQ(broken.errors[0].ToString(), "<api>:1:1: surprise: unknown key");
}

TEST(ConfigErrorTest, ToStringJoinsFileLineColumnPathAndReason) {
  const ConfigError error{
      .file = "b.toml", .key_path = "models.m.name", .line = 3, .column = 8, .reason = "bad"};
  EXPECT_EQ(error.ToString(), "b.toml:3:8: models.m.name: bad");
}

TEST(ConfigErrorTest, ToStringOmitsUnknownParts) {
  EXPECT_EQ((ConfigError{.file = "b.toml", .key_path = "", .line = 0, .column = 0, .reason = "r"})
                .ToString(),
            "b.toml: r");
  EXPECT_EQ((ConfigError{.file = "", .key_path = "users.u", .line = 2, .column = 0, .reason = "r"})
                .ToString(),
            "2: users.u: r");
  EXPECT_EQ(
      (ConfigError{.file = "", .key_path = "", .line = 0, .column = 0, .reason = "r"}).ToString(),
      "r");
}

// ---- The loaded Config ----------------------------------------------------------------------

TEST(ConfigLookupTest, EntitiesAreSortedById) {
  const std::string text = std::string(kMinimal) + R"(
[providers.a]
base_url = "https://a.example.com"
api_key = "k"
models = ["x"]
[users.aaron]
token = "aaron-token-0123456789"
)";
  ASSERT_LOADS(result, text);
  EXPECT_EQ(result.config->providers()[0].id, "a");
  EXPECT_EQ(result.config->providers()[1].id, "p");
  EXPECT_EQ(result.config->users()[0].id, "aaron");
  EXPECT_EQ(result.config->users()[1].id, "alice");
}

TEST(ConfigLookupTest, FindProviderById) {
  ASSERT_LOADS(result, kMinimal);
  ASSERT_NE(result.config->FindProvider("p"), nullptr);
  EXPECT_EQ(result.config->FindProvider("p")->base_url, "https://api.example.com/v1");
  EXPECT_EQ(result.config->FindProvider("q"), nullptr);
}

TEST(ConfigLookupTest, FindModelPrefersClientNameOverTableId) {
  // Model "b" is called "a" by clients; model "a" is called "z".
  const std::string text = std::string(kMinimal) + R"(
[models.a]
name = "z"
[[models.a.backends]]
provider = "p"
model = "m1"
[models.b]
name = "a"
[[models.b.backends]]
provider = "p"
model = "m2"
)";
  ASSERT_LOADS(result, text);
  EXPECT_EQ(result.config->FindModel("a")->id, "b");
  EXPECT_EQ(result.config->FindModel("z")->id, "a");
  EXPECT_EQ(result.config->FindModel("chat")->id, "chat");
  EXPECT_EQ(result.config->FindModel("nope"), nullptr);
}

TEST(ConfigLookupTest, OneTrailingSlashIsStrippedFromBaseUrl) {
  ASSERT_LOADS(result, Replaced(kMinimal, "example.com/v1\"", "example.com/v1/\""));
  EXPECT_EQ(result.config->providers()[0].base_url, "https://api.example.com/v1");
}

// Found by apply_config_fuzzer: with one slash dropped per load, "…/v1//" loaded as "…/v1/",
// and a config written back from it (RedactedToml) loaded as "…/v1".
TEST(ConfigLookupTest, EveryTrailingSlashIsStrippedFromBaseUrl) {
  ASSERT_LOADS(result, Replaced(kMinimal, "example.com/v1\"", "example.com/v1///\""));
  EXPECT_EQ(result.config->providers()[0].base_url, "https://api.example.com/v1");
}

TEST(ConfigLookupTest, IntegerWeightIsAccepted) {
  ASSERT_LOADS(result, WithLineAfter(kMinimal, "model = \"m1\"", "weight = 2"));
  EXPECT_EQ(result.config->models()[0].backends[0].weight, 2.0);
}

// ---- Syntax errors --------------------------------------------------------------------------

TEST(SyntaxTest, TomlSyntaxErrorIsReportedWithItsPosition) {
  const std::vector<ConfigError> errors = ErrorsOf("[settings]\nmax_retries = = 3\n");
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_EQ(errors[0].file, "test.toml");
  EXPECT_EQ(errors[0].line, 2);
  EXPECT_GT(errors[0].column, 0);
  EXPECT_THAT(errors[0].reason, HasSubstr("Error while parsing"));
}

TEST(SyntaxTest, SyntaxErrorDoesNotQuoteTheTextItFailedOn) {
  // An unquoted key: toml++ would say "saw 'tr'"; those could be a secret's first characters.
  const std::vector<ConfigError> errors = ErrorsOf("[providers.p]\napi_key = trSECRET\n");
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_EQ(errors[0].line, 2);
  EXPECT_THAT(errors[0].reason, Not(HasSubstr("saw")));
  EXPECT_THAT(errors[0].reason, Not(HasSubstr("tr'")));
}

TEST(SyntaxTest, DuplicateKeyIsASyntaxError) {
  EXPECT_THAT(ErrorsOf("[settings]\nmax_retries = 1\nmax_retries = 2\n"),
              ElementsAre(Field(&ConfigError::line, 3)));
}

// ---- Unknown keys, at every level -----------------------------------------------------------

struct UnknownKeyCase {
  std::string name;
  friend void PrintTo(const UnknownKeyCase& c, std::ostream* os) { *os << c.name; }
  std::string anchor;  // line after which the stray key goes; empty = top of the file
  std::string expected_path;
};

class UnknownKeyTest : public ::testing::TestWithParam<UnknownKeyCase> {};

TEST_P(UnknownKeyTest, IsReportedWithItsPath) {
  const UnknownKeyCase& c = GetParam();
  const std::string text = c.anchor.empty() ? "stray = 1\n" + std::string(kMinimal)
                                            : WithLineAfter(kMinimal, c.anchor, "stray = 1");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt(c.expected_path, LineOf(text, "stray"), "unknown key")));
}

INSTANTIATE_TEST_SUITE_P(
    EveryLevel, UnknownKeyTest,
    ::testing::Values(UnknownKeyCase{"TopLevel", "", "stray"},
                      UnknownKeyCase{"Provider", "[providers.p]", "providers.p.stray"},
                      UnknownKeyCase{"Model", "[models.chat]", "models.chat.stray"},
                      UnknownKeyCase{"Backend", "[[models.chat.backends]]",
                                     "models.chat.backends[0].stray"},
                      UnknownKeyCase{"User", "[users.alice]", "users.alice.stray"}),
    [](const auto& info) { return info.param.name; });

TEST(UnknownKeyTest, InSettingsIsReported) {
  const std::string text = WithSettings("request_timeout = 30");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("settings.request_timeout",
                                                  LineOf(text, "request_timeout"), "unknown key")));
}

TEST(UnknownKeyTest, InRateLimitIsReported) {
  const std::string text = std::string(kMinimal) + "[users.alice.rate_limit]\nper_second = 1\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.alice.rate_limit.per_second",
                                                  LineOf(text, "per_second"), "unknown key")));
}

// ---- Types ----------------------------------------------------------------------------------

TEST(TypeTest, WrongTypeNamesExpectedAndActualType) {
  const std::string text = WithSettings("max_retries = \"3\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("settings.max_retries", LineOf(text, "max_retries"),
                                  "expected integer, got string")));
}

TEST(TypeTest, FractionalSecondsAreATypeError) {
  const std::string text = WithSettings("request_timeout_seconds = 30.5");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("settings.request_timeout_seconds",
                                                  LineOf(text, "request_timeout_seconds"),
                                                  "expected integer, got float")));
}

TEST(TypeTest, WeightMustBeANumber) {
  const std::string text = WithLineAfter(kMinimal, "model = \"m1\"", "weight = \"heavy\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.chat.backends[0].weight", LineOf(text, "weight"),
                                  "expected number, got string")));
}

TEST(TypeTest, NonStringListItemIsReportedAtItsIndex) {
  const std::string text = Replaced(kMinimal, "models = [\"m1\", \"m2\"]", "models = [\"m1\", 2]");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.p.models[1]", LineOf(text, "models = "),
                                  "expected string, got integer")));
}

TEST(TypeTest, SectionThatIsNotATableIsATypeError) {
  const std::string text = "settings = 3\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("settings", 1, "expected table, got integer")));
}

TEST(TypeTest, ProviderThatIsNotATableIsATypeError) {
  const std::string text = "[providers]\nopenai = \"https://api.openai.com\"\n";
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.openai", 2, "expected table, got string")));
}

TEST(TypeTest, BackendsMustBeAnArrayOfTables) {
  const std::string text =
      Replaced(kMinimal, "[[models.chat.backends]]\nprovider = \"p\"\nmodel = \"m1\"\n",
               "backends = [\"p/m1\"]\n");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.chat.backends[0]", LineOf(text, "backends"),
                                  "expected table, got string")));
}

TEST(TypeTest, BooleanMustBeABoolean) {
  const std::string text = WithLineAfter(kMinimal, "[users.alice]", "enabled = \"yes\"");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.alice.enabled", LineOf(text, "enabled"),
                                                  "expected boolean, got string")));
}

// ---- Required keys --------------------------------------------------------------------------

struct RequiredKeyCase {
  std::string name;
  friend void PrintTo(const RequiredKeyCase& c, std::ostream* os) { *os << c.name; }
  std::string line;  // removed from kMinimal
  std::string expected_path;
  std::string table_header;  // where the error points: the table missing the key
};

class RequiredKeyTest : public ::testing::TestWithParam<RequiredKeyCase> {};

TEST_P(RequiredKeyTest, MissingKeyIsReportedAtItsTable) {
  const RequiredKeyCase& c = GetParam();
  const std::string text = Replaced(kMinimal, c.line + "\n", "");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt(c.expected_path, LineOf(text, c.table_header),
                                                  "missing required key")));
}

INSTANTIATE_TEST_SUITE_P(
    EveryRequiredKey, RequiredKeyTest,
    ::testing::Values(RequiredKeyCase{"ProviderBaseUrl",
                                      "base_url = \"https://api.example.com/v1\"",
                                      "providers.p.base_url", "[providers.p]"},
                      RequiredKeyCase{"ProviderApiKey", "api_key = \"sk-test\"",
                                      "providers.p.api_key", "[providers.p]"},
                      RequiredKeyCase{"ProviderModels", "models = [\"m1\", \"m2\"]",
                                      "providers.p.models", "[providers.p]"},
                      RequiredKeyCase{"BackendProvider", "provider = \"p\"",
                                      "models.chat.backends[0].provider",
                                      "[[models.chat.backends]]"},
                      RequiredKeyCase{"BackendModel", "model = \"m1\"",
                                      "models.chat.backends[0].model", "[[models.chat.backends]]"},
                      RequiredKeyCase{"UserToken", "token = \"alice-token-0123456789\"",
                                      "users.alice.token", "[users.alice]"}),
    [](const auto& info) { return info.param.name; });

TEST(RequiredKeyTest, ModelWithoutBackendsIsAnError) {
  const std::string text = std::string(kMinimal) + "[models.empty]\nname = \"e\"\n";
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.empty.backends", LineOf(text, "[models.empty]"),
                                  "missing required key")));
}

TEST(RequiredKeyTest, ModelWithEmptyBackendsListIsAnError) {
  const std::string text = std::string(kMinimal) + "[models.empty]\nbackends = []\n";
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.empty.backends", LineOf(text, "backends = []"),
                                  "must not be empty")));
}

TEST(RequiredKeyTest, EmptyProviderModelsListIsAnError) {
  const std::string text = Replaced(kMinimal, "models = [\"m1\", \"m2\"]", "models = []");
  // The backend's model is then unlisted too, but that follows from the same mistake.
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.p.models", LineOf(text, "models = []"),
                                                  "must not be empty")));
}

TEST(RequiredKeyTest, EmptyTableKeyIsAnError) {
  const std::string text =
      std::string(kMinimal) + "[users.\"\"]\ntoken = \"other-token-0123456789\"\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.\"\"", LineOf(text, "[users.\"\"]"),
                                                  "table key must not be empty")));
}

// ---- References between tables --------------------------------------------------------------

TEST(ReferenceTest, BackendNamingAnUnknownProviderIsAnError) {
  const std::string text = Replaced(kMinimal, "provider = \"p\"", "provider = \"q\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.chat.backends[0].provider",
                                  LineOf(text, "provider = \"q\""), "unknown provider \"q\"")));
}

TEST(ReferenceTest, BackendModelNotListedByItsProviderIsAnError) {
  const std::string text = Replaced(kMinimal, "model = \"m1\"", "model = \"m3\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.chat.backends[0].model", LineOf(text, "model = \"m3\""),
                                  "model \"m3\" is not in provider \"p\"'s models")));
}

TEST(ReferenceTest, BrokenProviderIsNotAlsoReportedAsUnknown) {
  const std::string text = Replaced(kMinimal, "provider = \"p\"", "provider = \"q\"") +
                           "[providers]\nq = \"https://q.example.com\"\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.q", LineOf(text, "q = "),
                                                  "expected table, got string")));
}

TEST(ReferenceTest, BrokenProviderModelsAreNotAlsoReportedAsUnlisted) {
  const std::string text = Replaced(kMinimal, "models = [\"m1\", \"m2\"]", "models = \"m1\"");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.p.models", LineOf(text, "models = "),
                                                  "expected array of strings, got string")));
}

TEST(ReferenceTest, DuplicateModelNameIsAnErrorNamingBothModels) {
  const std::string text = std::string(kMinimal) + R"(
[models.chat2]
name = "chat"
[[models.chat2.backends]]
provider = "p"
model = "m2"
)";
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.chat2.name", LineOf(text, "name = \"chat\""),
                                  "name \"chat\" is already used by model \"chat\"")));
}

TEST(ReferenceTest, AllowedModelsAcceptsNamesAndIds) {
  const std::string text = std::string(kMinimal) + R"(
[models.gpt_4o]
name = "gpt-4o"
[[models.gpt_4o.backends]]
provider = "p"
model = "m2"
[users.bob]
token = "bob-token-0123456789"
allowed_models = ["gpt-4o", "gpt_4o", "chat"]
)";
  ASSERT_LOADS(result, text);
  EXPECT_THAT(result.config->users()[1].allowed_models, ElementsAre("gpt-4o", "gpt_4o", "chat"));
}

TEST(ReferenceTest, AllowedModelsNamingAnUnknownModelIsAnError) {
  const std::string text =
      WithLineAfter(kMinimal, "[users.alice]", "allowed_models = [\"chat\", \"gpt-5\"]");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("users.alice.allowed_models[1]", LineOf(text, "allowed_models"),
                                  "unknown model \"gpt-5\"")));
}

// ---- Values out of range --------------------------------------------------------------------

TEST(RangeTest, ZeroWeightIsAnError) {
  const std::string text = WithLineAfter(kMinimal, "model = \"m1\"", "weight = 0");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.chat.backends[0].weight", LineOf(text, "weight"),
                                  "must be a finite number greater than 0")));
}

TEST(RangeTest, NegativeWeightIsAnError) {
  const std::string text = WithLineAfter(kMinimal, "model = \"m1\"", "weight = -0.5");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("models.chat.backends[0].weight",
                                                  LineOf(text, "weight"), "greater than 0")));
}

TEST(RangeTest, InfiniteOrNanWeightIsAnError) {
  for (const std::string value : {"inf", "nan"}) {
    const std::string text = WithLineAfter(kMinimal, "model = \"m1\"", "weight = " + value);
    EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("models.chat.backends[0].weight",
                                                    LineOf(text, "weight"), "finite")))
        << value;
  }
}

TEST(RangeTest, PriorityOutsideItsRangeIsAnError) {
  for (const int64_t priority : {kMinPriority - 1, kMaxPriority + 1}) {
    const std::string text =
        WithLineAfter(kMinimal, "model = \"m1\"", "priority = " + std::to_string(priority));
    EXPECT_THAT(ErrorsOf(text),
                ElementsAre(ErrorAt("models.chat.backends[0].priority", LineOf(text, "priority"),
                                    "must be between 0 and 1000")))
        << priority;
  }
}

TEST(RangeTest, PriorityBoundsAreAccepted) {
  for (const int64_t priority : {kMinPriority, kMaxPriority}) {
    ASSERT_LOADS(result, WithLineAfter(kMinimal, "model = \"m1\"",
                                       "priority = " + std::to_string(priority)));
    EXPECT_EQ(result.config->models()[0].backends[0].priority, priority);
  }
}

TEST(RangeTest, UnknownStrategyListsTheValidOnes) {
  const std::string text = WithLineAfter(kMinimal, "[models.chat]", "strategy = \"fastest\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("models.chat.strategy", LineOf(text, "strategy"),
                                  "unknown strategy \"fastest\"; expected one of: weighted_random, "
                                  "round_robin, random, least_latency, least_requests, failover, "
                                  "weighted_failover, smart_weighted_failover, smart_ai")));
}

TEST(RangeTest, UnknownBillingModeIsAnError) {
  const std::string text = WithLineAfter(kMinimal, "[providers.p]", "billing_mode = \"monthly\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.p.billing_mode", LineOf(text, "billing_mode"),
                                  "expected one of: per_token, per_request")));
}

TEST(RangeTest, UnknownBackendTypeIsAnError) {
  const std::string text = WithLineAfter(kMinimal, "[providers.p]", "backend_type = \"cohere\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.p.backend_type", LineOf(text, "backend_type"),
                                  "\"cohere\" is not supported; expected one of: openai, "
                                  "anthropic, claude, gemini")));
}

TEST(BackendTypeTest, OpenAiLoads) {
  ASSERT_LOADS(result, WithLineAfter(kMinimal, "[providers.p]", "backend_type = \"openai\""));
  EXPECT_EQ(result.config->providers()[0].backend_type, "openai");
}

TEST(BackendTypeTest, AnthropicAndItsBerryApiAliasLoad) {
  for (const std::string dialect : {"anthropic", "claude"}) {
    SCOPED_TRACE(dialect);
    ASSERT_LOADS(result,
                 WithLineAfter(kMinimal, "[providers.p]", "backend_type = \"" + dialect + "\""));
    EXPECT_EQ(result.config->providers()[0].backend_type, dialect);
  }
}

TEST(BackendTypeTest, GeminiLoads) {
  ASSERT_LOADS(result, WithLineAfter(kMinimal, "[providers.p]", "backend_type = \"gemini\""));
  EXPECT_EQ(result.config->providers()[0].backend_type, "gemini");
}

TEST(BackendTypeTest, AnUnknownTypeIsRefusedSayingWhy) {
  const std::string text = WithLineAfter(kMinimal, "[providers.p]", "backend_type = \"vertex\"");
  const std::vector<ConfigError> errors = ErrorsOf(text);
  EXPECT_THAT(errors, ElementsAre(ErrorAt("providers.p.backend_type", LineOf(text, "backend_type"),
                                          "\"vertex\" is not supported")));
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0].reason, HasSubstr("expected one of: openai, anthropic, claude, gemini"));
  EXPECT_THAT(errors[0].reason, HasSubstr("OpenAI-compatible base_url"));
  EXPECT_THAT(errors[0].ToString(), Not(HasSubstr("sk-test"))) << "no secret in the error";
}

TEST(BackendTypeTest, RefusalEchoesTheValueAsWrittenNotItsExpansion) {
  const std::string text =
      WithLineAfter(kMinimal, "[providers.p]", "backend_type = \"${BACKEND_TYPE}\"");
  const std::vector<ConfigError> errors =
      ErrorsOf(text, WithEnv({{"BACKEND_TYPE", "sk-leaked-secret"}}));
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_EQ(errors[0].key_path, "providers.p.backend_type");
  EXPECT_THAT(errors[0].reason, HasSubstr("\"${BACKEND_TYPE}\" is not supported"));
  EXPECT_THAT(errors[0].ToString(), Not(HasSubstr("sk-leaked-secret")));
}

TEST(RangeTest, ProviderTimeoutMustBePositive) {
  const std::string text = WithLineAfter(kMinimal, "[providers.p]", "timeout_seconds = 0");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.p.timeout_seconds", LineOf(text, "timeout_seconds"),
                                  "must be greater than 0, got 0")));
}

TEST(RangeTest, ProviderMaxRetriesMustNotBeNegative) {
  const std::string text = WithLineAfter(kMinimal, "[providers.p]", "max_retries = -1");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.p.max_retries", LineOf(text, "max_retries"),
                                  "must be at least 0, got -1")));
}

struct SettingCase {
  std::string key;
  int64_t invalid;
  std::string reason;
  friend void PrintTo(const SettingCase& c, std::ostream* os) {
    *os << c.key << " = " << c.invalid;
  }
};

class SettingRangeTest : public ::testing::TestWithParam<SettingCase> {};

TEST_P(SettingRangeTest, OutOfRangeValueIsAnError) {
  const SettingCase& c = GetParam();
  const std::string text = WithSettings(c.key + " = " + std::to_string(c.invalid));
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("settings." + c.key, LineOf(text, c.key + " ="), c.reason)));
}

constexpr std::string_view kPositive = "must be greater than 0";
constexpr std::string_view kNonNegative = "must be at least 0";

INSTANTIATE_TEST_SUITE_P(
    EverySetting, SettingRangeTest,
    ::testing::Values(
        SettingCase{"health_check_interval_seconds", 0, std::string(kPositive)},
        SettingCase{"health_check_timeout_seconds", -5, std::string(kPositive)},
        SettingCase{"request_timeout_seconds", 0, std::string(kPositive)},
        SettingCase{"stream_idle_timeout_seconds", 0, std::string(kPositive)},
        SettingCase{"max_retries", -1, std::string(kNonNegative)},
        SettingCase{"circuit_breaker_failure_threshold", 0, std::string(kPositive)},
        SettingCase{"circuit_breaker_timeout_seconds", 0, std::string(kPositive)},
        SettingCase{"recovery_check_interval_seconds", 0, std::string(kPositive)},
        SettingCase{"max_internal_retries", -1, std::string(kNonNegative)},
        SettingCase{"panic_threshold_percent", 101, "must be between 0 and 100, got 101"},
        SettingCase{"panic_threshold_percent", -1, "must be between 0 and 100, got -1"},
        SettingCase{"max_request_body_bytes", 0, std::string(kPositive)}),
    [](const auto& info) {
      return info.param.key + (info.param.invalid < 0 ? "Negative" : "") + "_" +
             std::to_string(info.index);
    });

TEST(RangeTest, BoundarySettingsAreAccepted) {
  ASSERT_LOADS(result, WithSettings("max_retries = 0\nmax_internal_retries = 0\n"
                                    "panic_threshold_percent = 100"));
  EXPECT_EQ(result.config->settings().max_retries, 0);
  EXPECT_EQ(result.config->settings().max_internal_retries, 0);
  EXPECT_EQ(result.config->settings().panic_threshold_percent, 100);
}

// ---- Provider base URLs ---------------------------------------------------------------------

struct BaseUrlCase {
  std::string name;
  friend void PrintTo(const BaseUrlCase& c, std::ostream* os) { *os << c.name; }
  std::string url;
  std::string reason;
};

class BaseUrlTest : public ::testing::TestWithParam<BaseUrlCase> {};

TEST_P(BaseUrlTest, InvalidUrlIsAnError) {
  const BaseUrlCase& c = GetParam();
  const std::string text =
      Replaced(kMinimal, "\"https://api.example.com/v1\"", "\"" + c.url + "\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.p.base_url", LineOf(text, "base_url"), c.reason)));
}

INSTANTIATE_TEST_SUITE_P(
    Rejected, BaseUrlTest,
    ::testing::Values(
        BaseUrlCase{"NoScheme", "api.example.com/v1", "not a valid absolute URL"},
        BaseUrlCase{"Empty", "", "not a valid absolute URL"},
        BaseUrlCase{"FtpScheme", "ftp://api.example.com", "scheme must be http or https"},
        BaseUrlCase{"NoHost", "https:///v1", "must include a host"},
        BaseUrlCase{"NoAuthority", "https:v1", "must include a host"},
        BaseUrlCase{"PortZero", "https://api.example.com:0/v1", "port"},
        BaseUrlCase{"Query", "https://api.example.com/v1?x=1", "query or fragment"},
        BaseUrlCase{"Fragment", "https://api.example.com/v1#top", "query or fragment"},
        BaseUrlCase{"Space", "https://api example.com", "not a valid absolute URL"}),
    [](const auto& info) { return info.param.name; });

TEST(BaseUrlTest, PlainHttpWithPortIsAccepted) {
  ASSERT_LOADS(result,
               Replaced(kMinimal, "https://api.example.com/v1", "http://localhost:11434/v1"));
  EXPECT_EQ(result.config->providers()[0].base_url, "http://localhost:11434/v1");
}

TEST(BaseUrlTest, InvalidUrlIsNotEchoed) {
  const std::string text =
      Replaced(kMinimal, "https://api.example.com/v1", "ftp://user:hunter2@files.example.com");
  const std::vector<ConfigError> errors = ErrorsOf(text);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0].ToString(), Not(HasSubstr("hunter2")));
}

// ---- Users and tokens -----------------------------------------------------------------------

TEST(UserTest, EmptyTokenIsAnError) {
  const std::string text = Replaced(kMinimal, "\"alice-token-0123456789\"", "\"\"");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.alice.token", LineOf(text, "token"),
                                                  "must not be empty")));
}

TEST(UserTest, WhitespaceOnlyTokenIsAnError) {
  const std::string text = Replaced(kMinimal, "\"alice-token-0123456789\"", "\" \\t \"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("users.alice.token", LineOf(text, "token"), "whitespace")));
}

TEST(UserTest, DuplicateTokenIsAnErrorNamingBothUsersButNotTheToken) {
  const std::string text =
      std::string(kMinimal) + "[users.bob]\ntoken = \"alice-token-0123456789\"\n";
  const std::vector<ConfigError> errors = ErrorsOf(text);
  EXPECT_THAT(errors, ElementsAre(ErrorAt("users.bob.token", LineOf(text, "[users.bob]") + 1,
                                          "user \"bob\" has the same token as user \"alice\"")));
  for (const ConfigError& error : errors) {
    EXPECT_THAT(error.ToString(), Not(HasSubstr("alice-token")));
  }
}

TEST(UserTest, EmptyUserNameIsAnError) {
  const std::string text = WithLineAfter(kMinimal, "[users.alice]", "name = \"\"");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.alice.name", LineOf(text, "name = "),
                                                  "must not be empty")));
}

TEST(RateLimitTest, ZeroLimitIsAnError) {
  const std::string text =
      std::string(kMinimal) + "[users.alice.rate_limit]\nrequests_per_minute = 0\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.alice.rate_limit.requests_per_minute",
                                                  LineOf(text, "requests_per_minute"),
                                                  "must be greater than 0, got 0")));
}

TEST(RateLimitTest, NegativeLimitIsAnError) {
  const std::string text =
      std::string(kMinimal) + "[users.alice.rate_limit]\nrequests_per_day = -10\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.alice.rate_limit.requests_per_day",
                                                  LineOf(text, "requests_per_day"),
                                                  "must be greater than 0, got -10")));
}

TEST(RateLimitTest, HourlyLimitBelowPerMinuteIsAnError) {
  const std::string text =
      std::string(kMinimal) +
      "[users.alice.rate_limit]\nrequests_per_minute = 100\nrequests_per_hour = 50\n";
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt(
                  "users.alice.rate_limit.requests_per_hour", LineOf(text, "requests_per_hour"),
                  "requests_per_hour (50) must not be less than requests_per_minute (100)")));
}

TEST(RateLimitTest, OnlyTheLimitsThatAreSetAreCompared) {
  const std::string text =
      std::string(kMinimal) +
      "[users.alice.rate_limit]\nrequests_per_minute = 100\nrequests_per_day = 99\n";
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt(
                  "users.alice.rate_limit.requests_per_day", LineOf(text, "requests_per_day"),
                  "requests_per_day (99) must not be less than requests_per_minute (100)")));
}

TEST(RateLimitTest, EqualLimitsAreAccepted) {
  ASSERT_LOADS(result, std::string(kMinimal) +
                           "[users.alice.rate_limit]\nrequests_per_minute = 5\n"
                           "requests_per_hour = 5\nrequests_per_day = 5\n");
  EXPECT_EQ(result.config->users()[0].rate_limit.requests_per_day, 5);
}

TEST(RateLimitTest, TokenLimitsLoad) {
  ASSERT_LOADS(result, std::string(kMinimal) +
                           "[users.alice.rate_limit]\ntokens_per_minute = 1000\n"
                           "tokens_per_hour = 20000\ntokens_per_day = 100000\n");
  const RateLimit& limit = result.config->users()[0].rate_limit;
  EXPECT_EQ(limit.tokens_per_minute, 1000);
  EXPECT_EQ(limit.tokens_per_hour, 20000);
  EXPECT_EQ(limit.tokens_per_day, 100000);
  EXPECT_EQ(limit.requests_per_minute, std::nullopt);
}

TEST(RateLimitTest, ZeroTokenLimitIsAnError) {
  const std::string text =
      std::string(kMinimal) + "[users.alice.rate_limit]\ntokens_per_hour = 0\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.alice.rate_limit.tokens_per_hour",
                                                  LineOf(text, "tokens_per_hour"),
                                                  "must be greater than 0, got 0")));
}

TEST(RateLimitTest, DailyTokenLimitBelowPerHourIsAnError) {
  const std::string text =
      std::string(kMinimal) +
      "[users.alice.rate_limit]\ntokens_per_hour = 5000\ntokens_per_day = 4000\n";
  EXPECT_THAT(
      ErrorsOf(text),
      ElementsAre(ErrorAt("users.alice.rate_limit.tokens_per_day", LineOf(text, "tokens_per_day"),
                          "tokens_per_day (4000) must not be less than tokens_per_hour "
                          "(5000)")));
}

TEST(RateLimitTest, TokenLimitsAreNotComparedWithRequestLimits) {
  ASSERT_LOADS(result, std::string(kMinimal) +
                           "[users.alice.rate_limit]\nrequests_per_minute = 100\n"
                           "tokens_per_hour = 50\n");
  EXPECT_EQ(result.config->users()[0].rate_limit.tokens_per_hour, 50);
}

// ---- Names in lists, headers ----------------------------------------------------------------

TEST(ListTest, EmptyTagIsAnError) {
  const std::string text = WithLineAfter(kMinimal, "model = \"m1\"", "tags = [\"fast\", \"\"]");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("models.chat.backends[0].tags[1]",
                                                  LineOf(text, "tags"), "must not be empty")));
}

TEST(ListTest, EmptyProviderModelNameIsAnError) {
  const std::string text =
      Replaced(kMinimal, "models = [\"m1\", \"m2\"]", "models = [\"m1\", \" \"]");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.p.models[1]",
                                                  LineOf(text, "models = "), "must not be empty")));
}

TEST(HeaderTest, HeaderNameWithInvalidCharactersIsAnError) {
  const std::string text =
      WithLineAfter(kMinimal, "[providers.p]", "headers = { \"X Org\" = \"a\", \"X-Ok\" = \"b\" }");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.p.headers.\"X Org\"",
                                                  LineOf(text, "headers"), "invalid header name")));
}

TEST(HeaderTest, HeaderValueWithALineBreakIsAnError) {
  const std::string text =
      WithLineAfter(kMinimal, "[providers.p]", "headers = { \"X-Org\" = \"a\\r\\nX-Evil: 1\" }");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.p.headers.X-Org",
                                                  LineOf(text, "headers"), "control characters")));
}

TEST(HeaderTest, ApiKeyWithATrailingNewlineFromTheEnvironmentIsAnError) {
  const std::string text = Replaced(kMinimal, "\"sk-test\"", "\"${KEY}\"");
  EXPECT_THAT(
      ErrorsOf(text, WithEnv({{"KEY", "sk-from-file\n"}})),
      ElementsAre(ErrorAt("providers.p.api_key", LineOf(text, "api_key"), "control characters")));
}

TEST(HeaderTest, HeadersMayBeTheirOwnTable) {
  ASSERT_LOADS(result,
               std::string(kMinimal) + "[providers.p.headers]\napi-version = \"2024-02-01\"\n");
  EXPECT_THAT(result.config->providers()[0].headers,
              ElementsAre(std::pair<const std::string, std::string>("api-version", "2024-02-01")));
}

// ---- Keys that load but change nothing: warnings -------------------------------------------

::testing::Matcher<ConfigError> WarningAt(const std::string& key_path, int line, int column,
                                          const std::string& reason) {
  return AllOf(Field("file", &ConfigError::file, "test.toml"),
               Field("key_path", &ConfigError::key_path, key_path),
               Field("line", &ConfigError::line, line),
               Field("column", &ConfigError::column, column),
               Field("reason", &ConfigError::reason, HasSubstr(reason)));
}

TEST(WarningTest, ConfigWithoutCompatibilityKeysHasNoWarnings) {
  ASSERT_LOADS(result, kMinimal);
  EXPECT_THAT(result.warnings, IsEmpty());
}

TEST(WarningTest, MaxInternalRetriesLoadsWithAWarningNamingTheKeyAndWhy) {
  const std::string text = WithSettings("max_retries = 2\nmax_internal_retries = 4");
  ASSERT_LOADS(result, text);
  EXPECT_THAT(result.warnings,
              ElementsAre(WarningAt("settings.max_internal_retries",
                                    LineOf(text, "max_internal_retries"), 24,
                                    "has no effect: Berry's selection only ever draws usable "
                                    "backends")));
  EXPECT_THAT(result.warnings[0].reason, HasSubstr("settings.max_retries"));
  EXPECT_EQ(result.config->settings().max_retries, 2);
}

TEST(WarningTest, MaxInternalRetriesIsStillRangeChecked) {
  const std::string text = WithSettings("max_internal_retries = -1");
  const LoadResult result = ParseText(text);
  EXPECT_THAT(result.errors, ElementsAre(ErrorAt("settings.max_internal_retries",
                                                 LineOf(text, "max_internal_retries"),
                                                 "must be at least 0, got -1")));
  EXPECT_THAT(result.warnings, SizeIs(1)) << "warnings are kept next to errors";
}

TEST(WarningTest, SmartAiTableLoadsWithOneWarningAtItsHeader) {
  const std::string text = std::string(kMinimal) +
                           "[settings.smart_ai]\ninitial_confidence = 0.8\n"
                           "[settings.smart_ai.confidence_adjustments]\nsuccess_boost = 0.1\n";
  ASSERT_LOADS(result, text);
  EXPECT_THAT(result.warnings,
              ElementsAre(WarningAt("settings.smart_ai", LineOf(text, "[settings.smart_ai]"), 1,
                                    "has no effect: Berry API's SmartAI tuning")));
  EXPECT_THAT(result.warnings[0].reason, HasSubstr("fleet's recent success rate"));
}

TEST(WarningTest, InlineSmartAiTableWarnsToo) {
  const std::string text = WithSettings("smart_ai = { initial_confidence = 0.8 }");
  ASSERT_LOADS(result, text);
  EXPECT_THAT(
      result.warnings,
      ElementsAre(WarningAt("settings.smart_ai", LineOf(text, "smart_ai ="), 12, "has no effect")));
}

TEST(WarningTest, WarningsComeInFileOrderAndFormatLikeErrors) {
  const std::string text = std::string(kMinimal) +
                           "[settings.smart_ai]\nexploration_ratio = 0.2\n"
                           "[settings]\nmax_internal_retries = 2\n";
  ASSERT_LOADS(result, text);
  ASSERT_THAT(result.warnings, SizeIs(2));
  EXPECT_EQ(result.warnings[0].key_path, "settings.smart_ai");
  EXPECT_EQ(result.warnings[1].key_path, "settings.max_internal_retries");
  EXPECT_THAT(result.warnings[1].ToString(),
              HasSubstr("test.toml:" + std::to_string(LineOf(text, "max_internal_retries")) +
                        ":24: settings.max_internal_retries: has no effect"));
}

TEST(WarningTest, BerryApiExampleWarnsAboutExactlyItsTwoCompatibilityKeys) {
  const std::string path = ExamplePath("berry-api.toml");
  const LoadResult result = LoadFile(path, WithEnv({}));
  ASSERT_TRUE(result.config.has_value()) << Describe(result.errors);
  ASSERT_THAT(result.warnings, SizeIs(2)) << Describe(result.warnings);
  EXPECT_EQ(result.warnings[0].key_path, "settings.max_internal_retries");
  EXPECT_EQ(result.warnings[0].file, path);
  EXPECT_GT(result.warnings[0].line, 0);
  EXPECT_EQ(result.warnings[1].key_path, "settings.smart_ai");
  EXPECT_GT(result.warnings[1].line, result.warnings[0].line);
}

// ---- Berry API's [settings.smart_ai] --------------------------------------------------------

TEST(SmartAiTest, NumbersAndBooleansAreAccepted) {
  ASSERT_LOADS(result,
               std::string(kMinimal) +
                   "[settings.smart_ai]\ninitial_confidence = 0.8\nenable_time_decay = true\n"
                   "lightweight_check_interval_seconds = 600\nsome_future_knob = 3\n"
                   "[settings.smart_ai.confidence_adjustments]\nsuccess_boost = 0.1\n");
  EXPECT_EQ(result.config->settings(), Settings{});
}

TEST(SmartAiTest, StringValueIsAnError) {
  const std::string text = std::string(kMinimal) + "[settings.smart_ai]\nmode = \"cheap\"\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("settings.smart_ai.mode", LineOf(text, "mode = "),
                                                  "expected number or boolean, got string")));
}

TEST(SmartAiTest, ArrayValueIsAnError) {
  const std::string text = std::string(kMinimal) + "[settings.smart_ai]\nratios = [0.1, 0.2]\n";
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("settings.smart_ai.ratios", LineOf(text, "ratios"),
                                  "expected number or boolean, got array")));
}

TEST(SmartAiTest, NestedTableOtherThanConfidenceAdjustmentsIsAnError) {
  const std::string text = std::string(kMinimal) + "[settings.smart_ai.extra]\nx = 1\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("settings.smart_ai.extra",
                                                  LineOf(text, "[settings.smart_ai.extra]"),
                                                  "expected number or boolean, got table")));
}

TEST(SmartAiTest, ConfidenceAdjustmentsHoldOnlyNumbersOrBooleans) {
  const std::string text =
      std::string(kMinimal) + "[settings.smart_ai.confidence_adjustments]\npenalty = \"high\"\n";
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("settings.smart_ai.confidence_adjustments.penalty",
                                  LineOf(text, "penalty"), "expected number or boolean")));
}

// ---- ${VAR} interpolation -------------------------------------------------------------------

TEST(InterpolationTest, SetVariableIsSubstituted) {
  ASSERT_LOADS(result, Replaced(kMinimal, "\"sk-test\"", "\"Bearer-${KEY}-suffix\""),
               WithEnv({{"KEY", "sk-123"}}));
  EXPECT_EQ(result.config->providers()[0].api_key, "Bearer-sk-123-suffix");
}

TEST(InterpolationTest, SeveralVariablesInOneValueAreSubstituted) {
  ASSERT_LOADS(result, Replaced(kMinimal, "https://api.example.com/v1", "${SCHEME}://${HOST}/v1"),
               WithEnv({{"SCHEME", "http"}, {"HOST", "10.0.0.7:8000"}}));
  EXPECT_EQ(result.config->providers()[0].base_url, "http://10.0.0.7:8000/v1");
}

TEST(InterpolationTest, UnsetEnvironmentVariableIsAnErrorNamingTheKey) {
  const std::string text = Replaced(kMinimal, "\"sk-test\"", "\"${OPENAI_API_KEY}\"");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.p.api_key", LineOf(text, "api_key"),
                                  "environment variable OPENAI_API_KEY is not set")));
}

TEST(InterpolationTest, EmptyVariableIsSetAndSubstituted) {
  ASSERT_LOADS(result, Replaced(kMinimal, "\"sk-test\"", "\"${EMPTY}\""), WithEnv({{"EMPTY", ""}}));
  EXPECT_EQ(result.config->providers()[0].api_key, "");
}

TEST(InterpolationTest, DoubleDollarBraceIsALiteral) {
  ASSERT_LOADS(result, Replaced(kMinimal, "\"sk-test\"", "\"$${NOT_EXPANDED} and $$ and $HOME\""));
  EXPECT_EQ(result.config->providers()[0].api_key, "${NOT_EXPANDED} and $$ and $HOME");
}

TEST(InterpolationTest, UnterminatedReferenceIsAnError) {
  const std::string text = Replaced(kMinimal, "\"sk-test\"", "\"${OPENAI_API_KEY\"");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.p.api_key", LineOf(text, "api_key"),
                                                  "unterminated ${")));
}

TEST(InterpolationTest, InvalidVariableNameIsAnError) {
  for (const std::string reference : {"${}", "${1ABC}", "${A-B}"}) {
    const std::string text = Replaced(kMinimal, "\"sk-test\"", "\"" + reference + "\"");
    EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.p.api_key", LineOf(text, "api_key"),
                                                    "invalid environment variable reference")))
        << reference;
  }
}

TEST(InterpolationTest, VariablesInsideArraysAreSubstituted) {
  const std::string text =
      Replaced(Replaced(kMinimal, "models = [\"m1\", \"m2\"]", "models = [\"${M}\", \"m2\"]"),
               "model = \"m1\"", "model = \"m1\"\ntags = [\"${TIER}\"]");
  ASSERT_LOADS(result, text, WithEnv({{"M", "m1"}, {"TIER", "gold"}}));
  EXPECT_THAT(result.config->providers()[0].models, ElementsAre("m1", "m2"));
  EXPECT_THAT(result.config->models()[0].backends[0].tags, ElementsAre("gold"));
}

TEST(InterpolationTest, UnsetVariableInsideAnArrayNamesTheElement) {
  const std::string text = WithLineAfter(kMinimal, "[users.alice]", "tags = [\"a\", \"${TIER}\"]");
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("users.alice.tags[1]", LineOf(text, "tags"),
                                                  "environment variable TIER is not set")));
}

TEST(InterpolationTest, VariablesInsideHeaderValuesAreSubstituted) {
  ASSERT_LOADS(result,
               WithLineAfter(kMinimal, "[providers.p]",
                             "headers = { \"OpenAI-Organization\" = \"${ORG}\" }"),
               WithEnv({{"ORG", "org-42"}}));
  EXPECT_EQ(result.config->providers()[0].headers.at("OpenAI-Organization"), "org-42");
}

TEST(InterpolationTest, UnsetVariableInAHeaderValueNamesTheHeader) {
  const std::string text = WithLineAfter(kMinimal, "[providers.p]",
                                         "headers = { \"OpenAI-Organization\" = \"${ORG}\" }");
  EXPECT_THAT(ErrorsOf(text),
              ElementsAre(ErrorAt("providers.p.headers.OpenAI-Organization",
                                  LineOf(text, "headers"), "environment variable ORG is not set")));
}

TEST(InterpolationTest, ProcessEnvironmentIsUsedByDefault) {
  ASSERT_EQ(setenv("BERRY_CONFIG_TEST_KEY", "sk-from-process", 1), 0);
  const LoadResult result =
      Parse(Replaced(kMinimal, "\"sk-test\"", "\"${BERRY_CONFIG_TEST_KEY}\""), "test.toml");
  unsetenv("BERRY_CONFIG_TEST_KEY");
  ASSERT_TRUE(result.config.has_value()) << Describe(result.errors);
  EXPECT_EQ(result.config->providers()[0].api_key, "sk-from-process");
}

// ---- Every error, and no secret in any of them ----------------------------------------------

TEST(CollectionTest, EveryErrorIsReportedInFileOrder) {
  const std::string text = R"([settings]
max_retries = -1
surprise = true

[providers.p]
base_url = "gopher://example.com"
api_key = "k"
models = ["m1"]
timeout_seconds = 1.5

[models.chat]
strategy = "fastest"
[[models.chat.backends]]
provider = "nowhere"
model = "m1"
weight = 0
[[models.chat.backends]]
provider = "p"
model = "m9"

[users.alice]
token = "   "
allowed_models = ["ghost"]
[users.alice.rate_limit]
requests_per_minute = 10
requests_per_hour = 5
)";
  EXPECT_THAT(
      ErrorsOf(text),
      ElementsAre(ErrorAt("settings.max_retries", 2, "must be at least 0"),
                  ErrorAt("settings.surprise", 3, "unknown key"),
                  ErrorAt("providers.p.base_url", 6, "scheme"),
                  ErrorAt("providers.p.timeout_seconds", 9, "expected integer, got float"),
                  ErrorAt("models.chat.strategy", 12, "unknown strategy"),
                  ErrorAt("models.chat.backends[0].provider", 14, "unknown provider"),
                  ErrorAt("models.chat.backends[0].weight", 16, "greater than 0"),
                  ErrorAt("models.chat.backends[1].model", 19, "not in provider"),
                  ErrorAt("users.alice.token", 22, "whitespace"),
                  ErrorAt("users.alice.allowed_models[0]", 23, "unknown model"),
                  ErrorAt("users.alice.rate_limit.requests_per_hour", 26, "must not be less")));
}

TEST(CollectionTest, ErrorsCarryFileAndColumn) {
  const std::vector<ConfigError> errors = ErrorsOf(WithSettings("  max_retries = -1"));
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_EQ(errors[0].file, "test.toml");
  EXPECT_EQ(errors[0].column, 17);  // the value, after the key
}

TEST(SecretTest, NoSecretAppearsInAnyErrorMessage) {
  const std::string text = R"([providers.p]
base_url = "https://SECRET-in-url:SECRET-pw@api.example.com/v1?key=SECRET-query"
api_key = "SECRET-api-key"
apikey = "SECRET-typo-key"
models = ["m1"]
headers = { "X-Token" = "SECRET-header\n", "Bad Header" = "SECRET-header-2", "X-Num" = 7 }
timeout_seconds = "SECRET-timeout"

[providers.q]
base_url = "ftp://SECRET-ftp@example.com"
api_key = 12345
models = ["m1"]
billing_mode = "${TIER}"

[users.alice]
token = "SECRET-token"
rate_limit = { requests_per_minute = 0 }
[users.bob]
token = "SECRET-token"
[users.carol]
token = "${CAROL_TOKEN}"
[users.dave]
token = "${CAROL_TOKEN"
[users.erin]
token = "${SECRET-NOT-A-NAME}"
)";
  const std::vector<ConfigError> errors = ErrorsOf(text, WithEnv({{"TIER", "SECRET-env-value"}}));
  EXPECT_THAT(errors, SizeIs(::testing::Ge(10u)));
  for (const ConfigError& error : errors) {
    EXPECT_THAT(error.ToString(), Not(HasSubstr("SECRET"))) << error.ToString();
  }
}

}  // namespace
}  // namespace berry::config::config_test

namespace berry::config::config_test {
namespace {

TEST(BudgetTest, ProviderAndBackendBudgetsLoadAndCompile) {
  ASSERT_LOADS(result, std::string(kMinimal) +
                           "[providers.p.budget]\nrequests_per_minute = 500\n"
                           "tokens_per_minute = 90000\n"
                           "[[models.chat.backends]]\nprovider = \"p\"\nmodel = \"m2\"\n"
                           "budget = { requests_per_minute = 20, requests_per_day = 1000 }\n");
  const Provider& provider = result.config->providers().front();
  EXPECT_EQ(provider.budget.requests_per_minute, 500);
  EXPECT_EQ(provider.budget.tokens_per_minute, 90000);
  EXPECT_EQ(provider.budget.requests_per_hour, std::nullopt);
  const std::vector<Backend>& backends = result.config->models().front().backends;
  ASSERT_EQ(backends.size(), 2u);
  EXPECT_EQ(backends[0].budget, RateLimit{});
  EXPECT_EQ(backends[1].budget.requests_per_minute, 20);
  EXPECT_EQ(backends[1].budget.requests_per_day, 1000);
}

TEST(BudgetTest, BadBudgetsAreErrorsWithTheirKeyPath) {
  const std::string text =
      std::string(kMinimal) + "[providers.p.budget]\nrequests_per_minute = 0\nper_second = 3\n";
  EXPECT_THAT(ErrorsOf(text), ElementsAre(ErrorAt("providers.p.budget.requests_per_minute",
                                                  LineOf(text, "requests_per_minute"),
                                                  "must be greater than 0, got 0"),
                                          ErrorAt("providers.p.budget.per_second",
                                                  LineOf(text, "per_second"), "unknown key")));
  const std::string order = std::string(kMinimal) +
                            "[[models.chat.backends]]\nprovider = \"p\"\nmodel = \"m2\"\n"
                            "budget = { requests_per_minute = 20, requests_per_hour = 10 }\n";
  EXPECT_THAT(
      ErrorsOf(order),
      ElementsAre(ErrorAt("models.chat.backends[1].budget.requests_per_hour",
                          LineOf(order, "budget ="), "must not be less than requests_per_minute")));
}

}  // namespace
}  // namespace berry::config::config_test
