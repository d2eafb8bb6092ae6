// berry-routes: compiles a config into the RouteTable the control plane would push (or a
// standalone proxy would serve) and prints a summary: a dry run for operators and for
// `make run` until the proxy serves. Never prints provider keys, header values or tokens.
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "absl/strings/str_join.h"
#include "common/config/config.h"
#include "common/route_table/compile.h"

namespace {

constexpr std::string_view kUsage =
    "usage: berry-routes --config FILE\n"
    "  Validates FILE (every error is listed) and prints the route table it compiles to.\n"
    "  --config FILE   Berry TOML config (env CONFIG_PATH when the flag is absent)\n"
    "  --help          this text\n";

void PrintTable(const berry::v1::RouteTable& table) {
  std::cout << "route table version " << table.version_info() << "\n\nproviders:\n";
  for (const auto& p : table.providers()) {
    std::cout << "  " << p.id() << "  " << p.base_url() << "  models=["
              << absl::StrJoin(p.models(), ",") << "]" << (p.enabled() ? "" : "  (disabled)")
              << "\n";
  }
  std::cout << "\nmodels:\n";
  for (const auto& m : table.models()) {
    std::cout << "  " << m.name() << "  strategy=" << berry::v1::Strategy_Name(m.strategy())
              << (m.enabled() ? "" : "  (disabled)") << "\n";
    for (const auto& b : m.backends()) {
      std::cout << "    " << b.id() << "  weight=" << b.weight() << " priority=" << b.priority()
                << (b.tags().empty() ? "" : "  tags=[" + absl::StrJoin(b.tags(), ",") + "]")
                << (b.enabled() ? "" : "  (disabled)") << "\n";
    }
  }
  std::cout << "\nusers:";
  if (table.client_keys().empty()) {
    std::cout << " none: the gateway is open to anyone who can reach it\n";
    return;
  }
  std::cout << "\n";
  for (const auto& k : table.client_keys()) {
    std::cout << "  " << k.id() << "  models="
              << (k.allowed_models().empty() ? "all" : absl::StrJoin(k.allowed_models(), ","))
              << (k.enabled() ? "" : "  (disabled)") << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  if (const char* env = std::getenv("CONFIG_PATH")) {
    path = env;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--config" && i + 1 < argc) {
      path = argv[++i];
    } else if (arg.starts_with("--config=")) {
      path = std::string(arg.substr(9));
    } else {
      std::cerr << "berry-routes: unknown or incomplete argument '" << arg << "'\n" << kUsage;
      return 2;
    }
  }
  if (path.empty()) {
    std::cerr << "berry-routes: --config FILE is required\n" << kUsage;
    return 2;
  }
  const berry::config::LoadResult result = berry::config::LoadFile(path);
  if (!result.config) {
    std::cerr << "berry-routes: " << path << " is invalid (" << result.errors.size()
              << " error" << (result.errors.size() == 1 ? "" : "s") << "):\n";
    for (const auto& error : result.errors) {
      std::cerr << "  " << error.ToString() << "\n";
    }
    return 1;
  }
  for (const auto& warning : result.warnings) {
    std::cerr << "berry-routes: warning: " << warning.ToString() << "\n";
  }
  PrintTable(berry::route_table::Compile(*result.config));
  std::cout << "\nThe data-plane proxy (berry-proxy) is not built yet; this is the table it will "
               "serve.\n";
  return 0;
}
