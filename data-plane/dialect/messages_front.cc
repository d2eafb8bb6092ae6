#include "data-plane/dialect/messages_front.h"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json/json_escape.h"
#include "common/strings/views.h"
#include "data-plane/dialect/shared.h"

namespace berry::dialect {
namespace {

namespace bj = boost::json;

using internal::Count;
using internal::Invalid;
using internal::Parse;
using internal::RandomHex;
using internal::StringAt;
using internal::View;

absl::string_view A(std::string_view s) { return strings::Absl(s); }

RequestError Unsupported(std::string param, std::string_view why) {
  RequestError error;
  error.message = absl::StrCat("'", param,
                               "' is not supported when this model is served by a backend "
                               "that does not speak the Messages API: ",
                               A(why));
  error.param = std::move(param);
  return error;
}

// Request fields with no chat.completions equivalent that change nothing the client can rely on
// (sampling or caching hints, extended thinking, the service tier): dropped.
constexpr std::array<std::string_view, 4> kDropped = {"top_k", "thinking", "service_tier",
                                                      "cache_control"};

bool IsDropped(std::string_view key) {
  return std::find(kDropped.begin(), kDropped.end(), key) != kDropped.end();
}

std::string MessageId(std::string_view upstream_id) {
  return absl::StrCat("msg_", upstream_id.empty() ? RandomHex() : std::string(upstream_id));
}

// Anthropic's stop_reason for an OpenAI finish_reason.
std::string_view StopReason(std::string_view finish_reason) {
  if (finish_reason == "length") {
    return "max_tokens";
  }
  if (finish_reason == "tool_calls" || finish_reason == "function_call") {
    return "tool_use";
  }
  if (finish_reason == "content_filter") {
    return "refusal";
  }
  return "end_turn";  // stop and any later addition
}

// The text of a content that is a string or an array of text blocks (system, tool_result).
std::optional<RequestError> JoinedText(const bj::value& content, const std::string& where,
                                       std::string& text) {
  if (content.is_string()) {
    text = View(content.get_string());
    return std::nullopt;
  }
  if (!content.is_array()) {
    return Invalid(where, "must be a string or an array of text blocks");
  }
  const bj::array& blocks = content.get_array();
  for (size_t i = 0; i < blocks.size(); ++i) {
    const std::string block_where = absl::StrCat(where, "[", i, "]");
    if (!blocks[i].is_object()) {
      return Invalid(block_where, "must be an object");
    }
    const std::string_view type = StringAt(blocks[i].get_object(), "type");
    if (type != "text") {
      return Unsupported(block_where + ".type",
                         absl::StrCat("blocks of type \"", A(type), "\" have no equivalent here"));
    }
    if (!text.empty()) {
      text.append("\n\n");
    }
    text.append(StringAt(blocks[i].get_object(), "text"));
  }
  return std::nullopt;
}

// An image block as an OpenAI image_url part.
std::optional<RequestError> ImagePart(const bj::object& block, const std::string& where,
                                      bj::array& parts) {
  const bj::value* source = block.if_contains("source");
  if (source == nullptr || !source->is_object()) {
    return Invalid(where + ".source", "must be an object");
  }
  const bj::object& s = source->get_object();
  const std::string_view type = StringAt(s, "type");
  std::string url;
  if (type == "base64") {
    const std::string_view media_type = StringAt(s, "media_type");
    const std::string_view data = StringAt(s, "data");
    if (media_type.empty() || data.empty()) {
      return Invalid(where + ".source", "must carry media_type and data");
    }
    url = absl::StrCat("data:", A(media_type), ";base64,", A(data));
  } else if (type == "url") {
    url = StringAt(s, "url");
    if (url.empty()) {
      return Invalid(where + ".source.url", "must be a non-empty string");
    }
  } else {
    return Unsupported(where + ".source.type", "only base64 and url image sources have one");
  }
  parts.emplace_back(
      bj::object{{"type", "image_url"}, {"image_url", bj::object{{"url", std::move(url)}}}});
  return std::nullopt;
}

// A tool_result block as an OpenAI tool message.
std::optional<RequestError> ToolMessage(const bj::object& block, const std::string& where,
                                        bj::array& messages) {
  const std::string_view id = StringAt(block, "tool_use_id");
  if (id.empty()) {
    return Invalid(where + ".tool_use_id", "must be a non-empty string");
  }
  std::string text;
  if (const bj::value* content = block.if_contains("content");
      content != nullptr && !content->is_null()) {
    if (auto error = JoinedText(*content, where + ".content", text)) {
      return error;
    }
  }
  // OpenAI's tool messages have no error flag: the content says so instead.
  if (const bj::value* is_error = block.if_contains("is_error");
      is_error != nullptr && *is_error == true) {
    text.insert(0, "Error: ");
  }
  messages.emplace_back(
      bj::object{{"role", "tool"}, {"tool_call_id", id}, {"content", std::move(text)}});
  return std::nullopt;
}

std::optional<RequestError> UserMessage(const bj::value& content, const std::string& where,
                                        bj::array& messages) {
  if (content.is_string()) {
    messages.emplace_back(bj::object{{"role", "user"}, {"content", content.get_string()}});
    return std::nullopt;
  }
  if (!content.is_array()) {
    return Invalid(where, "must be a string or an array of content blocks");
  }
  bj::array parts;
  const bj::array& blocks = content.get_array();
  for (size_t i = 0; i < blocks.size(); ++i) {
    const std::string block_where = absl::StrCat(where, "[", i, "]");
    if (!blocks[i].is_object()) {
      return Invalid(block_where, "must be an object");
    }
    const bj::object& block = blocks[i].get_object();
    const std::string_view type = StringAt(block, "type");
    std::optional<RequestError> error;
    if (type == "text") {
      parts.emplace_back(bj::object{{"type", "text"}, {"text", StringAt(block, "text")}});
    } else if (type == "image") {
      error = ImagePart(block, block_where, parts);
    } else if (type == "tool_result") {
      // Tool messages answer the assistant's calls, so they come before the user's other parts.
      error = ToolMessage(block, block_where, messages);
    } else {
      error = Unsupported(block_where + ".type",
                          absl::StrCat("blocks of type \"", A(type), "\" have no equivalent"));
    }
    if (error) {
      return error;
    }
  }
  if (!parts.empty()) {
    messages.emplace_back(bj::object{{"role", "user"}, {"content", std::move(parts)}});
  }
  return std::nullopt;
}

std::optional<RequestError> AssistantMessage(const bj::value& content, const std::string& where,
                                             bj::array& messages) {
  if (content.is_string()) {
    messages.emplace_back(bj::object{{"role", "assistant"}, {"content", content.get_string()}});
    return std::nullopt;
  }
  if (!content.is_array()) {
    return Invalid(where, "must be a string or an array of content blocks");
  }
  std::string text;
  bj::array tool_calls;
  const bj::array& blocks = content.get_array();
  for (size_t i = 0; i < blocks.size(); ++i) {
    const std::string block_where = absl::StrCat(where, "[", i, "]");
    if (!blocks[i].is_object()) {
      return Invalid(block_where, "must be an object");
    }
    const bj::object& block = blocks[i].get_object();
    const std::string_view type = StringAt(block, "type");
    if (type == "text") {
      text.append(StringAt(block, "text"));
    } else if (type == "tool_use") {
      const std::string_view name = StringAt(block, "name");
      if (name.empty()) {
        return Invalid(block_where + ".name", "must be a non-empty string");
      }
      const bj::value* input = block.if_contains("input");
      tool_calls.emplace_back(bj::object{
          {"id", StringAt(block, "id")},
          {"type", "function"},
          {"function",
           bj::object{{"name", name},
                      {"arguments", input != nullptr && input->is_object() ? bj::serialize(*input)
                                                                           : std::string("{}")}}}});
    } else if (type == "thinking" || type == "redacted_thinking") {
      continue;  // an Anthropic model's reasoning; no other backend can read it back
    } else {
      return Unsupported(block_where + ".type",
                         absl::StrCat("blocks of type \"", A(type), "\" have no equivalent"));
    }
  }
  bj::object message{{"role", "assistant"}};
  if (text.empty() && !tool_calls.empty()) {
    message["content"] = nullptr;
  } else {
    message["content"] = text;
  }
  if (!tool_calls.empty()) {
    message["tool_calls"] = std::move(tool_calls);
  }
  messages.emplace_back(std::move(message));
  return std::nullopt;
}

std::optional<RequestError> TranslateMessages(const bj::value* value, bj::array& messages) {
  if (value == nullptr || !value->is_array() || value->get_array().empty()) {
    return Invalid("messages", "must be a non-empty array");
  }
  const bj::array& input = value->get_array();
  for (size_t i = 0; i < input.size(); ++i) {
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!input[i].is_object()) {
      return Invalid(where, "must be an object");
    }
    const bj::object& message = input[i].get_object();
    const std::string_view role = StringAt(message, "role");
    const bj::value* content = message.if_contains("content");
    if (content == nullptr) {
      return Invalid(where + ".content", "is required");
    }
    std::optional<RequestError> error;
    if (role == "user") {
      error = UserMessage(*content, where + ".content", messages);
    } else if (role == "assistant") {
      error = AssistantMessage(*content, where + ".content", messages);
    } else {
      error = Invalid(where + ".role", R"(must be "user" or "assistant")");
    }
    if (error) {
      return error;
    }
  }
  return std::nullopt;
}

std::optional<RequestError> TranslateTools(const bj::value& value, bj::object& out) {
  if (!value.is_array()) {
    return Invalid("tools", "must be an array");
  }
  bj::array tools;
  for (size_t i = 0; i < value.get_array().size(); ++i) {
    const std::string where = absl::StrCat("tools[", i, "]");
    const bj::value& tool = value.get_array()[i];
    if (!tool.is_object()) {
      return Invalid(where, "must be an object");
    }
    const bj::object& t = tool.get_object();
    // Client tools have no type (or "custom"); Anthropic's server tools (web search, code
    // execution, ...) run at Anthropic.
    if (const std::string_view type = StringAt(t, "type"); !type.empty() && type != "custom") {
      return Unsupported(where + ".type", absl::StrCat("tools of type \"", A(type),
                                                       "\" run at Anthropic; only client "
                                                       "tools have an equivalent"));
    }
    const std::string_view name = StringAt(t, "name");
    if (name.empty()) {
      return Invalid(where + ".name", "must be a non-empty string");
    }
    bj::object function{{"name", name}};
    if (const std::string_view description = StringAt(t, "description"); !description.empty()) {
      function["description"] = description;
    }
    const bj::value* schema = t.if_contains("input_schema");
    if (schema != nullptr && schema->is_object()) {
      function["parameters"] = *schema;
    } else {
      function["parameters"] = bj::object{{"type", "object"}, {"properties", bj::object()}};
    }
    tools.emplace_back(bj::object{{"type", "function"}, {"function", std::move(function)}});
  }
  if (!tools.empty()) {
    out["tools"] = std::move(tools);
  }
  return std::nullopt;
}

std::optional<RequestError> TranslateToolChoice(const bj::value& value, bj::object& out) {
  if (!value.is_object()) {
    return Invalid("tool_choice", "must be an object");
  }
  const bj::object& choice = value.get_object();
  const std::string_view type = StringAt(choice, "type");
  if (type == "auto" || type == "none") {
    out["tool_choice"] = type;
  } else if (type == "any") {
    out["tool_choice"] = "required";
  } else if (type == "tool") {
    const std::string_view name = StringAt(choice, "name");
    if (name.empty()) {
      return Invalid("tool_choice.name", "must be a non-empty string");
    }
    out["tool_choice"] = bj::object{{"type", "function"}, {"function", bj::object{{"name", name}}}};
  } else {
    return Invalid("tool_choice.type", R"(must be "auto", "any", "tool" or "none")");
  }
  if (const bj::value* disable = choice.if_contains("disable_parallel_tool_use");
      disable != nullptr && *disable == true && type != "none") {
    out["parallel_tool_calls"] = false;
  }
  return std::nullopt;
}

std::optional<RequestError> TranslateField(std::string_view key, const bj::value& value,
                                           bj::object& body) {
  if (key == "max_tokens") {
    if ((value.is_int64() && value.get_int64() > 0) ||
        (value.is_uint64() && value.get_uint64() > 0)) {
      body["max_tokens"] = value;
      return std::nullopt;
    }
    return Invalid("max_tokens", "must be a positive integer");
  }
  if (key == "temperature" || key == "top_p") {
    if (!value.is_number()) {
      return Invalid(std::string(key), "must be a number");
    }
    body[key] = value;
    return std::nullopt;
  }
  if (key == "stream") {
    if (value.is_bool() && value.get_bool()) {
      body["stream"] = true;
      body["stream_options"] = bj::object{{"include_usage", true}};
    }
    return std::nullopt;
  }
  if (key == "stop_sequences") {
    bj::array stop;
    if (!value.is_array()) {
      return Invalid("stop_sequences", "must be an array of strings");
    }
    for (const bj::value& s : value.get_array()) {
      if (!s.is_string()) {
        return Invalid("stop_sequences", "must be an array of strings");
      }
      stop.push_back(s);
    }
    if (!stop.empty()) {
      body["stop"] = std::move(stop);
    }
    return std::nullopt;
  }
  if (key == "system") {
    std::string text;
    if (auto error = JoinedText(value, "system", text)) {
      return error;
    }
    if (!text.empty()) {
      // Prepended by the caller: the system message comes first.
      body["system"] = text;
    }
    return std::nullopt;
  }
  if (key == "metadata") {
    if (value.is_object()) {
      if (const std::string_view user = StringAt(value.get_object(), "user_id"); !user.empty()) {
        body["user"] = user;
      }
    }
    return std::nullopt;
  }
  if (key == "tools") {
    return TranslateTools(value, body);
  }
  if (key == "tool_choice") {
    return TranslateToolChoice(value, body);
  }
  return Unsupported(std::string(key), "the field has no equivalent in chat.completions");
}

void AppendEvent(std::string_view type, std::string_view data, std::string& out) {
  absl::StrAppend(&out, "event: ", A(type), "\ndata: ", A(data), "\n\n");
}

}  // namespace

