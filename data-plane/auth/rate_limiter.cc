#include "data-plane/auth/rate_limiter.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace berry::auth {
namespace {

constexpr std::array<int64_t, 3> kPeriodSeconds = {60, 3600, 86400};
constexpr std::array<Window, 3> kWindowKinds = {Window::kMinute, Window::kHour, Window::kDay};

constexpr uint64_t kCountMask = 0xffffffffULL;
// The count lives in 32 bits; a larger configured limit is in effect unlimited anyway.
constexpr uint64_t kMaxLimit = kCountMask;

uint64_t Pack(uint64_t window_id, uint64_t count) { return (window_id << 32) | count; }
uint64_t WindowIdOf(uint64_t word) { return word >> 32; }
uint64_t CountOf(uint64_t word) { return word & kCountMask; }

// Window ids fit 32 bits until the year 10000 for minutes; clamp anyway so a wild clock cannot
// corrupt the count bits.
uint64_t WindowIdAt(int64_t now, size_t window) {
  const auto id = static_cast<uint64_t>(now / kPeriodSeconds[window]);
  return std::min<uint64_t>(id, kCountMask);
}

int64_t SecondsUntilEnd(uint64_t window_id, int64_t now, size_t window) {
  const int64_t end = (static_cast<int64_t>(window_id) + 1) * kPeriodSeconds[window];
  return std::max<int64_t>(end - now, 1);
}

// Takes back `amount` counted in window `window_id`, unless that window has already been
// replaced by a later one (whose count this request never touched).
void GiveBack(std::atomic<uint64_t>& word, uint64_t window_id, uint64_t amount) {
  uint64_t current = word.load(std::memory_order_relaxed);
  while (WindowIdOf(current) == window_id && CountOf(current) > 0 &&
         !word.compare_exchange_weak(current, current - std::min(CountOf(current), amount),
                                     std::memory_order_relaxed)) {
  }
}

// Adds `amount` to the window of `now` whatever its limit (tokens already spent), saturating.
void Charge(std::atomic<uint64_t>& word, int64_t now, size_t window, uint64_t amount) {
  const uint64_t window_now = WindowIdAt(now, window);
  uint64_t current = word.load(std::memory_order_relaxed);
  while (true) {
    const uint64_t window_id = std::max(WindowIdOf(current), window_now);
    const uint64_t count = WindowIdOf(current) == window_id ? CountOf(current) : 0;
    if (word.compare_exchange_weak(current, Pack(window_id, std::min(count + amount, kCountMask)),
                                   std::memory_order_relaxed)) {
      return;
    }
  }
}

std::array<uint64_t, 3> TokenLimitsOf(const berry::v1::RateLimit& limit) {
  return {limit.tokens_per_minute(), limit.tokens_per_hour(), limit.tokens_per_day()};
}

}  // namespace

std::string_view WindowName(Window window) {
  switch (window) {
    case Window::kMinute:
      return "minute";
    case Window::kHour:
      return "hour";
    case Window::kDay:
      return "day";
    case Window::kNone:
      break;
  }
  return "none";
}

int64_t WindowSeconds(Window window) {
  switch (window) {
    case Window::kMinute:
      return 60;
    case Window::kHour:
      return 3600;
    case Window::kDay:
      return 86400;
    case Window::kNone:
      break;
  }
  return 0;
}

std::shared_ptr<RateLimiter> RateLimiter::Create(const ClientDirectory& directory,
                                                 const RateLimiter* previous) {
  // Keys point into previous->slots_, which outlives this function.
  absl::flat_hash_map<std::string_view, std::shared_ptr<Counters>> old_counters;
  if (previous != nullptr) {
    for (const Slot& slot : previous->slots_) {
      old_counters.emplace(slot.id, slot.counters);
    }
  }

  std::shared_ptr<RateLimiter> limiter(new RateLimiter());
  const std::span<const Client> clients = directory.clients();
  limiter->slots_.resize(clients.size());
  for (const Client& client : clients) {
    Slot& slot = limiter->slots_[client.index()];
    slot.client = &client;
    slot.id = client.id();
    const berry::v1::RateLimit& limit = client.rate_limit();
    const std::array<uint64_t, kWindows> configured = {
        limit.requests_per_minute(), limit.requests_per_hour(), limit.requests_per_day()};
    const std::array<uint64_t, kWindows> tokens = TokenLimitsOf(limit);
    for (size_t w = 0; w < kWindows; ++w) {
      slot.limits[w] = static_cast<uint32_t>(std::min(configured[w], kMaxLimit));
      slot.limited = slot.limited || slot.limits[w] != 0;
      slot.token_limits[w] = static_cast<uint32_t>(std::min(tokens[w], kMaxLimit));
      slot.token_limited = slot.token_limited || slot.token_limits[w] != 0;
    }
    if (const auto it = old_counters.find(client.id()); it != old_counters.end()) {
      slot.counters = it->second;
    } else {
      slot.counters = std::make_shared<Counters>();
    }
  }
  return limiter;
}

const RateLimiter::Slot& RateLimiter::SlotFor(const Client& client) const {
  const uint32_t index = client.index();
  if (index >= slots_.size() || slots_[index].client != &client) {
    // Impossible when the caller pairs each limiter with its own directory, as it must.
    std::fprintf(stderr, "berry: RateLimiter::Check with a client of another ClientDirectory\n");
    std::abort();
  }
  return slots_[index];
}

