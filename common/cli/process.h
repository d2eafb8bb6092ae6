// Start-up helpers every Berry program needs: signal handling for sigwait, reading small files
// (certificates, tokens), and HOST:PORT flags. main() only.
#pragma once

#include <csignal>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace berry::cli {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and so in every thread it starts
// afterwards) and ignores SIGPIPE; returns the set for sigwait(). Call first thing in main(),
// before anything (gRPC included) starts a thread that could otherwise take a signal and die.
sigset_t BlockTerminationSignals();

// Raises the soft limit on open files to the hard limit (a proxy holds two sockets per stream,
// and distributions often start processes at a soft limit of 1024) and returns the soft limit
// now in force (0 when it cannot be read).
uint64_t RaiseOpenFileLimit();

// The whole file, or NotFound naming it.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// "host:port", "[v6]:port" → host (brackets removed) and port 0-65535. `flag` names the flag in
// errors.
absl::StatusOr<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& address,
                                                               const std::string& flag);

// Whether a gRPC address (HOST:PORT, [V6]:PORT, an optional "dns:///" or "ipv4:"/"ipv6:"
// scheme, or "unix:PATH") stays on this machine: localhost, 127.0.0.0/8, ::1 or a Unix socket.
// Plaintext gRPC off loopback would carry route tables, and with them provider keys, in the clear.
bool IsLoopbackAddress(std::string_view address);

}  // namespace berry::cli
