// Fleet regression tests: behaviours the control plane once got wrong (both fixed); the comment on
// each says what the bug was.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/integration/fleet_fixture.h"

namespace berry::fleet_test::fleet_regression_test {
namespace {

using FleetRegression = FleetTest;

// A proxy that refused the current table keeps serving the one it had, and says so when it
// connects: StreamRoutesRequest.version_info "on connect: the one from --state-dir or memory".
// After a control-plane restart (or any reconnect) that announcement is dropped:
// RecordConnected clears acked_version (control-plane/discovery/discovery_service.cc:266) and
// RouteStream::OnReadDone records the announced version only when it equals the current one
// (:115-118). The refusing proxy then shows acked_version "" in /proxies — as if it served
// nothing — while it serves the previous table to every client. Fix: record the announced version
// as what the node holds (acked_version) whatever it is.
TEST_F(FleetRegression, AfterAControlPlaneRestartARefusingProxyShowsTheVersionItServes) {
  StartFleet(ChatOnA(), {{"--allowed-upstream-hosts", "127.0.0.1"}});
  ASSERT_FALSE(HasFatalFailure());
  const std::string served = WaitConverged();
  ASSERT_FALSE(served.empty());
  ASSERT_TRUE(config_.Write(Config(ModelToml("chat", {{"b", "up-b"}}),
                                   absl::StrCat("http://localhost:", b_->port(), "/v1"))));
  const auto refused_current = [&] {
    const auto node = control_plane_->Node("node-1");
    const std::string version = control_plane_->Version();
    return node && version != served && JsonString(*node, "nacked_version") == version;
  };
  ASSERT_TRUE(WaitUntil(refused_current, kConvergeTimeout)) << Describe(control_plane_->Proxies());
  ASSERT_EQ(JsonString(*control_plane_->Node("node-1"), "acked_version"), served);

  RestartControlPlane();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(WaitUntil(refused_current, kConvergeTimeout)) << Describe(control_plane_->Proxies());

  auto ready = Get(proxies_[0]->url + "/readyz");
  ASSERT_TRUE(ready.ok());
  EXPECT_NE(ready->body.find(served), std::string::npos) << ready->body;
  EXPECT_EQ(JsonString(*control_plane_->Node("node-1"), "acked_version"), served)
      << Describe(control_plane_->Proxies());
}

}  // namespace
}  // namespace berry::fleet_test::fleet_regression_test
