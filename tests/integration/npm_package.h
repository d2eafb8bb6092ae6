// The npm install of an official SDK that the SDK tests (openai_sdk_test, anthropic_sdk_test)
// drive with node, and skip without.
#pragma once

#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tests/integration/child_process.h"

namespace berry::itest {

// Installs npm `package` (e.g. "openai@4") under `dir` unless `dir`/node_modules/`name` is
// there; the error says why when npm cannot (the SDK tests skip with it).
inline absl::Status InstallNpmPackage(const std::string& dir, std::string_view name,
                                      std::string_view package) {
  if (access(absl::StrCat(dir, "/node_modules/", std::string(name), "/package.json").c_str(),
             F_OK) == 0) {
    return absl::OkStatus();
  }
  auto npm = ChildProcess::Spawn(
      {"/bin/sh", "-c",
       absl::StrCat("mkdir -p '", dir, "' && npm install --prefix '", dir,
                    "' --no-audit --no-fund --loglevel=error ", std::string(package))});
  if (npm == nullptr) {
    return absl::UnavailableError("npm could not be started");
  }
  const std::optional<int> code = npm->Wait(std::chrono::seconds(240));
  if (code != 0) {
    return absl::UnavailableError(
        absl::StrCat("npm install ", std::string(package), " failed (exit ",
                     code ? std::to_string(*code) : "timeout", "): ", npm->err()));
  }
  return absl::OkStatus();
}

}  // namespace berry::itest
