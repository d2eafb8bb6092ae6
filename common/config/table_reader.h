// Internal to berry_config: typed, strict reading of one TOML table. Every value read goes
// through here, so type errors, `${VAR}` interpolation, range checks and unknown-key reports
// are uniform across `[settings]`, providers, models, backends and users. One load, one thread.
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/config.h"
#include "common/config/diagnostics.h"
#include "common/config/schema.h"

namespace berry::config::internal {

// How errors name a TOML value's type: "string", "integer", "float", "table", ...
std::string_view TypeName(const toml::node& node);

struct ReadContext {
  Diagnostics& diagnostics;
  const EnvLookup& env;
};

class TableReader {
 public:
  using Visitor = std::function<void(TableReader&)>;
  using EntryVisitor = std::function<void(std::string_view key, TableReader&)>;
  using ElementVisitor = std::function<void(size_t index, TableReader&)>;
  using RawVisitor = std::function<void(const toml::node& value, const std::string& path)>;

  // Reads `table` with `visit`, then reports each key `visit` did not ask for as unknown.
  static void Visit(const toml::table& table, std::string path, ReadContext& context,
                    const Visitor& visit);

  const std::string& path() const { return path_; }
  ReadContext& context() const { return context_; }

  // Each Read leaves `out` untouched when the key is absent or its value is invalid, so a
  // struct's member initialisers are the defaults.
  void Read(std::string_view key, const Rule& rule, int64_t& out);
  void Read(std::string_view key, const Rule& rule, std::optional<int64_t>& out);
  void Read(std::string_view key, const Rule& rule, double& out);  // integer or float
  void Read(std::string_view key, const Rule& rule, bool& out);
  void Read(std::string_view key, const Rule& rule, std::string& out);
  void Read(std::string_view key, const Rule& rule, std::vector<std::string>& out);
  // A table whose every value is a string, e.g. `headers`.
  void Read(std::string_view key, const Rule& rule, std::map<std::string, std::string>& out);
  void Read(std::string_view key, const Rule& rule, Strategy& out);

  // `[key]`: a sub-table with its own keys.
  void ReadTable(std::string_view key, const Rule& rule, const Visitor& visit);
  // `[key.<id>]`: a table of tables keyed by an operator-chosen, non-empty id.
  void ReadTableOfTables(std::string_view key, const Rule& rule, const EntryVisitor& visit);
  // `[[key]]`: an array of tables.
  void ReadArrayOfTables(std::string_view key, const Rule& rule, const ElementVisitor& visit);
  // Every key not read by name so far, for free-form tables; they no longer count as unknown.
  void ReadRemaining(const RawVisitor& visit);

 private:
  TableReader(const toml::table& table, std::string path, ReadContext& context)
      : table_(table), path_(std::move(path)), context_(context) {}

  // The value at `key`, or null when it is absent (reported when required). Marks the key as
  // known and remembers its position.
  const toml::node* Find(std::string_view key, const Rule& rule);
  // Calls `read(node, path)` with the value at `key` when it is present.
  template <typename ReadValue>
  void WithValue(std::string_view key, const Rule& rule, ReadValue&& read);
  // Type-checks, interpolates and checks `node` as a string.
  std::optional<std::string> String(const toml::node& node, const std::string& path,
                                    const Rule& rule) const;
  // Every item of a string list, or nullopt when any is invalid (each reported).
  std::optional<std::vector<std::string>> Strings(const toml::array& array,
                                                  const std::string& path) const;
  const toml::table* Table(std::string_view key, const Rule& rule);
  void Error(const std::string& path, std::string reason) const;
  void TypeError(const std::string& path, std::string_view expected,
                 const toml::node& actual) const;
  void ReportUnknownKeys() const;

  const toml::table& table_;
  std::string path_;
  ReadContext& context_;
  std::set<std::string, std::less<>> known_keys_;
};

}  // namespace berry::config::internal
