// What the tests of Anthropic and Gemini backends share: the mock providers started (fatal when
// they cannot) and their provider TOML.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tests/integration/proxy_test_util.h"
#include "tests/support/mock_anthropic.h"
#include "tests/support/mock_gemini.h"

namespace berry::itest {

inline std::unique_ptr<test_support::MockAnthropic> StartAnthropicMock(
    test_support::AnthropicBehavior behavior = {}) {
  auto mock = test_support::MockAnthropic::Start();
  if (!mock.ok()) {
    Fatal("mock Anthropic did not start: " + mock.status().ToString());
  }
  (*mock)->SetBehavior(std::move(behavior));
  return *std::move(mock);
}

inline std::unique_ptr<test_support::MockGemini> StartGeminiMock(
    test_support::GeminiBehavior behavior = {}) {
  auto mock = test_support::MockGemini::Start();
  if (!mock.ok()) {
    Fatal("mock Gemini did not start: " + mock.status().ToString());
  }
  (*mock)->SetBehavior(std::move(behavior));
  return *std::move(mock);
}

// Provider `id` on the mock, backend_type "anthropic", key sk-ant-test, serving `model`.
inline std::string AnthropicProviderToml(std::string_view id,
                                         const test_support::MockAnthropic& mock,
                                         std::string_view model = "claude-up") {
  return absl::StrCat("[providers.", std::string(id), "]\nbase_url = \"", mock.base_url(),
                      "\"\napi_key = \"sk-ant-test\"\nbackend_type = \"anthropic\"\n",
                      "models = [\"", std::string(model), "\"]\n\n");
}

// Provider `id` on the mock, backend_type "gemini", key gm-test-key, serving `model`.
inline std::string GeminiProviderToml(std::string_view id, const test_support::MockGemini& mock,
                                      std::string_view model) {
  return absl::StrCat("[providers.", std::string(id), "]\nbase_url = \"", mock.base_url(),
                      "\"\napi_key = \"gm-test-key\"\nbackend_type = \"gemini\"\n", "models = [\"",
                      std::string(model), "\"]\n\n");
}

}  // namespace berry::itest
