#include "common/config/document_reader.h"

#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>
#include <optional>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/config/diagnostics.h"

namespace berry::config::internal {
namespace {

// ---- The key schema: one row per scalar key, so every table is read the same way. ----------

template <typename T>
using Member = std::variant<int64_t T::*, std::optional<int64_t> T::*, double T::*, bool T::*,
                            std::string T::*, std::vector<std::string> T::*,
                            std::map<std::string, std::string> T::*, Strategy T::*>;

template <typename T>
struct Field {
  std::string_view key;
  Member<T> member;
  Rule rule = {};
};

constexpr Rule kPositive = {.min = 1};
constexpr Rule kNonNegative = {.min = 0};
constexpr Rule kPercent = {.min = 0, .max = 100};
constexpr Rule kPriority = {.min = kMinPriority, .max = kMaxPriority};
constexpr Rule kName = {.not_blank = true};
constexpr Rule kRequired = {.required = true};
constexpr Rule kRequiredNotBlank = {.required = true, .not_blank = true};
constexpr Rule kWeight = {.positive = true};

constexpr std::string_view kBillingModes[] = {"per_token", "per_request"};
constexpr Rule kBillingMode = {.one_of = kBillingModes};
// Berry API also knows "claude" and "gemini"; Berry speaks only OpenAI's API upstream so far,
// and a request sent in OpenAI's shape to a native Anthropic or Gemini endpoint would fail.
constexpr std::string_view kBackendTypes[] = {"openai"};
constexpr Rule kBackendType = {
    .one_of = kBackendTypes,
    .refused_because =
        "Berry sends every request in OpenAI's shape ({base_url}/chat/completions with "
        "`Authorization: Bearer`), which Anthropic's and Gemini's native APIs reject; use "
        "\"openai\" with the provider's OpenAI-compatible base_url"};

// Berry API keys that load but change nothing here: each is a warning when present.
constexpr Rule kMaxInternalRetries = {
    .min = 0,
    .no_effect =
        "has no effect: Berry's selection only ever draws usable backends, so there is "
        "no unusable pick to re-draw (accepted so Berry API configs load; retries on "
        "other backends are settings.max_retries)"};
constexpr Rule kSmartAiTuning = {
    .no_effect =
        "has no effect: Berry API's SmartAI tuning is accepted so its configs load, but "
        "Berry's smart strategies (smart_ai, smart_weighted_failover) weight backends by "
        "the fleet's recent success rate instead"};

constexpr Field<Settings> kSettingsFields[] = {
    {"health_check_interval_seconds", &Settings::health_check_interval_seconds, kPositive},
    {"health_check_timeout_seconds", &Settings::health_check_timeout_seconds, kPositive},
    {"request_timeout_seconds", &Settings::request_timeout_seconds, kPositive},
    {"stream_idle_timeout_seconds", &Settings::stream_idle_timeout_seconds, kPositive},
    {"max_retries", &Settings::max_retries, kNonNegative},
    {"circuit_breaker_failure_threshold", &Settings::circuit_breaker_failure_threshold, kPositive},
    {"circuit_breaker_timeout_seconds", &Settings::circuit_breaker_timeout_seconds, kPositive},
    {"recovery_check_interval_seconds", &Settings::recovery_check_interval_seconds, kPositive},
    {"max_internal_retries", &Settings::max_internal_retries, kMaxInternalRetries},
    {"panic_threshold_percent", &Settings::panic_threshold_percent, kPercent},
    {"max_request_body_bytes", &Settings::max_request_body_bytes, kPositive},
};

constexpr Field<Provider> kProviderFields[] = {
    {"name", &Provider::name, kName},
    {"base_url", &Provider::base_url, kRequired},
    // Present but empty is allowed: local OpenAI-compatible servers often need no key.
    {"api_key", &Provider::api_key, kRequired},
    {"models", &Provider::models, kRequiredNotBlank},
    {"headers", &Provider::headers},
    {"enabled", &Provider::enabled},
    {"timeout_seconds", &Provider::timeout_seconds, kPositive},
    {"max_retries", &Provider::max_retries, kNonNegative},
    {"backend_type", &Provider::backend_type, kBackendType},
    {"tls_verify", &Provider::tls_verify},
    {"billing_mode", &Provider::billing_mode, kBillingMode},
};

constexpr Field<CustomModel> kModelFields[] = {
    {"name", &CustomModel::name, kName},
    {"strategy", &CustomModel::strategy},
    {"enabled", &CustomModel::enabled},
};

constexpr Field<Backend> kBackendFields[] = {
    {"provider", &Backend::provider, kRequiredNotBlank},
    {"model", &Backend::model, kRequiredNotBlank},
    {"weight", &Backend::weight, kWeight},
    {"priority", &Backend::priority, kPriority},
    {"enabled", &Backend::enabled},
    {"tags", &Backend::tags},
    {"billing_mode", &Backend::billing_mode, kBillingMode},
};

constexpr Field<User> kUserFields[] = {
    {"name", &User::name, kName},
    {"token", &User::token, kRequiredNotBlank},
    {"allowed_models", &User::allowed_models},
    {"enabled", &User::enabled},
    {"tags", &User::tags},
};

constexpr Field<RateLimit> kRateLimitFields[] = {
    {"requests_per_minute", &RateLimit::requests_per_minute, kPositive},
    {"requests_per_hour", &RateLimit::requests_per_hour, kPositive},
    {"requests_per_day", &RateLimit::requests_per_day, kPositive},
};

template <typename T, typename Fields>
void ReadFields(TableReader& reader, const Fields& fields, T& out) {
  for (const Field<T>& field : fields) {
    std::visit([&](auto member) { reader.Read(field.key, field.rule, out.*member); }, field.member);
  }
}

// ---- Checks on single values that the schema cannot express. ------------------------------

// RFC 9110 `token`: what a header name may consist of.
bool IsHttpToken(std::string_view name) {
  constexpr std::string_view kSymbols = "!#$%&'*+-.^_`|~";
  return !name.empty() && std::all_of(name.begin(), name.end(), [&](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
           kSymbols.find(c) != std::string_view::npos;
  });
}

// Values that end up in request headers must not smuggle in a line break (a key exported with
// a trailing newline is the usual way this happens) or other control characters.
bool IsHeaderSafe(std::string_view value) {
  return std::none_of(value.begin(), value.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return (byte < 0x20 && byte != '\t') || byte == 0x7f;
  });
}

constexpr std::string_view kControlCharacters =
    "must not contain control characters such as CR or LF";

// Why `url` cannot be a provider base URL, or nullopt when it can. The URL is not echoed: it
// may carry credentials.
std::optional<std::string_view> BaseUrlProblem(std::string_view url) {
  const auto parsed = boost::urls::parse_uri(url);
  if (!parsed) {
    return "is not a valid absolute URL";
  }
  if (parsed->scheme_id() != boost::urls::scheme::http &&
      parsed->scheme_id() != boost::urls::scheme::https) {
    return "scheme must be http or https";
  }
  if (!parsed->has_authority() || parsed->encoded_host().empty()) {
    return "must include a host";
  }
  if (parsed->has_port() && parsed->port_number() == 0) {
    return "port must be between 1 and 65535";
  }
  if (parsed->has_query() || parsed->has_fragment()) {
    return "must not have a query or fragment: request paths are appended to it";
  }
  return std::nullopt;
}

void CheckBaseUrl(const std::string& provider_path, std::string& base_url, Diagnostics& out) {
  const std::string path = ChildPath(provider_path, "base_url");
  if (out.HasErrorAt(path)) {
    return;  // missing or not a string: already reported
  }
  if (const auto problem = BaseUrlProblem(base_url)) {
    out.Error(path, std::string(*problem));
    return;
  }
  // `{base_url}/chat/completions` must not become `...//chat/completions`.
  if (base_url.ends_with('/')) {
    base_url.pop_back();
  }
}

void CheckProviderSecrets(const std::string& provider_path, const Provider& provider,
                          Diagnostics& out) {
  if (!IsHeaderSafe(provider.api_key)) {
    out.Error(ChildPath(provider_path, "api_key"), std::string(kControlCharacters));
  }
  const std::string headers_path = ChildPath(provider_path, "headers");
  for (const auto& [name, value] : provider.headers) {
    const std::string path = ChildPath(headers_path, name);
    if (!IsHttpToken(name)) {
      out.Error(path, "invalid header name: only HTTP token characters are allowed");
    }
    if (!IsHeaderSafe(value)) {
      out.Error(path, std::string(kControlCharacters));
    }
  }
}

// Limits for longer windows must admit at least as much as shorter ones; only the limits that
// are set are compared, each with the closest shorter one.
void CheckRateLimitOrder(const std::string& path, const RateLimit& limit, Diagnostics& out) {
  const std::pair<std::string_view, std::optional<int64_t>> windows[] = {
      {"requests_per_minute", limit.requests_per_minute},
      {"requests_per_hour", limit.requests_per_hour},
      {"requests_per_day", limit.requests_per_day},
  };
  const std::pair<std::string_view, std::optional<int64_t>>* shorter = nullptr;
  for (const auto& window : windows) {
    if (!window.second.has_value()) {
      continue;
    }
    if (shorter != nullptr && *window.second < *shorter->second) {
      out.Error(
          ChildPath(path, window.first),
          absl::StrCat(std::string(window.first), " (", *window.second, ") must not be less than ",
                       std::string(shorter->first), " (", *shorter->second, ")"));
    }
    shorter = &window;
  }
}

// ---- Tables. -------------------------------------------------------------------------------

// Berry API's SmartAI tuning: only its shape is checked, nothing is kept (see Settings), and
// its presence is a warning (kSmartAiTuning).
void ReadSmartAiValues(TableReader& reader) {
  reader.ReadRemaining([&reader](const toml::node& value, const std::string& path) {
    if (!value.is_number() && !value.is_boolean()) {
      reader.context().diagnostics.Error(
          path, absl::StrCat("expected number or boolean, got ", std::string(TypeName(value))));
    }
  });
}

void ReadSmartAi(TableReader& reader) {
  reader.ReadTable("confidence_adjustments", {}, ReadSmartAiValues);
  ReadSmartAiValues(reader);
}

void ReadSettings(TableReader& reader, Settings& settings) {
  ReadFields(reader, kSettingsFields, settings);
  reader.ReadTable("smart_ai", kSmartAiTuning, ReadSmartAi);
}

Provider ReadProvider(std::string_view id, TableReader& reader) {
  Provider provider;
  provider.id = std::string(id);
  provider.name = provider.id;
  ReadFields(reader, kProviderFields, provider);
  Diagnostics& diagnostics = reader.context().diagnostics;
  CheckBaseUrl(reader.path(), provider.base_url, diagnostics);
  CheckProviderSecrets(reader.path(), provider, diagnostics);
  return provider;
}

Backend ReadBackend(TableReader& reader) {
  Backend backend;
  ReadFields(reader, kBackendFields, backend);
  return backend;
}

CustomModel ReadModel(std::string_view id, TableReader& reader) {
  CustomModel model;
  model.id = std::string(id);
  model.name = model.id;
  ReadFields(reader, kModelFields, model);
  reader.ReadArrayOfTables("backends", kRequiredNotBlank, [&model](size_t, TableReader& backend) {
    model.backends.push_back(ReadBackend(backend));
  });
  return model;
}

User ReadUser(std::string_view id, TableReader& reader) {
  User user;
  user.id = std::string(id);
  user.name = user.id;
  ReadFields(reader, kUserFields, user);
  reader.ReadTable("rate_limit", {}, [&user](TableReader& limits) {
    ReadFields(limits, kRateLimitFields, user.rate_limit);
    CheckRateLimitOrder(limits.path(), user.rate_limit, limits.context().diagnostics);
  });
  return user;
}

}  // namespace

std::string ProviderPath(std::string_view id) { return ChildPath("providers", id); }
std::string ModelPath(std::string_view id) { return ChildPath("models", id); }
std::string UserPath(std::string_view id) { return ChildPath("users", id); }

Draft ReadDocument(const toml::table& root, ReadContext& context) {
  Draft draft;
  TableReader::Visit(root, "", context, [&draft](TableReader& reader) {
    reader.ReadTable("settings", {},
                     [&draft](TableReader& settings) { ReadSettings(settings, draft.settings); });
    reader.ReadTableOfTables("providers", {}, [&draft](std::string_view id, TableReader& table) {
      draft.providers.push_back(ReadProvider(id, table));
    });
    reader.ReadTableOfTables("models", {}, [&draft](std::string_view id, TableReader& table) {
      draft.models.push_back(ReadModel(id, table));
    });
    reader.ReadTableOfTables("users", {}, [&draft](std::string_view id, TableReader& table) {
      draft.users.push_back(ReadUser(id, table));
    });
  });
  return draft;
}

}  // namespace berry::config::internal