std::optional<RequestError> MessagesToChatRequest(std::string_view messages_body,
                                                  std::string_view upstream_model,
                                                  std::string& out) {
  out.clear();
  std::optional<bj::value> parsed = Parse(messages_body);
  if (!parsed || !parsed->is_object()) {
    return Invalid("messages", "request body must be a JSON object");
  }
  const bj::object& request = parsed->get_object();
  bj::object body;
  body["model"] = upstream_model;
  bj::array messages;
  if (auto error = TranslateMessages(request.if_contains("messages"), messages)) {
    return error;
  }
  for (const auto& [key_view, value] : request) {
    const std::string_view key(key_view.data(), key_view.size());
    if (key == "model" || key == "messages" || IsDropped(key) || value.is_null()) {
      continue;
    }
    if (auto error = TranslateField(key, value, body)) {
      return error;
    }
  }
  if (bj::value* system = body.if_contains("system")) {
    messages.insert(messages.begin(),
                    bj::object{{"role", "system"}, {"content", std::move(*system)}});
    body.erase("system");
  }
  body["messages"] = std::move(messages);
  out = bj::serialize(body);
  return std::nullopt;
}

bool ChatToMessagesResponse(std::string_view body, std::string_view model, std::string& out) {
  std::optional<bj::value> parsed = Parse(body);
  if (!parsed || !parsed->is_object()) {
    return false;
  }
  const bj::object& completion = parsed->get_object();
  const bj::value* choices = completion.if_contains("choices");
  if (choices == nullptr || !choices->is_array() || choices->get_array().empty() ||
      !choices->get_array()[0].is_object()) {
    return false;
  }
  const bj::object& choice = choices->get_array()[0].get_object();
  const bj::value* message_value = choice.if_contains("message");
  if (message_value == nullptr || !message_value->is_object()) {
    return false;
  }
  const bj::object& message = message_value->get_object();
  bj::array content;
  std::string text(StringAt(message, "content"));
  if (text.empty()) {
    text = StringAt(message, "refusal");
  }
  if (!text.empty()) {
    content.emplace_back(bj::object{{"type", "text"}, {"text", std::move(text)}});
  }
  if (const bj::value* calls = message.if_contains("tool_calls");
      calls != nullptr && calls->is_array()) {
    for (const bj::value& call : calls->get_array()) {
      const bj::value* function =
          call.is_object() ? call.get_object().if_contains("function") : nullptr;
      if (function == nullptr || !function->is_object()) {
        continue;
      }
      std::optional<bj::value> input = Parse(StringAt(function->get_object(), "arguments"));
      const std::string_view id = StringAt(call.get_object(), "id");
      content.emplace_back(bj::object{
          {"type", "tool_use"},
          {"id", id.empty() ? absl::StrCat("toolu_", RandomHex()) : std::string(id)},
          {"name", StringAt(function->get_object(), "name")},
          {"input", input && input->is_object() ? std::move(*input) : bj::value(bj::object())}});
    }
  }
  bj::object result;
  result["id"] = MessageId(StringAt(completion, "id"));
  result["type"] = "message";
  result["role"] = "assistant";
  result["model"] = model;
  result["content"] = std::move(content);
  result["stop_reason"] = StopReason(StringAt(choice, "finish_reason"));
  result["stop_sequence"] = nullptr;
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
  if (const bj::value* usage = completion.if_contains("usage");
      usage != nullptr && usage->is_object()) {
    input_tokens = Count(usage->get_object(), "prompt_tokens");
    output_tokens = Count(usage->get_object(), "completion_tokens");
  }
  result["usage"] = bj::object{{"input_tokens", input_tokens}, {"output_tokens", output_tokens}};
  out = bj::serialize(result);
  return true;
}

