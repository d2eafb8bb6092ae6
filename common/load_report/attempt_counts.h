// The attempt and token counts of one backend that load reports carry (berry.v1.BackendStats):
// a proxy keeps running totals and reports what changed since its last report (WriteDelta); the
// control plane adds every proxy's reports up (Add). One struct for both ends, so a counter added
// to the protocol is added to both at once.
#pragma once

#include <cstdint>

#include "berry/v1/discovery.pb.h"

namespace berry::load_report {

struct AttemptCounts {
  uint64_t issued = 0;
  uint64_t succeeded = 0;
  uint64_t failed_connect = 0;
  uint64_t failed_timeout = 0;
  uint64_t failed_5xx = 0;
  uint64_t failed_429 = 0;
  uint64_t failed_stream_broken = 0;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;

  // Every failure class added up.
  uint64_t failed() const {
    return failed_connect + failed_timeout + failed_5xx + failed_429 + failed_stream_broken;
  }

  // Adds the counts of one report.
  void Add(const v1::BackendStats& stats) {
    issued += stats.issued();
    succeeded += stats.succeeded();
    failed_connect += stats.failed_connect();
    failed_timeout += stats.failed_timeout();
    failed_5xx += stats.failed_5xx();
    failed_429 += stats.failed_429();
    failed_stream_broken += stats.failed_stream_broken();
    prompt_tokens += stats.prompt_tokens();
    completion_tokens += stats.completion_tokens();
  }

  // Writes these totals minus `earlier` (totals of the same counters, read before) into `stats`.
  void WriteDelta(const AttemptCounts& earlier, v1::BackendStats& stats) const {
    stats.set_issued(issued - earlier.issued);
    stats.set_succeeded(succeeded - earlier.succeeded);
    stats.set_failed_connect(failed_connect - earlier.failed_connect);
    stats.set_failed_timeout(failed_timeout - earlier.failed_timeout);
    stats.set_failed_5xx(failed_5xx - earlier.failed_5xx);
    stats.set_failed_429(failed_429 - earlier.failed_429);
    stats.set_failed_stream_broken(failed_stream_broken - earlier.failed_stream_broken);
    stats.set_prompt_tokens(prompt_tokens - earlier.prompt_tokens);
    stats.set_completion_tokens(completion_tokens - earlier.completion_tokens);
  }

  friend bool operator==(const AttemptCounts&, const AttemptCounts&) = default;
};

// Attempts of one report that ended, one way or another.
inline uint64_t Completed(const v1::BackendStats& stats) {
  return stats.succeeded() + stats.failed_connect() + stats.failed_timeout() + stats.failed_5xx() +
         stats.failed_429() + stats.failed_stream_broken();
}

}  // namespace berry::load_report
