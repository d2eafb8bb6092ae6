// The fault matrices of README.md "Reliability": what the proxy does with every way a provider
// or a client can misbehave. Upstream: each fault on a provider of its own, first in a failover
// chain whose second provider is healthy; a fault before the client saw a byte fails over, one
// after it ends the stream honestly, nothing waits past its timeout, and after the matrix no
// connection or descriptor is left behind (memory: the same suite runs under ASan's leak check
// in `make test-asan`). Downstream: raw bytes on a connection, each with its answer and the
// connection state a client expects.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_fault_test {
namespace {

using Clock = std::chrono::steady_clock;
using RawEnd = Behavior::RawEnd;

// Descriptors this process holds (the proxy and the mocks run in it).
size_t OpenDescriptors() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

// A chat completion as a provider sends it, with `x-mock-upstream: <name>`.
std::string RawJsonResponse(std::string_view name, std::string_view extra_headers = "") {
  const std::string body =
      R"({"id":"chatcmpl-raw","object":"chat.completion","created":1,"model":"up-model",)"
      R"("choices":[{"index":0,"message":{"role":"assistant","content":"raw"},)"
      R"("finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,)"
      R"("total_tokens":2}})";
  return absl::StrCat(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-mock-upstream: ", std::string(name),
      "\r\n", std::string(extra_headers), "Content-Length: ", body.size(), "\r\n\r\n", body);
}

constexpr char kSseHead[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    "Connection: keep-alive\r\n\r\n";
constexpr char kSseEvent[] =
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up-model\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n";

enum class Outcome {
  kFailsOver,    // 200 from the healthy provider; the client never sees the fault
  kAnswered,     // 200 from the faulty provider itself (the "fault" is legal HTTP)
  kBrokenStream  // 200, the events relayed so far, an error event, and no clean end
};

struct UpstreamFault {
  std::string name;
  // The provider's behaviour, when it is a mock.
  Behavior behavior;
  // Instead of a mock: a base_url (an unused port, a name that does not resolve) or a scheme
  // the mock does not speak (https to a plain mock).
  std::string base_url;
  bool https_to_plain = false;
  bool stream = false;
  Outcome outcome = Outcome::kFailsOver;
};

Behavior Trickle(std::string bytes) {
  Behavior b = Behavior::Raw(std::move(bytes), RawEnd::kHang);
  b.raw_piece = 1;
  b.stream_interval = 1s;
  return b;
}

UpstreamFault MockFault(std::string name, Behavior behavior, bool stream = false,
                        Outcome outcome = Outcome::kFailsOver) {
  UpstreamFault fault;
  fault.name = std::move(name);
  fault.behavior = std::move(behavior);
  fault.stream = stream;
  fault.outcome = outcome;
  return fault;
}

UpstreamFault UrlFault(std::string name, std::string base_url) {
  UpstreamFault fault;
  fault.name = std::move(name);
  fault.base_url = std::move(base_url);
  return fault;
}

std::vector<UpstreamFault> UpstreamFaults() {
  const std::string partial_body =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
      "{\"id\":\"chatcmpl-cut\",\"object\":";
  std::vector<UpstreamFault> faults;
  faults.push_back(
      UrlFault("connection refused", absl::StrCat("http://127.0.0.1:", UnusedPort(), "/v1")));
  faults.push_back(MockFault("reset before the status line", Behavior::ResetBeforeResponse()));
  faults.push_back(MockFault("closed before the status line", Behavior::CloseBeforeResponse()));
  faults.push_back(
      MockFault("garbage status line", Behavior::Raw("HTTP/1.1 2x0 Fine\r\n\r\n", RawEnd::kHang)));
  faults.push_back(
      MockFault("not HTTP at all", Behavior::Raw("SSH-2.0-OpenSSH_9.2p1\r\n", RawEnd::kHang)));
  faults.push_back(MockFault("headers over the limit",
                             Behavior::Raw(absl::StrCat("HTTP/1.1 200 OK\r\nX-Padding: ",
                                                        std::string(1 << 20, 'a'), "\r\n"),
                                           RawEnd::kHang)));
  faults.push_back(MockFault("reset mid-body", Behavior::Raw(partial_body, RawEnd::kReset)));
  faults.push_back(MockFault("Content-Length longer than the body, then FIN",
                             Behavior::Raw(partial_body, RawEnd::kClose)));
  faults.push_back(MockFault("Content-Length longer than the body, then silence",
                             Behavior::Raw(partial_body, RawEnd::kHang)));
  faults.push_back(
      MockFault("invalid chunked framing",
                Behavior::Raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
                              RawEnd::kHang)));
  faults.push_back(
      MockFault("a body trickling a byte a second", Trickle(RawJsonResponse("trickle"))));
  UpstreamFault tls = MockFault("TLS handshake failure", Behavior::Normal());
  tls.https_to_plain = true;
  faults.push_back(std::move(tls));
  faults.push_back(
      UrlFault("a host name that does not resolve", "http://berry-fault-test.invalid:9/v1"));
  faults.push_back(
      MockFault("a 1xx before the answer",
                Behavior::Raw(absl::StrCat("HTTP/1.1 100 Continue\r\n\r\n",
                                           RawJsonResponse("interim", "Connection: close\r\n")),
                              RawEnd::kHang),
                false, Outcome::kAnswered));
  faults.push_back(
      MockFault("stream: reset before the status line", Behavior::ResetBeforeResponse(), true));
  faults.push_back(MockFault("stream: headers, then reset before the first event",
                             Behavior::Raw(std::string(kSseHead), RawEnd::kReset), true));
  faults.push_back(
      MockFault("stream: reset mid-stream",
                Behavior::Raw(absl::StrCat(kSseHead, kSseEvent, kSseEvent), RawEnd::kReset), true,
                Outcome::kBrokenStream));
  faults.push_back(MockFault("stream: silence mid-stream",
                             Behavior::Raw(absl::StrCat(kSseHead, kSseEvent), RawEnd::kHang), true,
                             Outcome::kBrokenStream));
  return faults;
}

