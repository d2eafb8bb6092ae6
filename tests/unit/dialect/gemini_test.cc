// The Gemini dialect's translations, both ways: request bodies (every mapped, dropped and refused
// OpenAI field, tools, images, tool results), the request target, whole responses, streams
// (streamGenerateContent chunks, function calls, usage, errors, garbage) and error bodies.
#include "data-plane/dialect/gemini.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace berry::dialect::gemini_test {
namespace {

namespace bj = boost::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

bj::value Json(std::string_view text) { return bj::parse(text); }

// The translated request, parsed; fails the test on a translation error.
bj::value Translate(std::string_view body) {
  std::string out;
  const std::optional<RequestError> error = ToGeminiRequest(body, out);
  EXPECT_FALSE(error.has_value()) << (error ? error->message : "");
  return error ? bj::value() : Json(out);
}

RequestError Refused(std::string_view body) {
  std::string out;
  std::optional<RequestError> error = ToGeminiRequest(body, out);
  EXPECT_TRUE(error.has_value()) << "translated to " << out;
  return error.value_or(RequestError{});
}

// The `data` payloads of the SSE events in `out`.
std::vector<std::string> Payloads(const std::string& out) {
  std::vector<std::string> payloads;
  size_t pos = 0;
  while (pos < out.size()) {
    const size_t end = out.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "a whole event: " << out.substr(pos);
    if (end == std::string::npos) {
      break;
    }
    const std::string event = out.substr(pos, end - pos);
    EXPECT_THAT(event, StartsWith("data: "));
    payloads.push_back(event.substr(6));
    pos = end + 2;
  }
  return payloads;
}

TEST(GeminiPathTest, ModelGoesInThePathPercentEncoded) {
  EXPECT_EQ(GeminiPath("gemini-2.0-flash", false), "/models/gemini-2.0-flash:generateContent");
  EXPECT_EQ(GeminiPath("gemini-2.0-flash", true), "/models/gemini-2.0-flash:streamGenerateContent");
  EXPECT_EQ(GeminiPath("a b/c?d", false), "/models/a%20b%2Fc%3Fd:generateContent");
  EXPECT_EQ(kGeminiStreamQuery, "?alt=sse");
}

TEST(GeminiRequestTest, SystemMessagesBecomeSystemInstructionAndRolesAreMapped) {
  const bj::value out = Translate(R"({"model":"custom","stream":true,
      "stream_options":{"include_usage":true},"messages":[
      {"role":"system","content":"Be brief."},
      {"role":"developer","content":[{"type":"text","text":"No emoji."}]},
      {"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},
      {"role":"user","content":"Again"}]})");
  EXPECT_EQ(out, Json(R"({
      "systemInstruction":{"parts":[{"text":"Be brief."},{"text":"No emoji."}]},
      "contents":[{"role":"user","parts":[{"text":"Hi"}]},
                  {"role":"model","parts":[{"text":"Hello"}]},
                  {"role":"user","parts":[{"text":"Again"}]}]})"))
      << "model, stream and stream_options go in the target, not the body";
}

TEST(GeminiRequestTest, ConsecutiveTurnsOfOneRoleAreMergedAndEmptyTextDropped) {
  const bj::value out = Translate(R"({"model":"m","messages":[
      {"role":"user","content":"one"},{"role":"user","content":"two"},
      {"role":"assistant","content":"three"},{"role":"assistant","content":""},
      {"role":"user","content":"four"}]})");
  EXPECT_EQ(out.at("contents"), Json(R"([
      {"role":"user","parts":[{"text":"one"},{"text":"two"}]},
      {"role":"model","parts":[{"text":"three"}]},
      {"role":"user","parts":[{"text":"four"}]}])"));
}

TEST(GeminiRequestTest, DataUrlImagesBecomeInlineData) {
  const bj::value out = Translate(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"text","text":"What is this?"},
      {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}}
      ]}]})");
  EXPECT_EQ(out.at("contents"), Json(R"([{"role":"user","parts":[{"text":"What is this?"},
      {"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}}]}])"));
}

