// The fleet end to end: a berry-control-plane process streaming route tables to three managed
// berry-proxy processes, in front of in-process mock providers. Each test starts its own fleet
// on kernel-chosen ports, edits the config file the control plane watches, and waits on what the
// control plane publishes (/proxies, /backends, /metrics) and what the proxies serve (/readyz,
// chat completions) — never on a bare sleep.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/fleet_fixture.h"
#include "tests/support/certs.h"

namespace berry::fleet_test {
namespace {

using test_support::Behavior;

using Fleet = FleetTest;

// Sends chat requests through the proxies in turn, one at a time, on its own thread until
// stopped, and keeps every answer that was not a 200.
class ClientLoop {
 public:
  explicit ClientLoop(const std::vector<std::unique_ptr<Proxy>>& proxies)
      : thread_([this, &proxies] {
          for (size_t i = 0; !stop_; ++i) {
            const Proxy& proxy = *proxies[i % proxies.size()];
            auto response = Chat(proxy.url, "chat");
            if (!response.ok()) {
              failures_.push_back(
                  absl::StrCat(proxy.options.node_id, ": ", response.status().ToString()));
            } else if (response->status != 200) {
              failures_.push_back(
                  absl::StrCat(proxy.options.node_id, ": ", response->status, " ", response->body));
            }
            ++sent_;
          }
        }) {}
  ClientLoop(const ClientLoop&) = delete;
  ClientLoop& operator=(const ClientLoop&) = delete;
  ~ClientLoop() { Stop(); }

