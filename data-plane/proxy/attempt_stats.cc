#include "data-plane/proxy/attempt_stats.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "data-plane/proxy/retry_after.h"
#include "data-plane/proxy/worker_generation.h"

namespace berry::proxy {

AttemptStats::AttemptStats(ProxyMetrics& metrics, AccessLog& access_log, const Clock& clock)
    : metrics_(metrics), access_log_(access_log), clock_(clock) {}

void AttemptStats::BeginAttempt(const RouteGeneration& generation,
                                const selection::CompiledBackend& backend) {
  generation.runtime->backend(backend).BeginRequest();
  generation.load->backend(backend.index()).RecordIssued();
}

void AttemptStats::EndAttempt(const RouteGeneration& generation,
                              const selection::CompiledBackend& backend) {
  generation.runtime->backend(backend).EndRequest();
}

void AttemptStats::RecordTtfb(Exchange& exchange, const selection::CompiledBackend& backend,
                              double seconds) {
  exchange.ttfb = seconds;
  exchange.generation->runtime->backend(backend).RecordTtfb(seconds);
  exchange.generation->load->backend(backend.index()).ObserveTtfb(seconds);
  exchange.pinned->metrics.ObserveTtfb(*exchange.model, backend, seconds);
}

void AttemptStats::RecordOutcome(const RouteGeneration& generation,
                                 const selection::CompiledBackend& backend,
                                 outlier::Outcome outcome) {
  generation.load->backend(backend.index()).RecordOutcome(outcome);
  const auto result = generation.outliers->Record(backend.index(), outcome, clock_.MonotonicNs());
  if (result.ejected) {
    generation.load->nudge().Nudge();  // the control plane hears of it at once
    log::Warn("backend ejected", {{"backend", backend.id()},
                                  {"reason", outlier::OutcomeName(outcome)},
                                  {"multiplier", std::to_string(result.multiplier)}});
  }
}

void AttemptStats::RecordRateLimited(const RouteGeneration& generation,
                                     const selection::CompiledBackend& backend,
                                     const upstream::ResponseFields& fields) {
  const std::optional<std::chrono::nanoseconds> wait =
      UpstreamRetryAfter(fields, clock_.UnixSeconds());
  if (!wait.has_value() || *wait <= std::chrono::nanoseconds::zero()) {
    return;
  }
  // The longest wait a provider can impose is the longest ejection: 10 x the base timeout.
  const std::chrono::nanoseconds cap =
      std::chrono::seconds(generation.settings().circuit_breaker_timeout().seconds() > 0
                               ? generation.settings().circuit_breaker_timeout().seconds()
                               : outlier::kDefaultBaseEjectionSeconds) *
      outlier::kMaxEjectionMultiplier;
  const int64_t until = clock_.MonotonicNs() + std::min(*wait, cap).count();
  generation.load->backend(backend.index()).NoteCooldown(until);
  if (generation.runtime->backend(backend).CoolDownUntil(until)) {
    generation.load->nudge().Nudge();
    log::Info(
        "backend cooling down after an upstream 429",
        {{"backend", backend.id()},
         {"seconds", absl::StrCat(std::chrono::duration<double>(std::min(*wait, cap)).count())}});
  }
}

void AttemptStats::FailAttempt(Exchange& exchange, const selection::CompiledBackend& backend,
                               outlier::Outcome outcome, std::string message) {
  exchange.last_timed_out = outcome == outlier::Outcome::kTimeout;
  exchange.error = std::move(message);
  exchange.backend = &backend;
  RecordOutcome(*exchange.generation, backend, outcome);
}

void AttemptStats::RecordUsage(Exchange& exchange, const selection::CompiledBackend& backend,
                               const openai::Usage& usage) {
  exchange.prompt_tokens = usage.prompt_tokens;
  exchange.completion_tokens = usage.completion_tokens;
  exchange.usage_reported = true;
  exchange.pinned->metrics.CountTokens(*exchange.model, backend, usage.prompt_tokens, usage.completion_tokens);
  if (const fleet::FleetLeases* budgets = exchange.generation->budgets.get()) {
    budgets->ChargeBudgetTokens(backend, usage.prompt_tokens + usage.completion_tokens,
                                clock_.MonotonicNs());
  }
}

void AttemptStats::CountStreamBroken(const Exchange& exchange,
                                     const selection::CompiledBackend& backend) {
  exchange.pinned->metrics.CountStreamBroken(*exchange.model, backend);
}

void AttemptStats::CountPick(Exchange& exchange, bool panic, bool retry) {
  if (panic) {
    exchange.panic = true;
    exchange.pinned->metrics.CountPanic(*exchange.model);
  }
  if (retry) {
    ++exchange.retries;
    exchange.pinned->metrics.CountRetry(*exchange.model);
  }
}

void AttemptStats::CountRateLimited(const auth::Client& client) {
  metrics_.CountRateLimited(client.id());
}

void AttemptStats::Finish(const Exchange& exchange, Clock::TimePoint end) {
  const double seconds = std::chrono::duration<double>(end - exchange.start).count();
  if (exchange.local_endpoint) {
    metrics_.shared().CountLocalEndpoint(exchange.path, exchange.status);
  } else if (exchange.status != 0) {
    if (exchange.pinned != nullptr) {
      exchange.pinned->metrics.CountRequest(exchange.model, exchange.backend, exchange.status);
    } else {
      metrics_.CountRequest(exchange.status);
    }
  }
  if (exchange.model != nullptr && exchange.backend != nullptr) {
    exchange.pinned->metrics.ObserveDuration(*exchange.model, *exchange.backend, seconds);
    BackendLoad& load = exchange.generation->load->backend(exchange.backend->index());
    load.ObserveLatency(seconds);
    load.AddTokens(exchange.prompt_tokens, exchange.completion_tokens);
  }
  if (!access_log_.enabled()) {
    return;
  }
  AccessLogEntry entry;
  entry.request_id = exchange.downstream.request_id();
  entry.user = exchange.client != nullptr ? std::string_view(exchange.client->id()) : "";
  entry.method = exchange.request.method_string();
  entry.path = exchange.path;
  entry.model = exchange.model != nullptr ? std::string_view(exchange.model->name()) : "";
  entry.backend = exchange.backend != nullptr ? std::string_view(exchange.backend->id()) : "";
  entry.status = exchange.client_gone && !exchange.answered ? 499 : exchange.status;
  entry.duration_seconds = seconds;
  entry.ttfb_seconds = exchange.ttfb;
  entry.retries = exchange.retries;
  entry.stream = exchange.fields.stream;
  entry.panic = exchange.panic;
  entry.prompt_tokens = exchange.prompt_tokens;
  entry.completion_tokens = exchange.completion_tokens;
  entry.error = exchange.error;
  access_log_.Write(entry);
}

void AttemptStats::FinishBadRequest(int status, std::string_view reason,
                                    std::string_view request_id) {
  metrics_.CountRequest(status);
  AccessLogEntry entry;
  entry.request_id = request_id;
  entry.status = status;
  entry.error = reason;
  access_log_.Write(entry);
}

}  // namespace berry::proxy