std::string_view MessagesErrorType(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
    case 529:
      return "overloaded_error";
    case 504:
      return "timeout_error";
    default:
      return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
  }
}

std::string MessagesErrorJson(int status, std::string_view message) {
  std::string out = R"({"type":"error","error":{"type":)";
  json::AppendJsonString(out, MessagesErrorType(status));
  out.append(R"(,"message":)");
  json::AppendJsonString(out, message);
  out.append("}}");
  return out;
}

std::string MessagesErrorFromOpenAi(int status, std::string_view openai_body) {
  std::string_view message;
  std::optional<bj::value> parsed = Parse(openai_body);
  if (parsed && parsed->is_object()) {
    const bj::value* error = parsed->get_object().if_contains("error");
    if (error != nullptr && error->is_object()) {
      message = StringAt(error->get_object(), "message");
    }
  }
  if (message.empty()) {
    return MessagesErrorJson(status, absl::StrCat("the backend answered ", status));
  }
  return MessagesErrorJson(status, message);
}

std::string MessagesSseErrorEvent(std::string_view message, bool overloaded) {
  std::string out;
  AppendEvent("error", MessagesErrorJson(overloaded ? 529 : 500, message), out);
  return out;
}

std::optional<openai::Usage> MessagesUsage(std::string_view body) {
  // Most bodies are small; the ones without usage are rejected without parsing.
  if (body.find("\"usage\"") == std::string_view::npos) {
    return std::nullopt;
  }
  std::optional<bj::value> parsed = Parse(body);
  if (!parsed || !parsed->is_object()) {
    return std::nullopt;
  }
  const bj::value* usage = parsed->get_object().if_contains("usage");
  if (usage == nullptr || !usage->is_object()) {
    return std::nullopt;
  }
  return openai::Usage{AnthropicInputTokens(usage->get_object()),
                       Count(usage->get_object(), "output_tokens")};
}

