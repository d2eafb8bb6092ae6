#include "control-plane/health/health_checker.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/field.hpp>
#include <chrono>
#include <exception>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/http/wire.h"
#include "common/log/log.h"
#include "common/route_table/dialect.h"
#include "common/strings/views.h"

namespace berry::control_plane {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kNoThrow = net::as_tuple(net::use_awaitable);

absl::Duration FromProto(const google::protobuf::Duration& d, absl::Duration fallback) {
  const absl::Duration value = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  return value > absl::ZeroDuration() ? value : fallback;
}

SteadyClock::duration ToSteady(absl::Duration d) {
  return std::chrono::duration_cast<SteadyClock::duration>(absl::ToChronoNanoseconds(d));
}

}  // namespace

// One probed provider. Owned by providers_ and by its Run() coroutine; touched on the checker's
// thread only.
struct HealthChecker::ProviderState {
  ProviderState(net::io_context& io_context, std::string id_in, std::string base_url_in)
      : id(std::move(id_in)), base_url(std::move(base_url_in)), timer(io_context) {}

  const std::string id;
  const std::string base_url;
  std::shared_ptr<const Target> target;
  net::steady_timer timer;
  // The in-flight probe's connection, so that retiring the provider can close it.
  upstream::Connection* connection = nullptr;
  bool retired = false;
  bool fleet_ejected = false;
  bool probe_now = false;  // ProbeNow: the next probe is due at once
  std::optional<bool> verdict;
  uint32_t consecutive_successes = 0;
  uint32_t consecutive_failures = 0;
  // The next probe is due at wait_started + wait_factor × the provider's current interval, so a
  // new interval applies to the wait in progress with the jitter already drawn.
  SteadyClock::time_point wait_started;
  double wait_factor = 0.0;
};

absl::StatusOr<std::unique_ptr<HealthChecker>> HealthChecker::Create(HealthSink& sink,
                                                                     HealthCheckerOptions options) {
  if (options.unhealthy_threshold < 1 || options.healthy_threshold < 1) {
    return absl::InvalidArgumentError("health check thresholds must be at least 1");
  }
  if (!(options.jitter >= 0.0 && options.jitter <= 0.5)) {
    return absl::InvalidArgumentError("health check jitter must be in [0, 0.5]");
  }
  for (const auto& [name, value] :
       {std::pair{"interval", options.interval}, std::pair{"timeout", options.timeout},
        std::pair{"recovery_interval", options.recovery_interval}}) {
    if (value.has_value() && *value <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("health check ", name, " override must be positive"));
    }
  }
  std::shared_ptr<const upstream::TlsContexts> tls_contexts = options.tls_contexts;
  if (tls_contexts == nullptr) {
    absl::StatusOr<std::shared_ptr<const upstream::TlsContexts>> created =
        upstream::TlsContexts::Create();
    if (!created.ok()) {
      return created.status();
    }
    tls_contexts = *std::move(created);
  }
  return std::unique_ptr<HealthChecker>(
      new HealthChecker(sink, std::move(options), std::move(tls_contexts)));
}

HealthChecker::HealthChecker(HealthSink& sink, HealthCheckerOptions options,
                             std::shared_ptr<const upstream::TlsContexts> tls_contexts)
    : sink_(sink), options_(std::move(options)), tls_contexts_(std::move(tls_contexts)) {
  io_context_.emplace(1);
  work_.emplace(io_context_->get_executor());
  schedule_ = Schedule{options_.interval.value_or(absl::Seconds(30)),
                       options_.timeout.value_or(absl::Seconds(10)),
                       options_.recovery_interval.value_or(absl::Seconds(120))};
  if (options_.seed.has_value()) {
    rng_.seed(*options_.seed);
  } else {
    std::random_device device;
    rng_.seed((static_cast<uint64_t>(device()) << 32) | device());
  }
}

HealthChecker::~HealthChecker() { Stop(); }

void HealthChecker::Start() {
  absl::MutexLock lock(&lifecycle_mu_);
  if (lifecycle_ != Lifecycle::kCreated) {
    return;
  }
  lifecycle_ = Lifecycle::kRunning;
  thread_ = std::thread([this] { io_context_->run(); });
}

void HealthChecker::Stop() {
  {
    absl::MutexLock lock(&lifecycle_mu_);
    if (lifecycle_ == Lifecycle::kStopped) {
      return;
    }
    lifecycle_ = Lifecycle::kStopped;
  }
  // No Update can post any more. Stopping the loop abandons every wait and probe where it is;
  // destroying the io_context then destroys their coroutine frames, which closes their sockets.
  io_context_->stop();
  if (thread_.joinable()) {
    thread_.join();
  }
  providers_.clear();
  work_.reset();
  io_context_.reset();
}

