// The config's keys, one declarative table per TOML table: `[settings]`, `[providers.<id>]`,
// `[models.<id>]`, `[[models.<id>.backends]]`, `[users.<id>]` and `[users.<id>.rate_limit]`.
// Each row names the TOML key, the struct member it is read into (which gives its type; the
// member's initializer in config.h is its default), the checks its value must pass, and the
// berry.v1 field it is published as. The reader (document_reader.cc), the TOML emitter
// (EmitToml), the route-table compiler (common/route_table) and the config diff
// (FieldChanges, used by the admin API) all walk these tables, so a plain setting is added in
// one place. What a table cannot say (ids, nested tables, cross references) stays code.
// Constant data and pure functions; any thread.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/config/config.h"

namespace berry::config {

// What a value must satisfy beyond its type. Fields that do not apply to a type are ignored.
struct Rule {
  bool required = false;
  // Strings: not empty or whitespace only. Lists, tables, arrays of tables: at least one entry.
  bool not_blank = false;
  // Integers: inclusive bounds.
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
  // Numbers read as floating point: finite and greater than 0.
  bool positive = false;
  // Strings: the accepted spellings; empty = any.
  std::span<const std::string_view> one_of = {};
  // Strings with `one_of`: why any other value is refused, when the refusal needs explaining
  // (a value another product accepts, say); said in the error instead of "unknown value".
  std::string_view refused_because = {};
  // Any type: the key loads but changes nothing (it is accepted so that Berry API configs load).
  // When the key is present this is reported as a warning at the key; never an error. Such a
  // key is never emitted (EmitToml), so re-emitted configs load without warnings.
  std::string_view no_effect = {};
};

// The struct member a key is read into; its type is the key's TOML type.
template <typename T>
using Member = std::variant<int64_t T::*, std::optional<int64_t> T::*, double T::*, bool T::*,
                            std::string T::*, std::vector<std::string> T::*,
                            std::map<std::string, std::string> T::*, Strategy T::*>;

template <typename T>
struct Field {
  std::string_view key;
  Member<T> member;
  Rule rule = {};
  // The field of the matching berry.v1 message (Settings, Provider, CustomModel, Backend,
  // ClientKey, RateLimit) that Compile() copies the value into: an integer into an integer or
  // into a Duration's seconds, a list sorted with duplicates removed, an unset optional as 0, a
  // strategy as its enum value. Empty = the compiler handles the key itself (it transforms the
  // value) or it is not published.
  std::string_view proto_field = {};
  // Never emitted or diffed in clear: emitted as kRedacted (for a table of strings, each value),
  // and a change is described without the values.
  bool secret = false;
};

namespace schema {

inline constexpr Rule kPositive = {.min = 1};
inline constexpr Rule kNonNegative = {.min = 0};
inline constexpr Rule kPercent = {.min = 0, .max = 100};
inline constexpr Rule kPriority = {.min = kMinPriority, .max = kMaxPriority};
inline constexpr Rule kName = {.not_blank = true};
inline constexpr Rule kRequired = {.required = true};
inline constexpr Rule kRequiredNotBlank = {.required = true, .not_blank = true};
inline constexpr Rule kWeight = {.positive = true};

inline constexpr std::string_view kBillingModes[] = {"per_token", "per_request"};
inline constexpr Rule kBillingMode = {.one_of = kBillingModes};
// "anthropic" speaks Anthropic's Messages API, "gemini" the Gemini API (data-plane/dialect);
// "claude" is Berry API's name for "anthropic".
inline constexpr std::string_view kBackendTypes[] = {"openai", "anthropic", "claude", "gemini"};
inline constexpr Rule kBackendType = {
    .one_of = kBackendTypes,
    .refused_because =
        "Berry speaks OpenAI's API, Anthropic's Messages API and the Gemini API upstream; "
        "for another provider use \"openai\" with its OpenAI-compatible base_url"};

// Berry API keys that load but change nothing here: each is a warning when present.
inline constexpr Rule kMaxInternalRetries = {
    .min = 0,
    .no_effect =
        "has no effect: Berry's selection only ever draws usable backends, so there is "
        "no unusable pick to re-draw (accepted so Berry API configs load; retries on "
        "other backends are settings.max_retries)"};
inline constexpr Rule kSmartAiTuning = {
    .no_effect =
        "has no effect: Berry API's SmartAI tuning is accepted so its configs load, but "
        "Berry's smart strategies (smart_ai, smart_weighted_failover) weight backends by "
        "the fleet's recent success rate instead"};

}  // namespace schema

// `[settings]`; the `[settings.smart_ai]` sub-table is read by hand (nothing of it is kept).
inline constexpr Field<Settings> kSettingsFields[] = {
    {"health_check_interval_seconds", &Settings::health_check_interval_seconds, schema::kPositive,
     "health_check_interval"},
    {"health_check_timeout_seconds", &Settings::health_check_timeout_seconds, schema::kPositive,
     "health_check_timeout"},
    {"request_timeout_seconds", &Settings::request_timeout_seconds, schema::kPositive,
     "request_timeout"},
    {"stream_idle_timeout_seconds", &Settings::stream_idle_timeout_seconds, schema::kPositive,
     "stream_idle_timeout"},
    {"max_retries", &Settings::max_retries, schema::kNonNegative, "max_retries"},
    {"circuit_breaker_failure_threshold", &Settings::circuit_breaker_failure_threshold,
     schema::kPositive, "circuit_breaker_failure_threshold"},
    {"circuit_breaker_timeout_seconds", &Settings::circuit_breaker_timeout_seconds,
     schema::kPositive, "circuit_breaker_timeout"},
    {"recovery_check_interval_seconds", &Settings::recovery_check_interval_seconds,
     schema::kPositive, "recovery_check_interval"},
    {"max_internal_retries", &Settings::max_internal_retries, schema::kMaxInternalRetries,
     "max_internal_retries"},
    {"panic_threshold_percent", &Settings::panic_threshold_percent, schema::kPercent,
     "panic_threshold_percent"},
    {"max_request_body_bytes", &Settings::max_request_body_bytes, schema::kPositive,
     "max_request_body_bytes"},
};

// `[providers.<id>]`; the id is the table key. `headers` is compiled by hand (a list of
// name/value messages).
inline constexpr Field<Provider> kProviderFields[] = {
    {"name", &Provider::name, schema::kName, "name"},
    {"base_url", &Provider::base_url, schema::kRequired, "base_url"},
    // Present but empty is allowed: local OpenAI-compatible servers often need no key.
    {"api_key", &Provider::api_key, schema::kRequired, "api_key", /*secret=*/true},
    {"models", &Provider::models, schema::kRequiredNotBlank, "models"},
    {"headers", &Provider::headers, {}, {}, /*secret=*/true},
    {"enabled", &Provider::enabled, {}, "enabled"},
    {"timeout_seconds", &Provider::timeout_seconds, schema::kPositive, "timeout"},
    {"max_retries", &Provider::max_retries, schema::kNonNegative, "max_retries"},
    {"backend_type", &Provider::backend_type, schema::kBackendType, "backend_type"},
    {"tls_verify", &Provider::tls_verify, {}, "tls_verify"},
    {"billing_mode", &Provider::billing_mode, schema::kBillingMode, "billing_mode"},
};

// `[models.<id>]`; the id is the table key, `[[backends]]` is kBackendFields.
inline constexpr Field<CustomModel> kModelFields[] = {
    {"name", &CustomModel::name, schema::kName, "name"},
    {"strategy", &CustomModel::strategy, {}, "strategy"},
    {"enabled", &CustomModel::enabled, {}, "enabled"},
};

// `[[models.<id>.backends]]`. `provider` and `model` also make the backend's id (compiler).
inline constexpr Field<Backend> kBackendFields[] = {
    {"provider", &Backend::provider, schema::kRequiredNotBlank, "provider_id"},
    {"model", &Backend::model, schema::kRequiredNotBlank, "upstream_model"},
    {"weight", &Backend::weight, schema::kWeight, "weight"},
    {"priority", &Backend::priority, schema::kPriority, "priority"},
    {"enabled", &Backend::enabled, {}, "enabled"},
    {"tags", &Backend::tags, {}, "tags"},
    {"billing_mode", &Backend::billing_mode, schema::kBillingMode},
};

// `[users.<id>]`; the id is the table key. `token` is published as its SHA-256 and
// `allowed_models` normalised to model names, both by the compiler.
inline constexpr Field<User> kUserFields[] = {
    {"name", &User::name, schema::kName, "name"},
    {"token", &User::token, schema::kRequiredNotBlank, {}, /*secret=*/true},
    {"allowed_models", &User::allowed_models},
    {"enabled", &User::enabled, {}, "enabled"},
    {"tags", &User::tags, {}, "tags"},
};

// `[users.<id>.rate_limit]`.
inline constexpr Field<RateLimit> kRateLimitFields[] = {
    {"requests_per_minute", &RateLimit::requests_per_minute, schema::kPositive,
     "requests_per_minute"},
    {"requests_per_hour", &RateLimit::requests_per_hour, schema::kPositive, "requests_per_hour"},
    {"requests_per_day", &RateLimit::requests_per_day, schema::kPositive, "requests_per_day"},
    {"tokens_per_minute", &RateLimit::tokens_per_minute, schema::kPositive, "tokens_per_minute"},
    {"tokens_per_hour", &RateLimit::tokens_per_hour, schema::kPositive, "tokens_per_hour"},
    {"tokens_per_day", &RateLimit::tokens_per_day, schema::kPositive, "tokens_per_day"},
};

// What every secret is replaced with when emitted redacted.
inline constexpr char kRedacted[] = "<redacted>";

struct EmitOptions {
  // Secrets (provider `api_key`, every `headers` value) read kRedacted; each user's `token`
  // reads "<redacted:ID>" instead, because tokens must be unique for the text to load.
  bool redact_secrets = true;
};

// The config as TOML, printed by toml++'s formatter: `[settings]`, then providers, models and
// users by id, every key of the tables above with its value (defaults included) except keys
// that have no effect. Strings are written so that they read back as they are (`${` as `$${`).
// Unredacted, the text loads back into an equal config (keys with no effect at their
// defaults); redacted, it loads too, with secrets replaced.
std::string EmitToml(const Config& config, const EmitOptions& options = {});

// "key before -> after" for each key of the table whose value differs, in table order: lists
// as ["a", "b"], an unset limit as "unlimited"; a secret as "key changed" (for a table of
// secret strings: "key [names] -> [names]" when names differ, else "key values changed").
std::vector<std::string> FieldChanges(const Settings& before, const Settings& after);
std::vector<std::string> FieldChanges(const Provider& before, const Provider& after);
std::vector<std::string> FieldChanges(const CustomModel& before, const CustomModel& after);
std::vector<std::string> FieldChanges(const Backend& before, const Backend& after);
std::vector<std::string> FieldChanges(const User& before, const User& after);
std::vector<std::string> FieldChanges(const RateLimit& before, const RateLimit& after);

// A string list as a diff shows it: ["a", "b"].
std::string ListText(const std::vector<std::string>& items);

}  // namespace berry::config