void MessagesStream::Start(std::string& out) {
  started_ = true;
  std::string data = R"({"type":"message_start","message":{"id":)";
  json::AppendJsonString(data, id_.empty() ? MessageId({}) : id_);
  data.append(R"(,"type":"message","role":"assistant","model":)");
  json::AppendJsonString(data, model_);
  absl::StrAppend(&data,
                  R"(,"content":[],"stop_reason":null,"stop_sequence":null,)"
                  R"("usage":{"input_tokens":)",
                  usage_ ? usage_->prompt_tokens : 0, R"(,"output_tokens":0}}})");
  AppendEvent("message_start", data, out);
}

void MessagesStream::CloseBlock(std::string& out) {
  if (open_block_ < 0) {
    return;
  }
  AppendEvent("content_block_stop",
              absl::StrCat(R"({"type":"content_block_stop","index":)", open_block_, "}"), out);
  open_block_ = -1;
}

void MessagesStream::OpenText(std::string& out) {
  if (open_block_ >= 0 && open_is_text_) {
    return;
  }
  CloseBlock(out);
  open_block_ = blocks_++;
  open_is_text_ = true;
  AppendEvent("content_block_start",
              absl::StrCat(R"({"type":"content_block_start","index":)", open_block_,
                           R"(,"content_block":{"type":"text","text":""}})"),
              out);
}