void HealthChecker::Update(const v1::RouteTable& table) {
  const v1::Settings& settings = table.settings();
  Schedule schedule{
      options_.interval.value_or(FromProto(settings.health_check_interval(), absl::Seconds(30))),
      options_.timeout.value_or(FromProto(settings.health_check_timeout(), absl::Seconds(10))),
      options_.recovery_interval.value_or(
          FromProto(settings.recovery_check_interval(), absl::Seconds(120)))};
  std::vector<ProviderConfig> providers;
  absl::flat_hash_set<std::string> seen;
  for (const v1::Provider& provider : table.providers()) {
    // A validated table has unique ids; a repeat would leave a probe loop nobody can retire.
    if (!provider.enabled() || !seen.insert(provider.id()).second) {
      continue;
    }
    auto target = std::make_shared<Target>(
        Target{upstream::Endpoint::Parse(provider.base_url(), provider.tls_verify()), {}, {}});
    // The provider's own model list: GET {base_url}/models, with the key where its dialect
    // wants it (Anthropic: x-api-key and anthropic-version; Gemini: x-goog-api-key; a configured
    // header still wins).
    if (route_table::ParseDialect(provider.backend_type()) == route_table::Dialect::kAnthropic) {
      if (!provider.api_key().empty()) {
        target->headers.emplace_back("x-api-key", provider.api_key());
      }
      target->headers.emplace_back("anthropic-version", route_table::kAnthropicVersion);
    } else if (route_table::ParseDialect(provider.backend_type()) ==
               route_table::Dialect::kGemini) {
      if (!provider.api_key().empty()) {
        target->headers.emplace_back(route_table::kGeminiKeyHeader, provider.api_key());
      }
    } else if (!provider.api_key().empty()) {
      target->authorization = absl::StrCat("Bearer ", provider.api_key());
    }
    for (const v1::Header& header : provider.headers()) {
      target->headers.emplace_back(header.name(), header.value());
    }
    providers.push_back(ProviderConfig{provider.id(), provider.base_url(), std::move(target)});
  }
  absl::MutexLock lock(&lifecycle_mu_);
  if (lifecycle_ == Lifecycle::kStopped) {
    return;
  }
  net::post(*io_context_, [this, schedule, providers = std::move(providers)]() mutable {
    Apply(schedule, std::move(providers));
  });
}

void HealthChecker::SetFleetEjected(std::string_view provider_id, bool ejected) {
  absl::MutexLock lock(&lifecycle_mu_);
  if (lifecycle_ == Lifecycle::kStopped) {
    return;
  }
  net::post(*io_context_,
            [this, id = std::string(provider_id), ejected] { ApplyFleetEjected(id, ejected); });
}

void HealthChecker::ProbeNow(std::string_view provider_id) {
  absl::MutexLock lock(&lifecycle_mu_);
  if (lifecycle_ == Lifecycle::kStopped) {
    return;
  }
  net::post(*io_context_, [this, id = std::string(provider_id)] { ApplyProbeNow(id); });
}

std::optional<bool> HealthChecker::ProviderHealth(std::string_view provider_id) const {
  absl::MutexLock lock(&published_mu_);
  auto it = published_.find(strings::Absl(provider_id));
  return it == published_.end() ? std::nullopt : it->second.verdict;
}

absl::Status HealthChecker::RegisterMetrics(metrics::Registry& registry) {
  absl::Status status = registry.AddCallbackCounter(
      "berry_cp_health_checks_total",
      "Active health probes (GET {base_url}/models) per provider, by result.",
      {"provider", "result"}, [this] {
        std::vector<metrics::GaugeSample> samples;
        absl::MutexLock lock(&published_mu_);
        for (const auto& [id, published] : published_) {
          samples.push_back({{id, "success"}, static_cast<double>(published.success)});
          samples.push_back({{id, "failure"}, static_cast<double>(published.failure)});
          samples.push_back({{id, "timeout"}, static_cast<double>(published.timeout)});
        }
        return samples;
      });
  if (!status.ok()) {
    return status;
  }
  return registry.AddCallbackGauge(
      "berry_cp_provider_healthy",
      "Active health check verdict per provider: 1 healthy, 0 unhealthy; absent without one.",
      {"provider"}, [this] {
        std::vector<metrics::GaugeSample> samples;
        absl::MutexLock lock(&published_mu_);
        for (const auto& [id, published] : published_) {
          if (published.verdict.has_value()) {
            samples.push_back({{id}, *published.verdict ? 1.0 : 0.0});
          }
        }
        return samples;
      });
}

