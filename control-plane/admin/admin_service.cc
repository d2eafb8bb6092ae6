#include "control-plane/admin/admin_service.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include <google/protobuf/util/time_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/crypto/sha256.h"
#include "common/log/log.h"
#include "common/route_table/compile.h"
#include "control-plane/admin/config_text.h"

namespace berry::admin {
namespace {

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  google::protobuf::Timestamp out;
  if (time != absl::Time()) {
    const int64_t nanos = absl::ToUnixNanos(time);
    out = google::protobuf::util::TimeUtil::NanosecondsToTimestamp(nanos);
  }
  return out;
}

const char* StateName(v1::BackendAdminState state) {
  switch (state) {
    case v1::BACKEND_ADMIN_STATE_DISABLED:
      return "disabled";
    case v1::BACKEND_ADMIN_STATE_DRAINING:
      return "draining";
    default:
      return "enabled";
  }
}

// One JSON audit line per mutation (the log line is JSON; "audit" marks it).
void Audit(std::string_view action, const std::string& who, const std::string& what,
           const std::string& old_version, const std::string& new_version) {
  log::Info("audit", {{"audit", action},
                      {"who", who},
                      {"what", what},
                      {"old_version", old_version},
                      {"new_version", new_version}});
}

std::string TableVersion(const control_plane::RoutePublisher& publisher) {
  const auto table = publisher.Current();
  return table ? table->version_info() : std::string();
}

}  // namespace

std::string ConfigVersion(const config::Config& config) {
  return route_table::Compile(config).version_info();
}

void ToProto(const std::vector<config::ConfigError>& errors,
             google::protobuf::RepeatedPtrField<v1::ConfigError>* out) {
  for (const auto& error : errors) {
    v1::ConfigError* e = out->Add();
    e->set_file(error.file == "<api>" ? "" : error.file);
    e->set_key_path(error.key_path);
    e->set_line(static_cast<uint32_t>(std::max(error.line, 0)));
    e->set_column(static_cast<uint32_t>(std::max(error.column, 0)));
    e->set_reason(error.reason);
  }
}

// --- BackendOverrides ------------------------------------------------------------------------

void BackendOverrides::Set(const std::string& backend_id, v1::BackendAdminState state) {
  absl::MutexLock lock(&mu_);
  if (state == v1::BACKEND_ADMIN_STATE_ENABLED) {
    states_.erase(backend_id);
  } else {
    states_[backend_id] = state;
  }
}

v1::BackendAdminState BackendOverrides::Get(const std::string& backend_id) const {
  absl::MutexLock lock(&mu_);
  const auto it = states_.find(backend_id);
  return it == states_.end() ? v1::BACKEND_ADMIN_STATE_ENABLED : it->second;
}

void BackendOverrides::Apply(v1::RouteTable& table) const {
  absl::MutexLock lock(&mu_);
  if (states_.empty()) {
    return;
  }
  for (auto& model : *table.mutable_models()) {
    for (auto& backend : *model.mutable_backends()) {
      const auto it = states_.find(backend.id());
      if (it == states_.end()) {
        continue;
      }
      if (it->second == v1::BACKEND_ADMIN_STATE_DISABLED) {
        backend.set_enabled(false);
      } else if (it->second == v1::BACKEND_ADMIN_STATE_DRAINING) {
        backend.set_health(v1::HEALTH_STATUS_DRAINING);
      }
    }
  }
}

// --- AdminAuth -------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<AdminAuth>> AdminAuth::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read admin token file ", path));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const std::string token(absl::StripAsciiWhitespace(text));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("admin token file ", path, " is empty"));
  }
  return FromToken(token);
}

std::unique_ptr<AdminAuth> AdminAuth::FromToken(std::string_view token) {
  auto auth = std::make_unique<AdminAuth>();
  auth->digest_ = crypto::Sha256Bytes(token);
  auth->token_id_ = crypto::HexEncode(*auth->digest_).substr(0, 8);
  return auth;
}

