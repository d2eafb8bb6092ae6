#include "data-plane/dialect/gemini.h"

#include <array>
#include <boost/json.hpp>
#include <random>
#include <utility>

#include "absl/container/flat_hash_map.h"
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
using internal::RandomHex;
using internal::StringAt;
using internal::View;

RequestError Unsupported(std::string param, std::string_view why) {
  RequestError error;
  error.message =
      absl::StrCat("'", param, "' is not supported by this model's Gemini backend: ", A(why));
  error.param = std::move(param);
  return error;
}

// Fields with no Gemini equivalent that change nothing the client can rely on: dropped.
constexpr std::array<std::string_view, 6> kDropped = {
    "service_tier", "store", "metadata", "prompt_cache_key", "safety_identifier", "user"};

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

std::string ToolCallId() { return absl::StrCat("call_", RandomHex()); }

// Appends a text part unless `text` is empty (Gemini refuses empty parts).
void TextPart(std::string_view text, bj::array& parts) {
  if (!text.empty()) {
    parts.emplace_back(bj::object{{"text", text}});
  }
}

// An image_url part as an inlineData part: only base64 data: URLs have an equivalent (fileData
// takes URIs of Gemini's File API, not arbitrary web URLs).
std::optional<RequestError> ImagePart(const bj::value& part, const std::string& where,
                                      bj::array& parts) {
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
  if (!url.starts_with("data:")) {
    return Unsupported(where + ".image_url",
                       "only base64 data: URLs can be sent inline; fetch the image and send it "
                       "as data:<type>;base64,...");
  }
  const size_t comma = url.find(',');
  const std::string_view meta =
      comma == std::string_view::npos ? std::string_view() : url.substr(5, comma - 5);
  if (!meta.ends_with(";base64") || meta.size() <= 7) {
    return Invalid(where + ".image_url", "must be a base64 data: URL");
  }
  parts.emplace_back(
      bj::object{{"inlineData", bj::object{{"mimeType", meta.substr(0, meta.size() - 7)},
                                           {"data", url.substr(comma + 1)}}}});
  return std::nullopt;
}

// A message's `content` (string, null or array of parts) as Gemini parts. `images`: whether
// image parts are allowed (user turns).
std::optional<RequestError> ContentParts(const bj::value* content, const std::string& where,
                                         bool images, bj::array& parts) {
  if (content == nullptr || content->is_null()) {
    return std::nullopt;
  }
  if (content->is_string()) {
    TextPart(View(content->get_string()), parts);
    return std::nullopt;
  }
  if (!content->is_array()) {
    return Invalid(where, "must be a string or an array of content parts");
  }
  const bj::array& input = content->get_array();
  for (size_t i = 0; i < input.size(); ++i) {
    const std::string part_where = absl::StrCat(where, "[", i, "]");
    if (!input[i].is_object()) {
      return Invalid(part_where, "must be an object");
    }
    const std::string_view type = StringAt(input[i].get_object(), "type");
    if (type == "text") {
      TextPart(StringAt(input[i].get_object(), "text"), parts);
    } else if (type == "image_url" && images) {
      if (auto error = ImagePart(input[i], part_where, parts)) {
        return error;
      }
    } else if (type == "refusal") {
      TextPart(StringAt(input[i].get_object(), "refusal"), parts);
    } else {
      return Unsupported(part_where + ".type", absl::StrCat("content parts of type \"", A(type),
                                                            "\" have no equivalent"));
    }
  }
  return std::nullopt;
}

// The text of a tool message's content: a string, or its text parts joined.
std::optional<RequestError> ToolText(const bj::value* content, const std::string& where,
                                     std::string& text) {
  bj::array parts;
  if (auto error = ContentParts(content, where, false, parts)) {
    return error;
  }
  for (const bj::value& part : parts) {
    text.append(StringAt(part.as_object(), "text"));
  }
  return std::nullopt;
}