TEST(GeminiRequestTest, GenerationParametersAreMapped) {
  const bj::value out = Translate(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "temperature":0.3,"top_p":0.9,"max_tokens":100,"max_completion_tokens":50,"stop":["A","B"],
      "presence_penalty":0.5,"frequency_penalty":-0.5,"seed":42,"n":1,
      "response_format":{"type":"json_object"},"user":"u-1","store":false,"logprobs":false})");
  EXPECT_EQ(out.at("generationConfig"), Json(R"({"temperature":0.3,"topP":0.9,
      "maxOutputTokens":50,"stopSequences":["A","B"],"presencePenalty":0.5,
      "frequencyPenalty":-0.5,"seed":42,"responseMimeType":"application/json"})"))
      << "max_completion_tokens wins over max_tokens";
  EXPECT_FALSE(out.as_object().contains("user"));
  EXPECT_EQ(Translate(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":"END",
      "max_tokens":7})")
                .at("generationConfig"),
            Json(R"({"stopSequences":["END"],"maxOutputTokens":7})"));
  EXPECT_FALSE(Translate(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "temperature":null,"stop":null})")
                   .as_object()
                   .contains("generationConfig"));
}

TEST(GeminiRequestTest, ToolsBecomeFunctionDeclarations) {
  const bj::value out = Translate(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather.",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
        {"type":"function","function":{"name":"now"}}]})");
  EXPECT_EQ(out.at("tools"), Json(R"([{"functionDeclarations":[
      {"name":"get_weather","description":"Weather.",
       "parameters":{"type":"object","properties":{"city":{"type":"string"}}}},
      {"name":"now"}]}])"));
  EXPECT_FALSE(out.as_object().contains("toolConfig"));
}

TEST(GeminiRequestTest, ToolChoiceBecomesFunctionCallingConfig) {
  const std::string prefix =
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function",
      "function":{"name":"f"}}],"tool_choice":)";
  EXPECT_EQ(Translate(prefix + R"("auto"})").at("toolConfig"),
            Json(R"({"functionCallingConfig":{"mode":"AUTO"}})"));
  EXPECT_EQ(Translate(prefix + R"("none"})").at("toolConfig"),
            Json(R"({"functionCallingConfig":{"mode":"NONE"}})"));
  EXPECT_EQ(Translate(prefix + R"("required"})").at("toolConfig"),
            Json(R"({"functionCallingConfig":{"mode":"ANY"}})"));
  EXPECT_EQ(Translate(prefix + R"({"type":"function","function":{"name":"f"}}})").at("toolConfig"),
            Json(R"({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["f"]}})"));
  EXPECT_EQ(Refused(prefix + R"("sometimes"})").param, "tool_choice");
  EXPECT_EQ(Refused(prefix + R"({"type":"function","function":{}}})").param,
            "tool_choice.function.name");
}

TEST(GeminiRequestTest, ToolCallsAndResultsBecomeFunctionCallAndFunctionResponse) {
  const bj::value out = Translate(R"({"model":"m","messages":[
      {"role":"user","content":"Weather in Paris and Rome?"},
      {"role":"assistant","content":null,"tool_calls":[
        {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
        {"id":"call_2","type":"function","function":{"name":"get_time","arguments":""}}]},
      {"role":"tool","tool_call_id":"call_1","content":"{\"temp\":21}"},
      {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"noon"}]},
      {"role":"user","content":"Thanks"}]})");
  EXPECT_EQ(out.at("contents"), Json(R"([
      {"role":"user","parts":[{"text":"Weather in Paris and Rome?"}]},
      {"role":"model","parts":[
        {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},
        {"functionCall":{"name":"get_time","args":{}}}]},
      {"role":"user","parts":[
        {"functionResponse":{"name":"get_weather","response":{"temp":21}}},
        {"functionResponse":{"name":"get_time","response":{"content":"noon"}}},
        {"text":"Thanks"}]}])"));
}

