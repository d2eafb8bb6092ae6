#include "data-plane/proxy/access_log.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <climits>
#include <ctime>

#include "common/json/json_escape.h"

namespace berry::proxy {
namespace {

template <typename Int>
void AppendInt(std::string& out, Int value) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, end);
}

// Zero-padded to `width` digits.
void AppendPadded(std::string& out, int64_t value, int width) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
  out.append(static_cast<size_t>(std::max<int64_t>(0, width - (end - digits))), '0');
  out.append(digits, end);
}

void AppendSeconds(std::string& out, double seconds) {
  char digits[48];
  const auto [end, ec] =
      std::to_chars(digits, digits + sizeof digits, seconds, std::chars_format::fixed, 6);
  out.append(digits, end);
}

void AppendField(std::string& out, std::string_view name, std::string_view value) {
  out.append(",\"");
  out.append(name);
  out.append("\":");
  json::AppendJsonString(out, value);
}

// "2026-11-26T09:28:58.114212Z". The date and time of day are worked out once per second per
// thread (gmtime_r is the expensive part).
void AppendRfc3339Micros(std::string& out, int64_t unix_micros) {
  thread_local int64_t cached_second = INT64_MIN;
  thread_local char cached[24];
  const int64_t second =
      unix_micros >= 0 ? unix_micros / 1000000 : (unix_micros - 999999) / 1000000;
  if (second != cached_second) {
    const auto t = static_cast<std::time_t>(second);
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::string text;
    AppendPadded(text, tm.tm_year + 1900, 4);
    text += '-';
    AppendPadded(text, tm.tm_mon + 1, 2);
    text += '-';
    AppendPadded(text, tm.tm_mday, 2);
    text += 'T';
    AppendPadded(text, tm.tm_hour, 2);
    text += ':';
    AppendPadded(text, tm.tm_min, 2);
    text += ':';
    AppendPadded(text, tm.tm_sec, 2);
    text.copy(cached, sizeof cached - 1);
    cached[std::min(text.size(), sizeof cached - 1)] = '\0';
    cached_second = second;
  }
  out.append(cached);
  out += '.';
  AppendPadded(out, unix_micros - second * 1000000, 6);
  out += 'Z';
}

}  // namespace

void AccessLog::AppendLine(std::string& line, const AccessLogEntry& e, int64_t unix_micros) {
  line.append(R"({"time":")");
  AppendRfc3339Micros(line, unix_micros);
  line += '"';
  AppendField(line, "request_id", e.request_id);
  AppendField(line, "user", e.user);
  AppendField(line, "method", e.method);
  AppendField(line, "path", e.path);
  AppendField(line, "model", e.model);
  AppendField(line, "backend", e.backend);
  line.append(",\"status\":");
  AppendInt(line, e.status);
  line.append(",\"duration\":");
  AppendSeconds(line, e.duration_seconds);
  line.append(",\"ttfb\":");
  if (e.ttfb_seconds < 0) {
    line.append("null");
  } else {
    AppendSeconds(line, e.ttfb_seconds);
  }
  line.append(",\"retries\":");
  AppendInt(line, e.retries);
  line.append(e.stream ? ",\"stream\":true" : ",\"stream\":false");
  line.append(e.panic ? ",\"panic\":true" : ",\"panic\":false");
  line.append(",\"prompt_tokens\":");
  AppendInt(line, e.prompt_tokens);
  line.append(",\"completion_tokens\":");
  AppendInt(line, e.completion_tokens);
  if (!e.error.empty()) {
    AppendField(line, "error", e.error);
  }
  line.append("}\n");
}

std::string AccessLog::Format(const AccessLogEntry& entry, int64_t unix_micros) {
  std::string line;
  AppendLine(line, entry, unix_micros);
  return line;
}

void AccessLog::Write(const AccessLogEntry& entry) const {
  if (fd_ < 0) {
    return;
  }
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  thread_local std::string line;  // one buffer per worker, reused line after line
  line.clear();
  AppendLine(line, entry, std::chrono::duration_cast<std::chrono::microseconds>(now).count());
  // A short write to a pipe or file is not retried: a log line is not worth blocking a worker.
  [[maybe_unused]] const ssize_t n = ::write(fd_, line.data(), line.size());
}

}  // namespace berry::proxy
