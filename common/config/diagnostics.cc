#include "common/config/diagnostics.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace berry::config::internal {
namespace {

bool IsBareKey(std::string_view key) {
  return !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

// Where the enclosing table's path ends: before the last `.key` or `[index]`. Quoted keys that
// contain dots may make this cut too early; the result is then only a less precise position.
size_t ParentEnd(std::string_view path) {
  const size_t cut = path.find_last_of(".[");
  return cut == std::string_view::npos ? 0 : cut;
}

// Unknown positions (line 0) sort last; stable so equal positions keep report order.
std::vector<ConfigError> InFileOrder(std::vector<ConfigError>& problems) {
  std::stable_sort(problems.begin(), problems.end(),
                   [](const ConfigError& a, const ConfigError& b) {
                     const auto key = [](const ConfigError& e) {
                       return std::make_tuple(e.line == 0, e.line, e.column);
                     };
                     return key(a) < key(b);
                   });
  return std::exchange(problems, {});
}

}  // namespace

std::string ChildPath(std::string_view parent, std::string_view key) {
  std::string path(parent);
  if (!path.empty()) {
    path += '.';
  }
  if (IsBareKey(key)) {
    path += key;
  } else {
    (path += '"') += key;
    path += '"';
  }
  return path;
}

std::string IndexPath(std::string_view parent, size_t index) {
  return absl::StrCat(std::string(parent), "[", index, "]");
}

void Diagnostics::Locate(const std::string& path, const toml::source_region& region) {
  if (region.begin.line == 0) {
    return;  // toml++ did not record where this node came from (an implicit table)
  }
  positions_[path] =
      Position{static_cast<int>(region.begin.line), static_cast<int>(region.begin.column)};
}

void Diagnostics::Error(const std::string& path, std::string reason) {
  Add(path, PositionOf(path), std::move(reason));
}

void Diagnostics::ErrorAt(const toml::source_region& region, const std::string& path,
                          std::string reason) {
  Add(path, Position{static_cast<int>(region.begin.line), static_cast<int>(region.begin.column)},
      std::move(reason));
}

void Diagnostics::Warning(const std::string& path, std::string reason) {
  warnings_.push_back(Make(path, PositionOf(path), std::move(reason)));
}

bool Diagnostics::HasErrorAt(std::string_view path) const {
  return failed_paths_.find(path) != failed_paths_.end();
}

std::vector<ConfigError> Diagnostics::TakeErrors() { return InFileOrder(errors_); }

std::vector<ConfigError> Diagnostics::TakeWarnings() { return InFileOrder(warnings_); }

Diagnostics::Position Diagnostics::PositionOf(std::string_view path) const {
  while (true) {
    if (const auto it = positions_.find(path); it != positions_.end()) {
      return it->second;
    }
    if (path.empty()) {
      return {};
    }
    path = path.substr(0, ParentEnd(path));
  }
}

void Diagnostics::Add(const std::string& path, Position position, std::string reason) {
  failed_paths_.insert(path);
  errors_.push_back(Make(path, position, std::move(reason)));
}

ConfigError Diagnostics::Make(const std::string& path, Position position,
                              std::string reason) const {
  return ConfigError{.file = file_,
                     .key_path = path,
                     .line = position.line,
                     .column = position.column,
                     .reason = std::move(reason)};
}

}  // namespace berry::config::internal
