#include "common/cli/flags.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <string>
#include <vector>

#include "common/cli/process.h"

namespace berry::cli::flags_test {
namespace {

// argv from strings; the vector keeps them alive.
struct Argv {
  explicit Argv(std::vector<std::string> args) : args(std::move(args)) {
    for (std::string& arg : this->args) {
      pointers.push_back(arg.data());
    }
  }
  int argc() const { return static_cast<int>(pointers.size()); }
  char** argv() { return pointers.data(); }
  std::vector<std::string> args;
  std::vector<char*> pointers;
};

struct Flags {
  std::string config;
  std::string listen = "127.0.0.1:8080";
  int64_t threads = 2;
  bool insecure = false;
};

FlagSet Declare(Flags& flags) {
  FlagSet set("prog", "A test program.");
  set.String("config", &flags.config, "config file", "BERRY_TEST_CONFIG");
  set.String("listen", &flags.listen, "address");
  set.Int("threads", &flags.threads, "workers", "", 1, 64);
  set.Bool("insecure", &flags.insecure, "plaintext");
  return set;
}

TEST(FlagSet, ParsesSeparateAndEqualsForms) {
  Flags flags;
  FlagSet set = Declare(flags);
  Argv argv({"prog", "--config", "a.toml", "--threads=4", "--insecure"});
  ASSERT_TRUE(set.Parse(argv.argc(), argv.argv()).ok());
  EXPECT_EQ(flags.config, "a.toml");
  EXPECT_EQ(flags.threads, 4);
  EXPECT_TRUE(flags.insecure);
  EXPECT_EQ(flags.listen, "127.0.0.1:8080");  // default kept
}

TEST(FlagSet, UnknownFlagIsAnErrorNamingIt) {
  Flags flags;
  FlagSet set = Declare(flags);
  Argv argv({"prog", "--colour", "red"});
  const absl::Status status = set.Parse(argv.argc(), argv.argv());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("--colour"), absl::string_view::npos);
}

TEST(FlagSet, MissingValueIsAnError) {
  Flags flags;
  FlagSet set = Declare(flags);
  Argv argv({"prog", "--config"});
  EXPECT_FALSE(set.Parse(argv.argc(), argv.argv()).ok());
}

TEST(FlagSet, IntegerOutOfRangeIsAnErrorWithTheRange) {
  Flags flags;
  FlagSet set = Declare(flags);
  Argv argv({"prog", "--threads", "0"});
  const absl::Status status = set.Parse(argv.argc(), argv.argv());
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("between 1 and 64"), absl::string_view::npos);
}

TEST(FlagSet, NonIntegerIsAnError) {
  Flags flags;
  FlagSet set = Declare(flags);
  Argv argv({"prog", "--threads", "many"});
  EXPECT_FALSE(set.Parse(argv.argc(), argv.argv()).ok());
}

TEST(FlagSet, EnvironmentGivesTheDefaultAndTheCommandLineWins) {
  setenv("BERRY_TEST_CONFIG", "from-env.toml", 1);
  {
    Flags flags;
    FlagSet set = Declare(flags);
    Argv argv({"prog"});
    ASSERT_TRUE(set.Parse(argv.argc(), argv.argv()).ok());
    EXPECT_EQ(flags.config, "from-env.toml");
  }
  {
    Flags flags;
    FlagSet set = Declare(flags);
    Argv argv({"prog", "--config=cli.toml"});
    ASSERT_TRUE(set.Parse(argv.argc(), argv.argv()).ok());
    EXPECT_EQ(flags.config, "cli.toml");
  }
  unsetenv("BERRY_TEST_CONFIG");
}

TEST(FlagSet, HelpStopsParsingAndListsEveryFlag) {
  Flags flags;
  FlagSet set = Declare(flags);
  Argv argv({"prog", "--help", "--bogus"});
  ASSERT_TRUE(set.Parse(argv.argc(), argv.argv()).ok());
  EXPECT_TRUE(set.help_requested());
  const std::string help = set.Help();
  for (const char* name : {"--config", "--listen", "--threads", "--insecure", "--help"}) {
    EXPECT_NE(help.find(name), std::string::npos) << name;
  }
  EXPECT_NE(help.find("(default 127.0.0.1:8080)"), std::string::npos);
  EXPECT_NE(help.find("[env BERRY_TEST_CONFIG]"), std::string::npos);
}

TEST(FlagSet, PositionalArgumentsAreCollected) {
  Flags flags;
  FlagSet set = Declare(flags);
  Argv argv({"prog", "get", "--threads", "3", "config", "--", "--not-a-flag"});
  ASSERT_TRUE(set.Parse(argv.argc(), argv.argv()).ok());
  EXPECT_EQ(set.positional(), (std::vector<std::string>{"get", "config", "--not-a-flag"}));
  EXPECT_EQ(flags.threads, 3);
}

TEST(IsLoopbackAddress, OnlyAddressesThatStayOnThisMachine) {
  for (const char* local : {"127.0.0.1:50051", "127.8.9.10:1", "localhost:50051", "[::1]:50051",
                            "dns:///localhost:50051", "ipv4:127.0.0.1:50051",
                            "unix:/run/berry.sock", "unix-abstract:berry"}) {
    EXPECT_TRUE(IsLoopbackAddress(local)) << local;
  }
  for (const char* remote :
       {"10.1.2.3:50051", "berry-control-plane:50051", "dns:///berry-control-plane:50051",
        "[2001:db8::1]:50051", "0.0.0.0:50051", "128.0.0.1:50051", "localhost.example.com:1", "",
        "ipv6:[::2]:1"}) {
    EXPECT_FALSE(IsLoopbackAddress(remote)) << remote;
  }
}

TEST(ParseHostPort, SplitsHostAndPort) {
  auto parsed = ParseHostPort("127.0.0.1:8080", "--listen");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->first, "127.0.0.1");
  EXPECT_EQ(parsed->second, 8080);
}

TEST(ParseHostPort, RemovesIpv6Brackets) {
  auto parsed = ParseHostPort("[::1]:0", "--listen");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->first, "::1");
  EXPECT_EQ(parsed->second, 0);
}

TEST(ParseHostPort, RejectsMissingPortBadPortAndEmptyHost) {
  for (const char* bad : {"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":80"}) {
    auto parsed = ParseHostPort(bad, "--listen");
    EXPECT_FALSE(parsed.ok()) << bad;
    if (!parsed.ok()) {
      EXPECT_NE(parsed.status().message().find("--listen"), absl::string_view::npos) << bad;
    }
  }
}

TEST(ReadFile, MissingFileIsNotFoundNamingIt) {
  auto text = ReadFile("/nonexistent/berry/file");
  EXPECT_EQ(text.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(text.status().message().find("/nonexistent/berry/file"), absl::string_view::npos);
}

}  // namespace
}  // namespace berry::cli::flags_test

namespace berry::cli::flags_test {
namespace {

TEST(RaiseOpenFileLimit, RaisesTheSoftLimitToTheHardOne) {
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  ASSERT_GT(before.rlim_max, rlim_t{64}) << "the test lowers the soft limit to 64 first";
  rlimit lowered = before;
  lowered.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);

  const uint64_t now = RaiseOpenFileLimit();

  rlimit after{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(after.rlim_cur, before.rlim_max);
  EXPECT_EQ(now, after.rlim_max == RLIM_INFINITY ? UINT64_MAX : after.rlim_max);
  EXPECT_EQ(RaiseOpenFileLimit(), now) << "a second call changes nothing";
}

}  // namespace
}  // namespace berry::cli::flags_test
