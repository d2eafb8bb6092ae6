// Behaviour of the mock OpenAI upstream (and of the test PKI and HTTP client it is exercised
// with): what later proxy tests and benchmarks rely on.
#include "tests/support/mock_upstream.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/certs.h"
#include "tests/support/http_client.h"

namespace berry::test_support::mock_upstream_test {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;

constexpr milliseconds kWait{5000};

std::unique_ptr<MockUpstream> StartMock(MockUpstreamOptions options = {}) {
  absl::StatusOr<std::unique_ptr<MockUpstream>> mock = MockUpstream::Create(std::move(options));
  EXPECT_TRUE(mock.ok()) << mock.status();
  return mock.ok() ? *std::move(mock) : nullptr;
}

std::string ChatBody(std::string_view model, bool stream = false) {
  return std::string(R"({"model":")") + std::string(model) +
         R"(","messages":[{"role":"user","content":"hi"}])" + (stream ? R"(,"stream":true})" : "}");
}

HttpRequest Chat(const MockUpstream& mock, std::string_view model, bool stream = false) {
  HttpRequest r = HttpRequest::Post(mock.base_url() + "/chat/completions", ChatBody(model, stream));
  r.tls.ca_pem = mock.ca_pem();
  return r;
}

json::value ParseJson(std::string_view s) {
  boost::system::error_code ec;
  json::value v = json::parse(s, ec);
  EXPECT_FALSE(ec) << "not JSON: " << s;
  return v;
}

std::string Str(const json::value& v) { return std::string(v.as_string()); }

TEST(MockUpstreamTest, AnswersChatCompletionJsonEchoingTheModel) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  EXPECT_EQ(mock->base_url(), "http://127.0.0.1:" + std::to_string(mock->port()) + "/v1");

  absl::StatusOr<HttpResponse> res = Fetch(Chat(*mock, "gpt-4o-mini-upstream"));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->Header("content-type"), "application/json");
  EXPECT_TRUE(res->Header("x-mock-sent-ns").has_value());

  json::value v = ParseJson(res->body);
  EXPECT_EQ(Str(v.at("object")), "chat.completion");
  EXPECT_EQ(Str(v.at("model")), "gpt-4o-mini-upstream");
  EXPECT_EQ(Str(v.at("choices").at(0).at("message").at("role")), "assistant");
  EXPECT_FALSE(Str(v.at("choices").at(0).at("message").at("content")).empty());
  const json::value& usage = v.at("usage");
  EXPECT_EQ(usage.at("prompt_tokens").to_number<int64_t>() +
                usage.at("completion_tokens").to_number<int64_t>(),
            usage.at("total_tokens").to_number<int64_t>());
}

TEST(MockUpstreamTest, AnswersCompletionsEmbeddingsAndModelsInOpenAiShapes) {
  MockUpstreamOptions options;
  options.models = {"m-one", "m-two"};
  options.embedding_dimensions = 4;
  auto mock = StartMock(options);
  ASSERT_NE(mock, nullptr);

  absl::StatusOr<HttpResponse> completion = Fetch(
      HttpRequest::Post(mock->base_url() + "/completions", R"({"model":"m-one","prompt":"x"})"));
  ASSERT_TRUE(completion.ok()) << completion.status();
  json::value c = ParseJson(completion->body);
  EXPECT_EQ(Str(c.at("object")), "text_completion");
  EXPECT_EQ(Str(c.at("model")), "m-one");
  EXPECT_TRUE(c.at("choices").at(0).at("text").is_string());

  absl::StatusOr<HttpResponse> embeddings = Fetch(HttpRequest::Post(
      mock->base_url() + "/embeddings", R"({"model":"m-two","input":["a","b","c"]})"));
  ASSERT_TRUE(embeddings.ok()) << embeddings.status();
  json::value e = ParseJson(embeddings->body);
  EXPECT_EQ(Str(e.at("object")), "list");
  EXPECT_EQ(Str(e.at("model")), "m-two");
  ASSERT_EQ(e.at("data").as_array().size(), 3u);
  EXPECT_EQ(e.at("data").at(2).at("index").to_number<int>(), 2);
  EXPECT_EQ(e.at("data").at(0).at("embedding").as_array().size(), 4u);
  EXPECT_TRUE(e.at("usage").at("prompt_tokens").is_number());

  absl::StatusOr<HttpResponse> models = Fetch(HttpRequest::Get(mock->base_url() + "/models"));
  ASSERT_TRUE(models.ok()) << models.status();
  json::value m = ParseJson(models->body);
  EXPECT_EQ(Str(m.at("object")), "list");
  ASSERT_EQ(m.at("data").as_array().size(), 2u);
  EXPECT_EQ(Str(m.at("data").at(1).at("id")), "m-two");
  EXPECT_EQ(Str(m.at("data").at(1).at("object")), "model");

  absl::StatusOr<HttpResponse> one = Fetch(HttpRequest::Get(mock->base_url() + "/models/m-one"));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(Str(ParseJson(one->body).at("id")), "m-one");
  absl::StatusOr<HttpResponse> missing = Fetch(HttpRequest::Get(mock->base_url() + "/models/nope"));
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->status, 404);
}

