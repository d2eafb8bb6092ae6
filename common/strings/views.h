// std::string_view <-> absl::string_view. Debian's Abseil is built with its own
// absl::string_view (not an alias of std::string_view), so the two do not convert into each
// other: absl::StrCat, absl::Status and Abseil's hash maps take absl::string_view, everything
// else here uses std::string_view. These two functions are the one place the bytes change type.
//
// Header only (Abseil's string_view is header only too).
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace berry::strings {

inline std::string_view Std(absl::string_view s) { return {s.data(), s.size()}; }
inline absl::string_view Absl(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace berry::strings