TEST(GeminiRequestTest, FieldsWithNoEquivalentAreRefusedNamingTheField) {
  const std::string messages = R"("messages":[{"role":"user","content":"x"}])";
  struct Case {
    std::string extra;
    std::string param;
  };
  const std::vector<Case> cases = {
      {R"("n":2)", "n"},
      {R"("logprobs":true)", "logprobs"},
      {R"("top_logprobs":3)", "top_logprobs"},
      {R"("logit_bias":{"50256":-100})", "logit_bias"},
      {R"("response_format":{"type":"json_schema","json_schema":{"name":"x"}})", "response_format"},
      {R"("modalities":["text","audio"])", "modalities"},
      {R"("audio":{"voice":"alloy"})", "audio"},
      {R"("reasoning_effort":"low")", "reasoning_effort"},
      {R"("parallel_tool_calls":false)", "parallel_tool_calls"},
      {R"("max_tokens":0)", "max_tokens"},
      {R"("temperature":"hot")", "temperature"},
      {R"("seed":1.5)", "seed"},
      {R"("stop":[1])", "stop"},
      {R"("tools":[{"type":"web_search"}])", "tools[0].type"},
      {R"("tools":[{"type":"function","function":{}}])", "tools[0].function.name"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.extra);
    const RequestError error = Refused(R"({"model":"m",)" + messages + "," + c.extra + "}");
    EXPECT_EQ(error.param, c.param);
    EXPECT_THAT(error.message, HasSubstr("'" + c.param + "'"));
  }
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]})")
                .param,
            "messages[0].content[0].image_url")
      << "web URLs have no inline equivalent";
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"image_url","image_url":{"url":"data:image/png,raw"}}]}]})")
                .param,
            "messages[0].content[0].image_url");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]})")
                .param,
            "messages[0].content[0].type");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[]})").param, "messages");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"system","content":"only"}]})").param,
            "messages");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"critic","content":"x"}]})").param,
            "messages[0].role");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"assistant","tool_calls":[
      {"id":"c","type":"function","function":{"name":"f","arguments":"not json"}}]}]})")
                .param,
            "messages[0].tool_calls[0].function.arguments");
  EXPECT_EQ(Refused(R"({"model":"m","messages":[{"role":"user","content":"x"},
      {"role":"tool","tool_call_id":"call_unknown","content":"42"}]})")
                .param,
            "messages[1].tool_call_id")
      << "the function's name cannot be found";
  EXPECT_EQ(Refused("not json").param, "messages");
}

TEST(GeminiResponseTest, TextCandidateBecomesChatCompletionWithTheClientsModel) {
  std::string out;
  ASSERT_TRUE(FromGeminiResponse(R"({"candidates":[{"content":{"role":"model","parts":[
      {"text":"Hello"},{"text":"!"}]},"finishReason":"STOP","index":0}],
      "usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":5,"totalTokenCount":17},
      "modelVersion":"gemini-2.0-flash-001","responseId":"abc"})",
                                 "chat", 1700000000, out));
  EXPECT_EQ(Json(out), Json(R"({"id":"chatcmpl-abc","object":"chat.completion",
      "created":1700000000,"model":"chat","choices":[{"index":0,
      "message":{"role":"assistant","content":"Hello!"},"logprobs":null,"finish_reason":"stop"}],
      "usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}})"));
}

TEST(GeminiResponseTest, ThoughtsCountAsCompletionTokensButAreNotRelayed) {
  std::string out;
  ASSERT_TRUE(FromGeminiResponse(R"({"candidates":[{"content":{"parts":[
      {"text":"thinking...","thought":true},{"text":"42"}]},"finishReason":"STOP"}],
      "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"thoughtsTokenCount":20}})",
                                 "m", 1, out));
  const bj::value v = Json(out);
  EXPECT_EQ(v.at("choices").at(0).at("message").at("content"), "42");
  EXPECT_EQ(v.at("usage"), Json(R"({"prompt_tokens":3,"completion_tokens":21,"total_tokens":24})"));
  EXPECT_THAT(v.at("id").as_string().c_str(), StartsWith("chatcmpl-"));
}

TEST(GeminiResponseTest, FunctionCallsBecomeToolCallsWithGeneratedIds) {
  std::string out;
  ASSERT_TRUE(FromGeminiResponse(R"({"candidates":[{"content":{"role":"model","parts":[
      {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},
      {"functionCall":{"name":"get_time"}}]},"finishReason":"STOP"}]})",
                                 "m", 1, out));
  const bj::value v = Json(out);
  const bj::value& choice = v.at("choices").at(0);
  EXPECT_EQ(choice.at("finish_reason"), "tool_calls");
  EXPECT_TRUE(choice.at("message").at("content").is_null());
  const bj::array& calls = choice.at("message").at("tool_calls").as_array();
  ASSERT_EQ(calls.size(), 2u);
  std::set<std::string> ids;
  for (const bj::value& call : calls) {
    const std::string id(call.at("id").as_string());
    EXPECT_THAT(id, StartsWith("call_"));
    ids.insert(id);
    EXPECT_EQ(call.at("type"), "function");
  }
  EXPECT_EQ(ids.size(), 2u) << "distinct ids";
  EXPECT_EQ(calls[0].at("function").at("name"), "get_weather");
  EXPECT_EQ(Json(calls[0].at("function").at("arguments").as_string()), Json(R"({"city":"Paris"})"));
  EXPECT_EQ(calls[1].at("function").at("arguments"), "{}");
  EXPECT_FALSE(v.as_object().contains("usage")) << "no usageMetadata, no usage";
}

