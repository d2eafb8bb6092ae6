#include "data-plane/openai/request_body.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

namespace berry::openai::request_body_test {
namespace {

RequestFields Scan(std::string_view body) {
  absl::StatusOr<RequestFields> fields = ScanRequestBody(body);
  EXPECT_TRUE(fields.ok()) << fields.status() << " for " << body;
  return fields.ok() ? *std::move(fields) : RequestFields{};
}

std::string ScanError(std::string_view body) {
  absl::StatusOr<RequestFields> fields = ScanRequestBody(body);
  if (fields.ok()) {
    ADD_FAILURE() << "accepted " << body;
    return "";
  }
  EXPECT_EQ(fields.status().code(), absl::StatusCode::kInvalidArgument) << fields.status();
  return std::string(fields.status().message());
}

std::string_view ModelToken(std::string_view body, const RequestFields& fields) {
  return body.substr(fields.model_begin, fields.model_end - fields.model_begin);
}

// ---- valid bodies ------------------------------------------------------------------------------

TEST(ScanRequestBody, FindsModelWhenItIsTheFirstField) {
  const std::string body = R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "gpt-4o");
  EXPECT_EQ(ModelToken(body, fields), R"("gpt-4o")");
  EXPECT_EQ(fields.model_begin, 9u);
}

TEST(ScanRequestBody, FindsModelWhenItIsTheLastField) {
  const std::string body = R"({"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o"})";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "gpt-4o");
  EXPECT_EQ(ModelToken(body, fields), R"("gpt-4o")");
  EXPECT_EQ(fields.model_end, body.size() - 1);
}

TEST(ScanRequestBody, FindsModelWhenItIsAMiddleField) {
  const std::string body = R"({"temperature":0.5,"model":"m1","max_tokens":10})";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "m1");
  EXPECT_EQ(ModelToken(body, fields), R"("m1")");
}

TEST(ScanRequestBody, IgnoresModelKeysNestedDeeper) {
  const std::string body =
      R"({"messages":[{"role":"user","model":"nested-in-array"}],)"
      R"("metadata":{"model":"nested-in-object","x":{"model":"deeper"}},"model":"top"})";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "top");
  EXPECT_EQ(ModelToken(body, fields), R"("top")");
}

TEST(ScanRequestBody, NestedModelKeysDoNotCountAsDuplicatesOrAsTheModel) {
  EXPECT_EQ(ScanError(R"({"metadata":{"model":"nested"}})"), "missing required field 'model'");
  EXPECT_EQ(Scan(R"({"model":"a","metadata":{"model":"b"}})").model, "a");
}

TEST(ScanRequestBody, IgnoresStreamKeysNestedDeeper) {
  const RequestFields fields = Scan(R"({"model":"m","tools":[{"stream":"not a bool"}]})");
  EXPECT_FALSE(fields.stream);
}

TEST(ScanRequestBody, StreamDefaultsToFalse) { EXPECT_FALSE(Scan(R"({"model":"m"})").stream); }

TEST(ScanRequestBody, ReadsStreamTrue) {
  EXPECT_TRUE(Scan(R"({"model":"m","stream":true})").stream);
}

TEST(ScanRequestBody, ReadsStreamFalse) {
  EXPECT_FALSE(Scan(R"({"stream":false,"model":"m"})").stream);
}

TEST(ScanRequestBody, AcceptsNullStreamAsFalseLikeTheOpenAiApi) {
  EXPECT_FALSE(Scan(R"({"model":"m","stream":null})").stream);
}

TEST(ScanRequestBody, ReadsStreamOptionsIncludeUsage) {
  const RequestFields fields =
      Scan(R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})");
  EXPECT_TRUE(fields.stream);
  EXPECT_TRUE(fields.include_usage);
}

TEST(ScanRequestBody, ReadsTheLargerOfMaxTokensAndMaxCompletionTokens) {
  EXPECT_EQ(Scan(R"({"model":"m"})").max_tokens, 0u);
  EXPECT_EQ(Scan(R"({"model":"m","max_tokens":300})").max_tokens, 300u);
  EXPECT_EQ(Scan(R"({"max_completion_tokens":700,"model":"m","max_tokens":300})").max_tokens, 700u);
  EXPECT_EQ(Scan(R"({"model":"m","max_tokens":-5})").max_tokens, 0u);
  EXPECT_EQ(Scan(R"({"model":"m","max_tokens":"9"})").max_tokens, 0u);
  EXPECT_EQ(Scan(R"({"model":"m","x":{"max_tokens":9}})").max_tokens, 0u);
}

