#include "data-plane/proxy/access_log.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace berry::proxy::access_log_test {
namespace {

AccessLogEntry Entry() {
  AccessLogEntry e;
  e.request_id = "0123456789abcdef";
  e.user = "alice";
  e.method = "POST";
  e.path = "/v1/chat/completions";
  e.model = "chat";
  e.backend = "chat/openai/gpt-4o";
  e.status = 200;
  e.duration_seconds = 0.0123456;
  e.ttfb_seconds = 0.01;
  e.retries = 1;
  e.stream = true;
  e.prompt_tokens = 10;
  e.completion_tokens = 20;
  return e;
}

// 2026-11-26T09:28:58.000042Z
constexpr int64_t kMicros = 1795685338000042;

TEST(AccessLogFormat, EveryFieldInOrder) {
  EXPECT_EQ(AccessLog::Format(Entry(), kMicros),
            R"({"time":"2026-11-26T09:28:58.000042Z","request_id":"0123456789abcdef",)"
            R"("user":"alice","method":"POST","path":"/v1/chat/completions","model":"chat",)"
            R"("backend":"chat/openai/gpt-4o","status":200,"duration":0.012346,"ttfb":0.010000,)"
            R"("retries":1,"stream":true,"panic":false,"prompt_tokens":10,"completion_tokens":20})"
            "\n");
}

TEST(AccessLogFormat, NoUpstreamByteIsNullAndErrorIsAdded) {
  AccessLogEntry e = Entry();
  e.ttfb_seconds = -1;
  e.status = 502;
  e.error = "upstream said \"no\"\n";
  const std::string line = AccessLog::Format(e, kMicros);
  EXPECT_NE(line.find(R"("ttfb":null,)"), std::string::npos) << line;
  EXPECT_TRUE(line.ends_with(R"(,"error":"upstream said \"no\"\n"})"
                             "\n"))
      << line;
}

TEST(AccessLogFormat, EscapesClientControlledText) {
  AccessLogEntry e = Entry();
  e.path = "/v1/\"x\"\\\x01";
  const std::string line = AccessLog::Format(e, kMicros);
  EXPECT_NE(line.find(R"("path":"/v1/\"x\"\\\u0001")"), std::string::npos) << line;
}

TEST(AccessLogFormat, TimeCarriesAcrossSecondsAndDays) {
  // The date part is cached per second: consecutive calls must still be exact.
  const std::string a = AccessLog::Format(Entry(), 1795737599999999);  // 2026-11-26T23:59:59
  const std::string b = AccessLog::Format(Entry(), 1795737600000000);  // next day, midnight
  const std::string c = AccessLog::Format(Entry(), 1795737599000001);
  EXPECT_TRUE(a.starts_with(R"({"time":"2026-11-26T23:59:59.999999Z")")) << a;
  EXPECT_TRUE(b.starts_with(R"({"time":"2026-11-27T00:00:00.000000Z")")) << b;
  EXPECT_TRUE(c.starts_with(R"({"time":"2026-11-26T23:59:59.000001Z")")) << c;
}

TEST(AccessLogFormat, LargeTokenCounts) {
  AccessLogEntry e = Entry();
  e.prompt_tokens = 18446744073709551615ULL;  // UINT64_MAX: written as it is, not negative
  const std::string line = AccessLog::Format(e, kMicros);
  EXPECT_NE(line.find(R"("prompt_tokens":18446744073709551615,)"), std::string::npos) << line;
}

}  // namespace
}  // namespace berry::proxy::access_log_test

