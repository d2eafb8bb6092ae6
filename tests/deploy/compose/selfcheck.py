#!/usr/bin/env python3
"""Shows that check_compose.py fails on broken stacks: the committed files pass, and each
mutated copy (one proxy replica, a proxy host port, a shared state volume, a short
stop_grace_period, a curl health check, a flag berry-proxy does not have, ...) fails with the
expected message.

Usage: selfcheck.py --repo DIR --binary PROGRAM=PATH ... (as check_compose.py)
Exit codes: 0 every mutation was caught, 1 otherwise, 77 a tool is missing (skipped).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_compose  # noqa: E402

COMPOSE = "docker-compose.yml"
PROMETHEUS = "deploy/compose/prometheus.yml"
HAPROXY = "deploy/compose/haproxy.cfg"
ENV = ".env.example"

# (label, file, text to replace, replacement, expected error fragment)
MUTATIONS = [
    ("one proxy replica", COMPOSE, "replicas: ${BERRY_PROXY_REPLICAS:-2}", "replicas: 1",
     "want an integer >= 2"),
    ("a host port on the proxies", COMPOSE, '    expose: ["8080", "8081"]\n',
     '    expose: ["8080", "8081"]\n    ports: ["8082:8080"]\n', "proxy publishes host ports"),
    ("a shared state volume", COMPOSE, "      - type: volume\n        target: /var/lib/berry",
     "      - proxy-state:/var/lib/berry", "shared by every replica"),
    # (the named volume needs its declaration too: compose refuses it otherwise)
    ("a fixed node id", COMPOSE, "      - --access-log\n", "      - --node-id\n      - proxy\n"
     "      - --access-log\n", "fixes a node id"),
    ("stop_grace_period below delay + drain", COMPOSE, "    stop_grace_period: 40s\n    healthcheck:",
     "    stop_grace_period: 30s\n    healthcheck:", "stop_grace_period 30s < --shutdown-delay-seconds"),
    ("a curl health check", COMPOSE,
     'test: ["CMD", "berryctl", "probe", "http://127.0.0.1:8080/readyz"]',
     'test: ["CMD", "curl", "-f", "http://127.0.0.1:8080/readyz"]', "uses a shell tool"),
    ("a health check on the wrong port", COMPOSE,
     'test: ["CMD", "berryctl", "probe", "http://127.0.0.1:9090/readyz"]',
     'test: ["CMD", "berryctl", "probe", "http://127.0.0.1:9091/readyz"]', "control-plane health check"),
    ("a flag berry-proxy does not have", COMPOSE, "- --drain-seconds", "- --drain-secs",
     "berry-proxy has no flag --drain-secs"),
    ("proxies not waiting for a healthy control plane", COMPOSE,
     "    depends_on:\n      control-plane:\n        condition: service_healthy\n\n  # The one",
     "    depends_on:\n      control-plane:\n        condition: service_started\n\n  # The one",
     "proxy must depend on control-plane"),
    ("a wrong control-plane address", COMPOSE, "- control-plane:50051", "- control-plane:50052",
     "proxy --control-plane is"),
    ("an unpinned image", COMPOSE, "image: grafana/grafana:11.4.0", "image: grafana/grafana:latest",
     "is not pinned"),
    ("a missing mounted file", COMPOSE, "./deploy/compose/haproxy.cfg:", "./deploy/compose/lb.cfg:",
     "which does not exist"),
    ("an undocumented variable", ENV, "GRAFANA_PORT=3000\n", "", "does not document"),
    ("proxies scraped on the wrong port", PROMETHEUS, "        port: 8081", "        port: 8080",
     "dns_sd_configs of type A for the proxy"),
    ("the control plane not scraped", PROMETHEUS, '"control-plane:9090"', '"control-plane:9091"',
     "does not scrape control-plane:9090"),
    ("the load balancer not checking /readyz", HAPROXY, "uri /readyz", "uri /healthz",
     "does not check /readyz"),
    ("the load balancer on the wrong port", HAPROXY, "proxy:8080", "proxy:80",
     "must spread over proxy:8080"),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--binary", action="append", default=[])
    args = parser.parse_args()
    binaries = dict(pair.split("=", 1) for pair in args.binary)
    try:
        import yaml  # noqa: F401
    except ImportError:
        print("SKIP: python3-yaml is not installed")
        return 77
    compose = shutil.which("docker-compose")
    if not compose:
        print("SKIP: docker-compose is not installed")
        return 77

    failures: list[str] = []
    work = tempfile.mkdtemp(prefix="berry-compose-selfcheck-")
    try:
        def copy_repo() -> str:
            repo = tempfile.mkdtemp(dir=work)
            for name in (COMPOSE, ENV, ".gitignore"):
                shutil.copy(os.path.join(args.repo, name), repo)
            shutil.copytree(os.path.join(args.repo, "deploy"), os.path.join(repo, "deploy"))
            return repo

        def check(repo: str, resolved: dict | None = None) -> list[str]:
            checker = check_compose.Checker(repo, binaries, [compose])
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    checker.run_quick(resolved)
            finally:
                shutil.rmtree(checker.work, ignore_errors=True)
            return checker.errors

        # The committed stack, resolved once: mutations of files other than docker-compose.yml
        # reuse it (its mounts point into base_repo, which they edit and restore).
        base_repo = copy_repo()
        base_checker = check_compose.Checker(base_repo, binaries, [compose])
        with contextlib.redirect_stdout(io.StringIO()):
            resolved = base_checker.config("baseline", base_checker.project(), quiet_check=False)
        baseline = base_checker.errors or check(base_repo, resolved)
        if baseline or resolved is None:
            failures.append("the committed stack does not pass: " + "; ".join(baseline))
        for label, file, old, new, wanted in MUTATIONS:
            repo = copy_repo() if file == COMPOSE else base_repo
            path = os.path.join(repo, file)
            with open(path, encoding="utf-8") as f:
                original = f.read()
            if old not in original:
                failures.append(f"{label}: the mutation did not apply ({old!r} not in {file})")
                continue
            text = original.replace(old, new, 1)
            if "proxy-state:" in new:
                text = text.replace("\nvolumes:\n", "\nvolumes:\n  proxy-state:\n", 1)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            errors = check(repo, None if file == COMPOSE else resolved)
            if any(wanted in e for e in errors):
                print(f"caught: {label}")
            else:
                failures.append(f"{label}: not caught (wanted {wanted!r}, got {errors or 'none'})")
            if file == COMPOSE:
                shutil.rmtree(repo, ignore_errors=True)
            else:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
        shutil.rmtree(base_checker.work, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        return 1
    print(f"ok: all {len(MUTATIONS)} mutations of the stack were caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
