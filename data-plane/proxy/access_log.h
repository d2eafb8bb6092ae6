// One JSON line per request (DESIGN.md, "Observability"): time, request id, user, method, path,
// model, backend, status, duration, time to first byte, retries, tokens. Never a key or token:
// users appear by their `[users.<id>]` id.
//
// Writing never blocks a worker: Write() appends the line to its thread's buffer (a lock no one
// else holds but for the moment the writer takes the buffer), and a writer thread of the log's
// own hands the buffers to write(2) every `flush_interval`, or at once when one fills a quarter
// of its bound. A reader of stdout that stalls therefore stalls only that thread; once a
// thread's buffer holds `max_buffered_bytes`, its further lines are dropped whole and counted
// (dropped_lines(), berry_access_log_dropped_lines_total) until the writer catches up. Lines are
// never split or interleaved; one thread's lines keep their order.
//
// Threads: Write() from any thread; Flush() and the destructor from one controlling thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

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
  struct Options {
    // Per writing thread: lines beyond it are dropped until the writer has caught up.
    size_t max_buffered_bytes = size_t{4} << 20;
    std::chrono::milliseconds flush_interval{50};
  };

  // fd 1 for stdout; -1 disables the log. `fd` must stay open until this is destroyed.
  explicit AccessLog(int fd) : AccessLog(fd, Options()) {}
  AccessLog(int fd, Options options);
  // Writes out everything buffered, then stops the writer.
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  bool enabled() const { return fd_ >= 0; }
  void Write(const AccessLogEntry& entry) const;
  // Hands everything buffered so far to write(2) and returns once it is written (tests, and
  // shutdown).
  void Flush() const;
  uint64_t dropped_lines() const { return dropped_lines_.load(std::memory_order_relaxed); }

  // The line Write() would emit (with the trailing newline), for tests.
  static std::string Format(const AccessLogEntry& entry, int64_t unix_micros);
  // Appends that line to `line`.
  static void AppendLine(std::string& line, const AccessLogEntry& entry, int64_t unix_micros);

 private:
  struct ThreadBuffer {
    absl::Mutex mu;
    std::string lines ABSL_GUARDED_BY(mu);
  };

  // This thread's buffer, registered on its first line.
  ThreadBuffer& Mine() const;
  void RunWriter();
  // Takes every buffer's lines and writes them out. Holds write_mu_ throughout.
  void WriteOut() const;
  void WriteAll(std::string_view bytes) const;

  const int fd_;
  const Options options_;
  const uint64_t id_;  // tells this log's thread-local cache entry from an earlier log's
  mutable std::atomic<uint64_t> dropped_lines_{0};
  // steady_clock nanoseconds after which a write that waits for room gives up (0 = never); set
  // by the destructor.
  std::atomic<int64_t> give_up_at_ns_{0};

  mutable absl::Mutex buffers_mu_;
  mutable std::vector<std::unique_ptr<ThreadBuffer>> buffers_ ABSL_GUARDED_BY(buffers_mu_);
  mutable absl::Mutex write_mu_;  // one writer of the fd at a time: the thread or Flush()

  mutable absl::Mutex wake_mu_;
  mutable bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread writer_;
};

}  // namespace berry::proxy
