#!/usr/bin/env python3
"""Offline checks of docker-compose.yml and deploy/compose/ (no Docker engine needed).

`docker-compose config -q` accepts the stack (with a .env made from .env.example; with and
without the demo profile; with the admin-token override), and the resolved configuration
(`docker-compose config`, parsed with python3-yaml) is one an operator can run:

- at least 2 proxy replicas, none publishing host ports, each with its own (anonymous) state
  volume and no fixed container name, host name or node id (node ids default to the host name);
- health checks exec `berryctl probe` on the /readyz port each service listens on, never
  curl/wget; the proxies wait for a healthy control plane, the front load balancer for healthy
  proxies; stop_grace_period >= --shutdown-delay-seconds + --drain-seconds of the proxy command;
- every flag of every Berry command line exists in that program's --help, and the service
  names/ports the commands point at match the services' own listeners;
- every bind-mounted file or directory exists; images are pinned;
- Prometheus scrapes the control plane, every proxy replica (DNS service discovery of the proxy
  service name) and itself on the right ports, `promtool check config` accepts its config with
  the alert rules file; Grafana's provisioning points at the Prometheus service and at the
  mounted dashboard; the front load balancer's config targets the proxies' port and /readyz;
- the control plane's config validates (`berryctl validate`) with the keys of .env.example;
- every ${VARIABLE} the stack reads is documented in .env.example, and .env is git-ignored;
- yamllint (default rules, 120 columns) accepts docker-compose.yml and deploy/compose/.

Exit codes: 0 passed, 1 failed (each problem printed), 77 a tool is missing (skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/deploy
import runlib  # noqa: E402

SKIP = runlib.SKIP
RULES = "deploy/k8s/helm/berry/files/rules/berry-alerts.yml"
DASHBOARD = "deploy/k8s/helm/berry/files/dashboards/berry.json"
OVERRIDE = "deploy/compose/admin-token.yml"
BERRY_SERVICES = ("control-plane", "proxy", "mock-provider")
YAMLLINT_CONFIG = ("{extends: default, rules: {document-start: disable, line-length: {max: 120}, "
                   "comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}")
HELP_CACHE: dict[tuple[str, ...], set[str]] = {}  # (binary, args...) -> flags its --help lists


class Checker:
    def __init__(self, repo: str, binaries: dict[str, str], compose_cmd: list[str]):
        self.repo = repo
        self.binaries = binaries
        self.compose_cmd = compose_cmd
        self.errors: list[str] = []
        self.work = tempfile.mkdtemp(prefix="berry-compose-check-")
        self.env = self.clean_env()

    def fail(self, message: str) -> None:
        # Paths inside the throw-away project directories read better as repository paths.
        message = re.sub(re.escape(self.work) + r"/[^/\s]+/", "", message)
        self.errors.append(message)

    # ------------------------------------------------------------------ running docker-compose
    def clean_env(self) -> dict[str, str]:
        """The test's environment without anything that would steer compose or fill a
        variable: only .env (made from .env.example) may."""
        names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", self.read(".env.example"), re.M))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("COMPOSE_") and not k.startswith("DOCKER_") and k not in names}
        env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"  # proves no engine is needed
        return env

    def read(self, relative: str) -> str:
        with open(os.path.join(self.repo, relative), encoding="utf-8") as f:
            return f.read()

    def project(self, extra_env_lines: list[str] | None = None) -> str:
        """A project directory: docker-compose.yml copied, deploy/ linked, .env from
        .env.example (plus extra lines). Compose resolves every relative path against it."""
        directory = tempfile.mkdtemp(dir=self.work)
        shutil.copy(os.path.join(self.repo, "docker-compose.yml"), directory)
        os.symlink(os.path.join(self.repo, "deploy"), os.path.join(directory, "deploy"))
        with open(os.path.join(directory, ".env"), "w", encoding="utf-8") as f:
            f.write(self.read(".env.example"))
            for line in extra_env_lines or []:
                f.write(line + "\n")
        return directory

    def compose(self, directory: str, args: list[str], files: list[str] | None = None):
        command = list(self.compose_cmd)
        for file in files or []:
            command += ["-f", os.path.join(directory, file)]
        command += args
        return subprocess.run(command, cwd=directory, env=self.env, capture_output=True,
                              text=True, check=False, timeout=60)

    def config(self, label: str, directory: str, args: list[str] | None = None,
               files: list[str] | None = None, quiet_check: bool = True):
        import yaml
        if quiet_check:
            quiet = self.compose(directory, (args or []) + ["config", "-q"], files)
            if quiet.returncode != 0:
                self.fail(f"docker-compose config -q ({label}) failed: {quiet.stderr.strip()}")
                return None
            print(f"ok: docker-compose config -q ({label})")
        full = self.compose(directory, (args or []) + ["config"], files)
        if full.returncode != 0:
            self.fail(f"docker-compose config ({label}) failed: {full.stderr.strip()}")
            return None
        return yaml.safe_load(full.stdout)

    # ------------------------------------------------------------------ helpers
    def help_flags(self, program: str, args: list[str] | None = None) -> set[str]:
        key = (self.binaries[program], *(args or []))
        if key not in HELP_CACHE:
            try:
                out = subprocess.run([*key, "--help"], capture_output=True, text=True,
                                     check=False, timeout=30)
                text = out.stdout + out.stderr
            except OSError as error:
                text = ""
                self.fail(f"cannot run {key[0]}: {error}")
            HELP_CACHE[key] = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
            if not HELP_CACHE[key]:
                self.fail(f"`{' '.join(key)} --help` lists no flags: {text[:200]!r}")
        return HELP_CACHE[key]

    def check_flags(self, where: str, program: str, argv: list[str]) -> None:
        known = self.help_flags(program)
        for word in argv:
            if word.startswith("--"):
                flag = word.split("=", 1)[0]
                if flag not in known:
                    self.fail(f"{where}: {program} has no flag {flag} (see `{program} --help`)")

    @staticmethod
    def flag(argv: list[str], name: str) -> str | None:
        return runlib.flag_value(argv, name)

    @staticmethod
    def argv(service: dict) -> list[str]:
        parts: list[str] = []
        for key in ("entrypoint", "command"):
            value = service.get(key)
            if isinstance(value, str):
                value = shlex.split(value)
            parts += [str(v) for v in value or []]
        return parts

    @staticmethod
    def seconds(duration) -> float:
        if isinstance(duration, (int, float)):
            return float(duration)
        total = 0.0
        units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
        if not parts or "".join(a + b for a, b in parts) != str(duration):
            raise ValueError(f"unreadable duration {duration!r}")
        for amount, unit in parts:
            total += float(amount) * units[unit]
        return total

    @staticmethod
    def mounts(service: dict) -> list[dict]:
        out = []
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                out.append({"type": volume.get("type"), "source": volume.get("source"),
                            "target": volume.get("target"),
                            "read_only": bool(volume.get("read_only"))})
                continue
            parts = str(volume).split(":")
            if len(parts) == 1:
                out.append({"type": "volume", "source": None, "target": parts[0], "read_only": False})
                continue
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            out.append({"type": kind, "source": source, "target": target,
                        "read_only": "ro" in mode.split(",")})
        return out

    @staticmethod
    def port_of(address: str | None) -> str | None:
        if not address:
            return None
        return address.rsplit(":", 1)[-1]

    # ------------------------------------------------------------------ the checks
    def check_stack(self, doc: dict, label: str) -> None:
        services = doc.get("services") or {}
        for name in ("control-plane", "proxy", "lb", "mock-provider", "prometheus", "grafana"):
            if name not in services:
                self.fail(f"[{label}] no service {name}")
        if any(name not in services for name in ("control-plane", "proxy", "lb")):
            return
        cp, proxy, lb = services["control-plane"], services["proxy"], services["lb"]

        # Images pinned.
        for name, service in services.items():
            image = str(service.get("image", ""))
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not image or not tag or tag == "latest" or not re.search(r"\d", tag):
                self.fail(f"[{label}] service {name}: image {image!r} is not pinned to a version")

        # Command lines and their flags.
        cp_argv, proxy_argv = self.argv(cp), self.argv(proxy)
        if not cp_argv or cp_argv[0] != "berry-control-plane":
            self.fail(f"[{label}] control-plane runs {cp_argv[:1]}, not berry-control-plane")
        else:
            self.check_flags(f"[{label}] control-plane", "berry-control-plane", cp_argv[1:])
        if not proxy_argv or proxy_argv[0] != "berry-proxy":
            self.fail(f"[{label}] proxy runs {proxy_argv[:1]}, not berry-proxy")
            return
        self.check_flags(f"[{label}] proxy", "berry-proxy", proxy_argv[1:])
        mock = services.get("mock-provider")
        if mock:
            mock_argv = self.argv(mock)
            if not mock_argv or mock_argv[0] != "berry-mock-upstream":
                self.fail(f"[{label}] mock-provider runs {mock_argv[:1]}, not berry-mock-upstream")
            else:
                self.check_flags(f"[{label}] mock-provider", "berry-mock-upstream", mock_argv[1:])
            if mock.get("profiles") != ["demo"]:
                self.fail(f"[{label}] mock-provider is not (only) in the demo profile: "
                          f"{mock.get('profiles')}")
            if mock.get("ports"):
                self.fail(f"[{label}] mock-provider publishes host ports")

        grpc_port = self.port_of(self.flag(cp_argv, "--grpc-listen"))
        http_port = self.port_of(self.flag(cp_argv, "--http-listen"))
        if not grpc_port or not http_port:
            self.fail(f"[{label}] control-plane needs explicit --grpc-listen and --http-listen")
        target = self.flag(proxy_argv, "--control-plane") or ""
        if target != f"control-plane:{grpc_port}":
            self.fail(f"[{label}] proxy --control-plane is {target!r}, the control plane's gRPC "
                      f"listener is control-plane:{grpc_port}")
        for address, who in ((self.flag(cp_argv, "--grpc-listen"), "control-plane --grpc-listen"),
                             (self.flag(cp_argv, "--http-listen"), "control-plane --http-listen"),
                             (self.flag(proxy_argv, "--listen"), "proxy --listen")):
            if address and not address.startswith("0.0.0.0:"):
                self.fail(f"[{label}] {who} {address} is unreachable from other containers")
        if "--insecure" not in cp_argv and not self.flag(cp_argv, "--tls-cert"):
            self.fail(f"[{label}] a non-loopback plaintext gRPC listener needs --insecure")
        if "--insecure" not in proxy_argv and not self.flag(proxy_argv, "--tls-cert"):
            self.fail(f"[{label}] a proxy dialing a non-loopback control plane in plaintext "
                      "needs --insecure")
        if "--config" not in cp_argv:
            self.fail(f"[{label}] control-plane has no --config")

        # Proxy replicas, ports, identity, state.
        replicas = (proxy.get("deploy") or {}).get("replicas", proxy.get("scale"))
        if not isinstance(replicas, int) or replicas < 2:
            self.fail(f"[{label}] proxy deploy.replicas is {replicas!r}, want an integer >= 2")
        if proxy.get("ports"):
            self.fail(f"[{label}] proxy publishes host ports {proxy['ports']}: replicas would "
                      "clash; clients go through the lb service")
        for key in ("container_name", "hostname"):
            if key in proxy:
                self.fail(f"[{label}] proxy sets {key}: replicas need distinct ones")
        if self.flag(proxy_argv, "--node-id") or "NODE_ID" in (proxy.get("environment") or {}):
            self.fail(f"[{label}] proxy fixes a node id: every replica would report the same "
                      "one (leave it to default to the container's host name)")
        state_dir = self.flag(proxy_argv, "--state-dir")
        if not state_dir:
            self.fail(f"[{label}] proxy has no --state-dir")
        else:
            mounts = [m for m in self.mounts(proxy) if m["target"] == state_dir]
            tmpfs = [t for t in (proxy.get("tmpfs") or []) if str(t).split(":")[0] == state_dir]
            if not mounts and not tmpfs:
                self.fail(f"[{label}] proxy --state-dir {state_dir} has no volume or tmpfs: "
                          "it would sit on the read-only root file system")
            for mount in mounts:
                if mount["type"] == "bind" or (mount["type"] == "volume" and mount["source"]):
                    self.fail(f"[{label}] proxy --state-dir {state_dir} is mounted from "
                              f"{mount['source']!r}, shared by every replica; use an anonymous "
                              "volume or tmpfs")
                if mount["read_only"]:
                    self.fail(f"[{label}] proxy --state-dir {state_dir} is read-only")

        # Health checks: berryctl probe on the service's own /readyz port.
        for name, service in services.items():
            test = (service.get("healthcheck") or {}).get("test")
            if test is None:
                continue
            text = " ".join(test) if isinstance(test, list) else str(test)
            if re.search(r"\b(curl|wget|nc|sh|bash)\b", text):
                self.fail(f"[{label}] {name} health check uses a shell tool: {text}")
        expected = {"control-plane": http_port, "proxy": self.port_of(self.flag(proxy_argv, "--listen"))}
        for name, port in expected.items():
            test = (services[name].get("healthcheck") or {}).get("test")
            want = ["CMD", "berryctl", "probe", f"http://127.0.0.1:{port}/readyz"]
            if not isinstance(test, list) or test[:4] != want:
                self.fail(f"[{label}] {name} health check is {test}, want {want} (exec form)")
            else:
                self.check_flags(f"[{label}] {name} health check", "berryctl", [])
                probe_flags = self.help_flags("berryctl", ["probe"])
                for word in test[4:]:
                    if word.startswith("--") and word.split("=")[0] not in probe_flags:
                        self.fail(f"[{label}] {name} health check: berryctl probe has no {word}")
            for key in ("interval", "timeout"):
                if key not in (services[name].get("healthcheck") or {}):
                    self.fail(f"[{label}] {name} health check sets no {key}")

        # Start order and shutdown.
        def condition(service, dependency):
            depends = service.get("depends_on") or {}
            if isinstance(depends, list):
                return "service_started" if dependency in depends else None
            return (depends.get(dependency) or {}).get("condition")
        if condition(proxy, "control-plane") != "service_healthy":
            self.fail(f"[{label}] proxy must depend on control-plane with condition: service_healthy")
        if condition(lb, "proxy") != "service_healthy":
            self.fail(f"[{label}] lb must depend on proxy with condition: service_healthy")
        try:
            delay = int(self.flag(proxy_argv, "--shutdown-delay-seconds") or 0)
            drain = int(self.flag(proxy_argv, "--drain-seconds") or 20)  # berry-proxy default
            grace = self.seconds(proxy.get("stop_grace_period", "10s"))
            if grace < delay + drain:
                self.fail(f"[{label}] proxy stop_grace_period {grace:g}s < --shutdown-delay-seconds "
                          f"{delay} + --drain-seconds {drain}")
            else:
                print(f"ok: [{label}] proxy stop_grace_period {grace:g}s >= {delay} + {drain}")
            if delay <= 0:
                self.fail(f"[{label}] proxy --shutdown-delay-seconds is 0: the front load "
                          "balancer would still send requests to a replica that stopped accepting")
        except ValueError as error:
            self.fail(f"[{label}] {error}")

        # Only the lb publishes the API; Berry services publish nothing.
        for name in BERRY_SERVICES:
            if name in services and services[name].get("ports"):
                self.fail(f"[{label}] {name} publishes host ports {services[name]['ports']}")
        lb_ports = lb.get("ports") or []
        if len(lb_ports) != 1:
            self.fail(f"[{label}] lb publishes {len(lb_ports)} ports, want exactly one")

        # Bind mounts exist.
        for name, service in services.items():
            for mount in self.mounts(service):
                if mount["type"] == "bind" and not os.path.exists(mount["source"]):
                    self.fail(f"[{label}] {name} mounts {mount['source']}, which does not exist"
                              + (" (written by the observability part of issue 11; run again "
                                 "once it exists)" if RULES in mount["source"] or
                                 DASHBOARD in mount["source"] else ""))
                if mount["type"] == "bind" and not mount["read_only"]:
                    self.fail(f"[{label}] {name} mounts {mount['source']} read-write")
        for name, secret in (doc.get("secrets") or {}).items():
            if secret.get("file") and not os.path.exists(secret["file"]):
                self.fail(f"[{label}] secret {name} file {secret['file']} does not exist")

        cp_mounts = {m["target"]: m for m in self.mounts(cp)}
        config_path = self.flag(cp_argv, "--config") or ""
        config_mount = cp_mounts.get(os.path.dirname(config_path)) or cp_mounts.get(config_path)
        if not config_mount or config_mount["type"] != "bind" or not config_mount["read_only"]:
            self.fail(f"[{label}] control-plane --config {config_path} is not in a read-only "
                      "bind mount")
        elif not os.path.exists(os.path.join(config_mount["source"], os.path.basename(config_path))
                                if config_mount["target"] != config_path else config_mount["source"]):
            self.fail(f"[{label}] the control plane's config file is missing from "
                      f"{config_mount['source']}")

        # /metrics is on the proxies' --admin-listen, apart from the client port.
        admin_listen = self.flag(proxy_argv, "--admin-listen")
        if not admin_listen or not admin_listen.startswith("0.0.0.0:"):
            self.fail(f"[{label}] proxy --admin-listen is {admin_listen!r}: Prometheus in another "
                      "container cannot scrape it")
        self.check_prometheus(services, label, http_port, self.port_of(admin_listen or ""))
        self.check_grafana(services, label)
        self.check_haproxy(lb, label, self.port_of(self.flag(proxy_argv, "--listen")))
        if mock:
            self.check_demo_config(mock, label)

    def check_prometheus(self, services: dict, label: str, cp_http_port: str, proxy_port: str) -> None:
        import yaml
        prometheus = services.get("prometheus")
        if not prometheus:
            return
        mounts = {m["target"]: m for m in self.mounts(prometheus)}
        config_file = next((a.split("=", 1)[1] for a in self.argv(prometheus)
                            if a.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
        mount = mounts.get(config_file)
        if not mount or not mount["source"].endswith("deploy/compose/prometheus.yml"):
            self.fail(f"[{label}] prometheus does not mount deploy/compose/prometheus.yml at "
                      f"{config_file}")
            return
        config = yaml.safe_load(self.read("deploy/compose/prometheus.yml"))
        jobs = {job["job_name"]: job for job in config.get("scrape_configs") or []}
        statics = {name: [t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
                   for name, job in jobs.items()}
        all_static = [t for targets in statics.values() for t in targets]
        if f"control-plane:{cp_http_port}" not in all_static:
            self.fail(f"[{label}] prometheus does not scrape control-plane:{cp_http_port} "
                      f"(targets: {all_static})")
        if not any(t in ("localhost:9090", "127.0.0.1:9090") for t in all_static):
            self.fail(f"[{label}] prometheus does not scrape itself")
        dns = [sd for job in jobs.values() for sd in job.get("dns_sd_configs") or []]
        if not any("proxy" in (sd.get("names") or []) and str(sd.get("port")) == proxy_port
                   and sd.get("type", "SRV") == "A" for sd in dns):
            self.fail(f"[{label}] prometheus has no dns_sd_configs of type A for the proxy "
                      f"service on port {proxy_port}: {dns}")
        for target in all_static:
            host = target.rsplit(":", 1)[0]
            if host not in ("localhost", "127.0.0.1") and host not in services:
                self.fail(f"[{label}] prometheus scrapes {target}: no service {host}")
        if "lb:8404" in all_static and "bind :8404" not in self.read("deploy/compose/haproxy.cfg"):
            self.fail(f"[{label}] prometheus scrapes lb:8404, haproxy.cfg does not bind it")
        # Rule files: each relative to the config file's directory, mounted from the chart.
        config_dir = os.path.dirname(config_file)
        for rule in config.get("rule_files") or []:
            in_container = rule if rule.startswith("/") else os.path.join(config_dir, rule)
            rule_mount = mounts.get(in_container)
            if not rule_mount or not rule_mount["source"].endswith(RULES):
                self.fail(f"[{label}] prometheus rule file {in_container} is not mounted from {RULES}")
        if not config.get("rule_files"):
            self.fail(f"[{label}] prometheus loads no alert rules")

    def check_grafana(self, services: dict, label: str) -> None:
        import yaml
        grafana = services.get("grafana")
        if not grafana:
            return
        mounts = {m["target"]: m for m in self.mounts(grafana)}
        datasources_dir = mounts.get("/etc/grafana/provisioning/datasources")
        dashboards_dir = mounts.get("/etc/grafana/provisioning/dashboards")
        if not datasources_dir or not dashboards_dir:
            self.fail(f"[{label}] grafana does not mount provisioning/datasources and /dashboards")
            return
        uids = set()
        for file in sorted(os.listdir(datasources_dir["source"])):
            doc = yaml.safe_load(open(os.path.join(datasources_dir["source"], file), encoding="utf-8"))
            for ds in doc.get("datasources") or []:
                uids.add(ds.get("uid"))
                match = re.fullmatch(r"http://([\w-]+):(\d+)/?", str(ds.get("url")))
                if ds.get("type") != "prometheus" or not match or match.group(1) not in services:
                    self.fail(f"[{label}] grafana datasource {ds.get('name')}: url {ds.get('url')} "
                              "is not a prometheus service of the stack")
        if not uids:
            self.fail(f"[{label}] grafana provisions no datasource")
        paths = []
        for file in sorted(os.listdir(dashboards_dir["source"])):
            doc = yaml.safe_load(open(os.path.join(dashboards_dir["source"], file), encoding="utf-8"))
            paths += [(p.get("options") or {}).get("path") for p in doc.get("providers") or []]
        dashboard_mounts = [m for m in mounts.values() if m["source"] and m["source"].endswith(DASHBOARD)]
        if not dashboard_mounts:
            self.fail(f"[{label}] grafana does not mount {DASHBOARD}")
            return
        target = dashboard_mounts[0]["target"]
        if not any(p and (target == p or target.startswith(p.rstrip("/") + "/")) for p in paths):
            self.fail(f"[{label}] the dashboard is mounted at {target}, outside every provider "
                      f"path {paths}")
        home = (grafana.get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        if home and home != target:
            self.fail(f"[{label}] GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home} != {target}")
        source = dashboard_mounts[0]["source"]
        if os.path.exists(source):
            try:
                dashboard = json.load(open(source, encoding="utf-8"))
            except ValueError as error:
                self.fail(f"{DASHBOARD} is not JSON: {error}")
                return
            if dashboard.get("__inputs"):
                self.fail(f"{DASHBOARD} has __inputs (an 'export for sharing' dashboard): file "
                          "provisioning does not resolve them")
            for ref in self.datasource_refs(dashboard):
                uid = ref.get("uid") if isinstance(ref, dict) else ref
                if isinstance(uid, str) and not uid.startswith("$") and uid not in uids \
                        and uid not in ("-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --"):
                    self.fail(f"{DASHBOARD} names datasource {uid!r}; compose provisions {sorted(uids)}")

    @staticmethod
    def datasource_refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource" and value is not None:
                    yield value
                else:
                    yield from Checker.datasource_refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from Checker.datasource_refs(value)

    def check_haproxy(self, lb: dict, label: str, proxy_port: str) -> None:
        mounts = {m["target"]: m for m in self.mounts(lb)}
        mount = mounts.get("/usr/local/etc/haproxy/haproxy.cfg")
        if not mount or not mount["source"].endswith("deploy/compose/haproxy.cfg"):
            self.fail(f"[{label}] lb does not mount deploy/compose/haproxy.cfg at "
                      "/usr/local/etc/haproxy/haproxy.cfg")
            return
        text = re.sub(r"#.*", "", self.read("deploy/compose/haproxy.cfg"))
        servers = re.findall(r"^\s*server-template\s+\S+\s+(\S+)\s+([\w.-]+):(\d+)", text, re.M)
        if not servers or any(host != "proxy" or port != proxy_port for _, host, port in servers):
            self.fail(f"[{label}] haproxy.cfg must spread over proxy:{proxy_port} with a "
                      f"server-template (found {servers})")
        if not re.search(r"^\s*http-check\s+send\s+meth\s+GET\s+uri\s+/readyz\b", text, re.M):
            self.fail(f"[{label}] haproxy.cfg does not check /readyz (a stopping replica would "
                      "keep getting requests)")
        if not re.search(r"\bresolvers\s+\w+", text) or "127.0.0.11:53" not in text:
            self.fail(f"[{label}] haproxy.cfg does not re-resolve the replicas through Docker's DNS")
        binds = re.findall(r"^\s*bind\s+\S*:(\d+)", text, re.M)
        published = [str(p).split(":")[-1].split("/")[0] for p in lb.get("ports") or []]
        for port in published:
            if port not in binds:
                self.fail(f"[{label}] lb publishes container port {port}; haproxy binds {binds}")
        hard_stop = re.search(r"hard-stop-after\s+(\S+)", text)
        grace = self.seconds(lb.get("stop_grace_period", "10s"))
        if not hard_stop or self.seconds(hard_stop.group(1)) >= grace:
            self.fail(f"[{label}] haproxy hard-stop-after must be below lb stop_grace_period {grace:g}s")

    def check_demo_config(self, mock: dict, label: str) -> None:
        mock_argv = self.argv(mock)
        mock_port = self.port_of(self.flag(mock_argv, "--listen"))
        toml = self.read("deploy/compose/config/config.toml")
        urls = re.findall(r'^\s*base_url\s*=\s*"([^"]+)"', toml, re.M)
        if f"http://mock-provider:{mock_port}/v1" not in urls:
            self.fail(f"[{label}] the demo config's providers ({urls}) do not point at the "
                      f"mock-provider service on port {mock_port}")

    # ------------------------------------------------------------------ files around compose
    def check_promtool(self) -> None:
        if not shutil.which("promtool"):
            self.fail("promtool is missing (scripts/install-deps installs prometheus)")
            return
        rules = os.path.join(self.repo, RULES)
        if not os.path.exists(rules):
            self.fail(f"{RULES} does not exist: deploy/compose/prometheus.yml loads it (it is "
                      "written by the observability part of issue 11)")
            return
        directory = tempfile.mkdtemp(dir=self.work)
        shutil.copy(os.path.join(self.repo, "deploy/compose/prometheus.yml"), directory)
        os.makedirs(os.path.join(directory, "rules"))
        os.symlink(rules, os.path.join(directory, "rules", "berry-alerts.yml"))
        out = subprocess.run(["promtool", "check", "config", os.path.join(directory, "prometheus.yml")],
                             capture_output=True, text=True, check=False, timeout=60)
        if out.returncode != 0:
            self.fail(f"promtool check config deploy/compose/prometheus.yml: "
                      f"{(out.stdout + out.stderr).strip()}")
        else:
            print("ok: promtool check config deploy/compose/prometheus.yml (with the chart's rules)")

    def check_env_example(self) -> None:
        example = self.read(".env.example")
        lines = example.splitlines()
        documented: dict[str, bool] = {}
        for i, line in enumerate(lines):
            match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
            if match and (not line.startswith("#") or re.match(r"^#[A-Z]", line)):
                j = i - 1
                while j >= 0 and re.match(r"^#?[A-Z][A-Z0-9_]*=", lines[j]):
                    j -= 1
                documented[match.group(1)] = j >= 0 and lines[j].startswith("# ")
        sources = {"docker-compose.yml": self.read("docker-compose.yml"),
                   OVERRIDE: self.read(OVERRIDE)}
        used: set[str] = set()
        for name, text in sources.items():
            text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
            for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text):
                used.add(var)
                if var not in documented:
                    self.fail(f"{name} reads ${{{var}}}, which .env.example does not document")
        toml = "\n".join(l for l in self.read("deploy/compose/config/config.toml").splitlines()
                         if not l.lstrip().startswith("#"))
        for var in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", toml):
            used.add(var)
            if var not in documented:
                self.fail(f"deploy/compose/config/config.toml reads ${{{var}}}, which .env.example "
                          "does not set")
        for var, has_comment in documented.items():
            if not has_comment:
                self.fail(f".env.example: {var} has no comment explaining it")
            if var not in used and not var.startswith("COMPOSE_") and var != "OPENAI_API_KEY":
                self.fail(f".env.example documents {var}, which nothing reads")
        print(f"ok: .env.example documents {len(documented)} variables "
              f"({len(used)} read by the stack)")

    def check_gitignore(self) -> None:
        git = shutil.which("git")
        if git and os.path.isdir(os.path.join(self.repo, ".git")):
            out = subprocess.run([git, "-C", self.repo, "check-ignore", "-q", ".env"],
                                 check=False, capture_output=True)
            if out.returncode != 0:
                self.fail(".env is not git-ignored")
            out = subprocess.run([git, "-C", self.repo, "check-ignore", "-q", ".env.example"],
                                 check=False, capture_output=True)
            if out.returncode == 0:
                self.fail(".env.example is git-ignored")
        elif ".env" not in self.read(".gitignore").split():
            self.fail(".gitignore does not list .env")

    def check_yamllint(self) -> None:
        if not shutil.which("yamllint"):
            self.fail("yamllint is missing (scripts/install-deps installs it)")
            return
        files = ["docker-compose.yml"] + sorted(
            os.path.relpath(os.path.join(root, f), self.repo)
            for root, _, names in os.walk(os.path.join(self.repo, "deploy", "compose"))
            for f in names if f.endswith((".yml", ".yaml")))
        out = subprocess.run(["yamllint", "-s", "-d", YAMLLINT_CONFIG, *files], cwd=self.repo,
                             capture_output=True, text=True, check=False, timeout=60)
        if out.returncode != 0:
            self.fail(f"yamllint: {(out.stdout + out.stderr).strip()}")
        else:
            print(f"ok: yamllint ({len(files)} files)")

    def check_config_validates(self) -> None:
        env = dict(self.env)
        for line in self.read(".env.example").splitlines():
            match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
            if match:
                env[match.group(1)] = match.group(2)
        out = subprocess.run([self.binaries["berryctl"], "validate", "-f",
                              os.path.join(self.repo, "deploy/compose/config/config.toml")],
                             env=env, capture_output=True, text=True, check=False, timeout=30)
        if out.returncode != 0:
            self.fail(f"berryctl validate deploy/compose/config/config.toml (env from "
                      f".env.example): {(out.stdout + out.stderr).strip()}")
        else:
            print("ok: deploy/compose/config/config.toml validates with .env.example's keys")

    def run_quick(self, default: dict | None = None) -> None:
        """The default stack only (used by the self-check's mutations); `default` is an already
        resolved stack whose files live in this checker's repository."""
        if default is None:
            default = self.config("COMPOSE_PROFILES=demo from .env.example", self.project(),
                                  quiet_check=False)
        if default is not None:
            self.check_stack(default, "demo")
        self.check_env_example()

    def run(self) -> None:
        # Without a .env compose refuses the stack (env_file), which is the documented first step.
        default = self.config("COMPOSE_PROFILES=demo from .env.example", self.project())
        if default is not None:
            self.check_stack(default, "demo")
        # `config` validates exactly as `config -q` does; -q runs once above, to be explicit.
        with_profile = self.config("--profile demo, COMPOSE_PROFILES empty",
                                   self.project(["COMPOSE_PROFILES="]), ["--profile", "demo"],
                                   quiet_check=False)
        if with_profile is not None and "mock-provider" not in (with_profile.get("services") or {}):
            self.fail("--profile demo: no mock-provider service")
        without = self.config("no profile", self.project(["COMPOSE_PROFILES="]), quiet_check=False)
        if without is not None:
            self.check_stack(without, "no profile")
        token = os.path.join(self.work, "admin-token")
        with open(token, "w", encoding="utf-8") as f:
            f.write("test-admin-token\n")
        directory = self.project([f"BERRY_ADMIN_TOKEN_FILE={token}"])
        overridden = self.config(f"with {OVERRIDE}", directory,
                                 files=["docker-compose.yml", OVERRIDE], quiet_check=False)
        if overridden is not None:
            self.check_stack(overridden, "admin token")
            cp = overridden["services"]["control-plane"]
            argv = self.argv(cp)
            token_path = self.flag(argv, "--admin-token-file")
            secrets = [s if isinstance(s, str) else s.get("source") for s in cp.get("secrets") or []]
            if not token_path or not secrets or token_path != f"/run/secrets/{secrets[0]}":
                self.fail(f"{OVERRIDE}: control plane runs {argv}, secrets {secrets}: "
                          "--admin-token-file must name the mounted secret")
            if (overridden.get("secrets") or {}).get(secrets[0] if secrets else "", {}).get("file") != token:
                self.fail(f"{OVERRIDE}: the secret is not read from BERRY_ADMIN_TOKEN_FILE")
            if default is not None:
                base = self.argv(default["services"]["control-plane"])
                if argv[:len(base)] != base or argv[len(base):] != ["--admin-token-file", token_path]:
                    self.fail(f"{OVERRIDE} changes the control plane's command line beyond "
                              f"adding the token: {argv}")
        self.check_promtool()
        self.check_env_example()
        self.check_gitignore()
        self.check_config_validates()
        self.check_yamllint()


def compose_or_skip() -> str | None:
    """docker-compose's path when it and python3-yaml are installed; else None, having said why."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        print("SKIP: python3-yaml is not installed (scripts/install-deps installs it)")
        return None
    compose = shutil.which("docker-compose")
    if not compose:
        print("SKIP: docker-compose is not installed (scripts/install-deps installs it)")
    return compose


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--binary", action="append", default=[], metavar="PROGRAM=PATH")
    args = parser.parse_args()
    binaries = dict(pair.split("=", 1) for pair in args.binary)
    for program in ("berry-proxy", "berry-control-plane", "berryctl", "berry-mock-upstream"):
        if program not in binaries:
            print(f"error: pass --binary {program}=PATH", file=sys.stderr)
            return 2
    compose = compose_or_skip()
    if compose is None:
        return SKIP
    checker = Checker(args.repo, binaries, [compose])
    try:
        checker.run()
    finally:
        shutil.rmtree(checker.work, ignore_errors=True)
    for error in checker.errors:
        print(f"FAIL: {error}")
    if checker.errors:
        print(f"{len(checker.errors)} problem(s)")
        return 1
    print("ok: docker-compose.yml and deploy/compose/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
