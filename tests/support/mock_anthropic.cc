#include "tests/support/mock_anthropic.h"

#include <boost/beast/core/string.hpp>
#include <boost/json.hpp>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/http/server.h"
#include "common/strings/views.h"

namespace berry::test_support {

namespace bj = boost::json;
namespace http = server::http;
namespace net = server::net;

std::optional<std::string> AnthropicRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (boost::beast::iequals(key, name)) {
      return value;
    }
  }
  return std::nullopt;
}

struct MockAnthropic::State {
  Options options;
  std::unique_ptr<server::HttpServer> server;
  mutable absl::Mutex mu;
  AnthropicBehavior behavior ABSL_GUARDED_BY(mu);
  std::deque<AnthropicBehavior> queue ABSL_GUARDED_BY(mu);
  std::vector<AnthropicRequest> requests ABSL_GUARDED_BY(mu);
  int messages_served ABSL_GUARDED_BY(mu) = 0;

  AnthropicBehavior Next() {
    absl::MutexLock lock(&mu);
    ++messages_served;
    if (!queue.empty()) {
      AnthropicBehavior next = std::move(queue.front());
      queue.pop_front();
      return next;
    }
    return behavior;
  }
};

namespace {

std::string ErrorBody(std::string_view type, std::string_view message) {
  return bj::serialize(
      bj::object{{"type", "error"}, {"error", bj::object{{"type", type}, {"message", message}}}});
}

std::string Event(std::string_view type, const bj::object& data) {
  return absl::StrCat("event: ", strings::Absl(type), "\ndata: ", bj::serialize(data), "\n\n");
}

// `text` cut into at most `pieces` parts.
std::vector<std::string> Pieces(const std::string& text, int pieces) {
  std::vector<std::string> parts;
  const size_t n = static_cast<size_t>(std::max(pieces, 1));
  const size_t step = (text.size() + n - 1) / n;
  for (size_t pos = 0; pos < text.size(); pos += std::max<size_t>(step, 1)) {
    parts.push_back(text.substr(pos, step));
  }
  return parts;
}

// The whole message a non-streaming request gets.
std::string MessageJson(const AnthropicBehavior& b, std::string_view model) {
  bj::array content;
  std::string stop_reason = "end_turn";
  if (b.kind == AnthropicBehavior::Kind::kToolUse) {
    content.push_back(bj::object{{"type", "text"}, {"text", "Let me check."}});
    content.push_back(bj::object{{"type", "tool_use"},
                                 {"id", "toolu_mock_1"},
                                 {"name", b.tool_name},
                                 {"input", bj::parse(b.tool_input)}});
    stop_reason = "tool_use";
  } else {
    content.push_back(bj::object{{"type", "text"}, {"text", b.text}});
  }
  return bj::serialize(bj::object{
      {"id", "msg_mock_1"},
      {"type", "message"},
      {"role", "assistant"},
      {"model", model},
      {"content", std::move(content)},
      {"stop_reason", stop_reason},
      {"stop_sequence", nullptr},
      {"usage", bj::object{{"input_tokens", b.input_tokens}, {"output_tokens", b.output_tokens}}}});
}

// The event sequence of a streamed answer, as the API reference lists it.
std::vector<std::string> StreamEvents(const AnthropicBehavior& b, std::string_view model) {
  std::vector<std::string> events;
  events.push_back(
      Event("message_start",
            bj::object{{"type", "message_start"},
                       {"message", bj::object{{"id", "msg_mock_1"},
                                              {"type", "message"},
                                              {"role", "assistant"},
                                              {"content", bj::array()},
                                              {"model", model},
                                              {"stop_reason", nullptr},
                                              {"stop_sequence", nullptr},
                                              {"usage", bj::object{{"input_tokens", b.input_tokens},
                                                                   {"output_tokens", 1}}}}}}));
  if (b.kind == AnthropicBehavior::Kind::kErrorEvent) {
    events.push_back(
        Event("error", bj::parse(ErrorBody("overloaded_error", "Overloaded")).as_object()));
    return events;
  }
  const std::string text = b.kind == AnthropicBehavior::Kind::kToolUse ? "Let me check." : b.text;
  events.push_back(
      Event("content_block_start",
            bj::object{{"type", "content_block_start"},
                       {"index", 0},
                       {"content_block", bj::object{{"type", "text"}, {"text", ""}}}}));
  events.push_back(Event("ping", bj::object{{"type", "ping"}}));
  for (const std::string& piece : Pieces(text, b.text_pieces)) {
    events.push_back(
        Event("content_block_delta",
              bj::object{{"type", "content_block_delta"},
                         {"index", 0},
                         {"delta", bj::object{{"type", "text_delta"}, {"text", piece}}}}));
  }
  events.push_back(
      Event("content_block_stop", bj::object{{"type", "content_block_stop"}, {"index", 0}}));
  std::string stop_reason = "end_turn";
  if (b.kind == AnthropicBehavior::Kind::kToolUse) {
    stop_reason = "tool_use";
    events.push_back(Event("content_block_start",
                           bj::object{{"type", "content_block_start"},
                                      {"index", 1},
                                      {"content_block", bj::object{{"type", "tool_use"},
                                                                   {"id", "toolu_mock_1"},
                                                                   {"name", b.tool_name},
                                                                   {"input", bj::object()}}}}));
    const size_t half = b.tool_input.size() / 2;
    for (const std::string& piece :
         {std::string(), b.tool_input.substr(0, half), b.tool_input.substr(half)}) {
      events.push_back(
          Event("content_block_delta", bj::object{{"type", "content_block_delta"},
                                                  {"index", 1},
                                                  {"delta", bj::object{{"type", "input_json_delta"},
                                                                       {"partial_json", piece}}}}));
    }
    events.push_back(
        Event("content_block_stop", bj::object{{"type", "content_block_stop"}, {"index", 1}}));
  }
  events.push_back(Event(
      "message_delta",
      bj::object{{"type", "message_delta"},
                 {"delta", bj::object{{"stop_reason", stop_reason}, {"stop_sequence", nullptr}}},
                 {"usage", bj::object{{"output_tokens", b.output_tokens}}}}));
  events.push_back(Event("message_stop", bj::object{{"type", "message_stop"}}));
  return events;
}

// GET /v1/models. (Built outside the coroutine: GCC 12 miscompiles initializer lists in one.)
std::string ModelsJson(const std::vector<std::string>& models) {
  bj::array data;
  for (const std::string& id : models) {
    data.push_back(bj::object{{"type", "model"},
                              {"id", id},
                              {"display_name", id},
                              {"created_at", "2025-01-01T00:00:00Z"}});
  }
  return bj::serialize(bj::object{{"data", std::move(data)}, {"has_more", false}});
}

class Handler : public server::Handler {
 public:
  explicit Handler(MockAnthropic::State& state) : state_(state) {}