TEST(ScanRequestBody, NotesAStreamOptionsObjectWhateverItHolds) {
  EXPECT_FALSE(Scan(R"({"model":"m"})").has_stream_options);
  EXPECT_TRUE(Scan(R"({"model":"m","stream_options":{}})").has_stream_options);
  EXPECT_FALSE(Scan(R"({"model":"m","x":{"stream_options":{}}})").has_stream_options);
}

TEST(AddIncludeUsage, InsertsTheOptionAsTheFirstMember) {
  std::string body = R"( {"model":"m","stream":true})";
  AddIncludeUsage(body);
  EXPECT_EQ(body, R"( {"stream_options":{"include_usage":true},"model":"m","stream":true})");
  const RequestFields fields = Scan(body);
  EXPECT_TRUE(fields.include_usage);
}

TEST(ScanRequestBody, IncludeUsageIsFalseUnlessTrue) {
  EXPECT_FALSE(Scan(R"({"model":"m"})").include_usage);
  EXPECT_FALSE(Scan(R"({"model":"m","stream_options":{"include_usage":false}})").include_usage);
  EXPECT_FALSE(Scan(R"({"model":"m","stream_options":{"include_usage":"yes"}})").include_usage);
  EXPECT_FALSE(Scan(R"({"model":"m","stream_options":null})").include_usage);
}

TEST(ScanRequestBody, IncludeUsageCountsOnlyDirectlyInsideTopLevelStreamOptions) {
  EXPECT_FALSE(Scan(R"({"model":"m","include_usage":true})").include_usage);
  EXPECT_FALSE(
      Scan(R"({"model":"m","stream_options":{"x":{"include_usage":true}}})").include_usage);
  EXPECT_FALSE(
      Scan(R"({"model":"m","metadata":{"stream_options":{"include_usage":true}}})").include_usage);
  EXPECT_TRUE(
      Scan(R"({"model":"m","stream_options":{"x":{"include_usage":false},"include_usage":true}})")
          .include_usage);
}

TEST(ScanRequestBody, KeepsUnicodeNamesAndFindsTheirTokenDirectly) {
  const std::string body =
      "{\"model\":\"mod\xC3\xA8le-\xE6\xA8\xA1\xE5\x9E\x8B-\xF0\x9F\x8D\x93\"}";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "mod\xC3\xA8le-\xE6\xA8\xA1\xE5\x9E\x8B-\xF0\x9F\x8D\x93");
  EXPECT_EQ(ModelToken(body, fields), body.substr(9, body.size() - 10));
}

TEST(ScanRequestBody, DecodesEscapedNamesAndLocatesTheRawToken) {
  const std::string body = R"({"messages":[],"model":"gpt\"4\\o-\u00e9\/x","stream":true})";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "gpt\"4\\o-\xC3\xA9/x");
  EXPECT_EQ(ModelToken(body, fields), R"("gpt\"4\\o-\u00e9\/x")");
  EXPECT_TRUE(fields.stream);
}

TEST(ScanRequestBody, LocatesANameThatStartsWithAnEscape) {
  const std::string body = R"({"a":"\"model\":\"decoy\"","model":"\u0067pt"})";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "gpt");
  EXPECT_EQ(ModelToken(body, fields), R"("\u0067pt")");
}

TEST(ScanRequestBody, LocatesALongEscapedNameDeliveredInManyPieces) {
  const std::string name(10000, 'n');
  const std::string body = R"({"x":{"y":["z"]},"model":")" + name + R"(\t)" + name + R"("})";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, name + "\t" + name);
  EXPECT_EQ(ModelToken(body, fields), "\"" + name + "\\t" + name + "\"");
}

TEST(ScanRequestBody, RecognisesAnEscapedModelKey) {
  const std::string body = R"({"m\u006fdel":"m","str\u0065am":true})";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "m");
  EXPECT_EQ(ModelToken(body, fields), R"("m")");
  EXPECT_TRUE(fields.stream);
}

TEST(ScanRequestBody, AcceptsWhitespaceEverywhereJsonAllowsIt) {
  const std::string body = "\r\n\t {\n  \"model\" \t:\r\n  \"m\" ,\n\"stream\"  :  true\r\n}\n\t ";
  const RequestFields fields = Scan(body);
  EXPECT_EQ(fields.model, "m");
  EXPECT_EQ(ModelToken(body, fields), "\"m\"");
  EXPECT_TRUE(fields.stream);
}