grpc::Status AdminAuth::Check(const grpc::CallbackServerContext& context, std::string* who) {
  if (!digest_) {
    *who = "anonymous";
    return grpc::Status::OK;
  }
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  std::string_view presented;
  if (it != metadata.end()) {
    presented = std::string_view(it->second.data(), it->second.size());
  }
  constexpr std::string_view kBearer = "Bearer ";
  const bool bearer = presented.size() > kBearer.size() &&
                      absl::AsciiStrToLower(std::string(presented.substr(0, kBearer.size()))) ==
                          "bearer ";
  if (bearer &&
      crypto::ConstantTimeEquals(crypto::Sha256Bytes(presented.substr(kBearer.size())),
                                 *digest_)) {
    *who = token_id_;
    return grpc::Status::OK;
  }
  unauthenticated_.fetch_add(1, std::memory_order_relaxed);
  log::Warn("admin call refused: missing or wrong bearer token",
            {{"peer", context.peer()}, {"had_authorization", it == metadata.end() ? "no" : "yes"}});
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "AdminService needs metadata `authorization: Bearer <admin token>`");
}

// --- EventHub --------------------------------------------------------------------------------

void EventHub::OnPublished(const v1::RouteTable& table) {
  const auto now = ToTimestamp(absl::Now());
  std::vector<v1::WatchEventsResponse> events;
  absl::MutexLock lock(&mu_);
  absl::flat_hash_map<std::string, v1::HealthStatus> health;
  for (const auto& model : table.models()) {
    for (const auto& backend : model.backends()) {
      health[backend.id()] = backend.health();
      const auto was = health_.find(backend.id());
      if (was != health_.end() && was->second != backend.health()) {
        v1::WatchEventsResponse& event = events.emplace_back();
        event.set_description(absl::StrCat("backend ", backend.id(), " ",
                                           v1::HealthStatus_Name(was->second), " -> ",
                                           v1::HealthStatus_Name(backend.health())));
      }
    }
  }
  if (table.version_info() != version_) {
    v1::WatchEventsResponse& event = events.emplace_back();
    event.set_description(absl::StrCat("route table version ", table.version_info(),
                                       " published (was ", version_.empty() ? "none" : version_,
                                       ")"));
  }
  version_ = table.version_info();
  health_ = std::move(health);
  for (auto& event : events) {
    *event.mutable_time() = now;
    event.set_version(version_);
    for (Subscriber* subscriber : subscribers_) {
      subscriber->Push(event);
    }
  }
}

void EventHub::Subscribe(Subscriber* subscriber) {
  absl::MutexLock lock(&mu_);
  subscribers_.insert(subscriber);
  v1::WatchEventsResponse event;
  *event.mutable_time() = ToTimestamp(absl::Now());
  event.set_version(version_);
  event.set_description(absl::StrCat("watching; route table version ",
                                     version_.empty() ? "none" : version_, " in force"));
  subscriber->Push(event);
}

void EventHub::Unsubscribe(Subscriber* subscriber) {
  absl::MutexLock lock(&mu_);
  subscribers_.erase(subscriber);
}

// --- AdminService ----------------------------------------------------------------------------

namespace {

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// One WatchEvents stream: at most one write in flight, later events queued (bounded: a reader
// that stops reading loses the oldest), finishes once, deletes itself in OnDone.
class EventWriter final : public grpc::ServerWriteReactor<v1::WatchEventsResponse>,
                          public EventHub::Subscriber {
 public:
  explicit EventWriter(EventHub& hub) : hub_(hub) { hub_.Subscribe(this); }

  void Push(const v1::WatchEventsResponse& event) override {
    absl::MutexLock lock(&mu_);
    if (finished_) {
      return;
    }
    if (queue_.size() >= kMaxQueued) {
      queue_.pop_front();
    }
    queue_.push_back(event);
    if (!writing_) {
      WriteNextLocked();
    }
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked();
      return;
    }
    queue_.pop_front();
    if (!queue_.empty()) {
      WriteNextLocked();
    }
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked();
  }

  void OnDone() override {
    hub_.Unsubscribe(this);
    delete this;
  }

