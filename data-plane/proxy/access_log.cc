#include "data-plane/proxy/access_log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/json/json_escape.h"

namespace berry::proxy {
namespace {

void AppendField(std::string& out, std::string_view name, std::string_view value) {
  absl::StrAppend(&out, ",\"", std::string(name), "\":");
  json::AppendJsonString(out, value);
}

std::string Rfc3339Micros(int64_t unix_micros) {
  const std::time_t seconds = static_cast<std::time_t>(unix_micros / 1000000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_micros % 1000000));
  return buffer;
}

std::string Seconds(double seconds) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6f", seconds);
  return buffer;
}

}  // namespace

std::string AccessLog::Format(const AccessLogEntry& e, int64_t unix_micros) {
  std::string line;
  line.reserve(384);
  absl::StrAppend(&line, "{\"time\":\"", Rfc3339Micros(unix_micros), "\"");
  AppendField(line, "request_id", e.request_id);
  AppendField(line, "user", e.user);
  AppendField(line, "method", e.method);
  AppendField(line, "path", e.path);
  AppendField(line, "model", e.model);
  AppendField(line, "backend", e.backend);
  absl::StrAppend(&line, ",\"status\":", e.status, ",\"duration\":", Seconds(e.duration_seconds),
                  ",\"ttfb\":", e.ttfb_seconds < 0 ? "null" : Seconds(e.ttfb_seconds),
                  ",\"retries\":", e.retries, ",\"stream\":", e.stream ? "true" : "false",
                  ",\"panic\":", e.panic ? "true" : "false",
                  ",\"prompt_tokens\":", e.prompt_tokens,
                  ",\"completion_tokens\":", e.completion_tokens);
  if (!e.error.empty()) {
    AppendField(line, "error", e.error);
  }
  line += "}\n";
  return line;
}

void AccessLog::Write(const AccessLogEntry& entry) const {
  if (fd_ < 0) {
    return;
  }
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const std::string line =
      Format(entry, std::chrono::duration_cast<std::chrono::microseconds>(now).count());
  // A short write to a pipe or file is not retried: a log line is not worth blocking a worker.
  [[maybe_unused]] const ssize_t n = ::write(fd_, line.data(), line.size());
}

}  // namespace berry::proxy
