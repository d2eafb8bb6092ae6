// Compiles a validated Config into the RouteTable that proxies serve from. The control plane
// does this for the fleet; a standalone proxy does it in-process, so both modes share one
// request path. Deterministic: the same config yields a byte-identical table and therefore the
// same version_info. Pure functions; any thread.
#pragma once

#include <string>

#include "berry/v1/route_table.pb.h"
#include "common/config/config.h"

namespace berry::route_table {

// Builds the table and stamps its version_info. Standalone health: every backend
// HEALTH_STATUS_UNKNOWN with effective_weight = weight; the control plane overlays fleet health
// and then calls StampVersion again.
berry::v1::RouteTable Compile(const config::Config& config);

// Deterministic serialisation of `table` with version_info cleared.
std::string CanonicalBytes(const berry::v1::RouteTable& table);

// Content hash of `table` ignoring its current version_info: 16 lower-case hex characters
// (the first 64 bits of SHA-256 over CanonicalBytes).
std::string ComputeVersion(const berry::v1::RouteTable& table);

// Sets table.version_info = ComputeVersion(table).
void StampVersion(berry::v1::RouteTable& table);

// The backend id the compiler assigns: "<model id>/<provider id>/<upstream model>", with
// "#<n>" appended for the n-th (n >= 2) repeat of the same provider model in one custom model.
std::string BackendId(const std::string& model_id, const std::string& provider_id,
                      const std::string& upstream_model, int repeat);

}  // namespace berry::route_table