TEST(GeminiResponseTest, FinishReasonsAreMapped) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"STOP", "stop"},
      {"MAX_TOKENS", "length"},
      {"SAFETY", "content_filter"},
      {"RECITATION", "content_filter"},
      {"BLOCKLIST", "content_filter"},
      {"PROHIBITED_CONTENT", "content_filter"},
      {"SPII", "content_filter"},
      {"OTHER", "stop"},
      {"LANGUAGE", "stop"},
      {"MALFORMED_FUNCTION_CALL", "stop"},
  };
  for (const auto& [gemini, openai] : cases) {
    SCOPED_TRACE(gemini);
    std::string out;
    ASSERT_TRUE(FromGeminiResponse(
        R"({"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":")" + gemini +
            R"("}]})",
        "m", 1, out));
    EXPECT_EQ(Json(out).at("choices").at(0).at("finish_reason"), bj::value(openai));
  }
}

TEST(GeminiResponseTest, ABlockedPromptIsAContentFilterChoice) {
  std::string out;
  ASSERT_TRUE(FromGeminiResponse(
      R"({"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4}})", "m",
      1, out));
  const bj::value v = Json(out);
  EXPECT_EQ(v.at("choices").at(0).at("finish_reason"), "content_filter");
  EXPECT_EQ(v.at("choices").at(0).at("message").at("content"), "");
  EXPECT_EQ(v.at("usage").at("prompt_tokens"), 4);
}

TEST(GeminiResponseTest, WhatIsNotAResponseIsRefused) {
  std::string out;
  for (const std::string_view body : {"", "nope", "[]", "{}", R"({"candidates":3})"}) {
    SCOPED_TRACE(body);
    EXPECT_FALSE(FromGeminiResponse(body, "m", 1, out));
  }
}

TEST(GeminiErrorTest, ErrorsKeepTheirStatusAndBecomeOpenAiShaped) {
  struct Case {
    int status;
    std::string status_name;
    std::string type;
  };
  const std::vector<Case> cases = {
      {400, "INVALID_ARGUMENT", "invalid_request_error"},
      {400, "FAILED_PRECONDITION", "invalid_request_error"},
      {404, "NOT_FOUND", "invalid_request_error"},
      {401, "UNAUTHENTICATED", "authentication_error"},
      {403, "PERMISSION_DENIED", "permission_error"},
      {429, "RESOURCE_EXHAUSTED", "rate_limit_error"},
      {500, "INTERNAL", "server_error"},
      {503, "UNAVAILABLE", "server_error"},
      {504, "DEADLINE_EXCEEDED", "server_error"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.status_name);
    const std::string body = R"({"error":{"code":)" + std::to_string(c.status) +
                             R"(,"message":"it went wrong","status":")" + c.status_name + R"("}})";
    const TranslatedError error = FromGeminiError(c.status, body);
    EXPECT_EQ(error.status, c.status);
    const bj::value v = Json(error.body);
    EXPECT_EQ(v.at("error").at("type"), bj::value(c.type));
    EXPECT_EQ(v.at("error").at("code"), bj::value(c.status_name));
    EXPECT_THAT(std::string(v.at("error").at("message").as_string()), HasSubstr("it went wrong"));
  }
  // The streaming endpoint wraps its error in an array.
  const TranslatedError wrapped = FromGeminiError(
      429, R"([{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}])");
  EXPECT_EQ(Json(wrapped.body).at("error").at("code"), "RESOURCE_EXHAUSTED");
  // A gateway's HTML page: still OpenAI's shape, the status kept.
  const TranslatedError html = FromGeminiError(502, "<html>Bad Gateway</html>");
  EXPECT_EQ(html.status, 502);
  EXPECT_EQ(Json(html.body).at("error").at("type"), "server_error");
  EXPECT_TRUE(Json(html.body).at("error").at("code").is_null());
}

