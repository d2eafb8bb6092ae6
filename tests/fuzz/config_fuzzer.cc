// A TOML config through the whole loader (common/config/config.h, Parse): TOML parsing, `${VAR}`
// interpolation against an injected environment, schema checks and cross-checks.
//
// The environment: a name starting with "UNSET" is unset; every other name reads as a value
// that itself looks like a reference, quotes and a newline ("${NAME}\"\n"), so a loader that
// expanded twice or pasted values into TOML text would show it.
//
// Properties: a config loads exactly when there are no errors; every error and warning renders;
// a loaded config compiles into a route table (common/route_table) with a stable version.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/config/config.h"
#include "common/route_table/compile.h"
#include "tests/fuzz/byte_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  berry::config::LoadOptions options;
  options.env = [](const std::string& name) -> std::optional<std::string> {
    if (name.starts_with("UNSET")) {
      return std::nullopt;
    }
    return "${" + name + "}\"\n";
  };
  const berry::config::LoadResult result = berry::config::Parse(text, "<fuzz>", options);
  FUZZ_CHECK(result.config.has_value() == result.errors.empty());
  for (const auto& error : result.errors) {
    FUZZ_CHECK(!error.ToString().empty());
  }
  for (const auto& warning : result.warnings) {
    FUZZ_CHECK(!warning.ToString().empty());
  }
  if (result.config) {
    const auto table = berry::route_table::Compile(*result.config);
    FUZZ_CHECK(berry::route_table::ComputeVersion(table) == table.version_info());
  }
  return 0;
}
