#include "common/http/deadline.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>

namespace berry::deadline::deadline_test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using OnExpiry = SocketDeadline::OnExpiry;
namespace net = boost::asio;
using net::ip::tcp;

// A connected loopback pair: `ours` carries the deadline, `peer` is the other end.
class SocketDeadlineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tcp::acceptor acceptor(io_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    ours_.connect(acceptor.local_endpoint());
    acceptor.accept(peer_);
  }

  // Runs the event loop until `done` or `timeout`; true when done.
  bool RunUntil(const std::function<bool()>& done, Clock::duration timeout = 5s) {
    const auto until = Clock::now() + timeout;
    while (!done() && Clock::now() < until) {
      if (io_.stopped()) {
        io_.restart();  // it stops whenever it runs out of work
      }
      io_.run_one_for(10ms);
    }
    return done();
  }

  // Starts a read on `ours_` and records how it ended.
  void StartRead() {
    read_result_.reset();
    ours_.async_read_some(net::buffer(read_buffer_), [this](boost::system::error_code ec, size_t) {
      read_result_ = ec;
      read_done_at_ = Clock::now();
    });
  }

  net::io_context io_;
  tcp::socket ours_{io_};
  tcp::socket peer_{io_};
  char read_buffer_[64];
  std::optional<boost::system::error_code> read_result_;
  Clock::time_point read_done_at_;
};

TEST_F(SocketDeadlineTest, ReadPendingPastTheDeadlineFailsWithTimeoutAndTheSocketStaysOpen) {
  SocketDeadline deadline(ours_, OnExpiry::kCancel);
  const auto start = Clock::now();
  deadline.ExpiresAfter(50ms);
  StartRead();
  ASSERT_TRUE(RunUntil([&] { return read_result_.has_value(); }));
  EXPECT_GE(read_done_at_ - start, 50ms);
  EXPECT_TRUE(deadline.expired());
  EXPECT_EQ(deadline.Translate(*read_result_), boost::beast::error::timeout);
  EXPECT_TRUE(ours_.is_open());  // a 408 could still be written

  // A new deadline starts a new period: a read that waits past the old one is not failed by it.
  deadline.ExpiresAfter(5s);
  EXPECT_FALSE(deadline.expired());
  StartRead();
  io_.restart();
  io_.run_for(100ms);
  EXPECT_FALSE(read_result_.has_value());
  net::write(peer_, net::buffer("x", 1));
  ASSERT_TRUE(RunUntil([&] { return read_result_.has_value(); }));
  EXPECT_FALSE(*read_result_);
  EXPECT_FALSE(deadline.expired());
}

TEST_F(SocketDeadlineTest, CloseOnExpiryClosesTheSocketForGood) {
  SocketDeadline deadline(ours_, OnExpiry::kClose);
  deadline.ExpiresAfter(30ms);
  StartRead();
  ASSERT_TRUE(RunUntil([&] { return read_result_.has_value(); }));
  EXPECT_EQ(deadline.Translate(*read_result_), boost::beast::error::timeout);
  EXPECT_FALSE(ours_.is_open());
  // A closed socket stays expired: nobody can mistake it for a usable one.
  deadline.ExpiresAfter(5s);
  EXPECT_TRUE(deadline.expired());
  deadline.ExpiresNever();
  EXPECT_TRUE(deadline.expired());
}

TEST_F(SocketDeadlineTest, ActsWhenItsTimeComesEvenWithNothingPending) {
  // Unlike tcp_stream's: a deadline is not tied to an operation in flight.
  SocketDeadline deadline(ours_, OnExpiry::kClose);
  deadline.ExpiresAfter(20ms);
  ASSERT_TRUE(RunUntil([&] { return deadline.expired(); }));
  EXPECT_FALSE(ours_.is_open());
}

