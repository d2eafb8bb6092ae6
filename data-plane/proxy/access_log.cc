#include "data-plane/proxy/access_log.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

namespace {
std::atomic<uint64_t> next_log_id{1};
}  // namespace

AccessLog::AccessLog(int fd, Options options)
    : fd_(fd), options_(options), id_(next_log_id.fetch_add(1)) {
  if (fd_ >= 0) {
    writer_ = std::thread([this] { RunWriter(); });
  }
}

AccessLog::~AccessLog() {
  if (writer_.joinable()) {
    // What is buffered goes out, unless stdout's reader keeps it waiting for more than 2 s.
    give_up_at_ns_.store(
        (std::chrono::steady_clock::now() + std::chrono::seconds(2)).time_since_epoch().count(),
        std::memory_order_relaxed);
    {
      absl::MutexLock lock(&wake_mu_);
      stopping_ = true;
    }
    writer_.join();
  }
}

AccessLog::ThreadBuffer& AccessLog::Mine() const {
  // One entry per thread: the log it belongs to and its buffer there. A thread that writes to a
  // second log (tests) registers again.
  thread_local uint64_t cached_id = 0;
  thread_local ThreadBuffer* cached = nullptr;
  if (cached_id != id_) {
    auto buffer = std::make_unique<ThreadBuffer>();
    cached = buffer.get();
    cached_id = id_;
    absl::MutexLock lock(&buffers_mu_);
    buffers_.push_back(std::move(buffer));
  }
  return *cached;
}

void AccessLog::Write(const AccessLogEntry& entry) const {
  if (fd_ < 0) {
    return;
  }
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  thread_local std::string line;  // one buffer per thread, reused line after line
  line.clear();
  AppendLine(line, entry, std::chrono::duration_cast<std::chrono::microseconds>(now).count());
  ThreadBuffer& buffer = Mine();
  bool wake = false;
  {
    absl::MutexLock lock(&buffer.mu);
    if (buffer.lines.size() + line.size() > options_.max_buffered_bytes) {
      dropped_lines_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    buffer.lines.append(line);
    wake = buffer.lines.size() >= options_.max_buffered_bytes / 4;
  }
  if (wake) {
    absl::MutexLock lock(&wake_mu_);
    wake_ = true;
  }
}

void AccessLog::Flush() const {
  if (fd_ >= 0) {
    WriteOut();
  }
}

void AccessLog::RunWriter() {
  for (;;) {
    bool stopping = false;
    {
      absl::MutexLock lock(&wake_mu_);
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) { return wake_ || stopping_; };
      wake_mu_.AwaitWithTimeout(absl::Condition(&woken), absl::FromChrono(options_.flush_interval));
      wake_ = false;
      stopping = stopping_;
    }
    WriteOut();
    if (stopping) {
      return;
    }
  }
}

void AccessLog::WriteOut() const {
  absl::MutexLock write_lock(&write_mu_);
  std::vector<ThreadBuffer*> buffers;
  {
    absl::MutexLock lock(&buffers_mu_);
    buffers.reserve(buffers_.size());
    for (const auto& buffer : buffers_) {
      buffers.push_back(buffer.get());
    }
  }
  thread_local std::string taken;
  for (ThreadBuffer* buffer : buffers) {
    {
      absl::MutexLock lock(&buffer->mu);
      taken.swap(buffer->lines);  // the thread keeps appending to the (empty) string it gets
    }
    WriteAll(taken);
    taken.clear();
  }
}

void AccessLog::WriteAll(std::string_view bytes) const {
  // Wait for room, then write no more than a pipe guarantees to take without blocking: a reader
  // that stalls can hold this thread only until the destructor's deadline.
  constexpr size_t kChunk = 4096;
  while (!bytes.empty()) {
    pollfd ready{fd_, POLLOUT, 0};
    const int polled = ::poll(&ready, 1, 100);
    if (polled < 0 && errno != EINTR) {
      break;
    }
    if (polled <= 0) {
      const int64_t give_up = give_up_at_ns_.load(std::memory_order_relaxed);
      if (give_up != 0 && std::chrono::steady_clock::now().time_since_epoch().count() > give_up) {
        break;
      }
      continue;
    }
    const ssize_t n = ::write(fd_, bytes.data(), std::min(bytes.size(), kChunk));
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      break;  // closed or failed
    }
  }
  if (!bytes.empty()) {
    dropped_lines_.fetch_add(static_cast<uint64_t>(std::count(bytes.begin(), bytes.end(), '\n')),
                             std::memory_order_relaxed);
  }
}

}  // namespace berry::proxy
