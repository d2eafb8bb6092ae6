#include "common/config/interpolate.h"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace berry::config::internal {
namespace {

constexpr std::string_view kOpen = "${";
constexpr std::string_view kEscapedOpen = "$${";

bool IsVariableName(std::string_view name) {
  const auto is_word = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  };
  return !name.empty() && !absl::ascii_isdigit(static_cast<unsigned char>(name.front())) &&
         std::all_of(name.begin(), name.end(), is_word);
}

// Expands the variable named between `${` and `}`, or says why it cannot.
void Expand(std::string_view name, const EnvLookup& env, Interpolated& out) {
  if (!IsVariableName(name)) {
    // The text between the braces is not echoed: it may be a pasted secret.
    out.problems.emplace_back(
        "invalid environment variable reference: ${...} needs a name matching "
        "[A-Za-z_][A-Za-z0-9_]*");
    return;
  }
  std::optional<std::string> value = env(std::string(name));
  if (!value.has_value()) {
    out.problems.emplace_back(
        absl::StrCat("environment variable ", std::string(name), " is not set"));
    return;
  }
  out.value += *value;
}

}  // namespace

Interpolated Interpolate(std::string_view text, const EnvLookup& env) {
  Interpolated out;
  out.value.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const std::string_view rest = text.substr(i);
    if (rest.starts_with(kEscapedOpen)) {
      out.value += kOpen;
      i += kEscapedOpen.size();
    } else if (rest.starts_with(kOpen)) {
      const size_t close = rest.find('}', kOpen.size());
      if (close == std::string_view::npos) {
        out.problems.emplace_back("unterminated ${ (write $${ for a literal ${)");
        break;
      }
      Expand(rest.substr(kOpen.size(), close - kOpen.size()), env, out);
      i += close + 1;
    } else {
      out.value += text[i];
      ++i;
    }
  }
  return out;
}

EnvLookup ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    // getenv is safe here: config loading never runs concurrently with setenv in Berry.
    const char* value = std::getenv(name.c_str());  // NOLINT(concurrency-mt-unsafe)
    if (value == nullptr) {
      return std::nullopt;
    }
    return std::string(value);
  };
}

}  // namespace berry::config::internal