// Appends `parts` as a turn of `role` ("user" or "model"), merged into the previous turn when it
// has the same role.
void AppendTurn(std::string_view role, bj::array parts, bj::array& contents) {
  if (parts.empty()) {
    return;
  }
  if (!contents.empty()) {
    bj::object& last = contents.back().as_object();
    if (View(last["role"].as_string()) == role) {
      bj::array& existing = last["parts"].as_array();
      for (bj::value& part : parts) {
        existing.push_back(std::move(part));
      }
      return;
    }
  }
  contents.emplace_back(bj::object{{"role", role}, {"parts", std::move(parts)}});
}

std::optional<RequestError> TranslateMessages(const bj::value* value, bj::array& system,
                                              bj::array& contents) {
  if (value == nullptr || !value->is_array() || value->get_array().empty()) {
    return Invalid("messages", "must be a non-empty array");
  }
  // Gemini's functionResponse names the function, OpenAI's tool message the call id: the name
  // comes from the assistant message that made the call.
  absl::flat_hash_map<std::string, std::string> call_names;
  const bj::array& input = value->get_array();
  for (size_t i = 0; i < input.size(); ++i) {
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!input[i].is_object()) {
      return Invalid(where, "must be an object");
    }
    const bj::object& message = input[i].get_object();
    const std::string_view role = StringAt(message, "role");
    const bj::value* content = message.if_contains("content");
    bj::array parts;
    if (role == "system" || role == "developer") {
      if (auto error = ContentParts(content, where + ".content", false, system)) {
        return error;
      }
    } else if (role == "user") {
      if (auto error = ContentParts(content, where + ".content", true, parts)) {
        return error;
      }
      AppendTurn("user", std::move(parts), contents);
    } else if (role == "assistant") {
      if (auto error = ContentParts(content, where + ".content", false, parts)) {
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
          const std::string_view name = StringAt(function->get_object(), "name");
          if (name.empty()) {
            return Invalid(call_where + ".function.name", "must be a non-empty string");
          }
          const std::string_view arguments = StringAt(function->get_object(), "arguments");
          std::optional<bj::value> args =
              arguments.empty() ? bj::value(bj::object()) : Parse(arguments);
          if (!args || !args->is_object()) {
            return Invalid(call_where + ".function.arguments", "must be a JSON object");
          }
          call_names[std::string(StringAt(call.get_object(), "id"))] = std::string(name);
          parts.emplace_back(
              bj::object{{"functionCall", bj::object{{"name", name}, {"args", std::move(*args)}}}});
        }
      }
      AppendTurn("model", std::move(parts), contents);
    } else if (role == "tool") {
      const std::string_view id = StringAt(message, "tool_call_id");
      if (id.empty()) {
        return Invalid(where + ".tool_call_id", "must be a non-empty string");
      }
      const auto name = call_names.find(A(id));
      if (name == call_names.end()) {
        return Invalid(where + ".tool_call_id",
                       "matches no tool call of an earlier assistant "
                       "message (Gemini needs the function's name)");
      }
      std::string text;
      if (auto error = ToolText(content, where + ".content", text)) {
        return error;
      }
      // A JSON object result is passed as the response itself; anything else as its content.
      std::optional<bj::value> object = Parse(text);
      bj::value response = object && object->is_object() ? std::move(*object)
                                                         : bj::value(bj::object{{"content", text}});
      parts.emplace_back(
          bj::object{{"functionResponse",
                      bj::object{{"name", name->second}, {"response", std::move(response)}}}});
      AppendTurn("user", std::move(parts), contents);
    } else {
      return Unsupported(where + ".role", absl::StrCat("role \"", A(role), "\" has no equivalent"));
    }
  }
  if (contents.empty()) {
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
  bj::array declarations;
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
    bj::object declaration;
    declaration["name"] = StringAt(f, "name");
    if (const std::string_view description = StringAt(f, "description"); !description.empty()) {
      declaration["description"] = description;
    }
    if (const bj::value* parameters = f.if_contains("parameters");
        parameters != nullptr && parameters->is_object()) {
      declaration["parameters"] = *parameters;
    }
    declarations.emplace_back(std::move(declaration));
  }
  if (!declarations.empty()) {
    out["tools"] = bj::array{bj::object{{"functionDeclarations", std::move(declarations)}}};
  }
  return std::nullopt;
}