void MessagesStream::OpenTool(int64_t tool_index, std::string_view id, std::string_view name,
                              std::string& out) {
  CloseBlock(out);
  open_block_ = blocks_++;
  open_is_text_ = false;
  tool_blocks_.emplace_back(tool_index, open_block_);
  std::string data = absl::StrCat(R"({"type":"content_block_start","index":)", open_block_,
                                  R"(,"content_block":{"type":"tool_use","id":)");
  json::AppendJsonString(data, id.empty() ? absl::StrCat("toolu_", RandomHex()) : id);
  data.append(R"(,"name":)");
  json::AppendJsonString(data, name);
  data.append(R"(,"input":{}}})");
  AppendEvent("content_block_start", data, out);
}

void MessagesStream::Finish(std::string& out) {
  if (!started_) {
    Start(out);
  }
  CloseBlock(out);
  std::string data = R"({"type":"message_delta","delta":{"stop_reason":)";
  json::AppendJsonString(data, stop_reason_.empty() ? std::string_view("end_turn") : stop_reason_);
  absl::StrAppend(&data, R"(,"stop_sequence":null},"usage":{"input_tokens":)",
                  usage_ ? usage_->prompt_tokens : 0, R"(,"output_tokens":)",
                  usage_ ? usage_->completion_tokens : 0, "}}");
  AppendEvent("message_delta", data, out);
  AppendEvent("message_stop", R"({"type":"message_stop"})", out);
  finished_ = true;
}

