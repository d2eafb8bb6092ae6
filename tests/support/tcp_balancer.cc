#include "tests/support/tcp_balancer.h"

#include <array>
#include <utility>

#include <boost/asio.hpp>

#include "absl/strings/str_cat.h"
#include "tests/support/http_client.h"

namespace berry::test_support {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

struct TcpBalancer::State {
  net::io_context io{1};
  tcp::acceptor acceptor{io};
};

namespace {

// Both sockets of one relayed connection.
struct Relayed {
  explicit Relayed(tcp::socket from_client) : client(std::move(from_client)), upstream(client.get_executor()) {}
  tcp::socket client;
  tcp::socket upstream;

  void Close() {
    boost::system::error_code ignored;
    client.close(ignored);
    upstream.close(ignored);
  }
};

net::awaitable<void> WaitWhile(const std::atomic<bool>& flag) {
  net::steady_timer timer(co_await net::this_coro::executor);
  while (flag.load()) {
    timer.expires_after(10ms);
    co_await timer.async_wait(net::use_awaitable);
  }
}

// One direction of a relayed connection. Nothing moves, not even an end, while blackholed.
net::awaitable<void> Pipe(std::shared_ptr<Relayed> relayed, bool to_client,
                          const std::atomic<bool>& blackhole) {
  tcp::socket& from = to_client ? relayed->upstream : relayed->client;
  tcp::socket& to = to_client ? relayed->client : relayed->upstream;
  std::array<char, 16384> buffer;
  for (;;) {
    boost::system::error_code ec;
    const size_t n = co_await from.async_read_some(net::buffer(buffer),
                                                   net::redirect_error(net::use_awaitable, ec));
    co_await WaitWhile(blackhole);
    if (ec == net::error::eof) {
      to.shutdown(tcp::socket::shutdown_send, ec);  // pass the FIN on
      co_return;
    }
    if (ec) {
      relayed->Close();
      co_return;
    }
    co_await net::async_write(to, net::buffer(buffer.data(), n),
                              net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      relayed->Close();
      co_return;
    }
  }
}

}  // namespace

struct TcpBalancerAccess {
  // The ready targets' ports, starting at the round-robin position (which then moves on).
  static std::vector<uint16_t> Candidates(TcpBalancer& self) {
    absl::MutexLock lock(&self.mu_);
    std::vector<uint16_t> ports;
    const size_t n = self.targets_.size();
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (self.next_ + k) % n;
      if (self.ready_[i] && self.targets_[i].port != 0) {
        ports.push_back(self.targets_[i].port);
      }
    }
    self.next_ = n == 0 ? 0 : (self.next_ + 1) % n;
    return ports;
  }

  static net::awaitable<void> Serve(TcpBalancer& self, tcp::socket client) {
    co_await WaitWhile(self.blackhole_);  // a connect into a dead path goes nowhere
    auto relayed = std::make_shared<Relayed>(std::move(client));
    const std::vector<uint16_t> candidates = Candidates(self);
    for (const uint16_t port : candidates) {
      boost::system::error_code ec;
      relayed->upstream = tcp::socket(relayed->client.get_executor());
      co_await relayed->upstream.async_connect(
          tcp::endpoint(net::ip::address_v4::loopback(), port),
          net::redirect_error(net::use_awaitable, ec));
      if (!ec) {
        const auto executor = relayed->client.get_executor();
        net::co_spawn(executor, Pipe(relayed, false, self.blackhole_), net::detached);
        net::co_spawn(executor, Pipe(relayed, true, self.blackhole_), net::detached);
        co_return;
      }
    }
    ++self.unserved_;
    relayed->Close();
  }

  static net::awaitable<void> Accept(TcpBalancer& self) {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket client = co_await self.state_->acceptor.async_accept(
          net::redirect_error(net::use_awaitable, ec));
      if (ec) {
        if (ec == net::error::operation_aborted || !self.state_->acceptor.is_open()) {
          co_return;
        }
        net::steady_timer pause(self.state_->io, 10ms);  // e.g. out of descriptors: no spin
        co_await pause.async_wait(net::redirect_error(net::use_awaitable, ec));
        continue;
      }
      ++self.connections_;
      net::co_spawn(self.state_->io, Serve(self, std::move(client)), net::detached);
    }
  }
};

absl::StatusOr<std::unique_ptr<TcpBalancer>> TcpBalancer::Start(
    std::vector<Target> targets, std::chrono::milliseconds probe_every) {
  std::unique_ptr<TcpBalancer> balancer(new TcpBalancer());
  balancer->probe_every_ = probe_every;
  balancer->state_ = std::make_shared<State>();
  for (const Target& target : targets) {
    balancer->ready_.push_back(target.ready_path.empty());
    balancer->failures_.push_back(0);
  }
  balancer->targets_ = std::move(targets);
  boost::system::error_code ec;
  tcp::acceptor& acceptor = balancer->state_->acceptor;
  const tcp::endpoint endpoint(net::ip::address_v4::loopback(), 0);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return absl::UnavailableError(absl::StrCat("balancer cannot listen: ", ec.message()));
  }
  balancer->port_ = acceptor.local_endpoint().port();
  net::co_spawn(balancer->state_->io, TcpBalancerAccess::Accept(*balancer), net::detached);
  TcpBalancer* self = balancer.get();
  balancer->loop_ = std::thread([self] { self->state_->io.run(); });
  balancer->prober_ = std::thread([self] { self->Probe(); });
  return balancer;
}

TcpBalancer::~TcpBalancer() {
  stopping_.store(true);
  if (prober_.joinable()) {
    prober_.join();
  }
  if (state_ != nullptr) {
    state_->io.stop();
  }
  if (loop_.joinable()) {
    loop_.join();
  }
  state_.reset();  // closes the listener and every relayed connection
}

std::string TcpBalancer::address() const { return absl::StrCat("127.0.0.1:", port_); }
std::string TcpBalancer::url() const { return absl::StrCat("http://127.0.0.1:", port_); }

void TcpBalancer::SetTarget(size_t index, Target target) {
  absl::MutexLock lock(&mu_);
  ready_[index] = target.ready_path.empty();
  failures_[index] = 0;
  targets_[index] = std::move(target);
}

bool TcpBalancer::ready(size_t index) const {
  absl::MutexLock lock(&mu_);
  return ready_[index];
}

void TcpBalancer::Blackhole(bool on) { blackhole_.store(on); }

void TcpBalancer::Probe() {
  while (!stopping_.load()) {
    std::vector<Target> targets;
    {
      absl::MutexLock lock(&mu_);
      targets = targets_;
    }
    for (size_t i = 0; i < targets.size(); ++i) {
      if (targets[i].ready_path.empty() || targets[i].port == 0) {
        continue;
      }
      HttpRequest request = HttpRequest::Get(
          absl::StrCat("http://127.0.0.1:", targets[i].port, targets[i].ready_path));
      request.timeout = 500ms;
      const absl::StatusOr<HttpResponse> response = Fetch(request);
      const bool ok = response.ok() && response->status == 200;
      absl::MutexLock lock(&mu_);
      if (targets_[i].port != targets[i].port) {
        continue;  // replaced while probing
      }
      failures_[i] = ok ? 0 : failures_[i] + 1;
      if (ok) {
        ready_[i] = true;
      } else if (failures_[i] >= kFailureThreshold) {
        ready_[i] = false;
      }
    }
    for (auto slept = 0ms; slept < probe_every_ && !stopping_.load(); slept += 10ms) {
      std::this_thread::sleep_for(10ms);
    }
  }
}

}  // namespace berry::test_support
