#include "common/config/schema.h"

#include <toml++/toml.h>

#include <cstdlib>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace berry::config {
namespace {

// ---- Emitting. -----------------------------------------------------------------------------

// Strings are `${VAR}`-expanded when read; `$${` reads back as a literal `${`.
std::string Escaped(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.substr(i).starts_with("${")) {
      out += '$';
    }
    out += text[i];
  }
  return out;
}

// What a secret of one entity is emitted as, or nullopt to emit secrets as they are.
using Redaction = std::optional<std::string>;

template <typename T>
void Emit(const Field<T>& /*field*/, int64_t value, const Redaction&, std::string_view key,
          toml::table& out) {
  out.insert(key, value);
}

template <typename T>
void Emit(const Field<T>& /*field*/, const std::optional<int64_t>& value, const Redaction&,
          std::string_view key, toml::table& out) {
  if (value.has_value()) {
    out.insert(key, *value);
  }
}

template <typename T>
void Emit(const Field<T>& /*field*/, double value, const Redaction&, std::string_view key,
          toml::table& out) {
  out.insert(key, value);
}

template <typename T>
void Emit(const Field<T>& /*field*/, bool value, const Redaction&, std::string_view key,
          toml::table& out) {
  out.insert(key, value);
}

template <typename T>
void Emit(const Field<T>& field, const std::string& value, const Redaction& redaction,
          std::string_view key, toml::table& out) {
  out.insert(key, field.secret && redaction ? *redaction : Escaped(value));
}

template <typename T>
void Emit(const Field<T>& /*field*/, const std::vector<std::string>& values, const Redaction&,
          std::string_view key, toml::table& out) {
  toml::array array;
  for (const std::string& value : values) {
    array.push_back(Escaped(value));
  }
  out.insert(key, std::move(array));
}

template <typename T>
void Emit(const Field<T>& field, const std::map<std::string, std::string>& values,
          const Redaction& redaction, std::string_view key, toml::table& out) {
  if (values.empty()) {
    return;
  }
  toml::table table;
  table.is_inline(true);
  for (const auto& [name, value] : values) {
    // Names are taken as written; only values are expanded.
    table.insert(name, field.secret && redaction ? std::string(kRedacted) : Escaped(value));
  }
  out.insert(key, std::move(table));
}

template <typename T>
void Emit(const Field<T>& /*field*/, Strategy value, const Redaction&, std::string_view key,
          toml::table& out) {
  out.insert(key, std::string(StrategyName(value)));
}

// Every key of `fields` except those that only warn when read.
template <typename T, size_t N>
toml::table EmitFields(const Field<T> (&fields)[N], const T& in, const Redaction& redaction) {
  toml::table out;
  for (const Field<T>& field : fields) {
    if (field.rule.no_effect.empty()) {
      std::visit([&](auto member) { Emit(field, in.*member, redaction, field.key, out); },
                 field.member);
    }
  }
  return out;
}

// Adds `key` = the set limits, unless none is set.
void InsertLimits(const char* key, const RateLimit& limit, toml::table& out) {
  toml::table limits = EmitFields(kRateLimitFields, limit, std::nullopt);
  if (!limits.empty()) {
    out.insert(key, std::move(limits));
  }
}

toml::table ProviderTable(const Provider& provider, bool redact) {
  toml::table out = EmitFields(kProviderFields, provider,
                               redact ? Redaction(kRedacted) : Redaction(std::nullopt));
  InsertLimits("budget", provider.budget, out);
  return out;
}

toml::table ModelTable(const CustomModel& model) {
  toml::table out = EmitFields(kModelFields, model, std::nullopt);
  toml::array backends;
  for (const Backend& backend : model.backends) {
    toml::table table = EmitFields(kBackendFields, backend, std::nullopt);
    InsertLimits("budget", backend.budget, table);
    backends.push_back(std::move(table));
  }
  out.insert("backends", std::move(backends));
  return out;
}

toml::table UserTable(const User& user, bool redact) {
  // Tokens must be unique to load, so each user's placeholder names the user.
  toml::table out = EmitFields(
      kUserFields, user,
      redact ? Redaction(absl::StrCat("<redacted:", Escaped(user.id), ">")) : std::nullopt);
  InsertLimits("rate_limit", user.rate_limit, out);
  return out;
}

// Whether every float under `node` prints exactly in 6 significant digits. toml++ (as Debian
// builds it) prints floats with 17 digits, so 0.1 would come out as 0.10000000000000001; its
// relaxed precision prints 6, which is exact for the values operators write but would round
// others. Print relaxed only when nothing is lost.
bool FloatsSurviveSixDigits(const toml::node& node) {
  if (const auto* value = node.as_floating_point(); value != nullptr) {
    const double original = value->get();
    return std::strtod(absl::StrFormat("%.6g", original).c_str(), nullptr) == original;
  }
  bool exact = true;
  if (const auto* table = node.as_table(); table != nullptr) {
    for (const auto& [key, child] : *table) {
      exact = exact && FloatsSurviveSixDigits(child);
    }
  } else if (const auto* array = node.as_array(); array != nullptr) {
    for (const toml::node& child : *array) {
      exact = exact && FloatsSurviveSixDigits(child);
    }
  }
  return exact;
}