TEST(MockUpstreamTest, UnknownPathIs404AndWrongMethodIs405WithOpenAiErrors) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  absl::StatusOr<HttpResponse> unknown = Fetch(HttpRequest::Get(mock->base_url() + "/nothing"));
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_EQ(unknown->status, 404);
  EXPECT_TRUE(ParseJson(unknown->body).at("error").at("message").is_string());

  absl::StatusOr<HttpResponse> wrong =
      Fetch(HttpRequest::Get(mock->base_url() + "/chat/completions"));
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_EQ(wrong->status, 405);
}

TEST(MockUpstreamTest, RejectsBodyThatIsNotJsonOrHasNoModelWith400) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  absl::StatusOr<HttpResponse> garbage =
      Fetch(HttpRequest::Post(mock->base_url() + "/chat/completions", "{not json"));
  ASSERT_TRUE(garbage.ok()) << garbage.status();
  EXPECT_EQ(garbage->status, 400);
  EXPECT_EQ(Str(ParseJson(garbage->body).at("error").at("type")), "invalid_request_error");

  absl::StatusOr<HttpResponse> no_model =
      Fetch(HttpRequest::Post(mock->base_url() + "/chat/completions", R"({"messages":[]})"));
  ASSERT_TRUE(no_model.ok()) << no_model.status();
  EXPECT_EQ(no_model->status, 400);
}

TEST(MockUpstreamTest, RequiresTheConfiguredApiKeyWhenOneIsSet) {
  MockUpstreamOptions options;
  options.api_key = "sk-mock";
  auto mock = StartMock(options);
  ASSERT_NE(mock, nullptr);
  mock->EnqueueBehavior(Behavior::Fail(503));

  absl::StatusOr<HttpResponse> anonymous = Fetch(Chat(*mock, "m"));
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_EQ(mock->queued_behaviors(), 1u);

  HttpRequest keyed = Chat(*mock, "m");
  keyed.headers = {{"Authorization", "Bearer sk-mock"}};
  absl::StatusOr<HttpResponse> res = Fetch(keyed);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 503);
}

