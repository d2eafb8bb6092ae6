// berry-bench-client: the load generator of the benchmark harness. Parses flags, runs one load
// pattern (bench_client_load.h) on this thread, and prints exactly one JSON object on one line
// on stdout. Exit status: 0 the run was done (whatever it measured), 1 it could not be done
// (e.g. nothing accepts connections), 2 bad flags.
#include <sys/resource.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/bench_client_http.h"
#include "bench/bench_client_load.h"
#include "bench/bench_client_stats.h"
#include "common/cli/process.h"

namespace {

namespace net = boost::asio;
using berry::bench::JsonLine;
using berry::bench::NanosToMicros;

// `<prefix>p50_us` … `<prefix>max_us` and `<prefix>mean_us` of a distribution of nanoseconds.
void AddMicros(JsonLine& json, const std::string& prefix, const berry::bench::Distribution& d) {
  json.Int(prefix + "p50_us", NanosToMicros(d.p50))
      .Int(prefix + "p90_us", NanosToMicros(d.p90))
      .Int(prefix + "p99_us", NanosToMicros(d.p99))
      .Int(prefix + "p999_us", NanosToMicros(d.p999))
      .Int(prefix + "max_us", NanosToMicros(d.max))
      .Double(prefix + "mean_us", d.mean / 1e3, 1);
}

constexpr std::string_view kUsage = R"(usage: berry-bench-client rate|stream --target URL [flags]

Load generator for Berry's benchmarks. Prints one JSON object (one line) on stdout when done;
errors go to stderr. Exit 0 when the run was done, 1 when it could not be (e.g. the target
refuses connections), 2 on bad flags.

common flags:
  --target http://HOST:PORT/PATH   where to send (plain HTTP/1.1)
  --body FILE                      request body: POST with Content-Type: application/json
                                   (without it: GET)
  --header "Name: value"           extra request header, sent verbatim; repeatable
  --timeout-s T                    rate: how long to wait for outstanding answers after the
                                   last scheduled send; stream: limit for the whole run
                                   (default 60)

rate --rate R --duration S --connections C [--warmup W]
  Open-loop load: requests are scheduled exactly 1/R s apart for S s, after W s of warmup at
  the same rate that is not recorded (default 1). They go over C keep-alive connections, one
  request outstanding per connection; a request with no free connection waits in a FIFO.
  Latency runs from the scheduled send time to the end of the response (no coordinated
  omission) and its percentiles cover 2xx answers. A connection the server closes is reopened.
  Output: mode, rate, duration_s, warmup_s, connections, requests (scheduled in the measured
  period), ok (2xx), non2xx, errors (transport errors, and no answer by the timeout),
  achieved_rps (answers per second from the first measured send to the last answer, or over
  S if longer), p50_us, p90_us, p99_us, p999_us, max_us, mean_us, reconnects (attempts to
  reopen a connection), cpu_s (the client's own CPU time), first_error (only with errors).

stream --streams N [--connect-concurrency K] [--ramp-ms M]
  Opens N connections (at most K connects in flight, default 512), then sends N streaming
  requests at once, or spread evenly over M ms with --ramp-ms (so that events of different
  streams do not arrive in lockstep), and reads the Server-Sent Events. A stream completes when it sees
  data: [DONE]; it fails on a transport error, a non-200 status, ending without [DONE], or the
  timeout. Events with "mock_sent_ns":NS (steady-clock ns when the mock upstream wrote them) are
  timed: delay = receipt time - NS. Output: mode, streams, completed, failed, events (data
  events except [DONE]), timed_events, delay_p50_us, delay_p90_us, delay_p99_us,
  delay_p999_us, delay_max_us, delay_mean_us, ttfe_p50_ms, ttfe_p90_ms, ttfe_p99_ms,
  ttfe_max_ms (request sent to first event), peak_open (streams sent and not yet finished),
  connect_s (opening the connections), wall_s (first connect to the end of the last stream),
  cpu_s, first_error (only with failures).
)";

struct Flags {
  std::string mode;
  std::string target;
  std::optional<std::string> body_file;
  std::vector<std::string> headers;
  double timeout_s = 60;
  // rate
  double rate = 0;
  double duration_s = 0;
  double warmup_s = 1;
  int64_t connections = 0;
  // stream
  int64_t streams = 0;
  int64_t connect_concurrency = 512;
  int64_t ramp_ms = 0;
};

bool ParseDouble(std::string_view text, double* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size() && std::isfinite(*out);
}

bool ParseInt(std::string_view text, int64_t* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

absl::Status ParseFlags(int argc, char** argv, Flags* flags) {
  if (argc < 2) {
    return absl::InvalidArgumentError("missing mode: rate or stream");
  }
  flags->mode = argv[1];
  if (flags->mode != "rate" && flags->mode != "stream") {
    return absl::InvalidArgumentError("unknown mode '" + flags->mode + "': rate or stream");
  }
  const bool rate = flags->mode == "rate";
  bool have_rate = false;
  bool have_duration = false;
  bool have_connections = false;
  bool have_streams = false;
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (!arg.starts_with("--")) {
      return absl::InvalidArgumentError("unexpected argument '" + std::string(arg) + "'");
    }
    std::string_view name = arg.substr(2);
    std::optional<std::string_view> inline_value;
    if (const size_t eq = name.find('='); eq != std::string_view::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const std::string flag = "--" + std::string(name);
    std::string_view value;
    if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(flag + " needs a value");
    }
    auto positive = [&](double* out) {
      if (!ParseDouble(value, out) || *out <= 0) {
        return absl::InvalidArgumentError(flag + " wants a number > 0");
      }
      return absl::OkStatus();
    };
    auto count = [&](int64_t* out, int64_t max) {
      if (!ParseInt(value, out) || *out < 1 || *out > max) {
        return absl::InvalidArgumentError(flag + " wants an integer from 1 to " +
                                          std::to_string(max));
      }
      return absl::OkStatus();
    };
    auto only = [&](bool for_rate) {
      if (rate != for_rate) {
        return absl::InvalidArgumentError(flag + " is a " + (for_rate ? "rate" : "stream") +
                                          " mode flag");
      }
      return absl::OkStatus();
    };
    absl::Status status;
    if (name == "target") {
      flags->target = std::string(value);
    } else if (name == "body") {
      flags->body_file = std::string(value);
    } else if (name == "header") {
      status = berry::bench::CheckHeaderLine(value);
      flags->headers.emplace_back(value);
    } else if (name == "timeout-s") {
      status = positive(&flags->timeout_s);
    } else if (name == "rate") {
      status = only(true);
      if (status.ok()) {
        status = positive(&flags->rate);
        have_rate = true;
      }
    } else if (name == "duration") {
      status = only(true);
      if (status.ok()) {
        status = positive(&flags->duration_s);
        have_duration = true;
      }
    } else if (name == "warmup") {
      status = only(true);
      if (status.ok() && (!ParseDouble(value, &flags->warmup_s) || flags->warmup_s < 0)) {
        status = absl::InvalidArgumentError("--warmup wants a number >= 0");
      }
    } else if (name == "connections") {
      status = only(true);
      if (status.ok()) {
        status = count(&flags->connections, 1'000'000);
        have_connections = true;
      }
    } else if (name == "streams") {
      status = only(false);
      if (status.ok()) {
        status = count(&flags->streams, 1'000'000);
        have_streams = true;
      }
    } else if (name == "connect-concurrency") {
      status = only(false);
      if (status.ok()) {
        status = count(&flags->connect_concurrency, 1'000'000);
      }
    } else if (name == "ramp-ms") {
      status = only(false);
      if (status.ok()) {
        status = count(&flags->ramp_ms, 3'600'000);
      }
    } else {
      status = absl::InvalidArgumentError("unknown flag " + flag);
    }
    if (!status.ok()) {
      return status;
    }
  }
  if (flags->target.empty()) {
    return absl::InvalidArgumentError("--target is required");
  }
  if (rate) {
    if (!have_rate || !have_duration || !have_connections) {
      return absl::InvalidArgumentError("rate mode needs --rate, --duration and --connections");
    }
    if (std::llround(flags->rate * flags->duration_s) < 1) {
      return absl::InvalidArgumentError("--rate x --duration schedules no request");
    }
    if (flags->rate * (flags->duration_s + flags->warmup_s) > 1e9) {
      return absl::InvalidArgumentError("--rate x (--duration + --warmup) is over 1e9 requests");
    }
  } else if (!have_streams) {
    return absl::InvalidArgumentError("stream mode needs --streams");
  }
  return absl::OkStatus();
}

uint64_t FileLimit() {
  rlimit limit{};
  return getrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : 0;
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

absl::StatusOr<net::ip::tcp::endpoint> Resolve(const berry::bench::Target& target) {
  boost::system::error_code ec;
  const net::ip::address address = net::ip::make_address(target.host, ec);
  if (!ec) {
    return net::ip::tcp::endpoint(address, target.port);
  }
  net::io_context io;
  net::ip::tcp::resolver resolver(io);
  auto results = resolver.resolve(target.host, std::to_string(target.port), ec);
  if (ec || results.empty()) {
    return absl::UnavailableError("cannot resolve " + target.host + ": " +
                                  (ec ? ec.message() : std::string("no address")));
  }
  return results.begin()->endpoint();
}

std::string ShortError(std::string text) {
  constexpr size_t kMax = 160;
  if (text.size() > kMax) {
    text.resize(kMax);
    text += "...";
  }
  return text;
}

void PrintLine(std::string line) {
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

int Fail(int code, std::string_view message) {
  std::fprintf(stderr, "berry-bench-client: %.*s\n", static_cast<int>(message.size()),
               message.data());
  return code;
}

int RunRateMode(const Flags& flags, const net::ip::tcp::endpoint& endpoint, std::string request) {
  berry::bench::RateOptions options;
  options.endpoint = endpoint;
  options.request = std::move(request);
  options.rate = flags.rate;
  options.duration_s = flags.duration_s;
  options.warmup_s = flags.warmup_s;
  options.connections = static_cast<int>(flags.connections);
  options.timeout_s = flags.timeout_s;
  absl::StatusOr<berry::bench::RateResult> result = berry::bench::RunRate(options);
  if (!result.ok()) {
    return Fail(1, std::string(result.status().message()));
  }
  const berry::bench::Distribution latency = berry::bench::Summarize(result->latencies_ns);
  JsonLine json;
  json.String("mode", "rate")
      .Number("rate", flags.rate)
      .Number("duration_s", flags.duration_s)
      .Number("warmup_s", flags.warmup_s)
      .Int("connections", flags.connections)
      .Int("requests", result->requests)
      .Int("ok", result->ok)
      .Int("non2xx", result->non2xx)
      .Int("errors", result->errors)
      .Double("achieved_rps", result->achieved_rps, 1);
  AddMicros(json, "", latency);
  json.Int("reconnects", result->reconnects).Double("cpu_s", CpuSeconds(), 3);
  if (!result->first_error.empty()) {
    json.String("first_error", ShortError(result->first_error));
  }
  PrintLine(std::move(json).Finish());
  return 0;
}

int RunStreamMode(const Flags& flags, const net::ip::tcp::endpoint& endpoint, std::string request) {
  if (const uint64_t limit = FileLimit(); limit < static_cast<uint64_t>(flags.streams) + 16) {
    std::fprintf(stderr,
                 "berry-bench-client: warning: open-file limit %llu is below --streams %lld; "
                 "some connects will fail\n",
                 static_cast<unsigned long long>(limit), static_cast<long long>(flags.streams));
  }
  berry::bench::StreamOptions options;
  options.endpoint = endpoint;
  options.request = std::move(request);
  options.streams = static_cast<int>(flags.streams);
  options.connect_concurrency = static_cast<int>(flags.connect_concurrency);
  options.ramp_ms = static_cast<int>(flags.ramp_ms);
  options.timeout_s = flags.timeout_s;
  absl::StatusOr<berry::bench::StreamResult> result = berry::bench::RunStream(options);
  if (!result.ok()) {
    return Fail(1, std::string(result.status().message()));
  }
  const size_t timed = result->delays_ns.size();
  const berry::bench::Distribution delay = berry::bench::Summarize(result->delays_ns);
  const berry::bench::Distribution ttfe = berry::bench::Summarize(result->ttfe_ns);
  JsonLine json;
  json.String("mode", "stream")
      .Int("streams", result->streams)
      .Int("completed", result->completed)
      .Int("failed", result->failed)
      .Int("events", result->events)
      .Int("timed_events", static_cast<int64_t>(timed));
  AddMicros(json, "delay_", delay);
  json.Double("ttfe_p50_ms", static_cast<double>(ttfe.p50) / 1e6, 3)
      .Double("ttfe_p90_ms", static_cast<double>(ttfe.p90) / 1e6, 3)
      .Double("ttfe_p99_ms", static_cast<double>(ttfe.p99) / 1e6, 3)
      .Double("ttfe_max_ms", static_cast<double>(ttfe.max) / 1e6, 3)
      .Int("peak_open", result->peak_open)
      .Double("connect_s", result->connect_s, 3)
      .Double("wall_s", result->wall_s, 3)
      .Double("cpu_s", CpuSeconds(), 3);
  if (!result->first_error.empty()) {
    json.String("first_error", ShortError(result->first_error));
  }
  PrintLine(std::move(json).Finish());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fwrite(kUsage.data(), 1, kUsage.size(), stdout);
      return 0;
    }
  }
  Flags flags;
  if (absl::Status status = ParseFlags(argc, argv, &flags); !status.ok()) {
    std::fprintf(stderr, "berry-bench-client: %s\n\n%.*s", std::string(status.message()).c_str(),
                 static_cast<int>(kUsage.size()), kUsage.data());
    return 2;
  }
  absl::StatusOr<berry::bench::Target> target = berry::bench::ParseTarget(flags.target);
  if (!target.ok()) {
    return Fail(2, std::string(target.status().message()));
  }
  std::optional<std::string> body;
  if (flags.body_file) {
    absl::StatusOr<std::string> read = berry::cli::ReadFile(*flags.body_file);
    if (!read.ok()) {
      return Fail(2, "--body: " + std::string(read.status().message()));
    }
    body = std::move(*read);
  }

  std::signal(SIGPIPE, SIG_IGN);
  berry::cli::RaiseOpenFileLimit();
  absl::StatusOr<net::ip::tcp::endpoint> endpoint = Resolve(*target);
  if (!endpoint.ok()) {
    return Fail(1, std::string(endpoint.status().message()));
  }
  std::string request = berry::bench::BuildRequest(*target, flags.headers, body ? &*body : nullptr);
  if (flags.mode == "rate") {
    return RunRateMode(flags, *endpoint, std::move(request));
  }
  return RunStreamMode(flags, *endpoint, std::move(request));
}