// One top-level table printed on its own, so sections come in the order a reader expects
// rather than toml++'s alphabetical one.
std::string Print(std::string_view key, toml::table section) {
  toml::table root;
  root.insert(key, std::move(section));
  toml::format_flags flags = toml::format_flags::allow_unicode_strings;
  if (FloatsSurviveSixDigits(root)) {
    flags = flags | toml::format_flags::relaxed_float_precision;
  }
  std::ostringstream out;
  out << toml::toml_formatter(root, flags) << "\n";
  return out.str();
}

template <typename T, typename MakeTable>
toml::table TableOfTables(const std::vector<T>& items, MakeTable&& make) {
  toml::table out;
  for (const T& item : items) {
    out.insert(item.id, make(item));
  }
  return out;
}

// ---- Diffing. ------------------------------------------------------------------------------

std::string Text(int64_t value) { return absl::StrCat(value); }
std::string Text(const std::optional<int64_t>& value) {
  return value ? absl::StrCat(*value) : "unlimited";
}
std::string Text(double value) { return absl::StrCat(value); }
std::string Text(bool value) { return value ? "true" : "false"; }
std::string Text(const std::string& value) { return value; }
std::string Text(const std::vector<std::string>& values) { return ListText(values); }
std::string Text(Strategy value) { return std::string(StrategyName(value)); }

std::vector<std::string> Names(const std::map<std::string, std::string>& values) {
  std::vector<std::string> names;
  names.reserve(values.size());
  for (const auto& [name, value] : values) {
    names.push_back(name);
  }
  return names;
}

template <typename T, size_t N>
std::vector<std::string> Changes(const Field<T> (&fields)[N], const T& before, const T& after) {
  std::vector<std::string> changes;
  for (const Field<T>& field : fields) {
    std::visit(
        [&](auto member) {
          const auto& old_value = before.*member;
          const auto& new_value = after.*member;
          if (old_value == new_value) {
            return;
          }
          const std::string key(field.key);
          if constexpr (std::is_same_v<std::decay_t<decltype(old_value)>,
                                       std::map<std::string, std::string>>) {
            const std::vector<std::string> old_names = Names(old_value);
            const std::vector<std::string> new_names = Names(new_value);
            changes.push_back(old_names == new_names ? absl::StrCat(key, " values changed")
                                                     : absl::StrCat(key, " ", ListText(old_names),
                                                                    " -> ", ListText(new_names)));
          } else if (field.secret) {
            changes.push_back(absl::StrCat(key, " changed"));
          } else {
            changes.push_back(absl::StrCat(key, " ", Text(old_value), " -> ", Text(new_value)));
          }
        },
        field.member);
  }
  return changes;
}

}  // namespace

std::string EmitToml(const Config& config, const EmitOptions& options) {
  const bool redact = options.redact_secrets;
  std::string out = Print("settings", EmitFields(kSettingsFields, config.settings(), std::nullopt));
  const auto add = [&out](std::string_view key, toml::table section) {
    if (!section.empty()) {
      absl::StrAppend(&out, "\n", Print(key, std::move(section)));
    }
  };
  add("providers", TableOfTables(config.providers(),
                                 [redact](const Provider& p) { return ProviderTable(p, redact); }));
  add("models", TableOfTables(config.models(), ModelTable));
  add("users",
      TableOfTables(config.users(), [redact](const User& u) { return UserTable(u, redact); }));
  return out;
}

std::string ListText(const std::vector<std::string>& items) {
  return absl::StrCat("[",
                      absl::StrJoin(items, ", ",
                                    [](std::string* out, const std::string& item) {
                                      absl::StrAppend(out, "\"", absl::CEscape(item), "\"");
                                    }),
                      "]");
}

std::vector<std::string> FieldChanges(const Settings& before, const Settings& after) {
  return Changes(kSettingsFields, before, after);
}
std::vector<std::string> FieldChanges(const Provider& before, const Provider& after) {
  return Changes(kProviderFields, before, after);
}
std::vector<std::string> FieldChanges(const CustomModel& before, const CustomModel& after) {
  return Changes(kModelFields, before, after);
}
std::vector<std::string> FieldChanges(const Backend& before, const Backend& after) {
  return Changes(kBackendFields, before, after);
}
std::vector<std::string> FieldChanges(const User& before, const User& after) {
  return Changes(kUserFields, before, after);
}
std::vector<std::string> FieldChanges(const RateLimit& before, const RateLimit& after) {
  return Changes(kRateLimitFields, before, after);
}

}  // namespace berry::config