TEST(ScanRequestBody, AcceptsNestingUpToTheDepthLimit) {
  const size_t inner = kMaxRequestDepth - 1;  // the top-level object is one level
  const std::string body =
      R"({"model":"m","x":)" + std::string(inner, '[') + std::string(inner, ']') + "}";
  EXPECT_EQ(Scan(body).model, "m");
}

// ---- errors -------------------------------------------------------------------------------------

TEST(ScanRequestBody, RejectsNonJsonWithReasonAndOffset) {
  EXPECT_EQ(ScanError("model=gpt-4"), "request body is not valid JSON: syntax error at byte 0");
}

TEST(ScanRequestBody, RejectsSyntaxErrorsWithTheirOffset) {
  EXPECT_EQ(ScanError(R"({"model":"m",})"),
            "request body is not valid JSON: syntax error at byte 13");
  EXPECT_EQ(ScanError(R"({"model" "m"})"),
            "request body is not valid JSON: syntax error at byte 9");
}

TEST(ScanRequestBody, RejectsAnEmptyBody) {
  EXPECT_EQ(ScanError(""), "request body is not valid JSON: incomplete JSON at byte 0");
  EXPECT_EQ(ScanError("  \n"), "request body is not valid JSON: incomplete JSON at byte 3");
}

TEST(ScanRequestBody, RejectsTruncatedJson) {
  EXPECT_EQ(ScanError(R"({"model":"m")"),
            "request body is not valid JSON: incomplete JSON at byte 12");
  EXPECT_EQ(ScanError(R"({"model":"gp)"),
            "request body is not valid JSON: incomplete JSON at byte 12");
}

TEST(ScanRequestBody, RejectsTrailingGarbageAfterTheObject) {
  EXPECT_EQ(ScanError(R"({"model":"m"} x)"),
            "request body is not valid JSON: extra data at byte 14");
  EXPECT_EQ(ScanError(R"({"model":"m"}{})"),
            "request body is not valid JSON: extra data at byte 13");
}

TEST(ScanRequestBody, RejectsInvalidUtf8) {
  EXPECT_EQ(ScanError("{\"model\":\"a\xFF\"}"),
            "request body is not valid JSON: syntax error at byte 11");
}

TEST(ScanRequestBody, RejectsNestingBeyondTheDepthLimit) {
  const size_t inner = kMaxRequestDepth;
  const std::string body =
      R"({"model":"m","x":)" + std::string(inner, '[') + std::string(inner, ']') + "}";
  EXPECT_EQ(ScanError(body),
            "request body is not valid JSON: too deep at byte " + std::to_string(17 + inner - 1));
}

TEST(ScanRequestBody, RejectsATopLevelArray) {
  EXPECT_EQ(ScanError(R"([{"model":"m"}])"), "request body must be a JSON object");
}

TEST(ScanRequestBody, RejectsATopLevelScalar) {
  EXPECT_EQ(ScanError(R"("model")"), "request body must be a JSON object");
  EXPECT_EQ(ScanError("42"), "request body must be a JSON object");
  EXPECT_EQ(ScanError("null"), "request body must be a JSON object");
}

TEST(ScanRequestBody, InvalidJsonWinsOverFieldErrors) {
  EXPECT_EQ(ScanError(R"([1,)"), "request body is not valid JSON: incomplete JSON at byte 3");
  EXPECT_EQ(ScanError(R"({"model":1,)"),
            "request body is not valid JSON: incomplete JSON at byte 11");
}

TEST(ScanRequestBody, RejectsAMissingModel) {
  EXPECT_EQ(ScanError(R"({"messages":[]})"), "missing required field 'model'");
  EXPECT_EQ(ScanError("{}"), "missing required field 'model'");
}

TEST(ScanRequestBody, RejectsAModelThatIsNotAString) {
  for (const std::string_view value :
       {"1", "1.5", "-3", "true", "null", "{}", R"({"a":"b"})", R"(["gpt"])"}) {
    EXPECT_EQ(ScanError(std::string(R"({"model":)") + std::string(value) + "}"),
              "'model' must be a non-empty string")
        << value;
  }
}

TEST(ScanRequestBody, RejectsAnEmptyModel) {
  EXPECT_EQ(ScanError(R"({"model":""})"), "'model' must be a non-empty string");
}

