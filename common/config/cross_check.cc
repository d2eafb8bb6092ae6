#include "common/config/cross_check.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace berry::config::internal {
namespace {

void CheckBackend(const std::map<std::string_view, const Provider*>& providers,
                  const Backend& backend, const std::string& path, Diagnostics& out) {
  const std::string provider_path = ChildPath(path, "provider");
  if (out.HasErrorAt(provider_path)) {
    return;
  }
  const auto found = providers.find(backend.provider);
  if (found == providers.end()) {
    // A provider table that exists but failed to parse was reported already.
    if (!out.HasErrorAt(ProviderPath(backend.provider))) {
      out.Error(provider_path, absl::StrCat("unknown provider \"", backend.provider, "\""));
    }
    return;
  }
  const Provider& provider = *found->second;
  const std::string model_path = ChildPath(path, "model");
  // `models` is required and non-empty, so an empty list here was reported already.
  if (out.HasErrorAt(model_path) || provider.models.empty()) {
    return;
  }
  if (std::find(provider.models.begin(), provider.models.end(), backend.model) ==
      provider.models.end()) {
    out.Error(model_path, absl::StrCat("model \"", backend.model, "\" is not in provider \"",
                                       provider.id, "\"'s models"));
  }
}

void CheckBackends(const Draft& draft, Diagnostics& out) {
  std::map<std::string_view, const Provider*> providers;
  for (const Provider& provider : draft.providers) {
    providers.emplace(provider.id, &provider);
  }
  for (const CustomModel& model : draft.models) {
    const std::string backends_path = ChildPath(ModelPath(model.id), "backends");
    for (size_t i = 0; i < model.backends.size(); ++i) {
      CheckBackend(providers, model.backends[i], IndexPath(backends_path, i), out);
    }
  }
}

// Clients address a custom model by `name`, so two models with one name would be ambiguous.
void CheckUniqueModelNames(const Draft& draft, Diagnostics& out) {
  std::map<std::string_view, std::string_view> owners;  // name -> model id
  for (const CustomModel& model : draft.models) {
    const auto [owner, inserted] = owners.emplace(model.name, model.id);
    if (!inserted) {
      out.Error(ChildPath(ModelPath(model.id), "name"),
                absl::StrCat("name \"", model.name, "\" is already used by model \"",
                             std::string(owner->second), "\""));
    }
  }
}

// A token identifies exactly one user. The reason names both users, never the token.
void CheckUniqueTokens(const Draft& draft, Diagnostics& out) {
  std::map<std::string_view, std::string_view> owners;  // token -> user id
  for (const User& user : draft.users) {
    const std::string token_path = ChildPath(UserPath(user.id), "token");
    if (out.HasErrorAt(token_path)) {
      continue;
    }
    const auto [owner, inserted] = owners.emplace(user.token, user.id);
    if (!inserted) {
      out.Error(token_path, absl::StrCat("user \"", user.id, "\" has the same token as user \"",
                                         std::string(owner->second), "\"; tokens must be unique"));
    }
  }
}

void CheckAllowedModels(const Draft& draft, Diagnostics& out) {
  std::set<std::string_view> known;  // custom model names and ids
  for (const CustomModel& model : draft.models) {
    known.insert(model.name);
    known.insert(model.id);
  }
  for (const User& user : draft.users) {
    const std::string list_path = ChildPath(UserPath(user.id), "allowed_models");
    for (size_t i = 0; i < user.allowed_models.size(); ++i) {
      const std::string& entry = user.allowed_models[i];
      if (!known.contains(entry)) {
        out.Error(IndexPath(list_path, i), absl::StrCat("unknown model \"", entry, "\""));
      }
    }
  }
}

}  // namespace

void CrossCheck(const Draft& draft, Diagnostics& diagnostics) {
  CheckBackends(draft, diagnostics);
  CheckUniqueModelNames(draft, diagnostics);
  CheckUniqueTokens(draft, diagnostics);
  CheckAllowedModels(draft, diagnostics);
}

}  // namespace berry::config::internal
