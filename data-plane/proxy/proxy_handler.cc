#include "data-plane/proxy/proxy_handler.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "common/strings/views.h"
#include "data-plane/openai/errors.h"

namespace berry::proxy {
namespace {

using openai::ErrorKind;

// How long a request whose user's lease (or every candidate backend's budget lease) ran dry
// waits in all for the control plane's answers to the asks it caused (a round trip on a healthy
// stream) before it is refused.
constexpr int64_t kCreditWaitNs = 500'000'000;

// Waits until `status` has applied an answer after `seen` (FleetStatus::Answered wakes the
// timer through this worker's executor) or `wait_ns` passed; true when an answer came.
net::awaitable<bool> WaitForAnswer(fleet::FleetStatus& status, uint64_t seen, int64_t wait_ns) {
  auto timer = std::make_shared<net::steady_timer>(co_await net::this_coro::executor);
  struct Registration {
    fleet::FleetStatus& status;
    const uint64_t handle;
    ~Registration() { status.RemoveWaiter(handle); }
  };
  const Registration registration{status, status.AddWaiter([timer] {
                                    net::post(timer->get_executor(), [timer] { timer->cancel(); });
                                  })};
  // Registered first: an answer between the caller's look and here is not missed.
  if (status.answers.load(std::memory_order_acquire) == seen) {
    timer->expires_after(std::chrono::nanoseconds(wait_ns));
    co_await timer->async_wait(net::as_tuple(net::use_awaitable));
  }
  co_return status.answers.load(std::memory_order_acquire) != seen;
}

// A request for an endpoint only OpenAI's API has (/v1/completions, /v1/embeddings) to a model
// none of whose enabled backends speaks it: the 400 that says so (a 503 would invite retries).
std::optional<ErrorReply> RefuseForDialect(const Exchange& exchange) {
  if (exchange.path == kChatCompletionsPath || exchange.messages_front()) {
    return std::nullopt;
  }
  bool any_enabled = false;
  for (const selection::CompiledBackend& backend : exchange.model->backends()) {
    if (backend.openai_dialect() && backend.enabled()) {
      return std::nullopt;
    }
    any_enabled |= backend.enabled();
  }
  if (!any_enabled) {
    return std::nullopt;  // the picker says why nothing is available
  }
  return ErrorReply{
      400, openai::ErrorJson(ErrorKind::kInvalidRequest,
                             absl::StrCat("model \"", exchange.model->name(),
                                          "\" is served only by providers whose API has no ",
                                          strings::Absl(exchange.path),
                                          R"( (backend_type "anthropic" or "gemini"); use )",
                                          strings::Absl(kChatCompletionsPath)),
                             "model")};
}

uint64_t RandomSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) | device();
}

}  // namespace

ProxyHandler::ProxyHandler(net::io_context& io_context, RouteStore& routes, ProxyMetrics& metrics,
                           std::shared_ptr<const upstream::TlsContexts> tls, AccessLog& access_log,
                           ProxyOptions options)
    : routes_(routes),
      clock_(options.clock != nullptr ? *options.clock : Clock::System()),
      stats_(metrics, access_log, clock_),
      admission_(clock_),
      local_(routes, metrics),
      attempt_(io_context, std::move(tls), stats_, clock_, options.max_response_body_bytes),
      rng_(options.rng_seed ? *options.rng_seed : RandomSeed()) {}

ProxyHandler::~ProxyHandler() { attempt_.Clear(); }

void ProxyHandler::Refresh() {
  const uint64_t generation = routes_.generation();
  if (generation == seen_generation_) {
    return;
  }
  std::shared_ptr<const RouteGeneration> routes = routes_.Current();
  seen_generation_ = routes ? routes->generation : 0;
  std::unique_ptr<WorkerGeneration> previous = std::move(current_);
  if (routes) {
    current_ = std::make_unique<WorkerGeneration>(std::move(routes), stats_.metrics().shared());
  }
  if (previous != nullptr && previous->exchanges > 0) {
    retired_.push_back(std::move(previous));  // goes when its last request ends (Unpin)
  }
}