TEST(ScanRequestBody, RejectsAStreamThatIsNotABoolean) {
  for (const std::string_view value : {R"("true")", "1", "0", "{}", "[]", R"({"a":true})"}) {
    EXPECT_EQ(ScanError(std::string(R"({"model":"m","stream":)") + std::string(value) + "}"),
              "'stream' must be a boolean")
        << value;
  }
}

TEST(ScanRequestBody, RejectsADuplicateModel) {
  EXPECT_EQ(ScanError(R"({"model":"a","messages":[],"model":"b"})"), "duplicate field 'model'");
  EXPECT_EQ(ScanError(R"({"model":"a","m\u006fdel":"b"})"), "duplicate field 'model'");
}

TEST(ScanRequestBody, RejectsADuplicateStream) {
  EXPECT_EQ(ScanError(R"({"model":"a","stream":false,"stream":true})"), "duplicate field 'stream'");
}

TEST(ScanRequestBody, ReportsTheFirstFieldErrorInDocumentOrder) {
  EXPECT_EQ(ScanError(R"({"stream":"yes","model":5})"), "'stream' must be a boolean");
  EXPECT_EQ(ScanError(R"({"model":5,"stream":"yes"})"), "'model' must be a non-empty string");
  EXPECT_EQ(ScanError(R"({"stream":"yes"})"), "'stream' must be a boolean");
}

// ---- RewriteModel
// --------------------------------------------------------------------------------

const std::vector<std::string>& RewriteCorpus() {
  static const auto* corpus = new std::vector<std::string>{
      R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})",
      R"({"messages":[{"role":"user","model":"x"}],"model":"last"})",
      R"({"temperature":0.2,  "model" :  "middle" ,"stream":true})",
      R"({"model":"esc\"aped\\name\u00e9","n":1})",
      R"({"a":"\"model\":\"decoy\"","model":"\u0067pt"})",
      "{\"model\":\"mod\xC3\xA8le\"}",
      " \n{\"model\":\"m\"}\r\n",
  };
  return *corpus;
}

TEST(RewriteModel, ChangesOnlyTheModelToken) {
  for (const std::string& body : RewriteCorpus()) {
    const RequestFields fields = Scan(body);
    const std::string out = RewriteModel(body, fields, "upstream/model-1");
    const std::string expected =
        body.substr(0, fields.model_begin) + "\"upstream/model-1\"" + body.substr(fields.model_end);
    EXPECT_EQ(out, expected) << body;
    // Everything outside the token is byte-identical.
    EXPECT_EQ(std::string_view(out).substr(0, fields.model_begin),
              std::string_view(body).substr(0, fields.model_begin));
    EXPECT_EQ(std::string_view(out).substr(out.size() - (body.size() - fields.model_end)),
              std::string_view(body).substr(fields.model_end));
  }
}

TEST(RewriteModel, RoundTripsThroughScanRequestBody) {
  for (const std::string& body : RewriteCorpus()) {
    const RequestFields original = Scan(body);
    const std::string out = RewriteModel(body, original, "claude-3.5");
    const RequestFields rewritten = Scan(out);
    EXPECT_EQ(rewritten.model, "claude-3.5");
    EXPECT_EQ(rewritten.stream, original.stream);
    EXPECT_EQ(rewritten.model_begin, original.model_begin);
    EXPECT_EQ(ModelToken(out, rewritten), "\"claude-3.5\"");
  }
}

// Found by request_body_fuzzer (CI, 2026-12-07): the rewrite was right, the fuzzer's check was
// not. Boost.JSON reads `0e333` as 0 × 10^333 = 0 × inf = NaN, and NaN != NaN, so comparing the
// parsed objects with == failed although every byte outside the model token was kept. The
// check now compares the serialized objects (NaN prints the same on both sides).
TEST(RewriteModel, FuzzerFindingKeepsEveryOtherMember) {
  const std::string body =
      " \t\n{ \"mod\":[],\"model\":\"c068at\\n\\\"xm/modelc\\u0068at\\n\\\"x\\\"\",\"el\" :null , "
      "\"x\" :0e333 }\r\n";
  const RequestFields fields = Scan(body);
  const std::string out = RewriteModel(body, fields, "up");
  boost::json::object in = boost::json::parse(body).as_object();
  boost::json::object after = boost::json::parse(out).as_object();
  EXPECT_EQ(after.at("model").as_string(), "up") << out;
  in.erase("model");
  after.erase("model");
  EXPECT_EQ(boost::json::serialize(in), boost::json::serialize(after)) << out;
  EXPECT_TRUE(std::isnan(in.at("x").as_double()));
  EXPECT_TRUE(std::isnan(after.at("x").as_double()));
  EXPECT_EQ(out.substr(out.find("\"el\"")), body.substr(body.find("\"el\"")));
}