  int sent() const { return sent_; }
  // Stops the loop and returns the failures.
  std::vector<std::string> Stop() {
    stop_ = true;
    if (thread_.joinable()) {
      thread_.join();
    }
    return failures_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0};
  std::vector<std::string> failures_;  // the loop's thread only, until joined
  std::thread thread_;
};

TEST_F(Fleet, TrafficFlowsThroughEveryProxy) {
  StartFleet(ChatOnA());
  ASSERT_FALSE(HasFatalFailure());
  WaitEveryProxyReady();
  ASSERT_FALSE(HasFatalFailure());

  for (const auto& proxy : proxies_) {
    auto response = Chat(proxy->url, "chat");
    ASSERT_TRUE(response.ok()) << proxy->options.node_id << ": " << response.status();
    EXPECT_EQ(response->status, 200) << proxy->options.node_id << ": " << response->body;
    EXPECT_EQ(response->Header("x-mock-upstream").value_or(""), "a") << proxy->options.node_id;
  }

  const auto seen = ChatRequests(*a_);
  ASSERT_EQ(seen.size(), proxies_.size());
  for (const auto& request : seen) {
    EXPECT_EQ(request.model, "up-a") << request.body;
    EXPECT_EQ(request.Header("authorization").value_or(""), "Bearer " + KeyOf("a"));
  }
  EXPECT_TRUE(ChatRequests(*b_).empty());
  EXPECT_TRUE(WaitUntil([&] { return control_plane_->Metric("berry_cp_connected_proxies") == 3.0; },
                        kConvergeTimeout));
}

TEST_F(Fleet, ConfigEditReachesEveryProxy) {
  StartFleet(ChatOnA());
  ASSERT_FALSE(HasFatalFailure());
  const std::string old_version = WaitConverged();
  ASSERT_FALSE(old_version.empty());
  for (const auto& proxy : proxies_) {
    ASSERT_EQ(ServedBy(*proxy), "a") << proxy->options.node_id;
  }

  ASSERT_TRUE(config_.Write(ChatOnB()));

  const std::string new_version = WaitForNewVersionAckedByAll(old_version);
  ASSERT_FALSE(new_version.empty());
  for (const auto& proxy : proxies_) {
    EXPECT_EQ(ServedBy(*proxy), "b") << proxy->options.node_id;
    auto ready = Get(proxy->url + "/readyz");
    ASSERT_TRUE(ready.ok());
    EXPECT_NE(ready->body.find(new_version), std::string::npos) << ready->body;
  }
  const auto seen = ChatRequests(*b_);
  ASSERT_EQ(seen.size(), proxies_.size());
  for (const auto& request : seen) {
    EXPECT_EQ(request.model, "up-b");
    EXPECT_EQ(request.Header("authorization").value_or(""), "Bearer " + KeyOf("b"));
  }
}

TEST_F(Fleet, InvalidEditChangesNothing) {
  StartFleet(ChatOnA());
  ASSERT_FALSE(HasFatalFailure());
  const std::string version = WaitConverged();
  ASSERT_FALSE(version.empty());
  const double rejected = control_plane_->Metric("berry_cp_config_rejected_total").value_or(-1);
  ASSERT_GE(rejected, 0);

  // Would move chat to b, but a weight of -1 (and an unknown key) makes the whole file invalid.
  ASSERT_TRUE(config_.Write(
      Config(ModelToml("chat", {{"b", "up-b", -1.0}}) + "[models.extra]\nno_such_key = 1\n")));

  ASSERT_TRUE(WaitUntil(
      [&] {
        return control_plane_->Metric("berry_cp_config_rejected_total").value_or(0) > rejected;
      },
      kConvergeTimeout))
      << control_plane_->process->err();
  EXPECT_EQ(control_plane_->Version(), version);
  EXPECT_TRUE(control_plane_->AllAcked(node_ids_, version)) << Describe(control_plane_->Proxies());
  for (const auto& proxy : proxies_) {
    EXPECT_EQ(ServedBy(*proxy), "a") << proxy->options.node_id;
  }
  EXPECT_TRUE(ChatRequests(*b_).empty());
}

TEST_F(Fleet, TableAProxyRejectsIsNackedWithItsReasonAndTheOldTableStays) {
  StartFleet(ChatOnA(), {{"--allowed-upstream-hosts", "127.0.0.1"}, {}, {}});
  ASSERT_FALSE(HasFatalFailure());
  const std::string old_version = WaitConverged();
  ASSERT_FALSE(old_version.empty());
  const double nacks = control_plane_->Metric("berry_cp_nacks_total").value_or(-1);
  ASSERT_EQ(nacks, 0);

  // Valid for the control plane; node-1 refuses "localhost", which is not in its allowlist.
  ASSERT_TRUE(config_.Write(Config(ModelToml("chat", {{"b", "up-b"}}),
                                   absl::StrCat("http://localhost:", b_->port(), "/v1"))));

  std::string version;
  std::optional<boost::json::object> refusing;
  const bool settled = WaitUntil(
      [&] {
        version = control_plane_->Version();
        refusing = control_plane_->Node("node-1");
        return version != old_version && refusing &&
               JsonString(*refusing, "nacked_version") == version &&
               control_plane_->AllAcked({"node-2", "node-3"}, version) &&
               control_plane_->Version() == version;
      },
      kConvergeTimeout);
  ASSERT_TRUE(settled) << Describe(control_plane_->Proxies());
  EXPECT_EQ(JsonString(*refusing, "acked_version"), old_version);
  EXPECT_NE(JsonString(*refusing, "nack_reason").find("allowed-upstream-hosts"), std::string::npos)
      << JsonString(*refusing, "nack_reason");
  EXPECT_GT(control_plane_->Metric("berry_cp_nacks_total").value_or(0), 0);
  EXPECT_GE(
      proxies_[0]->Metric(R"(berry_route_table_updates_total{result="rejected"})").value_or(0), 1);
  EXPECT_EQ(proxies_[0]->Metric(
                absl::StrCat(R"(berry_route_table_version_info{version=")", old_version, R"("})")),
            1.0);
  // node-1 serves the table it had; the others the new one.
  EXPECT_EQ(ServedBy(*proxies_[0]), "a");
  auto ready = Get(proxies_[0]->url + "/readyz");
  ASSERT_TRUE(ready.ok());
  EXPECT_NE(ready->body.find(old_version), std::string::npos) << ready->body;
  EXPECT_EQ(ServedBy(*proxies_[1]), "b");
  EXPECT_EQ(ServedBy(*proxies_[2]), "b");
}

TEST_F(Fleet, ControlPlaneRestartIsResyncedWithoutDroppingARequest) {
  StartFleet(ChatOnA());
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_FALSE(WaitConverged().empty());

  // Clients keep sending through every proxy, in turn, for the whole outage.
  ClientLoop clients(proxies_);
  control_plane_->process->Kill();
  const int sent_at_kill = clients.sent();
  // The proxies notice the stream is gone and keep serving (a few rounds through each).
  EXPECT_TRUE(WaitUntil([&] { return clients.sent() >= sent_at_kill + 30; }, kConvergeTimeout));

  RestartControlPlane();
  ASSERT_FALSE(HasFatalFailure());
  std::string version;
  const bool resynced = WaitUntil(
      [&] {
        version = control_plane_->Version();
        return control_plane_->AllAcked(node_ids_, version) && control_plane_->Version() == version;
      },
      kConvergeTimeout);
  const int sent_at_resync = clients.sent();
  EXPECT_TRUE(WaitUntil([&] { return clients.sent() >= sent_at_resync + 6; }, kConvergeTimeout));
  const std::vector<std::string> failures = clients.Stop();

  EXPECT_TRUE(resynced) << Describe(control_plane_->Proxies());
  EXPECT_EQ(control_plane_->Metric("berry_cp_connected_proxies"), 3.0);
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << clients.sent()
                                << " failed, first: " << failures.front();
  EXPECT_GE(clients.sent(), 36);
}

TEST_F(Fleet, ProxyRestartedWithoutControlPlaneServesFromStateDir) {
  StartFleet(ChatOnA());
  ASSERT_FALSE(HasFatalFailure());
  const std::string version = WaitConverged();
  ASSERT_FALSE(version.empty());
  const std::string persisted = state_dirs_[0]->path() + "/route_table.pb";
  struct stat info {};
  ASSERT_TRUE(WaitUntil([&] { return stat(persisted.c_str(), &info) == 0; }, kConvergeTimeout))
      << persisted << " was never written";
  EXPECT_EQ(info.st_mode & 07777, 0600u) << std::oct << (info.st_mode & 07777);

  control_plane_->process->Kill();
  ProxyOptions options = proxies_[0]->options;
  proxies_[0]->process->Kill();
  proxies_[0] = Proxy::Start(options);
  ASSERT_NE(proxies_[0], nullptr);

  ASSERT_TRUE(WaitUntil([&] { return proxies_[0]->ReadyzStatus() == 200; }, kConvergeTimeout))
      << proxies_[0]->process->err();
  auto ready = Get(proxies_[0]->url + "/readyz");
  ASSERT_TRUE(ready.ok());
  EXPECT_NE(ready->body.find(version), std::string::npos) << ready->body;
  EXPECT_EQ(ServedBy(*proxies_[0]), "a") << proxies_[0]->process->err();
  ASSERT_EQ(stat(persisted.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0600u) << std::oct << (info.st_mode & 07777);
}

TEST_F(Fleet, SighupToAManagedProxyOnlyLogsThatTablesComeFromTheControlPlane) {
  StartFleet(ChatOnA(), {{}});
  ASSERT_FALSE(HasFatalFailure());
  Proxy& proxy = *proxies_[0];
  ASSERT_TRUE(WaitUntil([&] { return proxy.ReadyzStatus() == 200; }, kConvergeTimeout))
      << proxy.process->err();
  ASSERT_EQ(ServedBy(proxy), "a");
  const std::string rejected_sample = R"(berry_route_table_updates_total{result="rejected"})";
  const std::optional<double> rejected = proxy.Metric(rejected_sample);
  ASSERT_TRUE(rejected.has_value()) << "the proxy's /metrics did not answer";
  constexpr std::string_view kIgnored = "SIGHUP ignored: route tables come from the control plane";

  proxy.process->Signal(SIGHUP);

  ASSERT_TRUE(proxy.process->WaitForErr(kIgnored)) << proxy.process->err();
  const std::string err = proxy.process->err();
  EXPECT_EQ(err.find(kIgnored), err.rfind(kIgnored)) << "one line per SIGHUP\n" << err;
  EXPECT_EQ(err.find("reloading config"), std::string::npos) << err;
  EXPECT_EQ(err.find("config rejected"), std::string::npos) << err;
  EXPECT_EQ(proxy.Metric(rejected_sample), rejected) << "SIGHUP counted a rejected update";
  EXPECT_EQ(proxy.ReadyzStatus(), 200);
  EXPECT_EQ(ServedBy(proxy), "a");
  EXPECT_EQ(proxy.process->Wait(0ms), std::nullopt) << "the proxy exited";
}

TEST_F(Fleet, ProviderFailingHealthProbesLeavesEveryProxysRotationAndReturns) {
  StartFleet(ChatOnBoth());
  ASSERT_FALSE(HasFatalFailure());
  const std::string healthy_version = WaitConverged();
  ASSERT_FALSE(healthy_version.empty());
  const std::string backend_b = BackendId("chat", "b", "up-b");
  ASSERT_EQ(Health(backend_b), kHealthy);

  // b's probes (GET /v1/models, no model) get 503; its chat completions keep working, so only
  // the active health check can take it out of rotation.
  b_->SetModelBehavior("up-b", Behavior::Normal());
  b_->SetDefaultBehavior(Behavior::Fail(503));
  const auto failing_since = Clock::now();

  ASSERT_TRUE(WaitUntil([&] { return Health(backend_b) == kUnhealthy; }, kConvergeTimeout))
      << Describe(control_plane_->Backends());
  // Three failed probes, 1 s ± 10% apart: never the first failure alone.
  EXPECT_GE(Clock::now() - failing_since, 1500ms);
  EXPECT_GE(control_plane_->Metric(R"(berry_cp_health_checks_total{provider="b",result="failure"})")
                .value_or(0),
            3);
  EXPECT_EQ(Health(BackendId("chat", "a", "up-a")), kHealthy);
  const std::string unhealthy_version = WaitForEveryProxyToHold(
      [&](const berry::v1::RouteTable& table) { return HealthIn(table, backend_b) == kUnhealthy; },
      "b is unhealthy");
  ASSERT_FALSE(unhealthy_version.empty());

  const size_t b_before = ChatRequests(*b_).size();
  for (const auto& proxy : proxies_) {
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(ServedBy(*proxy), "a") << proxy->options.node_id;
    }
  }
  EXPECT_EQ(ChatRequests(*b_).size(), b_before) << "a proxy still sends b traffic";

  const auto b_probes = [&](std::string_view result) {
    return control_plane_
        ->Metric(absl::StrCat(R"(berry_cp_health_checks_total{provider="b",result=")",
                              std::string(result), R"("})"))
        .value_or(0);
  };
  const double passed_before = b_probes("success");
  b_->ResetBehaviors();
  const auto recovering_since = Clock::now();
  ASSERT_TRUE(WaitUntil([&] { return Health(backend_b) == kHealthy; }, kConvergeTimeout))
      << Describe(control_plane_->Backends());
  // Two passing probes, 1 s ± 10% apart.
  EXPECT_GE(Clock::now() - recovering_since, 700ms) << "one passing probe was enough";
  EXPECT_GE(b_probes("success"), passed_before + 2);
  ASSERT_FALSE(WaitForEveryProxyToHold(
                   [&](const berry::v1::RouteTable& table) {
                     return HealthIn(table, backend_b) == kHealthy;
                   },
                   "b is healthy again")
                   .empty());
  for (const auto& proxy : proxies_) {
    EXPECT_TRUE(WaitUntil([&] { return ServedBy(*proxy) == "b"; }, 10s, 0ms))
        << proxy->options.node_id << " never sends b traffic again";
  }
}

TEST_F(Fleet, LoadReportsOfAllProxiesAddUpToTheRequestsSent) {
  StartFleet(ChatOnBoth());
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_FALSE(WaitConverged().empty());
  constexpr int kPerProxy = 12;
  const int sent = kPerProxy * static_cast<int>(proxies_.size());

  for (const auto& proxy : proxies_) {
    for (int i = 0; i < kPerProxy; ++i) {
      ASSERT_NE(ServedBy(*proxy), "") << proxy->options.node_id;
    }
  }

  struct Totals {
    double issued = 0, succeeded = 0, failed = 0, prompt = 0, completion = 0;
    std::map<std::string, double> issued_by_backend;
  };
  const auto totals = [&] {
    Totals t;
    auto backends = control_plane_->Backends();
    if (!backends.ok()) {
      return t;
    }
    for (const auto& backend : backends->as_object().at("backends").as_array()) {
      t.issued += JsonNumber(backend, "issued");
      t.succeeded += JsonNumber(backend, "succeeded");
      t.failed += JsonNumber(backend, "failed");
      t.prompt += JsonNumber(backend, "prompt_tokens");
      t.completion += JsonNumber(backend, "completion_tokens");
      t.issued_by_backend[JsonString(backend, "backend_id")] = JsonNumber(backend, "issued");
    }
    return t;
  };
  Totals seen;
  ASSERT_TRUE(WaitUntil(
      [&] {
        seen = totals();
        return seen.issued >= sent && seen.succeeded >= sent;
      },
      kConvergeTimeout))
      << "issued " << seen.issued << ", succeeded " << seen.succeeded << " of " << sent;
  // Reports come every second; two more intervals must not add anything.
  EXPECT_FALSE(WaitUntil([&] { return totals().issued != sent; }, 2500ms, 100ms))
      << "counted twice: " << totals().issued;

  seen = totals();
  EXPECT_EQ(seen.issued, sent);
  EXPECT_EQ(seen.succeeded, sent);
  EXPECT_EQ(seen.failed, 0);
  const test_support::Usage usage;
  EXPECT_EQ(seen.prompt, sent * usage.prompt_tokens);
  EXPECT_EQ(seen.completion, sent * usage.completion_tokens);
  EXPECT_EQ(seen.issued_by_backend[BackendId("chat", "a", "up-a")],
            static_cast<double>(ChatRequests(*a_).size()));
  EXPECT_EQ(seen.issued_by_backend[BackendId("chat", "b", "up-b")],
            static_cast<double>(ChatRequests(*b_).size()));
}

TEST_F(Fleet, LoadReportsQueuedWhileTheControlPlaneIsDownReachItAfterItsRestart) {
  StartFleet(ChatOnBoth());
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_FALSE(WaitConverged().empty());
  control_plane_->process->Kill();
  constexpr int kPerProxy = 4;
  const int sent = kPerProxy * static_cast<int>(proxies_.size());

  for (const auto& proxy : proxies_) {
    for (int i = 0; i < kPerProxy; ++i) {
      ASSERT_NE(ServedBy(*proxy), "") << proxy->options.node_id;
    }
  }
  RestartControlPlane();
  ASSERT_FALSE(HasFatalFailure());

  const auto issued = [&] {
    double total = 0;
    auto backends = control_plane_->Backends();
    if (backends.ok()) {
      for (const auto& backend : backends->as_object().at("backends").as_array()) {
        total += JsonNumber(backend, "issued");
      }
    }
    return total;
  };
  ASSERT_TRUE(WaitUntil([&] { return issued() >= sent; }, kConvergeTimeout))
      << "reached the restarted control plane: " << issued() << " of " << sent;
  EXPECT_FALSE(WaitUntil([&] { return issued() != sent; }, 2500ms, 100ms))
      << "counted twice: " << issued();
  EXPECT_EQ(issued(), sent);
}

TEST_F(Fleet, ProxyRestartedUnderTheSameNodeIdKeepsBeingCounted) {
  StartFleet(ChatOnA(), {{}});
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_FALSE(WaitConverged().empty());
  const std::string backend = BackendId("chat", "a", "up-a");
  const auto issued = [&] {
    const auto stats = control_plane_->Backend(backend);
    return stats ? JsonNumber(*stats, "issued") : -1.0;
  };
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(ServedBy(*proxies_[0]), "a");
  }
  ASSERT_TRUE(WaitUntil([&] { return issued() == 5; }, kConvergeTimeout)) << issued();

