#include "data-plane/dialect/anthropic.h"

#include <array>
#include <boost/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json/json_escape.h"
#include "common/strings/views.h"
#include "data-plane/dialect/shared.h"
#include "data-plane/openai/errors.h"
#include "data-plane/openai/request_body.h"

namespace berry::dialect {
namespace {

namespace bj = boost::json;

absl::string_view A(std::string_view s) { return strings::Absl(s); }

using internal::Count;
using internal::Invalid;
using internal::Parse;
using internal::StringAt;
using internal::View;

RequestError Unsupported(std::string param, std::string_view why) {
  RequestError error;
  error.message =
      absl::StrCat("'", param, "' is not supported by this model's Anthropic backend: ", A(why));
  error.param = std::move(param);
  return error;
}

// Fields with no Messages API equivalent that change nothing the client can rely on: dropped.
constexpr std::array<std::string_view, 6> kDropped = {
    "seed", "service_tier", "store", "metadata", "prompt_cache_key", "safety_identifier"};

bool IsDropped(std::string_view key) {
  for (std::string_view d : kDropped) {
    if (d == key) {
      return true;
    }
  }
  return false;
}

// A number that is absent, null or equal to `neutral` changes nothing.
bool IsNeutral(const bj::value& v, double neutral) {
  if (v.is_null()) {
    return true;
  }
  if (v.is_number()) {
    boost::system::error_code ec;
    const double d = v.to_number<double>(ec);
    return !ec && d == neutral;
  }
  return false;
}

// An image_url part as an Anthropic image block.
std::optional<RequestError> ImageBlock(const bj::value& part, const std::string& where,
                                       bj::array& blocks) {
  const bj::value* image = part.as_object().if_contains("image_url");
  std::string_view url;
  if (image != nullptr && image->is_string()) {
    url = View(image->get_string());
  } else if (image != nullptr && image->is_object()) {
    url = StringAt(image->get_object(), "url");
  }
  if (url.empty()) {
    return Invalid(where + ".image_url", "must hold a url");
  }
  bj::object source;
  if (url.starts_with("data:")) {
    // data:<media type>;base64,<data>
    const size_t comma = url.find(',');
    const std::string_view meta =
        comma == std::string_view::npos ? std::string_view() : url.substr(5, comma - 5);
    if (!meta.ends_with(";base64") || meta.size() <= 7) {
      return Invalid(where + ".image_url", "must be a base64 data: URL or an http(s) URL");
    }
    source["type"] = "base64";
    source["media_type"] = meta.substr(0, meta.size() - 7);
    source["data"] = url.substr(comma + 1);
  } else if (url.starts_with("https://") || url.starts_with("http://")) {
    source["type"] = "url";
    source["url"] = url;
  } else {
    return Invalid(where + ".image_url", "must be a base64 data: URL or an http(s) URL");
  }
  bj::object block;
  block["type"] = "image";
  block["source"] = std::move(source);
  blocks.emplace_back(std::move(block));
  return std::nullopt;
}

// Appends a text block unless `text` is empty (the Messages API refuses empty text blocks).
void TextBlock(std::string_view text, bj::array& blocks) {
  if (text.empty()) {
    return;
  }
  bj::object block;
  block["type"] = "text";
  block["text"] = text;
  blocks.emplace_back(std::move(block));
}

// A message's `content` (string, null or array of parts) as content blocks. `images`: whether
// image parts are allowed (user turns).
std::optional<RequestError> ContentBlocks(const bj::value* content, const std::string& where,
                                          bool images, bj::array& blocks) {
  if (content == nullptr || content->is_null()) {
    return std::nullopt;
  }
  if (content->is_string()) {
    TextBlock(View(content->get_string()), blocks);
    return std::nullopt;
  }
  if (!content->is_array()) {
    return Invalid(where, "must be a string or an array of content parts");
  }
  const bj::array& parts = content->get_array();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string part_where = absl::StrCat(where, "[", i, "]");
    if (!parts[i].is_object()) {
      return Invalid(part_where, "must be an object");
    }
    const std::string_view type = StringAt(parts[i].get_object(), "type");
    if (type == "text") {
      TextBlock(StringAt(parts[i].get_object(), "text"), blocks);
    } else if (type == "image_url" && images) {
      if (auto error = ImageBlock(parts[i], part_where, blocks)) {
        return error;
      }
    } else if (type == "refusal") {
      TextBlock(StringAt(parts[i].get_object(), "refusal"), blocks);
    } else {
      return Unsupported(part_where + ".type", absl::StrCat("content parts of type \"", A(type),
                                                            "\" have no equivalent"));
    }
  }
  return std::nullopt;
}

// Appends `blocks` as a turn of `role`, merged into the previous turn when it has the same role
// (the Messages API wants user and assistant turns to alternate).
void AppendTurn(std::string_view role, bj::array blocks, bj::array& messages) {
  if (blocks.empty()) {
    return;
  }
  if (!messages.empty()) {
    bj::object& last = messages.back().as_object();
    if (View(last["role"].as_string()) == role) {
      bj::array& content = last["content"].as_array();
      for (bj::value& block : blocks) {
        content.push_back(std::move(block));
      }
      return;
    }
  }
  bj::object turn;
  turn["role"] = role;
  turn["content"] = std::move(blocks);
  messages.emplace_back(std::move(turn));
}

std::optional<RequestError> TranslateMessages(const bj::value* value, bj::array& system,
                                              bj::array& messages) {
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
    bj::array blocks;
    if (role == "system" || role == "developer") {
      if (auto error = ContentBlocks(content, where + ".content", false, system)) {
        return error;
      }
    } else if (role == "user") {
      if (auto error = ContentBlocks(content, where + ".content", true, blocks)) {
        return error;
      }
      AppendTurn("user", std::move(blocks), messages);
    } else if (role == "assistant") {
      if (auto error = ContentBlocks(content, where + ".content", false, blocks)) {
        return error;
      }
      if (const bj::value* calls = message.if_contains("tool_calls");
          calls != nullptr && !calls->is_null()) {
        if (!calls->is_array()) {
          return Invalid(where + ".tool_calls", "must be an array");
        }
        for (size_t j = 0; j < calls->get_array().size(); ++j) {
          const std::string call_where = absl::StrCat(where, ".tool_calls[", j, "]");
          const bj::value& call = calls->get_array()[j];
          const bj::value* function =
              call.is_object() ? call.get_object().if_contains("function") : nullptr;
          if (function == nullptr || !function->is_object()) {
            return Invalid(call_where + ".function", "must be an object");
          }
          const std::string_view arguments = StringAt(function->get_object(), "arguments");
          std::optional<bj::value> input_value =
              arguments.empty() ? bj::value(bj::object()) : Parse(arguments);
          if (!input_value || !input_value->is_object()) {
            return Invalid(call_where + ".function.arguments", "must be a JSON object");
          }
          bj::object block;
          block["type"] = "tool_use";
          block["id"] = StringAt(call.get_object(), "id");
          block["name"] = StringAt(function->get_object(), "name");
          block["input"] = std::move(*input_value);
          blocks.emplace_back(std::move(block));
        }
      }
      AppendTurn("assistant", std::move(blocks), messages);
    } else if (role == "tool") {
      const std::string_view id = StringAt(message, "tool_call_id");
      if (id.empty()) {
        return Invalid(where + ".tool_call_id", "must be a non-empty string");
      }
      bj::array result_content;
      if (auto error = ContentBlocks(content, where + ".content", false, result_content)) {
        return error;
      }
      bj::object block;
      block["type"] = "tool_result";
      block["tool_use_id"] = id;
      block["content"] = std::move(result_content);
      blocks.emplace_back(std::move(block));
      AppendTurn("user", std::move(blocks), messages);
    } else {
      return Unsupported(where + ".role", absl::StrCat("role \"", A(role), "\" has no equivalent"));
    }
  }
  if (messages.empty()) {
    return Invalid("messages", "must hold at least one user or assistant message with content");
  }
  return std::nullopt;
}

