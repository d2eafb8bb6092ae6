// JSON string escaping shared by every part that writes JSON by hand (error bodies, `model`
// rewriting, log lines, the mock upstream). Pure functions; any thread.
#pragma once

#include <string>
#include <string_view>

namespace berry::json {

// Appends `text` to `out` as a JSON string literal, quotes included. `"` and `\` are escaped,
// control characters become \b \f \n \r \t or \u00XX, and every byte that is not part of
// well-formed UTF-8 becomes \ufffd, so the result is valid JSON whatever `text` holds
// (error messages may quote upstream or client bytes). Well-formed UTF-8 is copied as is.
void AppendJsonString(std::string& out, std::string_view text);

}  // namespace berry::json