  // The new process numbers its reports from 1 again.
  ProxyOptions options = proxies_[0]->options;
  proxies_[0]->process->Kill();
  proxies_[0] = Proxy::Start(options);
  ASSERT_NE(proxies_[0], nullptr);
  ASSERT_FALSE(WaitForEveryProxyToHold([](const auto&) { return true; }, "any").empty());
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(ServedBy(*proxies_[0]), "a");
  }

  EXPECT_TRUE(WaitUntil([&] { return issued() >= 10; }, kConvergeTimeout))
      << "the restarted proxy's reports were dropped as duplicates: " << issued();
  EXPECT_FALSE(WaitUntil([&] { return issued() != 10; }, 2500ms, 100ms)) << issued();
}

// A proxy back under the same --node-id without the table it had (a fresh pod of a StatefulSet,
// a VM whose NODE_ID is its host name, an emptied --state-dir) announces no version; the control
// plane must send it the table although its record says that node ACKed the current one.
TEST_F(Fleet, ProxyBackUnderTheSameNodeIdWithoutItsTableGetsTheCurrentOne) {
  StartFleet(ChatOnA(), {{}});
  ASSERT_FALSE(HasFatalFailure());
  const std::string version = WaitConverged();
  ASSERT_FALSE(version.empty());
  ProxyOptions options = proxies_[0]->options;
  proxies_[0]->process->Kill();
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto node = control_plane_->Node(options.node_id);
        const auto* connected = node ? node->if_contains("connected") : nullptr;
        return connected != nullptr && connected->is_bool() && !connected->as_bool();
      },
      kConvergeTimeout))
      << Describe(control_plane_->Proxies());

  state_dirs_.push_back(std::make_unique<TempDir>("berry-fleet-state-"));
  options.state_dir = state_dirs_.back()->path();
  proxies_[0] = Proxy::Start(options);
  ASSERT_NE(proxies_[0], nullptr);

  EXPECT_TRUE(WaitUntil([&] { return proxies_[0]->ReadyzStatus() == 200; }, 10s))
      << "the proxy never got a table; the control plane believes it holds " << version << ": "
      << Describe(control_plane_->Proxies());
  EXPECT_EQ(ServedBy(*proxies_[0]), "a");
}