std::optional<RequestError> TranslateTools(const bj::value& value, bj::object& out) {
  if (value.is_null()) {
    return std::nullopt;
  }
  if (!value.is_array()) {
    return Invalid("tools", "must be an array");
  }
  bj::array tools;
  for (size_t i = 0; i < value.get_array().size(); ++i) {
    const std::string where = absl::StrCat("tools[", i, "]");
    const bj::value& tool = value.get_array()[i];
    if (!tool.is_object() || StringAt(tool.get_object(), "type") != "function") {
      return Unsupported(where + ".type", "only function tools have an equivalent");
    }
    const bj::value* function = tool.get_object().if_contains("function");
    if (function == nullptr || !function->is_object() ||
        StringAt(function->get_object(), "name").empty()) {
      return Invalid(where + ".function.name", "must be a non-empty string");
    }
    const bj::object& f = function->get_object();
    bj::object converted;
    converted["name"] = StringAt(f, "name");
    if (const std::string_view description = StringAt(f, "description"); !description.empty()) {
      converted["description"] = description;
    }
    const bj::value* parameters = f.if_contains("parameters");
    if (parameters != nullptr && parameters->is_object()) {
      converted["input_schema"] = *parameters;
    } else {
      converted["input_schema"] = bj::object{{"type", "object"}, {"properties", bj::object()}};
    }
    tools.emplace_back(std::move(converted));
  }
  if (!tools.empty()) {
    out["tools"] = std::move(tools);
  }
  return std::nullopt;
}