std::optional<RequestError> TranslateToolChoice(const bj::value& value, bj::object& out) {
  bj::object config;
  if (value.is_string()) {
    const std::string_view mode = View(value.get_string());
    if (mode == "auto") {
      config["mode"] = "AUTO";
    } else if (mode == "none") {
      config["mode"] = "NONE";
    } else if (mode == "required") {
      config["mode"] = "ANY";
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
    config["mode"] = "ANY";
    config["allowedFunctionNames"] = bj::array{name};
  } else if (!value.is_null()) {
    return Invalid("tool_choice", R"(must be "auto", "none", "required" or a function)");
  } else {
    return std::nullopt;
  }
  out["toolConfig"] = bj::object{{"functionCallingConfig", std::move(config)}};
  return std::nullopt;
}

std::optional<RequestError> PositiveInteger(const bj::value& value, std::string_view key,
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

// usageMetadata as OpenAI counts it: the thinking tokens are completion tokens (as OpenAI's
// reasoning tokens are).
openai::Usage UsageOf(const bj::object& metadata) {
  return openai::Usage{
      Count(metadata, "promptTokenCount"),
      Count(metadata, "candidatesTokenCount") + Count(metadata, "thoughtsTokenCount")};
}

// OpenAI's finish_reason for a candidate's finishReason; "" while it has none.
std::string_view FinishReason(std::string_view reason, bool tool_calls) {
  if (reason.empty()) {
    return {};
  }
  if (reason == "MAX_TOKENS") {
    return "length";
  }
  if (reason == "SAFETY" || reason == "RECITATION" || reason == "BLOCKLIST" ||
      reason == "PROHIBITED_CONTENT" || reason == "SPII" || reason == "IMAGE_SAFETY") {
    return "content_filter";
  }
  if (tool_calls) {
    return "tool_calls";
  }
  return "stop";  // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL and any later addition
}

// OpenAI's error type for a Gemini status (google.rpc.Code name).
std::string_view OpenAiErrorType(std::string_view status_name, int status) {
  if (status_name == "UNAUTHENTICATED" || status == 401) {
    return "authentication_error";
  }
  if (status_name == "PERMISSION_DENIED" || status == 403) {
    return "permission_error";
  }
  if (status_name == "RESOURCE_EXHAUSTED" || status == 429) {
    return "rate_limit_error";
  }
  if (status >= 400 && status < 500) {
    return "invalid_request_error";  // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...
  }
  return "server_error";  // INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, anything else
}

// The `error` object of a Gemini error body (also when wrapped in an array, as the streaming
// endpoint sends it); nullptr when there is none.
const bj::object* ErrorObject(const bj::value& parsed) {
  const bj::value* top = &parsed;
  if (top->is_array() && !top->get_array().empty()) {
    top = &top->get_array()[0];
  }
  if (!top->is_object()) {
    return nullptr;
  }
  const bj::value* error = top->get_object().if_contains("error");
  return error != nullptr && error->is_object() ? &error->get_object() : nullptr;
}

// The parts of `candidate`'s content: text joined into `text`, function calls appended to
// `tool_calls` as OpenAI tool calls (thought parts skipped).
void ReadParts(const bj::object& candidate, std::string& text, bj::array& tool_calls) {
  const bj::value* content = candidate.if_contains("content");
  if (content == nullptr || !content->is_object()) {
    return;
  }
  const bj::value* parts = content->get_object().if_contains("parts");
  if (parts == nullptr || !parts->is_array()) {
    return;
  }
  for (const bj::value& part : parts->get_array()) {
    if (!part.is_object()) {
      continue;
    }
    const bj::object& p = part.get_object();
    if (const bj::value* thought = p.if_contains("thought");
        thought != nullptr && *thought == true) {
      continue;  // a thought summary has no place in a chat.completion
    }
    if (const bj::value* call = p.if_contains("functionCall");
        call != nullptr && call->is_object()) {
      const bj::value* args = call->get_object().if_contains("args");
      tool_calls.emplace_back(bj::object{
          {"id", ToolCallId()},
          {"type", "function"},
          {"function",
           bj::object{{"name", StringAt(call->get_object(), "name")},
                      {"arguments", args != nullptr && args->is_object() ? bj::serialize(*args)
                                                                         : std::string("{}")}}}});
    } else {
      text.append(StringAt(p, "text"));
    }
  }
}

std::string CompletionId(const bj::object& response) {
  const std::string_view id = StringAt(response, "responseId");
  return absl::StrCat("chatcmpl-", id.empty() ? RandomHex() : std::string(id));
}

}  // namespace

std::string GeminiPath(std::string_view upstream_model, bool stream) {
  std::string path = "/models/";
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (const char c : upstream_model) {
    const auto u = static_cast<unsigned char>(c);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      path.push_back(c);
    } else {
      path.push_back('%');
      path.push_back(kHex[u >> 4]);
      path.push_back(kHex[u & 0xf]);
    }
  }
  path.append(stream ? ":streamGenerateContent" : ":generateContent");
  return path;
}

