#include "common/http/status.h"

#include "common/metrics/metrics.h"

namespace berry::server {

net::awaitable<void> StatusHandler::Handle(Request& request, Downstream& downstream) {
  std::string_view target = request.target();
  target = target.substr(0, target.find('?'));
  Response response{http::status::ok, 11};
  response.set(http::field::content_type, "application/json");
  if (request.method() != http::verb::get) {
    response.result(http::status::method_not_allowed);
    response.set(http::field::allow, "GET");
    response.body() = R"({"error":"method not allowed"})";
  } else if (target == "/healthz" || target == "/health") {
    response.body() = R"({"status":"ok"})";
  } else if (target == "/readyz") {
    Readiness readiness = endpoints_.ready();
    response.result(readiness.ready ? http::status::ok : http::status::service_unavailable);
    response.body() = std::move(readiness.body);
  } else if (target == "/metrics") {
    response.set(http::field::content_type, metrics::kContentType);
    response.body() = endpoints_.metrics();
  } else if (const auto it = endpoints_.json.find(target); it != endpoints_.json.end()) {
    response.body() = it->second();
  } else {
    response.result(http::status::not_found);
    response.body() = R"({"error":"not found"})";
  }
  co_await downstream.Write(response);
}

net::awaitable<void> StatusHandler::HandleBadRequest(http::status status,
                                                     std::string_view /*reason*/,
                                                     Downstream& downstream) {
  Response response{status, 11};
  response.set(http::field::content_type, "application/json");
  response.body() = R"({"error":"bad request"})";
  co_await downstream.Write(response);
}

}  // namespace berry::server
