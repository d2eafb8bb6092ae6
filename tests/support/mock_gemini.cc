#include "tests/support/mock_gemini.h"

#include <algorithm>
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

std::optional<std::string> GeminiRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (boost::beast::iequals(key, name)) {
      return value;
    }
  }
  return std::nullopt;
}

struct MockGemini::State {
  Options options;
  std::unique_ptr<server::HttpServer> server;
  mutable absl::Mutex mu;
  GeminiBehavior behavior ABSL_GUARDED_BY(mu);
  std::deque<GeminiBehavior> queue ABSL_GUARDED_BY(mu);
  std::vector<GeminiRequest> requests ABSL_GUARDED_BY(mu);
  int generations_served ABSL_GUARDED_BY(mu) = 0;

  GeminiBehavior Next() {
    absl::MutexLock lock(&mu);
    ++generations_served;
    if (!queue.empty()) {
      GeminiBehavior next = std::move(queue.front());
      queue.pop_front();
      return next;
    }
    return behavior;
  }
};

namespace {

constexpr std::string_view kPrefix = "/v1beta";
constexpr std::string_view kModelVersion = "gemini-mock-001";
constexpr std::string_view kResponseId = "resp_mock_1";

// google.rpc.Status as the API sends it.
bj::object ErrorObject(int code, std::string_view status, std::string_view message) {
  return bj::object{
      {"error", bj::object{{"code", code}, {"message", message}, {"status", status}}}};
}

std::string ErrorBody(int code, std::string_view status, std::string_view message) {
  return bj::serialize(ErrorObject(code, status, message));
}

// `text` cut into at most `pieces` parts.
std::vector<std::string> Pieces(const std::string& text, int pieces) {
  std::vector<std::string> parts;
  const size_t n = static_cast<size_t>(std::max(pieces, 1));
  const size_t step = std::max<size_t>((text.size() + n - 1) / n, 1);
  for (size_t pos = 0; pos < text.size(); pos += step) {
    parts.push_back(text.substr(pos, step));
  }
  return parts;
}

bj::object Usage(const GeminiBehavior& b, int candidates_tokens) {
  return bj::object{{"promptTokenCount", b.prompt_tokens},
                    {"candidatesTokenCount", candidates_tokens},
                    {"totalTokenCount", b.prompt_tokens + candidates_tokens}};
}

// One GenerateContentResponse with `parts`; `finish` empty for a chunk before the last.
std::string ResponseJson(const GeminiBehavior& b, bj::array parts, std::string_view finish,
                         int candidates_tokens) {
  bj::object candidate{{"content", bj::object{{"parts", std::move(parts)}, {"role", "model"}}},
                       {"index", 0}};
  if (!finish.empty()) {
    candidate["finishReason"] = finish;
  }
  return bj::serialize(bj::object{{"candidates", bj::array{std::move(candidate)}},
                                  {"usageMetadata", Usage(b, candidates_tokens)},
                                  {"modelVersion", kModelVersion},
                                  {"responseId", kResponseId}});
}

bj::object FunctionCallPart(const GeminiBehavior& b) {
  return bj::object{{"functionCall",
                     bj::object{{"name", b.function_name}, {"args", bj::parse(b.function_args)}}}};
}

// The whole answer a generateContent request gets.
std::string WholeResponse(const GeminiBehavior& b) {
  bj::array parts;
  if (b.kind == GeminiBehavior::Kind::kFunctionCall) {
    parts.push_back(bj::object{{"text", "Let me check."}});
    parts.push_back(FunctionCallPart(b));
  } else {
    parts.push_back(bj::object{{"text", b.text}});
  }
  return ResponseJson(b, std::move(parts), b.finish_reason, b.candidates_tokens);
}

std::string Event(std::string_view json) {
  return absl::StrCat("data: ", strings::Absl(json), "\r\n\r\n");
}

// The chunks of a streamed answer: text pieces, then (kFunctionCall) the call; the last one
// carries finishReason and the final counts.
std::vector<std::string> StreamEvents(const GeminiBehavior& b) {
  std::vector<std::string> events;
  const bool call = b.kind == GeminiBehavior::Kind::kFunctionCall;
  const std::vector<std::string> pieces = Pieces(call ? "Let me check." : b.text, b.text_pieces);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const bool last = !call && i + 1 == pieces.size();
    events.push_back(Event(ResponseJson(b, bj::array{bj::object{{"text", pieces[i]}}},
                                        last ? std::string_view(b.finish_reason) : "",
                                        last ? b.candidates_tokens : static_cast<int>(i) + 1)));
    if (b.kind == GeminiBehavior::Kind::kErrorEvent) {
      events.push_back(Event(bj::serialize(
          ErrorObject(503, "UNAVAILABLE", "The model is overloaded. Please try again later."))));
      return events;
    }
  }
  if (call) {
    events.push_back(Event(
        ResponseJson(b, bj::array{FunctionCallPart(b)}, b.finish_reason, b.candidates_tokens)));
  }
  return events;
}

