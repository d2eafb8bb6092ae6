#include "data-plane/proxy/route_store.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/strings/views.h"
#include "data-plane/proxy/clock.h"

namespace berry::proxy {

void RouteStore::ApplyCooldowns(const selection::RuntimeState& runtime) {
  const Clock& clock = Clock::System();
  const int64_t now_unix_ns = absl::ToUnixNanos(absl::Now());
  const int64_t now_ns = clock.MonotonicNs();
  for (const selection::CompiledBackend& backend : runtime.snapshot().backends()) {
    if (!backend.config().has_cooldown_until()) {
      continue;
    }
    const auto& until = backend.config().cooldown_until();
    const int64_t until_unix_ns = until.seconds() * 1'000'000'000 + until.nanos();
    if (until_unix_ns > now_unix_ns) {
      runtime.backend(backend).CoolDownUntil(now_ns + (until_unix_ns - now_unix_ns));
    }
  }
}

absl::Status RouteStore::Apply(berry::v1::RouteTable table) {
  absl::MutexLock lock(&mu_);  // one apply at a time; readers only copy a pointer under it
  const RouteGeneration* previous = current_.get();

  auto next = std::make_shared<RouteGeneration>();
  next->generation = generation_.load(std::memory_order_relaxed) + 1;

  auto clients = auth::ClientDirectory::Create(table);
  if (!clients.ok()) {
    return clients.status();
  }
  next->clients = *std::move(clients);

  // Endpoints are parsed before the snapshot takes the table.
  absl::flat_hash_map<std::string, uint32_t> provider_index;
  for (const berry::v1::Provider& provider : table.providers()) {
    auto endpoint = upstream::Endpoint::Parse(provider.base_url(), provider.tls_verify());
    if (!endpoint.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("provider ", provider.id(), ": ", endpoint.status().message()));
    }
    if (!allowed_upstream_hosts_.empty() &&
        std::find(allowed_upstream_hosts_.begin(), allowed_upstream_hosts_.end(), endpoint->host) ==
            allowed_upstream_hosts_.end()) {
      return absl::PermissionDeniedError(absl::StrCat("provider ", provider.id(),
                                                      ": upstream host ", endpoint->host,
                                                      " is not in --allowed-upstream-hosts"));
    }
    const std::optional<route_table::Dialect> dialect =
        route_table::ParseDialect(provider.backend_type());
    if (!dialect) {
      return absl::InvalidArgumentError(absl::StrCat("provider ", provider.id(),
                                                     ": backend_type \"", provider.backend_type(),
                                                     "\" is not spoken by this proxy"));
    }
    ProviderRoute route;
    route.endpoint = *std::move(endpoint);
    route.dialect = *dialect;
    const auto configured = [&provider](std::string_view name) {
      for (const berry::v1::Header& header : provider.headers()) {
        if (absl::EqualsIgnoreCase(header.name(), strings::Absl(name))) {
          return true;
        }
      }
      return false;
    };
    if (*dialect == route_table::Dialect::kAnthropic) {
      if (!provider.api_key().empty() && !configured("x-api-key")) {
        route.headers.emplace_back("x-api-key", provider.api_key());
      }
      if (!configured("anthropic-version")) {
        route.headers.emplace_back("anthropic-version", route_table::kAnthropicVersion);
      }
    } else if (*dialect == route_table::Dialect::kGemini) {
      if (!provider.api_key().empty() && !configured(route_table::kGeminiKeyHeader)) {
        route.headers.emplace_back(route_table::kGeminiKeyHeader, provider.api_key());
      }
    } else {
      route.authorization = absl::StrCat("Bearer ", provider.api_key());
    }
    for (const berry::v1::Header& header : provider.headers()) {
      route.headers.emplace_back(header.name(), header.value());
    }
    provider_index[provider.id()] = static_cast<uint32_t>(next->providers.size());
    next->providers.push_back(std::move(route));
  }

  auto snapshot = selection::Snapshot::Create(std::move(table));
  if (!snapshot.ok()) {
    return snapshot.status();
  }
  next->runtime = selection::RuntimeState::Create(
      *snapshot, previous != nullptr ? previous->runtime.get() : nullptr);
  auto outliers = outlier::OutlierDetector::Create(
      next->runtime, previous != nullptr ? previous->outliers.get() : nullptr);
  if (!outliers.ok()) {
    return outliers.status();
  }
  next->outliers = *std::move(outliers);
  next->load =
      LoadStats::Create(next->snapshot(), previous != nullptr ? previous->load.get() : nullptr);
  next->limiter = auth::RateLimiter::Create(
      *next->clients, previous != nullptr ? previous->limiter.get() : nullptr);
  if (fleet_status_ != nullptr) {
    next->fleet = fleet::FleetLeases::Create(next->clients.get(), &next->snapshot(),
                                             previous != nullptr ? previous->fleet.get() : nullptr,
                                             fleet_status_);
    if (next->fleet->has_budgets()) {
      next->budgets = next->fleet;
    }
  } else {
    auto budgets = fleet::FleetLeases::Create(
        nullptr, &next->snapshot(), previous != nullptr ? previous->budgets.get() : nullptr,
        standalone_status_);
    if (budgets->has_budgets()) {
      next->budgets = std::move(budgets);
    }
  }

  const selection::Snapshot& compiled = next->snapshot();
  ApplyCooldowns(*next->runtime);
  next->backend_provider.reserve(compiled.backends().size());
  for (const selection::CompiledBackend& backend : compiled.backends()) {
    next->backend_provider.push_back(provider_index.at(backend.provider().id()));
  }
  for (const auth::Client& client : next->clients->clients()) {
    next->user_tags.push_back(compiled.InternUserTags(client.tags()));
  }
  next->untagged = compiled.InternUserTags(std::vector<std::string>{});

  current_ = std::move(next);
  generation_.store(current_->generation, std::memory_order_release);
  return absl::OkStatus();
}

std::shared_ptr<const RouteGeneration> RouteStore::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

}  // namespace berry::proxy
