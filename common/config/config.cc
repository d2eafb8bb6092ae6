#include "common/config/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config/cross_check.h"
#include "common/config/diagnostics.h"
#include "common/config/document_reader.h"
#include "common/config/interpolate.h"
#include "common/config/table_reader.h"

namespace berry::config {
namespace {

constexpr std::pair<Strategy, std::string_view> kStrategyNames[] = {
    {Strategy::kWeightedRandom, "weighted_random"},
    {Strategy::kRoundRobin, "round_robin"},
    {Strategy::kRandom, "random"},
    {Strategy::kLeastLatency, "least_latency"},
    {Strategy::kLeastRequests, "least_requests"},
    {Strategy::kFailover, "failover"},
    {Strategy::kWeightedFailover, "weighted_failover"},
    {Strategy::kSmartWeightedFailover, "smart_weighted_failover"},
    {Strategy::kSmartAi, "smart_ai"},
};

template <typename T>
void SortById(std::vector<T>& items) {
  std::sort(items.begin(), items.end(), [](const T& a, const T& b) { return a.id < b.id; });
}

// toml++ quotes a few characters of the text it choked on ("..., saw 'sk'"); they may be the
// start of a secret, and the line and column already point at them.
std::string RedactParseError(std::string_view description) {
  constexpr std::string_view kSaw = ", saw '";
  std::string out;
  while (true) {
    const size_t start = description.find(kSaw);
    if (start == std::string_view::npos) {
      out += description;
      return out;
    }
    out += description.substr(0, start);
    const size_t end = description.find('\'', start + kSaw.size());
    if (end == std::string_view::npos) {
      return out;
    }
    description.remove_prefix(end + 1);
  }
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    return absl::NotFoundError(absl::StrCat("cannot read config file ", path, ": is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open config file ", path, ": ", std::strerror(errno)));
  }
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) {
    return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  }
  return text;
}

LoadResult Failed(std::vector<ConfigError> errors, std::vector<ConfigError> warnings = {}) {
  return LoadResult{
      .config = std::nullopt, .errors = std::move(errors), .warnings = std::move(warnings)};
}

}  // namespace

// The only way to make a Config: from a draft that passed every check.
class ConfigBuilder {
 public:
  static Config Build(internal::Draft draft, std::string source) {
    Config config;
    config.source_ = std::move(source);
    config.settings_ = draft.settings;
    config.providers_ = std::move(draft.providers);
    config.models_ = std::move(draft.models);
    config.users_ = std::move(draft.users);
    SortById(config.providers_);
    SortById(config.models_);
    SortById(config.users_);
    return config;
  }

  // Parses and checks `text`; `file` names it in errors, `source` is what Config::source() says.
  static LoadResult Load(std::string_view text, const std::string& file, std::string source,
                         const LoadOptions& options) {
    internal::Diagnostics diagnostics(file);
    toml::table root;
    try {
      root = toml::parse(text, std::string_view(file));
    } catch (const toml::parse_error& error) {
      diagnostics.ErrorAt(error.source(), "", RedactParseError(error.description()));
      return Failed(diagnostics.TakeErrors());
    }
    const EnvLookup env = options.env ? options.env : internal::ProcessEnvironment();
    internal::ReadContext context{.diagnostics = diagnostics, .env = env};
    internal::Draft draft = internal::ReadDocument(root, context);
    internal::CrossCheck(draft, diagnostics);
    if (!diagnostics.ok()) {
      return Failed(diagnostics.TakeErrors(), diagnostics.TakeWarnings());
    }
    return LoadResult{.config = Build(std::move(draft), std::move(source)),
                      .errors = {},
                      .warnings = diagnostics.TakeWarnings()};
  }
};

std::optional<Strategy> ParseStrategy(std::string_view name) {
  for (const auto& [strategy, strategy_name] : kStrategyNames) {
    if (strategy_name == name) {
      return strategy;
    }
  }
  return std::nullopt;
}

std::string_view StrategyName(Strategy strategy) {
  for (const auto& [candidate, name] : kStrategyNames) {
    if (candidate == strategy) {
      return name;
    }
  }
  return "unknown";  // only reachable through a cast from an out-of-range integer
}

const Provider* Config::FindProvider(std::string_view id) const {
  const auto it =
      std::lower_bound(providers_.begin(), providers_.end(), id,
                       [](const Provider& p, std::string_view key) { return p.id < key; });
  return it != providers_.end() && it->id == id ? &*it : nullptr;
}

// A linear scan is fine: requests are routed from the compiled RouteTable, not from here.
const CustomModel* Config::FindModel(std::string_view name_or_id) const {
  const auto by_name = std::find_if(models_.begin(), models_.end(),
                                    [&](const CustomModel& m) { return m.name == name_or_id; });
  if (by_name != models_.end()) {
    return &*by_name;
  }
  const auto by_id = std::find_if(models_.begin(), models_.end(),
                                  [&](const CustomModel& m) { return m.id == name_or_id; });
  return by_id != models_.end() ? &*by_id : nullptr;
}

std::string ConfigError::ToString() const {
  std::vector<std::string> parts;
  if (!file.empty()) {
    parts.push_back(file);
  }
  if (line > 0) {
    parts.push_back(absl::StrCat(line));
    if (column > 0) {
      parts.push_back(absl::StrCat(column));
    }
  }
  std::vector<std::string> sections;
  if (!parts.empty()) {
    sections.push_back(absl::StrJoin(parts, ":"));
  }
  if (!key_path.empty()) {
    sections.push_back(key_path);
  }
  sections.push_back(reason);
  return absl::StrJoin(sections, ": ");
}

LoadResult Parse(std::string_view toml_text, std::string_view source_name,
                 const LoadOptions& options) {
  return ConfigBuilder::Load(toml_text, std::string(source_name), "", options);
}

LoadResult LoadFile(const std::string& path, const LoadOptions& options) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return Failed({ConfigError{.file = path,
                               .key_path = "",
                               .line = 0,
                               .column = 0,
                               .reason = std::string(text.status().message())}});
  }
  return ConfigBuilder::Load(*text, path, path, options);
}

absl::StatusOr<Config> Load(const std::string& path, const LoadOptions& options) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return text.status();
  }
  LoadResult result = ConfigBuilder::Load(*text, path, path, options);
  if (!result.config.has_value()) {
    return absl::InvalidArgumentError(absl::StrJoin(
        result.errors, "\n",
        [](std::string* out, const ConfigError& error) { out->append(error.ToString()); }));
  }
  return *std::move(result.config);
}

}  // namespace berry::config