// GET /v1beta/models. (Built outside the coroutine: GCC 12 miscompiles initializer lists in one.)
std::string ModelsJson(const std::vector<std::string>& models) {
  bj::array list;
  for (const std::string& id : models) {
    list.push_back(bj::object{
        {"name", "models/" + id},
        {"displayName", id},
        {"supportedGenerationMethods", bj::array{"generateContent", "streamGenerateContent"}}});
  }
  return bj::serialize(bj::object{{"models", std::move(list)}});
}

// What is wrong with a GenerateContentRequest body, or "" when nothing is.
std::string CheckBody(const std::string& text) {
  boost::system::error_code ec;
  const bj::value body = bj::parse(text, ec);
  if (ec || !body.is_object()) {
    return "Invalid JSON payload received.";
  }
  static constexpr std::string_view kKnown[] = {
      "contents",         "systemInstruction", "tools",        "toolConfig",
      "generationConfig", "safetySettings",    "cachedContent"};
  for (const auto& [key, value] : body.get_object()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), std::string_view(key.data(), key.size())) ==
        std::end(kKnown)) {
      return absl::StrCat("Invalid JSON payload received. Unknown name \"",
                          absl::string_view(key.data(), key.size()), "\": Cannot find field.");
    }
  }
  const bj::value* contents = body.get_object().if_contains("contents");
  if (contents == nullptr || !contents->is_array() || contents->get_array().empty()) {
    return "* GenerateContentRequest.contents: contents is not specified";
  }
  for (const bj::value& content : contents->get_array()) {
    const bj::object* c = content.if_object();
    const bj::value* role = c != nullptr ? c->if_contains("role") : nullptr;
    const bj::value* parts = c != nullptr ? c->if_contains("parts") : nullptr;
    if (role == nullptr || !(*role == "user" || *role == "model") || parts == nullptr ||
        !parts->is_array() || parts->get_array().empty()) {
      return "* GenerateContentRequest.contents: each content needs role user or model and parts";
    }
  }
  return "";
}

class Handler : public server::Handler {
 public:
  explicit Handler(MockGemini::State& state) : state_(state) {}

  uint64_t body_limit() override { return 32u << 20; }

  net::awaitable<void> HandleBadRequest(http::status status, std::string_view reason,
                                        server::Downstream& downstream) override {
    co_await Reply(downstream, static_cast<int>(status),
                   ErrorBody(static_cast<int>(status), "INVALID_ARGUMENT", reason));
  }

