// The wire dialect a provider speaks, from berry.v1.Provider.backend_type. Read by the
// selection (which backends can serve an endpoint), the proxy (how to talk to the provider) and
// the health checker (how to probe it). Constant data and pure functions; any thread.
#pragma once

#include <optional>
#include <string_view>

namespace berry::route_table {

enum class Dialect {
  kOpenAi,     // backend_type "openai" (or unset)
  kAnthropic,  // backend_type "anthropic", or Berry API's alias "claude"
  kGemini,     // backend_type "gemini": the Gemini API (generateContent)
};

// The dialect `backend_type` names; nullopt for one this build does not speak.
inline std::optional<Dialect> ParseDialect(std::string_view backend_type) {
  if (backend_type.empty() || backend_type == "openai") {
    return Dialect::kOpenAi;
  }
  if (backend_type == "anthropic" || backend_type == "claude") {
    return Dialect::kAnthropic;
  }
  if (backend_type == "gemini") {
    return Dialect::kGemini;
  }
  return std::nullopt;
}

// The version header every Anthropic request and probe carries (a provider's configured
// `anthropic-version` header wins).
inline constexpr std::string_view kAnthropicVersion = "2023-06-01";

// The header that carries a Gemini provider's key (requests and probes; no Authorization).
inline constexpr std::string_view kGeminiKeyHeader = "x-goog-api-key";

}  // namespace berry::route_table
