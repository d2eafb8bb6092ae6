// A program under test as a child process, for the tests that run Berry's binaries as an
// operator would (berry-proxy flags and signals, the fleet, berryctl): stdout and stderr are
// collected by reader threads, and every wait has a deadline.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace berry::itest {

// The signals Berry's programs take with sigwait. Blocking them in the child before its first
// thread exists keeps gRPC's early threads from dying of one.
inline const std::vector<int> kSigwaitSignals = {SIGHUP, SIGINT, SIGTERM};

class ChildProcess {
 public:
  // `extra_env` ("NAME=value") is added to the inherited environment, from which the flags'
  // fallbacks (CONFIG_PATH, BIND_ADDRESS, NODE_ID) are removed so that they cannot leak in from
  // whoever runs the tests. The child starts with `blocked_signals` blocked (an init system
  // starts services with none blocked). nullptr, with a test failure, when it cannot be spawned.
  static std::unique_ptr<ChildProcess> Spawn(const std::vector<std::string>& args,
                                             const std::vector<std::string>& extra_env = {},
                                             const std::vector<int>& blocked_signals = {});

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // SIGKILLs the child if it still runs.
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  std::string out() const;
  std::string err() const;
  // Waits until `needle` shows up on stdout (stderr); false on timeout.
  bool WaitForOut(std::string_view needle,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  bool WaitForErr(std::string_view needle,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // The text after `prefix` on stdout up to the end of its line; empty on timeout or exit.
  std::string LineAfter(std::string_view prefix, std::chrono::milliseconds timeout);

  // The exit status (128 + n when killed by signal n); nullopt while it still runs at the
  // deadline. Once it has returned a status, out() and err() hold everything the child wrote.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  void Signal(int signal_number);
  // SIGKILL, then reaps it.
  void Kill();

 private:
  ChildProcess() = default;
  void Read(int fd, std::string* sink);
  bool WaitForText(const std::string* text, std::string_view needle,
                   std::chrono::milliseconds timeout) const;

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  mutable absl::Mutex mu_;
  std::string out_ ABSL_GUARDED_BY(mu_);
  std::string err_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> readers_;
};

}  // namespace berry::itest
