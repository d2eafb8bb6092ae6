#include "common/route_table/compile.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/crypto/sha256.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace berry::route_table {
namespace {

namespace v1 = berry::v1;

void SetSeconds(google::protobuf::Duration* duration, int64_t seconds) {
  duration->set_seconds(seconds);
}

v1::Strategy ToProto(config::Strategy strategy) {
  switch (strategy) {
    case config::Strategy::kWeightedRandom:
      return v1::STRATEGY_WEIGHTED_RANDOM;
    case config::Strategy::kRoundRobin:
      return v1::STRATEGY_ROUND_ROBIN;
    case config::Strategy::kRandom:
      return v1::STRATEGY_RANDOM;
    case config::Strategy::kLeastLatency:
      return v1::STRATEGY_LEAST_LATENCY;
    case config::Strategy::kLeastRequests:
      return v1::STRATEGY_LEAST_REQUESTS;
    case config::Strategy::kFailover:
      return v1::STRATEGY_FAILOVER;
    case config::Strategy::kWeightedFailover:
      return v1::STRATEGY_WEIGHTED_FAILOVER;
    case config::Strategy::kSmartWeightedFailover:
      return v1::STRATEGY_SMART_WEIGHTED_FAILOVER;
    case config::Strategy::kSmartAi:
      return v1::STRATEGY_SMART_AI;
  }
  return v1::STRATEGY_UNSPECIFIED;
}

// Sorted, duplicates removed: list order in the TOML carries no meaning for these fields.
template <typename Field>
void AddSortedUnique(std::vector<std::string> values, Field* field) {
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  for (auto& value : values) {
    field->Add(std::move(value));
  }
}

void CompileSettings(const config::Settings& in, v1::Settings* out) {
  SetSeconds(out->mutable_health_check_interval(), in.health_check_interval_seconds);
  SetSeconds(out->mutable_health_check_timeout(), in.health_check_timeout_seconds);
  SetSeconds(out->mutable_request_timeout(), in.request_timeout_seconds);
  SetSeconds(out->mutable_stream_idle_timeout(), in.stream_idle_timeout_seconds);
  out->set_max_retries(static_cast<uint32_t>(in.max_retries));
  out->set_circuit_breaker_failure_threshold(
      static_cast<uint32_t>(in.circuit_breaker_failure_threshold));
  SetSeconds(out->mutable_circuit_breaker_timeout(), in.circuit_breaker_timeout_seconds);
  SetSeconds(out->mutable_recovery_check_interval(), in.recovery_check_interval_seconds);
  out->set_max_internal_retries(static_cast<uint32_t>(in.max_internal_retries));
  out->set_panic_threshold_percent(static_cast<uint32_t>(in.panic_threshold_percent));
  out->set_max_request_body_bytes(static_cast<uint64_t>(in.max_request_body_bytes));
}

void CompileProvider(const config::Provider& in, v1::Provider* out) {
  out->set_id(in.id);
  out->set_name(in.name);
  out->set_base_url(in.base_url);
  out->set_api_key(in.api_key);
  AddSortedUnique(in.models, out->mutable_models());
  for (const auto& [name, value] : in.headers) {  // std::map: already sorted by name
    v1::Header* header = out->add_headers();
    header->set_name(name);
    header->set_value(value);
  }
  out->set_enabled(in.enabled);
  SetSeconds(out->mutable_timeout(), in.timeout_seconds);
  out->set_max_retries(static_cast<uint32_t>(in.max_retries));
  out->set_backend_type(in.backend_type);
  out->set_tls_verify(in.tls_verify);
  out->set_billing_mode(in.billing_mode);
}

void CompileModel(const config::CustomModel& in, v1::CustomModel* out) {
  out->set_id(in.id);
  out->set_name(in.name);
  out->set_strategy(ToProto(in.strategy));
  out->set_enabled(in.enabled);
  std::map<std::pair<std::string, std::string>, int> seen;  // (provider, model) → count
  for (const config::Backend& backend : in.backends) {
    const int repeat = ++seen[{backend.provider, backend.model}];
    v1::Backend* b = out->add_backends();
    b->set_id(BackendId(in.id, backend.provider, backend.model, repeat));
    b->set_provider_id(backend.provider);
    b->set_upstream_model(backend.model);
    b->set_weight(backend.weight);
    b->set_priority(static_cast<uint32_t>(backend.priority));
    b->set_enabled(backend.enabled);
    AddSortedUnique(backend.tags, b->mutable_tags());
    b->set_health(v1::HEALTH_STATUS_UNKNOWN);
    b->set_effective_weight(backend.weight);
  }
}

void CompileUser(const config::Config& config, const config::User& in, v1::ClientKey* out) {
  out->set_id(in.id);
  out->set_name(in.name);
  out->set_token_sha256(crypto::Sha256Bytes(in.token));
  // allowed_models may name a model by client-facing name or by table id; proxies match the
  // name clients send, so normalise to names.
  std::vector<std::string> allowed;
  allowed.reserve(in.allowed_models.size());
  for (const std::string& entry : in.allowed_models) {
    const config::CustomModel* model = config.FindModel(entry);
    allowed.push_back(model != nullptr ? model->name : entry);
  }
  AddSortedUnique(std::move(allowed), out->mutable_allowed_models());
  out->set_enabled(in.enabled);
  AddSortedUnique(in.tags, out->mutable_tags());
  v1::RateLimit* limit = out->mutable_rate_limit();
  limit->set_requests_per_minute(static_cast<uint64_t>(in.rate_limit.requests_per_minute.value_or(0)));
  limit->set_requests_per_hour(static_cast<uint64_t>(in.rate_limit.requests_per_hour.value_or(0)));
  limit->set_requests_per_day(static_cast<uint64_t>(in.rate_limit.requests_per_day.value_or(0)));
}

}  // namespace

std::string BackendId(const std::string& model_id, const std::string& provider_id,
                      const std::string& upstream_model, int repeat) {
  std::string id = absl::StrCat(model_id, "/", provider_id, "/", upstream_model);
  if (repeat > 1) {
    absl::StrAppend(&id, "#", repeat);
  }
  return id;
}

v1::RouteTable Compile(const config::Config& config) {
  v1::RouteTable table;
  CompileSettings(config.settings(), table.mutable_settings());
  // Config keeps providers, models and users sorted by id, which makes the table deterministic.
  for (const config::Provider& provider : config.providers()) {
    CompileProvider(provider, table.add_providers());
  }
  for (const config::CustomModel& model : config.models()) {
    CompileModel(model, table.add_models());
  }
  for (const config::User& user : config.users()) {
    CompileUser(config, user, table.add_client_keys());
  }
  StampVersion(table);
  return table;
}

std::string CanonicalBytes(const v1::RouteTable& table) {
  v1::RouteTable copy = table;
  copy.clear_version_info();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&coded);
  }
  return bytes;
}

std::string ComputeVersion(const v1::RouteTable& table) {
  const std::string digest = crypto::Sha256Bytes(CanonicalBytes(table));
  return crypto::HexEncode(std::string_view(digest).substr(0, 8));
}

void StampVersion(v1::RouteTable& table) { table.set_version_info(ComputeVersion(table)); }

}  // namespace berry::route_table
