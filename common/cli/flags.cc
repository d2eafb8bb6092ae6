#include "common/cli/flags.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace berry::cli {

FlagSet::FlagSet(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void FlagSet::String(std::string name, std::string* value, std::string help, std::string env) {
  flags_.push_back({std::move(name), Kind::kString, value, std::move(help), std::move(env),
                    value->empty() ? "" : *value});
}

void FlagSet::Int(std::string name, int64_t* value, std::string help, std::string env,
                  int64_t min, int64_t max) {
  flags_.push_back({std::move(name), Kind::kInt, value, std::move(help), std::move(env),
                    std::to_string(*value), min, max});
}

void FlagSet::Bool(std::string name, bool* value, std::string help) {
  flags_.push_back({std::move(name), Kind::kBool, value, std::move(help), "",
                    *value ? "true" : ""});
}

FlagSet::Flag* FlagSet::Find(std::string_view name) {
  for (Flag& flag : flags_) {
    if (flag.name == name) {
      return &flag;
    }
  }
  return nullptr;
}

absl::Status FlagSet::Set(Flag& flag, std::string_view text, std::string_view source) {
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.value) = std::string(text);
      return absl::OkStatus();
    case Kind::kInt: {
      int64_t parsed = 0;
      if (!absl::SimpleAtoi(std::string(text), &parsed) || parsed < flag.min || parsed > flag.max) {
        std::string range;
        if (flag.min != INT64_MIN || flag.max != INT64_MAX) {
          range = absl::StrCat(" between ", flag.min, " and ", flag.max);
        }
        return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": '", std::string(text),
                                                       "' is not an integer", range));
      }
      *static_cast<int64_t*>(flag.value) = parsed;
      return absl::OkStatus();
    }
    case Kind::kBool:
      if (text == "true" || text == "1" || text.empty()) {
        *static_cast<bool*>(flag.value) = true;
      } else if (text == "false" || text == "0") {
        *static_cast<bool*>(flag.value) = false;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(std::string(source), ": '", std::string(text), "' is not true or false"));
      }
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status FlagSet::Parse(int argc, char** argv) {
  for (Flag& flag : flags_) {
    if (flag.env.empty()) {
      continue;
    }
    if (const char* env = std::getenv(flag.env.c_str()); env != nullptr && *env != '\0') {
      if (absl::Status status = Set(flag, env, absl::StrCat("environment ", flag.env));
          !status.ok()) {
        return status;
      }
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (arg == "--") {
      for (++i; i < argc; ++i) {
        positional_.emplace_back(argv[i]);
      }
      break;
    }
    if (!arg.starts_with("--")) {
      positional_.emplace_back(arg);
      continue;
    }
    arg.remove_prefix(2);
    std::string_view name = arg;
    std::string_view value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", std::string(name), " (see --help)"));
    }
    if (!has_value && flag->kind != Kind::kBool) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", flag->name, " needs a value"));
      }
      value = argv[++i];
    }
    if (absl::Status status = Set(*flag, value, absl::StrCat("--", flag->name)); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

std::string FlagSet::Help() const {
  std::string out = absl::StrCat("usage: ", program_, " [flags]\n", summary_, "\n\nflags:\n");
  for (const Flag& flag : flags_) {
    std::string head = absl::StrCat("  --", flag.name);
    if (flag.kind == Kind::kString) {
      head += " STRING";
    } else if (flag.kind == Kind::kInt) {
      head += " N";
    }
    absl::StrAppend(&out, head, "\n      ", flag.help);
    if (!flag.default_text.empty()) {
      absl::StrAppend(&out, " (default ", flag.default_text, ")");
    }
    if (!flag.env.empty()) {
      absl::StrAppend(&out, " [env ", flag.env, "]");
    }
    out += "\n";
  }
  out += "  --help\n      this text\n";
  return out;
}

}  // namespace berry::cli