std::optional<RequestError> TranslateToolChoice(const bj::value& value, bj::object& out) {
  bj::object choice;
  if (value.is_string()) {
    const std::string_view mode = View(value.get_string());
    if (mode == "auto" || mode == "none") {
      choice["type"] = mode;
    } else if (mode == "required") {
      choice["type"] = "any";
    } else {
      return Invalid("tool_choice", R"(must be "auto", "none", "required" or a function)");
    }
  } else if (value.is_object() && StringAt(value.get_object(), "type") == "function") {
    const bj::value* function = value.get_object().if_contains("function");
    const std::string_view name = function != nullptr && function->is_object()
                                      ? StringAt(function->get_object(), "name")
                                      : std::string_view();
    if (name.empty()) {
      return Invalid("tool_choice.function.name", "must be a non-empty string");
    }
    choice["type"] = "tool";
    choice["name"] = name;
  } else if (!value.is_null()) {
    return Invalid("tool_choice", R"(must be "auto", "none", "required" or a function)");
  } else {
    return std::nullopt;
  }
  out["tool_choice"] = std::move(choice);
  return std::nullopt;
}

std::optional<RequestError> NonNegativeInteger(const bj::value& value, std::string_view key,
                                               int64_t& out) {
  if (value.is_int64() && value.get_int64() > 0) {
    out = value.get_int64();
    return std::nullopt;
  }
  if (value.is_uint64() && value.get_uint64() <= INT64_MAX && value.get_uint64() > 0) {
    out = static_cast<int64_t>(value.get_uint64());
    return std::nullopt;
  }
  return Invalid(std::string(key), "must be a positive integer");
}

std::string_view FinishReason(std::string_view stop_reason) {
  if (stop_reason == "max_tokens" || stop_reason == "model_context_window_exceeded") {
    return "length";
  }
  if (stop_reason == "tool_use") {
    return "tool_calls";
  }
  if (stop_reason == "refusal") {
    return "content_filter";
  }
  return "stop";  // end_turn, stop_sequence, pause_turn and any later addition
}

