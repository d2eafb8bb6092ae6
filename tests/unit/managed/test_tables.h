// Route tables for the managed-mode client tests, compiled from TOML the way the control plane
// compiles them, so their version_info is the real content hash.
#pragma once

#include <string>
#include <vector>

#include "berry/v1/route_table.pb.h"

namespace berry::managed::testing {

// One provider "p" at http://<host>:8080/v1 serving "up-<model>" for each of `models`, and a
// custom model per entry with that single backend. Fails the test if the config does not load.
berry::v1::RouteTable TableOn(const std::string& host, const std::vector<std::string>& models);

// The backend id TableOn gives `model`'s backend.
std::string BackendIdOf(const std::string& model);

// `table` with its content changed after the hash was stamped: version_info no longer matches.
berry::v1::RouteTable Damaged(berry::v1::RouteTable table);

}  // namespace berry::managed::testing