TEST(MockUpstreamTest, StreamsConfiguredEventsSpacedByIntervalThenDone) {
  constexpr int kEvents = 5;
  constexpr milliseconds kInterval{60};
  MockUpstreamOptions options;
  options.default_behavior.stream_events = kEvents;
  options.default_behavior.stream_interval = kInterval;
  options.default_behavior.usage = {.prompt_tokens = 7, .completion_tokens = kEvents};
  auto mock = StartMock(options);
  ASSERT_NE(mock, nullptr);

  const Clock::time_point start = Clock::now();
  absl::StatusOr<StreamedResponse> res =
      FetchStreaming(Chat(*mock, "stream-model", /*stream=*/true));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_TRUE(res->body_status.ok()) << res->body_status;
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->Header("content-type"), "text/event-stream");
  EXPECT_EQ(res->Header("transfer-encoding"), "chunked");

  // kEvents content chunks, one final chunk with usage, then [DONE].
  ASSERT_EQ(res->events.size(), static_cast<size_t>(kEvents + 2));
  EXPECT_TRUE(res->done());
  int64_t last_sent_ns = 0;
  std::vector<Clock::duration> arrival_gaps;
  for (int i = 0; i <= kEvents; ++i) {
    json::value chunk = ParseJson(res->events[i].data);
    EXPECT_EQ(Str(chunk.at("object")), "chat.completion.chunk");
    EXPECT_EQ(Str(chunk.at("model")), "stream-model");
    EXPECT_EQ(chunk.at("mock_seq").to_number<int>(), i);
    // The mock spaces its sends by at least the interval, and no chunk can arrive before its
    // send time (i intervals after the request) however the client was scheduled.
    const int64_t sent_ns = chunk.at("mock_sent_ns").to_number<int64_t>();
    if (i > 0) {
      EXPECT_GE(sent_ns - last_sent_ns, std::chrono::nanoseconds(kInterval).count());
      arrival_gaps.push_back(res->events[i].arrived_at - res->events[i - 1].arrived_at);
    }
    last_sent_ns = sent_ns;
    EXPECT_GE(res->events[i].arrived_at - start, kInterval * i) << "event " << i;
    if (i < kEvents) {
      EXPECT_TRUE(chunk.at("choices").at(0).at("delta").at("content").is_string());
      EXPECT_TRUE(chunk.at("choices").at(0).at("finish_reason").is_null());
    } else {
      EXPECT_EQ(Str(chunk.at("choices").at(0).at("finish_reason")), "stop");
      EXPECT_EQ(chunk.at("usage").at("prompt_tokens").to_number<int>(), 7);
      EXPECT_EQ(chunk.at("usage").at("completion_tokens").to_number<int>(), kEvents);
      EXPECT_EQ(chunk.at("usage").at("total_tokens").to_number<int>(), 7 + kEvents);
    }
  }
  // Arrival gaps, loosely: a descheduled client may read two chunks at once, so the median gap
  // (not every gap) must be at least 80% of the interval.
  std::sort(arrival_gaps.begin(), arrival_gaps.end());
  EXPECT_GE(arrival_gaps[arrival_gaps.size() / 2], kInterval * 8 / 10);
  EXPECT_TRUE(mock->WaitForCompletedStreams(1, kWait));
  EXPECT_EQ(mock->streams_aborted(), 0u);
}

TEST(MockUpstreamTest, StreamBehaviorStreamsEvenWhenTheRequestDidNotAsk) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->SetDefaultBehavior(Behavior::Stream(2));
  absl::StatusOr<StreamedResponse> res = FetchStreaming(Chat(*mock, "m", /*stream=*/false));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->events.size(), 4u);
  EXPECT_TRUE(res->done());
}

TEST(MockUpstreamTest, StreamsCompletionsAsTextCompletionChunks) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  absl::StatusOr<StreamedResponse> res = FetchStreaming(HttpRequest::Post(
      mock->base_url() + "/completions", R"({"model":"c","prompt":"x","stream":true})"));
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->events.size(), 5u);
  json::value first = ParseJson(res->events[0].data);
  EXPECT_EQ(Str(first.at("object")), "text_completion");
  EXPECT_TRUE(first.at("choices").at(0).at("text").is_string());
}

TEST(MockUpstreamTest, FailReturnsChosenStatusBodyAndHeaders) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  Behavior fail = Behavior::Fail(429, R"({"error":{"message":"slow down"}})");
  fail.headers = {{"Retry-After", "3"}};
  mock->SetDefaultBehavior(fail);

  absl::StatusOr<HttpResponse> res = Fetch(Chat(*mock, "m"));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 429);
  EXPECT_EQ(res->body, R"({"error":{"message":"slow down"}})");
  EXPECT_EQ(res->Header("retry-after"), "3");

  mock->SetDefaultBehavior(Behavior::Fail(503));
  absl::StatusOr<HttpResponse> generic = Fetch(Chat(*mock, "m"));
  ASSERT_TRUE(generic.ok()) << generic.status();
  EXPECT_EQ(generic->status, 503);
  EXPECT_TRUE(ParseJson(generic->body).at("error").at("message").is_string());
}

TEST(MockUpstreamTest, OneShotBehaviorsApplyInOrderThenTheDefaultResumes) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->EnqueueBehavior(Behavior::Fail(503));
  mock->EnqueueBehavior(Behavior::Fail(502));
  EXPECT_EQ(mock->queued_behaviors(), 2u);

  std::vector<int> statuses;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<HttpResponse> res = Fetch(Chat(*mock, "m"));
    ASSERT_TRUE(res.ok()) << res.status();
    statuses.push_back(res->status);
  }
  EXPECT_EQ(statuses, (std::vector<int>{503, 502, 200}));
  EXPECT_EQ(mock->queued_behaviors(), 0u);
}

