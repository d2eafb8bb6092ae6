#include "common/log/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/json/json_escape.h"

namespace berry::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

}  // namespace

absl::StatusOr<Level> ParseLevel(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  if (lower == "debug") {
    return Level::kDebug;
  }
  if (lower == "info") {
    return Level::kInfo;
  }
  if (lower == "warn" || lower == "warning") {
    return Level::kWarn;
  }
  if (lower == "error") {
    return Level::kError;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level '", std::string(name), "' (debug, info, warn, error)"));
}

void SetLevel(Level level) { g_level.store(static_cast<int>(level)); }

bool Enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

std::string Format(Level level, std::string_view message, std::initializer_list<Field> fields,
                   bool with_time) {
  std::string line = "{";
  if (with_time) {
    const auto now = std::chrono::system_clock::now();
    const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    char buffer[96];
    std::snprintf(buffer, sizeof buffer, R"("time":"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",)",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(millis));
    line += buffer;
  }
  absl::StrAppend(&line, R"("level":")", std::string(LevelName(level)), R"(","msg":)");
  json::AppendJsonString(line, message);
  for (const auto& [name, value] : fields) {
    line += ',';
    json::AppendJsonString(line, name);
    line += ':';
    json::AppendJsonString(line, value);
  }
  line += "}\n";
  return line;
}

void Write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  if (!Enabled(level)) {
    return;
  }
  const std::string line = Format(level, message, fields);
  [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
}

}  // namespace berry::log