void MessagesStream::OnData(std::string_view data, std::string& out) {
  if (finished_ || failed_) {
    return;
  }
  if (data == "[DONE]") {
    Finish(out);
    return;
  }
  std::optional<bj::value> parsed = Parse(data);
  if (!parsed || !parsed->is_object()) {
    return;  // not a chunk; nothing the client could use
  }
  const bj::object& chunk = parsed->get_object();
  if (const bj::value* error = chunk.if_contains("error"); error != nullptr) {
    failed_ = true;
    const std::string_view message =
        error->is_object() ? StringAt(error->get_object(), "message") : std::string_view();
    out.append(MessagesSseErrorEvent(
        absl::StrCat("the backend's stream failed: ",
                     A(message.empty() ? std::string_view("error event") : message))));
    return;
  }
  if (const bj::value* usage = chunk.if_contains("usage"); usage != nullptr && usage->is_object()) {
    usage_ = openai::Usage{Count(usage->get_object(), "prompt_tokens"),
                           Count(usage->get_object(), "completion_tokens")};
  }
  if (!started_) {
    id_ = MessageId(StringAt(chunk, "id"));
    Start(out);
  }
  const bj::value* choices = chunk.if_contains("choices");
  if (choices == nullptr || !choices->is_array() || choices->get_array().empty() ||
      !choices->get_array()[0].is_object()) {
    return;  // the usage chunk, or one with nothing to say
  }
  const bj::object& choice = choices->get_array()[0].get_object();
  if (const bj::value* delta = choice.if_contains("delta");
      delta != nullptr && delta->is_object()) {
    const bj::object& d = delta->get_object();
    if (const std::string_view text = StringAt(d, "content"); !text.empty()) {
      OpenText(out);
      std::string event = absl::StrCat(R"({"type":"content_block_delta","index":)", open_block_,
                                       R"(,"delta":{"type":"text_delta","text":)");
      json::AppendJsonString(event, text);
      event.append("}}");
      AppendEvent("content_block_delta", event, out);
    }
    const bj::value* calls = d.if_contains("tool_calls");
    if (calls != nullptr && calls->is_array()) {
      for (const bj::value& call : calls->get_array()) {
        if (!call.is_object()) {
          continue;
        }
        const bj::object& c = call.get_object();
        const bj::value* index_value = c.if_contains("index");
        const int64_t index =
            index_value != nullptr && index_value->is_int64() ? index_value->get_int64() : 0;
        const bj::value* function = c.if_contains("function");
        const bj::object empty;
        const bj::object& f =
            function != nullptr && function->is_object() ? function->get_object() : empty;
        int64_t block = -1;
        for (const auto& [tool, b] : tool_blocks_) {
          if (tool == index) {
            block = b;
          }
        }
        if (block < 0) {
          OpenTool(index, StringAt(c, "id"), StringAt(f, "name"), out);
          block = open_block_;
        }
        if (const std::string_view arguments = StringAt(f, "arguments"); !arguments.empty()) {
          std::string event =
              absl::StrCat(R"({"type":"content_block_delta","index":)", block,
                           R"(,"delta":{"type":"input_json_delta","partial_json":)");
          json::AppendJsonString(event, arguments);
          event.append("}}");
          AppendEvent("content_block_delta", event, out);
        }
      }
    }
  }
  if (const std::string_view finish = StringAt(choice, "finish_reason"); !finish.empty()) {
    stop_reason_ = StopReason(finish);
    CloseBlock(out);
  }
}

void MessagesStream::OnEnd(std::string& out) {
  if (!finished_ && !failed_ && !stop_reason_.empty()) {
    Finish(out);
  }
}

}  // namespace berry::dialect