TEST_F(SocketDeadlineTest, ADeadlineMovedLaterIsNotCutShortByTheEarlierTimer) {
  SocketDeadline deadline(ours_, OnExpiry::kCancel);
  const auto start = Clock::now();
  deadline.ExpiresAfter(30ms);
  const auto first_expiry = deadline.armed_at();
  deadline.ExpiresAfter(200ms);
  // Later: the timer is left as it is (no timer operation) ...
  EXPECT_EQ(deadline.armed_at(), first_expiry);
  StartRead();
  // ... and when it fires it re-arms for the rest instead of cutting the read off.
  ASSERT_TRUE(RunUntil([&] { return deadline.armed() && deadline.armed_at() > first_expiry; }));
  EXPECT_FALSE(read_result_.has_value());
  ASSERT_TRUE(RunUntil([&] { return read_result_.has_value(); }));
  EXPECT_GE(read_done_at_ - start, 200ms);
  EXPECT_EQ(deadline.Translate(*read_result_), boost::beast::error::timeout);
}

TEST_F(SocketDeadlineTest, ADeadlineMovedEarlierReArmsTheTimerAtOnce) {
  SocketDeadline deadline(ours_, OnExpiry::kCancel);
  const auto start = Clock::now();
  deadline.ExpiresAfter(60s);
  deadline.ExpiresAfter(40ms);
  EXPECT_LT(deadline.armed_at(), start + 1s);
  StartRead();
  ASSERT_TRUE(RunUntil([&] { return read_result_.has_value(); }));
  EXPECT_LT(read_done_at_ - start, 3s);
  EXPECT_EQ(deadline.Translate(*read_result_), boost::beast::error::timeout);
}

TEST_F(SocketDeadlineTest, ExpiresNeverLetsTheOperationWaitPastTheOldDeadline) {
  SocketDeadline deadline(ours_, OnExpiry::kCancel);
  deadline.ExpiresAfter(30ms);
  deadline.ExpiresNever();
  StartRead();
  // The timer fires once, finds no deadline and stays disarmed.
  ASSERT_TRUE(RunUntil([&] { return !deadline.armed(); }));
  io_.restart();
  io_.run_for(50ms);
  EXPECT_FALSE(read_result_.has_value());
  EXPECT_FALSE(deadline.expired());
  net::write(peer_, net::buffer("x", 1));
  ASSERT_TRUE(RunUntil([&] { return read_result_.has_value(); }));
  EXPECT_FALSE(*read_result_);
}

TEST_F(SocketDeadlineTest, TranslateMapsErrorsToTimeoutOnlyOnceExpired) {
  SocketDeadline deadline(ours_, OnExpiry::kCancel);
  deadline.ExpiresAfter(5s);
  EXPECT_FALSE(deadline.Translate({}));
  EXPECT_EQ(deadline.Translate(net::error::connection_reset), net::error::connection_reset);

  deadline.ExpiresAfter(10ms);
  ASSERT_TRUE(RunUntil([&] { return deadline.expired(); }));
  // An operation that succeeded just before the deadline struck keeps its success; any error
  // after it is the deadline's doing.
  EXPECT_FALSE(deadline.Translate({}));
  EXPECT_EQ(deadline.Translate(net::error::operation_aborted), boost::beast::error::timeout);
  EXPECT_EQ(deadline.Translate(net::error::connection_reset), boost::beast::error::timeout);
}

TEST_F(SocketDeadlineTest, DestroyedWithItsTimerPendingLeavesTheSocketAlone) {
  auto deadline = std::make_unique<SocketDeadline>(ours_, OnExpiry::kClose);
  deadline->ExpiresAfter(20ms);
  deadline.reset();
  StartRead();
  io_.restart();
  io_.run_for(100ms);
  EXPECT_TRUE(ours_.is_open());  // the timer did not close the socket after its owner was gone
  EXPECT_FALSE(read_result_.has_value());
}

}  // namespace
}  // namespace berry::deadline::deadline_test
