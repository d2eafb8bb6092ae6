#include "common/http/deadline.h"

#include <boost/beast/core/error.hpp>
#include <cstdint>
#include <utility>

namespace berry::deadline {

struct SocketDeadline::State {
  State(net::ip::tcp::socket& socket, OnExpiry on_expiry)
      : timer(socket.get_executor()), socket(&socket), on_expiry(on_expiry) {}

  net::steady_timer timer;
  net::ip::tcp::socket* socket;  // nullptr once the SocketDeadline is destroyed
  const OnExpiry on_expiry;
  Clock::time_point deadline = Clock::time_point::max();
  Clock::time_point armed_at{};
  uint64_t wait_id = 0;  // of the latest wait; earlier ones are stale
  bool armed = false;
  bool expired = false;
};

SocketDeadline::SocketDeadline(net::ip::tcp::socket& socket, OnExpiry on_expiry)
    : state_(std::make_shared<State>(socket, on_expiry)) {}

SocketDeadline::~SocketDeadline() {
  state_->socket = nullptr;
  state_->timer.cancel();
}

void SocketDeadline::Arm(const std::shared_ptr<State>& state, Clock::time_point at) {
  state->armed = true;
  state->armed_at = at;
  const uint64_t wait_id = ++state->wait_id;
  state->timer.expires_at(at);  // a wait still pending completes as cancelled
  state->timer.async_wait([state, wait_id](boost::system::error_code ec) {
    // A wait that had already fired when it was superseded still completes without an error:
    // the id tells it apart.
    if (ec || wait_id != state->wait_id || state->socket == nullptr) {
      return;
    }
    state->armed = false;
    if (state->deadline == Clock::time_point::max()) {
      return;
    }
    if (Clock::now() >= state->deadline) {
      state->expired = true;
      boost::system::error_code ignored;
      if (state->on_expiry == OnExpiry::kClose) {
        state->socket->close(ignored);
      } else {
        state->socket->cancel(ignored);
      }
      return;
    }
    Arm(state, state->deadline);  // the deadline moved later since this wait began
  });
}

void SocketDeadline::ExpiresAt(Clock::time_point deadline) {
  if (state_->expired && state_->on_expiry == OnExpiry::kClose) {
    return;  // the socket is closed for good
  }
  state_->deadline = deadline;
  state_->expired = false;
  if (!state_->armed || deadline < state_->armed_at) {
    Arm(state_, deadline);
  }
}

void SocketDeadline::ExpiresNever() {
  if (state_->expired && state_->on_expiry == OnExpiry::kClose) {
    return;  // the socket is closed for good
  }
  // The armed timer, if any, fires once more and finds nothing to do.
  state_->deadline = Clock::time_point::max();
  state_->expired = false;
}

bool SocketDeadline::expired() const { return state_->expired; }

boost::system::error_code SocketDeadline::Translate(boost::system::error_code ec) const {
  if (ec && state_->expired) {
    return boost::beast::error::timeout;
  }
  return ec;
}

bool SocketDeadline::armed() const { return state_->armed; }

SocketDeadline::Clock::time_point SocketDeadline::armed_at() const { return state_->armed_at; }

}  // namespace berry::deadline
