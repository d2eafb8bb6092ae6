// Internal to berry_config: turns a parsed TOML document into config structs, checking each
// table on its own (keys, types, ranges, URLs, header names). Checks that need the whole
// config (references, duplicates) are in cross_check.h. One load, one thread.
#pragma once

#include <toml++/toml.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/config/config.h"
#include "common/config/table_reader.h"

namespace berry::config::internal {

// Everything read from one document, before cross-checks; may be partial when there were
// errors, and is then discarded.
struct Draft {
  Settings settings;
  std::vector<Provider> providers;
  std::vector<CustomModel> models;
  std::vector<User> users;
};

// Key paths of the top-level entities, shared with the cross-checks so errors line up.
std::string ProviderPath(std::string_view id);
std::string ModelPath(std::string_view id);
std::string UserPath(std::string_view id);

Draft ReadDocument(const toml::table& root, ReadContext& context);

}  // namespace berry::config::internal
