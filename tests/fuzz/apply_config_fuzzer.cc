// ApplyConfig's text (control-plane/admin/admin_service.cc, DoApply): the TOML an operator sends
// through ConfigSource::ApplyText as a dry run against a running config, then the views the
// answer is built from: the diff against the running config and the redacted TOML.
//
// Properties: the redacted TOML of a config that loads loads again, without errors or warnings,
// into the same settings (but for the compatibility-only max_internal_retries, which it leaves
// out), models and ids; a config's diff against itself is empty; a provider
// key written in the text once (and marked SECRET, as the seeds do) appears in neither view.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/config/config.h"
#include "control-plane/admin/config_text.h"
#include "control-plane/config_source/config_source.h"
#include "tests/fuzz/byte_source.h"

namespace {

constexpr std::string_view kRunning = R"(
[providers.a]
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-running-SECRET-0001"
models = ["m1", "m2"]

[models.chat]
strategy = "failover"
[[models.chat.backends]]
provider = "a"
model = "m1"
weight = 2
)";

berry::control_plane::ConfigSource& Source() {
  static berry::control_plane::ConfigSource* source = [] {
    char dir[] = "/tmp/berry-fuzz-apply-XXXXXX";
    FUZZ_CHECK(::mkdtemp(dir) != nullptr);
    auto* made = new berry::control_plane::ConfigSource(std::string(dir) + "/config.toml");
    const auto result = made->ApplyText(kRunning, {});
    FUZZ_CHECK(result.errors.empty() && result.after != nullptr);
    return made;
  }();
  return *source;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  berry::control_plane::ConfigSource::ApplyOptions options;
  options.dry_run = true;
  options.source_name = "<api>";
  const auto result = Source().ApplyText(text, options);
  for (const auto& error : result.errors) {
    FUZZ_CHECK(!error.ToString().empty());
  }
  if (!result.errors.empty()) {
    FUZZ_CHECK(result.after == nullptr);
    return 0;
  }
  FUZZ_CHECK(result.after != nullptr && result.before != nullptr);
  const berry::config::Config& after = *result.after;
  const auto diff = berry::admin::ConfigDiff(result.before.get(), after);
  FUZZ_CHECK(berry::admin::ConfigDiff(&after, after).empty());
  (void)berry::admin::ConfigDiff(nullptr, after);
  const std::string redacted = berry::admin::RedactedToml(after);

  for (const auto& provider : after.providers()) {
    const std::string& key = provider.api_key;
    if (key.size() >= 10 && key.find("SECRET") != std::string::npos &&
        berry::fuzz::Count(text, key) == 1) {
      FUZZ_CHECK(redacted.find(key) == std::string::npos);
      for (const auto& line : diff) {
        FUZZ_CHECK(line.find(key) == std::string::npos);
      }
    }
  }

  berry::config::LoadOptions same_environment;
  same_environment.env = [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    return value ? std::optional<std::string>(value) : std::nullopt;
  };
  const auto again = berry::config::Parse(redacted, "<redacted>", same_environment);
  if (!again.config) {
    for (const auto& error : again.errors) {
      std::fprintf(stderr, "reloading the redacted TOML: %s\n", error.ToString().c_str());
    }
  }
  FUZZ_CHECK(again.config.has_value());
  FUZZ_CHECK(again.warnings.empty());
  // settings.max_internal_retries has no effect, so the redacted TOML leaves it out (as it does
  // the [settings.smart_ai] table): it comes back as the default.
  berry::config::Settings settings = after.settings();
  settings.max_internal_retries = berry::config::Settings{}.max_internal_retries;
  FUZZ_CHECK(again.config->settings() == settings);
  FUZZ_CHECK(again.config->models() == after.models());
  FUZZ_CHECK(again.config->providers().size() == after.providers().size());
  FUZZ_CHECK(again.config->users().size() == after.users().size());
  for (size_t i = 0; i < after.providers().size(); ++i) {
    const auto& want = after.providers()[i];
    const auto& got = again.config->providers()[i];
    FUZZ_CHECK(got.id == want.id && got.base_url == want.base_url && got.models == want.models);
  }
  for (size_t i = 0; i < after.users().size(); ++i) {
    const auto& want = after.users()[i];
    const auto& got = again.config->users()[i];
    FUZZ_CHECK(got.id == want.id && got.allowed_models == want.allowed_models &&
               got.rate_limit == want.rate_limit);
  }
  return 0;
}
