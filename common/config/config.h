// Berry's typed configuration: the operator's TOML (`[settings]`, `[providers.*]`,
// `[models.*]`, `[users.*]`) loaded, `${VAR}`-interpolated and validated once at the edge.
// A `Config` is immutable after loading; any thread may read it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace berry::config {

// `[settings]`. Defaults are DESIGN.md's. Berry API's `[settings.smart_ai]` tuning table is
// accepted and checked for shape, but not kept: it does not affect Berry's routing, and loading
// a file that has it warns (LoadResult::warnings).
struct Settings {
  int64_t health_check_interval_seconds = 30;
  int64_t health_check_timeout_seconds = 10;
  int64_t request_timeout_seconds = 30;
  int64_t stream_idle_timeout_seconds = 60;
  int64_t max_retries = 3;
  int64_t circuit_breaker_failure_threshold = 5;
  int64_t circuit_breaker_timeout_seconds = 60;
  int64_t recovery_check_interval_seconds = 120;
  // Berry API compatibility only: read and range-checked, used by nothing; a file that sets it
  // loads with a warning.
  int64_t max_internal_retries = 2;
  int64_t panic_threshold_percent = 50;
  int64_t max_request_body_bytes = 33554432;

  friend bool operator==(const Settings&, const Settings&) = default;
};

// `[users.<id>.rate_limit]`, and the `budget` of a provider or backend; unset = unlimited.
struct RateLimit {
  std::optional<int64_t> requests_per_minute;
  std::optional<int64_t> requests_per_hour;
  std::optional<int64_t> requests_per_day;
  // Prompt + completion tokens, as the upstream reports them.
  std::optional<int64_t> tokens_per_minute;
  std::optional<int64_t> tokens_per_hour;
  std::optional<int64_t> tokens_per_day;

  friend bool operator==(const RateLimit&, const RateLimit&) = default;
};

// `[providers.<id>]`.
struct Provider {
  std::string id;        // table key
  std::string name;      // defaults to id
  std::string base_url;  // http or https; a trailing "/" is stripped
  std::string api_key;   // secret
  std::vector<std::string> models;
  std::map<std::string, std::string> headers;  // sorted by name; values are secret
  bool enabled = true;
  int64_t timeout_seconds = 30;
  // Of one request's retries (attempts after the first), at most this many may go to this
  // provider's backends; Settings::max_retries still caps the total.
  int64_t max_retries = 3;
  // "openai", "anthropic" (alias "claude") or "gemini" (route_table::ParseDialect).
  std::string backend_type = "openai";
  bool tls_verify = true;
  std::string billing_mode = "per_token";  // Berry API compatibility: "per_token" | "per_request"
  // `[providers.<id>.budget]`: what the account allows, for all its backends together.
  RateLimit budget;

  friend bool operator==(const Provider&, const Provider&) = default;
};

enum class Strategy {
  kWeightedRandom,
  kRoundRobin,
  kRandom,
  kLeastLatency,
  kLeastRequests,
  kFailover,
  kWeightedFailover,
  kSmartWeightedFailover,
  kSmartAi,
};

// Every strategy, in declaration order.
inline constexpr Strategy kAllStrategies[] = {
    Strategy::kWeightedRandom,   Strategy::kRoundRobin,
    Strategy::kRandom,           Strategy::kLeastLatency,
    Strategy::kLeastRequests,    Strategy::kFailover,
    Strategy::kWeightedFailover, Strategy::kSmartWeightedFailover,
    Strategy::kSmartAi,
};

// Parses a TOML strategy name ("weighted_random", ...); nullopt for an unknown one.
std::optional<Strategy> ParseStrategy(std::string_view name);
// The TOML name of a strategy.
std::string_view StrategyName(Strategy strategy);

// `[[models.<id>.backends]]`.
struct Backend {
  std::string provider;  // provider id
  std::string model;     // upstream model name, listed in the provider's `models`
  double weight = 1.0;
  int64_t priority = 1;
  bool enabled = true;
  std::vector<std::string> tags;
  // Berry API documents `billing_mode` on backends as well as on providers; accepted in both
  // places so its configs load unchanged. "per_token" or "per_request".
  std::string billing_mode = "per_token";
  // `budget = { ... }`: this provider model's own allowance (on top of its provider's).
  RateLimit budget;

  friend bool operator==(const Backend&, const Backend&) = default;
};

// `[models.<id>]`.
struct CustomModel {
  std::string id;    // table key
  std::string name;  // what clients send; defaults to id
  Strategy strategy = Strategy::kWeightedRandom;
  bool enabled = true;
  std::vector<Backend> backends;

  friend bool operator==(const CustomModel&, const CustomModel&) = default;
};

// `[users.<id>]`.
struct User {
  std::string id;                           // table key
  std::string name;                         // defaults to id
  std::string token;                        // secret
  std::vector<std::string> allowed_models;  // custom model names or ids; empty = all
  bool enabled = true;
  std::vector<std::string> tags;
  RateLimit rate_limit;

  friend bool operator==(const User&, const User&) = default;
};

// Valid ranges enforced by validation.
inline constexpr int64_t kMinPriority = 0;
inline constexpr int64_t kMaxPriority = 1000;

// The whole validated config. Immutable: built only by the loader.
class Config {
 public:
  const Settings& settings() const { return settings_; }
  // Sorted by id.
  const std::vector<Provider>& providers() const { return providers_; }
  // Sorted by id.
  const std::vector<CustomModel>& models() const { return models_; }
  // Sorted by id.
  const std::vector<User>& users() const { return users_; }
  // File the config came from; empty when loaded from a string.
  const std::string& source() const { return source_; }

  const Provider* FindProvider(std::string_view id) const;
  // By custom model `name` (what clients send) first, then by table id.
  const CustomModel* FindModel(std::string_view name_or_id) const;

 private:
  friend class ConfigBuilder;
  Config() = default;

  std::string source_;
  Settings settings_;
  std::vector<Provider> providers_;
  std::vector<CustomModel> models_;
  std::vector<User> users_;
};

// One problem found while loading, or one warning. `line`/`column` are 1-based, 0 when unknown.
struct ConfigError {
  std::string file;
  std::string key_path;  // e.g. "models.gpt_4o.backends[1].weight"
  int line = 0;
  int column = 0;
  std::string reason;

  // "file:line:column: key_path: reason", omitting the parts that are unknown.
  std::string ToString() const;
};

// Reads environment variables for `${VAR}` interpolation; injectable for tests.
// Returns nullopt when the variable is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

struct LoadOptions {
  // Empty = the process environment (getenv).
  EnvLookup env;
};

// Result of a load that keeps every error, for callers that list them (berryctl, admin API).
struct LoadResult {
  std::optional<Config> config;     // set iff errors is empty
  std::vector<ConfigError> errors;  // every problem, in file order where known
  // Keys that load but change nothing (Berry API compatibility), in file order, with or without
  // errors. They never stop a config from loading; every program that loads a config shows
  // them to the operator.
  std::vector<ConfigError> warnings;
};

// Parses and validates TOML text. `source_name` is used in error messages (a path or "<api>").
LoadResult Parse(std::string_view toml_text, std::string_view source_name,
                 const LoadOptions& options = {});
// Reads and parses a file.
LoadResult LoadFile(const std::string& path, const LoadOptions& options = {});

// Loads a config file. On failure the status is InvalidArgument (NotFound for an unreadable
// file) and its message lists every error, one per line. Warnings are dropped: programs that
// show them to an operator use LoadFile.
absl::StatusOr<Config> Load(const std::string& path, const LoadOptions& options = {});

}  // namespace berry::config