std::optional<RequestError> ToGeminiRequest(std::string_view openai_body, std::string& out) {
  out.clear();
  std::optional<bj::value> parsed = Parse(openai_body);
  if (!parsed || !parsed->is_object()) {
    return Invalid("messages", "request body must be a JSON object");
  }
  const bj::object& request = parsed->get_object();
  bj::object body;
  bj::array system;
  bj::array contents;
  if (auto error = TranslateMessages(request.if_contains("messages"), system, contents)) {
    return error;
  }
  bj::object generation;
  std::optional<RequestError> error;
  for (const auto& [key_view, value] : request) {
    const std::string_view key(key_view.data(), key_view.size());
    if (key == "model" || key == "messages" || key == "stream" || key == "stream_options" ||
        IsDropped(key)) {
      continue;  // the model and streaming go in the path
    }
    if (key == "max_tokens" || key == "max_completion_tokens") {
      if (value.is_null()) {
        continue;
      }
      int64_t tokens = 0;
      error = PositiveInteger(value, key, tokens);
      // max_completion_tokens replaces the deprecated max_tokens: it wins when both are set.
      if (!error && (key == "max_completion_tokens" || !request.contains("max_completion_tokens") ||
                     request.at("max_completion_tokens").is_null())) {
        generation["maxOutputTokens"] = tokens;
      }
    } else if (key == "temperature" || key == "top_p" || key == "presence_penalty" ||
               key == "frequency_penalty") {
      if (!value.is_null() && !value.is_number()) {
        error = Invalid(std::string(key), "must be a number");
      } else if (!value.is_null()) {
        const std::string_view name = key == "temperature"        ? "temperature"
                                      : key == "top_p"            ? "topP"
                                      : key == "presence_penalty" ? "presencePenalty"
                                                                  : "frequencyPenalty";
        generation[name] = value;
      }
    } else if (key == "seed") {
      if (value.is_int64() || value.is_uint64()) {
        generation["seed"] = value;
      } else if (!value.is_null()) {
        error = Invalid("seed", "must be an integer");
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
        generation["stopSequences"] = std::move(sequences);
      }
    } else if (key == "tools") {
      error = TranslateTools(value, body);
    } else if (key == "tool_choice") {
      error = TranslateToolChoice(value, body);
    } else if (key == "parallel_tool_calls") {
      if (value.is_bool() && !value.get_bool()) {
        error = Unsupported("parallel_tool_calls", "it cannot be limited to one call per turn");
      } else if (!value.is_null() && !value.is_bool()) {
        error = Invalid("parallel_tool_calls", "must be a boolean");
      }
    } else if (key == "n") {
      if (!IsNeutral(value, 1)) {
        error = Unsupported("n", "Berry asks it for one candidate per request; n must be 1");
      }
    } else if (key == "logprobs") {
      if (!value.is_null() && !(value.is_bool() && !value.get_bool())) {
        error = Unsupported("logprobs", "Berry does not translate its log probabilities");
      }
    } else if (key == "top_logprobs") {
      if (!IsNeutral(value, 0)) {
        error = Unsupported("top_logprobs", "Berry does not translate its log probabilities");
      }
    } else if (key == "logit_bias") {
      if (!value.is_null() && !(value.is_object() && value.get_object().empty())) {
        error = Unsupported("logit_bias", "it has no token biasing");
      }
    } else if (key == "response_format") {
      const std::string_view type =
          value.is_object() ? StringAt(value.get_object(), "type") : std::string_view();
      if (type == "json_object") {
        generation["responseMimeType"] = "application/json";
      } else if (!value.is_null() && type != "text") {
        error = Unsupported("response_format",
                            R"(only types "text" and "json_object" have an equivalent)");
      }
    } else if (key == "modalities") {
      if (value.is_array()) {
        for (const bj::value& m : value.get_array()) {
          if (!m.is_string() || m.get_string() != "text") {
            error = Unsupported("modalities", "Berry relays text answers only");
            break;
          }
        }
      } else if (!value.is_null()) {
        error = Invalid("modalities", "must be an array");
      }
    } else {
      error = Unsupported(std::string(key), "the field has no equivalent in the Gemini API");
    }
    if (error) {
      return error;
    }
  }
  if (!system.empty()) {
    body["systemInstruction"] = bj::object{{"parts", std::move(system)}};
  }
  body["contents"] = std::move(contents);
  if (!generation.empty()) {
    body["generationConfig"] = std::move(generation);
  }
  out = bj::serialize(body);
  return std::nullopt;
}

