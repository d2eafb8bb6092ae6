#!/usr/bin/env python3
"""deploy_observability_promql: every PromQL expression of the dashboard (targets and variable
queries, Grafana variables substituted) and of the alert rules parses (promtool check rules on a
generated file with one recording rule per expression), and names only metrics, selector labels
and grouping labels that Berry really exports.

"Really exports" is read from a live fleet on loopback, started from the built binaries:
berry-mock-upstream, a small fake provider in this script (health probes succeed; plain chats get
503, streams break after their first chunk), berry-control-plane on a TOML written here, and one
managed berry-proxy. Traffic through the proxy makes the lazily created series exist: successful
chats and streams, a retry and panic-mode picks (the 503 backend, ejected after one failure, with
panic_threshold_percent = 100), a broken stream, a rate-limited user and an unauthenticated call.
Then both /metrics are scraped and every expression is compared with them.

Self-check: expressions with a bogus metric name, a label the metric lacks, a bogus grouping label,
a histogram's base name and a syntax error are run through the same checks, which must report each.

usage: check_promql.py --proxy BIN --control-plane BIN --mock BIN --dashboard JSON --rules YML
"""
import argparse
import http.client
import http.server
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import obslib  # noqa: E402

START_TIMEOUT = 30


class Child:
    """A child process whose stdout lines are collected by a thread."""

    def __init__(self, name, args, log_dir):
        self.name = name
        self.lines = queue.Queue()
        self.err_path = os.path.join(log_dir, f"{name}.stderr")
        self.err = open(self.err_path, "w")
        blocked = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}
        # Berry's programs take these signals with sigwait: start them blocked, as they expect.
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK,
                                                                               blocked))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, pattern, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            m = re.search(pattern, line)
            if m:
                return m
        raise RuntimeError(f"{self.name} did not print /{pattern}/ (exit {self.proc.poll()}); "
                           f"stderr:\n{open(self.err_path).read()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


class FakeProvider(http.server.BaseHTTPRequestHandler):
    """GET .../models answers 200 (health probes pass); POST for model "flaky-stream" starts an
    SSE stream and closes the connection after the first chunk; any other POST gets 503."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"object":"list","data":[{"id":"flaky-503","object":"model"},' \
               b'{"id":"flaky-stream","object":"model"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if b"flaky-stream" in body:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = (b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
                     b'"delta":{"content":"Hel"}}]}\n\n')
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            time.sleep(0.2)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        error = b'{"error":{"message":"overloaded","type":"server_error"}}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(error)))
        self.end_headers()
        self.wfile.write(error)


def http_call(url, body=None, token=None, timeout=10):
    """-> (status, body bytes); a connection cut mid-body returns what arrived."""
    parsed = urllib.request.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST" if body is not None else "GET", parsed.path,
                     body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        try:
            data = response.read()
        except (http.client.IncompleteRead, ConnectionError) as e:
            data = getattr(e, "partial", b"")
        return response.status, data
    finally:
        conn.close()


def get_text(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


CONFIG = """\
# Written by tests/deploy/observability/check_promql.py.
[settings]
request_timeout_seconds = 10
health_check_interval_seconds = 1
health_check_timeout_seconds = 2
circuit_breaker_failure_threshold = 1
panic_threshold_percent = 100

[providers.mock]
base_url = "{mock}"
api_key = "sk-mock"
models = ["mock-large", "mock-small"]

[providers.flaky]
base_url = "{flaky}"
api_key = "sk-flaky"
models = ["flaky-503", "flaky-stream"]

[models.demo_chat]
name = "demo-chat"
[[models.demo_chat.backends]]
provider = "mock"
model = "mock-large"
weight = 1
[[models.demo_chat.backends]]
provider = "flaky"
model = "flaky-503"
weight = 1000

[models.breaks]
name = "stream-breaks"
[[models.breaks.backends]]
provider = "flaky"
model = "flaky-stream"

[users.alice]
token = "tok-alice"

[users.bob]
token = "tok-bob"
[users.bob.rate_limit]
requests_per_minute = 1
"""


def run_fleet(args, tmp):
    """Start the fleet, send traffic, scrape: -> (proxy exposition, control-plane exposition)."""
    children = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeProvider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mock = Child("berry-mock-upstream",
                     [args.mock, "--listen", "127.0.0.1:0", "--models", "mock-large,mock-small"], tmp)
        children.append(mock)
        mock_url = mock.wait_line(r"listening on (http://\S+)").group(1)
        config = os.path.join(tmp, "berry.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(mock=mock_url,
                                  flaky=f"http://127.0.0.1:{server.server_address[1]}/v1"))
        cp = Child("berry-control-plane",
                   [args.control_plane, "--config", config, "--grpc-listen", "127.0.0.1:0",
                    "--http-listen", "127.0.0.1:0", "--report-interval-seconds", "1",
                    "--log-level", "warn"], tmp)
        children.append(cp)
        m = cp.wait_line(r"listening on grpc (\S+) http (\S+)")
        grpc, cp_http = m.group(1), "http://" + m.group(2)
        state = os.path.join(tmp, "state")
        os.mkdir(state)
        proxy = Child("berry-proxy",
                      [args.proxy, "--control-plane", grpc, "--node-id", "obs-1",
                       "--listen", "127.0.0.1:0", "--threads", "1", "--state-dir", state,
                       "--access-log", "off", "--log-level", "warn",
                       # The dashboard's by-user panel is for fleets that label by user.
                       "--metrics-user-labels"], tmp)
        children.append(proxy)
        proxy_url = proxy.wait_line(r"berry-proxy listening on (http://\S+)").group(1)

        deadline = time.monotonic() + START_TIMEOUT
        while http_call(proxy_url + "/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("berry-proxy never became ready (no route table)")
            time.sleep(0.1)

        chat = {"model": "demo-chat", "messages": [{"role": "user", "content": "Hello"}]}
        statuses = []
        for _ in range(4):  # the 503 backend first (weight 1000): retry, ejection, then panic
            statuses.append(http_call(proxy_url + "/v1/chat/completions", chat, "tok-alice")[0])
        statuses.append(http_call(proxy_url + "/v1/chat/completions", dict(chat, stream=True),
                                  "tok-alice")[0])
        statuses.append(http_call(proxy_url + "/v1/chat/completions",
                                  {"model": "stream-breaks", "stream": True,
                                   "messages": [{"role": "user", "content": "Hello"}]},
                                  "tok-alice")[0])
        for _ in range(2):  # 1 per minute: the second is rate-limited
            statuses.append(http_call(proxy_url + "/v1/chat/completions", chat, "tok-bob")[0])
        statuses.append(http_call(proxy_url + "/v1/chat/completions", chat)[0])  # no token: 401
        print(f"traffic statuses: {statuses}")
        if 200 not in statuses[:4]:
            raise RuntimeError(f"no chat request succeeded through the proxy: {statuses}")

        # Load reports (every second) and health verdicts (2 probes) reach the control plane.
        deadline = time.monotonic() + 20
        cp_text = ""
        while time.monotonic() < deadline:
            cp_text = get_text(cp_http + "/metrics")
            if (re.search(r'^berry_cp_provider_healthy\{provider="flaky"\}', cp_text, re.M)
                    and re.search(r'^berry_cp_provider_healthy\{provider="mock"\}', cp_text, re.M)
                    and re.search(r"^berry_cp_backend_success_rate\{", cp_text, re.M)):
                break
            time.sleep(0.3)
        proxy_text = get_text(proxy_url + "/metrics")
        proxy_text += get_text(proxy_url + "/metrics")  # the first scrape counted itself
        cp_text = get_text(cp_http + "/metrics")
        return proxy_text, cp_text
    finally:
        for child in reversed(children):
            child.stop()
        server.shutdown()
        server.server_close()


def self_check(promtool, exported):
    """The checks must catch a bogus metric, label, grouping label, base histogram name and a
    syntax error."""
    cases = [
        ("self-check bogus metric", "sum(rate(berry_bogus_requests_total[5m]))",
         "unknown metric berry_bogus_requests_total"),
        ("self-check bogus label", 'sum(rate(berry_requests_total{modle=~".*"}[5m]))',
         "has no label 'modle'"),
        ("self-check bogus grouping", "sum by (modle) (rate(berry_requests_total[5m]))",
         "label 'modle' is on none"),
        ("self-check histogram base name", "rate(berry_request_duration_seconds[5m])",
         "unknown metric berry_request_duration_seconds"),
        ("self-check counter has no buckets", "rate(berry_requests_total_bucket[5m])",
         "unknown metric berry_requests_total_bucket"),
    ]
    problems = []
    for where, expr, expected in cases:
        found = obslib.check_expression(where, expr, exported)
        if not any(expected in p for p in found):
            problems.append(f"{where}: {expr!r} was not reported as {expected!r} (got {found})")
    broken = [("self-check syntax error", 'sum(rate(berry_requests_total{code=~"5.."}[5m])', set())]
    found = obslib.promtool_parse_problems(promtool, broken)
    if not any("self-check syntax error" in p for p in found):
        problems.append(f"an unbalanced expression was not reported by the parse check (got {found})")
    fine = [("self-check valid", 'sum by (model) (rate(berry_requests_total{code=~"5.."}[5m]))',
             set())]
    found = obslib.promtool_parse_problems(promtool, fine) + obslib.check_expression(
        fine[0][0], fine[0][1], exported)
    if found:
        problems.append(f"a valid expression was reported: {found}")
    return problems


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--proxy", "--control-plane", "--mock", "--dashboard", "--rules"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    yaml = obslib.need_yaml()
    promtool = obslib.need_promtool()

    with open(args.dashboard) as f:
        dashboard = json.load(f)
    with open(args.rules) as f:
        rules = yaml.safe_load(f)
    expressions = obslib.dashboard_expressions(dashboard) + obslib.rules_expressions(rules)
    print(f"{len(expressions)} expressions ({args.dashboard}, {args.rules})")
    failures = obslib.report("every expression parses (promtool)",
                             obslib.promtool_parse_problems(promtool, expressions))

    with tempfile.TemporaryDirectory(prefix="berry-obs-") as tmp:
        try:
            proxy_text, cp_text = run_fleet(args, tmp)
        except (RuntimeError, OSError, urllib.error.URLError) as e:
            return failures + obslib.report("live fleet", [str(e)])
    proxy_metrics = obslib.parse_exposition(proxy_text)
    cp_metrics = obslib.parse_exposition(cp_text)
    exported = obslib.merge_exports(proxy_metrics, cp_metrics)
    berry = sorted(n for n in exported if n.startswith("berry_"))
    print(f"live /metrics: {len(proxy_metrics)} proxy and {len(cp_metrics)} control-plane names")
    scrape_problems = []
    if not any(n.startswith("berry_cp_") for n in cp_metrics):
        scrape_problems.append("the control plane's /metrics has no berry_cp_ metric")
    if "berry_requests_total" not in proxy_metrics or proxy_metrics["berry_requests_total"] is None:
        scrape_problems.append("the proxy's /metrics has no berry_requests_total sample")
    failures += obslib.report("live scrapes", scrape_problems)

    problems = []
    used = set()
    for where, expr, extra in expressions:
        problems += obslib.check_expression(where, expr, exported, extra)
        used |= set(obslib.scan(expr)[0])
    failures += obslib.report("every metric and label used is exported by Berry", problems)
    unused = [n for n in berry if n not in used and not n.endswith(("_sum", "_count"))]
    if unused:
        print(f"note: exported but on no panel or alert: {', '.join(unused)}")

    failures += obslib.report("self-check of the checks", self_check(promtool, exported))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