void ProxyHandler::Unpin(WorkerGeneration* pinned) {
  if (pinned == nullptr || --pinned->exchanges > 0 || pinned == current_.get()) {
    return;
  }
  for (auto it = retired_.begin(); it != retired_.end(); ++it) {
    if (it->get() == pinned) {
      retired_.erase(it);
      return;
    }
  }
}

uint64_t ProxyHandler::body_limit() {
  Refresh();
  if (current_ == nullptr || current_->routes->settings().max_request_body_bytes() == 0) {
    return 32ull << 20;
  }
  return current_->routes->settings().max_request_body_bytes();
}

net::awaitable<void> ProxyHandler::Handle(Request& request, Downstream& downstream) {
  Refresh();
  Exchange exchange(request, downstream, clock_.Now());
  WorkerGeneration* const pinned = current_.get();
  if (pinned != nullptr) {
    ++pinned->exchanges;
    exchange.pinned = pinned;
    exchange.generation = pinned->routes.get();
  }
  stats_.metrics().shared().inflight->Increment();
  co_await Route(exchange);
  stats_.metrics().shared().inflight->Decrement();
  // One clock read ends the exchange: its token settlement, duration and access log line.
  const Clock::TimePoint end = clock_.Now();
  admission_.SettleTokens(exchange, end);
  stats_.Finish(exchange, end);
  Unpin(pinned);
}

net::awaitable<void> ProxyHandler::HandleBadRequest(http::status status, std::string_view reason,
                                                    Downstream& downstream) {
  Response response{status, 11};
  const ErrorKind kind = status == http::status::payload_too_large ? ErrorKind::kRequestTooLarge
                                                                   : ErrorKind::kInvalidRequest;
  response.set(http::field::content_type, "application/json");
  response.body() = openai::ErrorJson(kind, reason);
  co_await downstream.Write(response);
  stats_.FinishBadRequest(static_cast<int>(status), reason, downstream.request_id());
}

net::awaitable<void> ProxyHandler::Route(Exchange& exchange) {
  if (exchange.request.method() == http::verb::post && !RelayedPath(exchange.path).empty()) {
    return Proxy(exchange);
  }
  return local_.Serve(exchange);
}

std::optional<ErrorReply> ProxyHandler::Admit(Exchange& exchange) {
  std::optional<ErrorReply> rejected = admission_.Admit(
      exchange.generation, exchange.request[http::field::authorization],
      exchange.request[kApiKeyHeader], exchange.request.body(), exchange, exchange.error);
  if (rejected && rejected->rate_limited && !rejected->credit_pending) {
    stats_.CountRateLimited(*exchange.client);
  }
  return rejected;
}

int64_t ProxyHandler::CreditWaitLeftNs(Exchange& exchange) {
  const int64_t now_ns = clock_.MonotonicNs();
  if (exchange.credit_deadline_ns == 0) {
    exchange.credit_deadline_ns = now_ns + kCreditWaitNs;
  }
  return exchange.credit_deadline_ns - now_ns;
}

net::awaitable<std::optional<ErrorReply>> ProxyHandler::AdmitWhenCreditComes(Exchange& exchange) {
  fleet::FleetStatus& status = exchange.generation->fleet->status();
  if (exchange.credit_wait_answers == Exchange::kNotWaited) {
    exchange.credit_wait_answers = status.answers.load(std::memory_order_acquire);
  }
  for (;;) {
    // Read before admitting: an answer that lands in between is not missed.
    const uint64_t seen = status.answers.load(std::memory_order_acquire);
    std::optional<ErrorReply> rejected = admission_.Admit(
        exchange.generation, exchange.request[http::field::authorization],
        exchange.request[kApiKeyHeader], exchange.request.body(), exchange, exchange.error);
    const int64_t left_ns = CreditWaitLeftNs(exchange);
    if (rejected && rejected->credit_pending && left_ns <= 0 &&
        seen == exchange.credit_wait_answers) {
      exchange.credit_wait_answers = Exchange::kSilenceChecked;
      ControlPlaneSilent(status, seen);
      continue;  // admitted or refused on the fallback share now
    }
    if (!rejected || !rejected->credit_pending || left_ns <= 0) {
      if (rejected && rejected->rate_limited) {
        stats_.CountRateLimited(*exchange.client);
      }
      co_return rejected;
    }
    co_await WaitForAnswer(status, seen, left_ns);
  }
}