constexpr std::string_view kTextStream[] = {
    R"({"candidates":[{"content":{"parts":[{"text":"Hello"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":25,"candidatesTokenCount":1,"totalTokenCount":26},"modelVersion":"gemini-2.0-flash","responseId":"r1"})",
    R"({"candidates":[{"content":{"parts":[{"text":" world"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":25,"candidatesTokenCount":2,"totalTokenCount":27},"modelVersion":"gemini-2.0-flash","responseId":"r1"})",
    R"({"candidates":[{"content":{"parts":[{"text":"!"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":25,"candidatesTokenCount":15,"totalTokenCount":40},"modelVersion":"gemini-2.0-flash","responseId":"r1"})",
};

TEST(GeminiStreamTest, TextStreamBecomesChunksAndDoneAtTheEnd) {
  GeminiStream stream(/*include_usage=*/true, "chat", 1700000000);
  std::string out;
  for (std::string_view event : kTextStream) {
    stream.OnData(event, out);
    EXPECT_FALSE(stream.finished()) << "Gemini's stream ends with its body";
  }
  stream.OnEnd(out);
  EXPECT_TRUE(stream.finished());
  EXPECT_FALSE(stream.failed());
  const std::vector<std::string> payloads = Payloads(out);
  ASSERT_EQ(payloads.size(), 7u) << out;
  const bj::value first = Json(payloads[0]);
  EXPECT_EQ(first.at("id"), "chatcmpl-r1");
  EXPECT_EQ(first.at("object"), "chat.completion.chunk");
  EXPECT_EQ(first.at("model"), "chat") << "the client's model, not modelVersion";
  EXPECT_EQ(first.at("created"), 1700000000);
  EXPECT_EQ(first.at("choices").at(0).at("delta"), Json(R"({"role":"assistant","content":""})"));
  EXPECT_EQ(Json(payloads[1]).at("choices").at(0).at("delta").at("content"), "Hello");
  EXPECT_EQ(Json(payloads[2]).at("choices").at(0).at("delta").at("content"), " world");
  EXPECT_EQ(Json(payloads[3]).at("choices").at(0).at("delta").at("content"), "!");
  EXPECT_TRUE(Json(payloads[3]).at("choices").at(0).at("finish_reason").is_null());
  EXPECT_EQ(Json(payloads[4]).at("choices").at(0).at("finish_reason"), "stop");
  EXPECT_EQ(Json(payloads[4]).at("id"), "chatcmpl-r1");
  EXPECT_EQ(Json(payloads[5]).at("choices"), bj::array());
  EXPECT_EQ(Json(payloads[5]).at("usage"),
            Json(R"({"prompt_tokens":25,"completion_tokens":15,"total_tokens":40})"));
  EXPECT_EQ(payloads[6], "[DONE]");
  ASSERT_TRUE(stream.usage().has_value());
  EXPECT_EQ(stream.usage()->prompt_tokens, 25u);
  EXPECT_EQ(stream.usage()->completion_tokens, 15u);
}

TEST(GeminiStreamTest, NoUsageChunkUnlessAsked) {
  GeminiStream stream(/*include_usage=*/false, "chat", 1);
  std::string out;
  for (std::string_view event : kTextStream) {
    stream.OnData(event, out);
  }
  stream.OnEnd(out);
  const std::vector<std::string> payloads = Payloads(out);
  ASSERT_EQ(payloads.size(), 6u);
  EXPECT_EQ(payloads.back(), "[DONE]");
  EXPECT_THAT(out, ::testing::Not(HasSubstr("\"usage\"")));
  EXPECT_TRUE(stream.usage().has_value()) << "berry still counts the tokens";
}