// OpenAI's error type for an Anthropic one.
std::string_view OpenAiErrorType(std::string_view anthropic_type, int status) {
  if (anthropic_type == "invalid_request_error" || anthropic_type == "not_found_error" ||
      anthropic_type == "request_too_large") {
    return "invalid_request_error";
  }
  if (anthropic_type == "authentication_error") {
    return "authentication_error";
  }
  if (anthropic_type == "permission_error") {
    return "permission_error";
  }
  if (anthropic_type == "rate_limit_error" || status == 429) {
    return "rate_limit_error";
  }
  if (status >= 400 && status < 500) {
    return "invalid_request_error";
  }
  return "server_error";  // api_error, overloaded_error, anything else
}

}  // namespace

uint64_t AnthropicInputTokens(const boost::json::object& usage) {
  return Count(usage, "input_tokens") + Count(usage, "cache_creation_input_tokens") +
         Count(usage, "cache_read_input_tokens");
}

std::optional<RequestError> ToAnthropicRequest(std::string_view openai_body,
                                               std::string_view upstream_model, std::string& out) {
  out.clear();
  std::optional<bj::value> parsed = Parse(openai_body);
  if (!parsed || !parsed->is_object()) {
    return Invalid("messages", "request body must be a JSON object");
  }
  const bj::object& request = parsed->get_object();
  bj::object body;
  body["model"] = upstream_model;
  bj::array system;
  bj::array messages;
  if (auto error = TranslateMessages(request.if_contains("messages"), system, messages)) {
    return error;
  }
  int64_t max_tokens = kAnthropicDefaultMaxTokens;
  bool parallel_tool_calls = true;
  std::optional<RequestError> error;
  for (const auto& [key_view, value] : request) {
    const std::string_view key(key_view.data(), key_view.size());
    if (key == "model" || key == "messages" || key == "stream_options" || IsDropped(key)) {
      continue;
    }
    if (key == "max_tokens" || key == "max_completion_tokens") {
      if (value.is_null()) {
        continue;
      }
      int64_t tokens = 0;
      error = NonNegativeInteger(value, key, tokens);
      // max_completion_tokens replaces the deprecated max_tokens: it wins when both are set.
      if (!error && (key == "max_completion_tokens" || !request.contains("max_completion_tokens") ||
                     request.at("max_completion_tokens").is_null())) {
        max_tokens = tokens;
      }
    } else if (key == "temperature" || key == "top_p") {
      if (!value.is_null() && !value.is_number()) {
        error = Invalid(std::string(key), "must be a number");
      } else if (!value.is_null()) {
        body[key] = value;
      }
    } else if (key == "stream") {
      if (value.is_bool()) {
        body["stream"] = value.get_bool();
      }
    } else if (key == "stop") {
      bj::array sequences;
      if (value.is_string()) {
        sequences.emplace_back(value.get_string());
      } else if (value.is_array()) {
        for (const bj::value& s : value.get_array()) {
          if (!s.is_string()) {
            error = Invalid("stop", "must be a string or an array of strings");
            break;
          }
          sequences.emplace_back(s.get_string());
        }
      } else if (!value.is_null()) {
        error = Invalid("stop", "must be a string or an array of strings");
      }
      if (!sequences.empty()) {
        body["stop_sequences"] = std::move(sequences);
      }
    } else if (key == "tools") {
      error = TranslateTools(value, body);
    } else if (key == "tool_choice") {
      error = TranslateToolChoice(value, body);
    } else if (key == "parallel_tool_calls") {
      if (value.is_bool()) {
        parallel_tool_calls = value.get_bool();
      } else if (!value.is_null()) {
        error = Invalid("parallel_tool_calls", "must be a boolean");
      }
    } else if (key == "user") {
      if (value.is_string() && !value.get_string().empty()) {
        body["metadata"] = bj::object{{"user_id", value.get_string()}};
      }
    } else if (key == "n") {
      if (!IsNeutral(value, 1)) {
        error = Unsupported("n", "it returns one choice per request; n must be 1");
      }
    } else if (key == "logprobs") {
      if (!value.is_null() && !(value.is_bool() && !value.get_bool())) {
        error = Unsupported("logprobs", "it returns no log probabilities");
      }
    } else if (key == "top_logprobs") {
      if (!IsNeutral(value, 0)) {
        error = Unsupported("top_logprobs", "it returns no log probabilities");
      }
    } else if (key == "presence_penalty" || key == "frequency_penalty") {
      if (!IsNeutral(value, 0)) {
        error = Unsupported(std::string(key), "it has no such penalty; leave it unset or 0");
      }
    } else if (key == "logit_bias") {
      if (!value.is_null() && !(value.is_object() && value.get_object().empty())) {
        error = Unsupported("logit_bias", "it has no token biasing");
      }
    } else if (key == "response_format") {
      if (!value.is_null() &&
          !(value.is_object() && StringAt(value.get_object(), "type") == "text")) {
        error = Unsupported("response_format", "it has no JSON mode; only type \"text\"");
      }
    } else if (key == "modalities") {
      if (value.is_array()) {
        for (const bj::value& m : value.get_array()) {
          if (!m.is_string() || m.get_string() != "text") {
            error = Unsupported("modalities", "it answers with text only");
            break;
          }
        }
      } else if (!value.is_null()) {
        error = Invalid("modalities", "must be an array");
      }
    } else {
      error = Unsupported(std::string(key), "the field has no equivalent in the Messages API");
    }
    if (error) {
      return error;
    }
  }
  if (!parallel_tool_calls && body.contains("tools")) {
    bj::value& choice = body["tool_choice"];
    if (choice.is_null()) {
      choice = bj::object{{"type", "auto"}};
    }
    if (StringAt(choice.as_object(), "type") != "none") {
      choice.as_object()["disable_parallel_tool_use"] = true;
    }
  }
  body["max_tokens"] = max_tokens;
  if (!system.empty()) {
    body["system"] = std::move(system);
  }
  body["messages"] = std::move(messages);
  out = bj::serialize(body);
  return std::nullopt;
}

