// Result helpers for berry-bench-client: exact percentiles over recorded samples and the one
// JSON line the harness parses. Pure functions and a plain builder; main thread only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace berry::bench {

struct Distribution {
  size_t count = 0;
  int64_t p50 = 0;
  int64_t p90 = 0;
  int64_t p99 = 0;
  int64_t p999 = 0;
  int64_t max = 0;
  double mean = 0;
};

// Sorts `samples` and reads nearest-rank percentiles off them (all zero when there are none).
Distribution Summarize(std::vector<int64_t>& samples);

// Builds `{"key":value,...}` in insertion order.
class JsonLine {
 public:
  JsonLine& Int(std::string_view key, int64_t value);
  JsonLine& Double(std::string_view key, double value, int decimals);
  // The shortest text that reads back as `value` (e.g. 5000, 0.5).
  JsonLine& Number(std::string_view key, double value);
  JsonLine& String(std::string_view key, std::string_view value);
  // The object, closed, without a newline.
  std::string Finish() &&;

 private:
  void Key(std::string_view key);
  std::string out_ = "{";
};

// Nanoseconds as whole microseconds, rounded to nearest.
inline int64_t NanosToMicros(int64_t ns) { return (ns + 500) / 1000; }

}  // namespace berry::bench
