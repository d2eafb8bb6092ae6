#include "common/config/table_reader.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config/interpolate.h"

namespace berry::config::internal {
namespace {

constexpr int64_t kLowest = std::numeric_limits<int64_t>::min();
constexpr int64_t kHighest = std::numeric_limits<int64_t>::max();

// Items of string lists (models, tags, allowed_models) are names: never blank.
constexpr Rule kListItem = {.not_blank = true};

bool IsBlank(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); });
}

// Debian's Abseil has its own string_view type, so joining std::string_views needs a formatter.
void AppendView(std::string* out, std::string_view text) { out->append(text); }

std::string RangeReason(const Rule& rule, int64_t value) {
  if (rule.max == kHighest) {
    if (rule.min == 1) {
      return absl::StrCat("must be greater than 0, got ", value);
    }
    return absl::StrCat("must be at least ", rule.min, ", got ", value);
  }
  if (rule.min == kLowest) {
    return absl::StrCat("must be at most ", rule.max, ", got ", value);
  }
  return absl::StrCat("must be between ", rule.min, " and ", rule.max, ", got ", value);
}

std::string StrategyList() {
  return absl::StrJoin(kAllStrategies, ", ", [](std::string* out, Strategy strategy) {
    AppendView(out, StrategyName(strategy));
  });
}

}  // namespace

std::string_view TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

void TableReader::Visit(const toml::table& table, std::string path, ReadContext& context,
                        const Visitor& visit) {
  TableReader reader(table, std::move(path), context);
  visit(reader);
  reader.ReportUnknownKeys();
}

void TableReader::Read(std::string_view key, const Rule& rule, int64_t& out) {
  std::optional<int64_t> value;
  Read(key, rule, value);
  if (value.has_value()) {
    out = *value;
  }
}

void TableReader::Read(std::string_view key, const Rule& rule, std::optional<int64_t>& out) {
  WithValue(key, rule, [&](const toml::node& node, const std::string& path) {
    const auto* integer = node.as_integer();
    if (integer == nullptr) {
      TypeError(path, "integer", node);
    } else if (const int64_t value = integer->get(); value < rule.min || value > rule.max) {
      Error(path, RangeReason(rule, value));
    } else {
      out = value;
    }
  });
}

void TableReader::Read(std::string_view key, const Rule& rule, double& out) {
  WithValue(key, rule, [&](const toml::node& node, const std::string& path) {
    double value = 0;
    if (const auto* integer = node.as_integer(); integer != nullptr) {
      value = static_cast<double>(integer->get());
    } else if (const auto* floating = node.as_floating_point(); floating != nullptr) {
      value = floating->get();
    } else {
      TypeError(path, "number", node);
      return;
    }
    if (rule.positive && !(std::isfinite(value) && value > 0)) {
      Error(path, absl::StrCat("must be a finite number greater than 0, got ", value));
      return;
    }
    out = value;
  });
}

void TableReader::Read(std::string_view key, const Rule& rule, bool& out) {
  WithValue(key, rule, [&](const toml::node& node, const std::string& path) {
    if (const auto* boolean = node.as_boolean(); boolean != nullptr) {
      out = boolean->get();
    } else {
      TypeError(path, "boolean", node);
    }
  });
}

void TableReader::Read(std::string_view key, const Rule& rule, std::string& out) {
  WithValue(key, rule, [&](const toml::node& node, const std::string& path) {
    if (std::optional<std::string> value = String(node, path, rule)) {
      out = *std::move(value);
    }
  });
}

void TableReader::Read(std::string_view key, const Rule& rule, std::vector<std::string>& out) {
  WithValue(key, rule, [&](const toml::node& node, const std::string& path) {
    const toml::array* array = node.as_array();
    if (array == nullptr) {
      TypeError(path, "array of strings", node);
    } else if (rule.not_blank && array->empty()) {
      Error(path, "must not be empty");
    } else if (std::optional<std::vector<std::string>> values = Strings(*array, path)) {
      out = *std::move(values);
    }
  });
}

void TableReader::Read(std::string_view key, const Rule& rule,
                       std::map<std::string, std::string>& out) {
  const toml::table* table = Table(key, rule);
  if (table == nullptr) {
    return;
  }
  const std::string path = ChildPath(path_, key);
  for (const auto& [name, value] : *table) {
    const std::string entry_path = ChildPath(path, name.str());
    context_.diagnostics.Locate(entry_path, value.source());
    if (std::optional<std::string> text = String(value, entry_path, Rule{})) {
      out[std::string(name.str())] = *std::move(text);
    }
  }
}

void TableReader::Read(std::string_view key, const Rule& rule, Strategy& out) {
  WithValue(key, rule, [&](const toml::node& node, const std::string& path) {
    const std::optional<std::string> name = String(node, path, Rule{});
    if (!name.has_value()) {
      return;
    }
    if (const std::optional<Strategy> strategy = ParseStrategy(*name)) {
      out = *strategy;
    } else {
      Error(path, absl::StrCat("unknown strategy \"", node.as_string()->get(),
                               "\"; expected one of: ", StrategyList()));
    }
  });
}

void TableReader::ReadTable(std::string_view key, const Rule& rule, const Visitor& visit) {
  if (const toml::table* table = Table(key, rule); table != nullptr) {
    Visit(*table, ChildPath(path_, key), context_, visit);
  }
}

