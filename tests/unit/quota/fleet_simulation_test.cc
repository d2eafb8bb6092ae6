// A simulated fleet on one simulated clock: N proxies (LeaseAccount, as the data plane runs it)
// and a control plane (SlidingLedger + GrantSize, as the control plane runs it), messages delayed
// by a fixed one-way latency, requests arriving at seeded random times with skewed rates. Checks
// the two promises of ledger.h over many windows: no interval of one window's length admits more
// than the limit (+5 % allowed by the issue; the scheme promises 0 %), and a saturating demand
// gets at least 95 % of the limit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <vector>

#include "common/quota/account.h"
#include "common/quota/ledger.h"

namespace berry::quota::fleet_simulation_test {
namespace {

constexpr int64_t kNsPerMs = 1'000'000;

struct FleetSpec {
  uint64_t limit = 120;
  int64_t window_ms = 60'000;
  int slices = 60;
  int64_t latency_ms = 3;
  // Requests per second each proxy sees; a phase switches to the next rates.
  std::vector<std::vector<double>> phases;
  int64_t phase_ms = 60'000;
  int64_t duration_ms = 600'000;
  uint64_t seed = 1;
};

struct FleetResult {
  std::vector<int64_t> admitted_ms;  // sorted
  uint64_t max_in_any_window = 0;
  uint64_t offered = 0;
};

FleetResult Simulate(const FleetSpec& spec) {
  const size_t n = spec.phases.front().size();
  SlidingLedger ledger(spec.limit, spec.window_ms, spec.slices);
  std::vector<std::unique_ptr<LeaseAccount>> proxies;
  for (size_t i = 0; i < n; ++i) {
    proxies.push_back(std::make_unique<LeaseAccount>(spec.window_ms * kNsPerMs));
  }
  struct Ask {
    int64_t arrives_ms;
    size_t proxy;
    int64_t echo_ns;
    LeaseAccount::Usage usage;
  };
  struct Grant {
    int64_t arrives_ms;
    size_t proxy;
    int64_t echo_ns;
    int64_t slice;
    uint64_t credit;
    int64_t valid_for_ns;
    int64_t retry_after_ns;
  };
  std::deque<Ask> to_cp;
  std::deque<Grant> to_proxy;
  std::vector<int64_t> last_demand_ms(n, -1'000'000);
  std::mt19937_64 rng(spec.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  FleetResult result;

  for (int64_t now = 0; now < spec.duration_ms; ++now) {
    const int64_t now_ns = now * kNsPerMs;
    const auto& rates = spec.phases[static_cast<size_t>(now / spec.phase_ms) % spec.phases.size()];
    // Control plane: returns first, then grants (what the discovery service does per report).
    while (!to_cp.empty() && to_cp.front().arrives_ms <= now) {
      Ask ask = std::move(to_cp.front());
      to_cp.pop_front();
      for (const Lease::Ended& ended : ask.usage.returns) {
        ledger.Refund(ended.slice, ended.unspent);
      }
      if (ask.usage.demand_per_second > 0 || ask.usage.ask) {
        last_demand_ms[ask.proxy] = now;
      }
      if (!ask.usage.ask) {
        continue;
      }
      int active = 0;
      for (const int64_t at : last_demand_ms) {
        active += now - at < spec.window_ms / spec.slices * 2 ? 1 : 0;
      }
      const uint64_t size =
          GrantSize(ask.usage.demand_per_second, 2.0 * static_cast<double>(ledger.slice_ms()) / 1e3,
                    ledger.Remaining(now), active);
      const uint64_t credit = ledger.Debit(now, size);
      const int64_t slice = ledger.Slice(now);
      to_proxy.push_back({now + spec.latency_ms, ask.proxy, ask.echo_ns, slice, credit,
                          (ledger.LeaseEndMs(slice) - now) * kNsPerMs,
                          ledger.MsUntilCredit(now) * kNsPerMs});
    }
    while (!to_proxy.empty() && to_proxy.front().arrives_ms <= now) {
      const Grant& grant = to_proxy.front();
      proxies[grant.proxy]->OnGrant(grant.echo_ns, grant.slice, grant.credit, grant.valid_for_ns,
                                    grant.retry_after_ns);
      to_proxy.pop_front();
    }
    for (size_t p = 0; p < n; ++p) {
      LeaseAccount& account = *proxies[p];
      if (uniform(rng) < rates[p] / 1000.0) {
        ++result.offered;
        account.lease().CountAttempt();
        if (account.lease().TrySpend(now_ns).has_value()) {
          result.admitted_ms.push_back(now);
        }
      }
      // The reporter polls every 10 ms (the real one also wakes when credit runs low).
      if (now % 10 == static_cast<int64_t>(p % 10)) {
        if (auto usage = account.Poll(now_ns)) {
          account.Sent(*usage, now_ns);
          to_cp.push_back({now + spec.latency_ms, p, now_ns, *std::move(usage)});
        }
      }
    }
  }
  // Sliding maximum over every interval [t, t + W).
  const auto& times = result.admitted_ms;
  size_t lo = 0;
  for (size_t hi = 0; hi < times.size(); ++hi) {
    while (times[hi] - times[lo] >= spec.window_ms) {
      ++lo;
    }
    result.max_in_any_window = std::max<uint64_t>(result.max_in_any_window, hi - lo + 1);
  }
  return result;
}

// Admitted per window length over the run after the first window, as a share of the limit.
double Utilisation(const FleetSpec& spec, const FleetResult& result) {
  const auto count =
      static_cast<double>(std::count_if(result.admitted_ms.begin(), result.admitted_ms.end(),
                                        [&](int64_t t) { return t >= spec.window_ms; }));
  const double windows =
      static_cast<double>(spec.duration_ms - spec.window_ms) / static_cast<double>(spec.window_ms);
  return count / windows / static_cast<double>(spec.limit);
}

TEST(FleetSimulationTest, SkewedSaturatingDemandStaysWithinTheLimitInEveryWindow) {
  FleetSpec spec;
  // Three proxies, 10x the limit offered, the skew moving between proxies every minute.
  spec.phases = {{18.0, 1.5, 0.5}, {0.5, 18.0, 1.5}, {7.0, 7.0, 6.0}, {20.0, 0.0, 0.0}};
  spec.duration_ms = 20 * 60'000;
  const FleetResult result = Simulate(spec);
  EXPECT_LE(result.max_in_any_window, spec.limit);  // the scheme's bound: exact
  EXPECT_LE(static_cast<double>(result.max_in_any_window), spec.limit * 1.05);
  EXPECT_GE(Utilisation(spec, result), 0.95) << "admitted " << result.admitted_ms.size();
}

TEST(FleetSimulationTest, ManyProxiesAndAHighLimitStayWithinTheLimit) {
  FleetSpec spec;
  spec.limit = 3000;
  spec.latency_ms = 10;
  spec.phases = {{200.0, 50.0, 10.0, 5.0, 1.0, 0.2, 0.0, 0.0},
                 {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 300.0}};
  spec.phase_ms = 45'000;  // not aligned with the window
  spec.duration_ms = 10 * 60'000;
  spec.seed = 7;
  const FleetResult result = Simulate(spec);
  EXPECT_LE(result.max_in_any_window, spec.limit);
  EXPECT_GE(Utilisation(spec, result), 0.95) << "admitted " << result.admitted_ms.size();
}

TEST(FleetSimulationTest, BurstAtAWindowBoundaryGetsNoSecondLimit) {
  FleetSpec spec;
  // Idle, then everything at once just before and after the minute boundary.
  spec.phases = {{0.0, 0.0, 0.0}, {400.0, 400.0, 400.0}};
  spec.phase_ms = 59'000;
  spec.duration_ms = 59'000 + 2'000;  // 59 s .. 61 s: 1600 requests per proxy offered
  const FleetResult result = Simulate(spec);
  EXPECT_LE(result.max_in_any_window, spec.limit);
  EXPECT_GE(result.admitted_ms.size(), spec.limit * 95 / 100);
}

TEST(FleetSimulationTest, UnderTheLimitNothingIsRefusedForLackOfLease) {
  FleetSpec spec;
  // 1.5 requests per second in all, limit 120 per minute: 90 per minute, all should pass.
  spec.phases = {{1.0, 0.4, 0.1}};
  spec.duration_ms = 5 * 60'000;
  spec.seed = 3;
  const FleetResult result = Simulate(spec);
  // A request arriving while a proxy's lease is empty and its ask in flight is refused; with a
  // standing credit of at least 1 per proxy this is rare. Allow 2 %.
  EXPECT_GE(static_cast<double>(result.admitted_ms.size()),
            0.98 * static_cast<double>(result.offered));
}

}  // namespace
}  // namespace berry::quota::fleet_simulation_test
