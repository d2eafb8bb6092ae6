// One JSON line per request (DESIGN.md, "Observability"): time, request id, user, method, path,
// model, backend, status, duration, time to first byte, retries, tokens. Never a key or token:
// users appear by their `[users.<id>]` id.
//
// Threads: Write() may be called from any worker; each line goes out with a single write(2), so
// lines never interleave.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace berry::proxy {

struct AccessLogEntry {
  std::string_view request_id;
  std::string_view user;  // client id; empty for anonymous or unauthenticated
  std::string_view method;
  std::string_view path;     // without the query string
  std::string_view model;    // custom model name when it resolved, else empty
  std::string_view backend;  // backend id of the answering attempt, else empty
  int status = 0;
  double duration_seconds = 0;
  double ttfb_seconds = -1;  // < 0: no upstream byte
  int retries = 0;
  bool stream = false;
  bool panic = false;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  std::string_view error;  // what went wrong, for non-2xx answers made by the proxy
};

class AccessLog {
 public:
  // fd 1 for stdout; -1 disables the log.
  explicit AccessLog(int fd) : fd_(fd) {}

  bool enabled() const { return fd_ >= 0; }
  void Write(const AccessLogEntry& entry) const;
  // The line Write() would emit (with the trailing newline), for tests.
  static std::string Format(const AccessLogEntry& entry, int64_t unix_micros);
  // Appends that line to `line`.
  static void AppendLine(std::string& line, const AccessLogEntry& entry, int64_t unix_micros);

 private:
  int fd_;
};

}  // namespace berry::proxy