TEST(ProxyFaults, EveryUpstreamFaultHasItsOutcomeAndLeavesNothingBehind) {
  // Every deadline of the request path at 2 s, so a fault that waits is bounded by it.
  constexpr auto kTimeout = 2s;
  std::vector<UpstreamFault> faults = UpstreamFaults();
  std::vector<std::unique_ptr<MockUpstream>> mocks;
  std::vector<size_t> mock_of(faults.size());
  auto good = StartMock("good");
  std::string providers = ProviderToml("good", good->base_url());
  std::string models;
  for (size_t i = 0; i < faults.size(); ++i) {
    UpstreamFault& fault = faults[i];
    const std::string id = absl::StrCat("p", i);
    std::string base_url = fault.base_url;
    if (base_url.empty()) {
      MockUpstream::Options options;
      options.default_behavior = fault.behavior;
      mock_of[i] = mocks.size();
      mocks.push_back(StartMock(id, options));
      base_url = mocks.back()->base_url();
      if (fault.https_to_plain) {
        base_url.replace(0, 4, "https");
      }
    }
    providers += ProviderToml(id, base_url);
    const std::string model = absl::StrCat("m", i);
    models += ModelToml(model, R"(strategy = "failover")") +
              BackendToml(model, id, "up-model", 1, "priority = 1") +
              BackendToml(model, "good", "up-model", 1, "priority = 2");
  }
  auto proxy =
      StartProxy(SettingsToml("request_timeout_seconds = 2\nstream_idle_timeout_seconds = 2") +
                 providers + models);
  // Descriptors besides the connections to the healthy provider (each is two here: the proxy's
  // and the mock's end), which the workers pool as they need them.
  const auto held = [&] { return OpenDescriptors() - 2 * good->connections_open(); };
  ASSERT_EQ(Chat(*proxy, "m0").status, 200);
  const size_t baseline = held();

  for (size_t i = 0; i < faults.size(); ++i) {
    const UpstreamFault& fault = faults[i];
    SCOPED_TRACE(fault.name);
    const std::string model = absl::StrCat("m", i);
    const auto start = Clock::now();
    if (!fault.stream) {
      const HttpResponse response = Chat(*proxy, model);
      EXPECT_EQ(response.status, 200) << response.body;
      const std::string answered_by = response.Header("x-mock-upstream").value_or("");
      if (fault.outcome == Outcome::kAnswered) {
        EXPECT_EQ(answered_by, "interim");
        EXPECT_EQ(StringAt(ParseJson(response.body), "id"), "chatcmpl-raw") << response.body;
      } else {
        EXPECT_EQ(answered_by, "good") << response.body;
      }
    } else {
      const StreamedResponse response = StreamChat(*proxy, model);
      EXPECT_EQ(response.status, 200) << response.body;
      if (fault.outcome == Outcome::kFailsOver) {
        EXPECT_TRUE(response.body_status.ok()) << response.body_status;
        EXPECT_TRUE(response.done()) << response.body;
        EXPECT_EQ(CountHeader(response.headers, "x-mock-upstream"), 1);
      } else {
        EXPECT_FALSE(response.body_status.ok()) << "a broken stream must not end cleanly";
        EXPECT_FALSE(response.done()) << response.body;
        ASSERT_GE(response.events.size(), 2u) << response.body;
        EXPECT_NE(response.events.front().data.find("\"hi\""), std::string::npos);
        const boost::json::value last = ParseJson(response.events.back().data);
        EXPECT_EQ(StringAt(last.is_object() ? last.at("error") : last, "type"), "upstream_error")
            << response.events.back().data;
      }
    }
    EXPECT_LT(Clock::now() - start, kTimeout + 3s) << "waited past its timeout";
  }

  // No connection of a faulty provider is left open by the proxy (a hanging mock ends when the
  // proxy closes its side), and the process holds what it held before the matrix.
  for (size_t i = 0; i < faults.size(); ++i) {
    if (faults[i].base_url.empty()) {
      EXPECT_TRUE(mocks[mock_of[i]]->WaitForOpenConnections(0, 5s))
          << "the proxy left a connection to the provider of \"" << faults[i].name << "\"";
    }
  }
  size_t now = 0;
  EXPECT_TRUE(WaitUntil([&] { return (now = held()) <= baseline; }, 5s))
      << "descriptors: " << baseline << " before the matrix, " << now << " after";
  // The proxy still serves.
  EXPECT_EQ(Chat(*proxy, "m0").status, 200);
}

