// Operational log: one JSON object per line on stderr (`{"time","level","msg",...fields}`),
// separate from the proxy's access log on stdout. Never pass a secret as a field.
//
// Threads: any thread; each line is one write(2). The level is set once at start-up.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace berry::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// "debug", "info", "warn"/"warning", "error" (case-insensitive).
absl::StatusOr<Level> ParseLevel(std::string_view name);
void SetLevel(Level level);
bool Enabled(Level level);

using Field = std::pair<std::string_view, std::string_view>;

// The line Write would print, without the time prefix when `with_time` is false (tests).
std::string Format(Level level, std::string_view message, std::initializer_list<Field> fields,
                   bool with_time = true);
void Write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

inline void Debug(std::string_view m, std::initializer_list<Field> f = {}) { Write(Level::kDebug, m, f); }
inline void Info(std::string_view m, std::initializer_list<Field> f = {}) { Write(Level::kInfo, m, f); }
inline void Warn(std::string_view m, std::initializer_list<Field> f = {}) { Write(Level::kWarn, m, f); }
inline void Error(std::string_view m, std::initializer_list<Field> f = {}) { Write(Level::kError, m, f); }

}  // namespace berry::log
