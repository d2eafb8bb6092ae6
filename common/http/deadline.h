// A deadline for one socket without a timer operation per socket operation.
//
// Beast's tcp_stream arms and cancels a timer around every read and write, and wraps each in
// one more composed operation: on the relay's path that was a tenth of the user-space CPU of a
// request (bench/README.md, "Profile"). Here setting a deadline only stores a time point. One
// timer per socket is armed lazily: when it fires before the deadline (the deadline was moved
// later meanwhile) it re-arms itself for the rest; it is re-armed at once only when a deadline
// moves earlier than the timer's expiry. On a keep-alive connection that is about one timer
// operation per request instead of one per socket operation.
//
// When a deadline passes, every operation pending on the socket is cancelled, or the socket is
// closed (kClose: for a connection that is not used after a timeout, and for a connect over
// several addresses, which would go on to the next address after a mere cancel), and
// `expired()` is true until the next deadline is set (for kClose: for good); `Translate` turns
// the failed operation's error into beast::error::timeout. A deadline
// acts when its time comes whether or not an operation is pending (unlike tcp_stream's, which
// cut off only operations in flight): set one before each operation that needs it, and
// ExpiresNever() as soon as the socket may sit without one (before writing elsewhere, before an
// operation that must not be cut off, before pooling).
//
// Threads: one; the socket's executor's.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <memory>

namespace berry::deadline {

namespace net = boost::asio;

class SocketDeadline {
 public:
  using Clock = std::chrono::steady_clock;
  enum class OnExpiry { kCancel, kClose };

  SocketDeadline(net::ip::tcp::socket& socket, OnExpiry on_expiry);
  ~SocketDeadline();
  SocketDeadline(const SocketDeadline&) = delete;
  SocketDeadline& operator=(const SocketDeadline&) = delete;

  void ExpiresAfter(Clock::duration timeout) { ExpiresAt(Clock::now() + timeout); }
  void ExpiresAt(Clock::time_point deadline);
  void ExpiresNever();

  // The deadline passed and what was pending on the socket was cancelled.
  bool expired() const;
  // `ec`, except that an error caused by the deadline becomes beast::error::timeout.
  boost::system::error_code Translate(boost::system::error_code ec) const;

  // For tests: whether the timer is waiting, and when it fires.
  bool armed() const;
  Clock::time_point armed_at() const;

 private:
  // Shared with the timer's pending completion, which may run after this object is gone (the
  // socket is then detached and nothing is touched).
  struct State;
  static void Arm(const std::shared_ptr<State>& state, Clock::time_point at);

  std::shared_ptr<State> state_;
};

}  // namespace berry::deadline