net::awaitable<bool> ProxyHandler::WaitForBudgetCredit(Exchange& exchange) {
  if (exchange.generation->budgets == nullptr || !exchange.pinned->picker.budget_credit_pending()) {
    co_return false;
  }
  fleet::FleetStatus& status = exchange.generation->budgets->status();
  const int64_t left_ns = CreditWaitLeftNs(exchange);
  if (left_ns <= 0) {
    if (exchange.credit_wait_answers != exchange.budget_answers_seen) {
      co_return false;  // answered, and still no credit
    }
    // No answer at all since the wait began: pick once more, on the fallback shares.
    exchange.credit_wait_answers = Exchange::kSilenceChecked;
    ControlPlaneSilent(status, exchange.budget_answers_seen);
    co_return true;
  }
  if (exchange.credit_wait_answers == Exchange::kNotWaited) {
    exchange.credit_wait_answers = exchange.budget_answers_seen;
  }
  co_await WaitForAnswer(status, exchange.budget_answers_seen, left_ns);
  co_return true;  // pick again: the answer, or the deadline, decides
}

void ProxyHandler::ControlPlaneSilent(fleet::FleetStatus& status, uint64_t seen) {
  if (status.answers.load(std::memory_order_acquire) != seen) {
    return;  // an answer came after all: the next look uses it
  }
  if (status.away.exchange(true, std::memory_order_acq_rel)) {
    return;  // already away
  }
  log::Warn("the control plane did not answer a quota ask within 500 ms: admitting on the "
            "fallback share until it answers");
  status.Answered();  // the other requests waiting for an answer go to the fallback share too
}

const selection::CompiledBackend* ProxyHandler::PickBackend(Exchange& exchange,
                                                            std::string* error) {
  const RouteGeneration& generation = *exchange.generation;
  const auth::Client& client = *exchange.client;
  selection::PickRequest pick_request;
  pick_request.user_tags =
      client.anonymous() ? &generation.untagged : &generation.user_tags[client.index()];
  pick_request.tried = exchange.tried;
  pick_request.now_ns = clock_.MonotonicNs();
  pick_request.openai_only = exchange.path != kChatCompletionsPath && !exchange.messages_front();
  pick_request.budgets = generation.budgets.get();
  if (pick_request.budgets != nullptr) {
    // Before the pick looks at the leases: an answer after this wakes a wait at once.
    exchange.budget_answers_seen =
        generation.budgets->status().answers.load(std::memory_order_acquire);
  }
  selection::Picker& picker = exchange.pinned->picker;
  auto pick = picker.Pick(*exchange.model, pick_request, rng_);
  // The attempt spends one request of the backend's budgets; when another worker took the
  // last one since the pick looked, the backend reads spent and the pick goes again.
  for (size_t again = exchange.model->backends().size();
       pick.ok() && generation.budgets != nullptr && again > 0 &&
       !generation.budgets->SpendBudget(*pick->backend, pick_request.now_ns);
       --again) {
    pick = picker.Pick(*exchange.model, pick_request, rng_);
  }
  if (!pick.ok()) {
    *error = std::string(pick.status().message());
    return nullptr;
  }
  stats_.CountPick(exchange, pick->panic,
                   /*retry=*/exchange.tried.size() > exchange.dialect_refusals);
  exchange.tried.push_back(pick->backend->index());
  return pick->backend;
}