// mTLS between the control plane and proxies: tables (with provider keys) go only to proxies
// whose client certificate chains to --tls-ca.
TEST_F(Fleet, MutualTlsServesOnlyProxiesWithAClientCertificateFromTheCa) {
  auto pki = test_support::GenerateTestPki();
  ASSERT_TRUE(pki.ok()) << pki.status();
  test_support::TestPkiOptions rogue_options;
  rogue_options.ca_common_name = "Rogue CA";
  auto rogue_pki = test_support::GenerateTestPki(rogue_options);
  ASSERT_TRUE(rogue_pki.ok()) << rogue_pki.status();
  auto files = test_support::WriteTestPki(*pki, dir_.path() + "/pki");
  ASSERT_TRUE(files.ok()) << files.status();
  auto rogue = test_support::WriteTestPki(*rogue_pki, dir_.path() + "/rogue-pki");
  ASSERT_TRUE(rogue.ok()) << rogue.status();
  ASSERT_TRUE(config_.Write(ChatOnA()));
  control_plane_ = ControlPlane::Start(config_.path(), "127.0.0.1:0",
                                       {"--tls-ca", files->ca_cert, "--tls-cert",
                                        files->server_cert, "--tls-key", files->server_key});
  ASSERT_NE(control_plane_, nullptr);
  const auto start = [&](std::string node_id, std::vector<std::string> flags) {
    state_dirs_.push_back(std::make_unique<TempDir>("berry-fleet-state-"));
    auto proxy = Proxy::Start({control_plane_->grpc_address, std::move(node_id),
                               state_dirs_.back()->path(), std::move(flags)});
    EXPECT_NE(proxy, nullptr);
    return proxy;
  };

  auto trusted = start("trusted", {"--tls-ca", files->ca_cert, "--tls-cert", files->client_cert,
                                   "--tls-key", files->client_key});
  // Trusts the server, but its own certificate comes from another CA.
  auto foreign = start("foreign", {"--tls-ca", files->ca_cert, "--tls-cert", rogue->client_cert,
                                   "--tls-key", rogue->client_key});
  // No TLS at all, so no client certificate.
  auto plaintext = start("plaintext", {});
  ASSERT_TRUE(trusted && foreign && plaintext);

  std::string version;
  ASSERT_TRUE(WaitUntil(
      [&] {
        version = control_plane_->Version();
        return control_plane_->AllAcked({"trusted"}, version);
      },
      kConvergeTimeout))
      << Describe(control_plane_->Proxies()) << "\n"
      << trusted->process->err();
  EXPECT_EQ(trusted->ReadyzStatus(), 200);
  EXPECT_EQ(ServedBy(*trusted), "a");

  // By now the others have had several attempts (backoff starts at 250 ms); give them 3 s more.
  const bool refused_throughout = !WaitUntil(
      [&] {
        return foreign->ReadyzStatus() != 503 || plaintext->ReadyzStatus() != 503 ||
               control_plane_->Node("foreign") || control_plane_->Node("plaintext");
      },
      3s, 100ms);
  EXPECT_TRUE(refused_throughout) << Describe(control_plane_->Proxies());
  EXPECT_EQ(foreign->ReadyzStatus(), 503);
  EXPECT_EQ(plaintext->ReadyzStatus(), 503);
  auto listed = control_plane_->Proxies();
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->as_object().at("proxies").as_array().size(), 1u) << Describe(listed);
}

}  // namespace
// Replicas of one compose service share a command line: without --node-id (or NODE_ID) a managed
// proxy takes its host name, which a container or pod has to itself.
TEST_F(Fleet, ProxyWithoutANodeIdIsKnownByItsHostName) {
  StartFleet(ChatOnA(), {});
  ASSERT_FALSE(HasFatalFailure());
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  auto proxy = Proxy::Start({control_plane_->grpc_address, "", "", {}});
  ASSERT_NE(proxy, nullptr);
  const std::string version = control_plane_->Version();
  EXPECT_TRUE(
      WaitUntil([&] { return control_plane_->AllAcked({host}, version); }, kConvergeTimeout))
      << Describe(control_plane_->Proxies());
  EXPECT_EQ(ServedBy(*proxy), "a");
}