// --- downstream -------------------------------------------------------------------------------

std::string OneBackendConfig(const MockUpstream& mock,
                             std::string_view upstream_model = "up-model") {
  return SettingsToml("max_request_body_bytes = 65536") +
         ProviderToml("acme", mock.base_url(), {std::string(upstream_model)}) + ModelToml("chat") +
         BackendToml("chat", "acme", upstream_model);
}

std::string RawPost(std::string_view body, std::string_view extra_headers = "") {
  return absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n",
                      "Content-Type: application/json\r\n", std::string(extra_headers),
                      "Content-Length: ", body.size(), "\r\n\r\n", std::string(body));
}

struct DownstreamCase {
  std::string name;
  std::string bytes;
  int status;
  // OpenAI error type expected in the body ("" = not an error).
  std::string error_type;
  // Whether the proxy keeps the connection for another request.
  bool keep_alive;
};

std::vector<DownstreamCase> DownstreamCases() {
  std::string nested = R"({"model":"chat","messages":[{"role":"user","content":"x"}],"deep":)";
  nested += std::string(10000, '[') + std::string(10000, ']') + "}";
  std::vector<DownstreamCase> cases;
  cases.push_back({"headers over the limit",
                   absl::StrCat("GET /v1/models HTTP/1.1\r\nHost: proxy\r\nX-Padding: ",
                                std::string(128 * 1024, 'a'), "\r\n\r\n"),
                   431, "invalid_request_error", false});
  // Only the head: the 413 must come without the proxy reading (or waiting for) the body.
  cases.push_back({"Content-Length over max_request_body_bytes",
                   "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                   "Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n",
                   413, "invalid_request_error", false});
  cases.push_back({"chunked body over max_request_body_bytes",
                   absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n20000\r\n",
                                std::string(0x20000, 'a'), "\r\n0\r\n\r\n"),
                   413, "invalid_request_error", false});
  cases.push_back({"invalid chunked framing",
                   "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                   "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
                   400, "invalid_request_error", false});
  cases.push_back(
      {"JSON that is not an object", RawPost("[1,2,3]"), 400, "invalid_request_error", true});
  cases.push_back({"model not a string",
                   RawPost(R"({"model":5,"messages":[{"role":"user","content":"x"}]})"), 400,
                   "invalid_request_error", true});
  cases.push_back(
      {"not JSON at all", RawPost("{\"model\":\"chat\","), 400, "invalid_request_error", true});
  cases.push_back({"deeply nested JSON", RawPost(nested), 400, "invalid_request_error", true});
  cases.push_back(
      {"invalid UTF-8 in a string",
       RawPost("{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"),
       400, "invalid_request_error", true});
  cases.push_back({"a valid request (the control row)", RawPost(ChatBody("chat")), 200, "", true});
  return cases;
}

