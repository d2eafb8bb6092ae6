#include "control-plane/http_status.h"

#include "common/metrics/metrics.h"

namespace berry::control_plane {

namespace http = server::http;

server::net::awaitable<void> StatusHandler::Handle(server::Request& request,
                                                   server::Downstream& downstream) {
  std::string_view target = request.target();
  target = target.substr(0, target.find('?'));
  server::Response response{http::status::ok, 11};
  response.set(http::field::content_type, "application/json");
  if (request.method() != http::verb::get) {
    response.result(http::status::method_not_allowed);
    response.set(http::field::allow, "GET");
    response.body() = R"({"error":"method not allowed"})";
  } else if (target == "/healthz" || target == "/health") {
    response.body() = R"({"status":"ok"})";
  } else if (target == "/readyz") {
    const bool ready = endpoints_.ready();
    response.result(ready ? http::status::ok : http::status::service_unavailable);
    response.body() = ready ? R"({"status":"ready"})" : R"({"status":"not ready"})";
  } else if (target == "/proxies" && endpoints_.proxies) {
    response.body() = endpoints_.proxies();
  } else if (target == "/backends" && endpoints_.backends) {
    response.body() = endpoints_.backends();
  } else if (target == "/metrics") {
    response.set(http::field::content_type, metrics::kContentType);
    response.body() = endpoints_.metrics();
  } else {
    response.result(http::status::not_found);
    response.body() = R"({"error":"not found"})";
  }
  co_await downstream.Write(response);
}

server::net::awaitable<void> StatusHandler::HandleBadRequest(http::status status,
                                                             std::string_view /*reason*/,
                                                             server::Downstream& downstream) {
  server::Response response{status, 11};
  response.set(http::field::content_type, "application/json");
  response.body() = R"({"error":"bad request"})";
  co_await downstream.Write(response);
}

}  // namespace berry::control_plane