ErrorReply ProxyHandler::FailureReply(Exchange& exchange, std::string_view pick_error) {
  if (exchange.tried.empty()) {
    exchange.error = std::string(pick_error);
    // Backends cooling down after an upstream 429, or out of budget, return at a known time:
    // say when.
    const int64_t now_ns = clock_.MonotonicNs();
    int64_t soonest_ns = 0;
    const fleet::FleetLeases* budgets = exchange.generation->budgets.get();
    for (const selection::CompiledBackend& backend : exchange.model->backends()) {
      int64_t until = exchange.generation->runtime->backend(backend).cooldown_until_ns();
      if (budgets != nullptr && until <= now_ns) {
        // Out of budget: back when the control plane said credit frees up (1 s if unsaid).
        const int64_t wait = budgets->BudgetRetryAfterNs(backend, now_ns);
        until = wait > 0 ? now_ns + wait : 0;
      }
      if (until > now_ns && (soonest_ns == 0 || until < soonest_ns)) {
        soonest_ns = until;
      }
    }
    if (soonest_ns != 0) {
      const int seconds = static_cast<int>((soonest_ns - now_ns + 999'999'999) / 1'000'000'000);
      return {429, openai::ErrorJson(ErrorKind::kRateLimited, pick_error), seconds};
    }
    return {503, openai::ErrorJson(ErrorKind::kNoBackendAvailable, pick_error)};
  }
  if (exchange.last_timed_out) {
    return {504, openai::ErrorJson(ErrorKind::kUpstreamTimeout,
                                   absl::StrCat("no backend answered in time after ",
                                                exchange.tried.size() - exchange.dialect_refusals,
                                                " attempt(s)"))};
  }
  return {502, openai::ErrorJson(ErrorKind::kBadGateway,
                                 absl::StrCat("no backend could be reached after ",
                                              exchange.tried.size() - exchange.dialect_refusals,
                                              " attempt(s): ", exchange.error))};
}

// The hot path keeps its coroutine frame small (what is decided without waiting is done in
// plain functions): a frame over 1020 bytes bypasses Asio's recycling allocator and costs a
// malloc and a free per request.
net::awaitable<void> ProxyHandler::Proxy(Exchange& exchange) {
  std::optional<ErrorReply> rejected = Admit(exchange);
  if (rejected && rejected->credit_pending && exchange.generation->fleet != nullptr) {
    rejected = co_await AdmitWhenCreditComes(exchange);
  }
  if (!rejected) {
    rejected = RefuseForDialect(exchange);
    if (rejected) {
      exchange.error = "endpoint not served by the model's backend dialects";
    }
  }
  if (rejected) {
    if (rejected->rate_limited && rejected->tokens) {
      // Refused for its tokens after the request limits counted it: not a request made.
      admission_.ReleaseRequest(*exchange.generation, exchange);
    }
    co_await SendRefusal(exchange, *std::move(rejected));
    co_return;
  }
  const uint32_t max_attempts = exchange.generation->settings().max_retries() + 1;
  std::string pick_error;
  // A backend refused for its dialect was never sent the request: no attempt spent (each one
  // joins exchange.tried, so this ends).
  while (exchange.tried.size() - exchange.dialect_refusals < max_attempts) {
    const selection::CompiledBackend* backend = PickBackend(exchange, &pick_error);
    if (backend == nullptr) {
      // Budget leases ran dry and asks are on their way: pick again once answered.
      if (co_await WaitForBudgetCredit(exchange)) {
        continue;
      }
      break;
    }
    co_await attempt_.Run(exchange, *backend);
    if (exchange.answered || exchange.client_gone) {
      co_return;
    }
  }
  // Every attempt failed, or nothing could be picked.
  if (!exchange.tried.empty() && exchange.last_upstream_response) {
    co_await Send(exchange, *exchange.last_upstream_response);
    co_return;
  }
  if (exchange.dialect_error) {
    co_await SendError(exchange, exchange.dialect_error->status,
                       std::move(exchange.dialect_error->body));
    co_return;
  }
  ErrorReply reply = FailureReply(exchange, pick_error);
  co_await SendError(exchange, reply.status, std::move(reply.body), reply.retry_after_seconds);
}

}  // namespace berry::proxy
