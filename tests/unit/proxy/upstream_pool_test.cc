#include "data-plane/upstream/upstream_pool.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace berry::upstream::upstream_pool_test {
namespace {

using namespace std::chrono_literals;

// The pool's clock in these tests.
std::chrono::steady_clock::time_point fake_now{std::chrono::hours(1)};
std::chrono::steady_clock::time_point FakeNow() { return fake_now; }

// A pool on a local listener that accepts and holds connections.
class PoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tls = TlsContexts::Create();
    ASSERT_TRUE(tls.ok()) << tls.status();
    PoolOptions options;
    options.now = &FakeNow;
    pool_ = std::make_unique<Pool>(io_, *tls, options);
    auto endpoint = Endpoint::Parse(
        "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/v1", true);
    ASSERT_TRUE(endpoint.ok()) << endpoint.status();
    endpoint_ = *endpoint;
  }

  std::unique_ptr<Connection> Connect() { return Connect(endpoint_); }
  std::unique_ptr<Connection> Connect(const Endpoint& endpoint) {
    std::unique_ptr<Connection> connection;
    net::co_spawn(
        io_,
        [&]() -> net::awaitable<void> {
          ConnectError error = ConnectError::kNone;
          auto connected = co_await pool_->Connect(endpoint, 5s, &error);
          if (connected.ok()) {
            connection = *std::move(connected);
          }
        },
        net::detached);
    io_.restart();
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (connection == nullptr && std::chrono::steady_clock::now() < until && !io_.stopped()) {
      io_.run_one_for(10ms);
    }
    net::ip::tcp::socket peer(io_);
    acceptor_.accept(peer);
    peers_.push_back(std::move(peer));
    return connection;
  }

  net::io_context io_;
  net::ip::tcp::acceptor acceptor_{io_, {net::ip::make_address("127.0.0.1"), 0}};
  std::vector<net::ip::tcp::socket> peers_;
  std::unique_ptr<Pool> pool_;
  Endpoint endpoint_;
};

TEST_F(PoolTest, AReleasedConnectionIsHandedOutAgain) {
  auto connection = Connect();
  ASSERT_NE(connection, nullptr);
  EXPECT_FALSE(connection->reused());
  pool_->Release(std::move(connection));
  EXPECT_EQ(pool_->idle_count(), 1u);
  auto again = pool_->TakeIdle(endpoint_);
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(again->reused());
  EXPECT_EQ(pool_->idle_count(), 0u);
  EXPECT_EQ(pool_->TakeIdle(endpoint_), nullptr);
}

TEST_F(PoolTest, ClosedOrTimedOutConnectionsAreNotKept) {
  auto closed = Connect();
  ASSERT_NE(closed, nullptr);
  closed->Cancel();
  pool_->Release(std::move(closed));
  EXPECT_EQ(pool_->idle_count(), 0u);

  // A deadline that passed closed the socket, even with nothing pending on it.
  auto timed_out = Connect();
  ASSERT_NE(timed_out, nullptr);
  timed_out->ExpiresAfter(1ms);
  io_.restart();
  io_.run_for(100ms);
  pool_->Release(std::move(timed_out));
  EXPECT_EQ(pool_->idle_count(), 0u);
}

// An endpoint traffic left (a provider removed from the table) keeps no idle sockets past the
// timeout: the next Release or TakeIdle of any endpoint sweeps them, at most once a second.
TEST_F(PoolTest, IdleConnectionsOfAnEndpointNoLongerUsedAreClosedByTheSweep) {
  auto other = Endpoint::Parse(
      "http://localhost:" + std::to_string(acceptor_.local_endpoint().port()) + "/v1", true);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_NE(other->pool_key, endpoint_.pool_key);
  auto gone = Connect(*other);
  ASSERT_NE(gone, nullptr);
  pool_->Release(std::move(gone));
  auto kept = Connect();
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(pool_->idle_count(), 1u);

  fake_now += 59s;  // still young: the sweep keeps it
  pool_->Release(std::move(kept));
  EXPECT_EQ(pool_->idle_count(), 2u);

  fake_now += 2s;  // 61 s idle; the other one 2 s
  EXPECT_EQ(pool_->TakeIdle(*other), nullptr);
  EXPECT_EQ(pool_->idle_count(), 1u);
  auto again = pool_->TakeIdle(endpoint_);
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(again->reused());
}

}  // namespace
}  // namespace berry::upstream::upstream_pool_test