void TableReader::ReadTableOfTables(std::string_view key, const Rule& rule,
                                    const EntryVisitor& visit) {
  const toml::table* table = Table(key, rule);
  if (table == nullptr) {
    return;
  }
  const std::string path = ChildPath(path_, key);
  for (const auto& [id, value] : *table) {
    const std::string entry_path = ChildPath(path, id.str());
    context_.diagnostics.Locate(entry_path, value.source());
    if (id.str().empty()) {
      context_.diagnostics.ErrorAt(id.source(), entry_path, "table key must not be empty");
    } else if (const toml::table* entry = value.as_table(); entry == nullptr) {
      TypeError(entry_path, "table", value);
    } else {
      Visit(*entry, entry_path, context_,
            [&visit, id = id.str()](TableReader& reader) { visit(id, reader); });
    }
  }
}

void TableReader::ReadArrayOfTables(std::string_view key, const Rule& rule,
                                    const ElementVisitor& visit) {
  WithValue(key, rule, [&](const toml::node& node, const std::string& path) {
    const toml::array* array = node.as_array();
    if (array == nullptr) {
      TypeError(path, "array of tables", node);
      return;
    }
    if (rule.not_blank && array->empty()) {
      Error(path, "must not be empty");
      return;
    }
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = *array->get(i);
      const std::string element_path = IndexPath(path, i);
      context_.diagnostics.Locate(element_path, element.source());
      if (const toml::table* table = element.as_table(); table == nullptr) {
        TypeError(element_path, "table", element);
      } else {
        Visit(*table, element_path, context_,
              [&visit, i](TableReader& reader) { visit(i, reader); });
      }
    }
  });
}

void TableReader::ReadRemaining(const RawVisitor& visit) {
  for (const auto& [key, value] : table_) {
    if (known_keys_.contains(key.str())) {
      continue;
    }
    known_keys_.emplace(key.str());
    const std::string path = ChildPath(path_, key.str());
    context_.diagnostics.Locate(path, value.source());
    visit(value, path);
  }
}

const toml::node* TableReader::Find(std::string_view key, const Rule& rule) {
  known_keys_.emplace(key);
  const toml::node* node = table_.get(key);
  if (node == nullptr) {
    if (rule.required) {
      Error(ChildPath(path_, key), "missing required key");
    }
    return nullptr;
  }
  const std::string path = ChildPath(path_, key);
  context_.diagnostics.Locate(path, node->source());
  if (!rule.no_effect.empty()) {
    context_.diagnostics.Warning(path, std::string(rule.no_effect));
  }
  return node;
}

template <typename ReadValue>
void TableReader::WithValue(std::string_view key, const Rule& rule, ReadValue&& read) {
  if (const toml::node* node = Find(key, rule); node != nullptr) {
    read(*node, ChildPath(path_, key));
  }
}

std::optional<std::vector<std::string>> TableReader::Strings(const toml::array& array,
                                                             const std::string& path) const {
  std::vector<std::string> values;
  bool all_valid = true;
  for (size_t i = 0; i < array.size(); ++i) {
    const toml::node& item = *array.get(i);
    const std::string item_path = IndexPath(path, i);
    context_.diagnostics.Locate(item_path, item.source());
    if (std::optional<std::string> value = String(item, item_path, kListItem)) {
      values.push_back(*std::move(value));
    } else {
      all_valid = false;
    }
  }
  if (!all_valid) {
    return std::nullopt;
  }
  return values;
}

std::optional<std::string> TableReader::String(const toml::node& node, const std::string& path,
                                               const Rule& rule) const {
  const auto* text = node.as_string();
  if (text == nullptr) {
    TypeError(path, "string", node);
    return std::nullopt;
  }
  Interpolated interpolated = Interpolate(text->get(), context_.env);
  for (std::string& problem : interpolated.problems) {
    Error(path, std::move(problem));
  }
  if (!interpolated.problems.empty()) {
    return std::nullopt;
  }
  if (rule.not_blank && IsBlank(interpolated.value)) {
    Error(path, "must not be empty or whitespace only");
    return std::nullopt;
  }
  if (!rule.one_of.empty() &&
      std::find(rule.one_of.begin(), rule.one_of.end(), interpolated.value) == rule.one_of.end()) {
    // Echo the value as written, not as expanded: an expansion could be a secret.
    if (rule.refused_because.empty()) {
      Error(path, absl::StrCat("unknown value \"", text->get(), "\"; expected one of: ",
                               absl::StrJoin(rule.one_of, ", ", AppendView)));
    } else {
      Error(path, absl::StrCat("\"", text->get(), "\" is not supported; expected one of: ",
                               absl::StrJoin(rule.one_of, ", ", AppendView), ": ",
                               std::string(rule.refused_because)));
    }
    return std::nullopt;
  }
  return std::move(interpolated.value);
}

const toml::table* TableReader::Table(std::string_view key, const Rule& rule) {
  const toml::table* table = nullptr;
  WithValue(key, rule, [&](const toml::node& node, const std::string& path) {
    if (node.as_table() == nullptr) {
      TypeError(path, "table", node);
    } else if (rule.not_blank && node.as_table()->empty()) {
      Error(path, "must not be empty");
    } else {
      table = node.as_table();
    }
  });
  return table;
}

void TableReader::Error(const std::string& path, std::string reason) const {
  context_.diagnostics.Error(path, std::move(reason));
}

void TableReader::TypeError(const std::string& path, std::string_view expected,
                            const toml::node& actual) const {
  Error(path,
        absl::StrCat("expected ", std::string(expected), ", got ", std::string(TypeName(actual))));
}

void TableReader::ReportUnknownKeys() const {
  for (const auto& [key, value] : table_) {
    if (!known_keys_.contains(key.str())) {
      context_.diagnostics.ErrorAt(key.source(), ChildPath(path_, key.str()), "unknown key");
    }
  }
}

}  // namespace berry::config::internal