  net::awaitable<void> Handle(server::Request& request, server::Downstream& downstream) override {
    GeminiRequest recorded;
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
    std::string_view target = recorded.target;
    std::string_view query;
    if (const size_t q = target.find('?'); q != std::string_view::npos) {
      query = target.substr(q + 1);
      target = target.substr(0, q);
    }
    const std::string models = std::string(kPrefix) + "/models";
    const bool list = target == models;
    const bool generate = target.starts_with(models + "/") && target.ends_with(":generateContent");
    const bool stream =
        target.starts_with(models + "/") && target.ends_with(":streamGenerateContent");
    if (!list && !generate && !stream) {
      co_await Reply(downstream, 404, ErrorBody(404, "NOT_FOUND", "Not found"));
      co_return;
    }
    const std::optional<std::string> key = recorded.Header("x-goog-api-key");
    if (!state_.options.api_key.empty() && !key) {
      co_await Reply(downstream, 403,
                     ErrorBody(403, "PERMISSION_DENIED",
                               "Method doesn't allow unregistered callers. Please use API Key."));
      co_return;
    }
    if (!state_.options.api_key.empty() && *key != state_.options.api_key) {
      co_await Reply(
          downstream, 400,
          ErrorBody(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."));
      co_return;
    }
    if (list) {
      co_await Reply(downstream, 200, ModelsJson(state_.options.models));
      co_return;
    }
    if (request.method() != http::verb::post) {
      co_await Reply(downstream, 405, ErrorBody(405, "INVALID_ARGUMENT", "method not allowed"));
      co_return;
    }
    if (stream && query != "alt=sse") {
      co_await Reply(downstream, 400,
                     ErrorBody(400, "INVALID_ARGUMENT", "this mock serves only alt=sse streams"));
      co_return;
    }
    if (const std::string problem = CheckBody(recorded.body); !problem.empty()) {
      co_await Reply(downstream, 400, ErrorBody(400, "INVALID_ARGUMENT", problem));
      co_return;
    }
    const GeminiBehavior behavior = state_.Next();
    if (behavior.kind == GeminiBehavior::Kind::kError) {
      co_await Reply(downstream, behavior.status,
                     ErrorBody(behavior.status, behavior.status_name, behavior.error_message));
      co_return;
    }
    if (!stream) {
      co_await Reply(downstream, 200, WholeResponse(behavior));
      co_return;
    }
    server::ResponseHeader header{http::status::ok, 11};
    header.set(http::field::content_type, "text/event-stream");
    if (!co_await downstream.WriteHeader(header)) {
      co_return;
    }
    const std::vector<std::string> events = StreamEvents(behavior);
    for (size_t i = 0; i < events.size(); ++i) {
      if (behavior.kind == GeminiBehavior::Kind::kCutMidStream &&
          static_cast<int>(i) == behavior.cut_after_chunks) {
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
    response.set(http::field::content_type, "application/json; charset=UTF-8");
    response.body() = std::move(body);
    co_await downstream.Write(response);
  }

  MockGemini::State& state_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MockGemini>> MockGemini::Start(Options options) {
  std::unique_ptr<MockGemini> mock(new MockGemini());
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

MockGemini::~MockGemini() { Stop(); }

void MockGemini::Stop() {
  if (state_ && state_->server) {
    state_->server->Stop();
  }
}

uint16_t MockGemini::port() const { return state_->server->port(); }

std::string MockGemini::base_url() const {
  return absl::StrCat("http://127.0.0.1:", port(), strings::Absl(kPrefix));
}

void MockGemini::SetBehavior(GeminiBehavior behavior) {
  absl::MutexLock lock(&state_->mu);
  state_->behavior = std::move(behavior);
}

void MockGemini::Enqueue(GeminiBehavior behavior) {
  absl::MutexLock lock(&state_->mu);
  state_->queue.push_back(std::move(behavior));
}

std::vector<GeminiRequest> MockGemini::requests() const {
  absl::MutexLock lock(&state_->mu);
  return state_->requests;
}

int MockGemini::generations_served() const {
  absl::MutexLock lock(&state_->mu);
  return state_->generations_served;
}

}  // namespace berry::test_support