bool FromAnthropicResponse(std::string_view body, int64_t created, std::string& out) {
  std::optional<bj::value> parsed = Parse(body);
  if (!parsed || !parsed->is_object()) {
    return false;
  }
  const bj::object& message = parsed->get_object();
  const bj::value* content = message.if_contains("content");
  if (StringAt(message, "type") != "message" || content == nullptr || !content->is_array()) {
    return false;
  }
  std::string text;
  bj::array tool_calls;
  for (const bj::value& block : content->get_array()) {
    if (!block.is_object()) {
      continue;
    }
    const bj::object& b = block.get_object();
    const std::string_view type = StringAt(b, "type");
    if (type == "text") {
      text.append(StringAt(b, "text"));
    } else if (type == "tool_use") {
      const bj::value* input = b.if_contains("input");
      bj::object call;
      call["id"] = StringAt(b, "id");
      call["type"] = "function";
      call["function"] =
          bj::object{{"name", StringAt(b, "name")},
                     {"arguments", input != nullptr ? bj::serialize(*input) : std::string("{}")}};
      tool_calls.emplace_back(std::move(call));
    }
    // thinking and redacted_thinking blocks have no place in a chat.completion.
  }
  bj::object reply;
  reply["role"] = "assistant";
  if (text.empty() && !tool_calls.empty()) {
    reply["content"] = nullptr;
  } else {
    reply["content"] = text;
  }
  if (!tool_calls.empty()) {
    reply["tool_calls"] = std::move(tool_calls);
  }
  bj::object choice;
  choice["index"] = 0;
  choice["message"] = std::move(reply);
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = FinishReason(StringAt(message, "stop_reason"));

  bj::object result;
  result["id"] = StringAt(message, "id");
  result["object"] = "chat.completion";
  result["created"] = created;
  result["model"] = StringAt(message, "model");
  result["choices"] = bj::array{std::move(choice)};
  if (const bj::value* usage = message.if_contains("usage");
      usage != nullptr && usage->is_object()) {
    const uint64_t prompt = AnthropicInputTokens(usage->get_object());
    const uint64_t completion = Count(usage->get_object(), "output_tokens");
    result["usage"] = bj::object{{"prompt_tokens", prompt},
                                 {"completion_tokens", completion},
                                 {"total_tokens", prompt + completion}};
  }
  out = bj::serialize(result);
  return true;
}

