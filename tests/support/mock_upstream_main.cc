// berry-mock-upstream: the mock OpenAI provider as a process, for `make run` and the benchmark
// harness. Prints `listening on http://HOST:PORT/v1` once it accepts connections (scripts wait
// for that line) and exits 0 on SIGINT or SIGTERM.
#include <pthread.h>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "tests/support/certs.h"
#include "tests/support/mock_upstream.h"

namespace {

using berry::test_support::MockUpstream;
using berry::test_support::MockUpstreamOptions;

constexpr std::string_view kUsage = R"(usage: berry-mock-upstream [flags]

A mock OpenAI-compatible provider: POST /v1/chat/completions, /v1/completions, /v1/embeddings,
GET /v1/models. Bodies with "stream": true get SSE chunks (each with "mock_sent_ns", steady-clock
nanoseconds at send time), a final chunk with usage, then data: [DONE].

  --listen HOST:PORT        address to listen on (default 127.0.0.1:18080; port 0 = any free
                            port, printed in the "listening on" line)
  --threads N               event-loop threads (default 1)
  --tls                     serve HTTPS with a freshly generated CA and localhost certificate;
                            prints "tls ca: PATH" (the CA to trust) before "listening on"
  --tls-dir DIR             where --tls writes its PEM files (default: a new temp directory)
  --stream-events N         content events per streamed response (default 3)
  --stream-interval-ms N    delay between streamed events (default 0: one write)
  --latency-ms N            delay before the response headers (default 0)
  --models A,B,...          models listed by GET /v1/models (default mock-model)
  --api-key KEY             require Authorization: Bearer KEY (default: accept any)
  --name NAME               sent as x-mock-upstream header and system_fingerprint
  --record                  keep every request in memory (off: this is for load)
  --help                    this text
)";

bool ParseInt(std::string_view s, int* out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size() && *out >= 0;
}

int Fail(std::string_view message) {
  std::fprintf(stderr, "berry-mock-upstream: %.*s\n%.*s", static_cast<int>(message.size()),
               message.data(), static_cast<int>(kUsage.size()), kUsage.data());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  MockUpstreamOptions options;
  options.port = 18080;
  options.record_requests = false;
  std::string tls_dir;

  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::optional<std::string_view> inline_value;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    auto value = [&](std::string_view* out) {
      if (inline_value) {
        *out = *inline_value;
        return true;
      }
      if (i + 1 >= argc) {
        return false;
      }
      *out = argv[++i];
      return true;
    };
    auto int_value = [&](int* out) {
      std::string_view v;
      return value(&v) && ParseInt(v, out);
    };
    std::string_view v;
    int n = 0;
    if (arg == "--help" || arg == "-h") {
      std::fwrite(kUsage.data(), 1, kUsage.size(), stdout);
      return 0;
    } else if (arg == "--listen") {
      size_t colon = 0;
      if (!value(&v) || (colon = v.rfind(':')) == std::string_view::npos ||
          !ParseInt(v.substr(colon + 1), &n) || n > 65535) {
        return Fail("--listen wants HOST:PORT");
      }
      std::string_view host = v.substr(0, colon);
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
      }
      options.host = std::string(host);
      options.port = static_cast<uint16_t>(n);
    } else if (arg == "--threads") {
      if (!int_value(&n) || n < 1) {
        return Fail("--threads wants a number >= 1");
      }
      options.threads = n;
    } else if (arg == "--tls") {
      options.tls = true;
    } else if (arg == "--tls-dir") {
      if (!value(&v)) {
        return Fail("--tls-dir wants a directory");
      }
      tls_dir = std::string(v);
    } else if (arg == "--stream-events") {
      if (!int_value(&n)) {
        return Fail("--stream-events wants a number");
      }
      options.default_behavior.stream_events = n;
    } else if (arg == "--stream-interval-ms") {
      if (!int_value(&n)) {
        return Fail("--stream-interval-ms wants a number");
      }
      options.default_behavior.stream_interval = std::chrono::milliseconds(n);
    } else if (arg == "--latency-ms") {
      if (!int_value(&n)) {
        return Fail("--latency-ms wants a number");
      }
      options.default_behavior.headers_delay = std::chrono::milliseconds(n);
    } else if (arg == "--models") {
      if (!value(&v) || v.empty()) {
        return Fail("--models wants a comma-separated list");
      }
      options.models.clear();
      while (!v.empty()) {
        size_t comma = v.find(',');
        if (std::string_view m = v.substr(0, comma); !m.empty()) {
          options.models.emplace_back(m);
        }
        v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
      }
    } else if (arg == "--api-key") {
      if (!value(&v) || v.empty()) {
        return Fail("--api-key wants a value");
      }
      options.api_key = std::string(v);
    } else if (arg == "--name") {
      if (!value(&v)) {
        return Fail("--name wants a value");
      }
      options.name = std::string(v);
    } else if (arg == "--record") {
      options.record_requests = true;
    } else {
      return Fail(std::string("unknown flag ") + std::string(arg));
    }
  }

  if (options.tls) {
    // Generate here rather than inside the mock, so the CA can be written where scripts find it.
    absl::StatusOr<berry::test_support::TestPki> pki = berry::test_support::GenerateTestPki();
    if (!pki.ok()) {
      std::fprintf(stderr, "berry-mock-upstream: %s\n", pki.status().ToString().c_str());
      return 1;
    }
    if (tls_dir.empty()) {
      absl::StatusOr<std::string> dir = berry::test_support::MakeTempDir("berry-mock-upstream-");
      if (!dir.ok()) {
        std::fprintf(stderr, "berry-mock-upstream: %s\n", dir.status().ToString().c_str());
        return 1;
      }
      tls_dir = *dir;
    }
    absl::StatusOr<berry::test_support::TestPkiFiles> files =
        berry::test_support::WriteTestPki(*pki, tls_dir);
    if (!files.ok()) {
      std::fprintf(stderr, "berry-mock-upstream: %s\n", files.status().ToString().c_str());
      return 1;
    }
    options.tls_cert_pem = pki->server_cert_pem;
    options.tls_key_pem = pki->server_key_pem;
    std::printf("tls ca: %s\n", files->ca_cert.c_str());
  }

  // Block the stop signals before any thread starts, so every thread inherits the mask and
  // sigwait below is the one place they arrive.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::StatusOr<std::unique_ptr<MockUpstream>> mock = MockUpstream::Create(std::move(options));
  if (!mock.ok()) {
    std::fprintf(stderr, "berry-mock-upstream: %s\n", mock.status().ToString().c_str());
    return 1;
  }
  std::printf("listening on %s\n", (*mock)->base_url().c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  (*mock)->Stop();
  return 0;
}
