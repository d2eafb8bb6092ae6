#include "control-plane/config_source/config_source.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace berry::control_plane {

ConfigSource::~ConfigSource() { StopWatching(); }

ConfigSource::ReloadResult ConfigSource::Reload() {
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
