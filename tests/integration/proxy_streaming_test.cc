// Server-Sent Events through the proxy: relayed as they arrive (never buffered to the end), usage
// counted from the final chunk, broken and idle streams ended with one error event and a closed
// connection, and a client that goes away cancelling the upstream stream.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_streaming_test {
namespace {

using Clock = std::chrono::steady_clock;

std::string OneBackendConfig(const MockUpstream& mock, std::string_view settings = "") {
  return SettingsToml(settings) + ProviderToml("acme", mock.base_url()) + ModelToml("chat") +
         BackendToml("chat", "acme");
}

int64_t SentNs(const SseEvent& event) {
  const boost::json::value json = ParseJson(event.data);
  if (!json.is_object() || !json.as_object().contains("mock_sent_ns")) {
    return -1;
  }
  return json.at("mock_sent_ns").to_number<int64_t>();
}

int64_t Ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

TEST(ProxyStreaming, RelaysEachEventAsTheUpstreamSendsIt) {
  MockUpstream::Options options;
  options.default_behavior = Behavior::Stream(5, 100ms);
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(OneBackendConfig(*mock));

  const StreamedResponse response = StreamChat(*proxy, "chat");

  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_TRUE(response.body_status.ok()) << response.body_status;
  EXPECT_TRUE(response.Header("Content-Type").value_or("").starts_with("text/event-stream"));
  ASSERT_EQ(response.events.size(), 7u) << response.body;  // 5 content, final, [DONE]
  EXPECT_TRUE(response.done());
  // The mock writes event i+1 100 ms after event i. Every event reached the client before the
  // next one even left the mock: nothing is held back to be sent in bulk.
  for (size_t i = 0; i + 1 < 6; ++i) {
    const int64_t next_sent = SentNs(response.events[i + 1]);
    ASSERT_GT(next_sent, 0) << response.events[i + 1].data;
    EXPECT_LT(Ns(response.events[i].arrived_at), next_sent) << "event " << i << " was held back";
  }
  // And the client saw the gaps: the five content events are spread over ~400 ms.
  const auto spread = response.events[4].arrived_at - response.events[0].arrived_at;
  EXPECT_GE(spread, 300ms);
  for (size_t i = 1; i < 5; ++i) {
    EXPECT_GT(response.events[i].arrived_at, response.events[i - 1].arrived_at) << i;
  }
  EXPECT_LT(response.headers_at, response.events[1].arrived_at);
}

TEST(ProxyStreaming, CountsUsageFromTheFinalChunk) {
  MockUpstream::Options options;
  options.default_behavior = Behavior::Stream(2);
  options.default_behavior.usage = {.prompt_tokens = 11, .completion_tokens = 29};
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(OneBackendConfig(*mock));

  const StreamedResponse response = StreamChat(*proxy, "chat");

  ASSERT_TRUE(response.done()) << response.body;
  const Metrics metrics = Scrape(*proxy);
  const std::string backend = BackendId("chat", "acme");
  EXPECT_EQ(metrics.Value("berry_tokens_total",
                          {{"model", "chat"}, {"backend", backend}, {"kind", "prompt"}}),
            11);
  EXPECT_EQ(metrics.Value("berry_tokens_total",
                          {{"model", "chat"}, {"backend", backend}, {"kind", "completion"}}),
            29);
  EXPECT_TRUE(AccessLogContains(*proxy, R"("stream":true)"));
  EXPECT_TRUE(AccessLogContains(*proxy, R"("completion_tokens":29)"));
}

TEST(ProxyStreaming, BrokenStreamEndsWithErrorEventAndClosedConnection) {
  MockUpstream::Options options;
  options.default_behavior = Behavior::CloseMidStream(2, 20ms);
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(OneBackendConfig(*mock));

  const auto start = Clock::now();
  const StreamedResponse response = StreamChat(*proxy, "chat");

  EXPECT_EQ(response.status, 200);
  EXPECT_LT(Clock::now() - start, 5s) << "the proxy must close, not leave the client waiting";
  // Not a clean end: no chunked terminator, no [DONE].
  EXPECT_FALSE(response.body_status.ok());
  EXPECT_NE(response.body_status.code(), absl::StatusCode::kDeadlineExceeded) << response.body_status;
  EXPECT_FALSE(response.done());
  ASSERT_EQ(response.events.size(), 3u) << response.body;
  EXPECT_FALSE(response.events[0].data.empty());
  EXPECT_EQ(response.events[2].data.find(R"("error")"), 1u) << response.events[2].data;
  const boost::json::value error = ParseJson(response.events[2].data);
  ASSERT_TRUE(error.is_object()) << response.events[2].data;
  EXPECT_EQ(StringAt(error.at("error"), "type"), "upstream_error");
  EXPECT_FALSE(StringAt(error.at("error"), "message").empty());
  EXPECT_EQ(Scrape(*proxy).Value("berry_stream_broken_total",
                                 {{"model", "chat"}, {"backend", BackendId("chat", "acme")}}),
            1);
}

TEST(ProxyStreaming, IdleStreamTimesOutWithErrorEvent) {
  MockUpstream::Options options;
  options.default_behavior = Behavior::Stream(3, 3s);
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(OneBackendConfig(*mock, "stream_idle_timeout_seconds = 1"));

  const StreamedResponse response = StreamChat(*proxy, "chat");

  EXPECT_EQ(response.status, 200);
  EXPECT_FALSE(response.body_status.ok());
  ASSERT_EQ(response.events.size(), 2u) << response.body;
  const auto gap = response.events[1].arrived_at - response.events[0].arrived_at;
  EXPECT_GE(gap, 900ms);
  EXPECT_LT(gap, 2500ms) << "the idle timeout is 1 s; the mock's next event is 3 s away";
  const boost::json::value error = ParseJson(response.events[1].data);
  ASSERT_TRUE(error.is_object()) << response.events[1].data;
  EXPECT_EQ(StringAt(error.at("error"), "type"), "upstream_error");
  EXPECT_EQ(Scrape(*proxy).Value("berry_stream_broken_total", {{"model", "chat"}}), 1);
}

TEST(ProxyStreaming, ClientDisconnectCancelsTheUpstreamStream) {
  MockUpstream::Options options;
  options.default_behavior = Behavior::Stream(50, 100ms);
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(OneBackendConfig(*mock));

  int seen = 0;
  const StreamedResponse response =
      StreamChat(*proxy, "chat", [&seen](const SseEvent&) { return ++seen < 2; });

  EXPECT_EQ(response.body_status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(mock->WaitForAbortedStreams(1, 5s)) << "the upstream stream went on";
  EXPECT_EQ(mock->streams_completed(), 0u);
  EXPECT_TRUE(mock->WaitForOpenConnections(0, 5s));
  EXPECT_EQ(Scrape(*proxy).Value("berry_stream_broken_total"), 0)
      << "a client leaving is not the upstream's fault";
}

TEST(ProxyStreaming, ClientThatStopsReadingIsCutOffAfterTheWriteTimeout) {
  // About 30 MB of events in one go: far more than the socket buffers between the proxy and a
  // client that never reads, so the proxy's writes stall.
  MockUpstream::Options options;
  options.default_behavior = Behavior::Stream(100'000);
  auto mock = StartMock("acme", options);
  TestProxyOptions proxy_options;
  proxy_options.write_timeout = 500ms;
  auto proxy = StartProxy(OneBackendConfig(*mock), proxy_options);
  auto connection = RawConnection::Connect(proxy->port());
  ASSERT_TRUE(connection.ok()) << connection.status();
  const std::string body = ChatBody("chat", R"(,"stream":true)");
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE((*connection)
                  ->Write(absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                                       "Content-Type: application/json\r\nContent-Length: ",
                                       body.size(), "\r\n\r\n", body))
                  .ok());

  // The stalled write times out: the proxy gives up on the client and abandons the upstream.
  EXPECT_TRUE(mock->WaitForAbortedStreams(1, 10s)) << "the stalled stream was never cut off";
  EXPECT_GE(std::chrono::steady_clock::now() - started, 500ms);
  EXPECT_TRUE(WaitUntil([&] { return Scrape(*proxy).Value("berry_inflight_requests") == 1; }))
      << "the request is still counted as in flight";  // 1: the scrape itself
}

TEST(ProxyStreaming, StreamingRequestFailsOverBeforeTheFirstByte) {
  MockUpstream::Options failing;
  failing.default_behavior = Behavior::Fail(503);
  auto bad = StartMock("bad", failing);
  MockUpstream::Options streaming;
  streaming.default_behavior = Behavior::Stream(3);
  auto good = StartMock("good", streaming);
  auto proxy = StartProxy(ProviderToml("bad", bad->base_url()) +
                          ProviderToml("good", good->base_url()) +
                          ModelToml("chat", R"(strategy = "failover")") +
                          BackendToml("chat", "bad", "up-model", 1, "priority = 1") +
                          BackendToml("chat", "good", "up-model", 1, "priority = 2"));

  const StreamedResponse response = StreamChat(*proxy, "chat");

  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(response.done()) << response.body;
  EXPECT_EQ(response.Header("x-mock-upstream").value_or(""), "good");
  EXPECT_EQ(bad->request_count(), 1u);
  EXPECT_EQ(Scrape(*proxy).Value("berry_retries_total", {{"model", "chat"}}), 1);
}

TEST(ProxyStreaming, UpstreamErrorBeforeTheStreamIsPassedThroughAsJson) {
  MockUpstream::Options options;
  options.default_behavior = Behavior::Fail(400, R"({"error":{"message":"bad tool","type":"invalid_request_error","param":"tools","code":null}})");
  auto mock = StartMock("acme", options);
  auto proxy = StartProxy(OneBackendConfig(*mock));

  const StreamedResponse response = StreamChat(*proxy, "chat");

  EXPECT_EQ(response.status, 400);
  EXPECT_EQ(response.body, options.default_behavior.body);
  EXPECT_EQ(response.Header("Content-Type").value_or(""), "application/json");
}

}  // namespace
}  // namespace berry::itest::proxy_streaming_test