// Alerts need each proxy's own view of its route stream: the control plane cannot count a proxy
// that never reaches it.
TEST_F(Fleet, ProxiesExportWhetherTheirRouteStreamIsUp) {
  StartFleet(ChatOnA(), {{}});
  ASSERT_FALSE(HasFatalFailure());
  const Proxy& proxy = *proxies_[0];
  EXPECT_TRUE(WaitUntil([&] { return proxy.Metric("berry_control_plane_connected") == 1.0; },
                        kConvergeTimeout));
  // The stream counts as up once it is open, which can be before the table arrives on it.
  ASSERT_FALSE(WaitConverged().empty());

  RestartControlPlane([&] {
    EXPECT_TRUE(WaitUntil([&] { return proxy.Metric("berry_control_plane_connected") == 0.0; },
                          kConvergeTimeout))
        << "still reported connected after the control plane died";
    EXPECT_EQ(ServedBy(proxy), "a") << "a proxy without its control plane keeps serving";
  });
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_TRUE(WaitUntil([&] { return proxy.Metric("berry_control_plane_connected") == 1.0; },
                        kConvergeTimeout))
      << "not reconnected";
}

// On a fresh install the proxies may start before the control plane listens. Their route
// stream must wait for the channel rather than fail fast: failing fast stacked our backoff on
// gRPC's, and proxies took 5-12 s to notice a control plane that had been up for a while.
TEST_F(Fleet, ProxyStartedBeforeItsControlPlaneIsServingSoonAfterItComesUp) {
  ASSERT_TRUE(config_.Write(ChatOnA()));
  uint16_t port = 0;
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor probe(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    port = probe.local_endpoint().port();
  }
  const std::string grpc_address = absl::StrCat("127.0.0.1:", port);
  auto proxy = Proxy::Start({grpc_address, "early", "", {}});
  ASSERT_NE(proxy, nullptr);
  // Long enough for several failed connection attempts and backoff to build up.
  EXPECT_FALSE(WaitUntil([&] { return proxy->ReadyzStatus() == 200; }, 1500ms));

  control_plane_ = ControlPlane::Start(config_.path(), grpc_address);
  ASSERT_NE(control_plane_, nullptr);
  const auto listening = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitUntil([&] { return proxy->ReadyzStatus() == 200; }, kConvergeTimeout));
  EXPECT_LT(std::chrono::steady_clock::now() - listening, 4s)
      << "the proxy noticed its control plane late";
  EXPECT_EQ(ServedBy(*proxy), "a");
}

}  // namespace berry::fleet_test
