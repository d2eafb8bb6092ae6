// The control plane's config: the file given by --config, validated whole before it replaces the
// running one, and watched for edits — in place, or by atomic rename as editors and Kubernetes
// ConfigMap updates do (inotify on the directory, so a replaced inode is still seen).
//
// The admin API applies TOML text through ApplyText(): validated the same way, compare-and-swap
// checked against the running config, made current, and written back to the file atomically
// (temp file + rename, the file's mode kept) so a restart keeps it — unless the file is read-only,
// when the config is held in memory only.
//
// Threads: Reload() and ApplyText() may be called from any thread (the watcher, SIGHUP, the admin
// API); they are serialised with each other. Current() is cheap and thread-safe.
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
    // Keys that loaded but change nothing (config::LoadResult::warnings); set whenever the
    // file was read, whether or not it was valid or changed.
    std::vector<config::ConfigError> warnings;
  };
  ReloadResult Reload();

  // Validates `text` (errors name `source_name`). Unless the result has errors or `dry_run` is
  // set, `precondition` (when given) is checked against the running config under the update
  // lock — a non-OK status refuses the apply, e.g. a stale compare-and-swap version — and the
  // text becomes current and is written back to the file.
  struct ApplyOptions {
    bool dry_run = false;
    std::string source_name = "<api>";
    std::function<absl::Status(const config::Config* running)> precondition;
  };
  struct ApplyResult {
    std::vector<config::ConfigError> errors;  // non-empty = rejected, nothing changed
    std::vector<config::ConfigError> warnings;     // config::LoadResult::warnings of `text`
    absl::Status precondition = absl::OkStatus();  // not OK = refused, nothing changed
    std::shared_ptr<const config::Config> before;   // running config at the call
    std::shared_ptr<const config::Config> after;    // the validated submitted config
    bool changed = false;    // applied and its text differs from the running one
    bool persisted = false;  // written back to path()
    std::string persist_note;  // why not persisted, when applied but not persisted
  };
  ApplyResult ApplyText(std::string_view text, const ApplyOptions& options);

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
  // Writes `text` to path_ by temp file + rename, keeping the file's mode.
  absl::Status PersistLocked(std::string_view text) ABSL_EXCLUSIVE_LOCKS_REQUIRED(update_mu_);

  // Serialises Reload and ApplyText (taken before mu_).
  absl::Mutex update_mu_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const config::Config> current_ ABSL_GUARDED_BY(mu_);
  std::string current_text_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> rejected_{0};
  std::thread watcher_;
  int inotify_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
};

}  // namespace berry::control_plane