TEST(ProxyFaults, EveryDownstreamFaultGetsItsAnswerAndConnectionState) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(OneBackendConfig(*mock));
  for (const DownstreamCase& c : DownstreamCases()) {
    SCOPED_TRACE(c.name);
    auto connection = RawConnection::Connect(proxy->port());
    ASSERT_TRUE(connection.ok()) << connection.status();
    // A refused body may be cut off unread: the write may fail, the answer must still come.
    (void)(*connection)->Write(c.bytes);
    auto response = (*connection)->ReadResponse(5s);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->result_int(), static_cast<unsigned>(c.status)) << response->body();
    if (!c.error_type.empty()) {
      const boost::json::object error = ErrorObject(response->body());
      if (error.contains("type")) {
        EXPECT_EQ(StringOrEmpty(error.at("type")), c.error_type);
      }
    }
    if (c.keep_alive) {
      EXPECT_TRUE(response->keep_alive());
      ASSERT_TRUE((*connection)->Write(RawPost(ChatBody("chat"))).ok());
      auto next = (*connection)->ReadResponse(5s);
      ASSERT_TRUE(next.ok()) << next.status();
      EXPECT_EQ(next->result_int(), 200u) << "the connection serves the next request";
    } else {
      EXPECT_TRUE((*connection)->WaitForClose(5s)) << "the proxy must close the connection";
    }
  }
  EXPECT_EQ(Chat(*proxy, "chat").status, 200);
}

TEST(ProxyFaults, Http10WithoutKeepAliveIsAnsweredAndClosed) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(OneBackendConfig(*mock));
  auto connection = RawConnection::Connect(proxy->port());
  ASSERT_TRUE(connection.ok()) << connection.status();
  const std::string body = ChatBody("chat");
  ASSERT_TRUE((*connection)
                  ->Write(absl::StrCat("POST /v1/chat/completions HTTP/1.0\r\nHost: proxy\r\n"
                                       "Content-Type: application/json\r\nContent-Length: ",
                                       body.size(), "\r\n\r\n", body))
                  .ok());
  auto response = (*connection)->ReadResponse(5s);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->result_int(), 200u) << response->body();
  EXPECT_FALSE(response->chunked()) << "an HTTP/1.0 client cannot read a chunked body";
  EXPECT_FALSE(response->keep_alive());
  EXPECT_EQ(StringAt(ParseJson(response->body()), "object"), "chat.completion");
  EXPECT_TRUE((*connection)->WaitForClose(5s));
}

TEST(ProxyFaults, AModelNameThatNeedsEscapingIsRewrittenIntoValidJson) {
  const std::string upstream_model = R"(we"ird\model/ünï)";
  auto mock = StartMock("acme");
  std::string toml_model;  // the same name as a TOML basic string's contents
  for (const char ch : upstream_model) {
    if (ch == '"' || ch == '\\') {
      toml_model += '\\';
    }
    toml_model += ch;
  }
  auto proxy = StartProxy(OneBackendConfig(*mock, toml_model));
  const HttpResponse response = Chat(*proxy, "chat");
  ASSERT_EQ(response.status, 200) << response.body;
  const auto request = mock->last_request();
  ASSERT_TRUE(request.has_value());
  const boost::json::value sent = ParseJson(request->body);
  ASSERT_TRUE(sent.is_object()) << request->body;
  EXPECT_EQ(StringAt(sent, "model"), upstream_model);
  EXPECT_EQ(sent.at("messages").as_array().size(), 1u);
}

}  // namespace
}  // namespace berry::itest::proxy_fault_test
