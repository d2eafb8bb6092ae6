#include "control-plane/admin/config_text.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "common/config/schema.h"
#include "common/route_table/compile.h"

namespace berry::admin {

std::string RedactedToml(const config::Config& config) {
  return absl::StrCat("# Running config; secrets read \"<redacted>\" or \"<redacted:USER>\".\n",
                      config::EmitToml(config, {.redact_secrets = true}));
}

namespace {

template <typename T>
std::map<std::string, const T*> ById(const std::vector<T>& items) {
  std::map<std::string, const T*> out;
  for (const T& item : items) {
    out[item.id] = &item;
  }
  return out;
}

// Backends of a model keyed by the id the compiler gives them.
std::map<std::string, const config::Backend*> BackendsById(const config::CustomModel& model) {
  std::map<std::string, const config::Backend*> out;
  std::map<std::string, int> seen;
  for (const config::Backend& b : model.backends) {
    const int repeat = ++seen[absl::StrCat(b.provider, "\n", b.model)];
    out[route_table::BackendId(model.id, b.provider, b.model, repeat)] = &b;
  }
  return out;
}

void AddLines(std::vector<std::string>& lines, const std::string& kind, const std::string& id,
              const std::vector<std::string>& changes) {
  for (const auto& change : changes) {
    lines.push_back(absl::StrCat("~ ", kind, " ", id, ": ", change));
  }
}

void Append(std::vector<std::string>& changes, const std::string& prefix,
            const std::vector<std::string>& more) {
  for (const auto& change : more) {
    changes.push_back(prefix + change);
  }
}

}  // namespace

std::vector<std::string> ConfigDiff(const config::Config* before, const config::Config& after) {
  std::vector<std::string> lines;
  if (before != nullptr) {
    for (const auto& change : config::FieldChanges(before->settings(), after.settings())) {
      lines.push_back(absl::StrCat("~ settings: ", change));
    }
  }

  // Empty stand-ins when there is no running config; ById keeps pointers, so they must outlive it.
  static const std::vector<config::Provider> kNoProviders;
  static const std::vector<config::CustomModel> kNoModels;
  static const std::vector<config::User> kNoUsers;
  const auto old_providers = ById(before ? before->providers() : kNoProviders);
  const auto new_providers = ById(after.providers());
  for (const auto& [id, p] : old_providers) {
    if (!new_providers.contains(id)) {
      lines.push_back(absl::StrCat("- provider ", id));
    }
  }
  for (const auto& [id, p] : new_providers) {
    const auto old = old_providers.find(id);
    if (old == old_providers.end()) {
      lines.push_back(absl::StrCat("+ provider ", id, " (", p->base_url, ", models ",
                                   config::ListText(p->models), ")"));
      continue;
    }
    std::vector<std::string> changes = config::FieldChanges(*old->second, *p);
    Append(changes, "budget.", config::FieldChanges(old->second->budget, p->budget));
    AddLines(lines, "provider", id, changes);
  }

  const auto old_models = ById(before ? before->models() : kNoModels);
  const auto new_models = ById(after.models());
  for (const auto& [id, m] : old_models) {
    if (!new_models.contains(id)) {
      lines.push_back(absl::StrCat("- model ", id));
    }
  }
  for (const auto& [id, m] : new_models) {
    const auto old = old_models.find(id);
    std::vector<std::string> changes;
    std::map<std::string, const config::Backend*> old_backends;
    if (old == old_models.end()) {
      lines.push_back(absl::StrCat("+ model ", id, " (name ", m->name, ", strategy ",
                                   std::string(config::StrategyName(m->strategy)), ")"));
    } else {
      changes = config::FieldChanges(*old->second, *m);
      old_backends = BackendsById(*old->second);
    }
    const auto new_backends = BackendsById(*m);
    for (const auto& [backend_id, b] : old_backends) {
      if (!new_backends.contains(backend_id)) {
        changes.push_back(absl::StrCat("- backend ", backend_id));
      }
    }
    for (const auto& [backend_id, b] : new_backends) {
      const auto was = old_backends.find(backend_id);
      if (was == old_backends.end()) {
        changes.push_back(absl::StrCat("+ backend ", backend_id, " weight ", b->weight,
                                       " priority ", b->priority));
        continue;
      }
      // provider and model are part of the backend id, so they never differ here.
      Append(changes, absl::StrCat("backend ", backend_id, " "),
             config::FieldChanges(*was->second, *b));
      Append(changes, absl::StrCat("backend ", backend_id, " budget."),
             config::FieldChanges(was->second->budget, b->budget));
    }
    AddLines(lines, "model", id, changes);
  }

  const auto old_users = ById(before ? before->users() : kNoUsers);
  const auto new_users = ById(after.users());
  for (const auto& [id, u] : old_users) {
    if (!new_users.contains(id)) {
      lines.push_back(absl::StrCat("- user ", id));
    }
  }
  for (const auto& [id, u] : new_users) {
    const auto old = old_users.find(id);
    if (old == old_users.end()) {
      lines.push_back(absl::StrCat("+ user ", id));
      continue;
    }
    std::vector<std::string> changes = config::FieldChanges(*old->second, *u);
    Append(changes, "", config::FieldChanges(old->second->rate_limit, u->rate_limit));
    AddLines(lines, "user", id, changes);
  }
  return lines;
}

}  // namespace berry::admin