Decision RateLimiter::Take(Words& words, const Limits& limits, uint64_t amount, int64_t now,
                           std::array<uint32_t, kWindows>& counted_in) {
  Decision decision;
  std::array<bool, kWindows> counted{};
  uint64_t fewest_left = std::numeric_limits<uint64_t>::max();
  for (size_t w = 0; w < kWindows; ++w) {
    const uint64_t limit = limits[w];
    if (limit == 0) {
      continue;
    }
    std::atomic<uint64_t>& word = words[w];
    const uint64_t window_now = WindowIdAt(now, w);
    uint64_t current = word.load(std::memory_order_relaxed);
    uint64_t window_id;
    uint64_t count;
    while (true) {
      // A word from an earlier window starts over; a word from a later one (another worker's
      // clock is a little ahead) is the current window.
      window_id = std::max(WindowIdOf(current), window_now);
      count = WindowIdOf(current) == window_id ? CountOf(current) : 0;
      if (count + amount > limit) {
        for (size_t taken = 0; taken < w; ++taken) {
          if (counted[taken]) {
            GiveBack(words[taken], counted_in[taken], amount);
          }
        }
        decision.allowed = false;
        decision.window = kWindowKinds[w];
        decision.limit = limit;
        decision.remaining = count >= limit ? 0 : limit - count;
        decision.reset_after_seconds = SecondsUntilEnd(window_id, now, w);
        return decision;
      }
      if (word.compare_exchange_weak(current, Pack(window_id, count + amount),
                                     std::memory_order_relaxed)) {
        break;
      }
    }
    counted[w] = true;
    counted_in[w] = static_cast<uint32_t>(window_id);
    const uint64_t left = limit - count - amount;
    if (left < fewest_left) {
      fewest_left = left;
      decision.window = kWindowKinds[w];
      decision.limit = limit;
      decision.remaining = left;
      decision.reset_after_seconds = SecondsUntilEnd(window_id, now, w);
    }
  }
  return decision;
}

Decision RateLimiter::Check(const Client& client, int64_t now_unix_seconds,
                            TokenHold* held) const {
  if (client.anonymous()) {
    return {};
  }
  const Slot& slot = SlotFor(client);
  if (!slot.limited) {
    return {};
  }
  std::array<uint32_t, kWindows> counted_in{};
  const Decision decision = Take(slot.counters->words, slot.limits, 1,
                                 std::max<int64_t>(now_unix_seconds, 0), counted_in);
  if (held != nullptr && decision.allowed) {
    held->reserved = 1;
    held->tags = counted_in;
  }
  return decision;
}

void RateLimiter::Release(const Client& client, const TokenHold& held) const {
  if (client.anonymous() || held.reserved == 0) {
    return;
  }
  const Slot& slot = SlotFor(client);
  for (size_t w = 0; w < kWindows; ++w) {
    if (slot.limits[w] != 0) {
      GiveBack(slot.counters->words[w], held.tags[w], held.reserved);
    }
  }
}

bool RateLimiter::LimitsTokens(const Client& client) const {
  return !client.anonymous() && SlotFor(client).token_limited;
}

Decision RateLimiter::ReserveTokens(const Client& client, uint64_t tokens, int64_t now_unix_seconds,
                                    TokenHold& hold) const {
  if (client.anonymous()) {
    return {};
  }
  const Slot& slot = SlotFor(client);
  if (!slot.token_limited || tokens == 0) {
    return {};
  }
  tokens = std::min(tokens, kMaxLimit);  // more than any window can hold: refused anyway
  const Decision decision = Take(slot.counters->token_words, slot.token_limits, tokens,
                                 std::max<int64_t>(now_unix_seconds, 0), hold.tags);
  hold.reserved = decision.allowed ? tokens : 0;
  return decision;
}

void RateLimiter::SettleTokens(const Client& client, const TokenHold& hold, uint64_t used,
                               int64_t now_unix_seconds) const {
  if (hold.reserved == 0 || used == hold.reserved) {
    return;
  }
  const Slot& slot = SlotFor(client);
  const int64_t now = std::max<int64_t>(now_unix_seconds, 0);
  for (size_t w = 0; w < kWindows; ++w) {
    if (slot.token_limits[w] == 0) {
      continue;
    }
    std::atomic<uint64_t>& word = slot.counters->token_words[w];
    if (used < hold.reserved) {
      GiveBack(word, hold.tags[w], hold.reserved - used);
    } else {
      Charge(word, now, w, used - hold.reserved);
    }
  }
}

uint64_t RateLimiter::CountIn(const Words& words, const Limits& limits, Window window,
                              int64_t now_unix_seconds) {
  const size_t w = static_cast<size_t>(window) - 1;
  if (limits[w] == 0) {
    return 0;
  }
  const uint64_t word = words[w].load(std::memory_order_relaxed);
  const uint64_t window_now = WindowIdAt(std::max<int64_t>(now_unix_seconds, 0), w);
  return WindowIdOf(word) == window_now ? CountOf(word) : 0;
}

uint64_t RateLimiter::TokenCount(const Client& client, Window window,
                                 int64_t now_unix_seconds) const {
  if (client.anonymous() || window == Window::kNone) {
    return 0;
  }
  const Slot& slot = SlotFor(client);
  return CountIn(slot.counters->token_words, slot.token_limits, window, now_unix_seconds);
}

uint64_t RateLimiter::Count(const Client& client, Window window, int64_t now_unix_seconds) const {
  if (client.anonymous() || window == Window::kNone) {
    return 0;
  }
  const Slot& slot = SlotFor(client);
  return CountIn(slot.counters->words, slot.limits, window, now_unix_seconds);
}

}  // namespace berry::auth