TEST(MockUpstreamTest, PerModelBehaviorOnlyAffectsThatModel) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->SetModelBehavior("broken", Behavior::Fail(500));

  absl::StatusOr<HttpResponse> broken = Fetch(Chat(*mock, "broken"));
  absl::StatusOr<HttpResponse> fine = Fetch(Chat(*mock, "fine"));
  ASSERT_TRUE(broken.ok() && fine.ok());
  EXPECT_EQ(broken->status, 500);
  EXPECT_EQ(fine->status, 200);

  mock->ClearModelBehavior("broken");
  absl::StatusOr<HttpResponse> healed = Fetch(Chat(*mock, "broken"));
  ASSERT_TRUE(healed.ok()) << healed.status();
  EXPECT_EQ(healed->status, 200);
}

TEST(MockUpstreamTest, PerModelOneShotQueueIsConsumedOnlyByThatModel) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->EnqueueModelBehavior("a", Behavior::Fail(503));

  absl::StatusOr<HttpResponse> b = Fetch(Chat(*mock, "b"));
  absl::StatusOr<HttpResponse> a1 = Fetch(Chat(*mock, "a"));
  absl::StatusOr<HttpResponse> a2 = Fetch(Chat(*mock, "a"));
  ASSERT_TRUE(b.ok() && a1.ok() && a2.ok());
  EXPECT_EQ(b->status, 200);
  EXPECT_EQ(a1->status, 503);
  EXPECT_EQ(a2->status, 200);
}

TEST(MockUpstreamTest, HangDoesNotAnswerBeforeTheClientTimesOut) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->SetDefaultBehavior(Behavior::Hang());
  HttpRequest req = Chat(*mock, "m");
  req.timeout = milliseconds(300);

  const Clock::time_point start = Clock::now();
  absl::StatusOr<HttpResponse> res = Fetch(req);
  EXPECT_EQ(res.status().code(), absl::StatusCode::kDeadlineExceeded) << res.status();
  EXPECT_GE(Clock::now() - start, milliseconds(300));
  EXPECT_EQ(mock->request_count(), 1u);
  // The client gave up and closed; the hanging session notices and ends.
  EXPECT_TRUE(mock->WaitForOpenConnections(0, kWait));
}

TEST(MockUpstreamTest, HeadersDelayPostponesTheFirstByte) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  Behavior slow;
  slow.headers_delay = milliseconds(150);
  mock->SetDefaultBehavior(slow);
  const Clock::time_point start = Clock::now();
  absl::StatusOr<HttpResponse> res = Fetch(Chat(*mock, "m"));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
  EXPECT_GE(Clock::now() - start, milliseconds(150) * 8 / 10);
}

TEST(MockUpstreamTest, CloseMidStreamDropsTheConnectionAfterKEvents) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->SetDefaultBehavior(Behavior::CloseMidStream(2, milliseconds(20)));

  absl::StatusOr<StreamedResponse> res = FetchStreaming(Chat(*mock, "m", /*stream=*/true));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->events.size(), 2u);
  EXPECT_FALSE(res->done());
  EXPECT_FALSE(res->body_status.ok());
  EXPECT_NE(res->body_status.code(), absl::StatusCode::kDeadlineExceeded) << res->body_status;
}

TEST(MockUpstreamTest, CloseBeforeResponseClosesWithoutAByte) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->EnqueueBehavior(Behavior::CloseBeforeResponse());
  absl::StatusOr<HttpResponse> res = Fetch(Chat(*mock, "m"));
  EXPECT_EQ(res.status().code(), absl::StatusCode::kUnavailable) << res.status();
  EXPECT_EQ(mock->request_count(), 1u);
}

TEST(MockUpstreamTest, ResetBeforeResponseResetsTheConnection) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->EnqueueBehavior(Behavior::ResetBeforeResponse());
  absl::StatusOr<HttpResponse> res = Fetch(Chat(*mock, "m"));
  EXPECT_EQ(res.status().code(), absl::StatusCode::kUnavailable) << res.status();
}

TEST(MockUpstreamTest, ResetNextConnectionsResetsBeforeReadingThenRecovers) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->ResetNextConnections(1);
  absl::StatusOr<HttpResponse> first = Fetch(Chat(*mock, "m"));
  EXPECT_FALSE(first.ok());
  absl::StatusOr<HttpResponse> second = Fetch(Chat(*mock, "m"));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->status, 200);
  EXPECT_EQ(mock->request_count(), 1u);
  EXPECT_EQ(mock->connections_accepted(), 2u);
}

