#include "control-plane/admin/config_text.h"

#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/route_table/compile.h"

namespace berry::admin {
namespace {

std::string Quote(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned char>(c));
          out += buffer;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// A TOML key: bare when it can be, quoted otherwise.
std::string Key(std::string_view key) {
  bool bare = !key.empty();
  for (const char c : key) {
    bare &= absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  }
  return bare ? std::string(key) : Quote(key);
}

std::string List(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  quoted.reserve(items.size());
  for (const auto& item : items) {
    quoted.push_back(Quote(item));
  }
  return absl::StrCat("[", absl::StrJoin(quoted, ", "), "]");
}

std::string Bool(bool value) { return value ? "true" : "false"; }

std::string Number(double value) {
  std::string text = absl::StrCat(value);
  if (text.find_first_of(".eE") == std::string::npos) {
    text += ".0";  // stays a TOML float
  }
  return text;
}

}  // namespace

std::string RedactedToml(const config::Config& config) {
  std::string out = "# Running config; secrets read \"<redacted>\".\n[settings]\n";
  const config::Settings& s = config.settings();
  absl::StrAppend(&out, "health_check_interval_seconds = ", s.health_check_interval_seconds, "\n",
                  "health_check_timeout_seconds = ", s.health_check_timeout_seconds, "\n",
                  "request_timeout_seconds = ", s.request_timeout_seconds, "\n",
                  "stream_idle_timeout_seconds = ", s.stream_idle_timeout_seconds, "\n",
                  "max_retries = ", s.max_retries, "\n",
                  "circuit_breaker_failure_threshold = ", s.circuit_breaker_failure_threshold, "\n",
                  "circuit_breaker_timeout_seconds = ", s.circuit_breaker_timeout_seconds, "\n",
                  "recovery_check_interval_seconds = ", s.recovery_check_interval_seconds, "\n",
                  "max_internal_retries = ", s.max_internal_retries, "\n",
                  "panic_threshold_percent = ", s.panic_threshold_percent, "\n",
                  "max_request_body_bytes = ", s.max_request_body_bytes, "\n");
  for (const config::Provider& p : config.providers()) {
    absl::StrAppend(&out, "\n[providers.", Key(p.id), "]\n", "name = ", Quote(p.name), "\n",
                    "base_url = ", Quote(p.base_url), "\n", "api_key = ", Quote(kRedacted), "\n",
                    "models = ", List(p.models), "\n");
    if (!p.headers.empty()) {
      std::vector<std::string> headers;
      for (const auto& [name, value] : p.headers) {
        headers.push_back(absl::StrCat(Quote(name), " = ", Quote(kRedacted)));
      }
      absl::StrAppend(&out, "headers = { ", absl::StrJoin(headers, ", "), " }\n");
    }
    absl::StrAppend(&out, "enabled = ", Bool(p.enabled), "\n", "timeout_seconds = ",
                    p.timeout_seconds, "\n", "max_retries = ", p.max_retries, "\n",
                    "backend_type = ", Quote(p.backend_type), "\n", "tls_verify = ",
                    Bool(p.tls_verify), "\n", "billing_mode = ", Quote(p.billing_mode), "\n");
  }
  for (const config::CustomModel& m : config.models()) {
    absl::StrAppend(&out, "\n[models.", Key(m.id), "]\n", "name = ", Quote(m.name), "\n",
                    "strategy = ", Quote(config::StrategyName(m.strategy)), "\n", "enabled = ",
                    Bool(m.enabled), "\n");
    for (const config::Backend& b : m.backends) {
      absl::StrAppend(&out, "[[models.", Key(m.id), ".backends]]\n", "provider = ",
                      Quote(b.provider), "\n", "model = ", Quote(b.model), "\n", "weight = ",
                      Number(b.weight), "\n", "priority = ", b.priority, "\n", "enabled = ",
                      Bool(b.enabled), "\n", "tags = ", List(b.tags), "\n", "billing_mode = ",
                      Quote(b.billing_mode), "\n");
    }
  }
  for (const config::User& u : config.users()) {
    absl::StrAppend(&out, "\n[users.", Key(u.id), "]\n", "name = ", Quote(u.name), "\n",
                    "token = ", Quote(kRedacted), "\n", "allowed_models = ",
                    List(u.allowed_models), "\n", "enabled = ", Bool(u.enabled), "\n", "tags = ",
                    List(u.tags), "\n");
    const config::RateLimit& r = u.rate_limit;
    if (r.requests_per_minute || r.requests_per_hour || r.requests_per_day) {
      absl::StrAppend(&out, "[users.", Key(u.id), ".rate_limit]\n");
      if (r.requests_per_minute) {
        absl::StrAppend(&out, "requests_per_minute = ", *r.requests_per_minute, "\n");
      }
      if (r.requests_per_hour) {
        absl::StrAppend(&out, "requests_per_hour = ", *r.requests_per_hour, "\n");
      }
      if (r.requests_per_day) {
        absl::StrAppend(&out, "requests_per_day = ", *r.requests_per_day, "\n");
      }
    }
  }
  return out;
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

// Adds "field a -> b" to `changes` when the values differ.
template <typename T>
void Field(std::vector<std::string>& changes, const std::string& name, const T& before,
           const T& after) {
  if (!(before == after)) {
    changes.push_back(absl::StrCat(name, " ", before, " -> ", after));
  }
}

void ListField(std::vector<std::string>& changes, const std::string& name,
               const std::vector<std::string>& before, const std::vector<std::string>& after) {
  if (before != after) {
    changes.push_back(absl::StrCat(name, " ", List(before), " -> ", List(after)));
  }
}

std::string Optional(const std::optional<int64_t>& value) {
  return value ? absl::StrCat(*value) : "unlimited";
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

}  // namespace

std::vector<std::string> ConfigDiff(const config::Config* before, const config::Config& after) {
  std::vector<std::string> lines;
  if (before != nullptr) {
    const config::Settings& a = before->settings();
    const config::Settings& b = after.settings();
    std::vector<std::string> changes;
    Field(changes, "health_check_interval_seconds", a.health_check_interval_seconds,
          b.health_check_interval_seconds);
    Field(changes, "health_check_timeout_seconds", a.health_check_timeout_seconds,
          b.health_check_timeout_seconds);
    Field(changes, "request_timeout_seconds", a.request_timeout_seconds,
          b.request_timeout_seconds);
    Field(changes, "stream_idle_timeout_seconds", a.stream_idle_timeout_seconds,
          b.stream_idle_timeout_seconds);
    Field(changes, "max_retries", a.max_retries, b.max_retries);
    Field(changes, "circuit_breaker_failure_threshold", a.circuit_breaker_failure_threshold,
          b.circuit_breaker_failure_threshold);
    Field(changes, "circuit_breaker_timeout_seconds", a.circuit_breaker_timeout_seconds,
          b.circuit_breaker_timeout_seconds);
    Field(changes, "recovery_check_interval_seconds", a.recovery_check_interval_seconds,
          b.recovery_check_interval_seconds);
    Field(changes, "max_internal_retries", a.max_internal_retries, b.max_internal_retries);
    Field(changes, "panic_threshold_percent", a.panic_threshold_percent,
          b.panic_threshold_percent);
    Field(changes, "max_request_body_bytes", a.max_request_body_bytes, b.max_request_body_bytes);
    for (const auto& change : changes) {
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
                                   List(p->models), ")"));
      continue;
    }
    const config::Provider& o = *old->second;
    std::vector<std::string> changes;
    Field(changes, "name", o.name, p->name);
    Field(changes, "base_url", o.base_url, p->base_url);
    ListField(changes, "models", o.models, p->models);
    Field(changes, "enabled", Bool(o.enabled), Bool(p->enabled));
    Field(changes, "timeout_seconds", o.timeout_seconds, p->timeout_seconds);
    Field(changes, "max_retries", o.max_retries, p->max_retries);
    Field(changes, "backend_type", o.backend_type, p->backend_type);
    Field(changes, "tls_verify", Bool(o.tls_verify), Bool(p->tls_verify));
    Field(changes, "billing_mode", o.billing_mode, p->billing_mode);
    if (o.api_key != p->api_key) {
      changes.push_back("api_key changed");
    }
    if (o.headers != p->headers) {
      std::vector<std::string> names_before, names_after;
      for (const auto& [name, value] : o.headers) names_before.push_back(name);
      for (const auto& [name, value] : p->headers) names_after.push_back(name);
      changes.push_back(names_before == names_after
                            ? std::string("header values changed")
                            : absl::StrCat("headers ", List(names_before), " -> ",
                                           List(names_after)));
    }
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
      const config::CustomModel& o = *old->second;
      Field(changes, "name", o.name, m->name);
      Field(changes, "strategy", std::string(config::StrategyName(o.strategy)),
            std::string(config::StrategyName(m->strategy)));
      Field(changes, "enabled", Bool(o.enabled), Bool(m->enabled));
      old_backends = BackendsById(o);
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
      const std::string prefix = absl::StrCat("backend ", backend_id);
      Field(changes, prefix + " weight", was->second->weight, b->weight);
      Field(changes, prefix + " priority", was->second->priority, b->priority);
      Field(changes, prefix + " enabled", Bool(was->second->enabled), Bool(b->enabled));
      ListField(changes, prefix + " tags", was->second->tags, b->tags);
      Field(changes, prefix + " billing_mode", was->second->billing_mode, b->billing_mode);
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
    const config::User& o = *old->second;
    std::vector<std::string> changes;
    Field(changes, "name", o.name, u->name);
    if (o.token != u->token) {
      changes.push_back("token changed");
    }
    ListField(changes, "allowed_models", o.allowed_models, u->allowed_models);
    Field(changes, "enabled", Bool(o.enabled), Bool(u->enabled));
    ListField(changes, "tags", o.tags, u->tags);
    Field(changes, "requests_per_minute", Optional(o.rate_limit.requests_per_minute),
          Optional(u->rate_limit.requests_per_minute));
    Field(changes, "requests_per_hour", Optional(o.rate_limit.requests_per_hour),
          Optional(u->rate_limit.requests_per_hour));
    Field(changes, "requests_per_day", Optional(o.rate_limit.requests_per_day),
          Optional(u->rate_limit.requests_per_day));
    AddLines(lines, "user", id, changes);
  }
  return lines;
}

}  // namespace berry::admin