TEST(GeminiStreamTest, FunctionCallsBecomeWholeToolCallDeltas) {
  constexpr std::string_view kEvents[] = {
      R"({"candidates":[{"content":{"parts":[{"text":"Checking."}],"role":"model"}}]})",
      R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},{"functionCall":{"name":"get_time","args":{}}}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":30}})",
  };
  GeminiStream stream(false, "m", 1);
  std::string out;
  for (std::string_view event : kEvents) {
    stream.OnData(event, out);
  }
  stream.OnEnd(out);
  const std::vector<std::string> payloads = Payloads(out);
  std::vector<bj::value> calls;
  std::string finish;
  for (const std::string& payload : payloads) {
    if (payload == "[DONE]") {
      continue;
    }
    const bj::value chunk = Json(payload);
    const bj::value& choice = chunk.at("choices").at(0);
    if (!choice.at("finish_reason").is_null()) {
      EXPECT_TRUE(finish.empty()) << "one finish_reason";
      finish = choice.at("finish_reason").as_string();
    }
    if (const bj::value* c = choice.at("delta").as_object().if_contains("tool_calls")) {
      ASSERT_EQ(c->as_array().size(), 1u);
      calls.push_back(c->at(0));
    }
  }
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].at("index"), 0);
  EXPECT_EQ(calls[1].at("index"), 1);
  EXPECT_THAT(std::string(calls[0].at("id").as_string()), StartsWith("call_"));
  EXPECT_NE(calls[0].at("id"), calls[1].at("id"));
  EXPECT_EQ(calls[0].at("type"), "function");
  EXPECT_EQ(calls[0].at("function").at("name"), "get_weather");
  EXPECT_EQ(Json(calls[0].at("function").at("arguments").as_string()), Json(R"({"city":"Paris"})"));
  EXPECT_EQ(calls[1].at("function").at("name"), "get_time");
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(payloads.back(), "[DONE]");
  EXPECT_EQ(stream.usage()->completion_tokens, 30u);
}

TEST(GeminiStreamTest, AStreamWithoutFinishReasonDoesNotFinish) {
  GeminiStream stream(true, "m", 1);
  std::string out;
  stream.OnData(kTextStream[0], out);
  out.clear();
  stream.OnEnd(out);
  EXPECT_FALSE(stream.finished()) << "cut before the last chunk";
  EXPECT_TRUE(out.empty()) << "no [DONE]: the caller ends it as a broken stream";
}

TEST(GeminiStreamTest, AnErrorObjectEndsTheStreamWithAnOpenAiError) {
  GeminiStream stream(false, "m", 1);
  std::string out;
  stream.OnData(kTextStream[0], out);
  out.clear();
  stream.OnData(
      R"({"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}})", out);
  EXPECT_TRUE(stream.failed());
  EXPECT_FALSE(stream.finished());
  const std::vector<std::string> payloads = Payloads(out);
  ASSERT_EQ(payloads.size(), 1u);
  EXPECT_EQ(Json(payloads[0]).at("error").at("code"), "UNAVAILABLE");
  EXPECT_THAT(payloads[0], HasSubstr("overloaded"));
  out.clear();
  stream.OnData(kTextStream[2], out);
  stream.OnEnd(out);
  EXPECT_TRUE(out.empty()) << "nothing after the error";
}

TEST(GeminiStreamTest, ABlockedPromptFinishesWithContentFilter) {
  GeminiStream stream(false, "m", 1);
  std::string out;
  stream.OnData(R"({"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}})", out);
  stream.OnEnd(out);
  const std::vector<std::string> payloads = Payloads(out);
  ASSERT_EQ(payloads.size(), 3u);
  EXPECT_EQ(Json(payloads[1]).at("choices").at(0).at("finish_reason"), "content_filter");
  EXPECT_EQ(payloads[2], "[DONE]");
}

TEST(GeminiStreamTest, GarbageIsIgnoredAndOutputStaysValidJson) {
  GeminiStream stream(true, "m\"odel", 1);
  std::string out;
  for (std::string_view junk :
       {"", "{", "[1,2]", "[]", R"({"candidates":7})", R"({"candidates":[3]})",
        R"({"candidates":[{"content":{"parts":[{"functionCall":7},{"text":5}]}}]})",
        R"({"usageMetadata":{"promptTokenCount":-3}})", R"({"error":"nope"})", "\xff\xfe"}) {
    stream.OnData(junk, out);
  }
  stream.OnEnd(out);
  for (const std::string& payload : Payloads(out)) {
    boost::system::error_code ec;
    bj::parse(payload, ec);
    EXPECT_FALSE(ec) << payload;
  }
  EXPECT_FALSE(stream.finished());
  EXPECT_FALSE(stream.failed());
}

}  // namespace
}  // namespace berry::dialect::gemini_test
