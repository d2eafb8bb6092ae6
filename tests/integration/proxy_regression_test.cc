// Regression tests: behaviours the proxy once got wrong (all fixed). The comment on each says
// what the bug was and where (line numbers as of commit 924ee91).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "tests/integration/proxy_test_util.h"

namespace berry::itest::proxy_regression_test {
namespace {

// common/http/server.cc: with a Content-Length over the body limit, Beast's
// parser already fails async_read_header with http::error::body_limit (basic_parser checks the
// declared length when the header completes). The header error branch maps body_limit to
// "malformed HTTP request" → 400 invalid_request_error with a null code, instead of 413
// request_too_large. Only a chunked body over the limit gets the 413 (see
// ProxyEndpoints.ChunkedBodyOverTheLimitIs413). Every client that sends Content-Length — all of
// the OpenAI SDKs — sees the wrong status.
// Fixed in 26ac1ad: passes; belongs in ProxyEndpoints as ContentLengthOverTheLimitIs413.
TEST(RegressionRequestBodyLimit, ContentLengthOverTheLimitIs413) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(SettingsToml("max_request_body_bytes = 1024") +
                          ProviderToml("acme", mock->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme"));
  const std::string body =
      ChatBody("chat", absl::StrCat(R"(,"pad":")", std::string(2000, 'x'), "\""));

  const HttpResponse response = Post(*proxy, "/v1/chat/completions", body);

  ExpectOpenAiError(response, 413, "invalid_request_error", "request_too_large");
  EXPECT_EQ(mock->request_count(), 0u);
}

// data-plane/proxy/proxy_handler.cc:326: `co_await ListModels(exchange, path.size() > 11 ?
// path.substr(11) : std::string_view())` has a conditional expression inside a co_await
// statement, which GCC 12 miscompiles (the file says so itself at the upstream Acquire/Connect
// call): both arms are evaluated, so for "/v1/models" (10 characters) path.substr(11) throws
// std::out_of_range ("basic_string_view::substr", seen in gdb). The exception unwinds the session
// and the client gets an empty reply: GET /v1/models — what every OpenAI SDK's models.list()
// calls — never works. GET /v1/models/{id} (the true arm) is fine.
// Fixed in 26ac1ad: both pass; they belong in ProxyEndpoints (ModelListHasTheOpenAiListShape) and
// ProxyAuth (ModelListShowsOnlyTheModelsTheCallerMayUse).
TEST(RegressionModelList, ListHasTheOpenAiListShape) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(ProviderToml("acme", mock->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme") + ModelToml("gpt_4o", R"(name = "gpt-4o")") +
                          BackendToml("gpt_4o", "acme") + ModelToml("retired", "enabled = false") +
                          BackendToml("retired", "acme"));

  auto response = test_support::Fetch(HttpRequest::Get(proxy->url("/v1/models")));

  ASSERT_TRUE(response.ok()) << "GET /v1/models got no answer: " << response.status();
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(response->Header("Content-Type").value_or(""), "application/json");
  const boost::json::value list = ParseJson(response->body);
  EXPECT_EQ(StringAt(list, "object"), "list");
  ASSERT_TRUE(list.at("data").is_array());
  std::set<std::string> ids;
  for (const boost::json::value& model : list.at("data").as_array()) {
    EXPECT_EQ(StringAt(model, "object"), "model");
    EXPECT_TRUE(model.as_object().contains("created"));
    EXPECT_FALSE(StringAt(model, "owned_by").empty());
    ids.insert(StringAt(model, "id"));
  }
  EXPECT_EQ(ids, (std::set<std::string>{"chat", "gpt-4o"})) << "disabled models are not listed";
  EXPECT_EQ(mock->request_count(), 0u) << "the list comes from the route table";
}

TEST(RegressionModelList, ListShowsOnlyTheModelsTheCallerMayUse) {
  auto mock = StartMock("acme");
  auto proxy = StartProxy(ProviderToml("acme", mock->base_url()) + ModelToml("chat") +
                          BackendToml("chat", "acme") + ModelToml("other") +
                          BackendToml("other", "acme") +
                          "[users.alice]\ntoken = \"berry-alice-0123456789abcdef\"\n"
                          "allowed_models = [\"chat\"]\n\n"
                          "[users.carol]\ntoken = \"berry-carol-0123456789abcdef\"\n");
  const auto list = [&](HttpHeaders headers) {
    HttpRequest request = HttpRequest::Get(proxy->url("/v1/models"));
    request.headers = std::move(headers);
    return test_support::Fetch(request);
  };

  auto alice = list(Bearer("berry-alice-0123456789abcdef"));
  auto carol = list(Bearer("berry-carol-0123456789abcdef"));
  auto anonymous = list({});

  ASSERT_TRUE(alice.ok()) << "GET /v1/models got no answer: " << alice.status();
  ASSERT_EQ(alice->status, 200) << alice->body;
  const boost::json::value alice_list = ParseJson(alice->body);
  ASSERT_TRUE(alice_list.at("data").is_array());
  ASSERT_EQ(alice_list.at("data").as_array().size(), 1u) << alice->body;
  EXPECT_EQ(StringAt(alice_list.at("data").at(0), "id"), "chat");
  ASSERT_TRUE(carol.ok()) << carol.status();
  EXPECT_EQ(ParseJson(carol->body).at("data").as_array().size(), 2u) << carol->body;
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  ExpectOpenAiError(*anonymous, 401, "invalid_request_error", "invalid_api_key");
}

// data-plane/proxy/proxy_handler.cc:570 and :691 set exchange.error for every failed attempt,
// and nothing clears it when a later attempt succeeds (:700), so the access-log line of a request
// that failed over and answered 200 carries "error":"upstream answered 503". access_log.h
// documents `error` as "what went wrong, for non-2xx answers made by the proxy"; log-based
// alerting on the error field then counts successful failovers as errors.
// Fixed in 26ac1ad: passes; belongs in ProxyServer.
TEST(RegressionAccessLog, SuccessfulFailoverIsNotLoggedAsAnError) {
  MockUpstream::Options failing;
  failing.default_behavior = Behavior::Fail(503);
  auto first = StartMock("first", failing);
  auto second = StartMock("second");
  auto proxy = StartProxy(ProviderToml("first", first->base_url()) +
                          ProviderToml("second", second->base_url()) +
                          ModelToml("chat", R"(strategy = "failover")") +
                          BackendToml("chat", "first", "up-model", 1, "priority = 1") +
                          BackendToml("chat", "second", "up-model", 1, "priority = 2"));

  ASSERT_EQ(Chat(*proxy, "chat", {{"x-request-id", "failed-over"}}).status, 200);

  ASSERT_TRUE(AccessLogContains(*proxy, R"("request_id":"failed-over")"));
  const boost::json::value entry = AccessLogEntry(*proxy, "failed-over");
  ASSERT_TRUE(entry.is_object()) << proxy->access_log_text();
  EXPECT_EQ(entry.at("status").to_number<int>(), 200);
  EXPECT_EQ(entry.at("retries").to_number<int>(), 1);
  EXPECT_FALSE(entry.as_object().contains("error")) << boost::json::serialize(entry);
}

// common/http/server.cc: HttpServer::Worker declares `handler` before
// `io_context`, so ~Worker destroys the io_context first and the ProxyHandler after it. The
// handler's upstream::Pool still holds kept-alive upstream connections, whose sockets then
// deregister from a reactor that io_context's destructor already freed (valgrind: "Invalid read
// ... reactive_socket_service_base::close ... freed by ~io_context"). Every berry-proxy that
// relayed a request does this on exit (proxy_main returns → ~HttpServer), and an in-process
// server corrupts the heap: the first full run of this suite died with "corrupted size vs.
// prev_size". This test makes the use-after-free crash deterministically: the
// child process runs with glibc's tcache off and freed blocks overwritten (GLIBC_TUNABLES), so
// the stale service pointer is garbage. (Simply declaring `handler` after `io_context` is not
// enough: the coroutine frames ~io_context destroys refer to the handler. Clearing each pool on
// its worker before Stop() joins it, or destroying the handlers in ~HttpServer after Stop() while
// the io_contexts still exist, is.)
// Fixed in 26ac1ad (Handler::Shutdown, called by HttpServer::Stop): passes; belongs in
// ProxyServer as DestroyingAServerThatRelayedARequestIsClean.
TEST(RegressionServerTeardown, DestroyingAServerThatRelayedARequestIsClean) {
  // The child runs the DISABLED_ test below in a fresh copy of this binary, with glibc's tcache
  // off and freed blocks overwritten (tunables are read only at process start).
  std::vector<std::string> args = {"/proc/self/exe",
                                   "--gtest_filter=RegressionServerTeardown.DISABLED_Child*",
                                   "--gtest_also_run_disabled_tests"};
  std::vector<std::string> env = {"GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.perturb=165",
                                  "BERRY_ITEST_TEARDOWN_CHILD=1"};
  std::vector<char*> argv;
  for (std::string& arg : args) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& entry : env) {
    envp.push_back(entry.data());
  }
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data()), 0);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);

  EXPECT_TRUE(WIFEXITED(status)) << "the server's destructor crashed: signal "
                                 << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0);
}

TEST(RegressionServerTeardown, DISABLED_ChildRelaysThenDestroysTheServer) {
  if (std::getenv("BERRY_ITEST_TEARDOWN_CHILD") == nullptr) {
    GTEST_SKIP() << "run by RegressionServerTeardown.DestroyingAServerThatRelayedARequestIsClean";
  }
  auto mock = StartMock("acme");
  // The freed memory is not always garbage by the time it is read (about one run in ten here
  // survives); ten rounds make a survivor vanishingly unlikely.
  for (int round = 0; round < 10; ++round) {
    auto proxy = StartProxy(ProviderToml("acme", mock->base_url()) + ModelToml("chat") +
                            BackendToml("chat", "acme"));
    ASSERT_EQ(Chat(*proxy, "chat").status, 200);
    proxy.reset();  // a kept-alive upstream connection is in the pool at this point
  }
}

}  // namespace
}  // namespace berry::itest::proxy_regression_test
