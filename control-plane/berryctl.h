// berryctl: the operator's command line for the control plane's AdminService. The logic lives
// here, apart from berryctl_main.cc, so tests can drive it in-process too.
//
// Exit codes: 0 success; 1 the operation was refused or failed (validation errors, stale
// --expect-version, unknown backend); 2 usage error; 3 the control plane cannot be reached;
// 4 authentication refused.
//
// Threads: RunBerryctl is called from main()'s thread; `watch` blocks until the stream ends.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace berry::berryctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;
inline constexpr int kExitUnauthenticated = 4;

// Runs one command; `args` excludes the program name. Results go to `out`, the one-line reason
// of a failure to `err`.
int RunBerryctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace berry::berryctl