bool FromGeminiResponse(std::string_view body, std::string_view model, int64_t created,
                        std::string& out) {
  std::optional<bj::value> parsed = Parse(body);
  if (!parsed || !parsed->is_object()) {
    return false;
  }
  const bj::object& response = parsed->get_object();
  const bj::value* candidates = response.if_contains("candidates");
  const bj::value* feedback = response.if_contains("promptFeedback");
  const bool blocked = feedback != nullptr && feedback->is_object() &&
                       !StringAt(feedback->get_object(), "blockReason").empty();
  if ((candidates == nullptr || !candidates->is_array()) && !blocked) {
    return false;
  }
  bj::array choices;
  if (candidates != nullptr && candidates->is_array()) {
    for (const bj::value& candidate : candidates->get_array()) {
      if (!candidate.is_object()) {
        continue;
      }
      const bj::object& c = candidate.get_object();
      std::string text;
      bj::array tool_calls;
      ReadParts(c, text, tool_calls);
      const std::string_view finish =
          FinishReason(StringAt(c, "finishReason"), !tool_calls.empty());
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
      const bj::value* index = c.if_contains("index");
      bj::object choice;
      choice["index"] = index != nullptr && index->is_number() ? *index : bj::value(choices.size());
      choice["message"] = std::move(reply);
      choice["logprobs"] = nullptr;
      choice["finish_reason"] = finish.empty() ? std::string_view("stop") : finish;
      choices.emplace_back(std::move(choice));
    }
  }
  if (choices.empty()) {
    // The prompt was blocked (promptFeedback.blockReason), or no candidate came back.
    choices.emplace_back(bj::object{{"index", 0},
                                    {"message", bj::object{{"role", "assistant"}, {"content", ""}}},
                                    {"logprobs", nullptr},
                                    {"finish_reason", blocked ? "content_filter" : "stop"}});
  }
  bj::object result;
  result["id"] = CompletionId(response);
  result["object"] = "chat.completion";
  result["created"] = created;
  result["model"] = model;
  result["choices"] = std::move(choices);
  if (const bj::value* usage = response.if_contains("usageMetadata");
      usage != nullptr && usage->is_object()) {
    const openai::Usage counts = UsageOf(usage->get_object());
    result["usage"] = bj::object{{"prompt_tokens", counts.prompt_tokens},
                                 {"completion_tokens", counts.completion_tokens},
                                 {"total_tokens", counts.prompt_tokens + counts.completion_tokens}};
  }
  out = bj::serialize(result);
  return true;
}

TranslatedError FromGeminiError(int status, std::string_view body) {
  std::string_view status_name;
  std::string_view message;
  const std::optional<bj::value> parsed = Parse(body);  // the views above point into it
  if (parsed) {
    if (const bj::object* error = ErrorObject(*parsed)) {
      status_name = StringAt(*error, "status");
      message = StringAt(*error, "message");
    }
  }
  const std::string text =
      message.empty() ? absl::StrCat("the Gemini backend answered ", status)
                      : absl::StrCat("the Gemini backend answered ", status, ": ", A(message));
  return {status, openai::ErrorJson(text, OpenAiErrorType(status_name, status), {}, status_name)};
}

