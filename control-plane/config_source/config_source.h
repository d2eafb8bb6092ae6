// The control plane's config: the file given by --config, validated whole before it replaces the
// running one, and watched for edits — in place, or by atomic rename as editors and Kubernetes
// ConfigMap updates do (inotify on the directory, so a replaced inode is still seen).
//
// Threads: Reload() may be called from any thread (the watcher, SIGHUP, the admin API); it is
// serialised. Current() is cheap and thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/config/config.h"

namespace berry::control_plane {

class ConfigSource {
 public:
  explicit ConfigSource(std::string path) : path_(std::move(path)) {}
  ~ConfigSource();

  const std::string& path() const { return path_; }

  // Reads and validates the file. Valid: it becomes current (true when its content differs
  // from the running config). Invalid: every error is returned, nothing changes.
  struct ReloadResult {
    bool changed = false;
    std::vector<config::ConfigError> errors;  // non-empty = rejected
  };
  ReloadResult Reload();

  // The config in force; null before the first successful Reload.
  std::shared_ptr<const config::Config> Current() const;
  // Rejected reloads since start (for /metrics).
  uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }

  // Watches the file's directory and calls `on_change` (from the watcher thread) after an
  // edit settles. Returns an error if inotify is unavailable.
  absl::Status Watch(std::function<void()> on_change);
  void StopWatching();

 private:
  std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const config::Config> current_ ABSL_GUARDED_BY(mu_);
  std::string current_text_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> rejected_{0};
  std::thread watcher_;
  int inotify_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
};

}  // namespace berry::control_plane