 private:
  static constexpr size_t kMaxQueued = 1024;

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || queue_.empty()) {
      return;
    }
    writing_ = true;
    StartWrite(&queue_.front());
  }

  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finished_) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  EventHub& hub_;
  absl::Mutex mu_;
  std::deque<v1::WatchEventsResponse> queue_ ABSL_GUARDED_BY(mu_);  // front = in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerUnaryReactor* AdminService::ValidateConfig(grpc::CallbackServerContext* context,
                                                       const v1::ValidateConfigRequest* request,
                                                       v1::ValidateConfigResponse* response) {
  std::string who;
  if (grpc::Status status = deps_.auth.Check(*context, &who); !status.ok()) {
    return Done(context, status);
  }
  const config::LoadResult loaded = config::Parse(request->toml(), "<api>");
  response->set_valid(loaded.errors.empty());
  ToProto(loaded.errors, response->mutable_errors());
  ToProto(loaded.warnings, response->mutable_warnings());
  return Done(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* AdminService::ApplyConfig(grpc::CallbackServerContext* context,
                                                    const v1::ApplyConfigRequest* request,
                                                    v1::ApplyConfigResponse* response) {
  std::string who;
  if (grpc::Status status = deps_.auth.Check(*context, &who); !status.ok()) {
    return Done(context, status);
  }
  return Done(context, DoApply(who, *request, *response));
}

grpc::Status AdminService::DoApply(const std::string& who, const v1::ApplyConfigRequest& request,
                                   v1::ApplyConfigResponse& response) {
  std::string old_version;
  control_plane::ConfigSource::ApplyOptions options;
  options.dry_run = request.dry_run();
  options.precondition = [&](const config::Config* running) {
    old_version = running ? ConfigVersion(*running) : std::string();
    if (!request.expected_version().empty() && request.expected_version() != old_version) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the running config version is ", old_version, ", not the expected ",
          request.expected_version(), ": someone else changed it; fetch it again and retry"));
    }
    return absl::OkStatus();
  };
  const auto result = deps_.source.ApplyText(request.toml(), options);
  ToProto(result.warnings, response.mutable_warnings());
  if (!result.errors.empty()) {
    const auto running = deps_.source.Current();
    const std::string version = running ? ConfigVersion(*running) : std::string();
    response.set_old_version(version);
    response.set_new_version(version);
    ToProto(result.errors, response.mutable_errors());
    return grpc::Status::OK;
  }
  if (!result.precondition.ok()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        std::string(result.precondition.message()));
  }
  const std::string would_be = ConfigVersion(*result.after);
  response.set_old_version(old_version);
  response.set_would_be_version(would_be);
  for (auto& line : ConfigDiff(result.before.get(), *result.after)) {
    response.add_diff_lines(std::move(line));
  }
  if (request.dry_run()) {
    response.set_new_version(old_version);
    return grpc::Status::OK;
  }
  response.set_new_version(would_be);
  response.set_persisted(result.persisted);
  response.set_persist_note(result.persist_note);
  if (result.changed) {
    deps_.config_changed();
  }
  Audit("apply_config", who,
        response.diff_lines().empty()
            ? std::string("no change")
            : absl::StrJoin(response.diff_lines(), "; "),
        old_version, would_be);
  if (!result.persisted) {
    log::Warn("applied config is held in memory only", {{"reason", result.persist_note}});
  }
  for (const config::ConfigError& warning : result.warnings) {
    log::Warn("config warning", {{"key", warning.key_path}, {"warning", warning.ToString()}});
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* AdminService::GetConfig(grpc::CallbackServerContext* context,
                                                  const v1::GetConfigRequest*,
                                                  v1::GetConfigResponse* response) {
  std::string who;
  if (grpc::Status status = deps_.auth.Check(*context, &who); !status.ok()) {
    return Done(context, status);
  }
  const auto running = deps_.source.Current();
  if (running == nullptr) {
    return Done(context, grpc::Status(grpc::StatusCode::UNAVAILABLE, "no config loaded yet"));
  }
  response->set_version(ConfigVersion(*running));
  response->set_redacted_toml(RedactedToml(*running));
  response->set_table_version(TableVersion(deps_.publisher));
  return Done(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* AdminService::ListBackends(grpc::CallbackServerContext* context,
                                                     const v1::ListBackendsRequest*,
                                                     v1::ListBackendsResponse* response) {
  std::string who;
  if (grpc::Status status = deps_.auth.Check(*context, &who); !status.ok()) {
    return Done(context, status);
  }
  std::map<std::string, control_plane::BackendFleetStatus> stats;
  for (auto& status : deps_.fleet.Snapshot()) {
    stats[status.backend_id] = std::move(status);
  }
  std::vector<v1::BackendStatus> out;
  if (const auto table = deps_.publisher.Current(); table != nullptr) {
    for (const auto& model : table->models()) {
      for (const auto& backend : model.backends()) {
        v1::BackendStatus& b = out.emplace_back();
        b.set_backend_id(backend.id());
        b.set_model(model.name());
        b.set_provider_id(backend.provider_id());
        b.set_upstream_model(backend.upstream_model());
        b.set_health(backend.health());
        b.set_effective_weight(backend.enabled() ? backend.effective_weight() : 0.0);
        b.set_admin_state(std::string(StateName(deps_.overrides.Get(backend.id()))));
        const auto it = stats.find(backend.id());
        if (it == stats.end()) {
          continue;
        }
        const control_plane::BackendFleetStatus& s = it->second;
        b.set_ejected(s.health == v1::HEALTH_STATUS_UNHEALTHY);
        b.set_requests(s.issued);
        b.set_errors(s.failed());
        b.set_success_rate(s.lifetime_success_rate.value_or(0.0));
        b.set_latency_p50(s.latency.p50.value_or(0.0));
        b.set_latency_p99(s.latency.p99.value_or(0.0));
        b.set_ttfb_p50(s.ttfb.p50.value_or(0.0));
        b.set_ttfb_p99(s.ttfb.p99.value_or(0.0));
        b.set_prompt_tokens(s.prompt_tokens);
        b.set_completion_tokens(s.completion_tokens);
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.backend_id() < b.backend_id();
  });
  for (auto& b : out) {
    *response->add_backends() = std::move(b);
  }
  return Done(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* AdminService::ListProxies(grpc::CallbackServerContext* context,
                                                    const v1::ListProxiesRequest*,
                                                    v1::ListProxiesResponse* response) {
  std::string who;
  if (grpc::Status status = deps_.auth.Check(*context, &who); !status.ok()) {
    return Done(context, status);
  }
  for (const auto& node : deps_.publisher.Nodes()) {  // sorted by id
    v1::ProxyStatus* p = response->add_proxies();
    p->set_node_id(node.node_id);
    p->set_address(node.address);
    *p->mutable_connected_since() = ToTimestamp(node.connected_since);
    p->set_acked_version(node.acked_version);
    p->set_nacked_version(node.nacked_version);
    p->set_nack_reason(node.nack_reason);
    *p->mutable_last_report_time() = ToTimestamp(node.last_report_time);
    p->set_connected(node.connected);
  }
  return Done(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* AdminService::SetBackendState(
    grpc::CallbackServerContext* context, const v1::SetBackendStateRequest* request,
    v1::SetBackendStateResponse* response) {
  std::string who;
  if (grpc::Status status = deps_.auth.Check(*context, &who); !status.ok()) {
    return Done(context, status);
  }
  return Done(context, DoSetBackendState(who, *request, *response));
}

grpc::Status AdminService::DoSetBackendState(const std::string& who,
                                             const v1::SetBackendStateRequest& request,
                                             v1::SetBackendStateResponse& response) {
  if (request.state() == v1::BACKEND_ADMIN_STATE_UNSPECIFIED ||
      !v1::BackendAdminState_IsValid(request.state())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "state must be ENABLED, DISABLED or DRAINING");
  }
  const auto running = deps_.source.Current();
  bool known = false;
  if (running != nullptr) {
    const v1::RouteTable table = route_table::Compile(*running);
    for (const auto& model : table.models()) {
      for (const auto& backend : model.backends()) {
        known |= backend.id() == request.backend_id();
      }
    }
  }
  if (!known) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no backend ", request.backend_id(),
                                     " in the running config (see ListBackends)"));
  }
  const std::string old_state(StateName(deps_.overrides.Get(request.backend_id())));
  const std::string old_version = TableVersion(deps_.publisher);
  deps_.overrides.Set(request.backend_id(), request.state());
  deps_.publish();
  response.set_new_version(TableVersion(deps_.publisher));
  Audit("set_backend_state", who,
        absl::StrCat("backend ", request.backend_id(), " ", old_state, " -> ",
                     StateName(request.state())),
        old_version, response.new_version());
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::WatchEventsResponse>* AdminService::WatchEvents(
    grpc::CallbackServerContext* context, const v1::WatchEventsRequest*) {
  std::string who;
  if (grpc::Status status = deps_.auth.Check(*context, &who); !status.ok()) {
    class Refused final : public grpc::ServerWriteReactor<v1::WatchEventsResponse> {
     public:
      explicit Refused(const grpc::Status& status) { Finish(status); }
      void OnDone() override { delete this; }
    };
    return new Refused(status);
  }
  return new EventWriter(deps_.events);
}

}  // namespace berry::admin