void HealthChecker::Apply(Schedule schedule, std::vector<ProviderConfig> providers) {
  schedule_ = schedule;
  absl::flat_hash_map<std::string, std::shared_ptr<ProviderState>> previous = std::move(providers_);
  providers_.clear();
  std::vector<ProviderConfig> added;
  for (ProviderConfig& config : providers) {
    auto it = previous.find(config.id);
    if (it != previous.end() && it->second->base_url == config.base_url) {
      std::shared_ptr<ProviderState> state = std::move(it->second);
      previous.erase(it);
      state->target = std::move(config.target);
      state->timer.cancel();  // re-evaluates its wait against the new intervals
      providers_.emplace(config.id, std::move(state));
    } else {
      added.push_back(std::move(config));
    }
  }
  // Retire before adding, so that a provider whose base_url changed is cleared first.
  for (auto& [id, state] : previous) {
    Retire(*state);
  }
  const auto now = SteadyClock::now();
  for (ProviderConfig& config : added) {
    auto state = std::make_shared<ProviderState>(*io_context_, config.id, config.base_url);
    state->target = std::move(config.target);
    state->wait_started = now;
    state->wait_factor = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    if (!state->target->endpoint.ok()) {
      log::Warn("health check: provider base_url is unusable; every probe fails",
                {{"provider", config.id},
                 {"error", strings::Std(state->target->endpoint.status().message())}});
    }
    {
      absl::MutexLock lock(&published_mu_);
      published_[config.id] = Published{};
    }
    providers_.emplace(config.id, state);
    net::co_spawn(*io_context_, Run(state), [id = config.id](const std::exception_ptr& error) {
      if (error) {
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          log::Error("health check loop failed", {{"provider", id}, {"error", e.what()}});
        }
      }
    });
  }
}

void HealthChecker::ApplyFleetEjected(const std::string& provider_id, bool ejected) {
  auto it = providers_.find(provider_id);
  if (it == providers_.end() || it->second->fleet_ejected == ejected) {
    return;
  }
  it->second->fleet_ejected = ejected;
  it->second->timer.cancel();
}

void HealthChecker::ApplyProbeNow(const std::string& provider_id) {
  auto it = providers_.find(provider_id);
  if (it == providers_.end()) {
    return;
  }
  ProviderState& state = *it->second;
  state.probe_now = true;  // read when the wait in progress, or the probe in flight, ends
  state.timer.cancel();
}

void HealthChecker::Retire(ProviderState& state) {
  state.retired = true;
  state.timer.cancel();
  if (state.connection != nullptr) {
    state.connection->Cancel();
  }
  if (state.verdict.has_value()) {
    SetVerdict(state, std::nullopt, "removed from the route table or disabled");
  }
  absl::MutexLock lock(&published_mu_);
  published_.erase(state.id);
}

absl::Duration HealthChecker::IntervalFor(const ProviderState& state) const {
  if (state.verdict == false || state.fleet_ejected) {
    return std::min(schedule_.interval, schedule_.recovery_interval);
  }
  return schedule_.interval;
}

net::awaitable<void> HealthChecker::Run(std::shared_ptr<ProviderState> state) {
  while (!state->retired) {
    const auto due = state->wait_started + ToSteady(IntervalFor(*state) * state->wait_factor);
    if (!state->probe_now && SteadyClock::now() < due) {
      state->timer.expires_at(due);
      co_await state->timer.async_wait(kNoThrow);
      continue;  // due, retired, or rescheduled: the loop re-checks which
    }
    std::string detail;
    state->probe_now = false;
    const absl::Time started = absl::Now();
    const Result result = co_await Probe(state->target, *state, &detail);
    if (state->retired || result == Result::kCancelled) {
      break;
    }
    Record(*state, result, detail);
    if (result == Result::kSuccess) {
      sink_.OnProbeSucceeded(state->id, started);
    }
    state->wait_started = SteadyClock::now();
    state->wait_factor =
        std::uniform_real_distribution<double>(1.0 - options_.jitter, 1.0 + options_.jitter)(rng_);
  }
}

