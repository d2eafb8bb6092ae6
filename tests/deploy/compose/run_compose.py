#!/usr/bin/env python3
"""Runs the compose stack's Berry command lines on this machine, without Docker.

Takes the resolved stack (`docker-compose config`, demo profile, .env from .env.example) and
starts the exact command lines and environment of the mock-provider, the control plane and each
proxy replica against the built binaries, with only what a container would provide remapped:
listen ports to free loopback ports, service names (control-plane, mock-provider) to 127.0.0.1,
mounted paths to their sources (the config directory copied, its mock-provider URL remapped), the
state volume to a directory per replica, and each replica's host name to its own UTS namespace
(as each container has), so node ids default to distinct host names as in compose. Then:

- each service's health check command (berryctl probe ...) succeeds on the remapped port;
- Prometheus' scrape path /metrics answers on the control plane and on every replica's
  --admin-listen port (and is a 404 on the replicas' API port);
- a chat request for demo-chat passes through every replica (the mock provider demands
  MOCK_API_KEY, so the key went .env -> control plane -> route table -> proxy);
- the control plane's /proxies lists every replica with a distinct node id;
- SIGTERM on a replica: /readyz answers 503 at once while requests are still served during
  --shutdown-delay-seconds, and the process exits 0 within the service's stop_grace_period.

Exit codes: 0 passed, 1 failed, 77 a tool is missing (skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import check_compose  # noqa: E402
import runlib  # noqa: E402  (tests/deploy/runlib.py, shared with manifests_run)
from runlib import free_port, http  # noqa: E402

SKIP = runlib.SKIP


class Stack:
    def __init__(self, repo: str, binaries: dict[str, str]):
        self.repo = repo
        self.binaries = binaries
        self.work = tempfile.mkdtemp(prefix="berry-compose-run-")
        self.procs = runlib.Processes(self.work)
        self.errors: list[str] = []
        self.ports: dict[tuple[str, str], int] = {}  # (service, container port) -> host port
        self.can_unshare = self.procs.unshare

    def fail(self, message: str) -> None:
        print(f"FAIL: {message}")
        self.errors.append(message)

    def port(self, service: str, container_port: str) -> int:
        key = (service, str(container_port))
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def remap_argv(self, service: str, argv: list[str], paths: dict[str, str]) -> list[str]:
        out = []
        for word in argv:
            # HOST:PORT listeners of this service, and service-name targets.
            match = re.fullmatch(r"0\.0\.0\.0:(\d+)", word)
            if match:
                word = f"127.0.0.1:{self.port(service, match.group(1))}"
            match = re.fullmatch(r"(control-plane|mock-provider):(\d+)", word)
            if match:
                word = f"127.0.0.1:{self.port(match.group(1), match.group(2))}"
            match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/.*)", word)
            if match:
                word = f"http://127.0.0.1:{self.port(service, match.group(1))}{match.group(2)}"
            for target, source in sorted(paths.items(), key=lambda kv: -len(kv[0])):
                if word == target or word.startswith(target.rstrip("/") + "/"):
                    word = source + word[len(target):]
                    break
            out.append(word)
        program = out[0]
        if program not in self.binaries:
            raise RuntimeError(f"{service} runs {program}, which is not a built Berry program")
        return [self.binaries[program], *out[1:]]

    def start(self, name: str, argv: list[str], env: dict[str, str], hostname: str | None = None):
        if hostname and not self.can_unshare:
            env = dict(env, NODE_ID=hostname)  # no UTS namespace here: the id a host name gives
        return self.procs.start(name, argv, env, hostname=hostname)

    def tail(self, name: str) -> str:
        return self.procs.tail(name)

    def healthcheck(self, name: str, test: list[str], service: str, deadline: float) -> bool:
        """Runs the health check command (remapped) until it succeeds or the deadline passes."""
        if not test or test[0] != "CMD":
            self.fail(f"{name}: health check {test} is not exec form")
            return False
        argv = self.remap_argv(service, test[1:], {})
        last = None
        while time.time() < deadline:
            last = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
            if last.returncode == 0:
                print(f"ok: {name} health check: {' '.join(test[1:])} -> {last.stdout.strip()}")
                return True
            if self.procs.exited(name) is not None:
                self.fail(f"{name} exited with {self.procs.exited(name)}:\n{self.tail(name)}")
                return False
            time.sleep(0.3)
        self.fail(f"{name}: health check {' '.join(test[1:])} never passed "
                  f"({(last.stdout + last.stderr).strip() if last else ''}):\n{self.tail(name)}")
        return False

    def stop_all(self) -> None:
        self.procs.stop_all()

    def run(self, doc: dict) -> None:
        services = doc["services"]
        cp, proxy, mock = services["control-plane"], services["proxy"], services["mock-provider"]
        env_base = runlib.base_env()

        # Mounted paths -> sources; the config directory is copied with service names remapped.
        cp_paths = {}
        for mount in check_compose.Checker.mounts(cp):
            if mount["type"] == "bind":
                source = mount["source"]
                if os.path.isdir(source):
                    copy = os.path.join(self.work, "config")
                    shutil.copytree(source, copy)
                    for file in os.listdir(copy):
                        path = os.path.join(copy, file)
                        with open(path, encoding="utf-8") as f:
                            text = f.read()
                        text = re.sub(r"http://mock-provider:(\d+)",
                                      lambda m: f"http://127.0.0.1:{self.port('mock-provider', m.group(1))}",
                                      text)
                        with open(path, "w", encoding="utf-8") as f:
                            f.write(text)
                    source = copy
                cp_paths[mount["target"]] = source

        deadline = time.time() + 30
        mock_argv = self.remap_argv("mock-provider", check_compose.Checker.argv(mock), {})
        self.start("mock-provider", mock_argv, dict(env_base, **(mock.get("environment") or {})))
        cp_argv = self.remap_argv("control-plane", check_compose.Checker.argv(cp), cp_paths)
        cp_env = dict(env_base, **{k: str(v) for k, v in (cp.get("environment") or {}).items()})
        self.start("control-plane", cp_argv, cp_env)
        if not self.healthcheck("control-plane", cp["healthcheck"]["test"], "control-plane", deadline):
            return

        replicas = int((proxy.get("deploy") or {}).get("replicas", 1))
        proxy_argv_compose = check_compose.Checker.argv(proxy)
        listen = check_compose.Checker.flag(proxy_argv_compose, "--listen")
        container_port = listen.rsplit(":", 1)[1]
        admin_port = check_compose.Checker.port_of(
            check_compose.Checker.flag(proxy_argv_compose, "--admin-listen"))
        state_dir = check_compose.Checker.flag(proxy_argv_compose, "--state-dir")
        names = []
        for i in range(1, replicas + 1):
            name = f"proxy-{i}"
            names.append(name)
            state = os.path.join(self.work, f"state-{i}")
            os.makedirs(state)
            argv = self.remap_argv(name, proxy_argv_compose, {state_dir: state})
            # A container's host name is a short hex container id; any distinct name will do.
            self.start(name, argv, dict(env_base, **(proxy.get("environment") or {})),
                       hostname=f"c0ffee{i:06x}")
        for name in names:
            if not self.healthcheck(name, proxy["healthcheck"]["test"], name, deadline):
                return

        cp_http = self.port("control-plane", check_compose.Checker.port_of(
            check_compose.Checker.flag(check_compose.Checker.argv(cp), "--http-listen")))
        for name, port in [("control-plane", cp_http)] + \
                [(n, self.port(n, admin_port)) for n in names]:
            status, body = http("GET", f"http://127.0.0.1:{port}/metrics")
            if status != 200 or "# TYPE" not in body:
                self.fail(f"{name}: GET /metrics (Prometheus' scrape) answered {status}")
        for name in names:  # the API port, behind the lb, keeps /metrics to itself
            status, _ = http("GET", f"http://127.0.0.1:{self.port(name, container_port)}/metrics")
            if status != 404:
                self.fail(f"{name}: GET /metrics on the API port answered {status}, not 404")
        request = {"model": "demo-chat", "messages": [{"role": "user", "content": "Hello"}]}
        for name in names:
            status, body = http("POST", f"http://127.0.0.1:{self.port(name, container_port)}"
                                "/v1/chat/completions", request)
            if status != 200 or '"choices"' not in body:
                self.fail(f"{name}: chat request answered {status}: {body[:300]}")
            else:
                print(f"ok: {name}: chat completion for demo-chat through the mock provider")
        status, body = http("GET", f"http://127.0.0.1:{cp_http}/proxies")
        try:
            node_ids = sorted(p.get("node_id") for p in json.loads(body).get("proxies", []))
        except (ValueError, AttributeError):
            node_ids = []
        if status != 200 or len(set(node_ids)) != replicas:
            self.fail(f"control plane /proxies lists node ids {node_ids}, want {replicas} distinct "
                      f"ones ({status}: {body[:300]})")
        else:
            print(f"ok: the control plane sees {replicas} replicas: {', '.join(node_ids)}"
                  + ("" if self.can_unshare else " (NODE_ID set: no UTS namespaces here)"))

        # SIGTERM on the first replica: not ready at once, still serving, exits within grace.
        delay = int(check_compose.Checker.flag(proxy_argv_compose, "--shutdown-delay-seconds") or 0)
        grace = check_compose.Checker.seconds(proxy.get("stop_grace_period", "10s"))
        name = names[0]
        base = f"http://127.0.0.1:{self.port(name, container_port)}"

        def not_ready():
            status, _ = http("GET", base + "/readyz")
            return status == 503, f"/readyz answered {status}, want 503"

        def serves():
            status, body = http("POST", base + "/v1/chat/completions", request)
            return status == 200, f"{status}: {body[:200]}"

        for problem in runlib.sigterm_sequence(self.procs.process(name), name, not_ready=not_ready,
                                               serves=serves, delay=delay, grace=grace,
                                               grace_name="stop_grace_period"):
            self.fail(problem + (f":\n{self.tail(name)}" if "exited" in problem else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--binary", action="append", default=[], metavar="PROGRAM=PATH")
    args = parser.parse_args()
    binaries = dict(pair.split("=", 1) for pair in args.binary)
    compose = check_compose.compose_or_skip()
    if compose is None:
        return SKIP
    checker = check_compose.Checker(args.repo, binaries, [compose])
    stack = Stack(args.repo, binaries)
    try:
        doc = checker.config("demo profile", checker.project(), quiet_check=False)
        if doc is None:
            for error in checker.errors:
                print(f"FAIL: {error}")
            return 1
        stack.run(doc)
    finally:
        stack.stop_all()
        shutil.rmtree(checker.work, ignore_errors=True)
        shutil.rmtree(stack.work, ignore_errors=True)
    if stack.errors:
        print(f"{len(stack.errors)} problem(s)")
        return 1
    print("ok: the compose stack's Berry command lines run as configured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