namespace berry::proxy::access_log_test {
namespace {

// Reads from `fd` until `lines` newlines have arrived or `timeout` passes; returns the text.
std::string ReadLines(int fd, size_t lines, std::chrono::milliseconds timeout) {
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) < lines &&
         std::chrono::steady_clock::now() < deadline) {
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, 50) <= 0) {
      continue;
    }
    char buffer[65536];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) {
      break;
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  return text;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  for (size_t start = 0; start < text.size();) {
    const size_t end = text.find('\n', start);
    EXPECT_NE(end, std::string::npos) << "a line without its newline";
    if (end == std::string::npos) {
      break;
    }
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

class Pipe {
 public:
  Pipe() { EXPECT_EQ(::pipe2(fds_, O_CLOEXEC), 0); }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  int read_end() const { return fds_[0]; }
  int write_end() const { return fds_[1]; }

 private:
  int fds_[2] = {-1, -1};
};

// stdout's reader stops reading: the pipe fills, the writer thread waits, this thread's buffer
// fills to its bound, and every further line is dropped and counted, while Write() keeps
// returning. What does arrive is whole lines, in order.
TEST(AccessLogWriter, AStalledReaderNeverBlocksWritesAndLosesOnlyWholeLines) {
  Pipe pipe;
  std::optional<AccessLog> log;
  log.emplace(pipe.write_end(), AccessLog::Options{.max_buffered_bytes = 64 * 1024,
                                                   .flush_interval = std::chrono::milliseconds(1)});
  constexpr int kLines = 5000;  // ~1.5 MB: far over the pipe (64 KiB) and the buffer (64 KiB)
  std::vector<std::string> ids;
  ids.reserve(kLines);
  for (int i = 0; i < kLines; ++i) {
    ids.push_back("req-" + std::to_string(100000 + i));
    AccessLogEntry entry = Entry();
    entry.request_id = ids.back();
    log->Write(entry);
  }
  const uint64_t dropped = log->dropped_lines();
  EXPECT_GT(dropped, 0u);
  ASSERT_LT(dropped, static_cast<uint64_t>(kLines));

  const size_t kept = kLines - dropped;
  const std::string text = ReadLines(pipe.read_end(), kept, std::chrono::seconds(30));
  const std::vector<std::string> lines = SplitLines(text);
  ASSERT_EQ(lines.size(), kept);
  std::string previous;
  for (const std::string& line : lines) {
    ASSERT_EQ(line.front(), '{');
    ASSERT_EQ(line.back(), '}');
    const size_t at = line.find("\"request_id\":\"") + 14;
    const std::string id = line.substr(at, 10);
    EXPECT_GT(id, previous) << "lines out of order";
    previous = id;
  }
  EXPECT_EQ(log->dropped_lines(), dropped);
}

// Lines buffered when the log goes away are written by the destructor.
TEST(AccessLogWriter, DestructionWritesOutWhatIsBuffered) {
  Pipe pipe;
  {
    AccessLog log(pipe.write_end(), AccessLog::Options{.flush_interval = std::chrono::hours(1)});
    for (int i = 0; i < 3; ++i) {
      log.Write(Entry());
    }
  }
  EXPECT_EQ(SplitLines(ReadLines(pipe.read_end(), 3, std::chrono::seconds(10))).size(), 3u);
}

// Flush() returns once everything written so far is out, without waiting for the interval.
TEST(AccessLogWriter, FlushWritesEverythingAtOnce) {
  Pipe pipe;
  AccessLog log(pipe.write_end(), AccessLog::Options{.flush_interval = std::chrono::hours(1)});
  log.Write(Entry());
  log.Write(Entry());
  log.Flush();
  pollfd readable{pipe.read_end(), POLLIN, 0};
  ASSERT_EQ(::poll(&readable, 1, 0), 1);
  EXPECT_EQ(SplitLines(ReadLines(pipe.read_end(), 2, std::chrono::seconds(1))).size(), 2u);
}

// Several workers at once: every line arrives whole, each thread's in its order.
TEST(AccessLogWriter, LinesOfManyThreadsStayWholeAndInTheirThreadsOrder) {
  Pipe pipe;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  std::string text;
  std::thread reader(
      [&] { text = ReadLines(pipe.read_end(), kThreads * kPerThread, std::chrono::seconds(30)); });
  {
    AccessLog log(pipe.write_end(), AccessLog::Options{});
    std::vector<std::thread> writers;
    for (int t = 0; t < kThreads; ++t) {
      writers.emplace_back([&log, t] {
        for (int i = 0; i < kPerThread; ++i) {
          const std::string id = "t" + std::to_string(t) + "-" + std::to_string(1000 + i);
          AccessLogEntry entry = Entry();
          entry.request_id = id;
          log.Write(entry);
        }
      });
    }
    for (std::thread& writer : writers) {
      writer.join();
    }
    EXPECT_EQ(log.dropped_lines(), 0u);
  }
  reader.join();
  const std::vector<std::string> lines = SplitLines(text);
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kPerThread));
  std::map<std::string, int> last;
  for (const std::string& line : lines) {
    ASSERT_TRUE(line.starts_with("{\"time\":") && line.ends_with("}")) << line;
    const size_t at = line.find("\"request_id\":\"t") + 14;
    const std::string thread = line.substr(at, 2);
    const int seq = std::stoi(line.substr(at + 3, 4));
    EXPECT_GT(seq, last[thread]) << line;
    last[thread] = seq;
  }
}

}  // namespace
}  // namespace berry::proxy::access_log_test