net::awaitable<HealthChecker::Result> HealthChecker::Probe(std::shared_ptr<const Target> target,
                                                           ProviderState& state,
                                                           std::string* detail) {
  if (!target->endpoint.ok()) {
    *detail = std::string(target->endpoint.status().message());
    co_return Result::kFailure;
  }
  const upstream::Endpoint& endpoint = *target->endpoint;
  const auto timeout = ToSteady(schedule_.timeout);
  const auto deadline = SteadyClock::now() + timeout;

  upstream::ConnectError connect_error = upstream::ConnectError::kNone;
  absl::StatusOr<std::unique_ptr<upstream::Connection>> connected =
      co_await upstream::Connection::Open(*io_context_, *tls_contexts_, endpoint, timeout,
                                          &connect_error);
  if (state.retired) {
    co_return Result::kCancelled;
  }
  if (!connected.ok()) {
    *detail = std::string(connected.status().message());
    if (connect_error == upstream::ConnectError::kTimeout || SteadyClock::now() >= deadline) {
      co_return Result::kTimeout;
    }
    co_return Result::kFailure;
  }
  std::unique_ptr<upstream::Connection> connection = *std::move(connected);

  http::request<http::string_body> request{http::verb::get,
                                           absl::StrCat(endpoint.path_prefix, "/models"), 11};
  request.set(http::field::host, endpoint.host_header);
  request.set(http::field::user_agent, options_.user_agent);
  request.set(http::field::accept, "application/json");
  if (!target->authorization.empty()) {
    request.set(http::field::authorization, target->authorization);
  }
  // After the key, like the proxy: a provider that configures its own Authorization wins.
  for (const auto& [name, value] : target->headers) {
    request.set(name, value);
  }
  request.keep_alive(false);
  request.prepare_payload();

  state.connection = connection.get();
  connection->ExpiresAfter(std::max(deadline - SteadyClock::now(), SteadyClock::duration::zero()));
  std::string head;
  wire::AppendRequestHead(head, request);
  upstream::ResponseParser parser;
  const beast::error_code ec = co_await connection->RoundTrip(head, {}, parser);
  state.connection = nullptr;
  connection->Cancel();  // the body is not needed; see the header comment
  if (state.retired) {
    co_return Result::kCancelled;
  }
  if (ec == beast::error::timeout) {
    *detail = "timed out waiting for the response";
    co_return Result::kTimeout;
  }
  if (ec) {
    *detail = absl::StrCat("request failed: ", ec.message());
    co_return Result::kFailure;
  }
  const unsigned status = parser.get().result_int();
  if (status < 200 || status > 299) {
    *detail = absl::StrCat("answered HTTP ", status);
    co_return Result::kFailure;
  }
  co_return Result::kSuccess;
}

void HealthChecker::Record(ProviderState& state, Result result, const std::string& detail) {
  {
    absl::MutexLock lock(&published_mu_);
    Published& published = published_[state.id];
    switch (result) {
      case Result::kSuccess:
        ++published.success;
        break;
      case Result::kFailure:
        ++published.failure;
        break;
      case Result::kTimeout:
        ++published.timeout;
        break;
      case Result::kCancelled:  // never recorded: Run() stops first
        break;
    }
  }
  if (result == Result::kSuccess) {
    state.consecutive_failures = 0;
    ++state.consecutive_successes;
    if (state.verdict != true &&
        (!state.verdict.has_value() || state.consecutive_successes >= options_.healthy_threshold)) {
      SetVerdict(state, true, "probe succeeded");
    }
    return;
  }
  state.consecutive_successes = 0;
  ++state.consecutive_failures;
  log::Debug("health check probe failed",
             {{"provider", state.id},
              {"result", result == Result::kTimeout ? "timeout" : "failure"},
              {"error", detail}});
  if (state.verdict != false && state.consecutive_failures >= options_.unhealthy_threshold) {
    SetVerdict(state, false, detail);
  }
}

void HealthChecker::SetVerdict(ProviderState& state, std::optional<bool> verdict,
                               std::string_view reason) {
  state.verdict = verdict;
  if (!verdict.has_value()) {
    log::Info("provider no longer health checked", {{"provider", state.id}, {"reason", reason}});
  } else if (*verdict) {
    const std::string successes = absl::StrCat(state.consecutive_successes);
    log::Info("provider passed its health checks",
              {{"provider", state.id}, {"consecutive_successes", successes}});
  } else {
    const std::string failures = absl::StrCat(state.consecutive_failures);
    log::Warn("provider failed its health checks",
              {{"provider", state.id}, {"consecutive_failures", failures}, {"reason", reason}});
  }
  if (verdict.has_value()) {
    absl::MutexLock lock(&published_mu_);
    published_[state.id].verdict = verdict;
  }
  sink_.OnProviderHealth(state.id, verdict);
}

}  // namespace berry::control_plane