  uint64_t body_limit() override { return 32u << 20; }

  net::awaitable<void> HandleBadRequest(http::status status, std::string_view reason,
                                        server::Downstream& downstream) override {
    co_await Reply(downstream, static_cast<int>(status),
                   ErrorBody("invalid_request_error", reason));
  }

  net::awaitable<void> Handle(server::Request& request, server::Downstream& downstream) override {
    AnthropicRequest recorded;
    recorded.method = std::string(request.method_string());
    recorded.target = std::string(request.target());
    for (const auto& field : request) {
      recorded.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    recorded.body.assign(request.body().data(), request.body().size());
    {
      absl::MutexLock lock(&state_.mu);
      state_.requests.push_back(recorded);
    }
    const std::string target = recorded.target;
    if (target != "/v1/messages" && target != "/v1/models") {
      co_await Reply(downstream, 404, ErrorBody("not_found_error", "Not found"));
      co_return;
    }
    if (!state_.options.api_key.empty() &&
        recorded.Header("x-api-key") != std::optional<std::string>(state_.options.api_key)) {
      co_await Reply(downstream, 401, ErrorBody("authentication_error", "invalid x-api-key"));
      co_return;
    }
    if (!recorded.Header("anthropic-version")) {
      co_await Reply(downstream, 400,
                     ErrorBody("invalid_request_error", "anthropic-version header is required"));
      co_return;
    }
    if (target == "/v1/models") {
      co_await Reply(downstream, 200, ModelsJson(state_.options.models));
      co_return;
    }
    if (request.method() != http::verb::post) {
      co_await Reply(downstream, 405, ErrorBody("invalid_request_error", "method not allowed"));
      co_return;
    }
    boost::system::error_code ec;
    bj::value body = bj::parse(recorded.body, ec);
    const bj::object* object = !ec && body.is_object() ? &body.get_object() : nullptr;
    if (object == nullptr || !object->contains("model") || !object->at("model").is_string() ||
        !object->contains("max_tokens") || !object->contains("messages") ||
        !object->at("messages").is_array()) {
      co_await Reply(
          downstream, 400,
          ErrorBody("invalid_request_error", "model, max_tokens and messages are required"));
      co_return;
    }
    const std::string model(object->at("model").get_string());
    const bool stream = object->contains("stream") && object->at("stream") == true;
    const AnthropicBehavior behavior = state_.Next();
    if (behavior.kind == AnthropicBehavior::Kind::kError) {
      co_await Reply(downstream, behavior.status,
                     ErrorBody(behavior.error_type, behavior.error_message));
      co_return;
    }
    if (!stream) {
      co_await Reply(downstream, 200, MessageJson(behavior, model));
      co_return;
    }
    server::ResponseHeader header{http::status::ok, 11};
    header.set(http::field::content_type, "text/event-stream; charset=utf-8");
    header.set(http::field::cache_control, "no-cache");
    if (!co_await downstream.WriteHeader(header)) {
      co_return;
    }
    const std::vector<std::string> events = StreamEvents(behavior, model);
    for (size_t i = 0; i < events.size(); ++i) {
      if (behavior.kind == AnthropicBehavior::Kind::kCutMidStream &&
          static_cast<int>(i) == behavior.cut_after_events) {
        downstream.set_keep_alive(false);  // closes without the chunked terminator
        co_return;
      }
      if (!co_await downstream.WriteChunk(events[i])) {
        co_return;
      }
    }
    co_await downstream.WriteEnd();
  }

 private:
  static net::awaitable<void> Reply(server::Downstream& downstream, int status, std::string body) {
    server::Response response{static_cast<http::status>(status), 11};
    response.set(http::field::content_type, "application/json");
    response.set("request-id", "req_mock");
    response.body() = std::move(body);
    co_await downstream.Write(response);
  }

  MockAnthropic::State& state_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MockAnthropic>> MockAnthropic::Start(Options options) {
  std::unique_ptr<MockAnthropic> mock(new MockAnthropic());
  mock->state_ = std::make_shared<State>();
  mock->state_->options = std::move(options);
  server::ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = 1;
  State* state = mock->state_.get();
  auto server = server::HttpServer::Create(
      server_options, [state](int, net::io_context&) { return std::make_unique<Handler>(*state); });
  if (!server.ok()) {
    return server.status();
  }
  mock->state_->server = *std::move(server);
  mock->state_->server->Start();
  return mock;
}

MockAnthropic::~MockAnthropic() { Stop(); }

void MockAnthropic::Stop() {
  if (state_ && state_->server) {
    state_->server->Stop();
  }
}

uint16_t MockAnthropic::port() const { return state_->server->port(); }

std::string MockAnthropic::base_url() const {
  return absl::StrCat("http://127.0.0.1:", port(), "/v1");
}

void MockAnthropic::SetBehavior(AnthropicBehavior behavior) {
  absl::MutexLock lock(&state_->mu);
  state_->behavior = std::move(behavior);
}

void MockAnthropic::Enqueue(AnthropicBehavior behavior) {
  absl::MutexLock lock(&state_->mu);
  state_->queue.push_back(std::move(behavior));
}

std::vector<AnthropicRequest> MockAnthropic::requests() const {
  absl::MutexLock lock(&state_->mu);
  return state_->requests;
}

int MockAnthropic::messages_served() const {
  absl::MutexLock lock(&state_->mu);
  return state_->messages_served;
}

}  // namespace berry::test_support