GeminiStream::GeminiStream(bool include_usage, std::string model, int64_t created)
    : include_usage_(include_usage),
      model_(std::move(model)),
      created_(created),
      id_(absl::StrCat("chatcmpl-", RandomHex())) {}

void GeminiStream::AppendChunk(std::string_view delta_json, std::string_view finish_reason,
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

void GeminiStream::OnData(std::string_view data, std::string& out) {
  if (finished_ || failed_) {
    return;
  }
  std::optional<bj::value> parsed = Parse(data);
  if (!parsed) {
    return;  // not a GenerateContentResponse; nothing the client could use
  }
  if (const bj::object* error = ErrorObject(*parsed)) {
    failed_ = true;
    const std::string_view status_name = StringAt(*error, "status");
    const std::string_view message = StringAt(*error, "message");
    out.append("data: ");
    out.append(openai::ErrorJson(
        absl::StrCat("the Gemini backend's stream failed: ",
                     A(message.empty() ? std::string_view("error event") : message)),
        OpenAiErrorType(status_name, 500), {}, status_name));
    out.append("\n\n");
    return;
  }
  if (!parsed->is_object()) {
    return;
  }
  const bj::object& response = parsed->get_object();
  if (!started_) {
    started_ = true;
    if (const std::string_view id = StringAt(response, "responseId"); !id.empty()) {
      id_ = absl::StrCat("chatcmpl-", A(id));
    }
    AppendChunk(R"({"role":"assistant","content":""})", {}, out);
  }
  if (const bj::value* usage = response.if_contains("usageMetadata");
      usage != nullptr && usage->is_object()) {
    usage_ = UsageOf(usage->get_object());
  }
  std::string_view finish;
  const bj::value* candidates = response.if_contains("candidates");
  if (candidates != nullptr && candidates->is_array() && !candidates->get_array().empty() &&
      candidates->get_array()[0].is_object()) {
    // Berry asks for one candidate (n must be 1).
    const bj::object& candidate = candidates->get_array()[0].get_object();
    std::string text;
    bj::array tool_calls;
    ReadParts(candidate, text, tool_calls);
    if (!text.empty()) {
      std::string delta = R"({"content":)";
      json::AppendJsonString(delta, text);
      delta.push_back('}');
      AppendChunk(delta, {}, out);
    }
    // Gemini sends each function call whole: one delta with id, name and all the arguments.
    for (bj::value& call : tool_calls) {
      bj::object& c = call.as_object();
      c.emplace("index", tool_calls_++);
      std::string delta = R"({"tool_calls":[)";
      delta.append(bj::serialize(c));
      delta.append("]}");
      AppendChunk(delta, {}, out);
    }
    finish = FinishReason(StringAt(candidate, "finishReason"), tool_calls_ > 0);
  } else if (const bj::value* feedback = response.if_contains("promptFeedback");
             feedback != nullptr && feedback->is_object() &&
             !StringAt(feedback->get_object(), "blockReason").empty()) {
    finish = "content_filter";  // the prompt was blocked: no candidate comes
  }
  if (!finish.empty() && !finish_seen_) {
    finish_seen_ = true;
    AppendChunk("{}", finish, out);
  }
}

void GeminiStream::OnEnd(std::string& out) {
  if (finished_ || failed_ || !finish_seen_) {
    return;
  }
  finished_ = true;
  if (include_usage_) {
    const openai::Usage counts = usage_.value_or(openai::Usage{});
    out.append(R"(data: {"id":)");
    json::AppendJsonString(out, id_);
    absl::StrAppend(&out, R"(,"object":"chat.completion.chunk","created":)", created_,
                    R"(,"model":)");
    json::AppendJsonString(out, model_);
    absl::StrAppend(&out, R"(,"choices":[],"usage":{"prompt_tokens":)", counts.prompt_tokens,
                    R"(,"completion_tokens":)", counts.completion_tokens, R"(,"total_tokens":)",
                    counts.prompt_tokens + counts.completion_tokens, "}}\n\n");
  }
  out.append("data: [DONE]\n\n");
}

}  // namespace berry::dialect