TEST(RewriteModel, EscapesQuotesBackslashesAndControlCharactersInTheNewName) {
  const std::string body = R"({"model":"m","stream":false})";
  const std::string out = RewriteModel(body, Scan(body), "a\"b\\c\nd\x01");
  EXPECT_EQ(out, R"({"model":"a\"b\\c\nd\u0001","stream":false})");
  EXPECT_EQ(Scan(out).model, "a\"b\\c\nd\x01");
}

TEST(RewriteModel, KeepsUnicodeInTheNewNameAsUtf8) {
  const std::string body = R"({"model":"m"})";
  const std::string out = RewriteModel(body, Scan(body), "\xE6\xA8\xA1\xE5\x9E\x8B");
  EXPECT_EQ(out, "{\"model\":\"\xE6\xA8\xA1\xE5\x9E\x8B\"}");
}

TEST(RewriteModel, WritesIntoAReusedBuffer) {
  const std::string body = R"({"model":"m","messages":[]})";
  const RequestFields fields = Scan(body);
  std::string out = "stale contents that must disappear, long enough to hold the result";
  const char* storage = out.data();
  RewriteModel(body, fields, "upstream", out);
  EXPECT_EQ(out, R"({"model":"upstream","messages":[]})");
  EXPECT_EQ(out.data(), storage) << "a buffer with enough capacity is reused, not reallocated";
}

// Byte-level mutations of real bodies (seeded, so failures reproduce): whatever ScanRequestBody
// accepts, Boost.JSON's DOM parser must accept too and agree on `model`; whatever the DOM parser
// rejects, ScanRequestBody must reject as invalid JSON. And every accepted token rewrites cleanly.
TEST(ScanRequestBody, AgreesWithTheDomParserOnMutatedBodies) {
  const std::string alphabet = "{}[]\":,\\ \n\tu0aemodl1-.etrufns\xC3\xA9";
  std::mt19937 rng(20240601);
  boost::json::parse_options options;
  options.max_depth = kMaxRequestDepth;
  size_t accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    const std::vector<std::string>& corpus = RewriteCorpus();
    std::string body = corpus[rng() % corpus.size()];
    for (int edits = 1 + static_cast<int>(rng() % 3); edits > 0 && !body.empty(); --edits) {
      const size_t at = rng() % body.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          body.erase(at, 1);
          break;
        case 1:
          body.insert(body.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          body[at] = c;
          break;
      }
    }
    boost::system::error_code ec;
    const boost::json::value dom = boost::json::parse(body, ec, {}, options);
    const absl::StatusOr<RequestFields> fields = ScanRequestBody(body);
    if (ec) {
      ASSERT_FALSE(fields.ok()) << body;
      EXPECT_EQ(fields.status().message().rfind("request body is not valid JSON: ", 0), 0u)
          << body << " -> " << fields.status();
      continue;
    }
    if (!fields.ok()) {
      continue;  // valid JSON with a field problem
    }
    ++accepted;
    ASSERT_TRUE(dom.is_object()) << body;
    const boost::json::value* model = dom.as_object().if_contains("model");
    ASSERT_NE(model, nullptr) << body;
    ASSERT_TRUE(model->is_string()) << body;
    EXPECT_EQ(std::string_view(model->as_string()), fields->model) << body;
    const boost::json::value token = boost::json::parse(ModelToken(body, *fields), ec);
    ASSERT_FALSE(ec) << body;
    ASSERT_TRUE(token.is_string()) << body;
    EXPECT_EQ(std::string_view(token.as_string()), fields->model) << body;
    EXPECT_EQ(Scan(RewriteModel(body, *fields, "new\"name")).model, "new\"name") << body;
  }
  EXPECT_GT(accepted, 1000u) << "the mutations should leave many bodies valid";
}

TEST(RewriteModelDeathTest, AbortsWhenTheFieldsDoNotBelongToTheBody) {
  const RequestFields fields = Scan(R"({"messages":[],"model":"m"})");
  EXPECT_DEATH(RewriteModel(R"({"model":"m"})", fields, "x"), "not a string token");
}

}  // namespace
}  // namespace berry::openai::request_body_test
