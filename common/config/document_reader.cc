#include "common/config/document_reader.h"

#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>
#include <optional>
#include <span>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/config/diagnostics.h"
#include "common/config/schema.h"

namespace berry::config::internal {
namespace {

// Every key of a table, read by its row in schema.h.
template <typename T, size_t N>
void ReadFields(TableReader& reader, const Field<T> (&fields)[N], T& out) {
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
  // `{base_url}/chat/completions` must not become `...//chat/completions`. Every trailing `/`
  // goes, so the value read back from a written config is the same (RedactedToml round trip).
  while (base_url.ends_with('/')) {
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
// are set are compared, each with the closest shorter one of the same unit (requests, tokens).
void CheckRateLimitOrder(const std::string& path, const RateLimit& limit, Diagnostics& out) {
  using Window = std::pair<std::string_view, std::optional<int64_t>>;
  const Window requests[] = {
      {"requests_per_minute", limit.requests_per_minute},
      {"requests_per_hour", limit.requests_per_hour},
      {"requests_per_day", limit.requests_per_day},
  };
  const Window tokens[] = {
      {"tokens_per_minute", limit.tokens_per_minute},
      {"tokens_per_hour", limit.tokens_per_hour},
      {"tokens_per_day", limit.tokens_per_day},
  };
  for (const std::span<const Window> windows :
       {std::span<const Window>(requests), std::span<const Window>(tokens)}) {
    const Window* shorter = nullptr;
    for (const Window& window : windows) {
      if (!window.second.has_value()) {
        continue;
      }
      if (shorter != nullptr && *window.second < *shorter->second) {
        out.Error(ChildPath(path, window.first),
                  absl::StrCat(std::string(window.first), " (", *window.second,
                               ") must not be less than ", std::string(shorter->first), " (",
                               *shorter->second, ")"));
      }
      shorter = &window;
    }
  }
}

// ---- Tables. -------------------------------------------------------------------------------

// Berry API's SmartAI tuning: only its shape is checked, nothing is kept (see Settings), and
// its presence is a warning (schema::kSmartAiTuning).
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
  reader.ReadTable("smart_ai", schema::kSmartAiTuning, ReadSmartAi);
}

// `rate_limit` of a user, `budget` of a provider or backend: the same keys and order rules.
void ReadLimits(TableReader& reader, const char* key, RateLimit& limit) {
  reader.ReadTable(key, {}, [&limit](TableReader& limits) {
    ReadFields(limits, kRateLimitFields, limit);
    CheckRateLimitOrder(limits.path(), limit, limits.context().diagnostics);
  });
}

Provider ReadProvider(std::string_view id, TableReader& reader) {
  Provider provider;
  provider.id = std::string(id);
  provider.name = provider.id;
  ReadFields(reader, kProviderFields, provider);
  ReadLimits(reader, "budget", provider.budget);
  Diagnostics& diagnostics = reader.context().diagnostics;
  CheckBaseUrl(reader.path(), provider.base_url, diagnostics);
  CheckProviderSecrets(reader.path(), provider, diagnostics);
  return provider;
}

Backend ReadBackend(TableReader& reader) {
  Backend backend;
  ReadFields(reader, kBackendFields, backend);
  ReadLimits(reader, "budget", backend.budget);
  return backend;
}

CustomModel ReadModel(std::string_view id, TableReader& reader) {
  CustomModel model;
  model.id = std::string(id);
  model.name = model.id;
  ReadFields(reader, kModelFields, model);
  reader.ReadArrayOfTables(
      "backends", schema::kRequiredNotBlank,
      [&model](size_t, TableReader& backend) { model.backends.push_back(ReadBackend(backend)); });
  return model;
}

User ReadUser(std::string_view id, TableReader& reader) {
  User user;
  user.id = std::string(id);
  user.name = user.id;
  ReadFields(reader, kUserFields, user);
  ReadLimits(reader, "rate_limit", user.rate_limit);
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
