#include "tests/unit/managed/test_tables.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config/config.h"
#include "common/route_table/compile.h"

namespace berry::managed::testing {

berry::v1::RouteTable TableOn(const std::string& host, const std::vector<std::string>& models) {
  std::vector<std::string> upstream_models;
  std::string custom_models;
  for (const std::string& model : models) {
    upstream_models.push_back(absl::StrCat("\"up-", model, "\""));
    absl::StrAppend(&custom_models, "[models.", model, "]\n[[models.", model,
                    ".backends]]\nprovider = \"p\"\nmodel = \"up-", model, "\"\n\n");
  }
  const std::string toml =
      absl::StrCat("[providers.p]\nbase_url = \"http://", host, ":8080/v1\"\n",
                   "api_key = \"sk-test-key\"\nmodels = [", absl::StrJoin(upstream_models, ", "),
                   "]\n\n", custom_models);
  config::LoadResult result = config::Parse(toml, "test.toml");
  if (!result.config) {
    std::string errors;
    for (const auto& error : result.errors) {
      absl::StrAppend(&errors, error.ToString(), "\n");
    }
    ADD_FAILURE() << "test config did not load:\n" << errors << toml;
    return {};
  }
  return route_table::Compile(*result.config);
}

std::string BackendIdOf(const std::string& model) {
  return route_table::BackendId(model, "p", absl::StrCat("up-", model), 1);
}

berry::v1::RouteTable Damaged(berry::v1::RouteTable table) {
  if (table.providers_size() == 0) {
    ADD_FAILURE() << "Damaged() needs a table with a provider";
    return table;
  }
  table.mutable_providers(0)->set_api_key("sk-changed-after-hashing");
  return table;
}

}  // namespace berry::managed::testing