TranslatedError FromAnthropicError(int status, std::string_view body) {
  const int client_status = NormalizeAnthropicStatus(status);
  std::string_view type;
  std::string_view message;
  std::optional<bj::value> parsed = Parse(body);
  if (parsed && parsed->is_object()) {
    const bj::value* error = parsed->get_object().if_contains("error");
    if (error != nullptr && error->is_object()) {
      type = StringAt(error->get_object(), "type");
      message = StringAt(error->get_object(), "message");
    }
  }
  const std::string text =
      message.empty() ? absl::StrCat("the Anthropic backend answered ", status)
                      : absl::StrCat("the Anthropic backend answered ", status, ": ", A(message));
  return {client_status, openai::ErrorJson(text, OpenAiErrorType(type, client_status), {}, type)};
}

void AnthropicStream::AppendChunk(std::string_view delta_json, std::string_view finish_reason,
                                  std::string& out) {
  out.append(R"(data: {"id":)");
  json::AppendJsonString(out, id_);
  absl::StrAppend(&out, R"(,"object":"chat.completion.chunk","created":)", created_,
                  R"(,"model":)");
  json::AppendJsonString(out, model_);
  absl::StrAppend(&out, R"(,"choices":[{"index":0,"delta":)", A(delta_json),
                  R"(,"logprobs":null,"finish_reason":)");
  if (finish_reason.empty()) {
    out.append("null");
  } else {
    json::AppendJsonString(out, finish_reason);
  }
  out.append("}]}\n\n");
}

