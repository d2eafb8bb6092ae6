// Internal to berry_config: collects every problem found while loading one config, with the
// TOML key path and, where toml++ knows it, the line and column. One instance per load; not
// shared between threads.
#pragma once

#include <toml++/toml.h>

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/config.h"

namespace berry::config::internal {

// Key paths are printed the way TOML would spell them, so a reader can paste them back:
// `providers.openai.base_url`, `providers."api.example.com".models`, `models.m.backends[1]`.
std::string ChildPath(std::string_view parent, std::string_view key);
// Array element paths are 0-based, as in toml++'s own paths.
std::string IndexPath(std::string_view parent, size_t index);

class Diagnostics {
 public:
  explicit Diagnostics(std::string file) : file_(std::move(file)) {}

  // Remembers where `path` is defined, so that later checks (cross references, missing keys)
  // can point at it without holding on to the TOML document.
  void Locate(const std::string& path, const toml::source_region& region);

  // Reports a problem at `path`, positioned at the closest located path: itself, else the
  // nearest enclosing table.
  void Error(const std::string& path, std::string reason);
  // Reports a problem with an explicit position (a TOML key rather than its value).
  void ErrorAt(const toml::source_region& region, const std::string& path, std::string reason);

  // Reports a key that loads but changes nothing, positioned like Error(). Warnings never make
  // a config invalid.
  void Warning(const std::string& path, std::string reason);

  // Whether a problem was already reported at exactly `path`; lets later checks skip a value
  // that is known to be broken instead of reporting a consequence of the same mistake.
  bool HasErrorAt(std::string_view path) const;
  bool ok() const { return errors_.empty(); }

  // Every problem, in file order; problems without a position come last, in report order.
  std::vector<ConfigError> TakeErrors();
  // Every warning, ordered like TakeErrors().
  std::vector<ConfigError> TakeWarnings();

 private:
  struct Position {
    int line = 0;
    int column = 0;
  };
  Position PositionOf(std::string_view path) const;
  void Add(const std::string& path, Position position, std::string reason);
  ConfigError Make(const std::string& path, Position position, std::string reason) const;

  std::string file_;
  std::map<std::string, Position, std::less<>> positions_;
  std::set<std::string, std::less<>> failed_paths_;
  std::vector<ConfigError> errors_;
  std::vector<ConfigError> warnings_;
};

}  // namespace berry::config::internal
