#include "data-plane/proxy/load_stats.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"

namespace berry::proxy {

void BackendLoad::RecordOutcome(outlier::Outcome outcome) {
  std::atomic<uint64_t>* counter = &succeeded_;
  switch (outcome) {
    case outlier::Outcome::kSuccess:
    case outlier::Outcome::kClientError:
      break;
    case outlier::Outcome::kConnectError:
      counter = &failed_connect_;
      break;
    case outlier::Outcome::kTimeout:
    case outlier::Outcome::kStatus408:
      counter = &failed_timeout_;
      break;
    case outlier::Outcome::kStatus5xx:
      counter = &failed_5xx_;
      break;
    case outlier::Outcome::kStatus429:
      counter = &failed_429_;
      break;
    case outlier::Outcome::kStreamBroken:
      counter = &failed_stream_broken_;
      break;
  }
  counter->fetch_add(1, std::memory_order_relaxed);
}

void BackendLoad::AddTokens(uint64_t prompt, uint64_t completion) {
  prompt_tokens_.fetch_add(prompt, std::memory_order_relaxed);
  completion_tokens_.fetch_add(completion, std::memory_order_relaxed);
}

BackendLoad::Totals BackendLoad::Read() const {
  Totals totals;
  totals.issued = issued_.load(std::memory_order_relaxed);
  totals.succeeded = succeeded_.load(std::memory_order_relaxed);
  totals.failed_connect = failed_connect_.load(std::memory_order_relaxed);
  totals.failed_timeout = failed_timeout_.load(std::memory_order_relaxed);
  totals.failed_5xx = failed_5xx_.load(std::memory_order_relaxed);
  totals.failed_429 = failed_429_.load(std::memory_order_relaxed);
  totals.failed_stream_broken = failed_stream_broken_.load(std::memory_order_relaxed);
  totals.prompt_tokens = prompt_tokens_.load(std::memory_order_relaxed);
  totals.completion_tokens = completion_tokens_.load(std::memory_order_relaxed);
  const metrics::HistogramCounts latency = metrics::ReadHistogram(latency_);
  const metrics::HistogramCounts ttfb = metrics::ReadHistogram(ttfb_);
  std::copy_n(latency.counts.begin(), std::min(latency.counts.size(), totals.latency_counts.size()),
              totals.latency_counts.begin());
  totals.latency_sum = latency.sum;
  std::copy_n(ttfb.counts.begin(), std::min(ttfb.counts.size(), totals.ttfb_counts.size()),
              totals.ttfb_counts.begin());
  totals.ttfb_sum = ttfb.sum;
  return totals;
}

void BackendLoad::NoteCooldown(int64_t until_ns) {
  int64_t current = cooldown_until_ns_.load(std::memory_order_relaxed);
  while (current < until_ns &&
         !cooldown_until_ns_.compare_exchange_weak(current, until_ns, std::memory_order_relaxed)) {
  }
}

std::shared_ptr<const LoadStats> LoadStats::Create(const selection::Snapshot& snapshot,
                                                   const LoadStats* previous) {
  absl::flat_hash_map<std::string, std::shared_ptr<BackendLoad>> known;
  if (previous != nullptr) {
    for (size_t i = 0; i < previous->backends_.size(); ++i) {
      known.emplace(previous->ids_[i], previous->backends_[i]);
    }
  }
  auto stats = std::make_shared<LoadStats>();
  stats->nudge_ = previous != nullptr ? previous->nudge_ : std::make_shared<ReportNudge>();
  for (const selection::CompiledBackend& backend : snapshot.backends()) {
    stats->ids_.push_back(backend.id());
    auto it = known.find(backend.id());
    stats->backends_.push_back(it != known.end() ? it->second : std::make_shared<BackendLoad>());
  }
  return stats;
}

}  // namespace berry::proxy
