#include "control-plane/config_source/config_source.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace berry::control_plane {

ConfigSource::~ConfigSource() { StopWatching(); }

ConfigSource::ReloadResult ConfigSource::Reload() {
  absl::MutexLock update(&update_mu_);
  ReloadResult result;
  std::ifstream in(path_, std::ios::binary);
  if (!in) {
    result.errors.push_back({path_, "", 0, 0, "cannot read the file"});
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return result;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  config::LoadResult loaded = config::Parse(text, path_);
  result.warnings = std::move(loaded.warnings);
  if (!loaded.config) {
    result.errors = std::move(loaded.errors);
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return result;
  }
  absl::MutexLock lock(&mu_);
  result.changed = current_ == nullptr || text != current_text_;
  if (result.changed) {
    current_ = std::make_shared<const config::Config>(*std::move(loaded.config));
    current_text_ = text;
  }
  return result;
}

ConfigSource::ApplyResult ConfigSource::ApplyText(std::string_view text,
                                                  const ApplyOptions& options) {
  absl::MutexLock update(&update_mu_);
  ApplyResult result;
  result.before = Current();
  config::LoadResult loaded = config::Parse(text, options.source_name);
  result.warnings = std::move(loaded.warnings);
  if (!loaded.config) {
    result.errors = std::move(loaded.errors);
    return result;
  }
  result.after = std::make_shared<const config::Config>(*std::move(loaded.config));
  if (options.precondition) {
    result.precondition = options.precondition(result.before.get());
    if (!result.precondition.ok()) {
      return result;
    }
  }
  if (options.dry_run) {
    return result;
  }
  {
    absl::MutexLock lock(&mu_);
    result.changed = current_ == nullptr || text != current_text_;
    current_ = result.after;
    current_text_ = std::string(text);
  }
  // Persisted after current_text_ is set: the watcher's Reload (waiting on update_mu_) then reads
  // the same text and sees no change.
  if (absl::Status status = PersistLocked(text); status.ok()) {
    result.persisted = true;
  } else {
    result.persist_note = absl::StrCat(status.message(),
                                       "; the applied config is held in memory only (a restart "
                                       "or a file edit loads the file again)");
  }
  return result;
}

absl::Status ConfigSource::PersistLocked(std::string_view text) {
  struct stat st {};
  mode_t mode = 0644;
  if (stat(path_.c_str(), &st) == 0) {
    mode = st.st_mode & 07777;
    if ((mode & 0222) == 0 || access(path_.c_str(), W_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(path_, " is read-only"));
    }
  }
  const std::string temp = absl::StrCat(path_, ".berry-apply-", getpid(), ".tmp");
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write next to ", path_, ": ", std::strerror(errno)));
  }
  bool ok = fchmod(fd, mode) == 0;
  for (size_t at = 0; ok && at < text.size();) {
    const ssize_t n = write(fd, text.data() + at, text.size() - at);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    ok = n > 0;
    at += ok ? static_cast<size_t>(n) : 0;
  }
  ok = ok && fsync(fd) == 0;
  ok = (close(fd) == 0) && ok;
  if (!ok || rename(temp.c_str(), path_.c_str()) != 0) {
    const int error = errno;
    unlink(temp.c_str());
    return absl::FailedPreconditionError(
        absl::StrCat("cannot replace ", path_, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

std::shared_ptr<const config::Config> ConfigSource::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

absl::Status ConfigSource::Watch(std::function<void()> on_change) {
  const std::filesystem::path file = std::filesystem::absolute(path_);
  const std::string directory = file.parent_path().string();
  const std::string name = file.filename().string();
  inotify_fd_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify_fd_ < 0 || pipe(stop_pipe_) != 0) {
    return absl::UnavailableError("inotify is not available: config edits need SIGHUP");
  }
  // Kubernetes swaps a `..data` symlink inside the directory: any create/move/close-write in the
  // directory may change what the path resolves to.
  if (inotify_add_watch(inotify_fd_, directory.c_str(),
                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MODIFY) < 0) {
    return absl::UnavailableError(absl::StrCat("cannot watch ", directory));
  }
  watcher_ = std::thread([this, name, on_change = std::move(on_change)] {
    alignas(inotify_event) char buffer[16 * 1024];
    for (;;) {
      pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        continue;
      }
      if (fds[1].revents != 0) {
        return;
      }
      bool relevant = false;
      for (;;) {
        const ssize_t n = read(inotify_fd_, buffer, sizeof buffer);
        if (n <= 0) {
          break;
        }
        for (ssize_t at = 0; at < n;) {
          const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
          const std::string_view changed = event->len > 0 ? event->name : "";
          relevant |= changed == name || changed == "..data" || changed.empty();
          at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        }
      }
      if (!relevant) {
        continue;
      }
      // Let a burst of writes (truncate + write, or several renames) settle before reading.
      pollfd stop = {stop_pipe_[0], POLLIN, 0};
      if (poll(&stop, 1, 100) > 0) {
        return;
      }
      while (read(inotify_fd_, buffer, sizeof buffer) > 0) {
      }
      on_change();
    }
  });
  return absl::OkStatus();
}

void ConfigSource::StopWatching() {
  if (watcher_.joinable()) {
    [[maybe_unused]] const ssize_t n = write(stop_pipe_[1], "x", 1);
    watcher_.join();
  }
  for (int* fd : {&inotify_fd_, &stop_pipe_[0], &stop_pipe_[1]}) {
    if (*fd >= 0) {
      close(*fd);
      *fd = -1;
    }
  }
}

}  // namespace berry::control_plane
