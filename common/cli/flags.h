// A small, strict command-line parser shared by Berry's programs: `--name value` and
// `--name=value`, optional environment-variable defaults, `--help` generated from the
// declarations, and a clear error for an unknown flag or a bad value (so a typo never starts a
// server with defaults). Single-threaded, used from main() only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace berry::cli {

class FlagSet {
 public:
  FlagSet(std::string program, std::string summary);

  // Each binds a flag to a variable that already holds its default. `env`, when not empty, is
  // read first (the command line wins).
  void String(std::string name, std::string* value, std::string help, std::string env = {});
  void Int(std::string name, int64_t* value, std::string help, std::string env = {},
           int64_t min = INT64_MIN, int64_t max = INT64_MAX);
  void Bool(std::string name, bool* value, std::string help);

  // Parses argv (and the environment). InvalidArgument naming the flag on a problem; after
  // `--help` help_requested() is true and nothing else is checked. Positional arguments are
  // collected in positional().
  absl::Status Parse(int argc, char** argv);
  bool help_requested() const { return help_requested_; }
  const std::vector<std::string>& positional() const { return positional_; }
  std::string Help() const;

 private:
  enum class Kind { kString, kInt, kBool };
  struct Flag {
    std::string name;
    Kind kind;
    void* value;
    std::string help;
    std::string env;
    std::string default_text;
    int64_t min = 0;
    int64_t max = 0;
  };
  Flag* Find(std::string_view name);
  absl::Status Set(Flag& flag, std::string_view text, std::string_view source);

  std::string program_;
  std::string summary_;
  std::vector<Flag> flags_;
  std::vector<std::string> positional_;
  bool help_requested_ = false;
};

}  // namespace berry::cli
