// `berryctl probe URL`: one HTTP GET with a deadline, for container health checks in an image
// that has no shell, curl or wget. Kubelet probes over HTTP by itself; Docker's and compose's
// HEALTHCHECK run a command, and this is that command.
//
// It speaks through the shared HTTP layer (common/http: upstream::Connection, wire heads).
//
// Threads: ProbeHttp blocks the calling thread for at most `timeout`; it owns its io_context.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/statusor.h"

namespace berry::berryctl {

struct ProbeResult {
  int status = 0;      // the HTTP status code
  std::string reason;  // the reason phrase, e.g. "OK"
};

// GETs `url` (http://HOST[:PORT]/PATH; https is refused: probes are local) and returns the status
// line. Errors: InvalidArgument for a URL it cannot probe, Unavailable when the connection fails,
// DeadlineExceeded when connect + request + response head take longer than `timeout`.
absl::StatusOr<ProbeResult> ProbeHttp(const std::string& url, std::chrono::milliseconds timeout);

}  // namespace berry::berryctl
