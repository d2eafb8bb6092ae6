#include "tests/integration/child_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/time/time.h"

extern char** environ;

namespace berry::itest {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::unique_ptr<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& args,
                                                  const std::vector<std::string>& extra_env,
                                                  const std::vector<int>& blocked_signals) {
  std::unique_ptr<ChildProcess> process(new ChildProcess());
  int out[2];
  int err[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2 failed";
    return nullptr;
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    ADD_FAILURE() << "pipe2 failed";
    return nullptr;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  // Nothing else of the test process crosses over: Asio opens sockets without O_CLOEXEC, and a
  // child holding a copy of an in-process mock's connection keeps it open after the mock closes
  // or resets it (the peer would wait for an end that never comes).
  if (const int rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3); rc != 0) {
    ADD_FAILURE() << "posix_spawn_file_actions_addclosefrom_np failed: " << rc;
  }
  std::vector<char*> argv;
  for (const std::string& arg : args) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    if (!entry.starts_with("CONFIG_PATH=") && !entry.starts_with("BIND_ADDRESS=") &&
        !entry.starts_with("NODE_ID=")) {
      env.push_back(*e);
    }
  }
  for (const std::string& entry : extra_env) {
    env.push_back(const_cast<char*>(entry.c_str()));
  }
  env.push_back(nullptr);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t mask;
  sigemptyset(&mask);
  for (const int signal_number : blocked_signals) {
    sigaddset(&mask, signal_number);
  }
  posix_spawnattr_setsigmask(&attributes, &mask);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  const int rc =
      posix_spawn(&process->pid_, argv[0], &actions, &attributes, argv.data(), env.data());
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(out[0]);
    close(err[0]);
    ADD_FAILURE() << "posix_spawn " << args[0] << " failed: " << rc;
    // No child to kill: the destructor must not signal whatever pid_ holds now (-1 would be
    // kill(-1, SIGKILL), every process this user may signal).
    process->pid_ = -1;
    process->exit_code_ = 127;
    return nullptr;
  }
  process->readers_.emplace_back([p = process.get(), fd = out[0]] { p->Read(fd, &p->out_); });
  process->readers_.emplace_back([p = process.get(), fd = err[0]] { p->Read(fd, &p->err_); });
  return process;
}

ChildProcess::~ChildProcess() {
  Kill();
  for (std::thread& reader : readers_) {
    if (reader.joinable()) {
      reader.join();
    }
  }
}

std::string ChildProcess::out() const {
  absl::MutexLock lock(&mu_);
  return out_;
}

std::string ChildProcess::err() const {
  absl::MutexLock lock(&mu_);
  return err_;
}

bool ChildProcess::WaitForOut(std::string_view needle, std::chrono::milliseconds timeout) const {
  return WaitForText(&out_, needle, timeout);
}

bool ChildProcess::WaitForErr(std::string_view needle, std::chrono::milliseconds timeout) const {
  return WaitForText(&err_, needle, timeout);
}

bool ChildProcess::WaitForText(const std::string* text, std::string_view needle,
                               std::chrono::milliseconds timeout) const {
  absl::MutexLock lock(&mu_);
  auto found = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return text->find(needle) != std::string::npos;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&found), absl::FromChrono(timeout));
}

std::string ChildProcess::LineAfter(std::string_view prefix, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    const std::string text = out();
    const size_t at = text.find(prefix);
    if (at != std::string::npos) {
      const size_t start = at + prefix.size();
      const size_t end = text.find('\n', start);
      if (end != std::string::npos) {
        return text.substr(start, end - start);
      }
    }
    if (Wait(0ms)) {
      return {};
    }
    std::this_thread::sleep_for(10ms);
  }
  return {};
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!exit_code_ && pid_ > 0) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      // Its pipes are at end of file now: once the readers have taken the rest, out() and
      // err() are complete (without this a caller could read its output half-collected).
      for (std::thread& reader : readers_) {
        if (reader.joinable()) {
          reader.join();
        }
      }
      break;
    }
    if (Clock::now() >= deadline) {
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  return exit_code_;
}

void ChildProcess::Signal(int signal_number) {
  if (!exit_code_ && pid_ > 0) {
    kill(pid_, signal_number);
  }
}

void ChildProcess::Kill() {
  if (exit_code_ || pid_ <= 0) {
    return;
  }
  kill(pid_, SIGKILL);
  Wait(30s);
}

void ChildProcess::Read(int fd, std::string* sink) {
  char buffer[4096];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n <= 0) {
      break;
    }
    absl::MutexLock lock(&mu_);
    sink->append(buffer, static_cast<size_t>(n));
  }
  close(fd);
}

}  // namespace berry::itest