TEST(MockUpstreamTest, RecordsMethodTargetHeadersAndBody) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  HttpRequest req = Chat(*mock, "recorded-model", /*stream=*/false);
  req.url += "?trace=1";
  req.headers = {{"Authorization", "Bearer sk-upstream"}, {"X-Custom", "one"}};

  const Clock::time_point before = Clock::now();
  ASSERT_TRUE(Fetch(req).ok());
  ASSERT_TRUE(mock->WaitForRequests(1, kWait));
  std::vector<RecordedRequest> recorded = mock->requests();
  ASSERT_EQ(recorded.size(), 1u);
  const RecordedRequest& r = recorded.front();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/v1/chat/completions?trace=1");
  EXPECT_EQ(r.Header("authorization"), "Bearer sk-upstream");
  EXPECT_EQ(r.Header("x-custom"), "one");
  EXPECT_EQ(r.Header("content-type"), "application/json");
  EXPECT_TRUE(r.Header("host").has_value());
  EXPECT_EQ(r.body, req.body);
  EXPECT_EQ(r.model, "recorded-model");
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.sequence, 1u);
  EXPECT_EQ(r.connection_id, 1u);
  EXPECT_GE(r.received_at, before);
  EXPECT_EQ(mock->last_request()->body, req.body);

  mock->ClearRecorded();
  EXPECT_EQ(mock->request_count(), 0u);
  EXPECT_TRUE(mock->requests().empty());
}

TEST(MockUpstreamTest, KeepAliveServesSeveralRequestsOverOneConnection) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  absl::StatusOr<std::unique_ptr<HttpConnection>> conn = HttpConnection::Connect(mock->base_url());
  ASSERT_TRUE(conn.ok()) << conn.status();
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<HttpResponse> res = (*conn)->Send(Chat(*mock, "m", /*stream=*/i % 2 == 1));
    ASSERT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(res->status, 200);
    EXPECT_TRUE((*conn)->is_open());
  }
  EXPECT_EQ(mock->connections_accepted(), 1u);
  for (const RecordedRequest& r : mock->requests()) {
    EXPECT_EQ(r.connection_id, 1u);
  }
}

TEST(MockUpstreamTest, AnswersPipelinedRequestsInOrder) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), mock->port()}, ec);
  ASSERT_FALSE(ec) << ec.message();
  timeval tv{5, 0};
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  std::string wire;
  for (const char* model : {"first", "second", "third"}) {
    std::string body = ChatBody(model);
    wire +=
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
  }
  boost::asio::write(socket, boost::asio::buffer(wire), ec);
  ASSERT_FALSE(ec) << ec.message();

  boost::beast::flat_buffer buffer;
  for (const char* model : {"first", "second", "third"}) {
    boost::beast::http::response<boost::beast::http::string_body> res;
    boost::beast::http::read(socket, buffer, res, ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(Str(ParseJson(res.body()).at("model")), model);
  }
}

TEST(MockUpstreamTest, NoticesClientThatLeavesMidStream) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->SetDefaultBehavior(Behavior::Stream(50, milliseconds(50)));
  int seen = 0;
  absl::StatusOr<StreamedResponse> res = FetchStreaming(
      Chat(*mock, "m", /*stream=*/true), [&seen](const SseEvent&) { return ++seen < 2; });
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->body_status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(mock->WaitForAbortedStreams(1, kWait));
  EXPECT_TRUE(mock->WaitForOpenConnections(0, kWait));
  EXPECT_EQ(mock->streams_completed(), 0u);
}

TEST(MockUpstreamTest, ServesConcurrentClientsOnSeveralThreads) {
  MockUpstreamOptions options;
  options.threads = 2;
  auto mock = StartMock(options);
  ASSERT_NE(mock, nullptr);
  constexpr int kClients = 4;
  constexpr int kRequests = 50;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  clients.reserve(kClients);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      auto conn = HttpConnection::Connect(mock->base_url());
      if (!conn.ok()) {
        return;
      }
      for (int i = 0; i < kRequests; ++i) {
        auto res = (*conn)->Send(Chat(*mock, "m"));
        if (res.ok() && res->status == 200) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : clients) {
    t.join();
  }
  EXPECT_EQ(ok.load(), kClients * kRequests);
  EXPECT_EQ(mock->request_count(), static_cast<uint64_t>(kClients * kRequests));
  EXPECT_EQ(mock->connections_accepted(), static_cast<uint64_t>(kClients));
}

