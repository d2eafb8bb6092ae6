#include "data-plane/proxy/access_log.h"

#include <string>

#include "gtest/gtest.h"

namespace berry::proxy {
namespace {

AccessLogEntry Entry() {
  AccessLogEntry e;
  e.request_id = "0123456789abcdef";
  e.user = "alice";
  e.method = "POST";
  e.path = "/v1/chat/completions";
  e.model = "chat";
  e.backend = "chat/openai/gpt-4o";
  e.status = 200;
  e.duration_seconds = 0.0123456;
  e.ttfb_seconds = 0.01;
  e.retries = 1;
  e.stream = true;
  e.prompt_tokens = 10;
  e.completion_tokens = 20;
  return e;
}

// 2026-11-26T09:28:58.000042Z
constexpr int64_t kMicros = 1795685338000042;

TEST(AccessLogFormat, EveryFieldInOrder) {
  EXPECT_EQ(AccessLog::Format(Entry(), kMicros),
            R"({"time":"2026-11-26T09:28:58.000042Z","request_id":"0123456789abcdef",)"
            R"("user":"alice","method":"POST","path":"/v1/chat/completions","model":"chat",)"
            R"("backend":"chat/openai/gpt-4o","status":200,"duration":0.012346,"ttfb":0.010000,)"
            R"("retries":1,"stream":true,"panic":false,"prompt_tokens":10,"completion_tokens":20})"
            "\n");
}

TEST(AccessLogFormat, NoUpstreamByteIsNullAndErrorIsAdded) {
  AccessLogEntry e = Entry();
  e.ttfb_seconds = -1;
  e.status = 502;
  e.error = "upstream said \"no\"\n";
  const std::string line = AccessLog::Format(e, kMicros);
  EXPECT_NE(line.find(R"("ttfb":null,)"), std::string::npos) << line;
  EXPECT_TRUE(line.ends_with(R"(,"error":"upstream said \"no\"\n"})"
                             "\n"))
      << line;
}

TEST(AccessLogFormat, EscapesClientControlledText) {
  AccessLogEntry e = Entry();
  e.path = "/v1/\"x\"\\\x01";
  const std::string line = AccessLog::Format(e, kMicros);
  EXPECT_NE(line.find(R"("path":"/v1/\"x\"\\\u0001")"), std::string::npos) << line;
}

TEST(AccessLogFormat, TimeCarriesAcrossSecondsAndDays) {
  // The date part is cached per second: consecutive calls must still be exact.
  const std::string a = AccessLog::Format(Entry(), 1795737599999999);  // 2026-11-26T23:59:59
  const std::string b = AccessLog::Format(Entry(), 1795737600000000);  // next day, midnight
  const std::string c = AccessLog::Format(Entry(), 1795737599000001);
  EXPECT_TRUE(a.starts_with(R"({"time":"2026-11-26T23:59:59.999999Z")")) << a;
  EXPECT_TRUE(b.starts_with(R"({"time":"2026-11-27T00:00:00.000000Z")")) << b;
  EXPECT_TRUE(c.starts_with(R"({"time":"2026-11-26T23:59:59.000001Z")")) << c;
}

TEST(AccessLogFormat, LargeTokenCounts) {
  AccessLogEntry e = Entry();
  e.prompt_tokens = 18446744073709551615ULL;  // UINT64_MAX: written as it is, not negative
  const std::string line = AccessLog::Format(e, kMicros);
  EXPECT_NE(line.find(R"("prompt_tokens":18446744073709551615,)"), std::string::npos) << line;
}

}  // namespace
}  // namespace berry::proxy
