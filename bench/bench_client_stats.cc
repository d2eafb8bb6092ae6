#include "bench/bench_client_stats.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "common/json/json_escape.h"

namespace berry::bench {
namespace {

int64_t NearestRank(const std::vector<int64_t>& sorted, double p) {
  const auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

Distribution Summarize(std::vector<int64_t>& samples) {
  Distribution d;
  if (samples.empty()) {
    return d;
  }
  std::sort(samples.begin(), samples.end());
  d.count = samples.size();
  d.p50 = NearestRank(samples, 0.50);
  d.p90 = NearestRank(samples, 0.90);
  d.p99 = NearestRank(samples, 0.99);
  d.p999 = NearestRank(samples, 0.999);
  d.max = samples.back();
  long double sum = 0;
  for (int64_t v : samples) {
    sum += static_cast<long double>(v);
  }
  d.mean = static_cast<double>(sum / static_cast<long double>(samples.size()));
  return d;
}

void JsonLine::Key(std::string_view key) {
  if (out_.size() > 1) {
    out_ += ',';
  }
  json::AppendJsonString(out_, key);
  out_ += ':';
}

JsonLine& JsonLine::Int(std::string_view key, int64_t value) {
  Key(key);
  out_ += std::to_string(value);
  return *this;
}

JsonLine& JsonLine::Double(std::string_view key, double value, int decimals) {
  Key(key);
  if (!std::isfinite(value)) {
    out_ += '0';
    return *this;
  }
  char buf[64];
  const int n = std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  out_.append(buf, static_cast<size_t>(std::max(n, 0)));
  return *this;
}

JsonLine& JsonLine::Number(std::string_view key, double value) {
  Key(key);
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  if (ec != std::errc() || !std::isfinite(value)) {
    out_ += '0';
  } else {
    out_.append(buf, end);
  }
  return *this;
}

JsonLine& JsonLine::String(std::string_view key, std::string_view value) {
  Key(key);
  json::AppendJsonString(out_, value);
  return *this;
}

std::string JsonLine::Finish() && {
  out_ += '}';
  return std::move(out_);
}

}  // namespace berry::bench