void AnthropicStream::OnData(std::string_view data, std::string& out) {
  if (finished_ || failed_) {
    return;
  }
  std::optional<bj::value> parsed = Parse(data);
  if (!parsed || !parsed->is_object()) {
    return;  // not an event of the Messages API; nothing the client could use
  }
  const bj::object& event = parsed->get_object();
  const std::string_view type = StringAt(event, "type");
  if (type == "message_start") {
    const bj::value* message = event.if_contains("message");
    if (message != nullptr && message->is_object()) {
      id_ = StringAt(message->get_object(), "id");
      model_ = StringAt(message->get_object(), "model");
      const bj::value* usage = message->get_object().if_contains("usage");
      if (usage != nullptr && usage->is_object()) {
        input_tokens_ = AnthropicInputTokens(usage->get_object());
        output_tokens_ = Count(usage->get_object(), "output_tokens");
      }
    }
    if (!started_) {
      started_ = true;
      AppendChunk(R"({"role":"assistant","content":""})", {}, out);
    }
  } else if (type == "content_block_start") {
    const bj::value* block = event.if_contains("content_block");
    if (block == nullptr || !block->is_object()) {
      return;
    }
    const bj::object& b = block->get_object();
    const std::string_view block_type = StringAt(b, "type");
    if (block_type == "text") {
      const std::string_view text = StringAt(b, "text");
      if (!text.empty()) {
        std::string delta = R"({"content":)";
        json::AppendJsonString(delta, text);
        delta.push_back('}');
        AppendChunk(delta, {}, out);
      }
    } else if (block_type == "tool_use") {
      const bj::value* index = event.if_contains("index");
      tool_blocks_.push_back(index != nullptr && index->is_int64() ? index->get_int64() : -1);
      std::string delta =
          absl::StrCat(R"({"tool_calls":[{"index":)", tool_blocks_.size() - 1, R"(,"id":)");
      json::AppendJsonString(delta, StringAt(b, "id"));
      delta.append(R"(,"type":"function","function":{"name":)");
      json::AppendJsonString(delta, StringAt(b, "name"));
      delta.append(R"(,"arguments":""}}]})");
      AppendChunk(delta, {}, out);
    }
  } else if (type == "content_block_delta") {
    const bj::value* delta_value = event.if_contains("delta");
    if (delta_value == nullptr || !delta_value->is_object()) {
      return;
    }
    const bj::object& d = delta_value->get_object();
    const std::string_view delta_type = StringAt(d, "type");
    if (delta_type == "text_delta") {
      std::string delta = R"({"content":)";
      json::AppendJsonString(delta, StringAt(d, "text"));
      delta.push_back('}');
      AppendChunk(delta, {}, out);
    } else if (delta_type == "input_json_delta") {
      const bj::value* index = event.if_contains("index");
      const int64_t block = index != nullptr && index->is_int64() ? index->get_int64() : -1;
      size_t tool = tool_blocks_.size();
      for (size_t i = 0; i < tool_blocks_.size(); ++i) {
        if (tool_blocks_[i] == block) {
          tool = i;
        }
      }
      if (tool == tool_blocks_.size()) {
        return;  // a delta for a block that never started as tool_use
      }
      std::string delta =
          absl::StrCat(R"({"tool_calls":[{"index":)", tool, R"(,"function":{"arguments":)");
      json::AppendJsonString(delta, StringAt(d, "partial_json"));
      delta.append("}}]}");
      AppendChunk(delta, {}, out);
    }
    // thinking_delta, signature_delta: nothing a chat.completion.chunk carries.
  } else if (type == "message_delta") {
    const bj::value* delta_value = event.if_contains("delta");
    if (delta_value != nullptr && delta_value->is_object()) {
      const std::string_view stop_reason = StringAt(delta_value->get_object(), "stop_reason");
      if (!stop_reason.empty()) {
        finish_reason_ = FinishReason(stop_reason);
      }
    }
    const bj::value* usage = event.if_contains("usage");
    if (usage != nullptr && usage->is_object()) {
      const bj::object& u = usage->get_object();
      if (u.contains("output_tokens")) {
        output_tokens_ = Count(u, "output_tokens");
      }
      if (u.contains("input_tokens")) {
        input_tokens_ = AnthropicInputTokens(u);
      }
    }
    if (!finish_reason_.empty()) {
      AppendChunk("{}", finish_reason_, out);
    }
  } else if (type == "message_stop") {
    finished_ = true;
    if (include_usage_) {
      const std::optional<openai::Usage> counts = usage();
      const uint64_t prompt = counts ? counts->prompt_tokens : 0;
      const uint64_t completion = counts ? counts->completion_tokens : 0;
      out.append(R"(data: {"id":)");
      json::AppendJsonString(out, id_);
      absl::StrAppend(&out, R"(,"object":"chat.completion.chunk","created":)", created_,
                      R"(,"model":)");
      json::AppendJsonString(out, model_);
      absl::StrAppend(&out, R"(,"choices":[],"usage":{"prompt_tokens":)", prompt,
                      R"(,"completion_tokens":)", completion, R"(,"total_tokens":)",
                      prompt + completion, "}}\n\n");
    }
    out.append("data: [DONE]\n\n");
  } else if (type == "error") {
    failed_ = true;
    std::string_view error_type;
    std::string_view message;
    const bj::value* error = event.if_contains("error");
    if (error != nullptr && error->is_object()) {
      error_type = StringAt(error->get_object(), "type");
      message = StringAt(error->get_object(), "message");
    }
    out.append("data: ");
    out.append(openai::ErrorJson(
        absl::StrCat("the Anthropic backend's stream failed: ",
                     A(message.empty() ? std::string_view("error event") : message)),
        OpenAiErrorType(error_type, 500), {}, error_type));
    out.append("\n\n");
  }
  // ping and event types added later: nothing to say.
}

std::optional<openai::Usage> AnthropicStream::usage() const {
  if (!input_tokens_ && !output_tokens_) {
    return std::nullopt;
  }
  return openai::Usage{input_tokens_.value_or(0), output_tokens_.value_or(0)};
}

}  // namespace berry::dialect