TEST(MockUpstreamTest, StopClosesHangingConnectionsAndIsIdempotent) {
  auto mock = StartMock();
  ASSERT_NE(mock, nullptr);
  mock->SetDefaultBehavior(Behavior::Hang());
  HttpRequest req = Chat(*mock, "m");
  req.timeout = milliseconds(30000);
  absl::Status client_status;
  std::thread client([&] { client_status = Fetch(req).status(); });
  ASSERT_TRUE(mock->WaitForRequests(1, kWait));
  const Clock::time_point start = Clock::now();
  mock->Stop();
  client.join();
  EXPECT_EQ(client_status.code(), absl::StatusCode::kUnavailable) << client_status;
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
  mock->Stop();
  EXPECT_FALSE(Fetch(Chat(*mock, "m")).ok());
}

TEST(MockUpstreamTest, HttpsWorksWithTheGeneratedCa) {
  MockUpstreamOptions options;
  options.tls = true;
  auto mock = StartMock(options);
  ASSERT_NE(mock, nullptr);
  EXPECT_EQ(mock->base_url().rfind("https://127.0.0.1:", 0), 0u);
  ASSERT_FALSE(mock->ca_pem().empty());

  absl::StatusOr<HttpResponse> res = Fetch(Chat(*mock, "tls-model"));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(Str(ParseJson(res->body).at("model")), "tls-model");

  // The certificate names localhost as well as 127.0.0.1.
  HttpRequest by_name = Chat(*mock, "tls-model", /*stream=*/true);
  by_name.url = "https://localhost:" + std::to_string(mock->port()) + "/v1/chat/completions";
  absl::StatusOr<StreamedResponse> streamed = FetchStreaming(by_name);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_TRUE(streamed->done());
}

TEST(MockUpstreamTest, HttpsFailsVerificationWithoutTheCa) {
  MockUpstreamOptions options;
  options.tls = true;
  auto mock = StartMock(options);
  ASSERT_NE(mock, nullptr);
  HttpRequest req = Chat(*mock, "m");
  req.tls.ca_pem.clear();  // system trust store only
  absl::StatusOr<HttpResponse> res = Fetch(req);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.status().message().find("certificate verify failed"), std::string_view::npos)
      << res.status();

  // Trusting a different CA fails the same way.
  absl::StatusOr<TestPki> other = GenerateTestPki();
  ASSERT_TRUE(other.ok()) << other.status();
  req.tls.ca_pem = other->ca_cert_pem;
  EXPECT_FALSE(Fetch(req).ok());
}

TEST(MockUpstreamTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  absl::StatusOr<TestPki> pki = GenerateTestPki();
  ASSERT_TRUE(pki.ok()) << pki.status();
  MockUpstreamOptions options;
  options.tls = true;
  options.tls_cert_pem = pki->server_cert_pem;
  options.tls_key_pem = pki->server_key_pem;
  options.tls_client_ca_pem = pki->ca_cert_pem;
  auto mock = StartMock(options);
  ASSERT_NE(mock, nullptr);
  EXPECT_TRUE(mock->ca_pem().empty());

  HttpRequest req = Chat(*mock, "m");
  req.tls.ca_pem = pki->ca_cert_pem;
  EXPECT_FALSE(Fetch(req).ok());

  req.tls.cert_pem = pki->client_cert_pem;
  req.tls.key_pem = pki->client_key_pem;
  absl::StatusOr<HttpResponse> res = Fetch(req);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
}

TEST(MockUpstreamTest, WriteTestPkiWritesPemFilesIntoADirectory) {
  absl::StatusOr<TestPki> pki = GenerateTestPki();
  ASSERT_TRUE(pki.ok()) << pki.status();
  absl::StatusOr<std::string> dir = MakeTempDir();
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<TestPkiFiles> files = WriteTestPki(*pki, *dir);
  ASSERT_TRUE(files.ok()) << files.status();
  for (const auto& [path, want] : {std::pair{files->ca_cert, pki->ca_cert_pem},
                                   std::pair{files->server_key, pki->server_key_pem},
                                   std::pair{files->client_cert, pki->client_cert_pem}}) {
    std::ifstream in(path);
    std::stringstream got;
    got << in.rdbuf();
    EXPECT_EQ(got.str(), want) << path;
  }
  EXPECT_NE(pki->server_key_pem.find("BEGIN PRIVATE KEY"), std::string::npos);
}

}  // namespace
}  // namespace berry::test_support::mock_upstream_test
