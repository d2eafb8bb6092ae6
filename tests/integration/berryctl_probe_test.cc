// `berryctl probe URL`: the health-check command of the container image (no curl or wget in it).
// It must say "healthy" only for a 200 within the timeout, and never hang on a silent server.
#include <sys/socket.h>

#include <chrono>
#include <sstream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "control-plane/berryctl.h"
#include "tests/support/mock_upstream.h"

namespace berry::berryctl_probe_test {
namespace {

using Clock = std::chrono::steady_clock;
using test_support::MockUpstream;

struct ProbeRun {
  int code;
  std::string out;
  std::string err;
};

ProbeRun Probe(std::vector<std::string> args) {
  std::ostringstream out;
  std::ostringstream err;
  args.insert(args.begin(), "probe");
  const int code = berryctl::RunBerryctl(args, out, err);
  return {code, out.str(), err.str()};
}

std::unique_ptr<MockUpstream> StartMock() {
  auto mock = MockUpstream::Create();
  EXPECT_TRUE(mock.ok()) << mock.status();
  return mock.ok() ? *std::move(mock) : nullptr;
}

TEST(BerryctlProbe, TwoHundredExitsZero) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  const ProbeRun run = Probe({absl::StrCat("http://127.0.0.1:", mock->port(), "/v1/models")});
  EXPECT_EQ(run.code, berryctl::kExitOk) << run.err;
  EXPECT_NE(run.out.find("200"), std::string::npos) << run.out;
}

TEST(BerryctlProbe, AnyOtherStatusExitsOneAndNamesIt) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  const ProbeRun run = Probe({absl::StrCat("http://127.0.0.1:", mock->port(), "/v1/models/absent")});
  EXPECT_EQ(run.code, berryctl::kExitFailed);
  EXPECT_NE(run.err.find("404"), std::string::npos) << run.err;
}

TEST(BerryctlProbe, RefusedConnectionExitsThree) {
  uint16_t port = 0;
  {
    // A port that was free a moment ago and has no listener now.
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor acceptor(
        io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    port = acceptor.local_endpoint().port();
  }
  const ProbeRun run = Probe({absl::StrCat("http://127.0.0.1:", port, "/healthz")});
  EXPECT_EQ(run.code, berryctl::kExitUnreachable);
  EXPECT_NE(run.err.find("cannot connect"), std::string::npos) << run.err;
}

TEST(BerryctlProbe, ServerThatNeverAnswersTimesOutWithinTheTimeout) {
  // The kernel completes connections on a listening socket nobody accepts from: the probe
  // connects, writes, and then waits for an answer that never comes.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor silent(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const auto start = Clock::now();
  const ProbeRun run = Probe({"--timeout", "1",
                         absl::StrCat("http://127.0.0.1:", silent.local_endpoint().port(), "/")});
  const auto took = Clock::now() - start;
  EXPECT_EQ(run.code, berryctl::kExitUnreachable);
  EXPECT_NE(run.err.find("no answer within 1000 ms"), std::string::npos) << run.err;
  EXPECT_GE(took, std::chrono::milliseconds(900));
  EXPECT_LT(took, std::chrono::seconds(5));
}

TEST(BerryctlProbe, HttpsAndMalformedUrlsAreUsageErrors) {
  EXPECT_EQ(Probe({"https://127.0.0.1:1/healthz"}).code, berryctl::kExitUsage);
  EXPECT_EQ(Probe({"not a url"}).code, berryctl::kExitUsage);
  EXPECT_EQ(Probe({}).code, berryctl::kExitUsage);
}

}  // namespace
}  // namespace berry::berryctl_probe_test
