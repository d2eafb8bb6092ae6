#include "data-plane/proxy/local_endpoints.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json/json_escape.h"
#include "data-plane/openai/errors.h"
#include "data-plane/proxy/admission.h"
#include "data-plane/proxy/header_policy.h"

namespace berry::proxy {

using openai::ErrorKind;

server::Readiness ProxyReadiness(const RouteStore& routes, const RouteGeneration* generation) {
  if (routes.shutting_down()) {
    return {false, R"({"status":"not ready","reason":"shutting down"})"};
  }
  if (generation == nullptr) {
    return {false, R"({"status":"not ready","reason":"no route table loaded"})"};
  }
  std::string body = R"({"status":"ready","version":)";
  json::AppendJsonString(body, generation->version());
  body += "}";
  return {true, std::move(body)};
}

net::awaitable<void> LocalEndpoints::Serve(Exchange& exchange) {
  const std::string_view path = exchange.path;
  const http::verb method = exchange.request.method();
  const auto json_reply = [&](http::status status, std::string body) -> net::awaitable<void> {
    Response response{status, 11};
    response.set(http::field::content_type, "application/json");
    response.body() = std::move(body);
    co_await Send(exchange, response);
  };
  const auto method_not_allowed = [&](std::string_view allow) -> net::awaitable<void> {
    Response response{http::status::method_not_allowed, 11};
    response.set(http::field::content_type, "application/json");
    response.set(http::field::allow, allow);
    response.body() = openai::ErrorJson(
        ErrorKind::kMethodNotAllowed,
        absl::StrCat("method ", std::string(exchange.request.method_string()),
                     " is not allowed on ", std::string(path), "; use ", std::string(allow)));
    co_await Send(exchange, response);
  };

  const bool metrics = path == "/metrics" && metrics_.exposure().on_client_listener;
  exchange.local_endpoint = path == "/healthz" || path == "/health" || path == "/readyz" || metrics;
  if (path == "/healthz" || path == "/health") {
    co_await json_reply(http::status::ok, R"({"status":"ok"})");
    co_return;
  }
  if (path == "/readyz") {
    server::Readiness readiness = ProxyReadiness(routes_, exchange.generation);
    if (!readiness.ready) {
      exchange.error = routes_.shutting_down() ? "shutting down" : "no route table loaded";
    }
    co_await json_reply(readiness.ready ? http::status::ok : http::status::service_unavailable,
                        std::move(readiness.body));
    co_return;
  }
  if (metrics) {
    Response response{http::status::ok, 11};
    response.set(http::field::content_type, metrics::kContentType);
    response.body() = metrics_.Render();
    co_await Send(exchange, response);
    co_return;
  }
  if (method == http::verb::options && path.starts_with("/v1/")) {
    Response response{http::status::no_content, 11};
    HeaderPolicy::SetPreflight(exchange.request, response);
    exchange.status = 204;
    exchange.answered = true;
    co_await exchange.downstream.Write(response);
    co_return;
  }
  if (!RelayedPath(path).empty()) {
    co_await method_not_allowed("POST");  // the handler sends the POSTs to the relay
    co_return;
  }
  if (path == "/v1/models" || path.starts_with("/v1/models/")) {
    if (method != http::verb::get) {
      co_await method_not_allowed("GET");
    } else {
      // (Computed first: GCC 12 miscompiles a conditional expression inside co_await.)
      std::string_view model_id;
      if (path.size() > 11) {
        model_id = path.substr(11);
      }
      co_await ListModels(exchange, model_id);
    }
    co_return;
  }
  exchange.error = "unknown path";
  co_await json_reply(http::status::not_found,
                      openai::ErrorJson(ErrorKind::kUnknownUrl,
                                        absl::StrCat("unknown request URL: ",
                                                     std::string(exchange.request.method_string()),
                                                     " ", std::string(path))));
}

net::awaitable<void> LocalEndpoints::ListModels(Exchange& exchange, std::string_view model_id) {
  if (exchange.generation == nullptr) {
    exchange.error = "no route table loaded";
    co_await SendError(exchange, 503,
                       openai::ErrorJson(ErrorKind::kNoBackendAvailable, "no route table loaded"));
    co_return;
  }
  std::string error;
  exchange.client =
      Admission::Authenticate(*exchange.generation, exchange.request[http::field::authorization],
                              exchange.request[kApiKeyHeader], &error);
  if (exchange.client == nullptr) {
    exchange.error = error;
    co_await SendError(exchange, 401, openai::ErrorJson(ErrorKind::kInvalidApiKey, error));
    co_return;
  }
  const auto model_json = [](std::string& out, const selection::CompiledModel& model) {
    out += R"({"id":)";
    json::AppendJsonString(out, model.name());
    out += R"(,"object":"model","created":0,"owned_by":"berry"})";
  };
  Response response{http::status::ok, 11};
  response.set(http::field::content_type, "application/json");
  if (!model_id.empty()) {
    auto model = exchange.generation->snapshot().FindModel(model_id);
    if (!model.ok() || !exchange.client->MayUse((*model)->name())) {
      exchange.error = "model not found";
      co_await SendError(
          exchange, 404,
          openai::ErrorJson(ErrorKind::kModelNotFound,
                            absl::StrCat("The model '", std::string(model_id), "' does not exist"),
                            "model"));
      co_return;
    }
    model_json(response.body(), **model);
  } else {
    std::string& body = response.body();
    body = R"({"object":"list","data":[)";
    bool first = true;
    for (const selection::CompiledModel& model : exchange.generation->snapshot().models()) {
      if (!model.enabled() || !exchange.client->MayUse(model.name())) {
        continue;
      }
      if (!first) {
        body += ',';
      }
      first = false;
      model_json(body, model);
    }
    body += "]}";
  }
  co_await Send(exchange, response);
}

}  // namespace berry::proxy
