#include "common/route_table/compile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/config/schema.h"
#include "common/crypto/sha256.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message.h"

namespace berry::route_table {
namespace {

namespace v1 = berry::v1;

namespace pb = google::protobuf;

// The schema names a field its value cannot go into: a mistake in schema.h, caught by the first
// Compile() in any test.
[[noreturn]] void SchemaMismatch(const pb::Message& message, std::string_view field) {
  std::fprintf(stderr, "berry: config schema maps a key to %s.%.*s, which cannot hold it\n",
               std::string(message.GetDescriptor()->full_name()).c_str(),
               static_cast<int>(field.size()), field.data());
  std::abort();
}

// An integer key goes into an integer field or a Duration's seconds.
void SetInteger(pb::Message& out, const pb::FieldDescriptor& field, int64_t value) {
  const pb::Reflection& reflection = *out.GetReflection();
  switch (field.cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      reflection.SetUInt32(&out, &field, static_cast<uint32_t>(value));
      return;
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      reflection.SetUInt64(&out, &field, static_cast<uint64_t>(value));
      return;
    case pb::FieldDescriptor::CPPTYPE_INT64:
      reflection.SetInt64(&out, &field, value);
      return;
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      if (field.message_type() == pb::Duration::descriptor()) {
        static_cast<pb::Duration*>(reflection.MutableMessage(&out, &field))->set_seconds(value);
        return;
      }
      break;
    default:
      break;
  }
  SchemaMismatch(out, field.name());
}

bool Is(const pb::FieldDescriptor& field, pb::FieldDescriptor::CppType type, bool repeated) {
  return field.cpp_type() == type && field.is_repeated() == repeated;
}

void Set(pb::Message& out, const pb::FieldDescriptor& field, int64_t value) {
  if (field.is_repeated()) {
    SchemaMismatch(out, field.name());
  }
  SetInteger(out, field, value);
}

// Unset = 0, which the proto documents as "no limit".
void Set(pb::Message& out, const pb::FieldDescriptor& field, const std::optional<int64_t>& value) {
  Set(out, field, value.value_or(0));
}

void Set(pb::Message& out, const pb::FieldDescriptor& field, double value) {
  if (!Is(field, pb::FieldDescriptor::CPPTYPE_DOUBLE, false)) {
    SchemaMismatch(out, field.name());
  }
  out.GetReflection()->SetDouble(&out, &field, value);
}

void Set(pb::Message& out, const pb::FieldDescriptor& field, bool value) {
  if (!Is(field, pb::FieldDescriptor::CPPTYPE_BOOL, false)) {
    SchemaMismatch(out, field.name());
  }
  out.GetReflection()->SetBool(&out, &field, value);
}

void Set(pb::Message& out, const pb::FieldDescriptor& field, const std::string& value) {
  if (!Is(field, pb::FieldDescriptor::CPPTYPE_STRING, false)) {
    SchemaMismatch(out, field.name());
  }
  out.GetReflection()->SetString(&out, &field, value);
}

// Sorted, duplicates removed: list order in the TOML carries no meaning for these fields.
void Set(pb::Message& out, const pb::FieldDescriptor& field, std::vector<std::string> values) {
  if (!Is(field, pb::FieldDescriptor::CPPTYPE_STRING, true)) {
    SchemaMismatch(out, field.name());
  }
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  for (std::string& value : values) {
    out.GetReflection()->AddString(&out, &field, std::move(value));
  }
}

// A table of strings has no generic message shape; such keys are compiled by hand.
void Set(pb::Message& out, const pb::FieldDescriptor& field,
         const std::map<std::string, std::string>&) {
  SchemaMismatch(out, field.name());
}

// config::Strategy::kSmartAi ("smart_ai") is v1::STRATEGY_SMART_AI, and so on.
void Set(pb::Message& out, const pb::FieldDescriptor& field, config::Strategy strategy) {
  const pb::EnumValueDescriptor* value =
      field.enum_type() == nullptr || field.is_repeated()
          ? nullptr
          : field.enum_type()->FindValueByName(absl::AsciiStrToUpper(
                absl::StrCat("STRATEGY_", std::string(config::StrategyName(strategy)))));
  if (value == nullptr) {
    SchemaMismatch(out, field.name());
  }
  out.GetReflection()->SetEnum(&out, &field, value);
}

// Copies every key of `fields` that names a proto field into `out`.
template <typename T, size_t N>
void CompileFields(const config::Field<T> (&fields)[N], const T& in, pb::Message& out) {
  for (const config::Field<T>& field : fields) {
    if (field.proto_field.empty()) {
      continue;
    }
    const pb::FieldDescriptor* descriptor =
        out.GetDescriptor()->FindFieldByName(std::string(field.proto_field));
    if (descriptor == nullptr) {
      SchemaMismatch(out, field.proto_field);
    }
    std::visit([&](auto member) { Set(out, *descriptor, in.*member); }, field.member);
  }
}

void CompileProvider(const config::Provider& in, v1::Provider* out) {
  out->set_id(in.id);
  CompileFields(config::kProviderFields, in, *out);
  CompileFields(config::kRateLimitFields, in.budget, *out->mutable_budget());
  for (const auto& [name, value] : in.headers) {  // std::map: already sorted by name
    v1::Header* header = out->add_headers();
    header->set_name(name);
    header->set_value(value);
  }
}

void CompileModel(const config::CustomModel& in, v1::CustomModel* out) {
  out->set_id(in.id);
  CompileFields(config::kModelFields, in, *out);
  std::map<std::pair<std::string, std::string>, int> seen;  // (provider, model) → count
  for (const config::Backend& backend : in.backends) {
    const int repeat = ++seen[{backend.provider, backend.model}];
    v1::Backend* b = out->add_backends();
    b->set_id(BackendId(in.id, backend.provider, backend.model, repeat));
    CompileFields(config::kBackendFields, backend, *b);
    CompileFields(config::kRateLimitFields, backend.budget, *b->mutable_budget());
    b->set_health(v1::HEALTH_STATUS_UNKNOWN);
    b->set_effective_weight(backend.weight);
  }
}

void CompileUser(const config::Config& config, const config::User& in, v1::ClientKey* out) {
  out->set_id(in.id);
  CompileFields(config::kUserFields, in, *out);
  out->set_token_sha256(crypto::Sha256Bytes(in.token));
  // allowed_models may name a model by client-facing name or by table id; proxies match the
  // name clients send, so normalise to names.
  std::vector<std::string> allowed;
  allowed.reserve(in.allowed_models.size());
  for (const std::string& entry : in.allowed_models) {
    const config::CustomModel* model = config.FindModel(entry);
    allowed.push_back(model != nullptr ? model->name : entry);
  }
  Set(*out, *v1::ClientKey::descriptor()->FindFieldByName("allowed_models"), std::move(allowed));
  CompileFields(config::kRateLimitFields, in.rate_limit, *out->mutable_rate_limit());
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
  CompileFields(config::kSettingsFields, config.settings(), *table.mutable_settings());
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
