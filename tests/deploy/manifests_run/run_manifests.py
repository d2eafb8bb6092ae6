#!/usr/bin/env python3
"""The manifests run: starts the Kubernetes renderings' exact container command lines against
the built binaries on loopback, without a cluster.

Renderings: `helm template` of deploy/k8s/helm/berry with ci/demo-values.yaml, and `kubectl
kustomize deploy/k8s/kustomize/overlays/dev` (helm and kubectl from the deploy_tools fixture).
For each, every container of every Deployment (control plane, proxy with its replica count or
the HPA's minReplicas, at least 2, and the demo mock provider) is started as the kubelet would
start it, with only what a cluster provides remapped:

- command + args exactly as rendered, `$(VAR)` expanded as the kubelet does, the image's
  /usr/local/bin/<program> replaced by the built program;
- env: value, valueFrom fieldRef (metadata.name = a unique fake pod name, namespace, podIP ...),
  secretKeyRef/configMapKeyRef and envFrom from the rendered Secrets/ConfigMaps (a fake value
  when the object is not part of the rendering); the pod's host name is its pod name (own UTS
  namespace, when unshare works);
- volumes: the rendered ConfigMap/Secret keys (configMap, secret, projected items and modes)
  and emptyDirs are written to a directory per pod, and words of the command line (and env
  values) that are mount paths are rewritten to it;
- addresses: a listener 0.0.0.0:PORT becomes 127.0.0.1:<a free port for that containerPort of
  the pod>; a Service's DNS name and port (`berry-control-plane:50051`, the mock provider's host
  in config.toml, also .<ns>[.svc[.cluster.local]]) becomes 127.0.0.1:<the port of the pod the
  Service selects, through its targetPort>. A host:port in the args that is neither fails.

The control plane and the mock provider start first, the proxies once those passed their
startupProbes (as a proxy rollout finds them; a proxy started before the control plane listens
becomes ready only after its reconnect backoff). Then, per rendering:
- every container has a livenessProbe and a readinessProbe; every startupProbe, then every livenessProbe and readinessProbe answers: httpGet 200 on the
  containerPort the probe names (named ports resolved through the container's ports), exec
  probes exit 0 (run as given, binary and pod-local ports remapped);
- a chat completion through each proxy replica returns 200 with the mock provider's answer;
- GET /proxies on the control plane lists exactly the proxies' pod names (NODE_ID from the
  downward API);
- SIGTERM to the proxies: the readiness probe fails at once while requests are still served
  during --shutdown-delay-seconds, and each exits 0 within terminationGracePeriodSeconds; then
  the control plane exits 0 and the mock provider exits within theirs.

Self-check: mutated copies of the helm rendering must fail with a message naming the cause and
leave no process behind: a proxy flag renamed (--state-dir -> --state-directory, as when a
binary renames a flag the manifests still pass), a control-plane flag renamed, the proxy's
--shutdown-delay-seconds dropped, a livenessProbe on a port nothing listens on, an exec
readinessProbe (berryctl probe) on a 404 path; and a copy with a right exec readinessProbe and
tcpSocket livenessProbe must pass.

Every started process is stopped on any failure or SIGTERM/SIGINT, and dies with this script
even when it is SIGKILLed (PR_SET_PDEATHSIG, tests/deploy/runlib.py).

Usage: run_manifests.py --repo DIR [--tools DIR] --binary PROGRAM=PATH ...
Exit codes: 0 passed, 1 failed, 77 a tool is missing (skipped).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # imports deploy/k8s/render.py: leave no __pycache__ there
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))  # tests/deploy: runlib
sys.path.insert(0, os.path.join(REPO, "tests", "deploy", "tools"))
import runlib  # noqa: E402
import deploytools  # noqa: E402

SKIP = runlib.SKIP
IMAGE_BIN = "/usr/local/bin"  # where the image holds the programs (deploy contract)
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# Waiting caps (the manifests may allow more, e.g. startup 30 x 1 s; here things start in ~1 s).
STARTUP_CAP = 45.0
READY_CAP = 45.0
MIN_PROXY_REPLICAS = 2
# Pod-name alphabet of the ReplicaSet hash and pod suffix (k8s.io/apimachinery rand.SafeEncodeString).
POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class Failure(Exception):
    pass


def probe_log_line(line: str) -> bool:
    """An access-log line of a probe request: left out of the output quoted in failures."""
    return bool(re.search(r'"path":"/(healthz|readyz|livez|v1/models)"', line))


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of command, args and env values: $(NAME) becomes NAME's
    value when the container defines NAME (else stays as written), $$ becomes $."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def load_yaml_stream(text: str) -> list[dict]:
    import yaml
    return [o for o in yaml.safe_load_all(text) if o]


def render_helm(helm: str) -> list[dict]:
    sys.path.insert(0, os.path.join(REPO, "deploy", "k8s"))
    import render
    values = os.path.join(render.CHART, "ci", "demo-values.yaml")
    return [obj for _, obj in render.split_documents(render.helm_template(helm, [values]))]


def render_kustomize(kubectl: str) -> list[dict]:
    path = os.path.join(REPO, "deploy", "k8s", "kustomize", "overlays", "dev")
    r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise Failure(f"kubectl kustomize deploy/k8s/kustomize/overlays/dev failed:\n{r.stderr}")
    return load_yaml_stream(r.stdout)


def decoded(obj: dict) -> dict[str, bytes]:
    """The keys of a rendered ConfigMap or Secret, as file contents."""
    out: dict[str, bytes] = {}
    if obj["kind"] == "Secret":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def random_name(length: int) -> str:
    return "".join(random.choice(POD_ALPHABET) for _ in range(length))


class Pod:
    def __init__(self, workload: dict, index: int, name: str, root: str):
        self.workload = workload
        self.index = index
        self.name = name
        self.spec = workload["spec"]["template"]["spec"]
        self.labels = workload["spec"]["template"]["metadata"].get("labels") or {}
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.ports: dict[int, int] = {}  # containerPort -> loopback port
        self.mounts: dict[str, dict[str, str]] = {}  # container -> {mountPath: directory}
        self.argv: dict[str, list[str]] = {}  # container -> the command line started
        self.env: dict[str, dict[str, str]] = {}  # container -> its process environment
        self.proc: dict[str, str] = {}  # container -> process name

    def port(self, container_port: int) -> int:
        if container_port not in self.ports:
            self.ports[container_port] = runlib.free_port()
        return self.ports[container_port]

    def containers(self) -> list[dict]:
        return self.spec.get("containers") or []

    def program(self, container: dict) -> str:
        return os.path.basename((container.get("command") or [""])[0])


class Run:
    """One rendering, started on loopback. run() raises Failure at the first problem."""

    def __init__(self, label: str, objs: list[dict], binaries: dict[str, str],
                 ready_cap: float = READY_CAP, terminate: bool = True):
        self.label = label
        self.ready_cap = ready_cap
        self.terminate = terminate
        self.objs = objs
        self.binaries = binaries
        self.work = tempfile.mkdtemp(prefix="berry-manifests-run-")
        self.procs = runlib.Processes(self.work)
        self.pods: list[Pod] = []
        self.mock_models: set[str] = set()
        self.model: str | None = None
        self.by_kind: dict[str, dict[str, dict]] = {}
        for obj in objs:
            self.by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
        self.namespace = next((o["metadata"]["namespace"] for o in objs
                               if o["metadata"].get("namespace")), "berry")
        self.service_hosts: dict[str, dict] = {}  # DNS name -> Service
        for name, svc in self.by_kind.get("Service", {}).items():
            ns = svc["metadata"].get("namespace", self.namespace)
            for host in (name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
                self.service_hosts[host] = svc
        hosts = "|".join(re.escape(h) for h in sorted(self.service_hosts, key=len, reverse=True))
        self.service_re = re.compile(rf"(?<![\w.-])({hosts}):(\d+)(?![\d])") if hosts else None

    # ------------------------------------------------------------------ planning
    def replicas(self, deployment: dict) -> int:
        count = deployment["spec"].get("replicas")
        if count is None:
            for hpa in self.by_kind.get("HorizontalPodAutoscaler", {}).values():
                ref = hpa["spec"]["scaleTargetRef"]
                if ref.get("kind") == "Deployment" and ref.get("name") == deployment["metadata"]["name"]:
                    count = hpa["spec"].get("minReplicas", 1)
        count = 1 if count is None else int(count)
        programs = {os.path.basename((c.get("command") or [""])[0])
                    for c in deployment["spec"]["template"]["spec"].get("containers") or []}
        if "berry-proxy" in programs:
            count = max(count, MIN_PROXY_REPLICAS)
        return count

    def plan(self) -> None:
        for kind in ("StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"):
            if self.by_kind.get(kind):
                raise Failure(f"{kind} {sorted(self.by_kind[kind])}: this test only runs Deployments")
        for deployment in self.by_kind.get("Deployment", {}).values():
            template_hash = random_name(10)
            for i in range(self.replicas(deployment)):
                name = f"{deployment['metadata']['name']}-{template_hash}-{random_name(5)}"
                self.pods.append(Pod(deployment, i, name, self.work))
        if not any(p.program(c) == "berry-proxy" for p in self.pods for c in p.containers()):
            raise Failure("no Deployment runs berry-proxy")
        if not any(p.program(c) == "berry-control-plane" for p in self.pods for c in p.containers()):
            raise Failure("no Deployment runs berry-control-plane")

    def pods_running(self, program: str) -> list[Pod]:
        return [p for p in self.pods if any(p.program(c) == program for c in p.containers())]

    def container_of(self, pod: Pod, program: str) -> dict:
        return next(c for c in pod.containers() if pod.program(c) == program)

    @staticmethod
    def named_port(pod: Pod, port, containers: list[dict], what: str) -> int:
        """A port given as a number or as the name of one of `containers`' ports."""
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for container in containers:
            for p in container.get("ports") or []:
                if p.get("name") == port:
                    return int(p["containerPort"])
        raise Failure(f"{pod.name}: {what} names port '{port}', which no container port is called")

    def service_target(self, host: str, port: int) -> tuple[Pod, int]:
        """The pod and containerPort behind <service host>:<port>."""
        svc = self.service_hosts[host]
        name = svc["metadata"]["name"]
        spec_port = next((p for p in svc["spec"].get("ports") or [] if int(p["port"]) == port), None)
        if spec_port is None:
            raise Failure(f"{host}:{port}: Service {name} has no port {port} (it has "
                          f"{[p['port'] for p in svc['spec'].get('ports') or []]})")
        selector = svc["spec"].get("selector") or {}
        pods = [p for p in self.pods if selector and all(p.labels.get(k) == v for k, v in selector.items())]
        if not pods:
            raise Failure(f"{host}:{port}: Service {name} selects no pod of the rendering ({selector})")
        pod = pods[0]  # a Service balances over its pods; any one answers
        target = spec_port.get("targetPort", spec_port["port"])
        return pod, self.named_port(pod, target, pod.containers(), f"Service {name} targetPort")

    def remap_services(self, text: str) -> str:
        if not self.service_re:
            return text

        def repl(m):
            pod, container_port = self.service_target(m.group(1), int(m.group(2)))
            return f"127.0.0.1:{pod.port(container_port)}"
        return self.service_re.sub(repl, text)

    def remap_word(self, word: str, pod: Pod, container: dict, *, probe: bool = False) -> str:
        """One word of a command line (or an env value) as it must read on this machine."""
        if word.startswith("-") and "=" in word:
            flag, value = word.split("=", 1)
            return flag + "=" + self.remap_word(value, pod, container, probe=probe)
        for mount_path, directory in sorted(pod.mounts.get(container["name"], {}).items(),
                                            key=lambda kv: -len(kv[0])):
            if word == mount_path or word.startswith(mount_path.rstrip("/") + "/"):
                return directory + word[len(mount_path.rstrip("/")):]
        own_ports = {int(p["containerPort"]) for p in container.get("ports") or []}
        m = re.fullmatch(r"(0\.0\.0\.0|\[::\]|::|\*)?:(\d+)", word)
        if m:  # a listener on every pod address
            return f"127.0.0.1:{pod.port(int(m.group(2)))}"
        m = re.fullmatch(r"(127\.0\.0\.1|localhost|\[::1\]):(\d+)", word)
        if m:
            if not probe and int(m.group(2)) in own_ports:
                raise Failure(f"{pod.name}/{container['name']}: '{word}' listens on loopback only: "
                              "the kubelet's probes and Services reach the pod's own address")
            return f"127.0.0.1:{pod.port(int(m.group(2)))}"
        word = re.sub(r"(?<=://)(127\.0\.0\.1|localhost|\[::1\]):(\d+)",
                      lambda m: f"127.0.0.1:{pod.port(int(m.group(2)))}", word)
        remapped = self.remap_services(word)
        if remapped == word and not probe and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?:\d+", word):
            raise Failure(f"{pod.name}/{container['name']}: '{word}' is neither a Service of the "
                          f"rendering ({', '.join(sorted(self.by_kind.get('Service', {})))}) nor a "
                          "pod address")
        return remapped

    def binary(self, pod: Pod, container: dict, path: str) -> str:
        program = os.path.basename(path)
        if path not in (f"{IMAGE_BIN}/{program}", program) or program not in self.binaries:
            raise Failure(f"{pod.name}/{container['name']} runs '{path}', which is not one of the "
                          "image's programs "
                          f"({', '.join(f'{IMAGE_BIN}/{p}' for p in sorted(self.binaries))})")
        return self.binaries[program]

    # ------------------------------------------------------------------ volumes and env
    def source_object(self, kind: str, name: str, optional: bool, where: str) -> dict | None:
        obj = self.by_kind.get(kind, {}).get(name)
        if obj is None and not optional:
            raise Failure(f"{where}: {kind} {name} is not part of the rendering")
        return obj

    def project(self, kind: str, ref: dict, name: str, default_mode: int, where: str
                ) -> list[tuple[str, bytes, int]]:
        """(path, content, mode) of a configMap/secret volume source with its items."""
        obj = self.source_object(kind, name, ref.get("optional", False), where)
        if obj is None:
            return []
        data = decoded(obj)
        items = ref.get("items")
        if items is None:
            return [(k, v, default_mode) for k, v in data.items()]
        out = []
        for item in items:
            if item["key"] not in data:
                if ref.get("optional", False):
                    continue
                raise Failure(f"{where}: {kind} {name} has no key {item['key']}")
            out.append((item["path"], data[item["key"]], item.get("mode", default_mode)))
        return out

    def field(self, pod: Pod, path: str, where: str) -> str:
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            source = pod.labels if m.group(1) == "labels" else \
                pod.workload["spec"]["template"]["metadata"].get("annotations") or {}
            return str(source.get(m.group(2), ""))
        values = {
            "metadata.name": pod.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": f"00000000-0000-4000-8000-{pod.index:012d}",
            "spec.nodeName": "node-1",
            "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
        }
        if path not in values:
            raise Failure(f"{where}: fieldRef {path} is not one the downward API offers")
        return values[path]

    def prepare_volumes(self, pod: Pod) -> None:
        volumes = {}
        for volume in pod.spec.get("volumes") or []:
            where = f"{pod.name} volume {volume['name']}"
            directory = os.path.join(pod.dir, "volumes", volume["name"])
            os.makedirs(directory)
            files: list[tuple[str, bytes, int]] = []
            if "emptyDir" in volume:
                pass
            elif "configMap" in volume:
                ref = volume["configMap"]
                files = self.project("ConfigMap", ref, ref["name"], ref.get("defaultMode", 0o644), where)
            elif "secret" in volume:
                ref = volume["secret"]
                files = self.project("Secret", ref, ref["secretName"], ref.get("defaultMode", 0o644), where)
            elif "projected" in volume:
                mode = volume["projected"].get("defaultMode", 0o644)
                for source in volume["projected"].get("sources") or []:
                    if "configMap" in source:
                        files += self.project("ConfigMap", source["configMap"], source["configMap"]["name"],
                                              mode, where)
                    elif "secret" in source:
                        files += self.project("Secret", source["secret"], source["secret"]["name"],
                                              mode, where)
                    elif "downwardAPI" in source:
                        for item in source["downwardAPI"].get("items") or []:
                            files.append((item["path"], self.field(pod, item["fieldRef"]["fieldPath"],
                                                                   where).encode(), item.get("mode", mode)))
                    elif "serviceAccountToken" in source:
                        files.append((source["serviceAccountToken"]["path"], b"fake-token", mode))
                    else:
                        raise Failure(f"{where}: projected source {sorted(source)} is not supported here")
            elif "downwardAPI" in volume:
                mode = volume["downwardAPI"].get("defaultMode", 0o644)
                for item in volume["downwardAPI"].get("items") or []:
                    files.append((item["path"], self.field(pod, item["fieldRef"]["fieldPath"], where)
                                  .encode(), item.get("mode", mode)))
            else:
                raise Failure(f"{where}: volume type {sorted(k for k in volume if k != 'name')} needs "
                              "a cluster (only configMap, secret, projected, downwardAPI, emptyDir "
                              "run here)")
            for path, content, mode in files:
                try:  # service names in config files (the providers' base_url) -> loopback
                    content = self.remap_services(content.decode()).encode()
                except UnicodeDecodeError:
                    pass
                target = os.path.join(directory, path)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.write(content)
                os.chmod(target, mode)
            volumes[volume["name"]] = directory
        for container in pod.containers():
            mounts = {}
            for mount in container.get("volumeMounts") or []:
                if mount["name"] not in volumes:
                    raise Failure(f"{pod.name}/{container['name']} mounts volume {mount['name']}, "
                                  "which the pod does not declare")
                directory = volumes[mount["name"]]
                if mount.get("subPath"):
                    directory = os.path.join(directory, mount["subPath"])
                mounts[mount["mountPath"]] = directory
            pod.mounts[container["name"]] = mounts

    def container_env(self, pod: Pod, container: dict) -> dict[str, str]:
        """The container's variables as the kubelet sets them (envFrom first, then env)."""
        where = f"{pod.name}/{container['name']}"
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    obj = self.by_kind.get(kind, {}).get(source[key]["name"])
                    if obj is None:
                        print(f"note: {where}: envFrom {kind} {source[key]['name']} is not rendered "
                              "(an existing object): its variables are unknown here")
                        continue
                    for k, v in decoded(obj).items():
                        env[prefix + k] = v.decode()
        for var in container.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(str(var.get("value", "")), env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[name] = self.field(pod, source["fieldRef"]["fieldPath"], f"{where} env {name}")
            elif "resourceFieldRef" in source:
                env[name] = "1"
            else:
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in source:
                        ref = source[key]
                        obj = self.by_kind.get(kind, {}).get(ref["name"])
                        if obj is None:
                            env[name] = f"fake-{name.lower()}"
                        elif ref["key"] in decoded(obj):
                            env[name] = decoded(obj)[ref["key"]].decode()
                        elif not ref.get("optional", False):
                            raise Failure(f"{where} env {name}: {kind} {ref['name']} has no "
                                          f"key {ref['key']}")
        return env

    # ------------------------------------------------------------------ starting
    def start(self, pod: Pod) -> None:
        self.prepare_volumes(pod)
        if pod.spec.get("initContainers"):
            raise Failure(f"{pod.name}: init containers are not run by this test")
        for container in pod.containers():
            where = f"{pod.name}/{container['name']}"
            if not container.get("command"):
                raise Failure(f"{where} has no command: the image has no ENTRYPOINT (deploy contract)")
            env = self.container_env(pod, container)
            words = [expand(str(w), env) for w in container["command"] + (container.get("args") or [])]
            argv = [self.binary(pod, container, words[0])] + \
                [self.remap_word(w, pod, container) for w in words[1:]]
            process_env = {**runlib.base_env(), "HOSTNAME": pod.name,
                           **{k: self.remap_word(v, pod, container, probe=True) for k, v in env.items()}}
            cwd = os.path.join(pod.dir, "root")  # the image's working directory "/"
            os.makedirs(cwd, exist_ok=True)
            pod.argv[container["name"]] = argv
            pod.env[container["name"]] = process_env
            pod.proc[container["name"]] = f"{pod.name}.{container['name']}"
            self.procs.start(pod.proc[container["name"]], argv, process_env, hostname=pod.name, cwd=cwd)

    def exited_failure(self, pod: Pod, container: dict, what: str) -> Failure:
        name = pod.proc[container["name"]]
        words = container["command"] + (container.get("args") or [])
        return Failure(f"{pod.name}/{container['name']} exited with code {self.procs.exited(name)} "
                       f"{what}.\n  manifest command line: {' '.join(map(str, words))}\n"
                       f"  its output:\n{self.procs.tail(name, skip=probe_log_line)}")

    # ------------------------------------------------------------------ probes
    def probe(self, pod: Pod, container: dict, kind: str) -> tuple[bool, str]:
        """Runs the container's probe `kind` once: (passed, what happened)."""
        spec = container[kind]
        timeout = float(spec.get("timeoutSeconds", 1))
        if "httpGet" in spec:
            get = spec["httpGet"]
            if get.get("host"):
                raise Failure(f"{pod.name}/{container['name']} {kind}: httpGet.host {get['host']} "
                              "would make the kubelet probe that host, not the pod")
            container_port = self.named_port(pod, get["port"], [container], f"{container['name']} {kind}")
            scheme = get.get("scheme", "HTTP").lower()
            url = f"{scheme}://127.0.0.1:{pod.port(container_port)}{get.get('path', '/')}"
            what = f"GET {get.get('path', '/')} on port {get['port']} ({container_port})"
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
            request = urllib.request.Request(url, headers=headers)
            context = ssl._create_unverified_context() if scheme == "https" else None
            try:
                with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except (urllib.error.URLError, OSError) as error:
                return False, f"{what}: {error}"
            return status == 200, f"{what} -> {status}"
        if "exec" in spec:
            command = [str(w) for w in spec["exec"]["command"]]
            argv = [self.binary(pod, container, command[0])] + \
                [self.remap_word(w, pod, container, probe=True) for w in command[1:]]
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 1,
                                   env=pod.env[container["name"]], check=False)
            except subprocess.TimeoutExpired:
                return False, f"exec {' '.join(command)}: no exit within {timeout:g}s"
            return r.returncode == 0, f"exec {' '.join(command)} -> exit {r.returncode} " \
                f"{(r.stdout + r.stderr).strip()[:200]}"
        if "tcpSocket" in spec:
            container_port = self.named_port(pod, spec["tcpSocket"]["port"], [container],
                                             f"{container['name']} {kind}")
            try:
                with socket.create_connection(("127.0.0.1", pod.port(container_port)), timeout=timeout):
                    return True, f"tcp port {container_port} open"
            except OSError as error:
                return False, f"tcp port {container_port}: {error}"
        raise Failure(f"{pod.name}/{container['name']} {kind}: {sorted(spec)} probes are not run here")

    def await_probes(self, pods: list[Pod], kinds: tuple[str, ...]) -> None:
        """Polls the probes `kinds` of the pods' containers until each passed once; fails on an
        exited process, or when the time the kubelet allows before a restart (startup,
        liveness: initialDelaySeconds + failureThreshold x periodSeconds; readiness: no limit)
        runs out, capped (STARTUP_CAP, READY_CAP)."""
        pending = []
        start = time.time()
        for pod in pods:
            for container in pod.containers():
                if not all(k in container for k in ("livenessProbe", "readinessProbe")):
                    raise Failure(f"{pod.name}/{container['name']} lacks a livenessProbe or a "
                                  "readinessProbe")
                for kind in kinds:
                    if kind in container:
                        spec = container[kind]
                        budget = spec.get("initialDelaySeconds", 0) + \
                            spec.get("failureThreshold", 3) * spec.get("periodSeconds", 10)
                        if kind == "readinessProbe":
                            budget = self.ready_cap
                        cap = STARTUP_CAP if kind == "startupProbe" else self.ready_cap
                        pending.append((pod, container, kind, start + min(budget, cap)))
        last: dict[tuple[str, str, str], str] = {}
        while pending:
            still = []
            for pod, container, kind, deadline in pending:
                if self.procs.exited(pod.proc[container["name"]]) is not None:
                    raise self.exited_failure(pod, container, f"before its {kind} passed")
                ok, detail = self.probe(pod, container, kind)
                if ok:
                    print(f"ok: {self.label}: {pod.name}/{container['name']} {kind}: {detail}")
                    continue
                last[(pod.name, container["name"], kind)] = detail
                if time.time() > deadline:
                    raise Failure(f"{pod.name}/{container['name']} {kind} never passed "
                                  f"({detail}):\n"
                                  f"{self.procs.tail(pod.proc[container['name']], skip=probe_log_line)}")
                still.append((pod, container, kind, deadline))
            pending = still
            if pending:
                time.sleep(0.2)

    # ------------------------------------------------------------------ API checks
    def proxy_url(self, pod: Pod) -> str:
        """The proxy pod's HTTP API, through the Service that selects it (targetPort)."""
        for svc in self.by_kind.get("Service", {}).values():
            selector = svc["spec"].get("selector") or {}
            if selector and all(pod.labels.get(k) == v for k, v in selector.items()):
                port = (svc["spec"].get("ports") or [{}])[0]
                target = port.get("targetPort", port.get("port"))
                container_port = self.named_port(pod, target, pod.containers(), f"Service {svc['metadata']['name']}")
                return f"http://127.0.0.1:{pod.port(container_port)}"
        raise Failure(f"no Service selects the proxy pod {pod.name}")

    def chat_model(self, base: str) -> str:
        status, body = runlib.http("GET", base + "/v1/models")
        try:
            ids = [m["id"] for m in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            ids = []
        if status != 200 or not ids:
            raise Failure(f"GET /v1/models through the proxy answered {status}: {body[:300]}")
        return "demo-chat" if "demo-chat" in ids else ids[0]

    def chat(self, base: str, model: str) -> tuple[bool, str]:
        request = {"model": model, "messages": [{"role": "user", "content": "Hello"}]}
        status, body = runlib.http("POST", base + "/v1/chat/completions", request)
        try:
            answer = json.loads(body)
            ok = status == 200 and bool(answer.get("choices"))
        except ValueError:
            answer, ok = {}, False
        if ok and self.mock_models and answer.get("model") not in self.mock_models:
            return False, (f"{status}, but from model {answer.get('model')!r}, none of the mock "
                           f"provider's {sorted(self.mock_models)}: {body[:300]}")
        return ok, f"{status}: {body[:300]}"

    def check_api(self) -> None:
        proxies = self.pods_running("berry-proxy")
        # The mock provider answers with the upstream model it was asked for, one of its --models:
        # such an answer came from it.
        self.mock_models = set()
        for pod in self.pods_running("berry-mock-upstream"):
            models = self.flag(pod.argv[self.container_of(pod, "berry-mock-upstream")["name"]], "--models")
            self.mock_models |= set((models or "mock-model").split(","))
        self.model = None
        for pod in proxies:
            base = self.proxy_url(pod)
            self.model = self.model or self.chat_model(base)
            ok, detail = self.chat(base, self.model)
            if not ok:
                raise Failure(f"{pod.name}: chat completion for {self.model} answered {detail}")
            print(f"ok: {self.label}: {pod.name}: chat completion for {self.model} -> "
                  f"{detail[:detail.index('{')] if '{' in detail else detail}"
                  f"answered by the mock provider's {json.loads(detail.split(': ', 1)[1])['model']}")
        cp = self.pods_running("berry-control-plane")[0]
        cp_container = self.container_of(cp, "berry-control-plane")
        cp_http = self.named_port(cp, "http", [cp_container], "the control plane's HTTP port")
        want = sorted(p.name for p in proxies)
        node_ids: list[str] = []
        for _ in range(25):  # the proxies register as their streams open
            status, body = runlib.http("GET", f"http://127.0.0.1:{cp.port(cp_http)}/proxies")
            try:
                node_ids = sorted(p.get("node_id") for p in json.loads(body).get("proxies", []))
            except (ValueError, AttributeError):
                node_ids = []
            if status == 200 and node_ids == want:
                break
            time.sleep(0.2)
        if node_ids != want:
            raise Failure(f"the control plane's /proxies lists node ids {node_ids}, want the proxies' "
                          f"pod names {want} (NODE_ID from metadata.name)")
        print(f"ok: {self.label}: /proxies lists the pod names {', '.join(want)}")

    # ------------------------------------------------------------------ termination
    @staticmethod
    def flag(argv: list[str], name: str) -> str | None:
        return runlib.flag_value(argv, name)

    def check_termination(self) -> None:
        proxies = self.pods_running("berry-proxy")
        first, others = proxies[0], proxies[1:]
        container = self.container_of(first, "berry-proxy")
        argv = first.argv[container["name"]]
        delay = float(self.flag(argv, "--shutdown-delay-seconds") or 0)
        grace = float(first.spec.get("terminationGracePeriodSeconds", 30))
        if (container.get("lifecycle") or {}).get("preStop"):
            raise Failure(f"{first.name}/{container['name']} has a preStop hook: this test sends "
                          "SIGTERM directly and does not run hooks (the contract needs none)")
        base = self.proxy_url(first)
        sent = time.time()
        for pod in others:  # a rollout stops several at once; they must not disturb each other
            self.procs.process(pod.proc[self.container_of(pod, "berry-proxy")["name"]]).terminate()

        def not_ready():
            ok, detail = self.probe(first, container, "readinessProbe")
            return not ok, f"readinessProbe {detail}"

        problems = runlib.sigterm_sequence(
            self.procs.process(first.proc[container["name"]]), f"{self.label}: {first.name}",
            not_ready=not_ready, serves=lambda: self.chat(base, self.model), delay=delay, grace=grace,
            grace_name="terminationGracePeriodSeconds",
            # No preStop hook (checked above): the program itself must keep serving.
            must_serve=True)
        if problems:
            output = self.procs.tail(first.proc[container["name"]], skip=probe_log_line)
            raise Failure("; ".join(problems) + f"\n  its output:\n{output}")
        waits = [(pod, self.container_of(pod, "berry-proxy"), sent) for pod in others]
        now = time.time()
        for pod in self.pods:  # then the rest, each within its own grace period
            if pod in proxies:
                continue
            for c in pod.containers():
                self.procs.process(pod.proc[c["name"]]).terminate()
                waits.append((pod, c, now))
        for pod, c, signalled in waits:
            pod_grace = float(pod.spec.get("terminationGracePeriodSeconds", 30))
            process = self.procs.process(pod.proc[c["name"]])
            try:
                code = process.wait(timeout=max(0.0, signalled + pod_grace - time.time()))
            except subprocess.TimeoutExpired:
                raise Failure(f"{pod.name}/{c['name']} still runs {pod_grace:g}s "
                              "(terminationGracePeriodSeconds) after SIGTERM: it would be SIGKILLed")
            # The mock provider is a demo helper: only that it stops in time matters.
            if code != 0 and pod.program(c) != "berry-mock-upstream":
                raise self.exited_failure(pod, c, "after SIGTERM (want 0)")
            print(f"ok: {self.label}: {pod.name}/{c['name']} exited {code} "
                  f"{time.time() - signalled:.1f}s after SIGTERM "
                  f"(terminationGracePeriodSeconds {pod_grace:g}s)")

    # ------------------------------------------------------------------ all
    def run(self) -> None:
        try:
            self.plan()
            # The control plane (and the mock provider) first, as proxies of a rollout find them:
            # a proxy started before the control plane listens only becomes ready after its
            # reconnect backoff, which would make this test slow, not more thorough.
            proxies = self.pods_running("berry-proxy")
            others = [p for p in self.pods if p not in proxies]
            for pod in others:
                self.start(pod)
            self.await_probes(others, ("startupProbe",))
            for pod in proxies:
                self.start(pod)
            self.await_probes(proxies, ("startupProbe",))
            self.await_probes(self.pods, ("livenessProbe", "readinessProbe"))
            self.check_api()
            if self.terminate:
                self.check_termination()
        finally:
            self.procs.stop_all()

    def cleanup(self) -> list[str]:
        """Stops everything; returns the processes that could not be stopped (none, normally)."""
        self.procs.stop_all()
        left = [name for name, p, _ in self.procs.started if p.poll() is None]
        shutil.rmtree(self.work, ignore_errors=True)
        return left


def run_rendering(label: str, objs: list[dict], binaries: dict[str, str], **options) -> str | None:
    """Runs one rendering; the failure message, or None when it passed."""
    run = Run(label, objs, binaries, **options)
    message = None
    try:
        run.run()
    except Failure as failure:
        message = str(failure)
    finally:
        left = run.cleanup()
    if left:
        message = (message + "\n" if message else "") + f"processes left running: {left}"
    return message


# ---------------------------------------------------------------------- self-check
def container(objs: list[dict], program: str) -> dict:
    for obj in objs:
        if obj["kind"] == "Deployment":
            for c in obj["spec"]["template"]["spec"]["containers"]:
                if os.path.basename((c.get("command") or [""])[0]) == program:
                    return c
    raise Failure(f"self-check: no container runs {program}")


def rename_flag(program: str, old: str, new: str):
    def mutate(objs):
        args = container(objs, program).get("args") or []
        if old not in args:
            raise Failure(f"self-check: {program}'s args have no {old} to rename: {args}")
        args[args.index(old)] = new
    return mutate


def drop_flag(program: str, flag: str):
    def mutate(objs):
        args = container(objs, program).get("args") or []
        if flag not in args:
            raise Failure(f"self-check: {program}'s args have no {flag} to drop: {args}")
        i = args.index(flag)
        del args[i:i + 2]
    return mutate


def set_probe(program: str, kind: str, handler: dict):
    def mutate(objs):
        probe = container(objs, program)[kind]
        for key in ("httpGet", "exec", "tcpSocket", "grpc"):
            probe.pop(key, None)
        probe.update(copy.deepcopy(handler))
    return mutate


def chain(*mutations):
    def mutate(objs):
        for m in mutations:
            m(objs)
    return mutate


EXEC_READY = {"exec": {"command": [f"{IMAGE_BIN}/berryctl", "probe", "http://127.0.0.1:8080/readyz"]}}
# Each: a label, a mutation of the helm rendering, run options, and what must happen: None =
# the run passes; else fragments its failure message must contain, and a fragment the failed
# program's own output (quoted after "its output:") must contain.
MUTATIONS = [
    ("berry-proxy flag --state-dir renamed in the manifest",
     rename_flag("berry-proxy", "--state-dir", "--state-directory"), {},
     (["berry-proxy-", "exited with code"], "--state-directory")),
    ("berry-control-plane flag --http-listen renamed in the manifest",
     rename_flag("berry-control-plane", "--http-listen", "--http-address"), {},
     (["berry-control-plane-", "exited with code"], "--http-address")),
    ("the proxy's --shutdown-delay-seconds dropped (it stops serving at SIGTERM)",
     drop_flag("berry-proxy", "--shutdown-delay-seconds"), {},
     (["after SIGTERM", "was not served"], None)),
    ("the proxy's livenessProbe on a port nothing listens on",
     set_probe("berry-proxy", "livenessProbe", {"httpGet": {"path": "/healthz", "port": 8082}}),
     {"ready_cap": 3.0, "terminate": False}, (["livenessProbe never passed", "(8082)"], None)),
    ("an exec readinessProbe (berryctl probe) on a path that answers 404",
     set_probe("berry-proxy", "readinessProbe",
               {"exec": {"command": [f"{IMAGE_BIN}/berryctl", "probe", "http://127.0.0.1:8080/ready"]}}),
     {"ready_cap": 3.0, "terminate": False}, (["readinessProbe never passed", "exit 1"], None)),
    ("exec and tcpSocket probes that are right (berryctl probe /readyz, tcpSocket http) pass",
     chain(set_probe("berry-proxy", "readinessProbe", EXEC_READY),
           set_probe("berry-mock-upstream", "livenessProbe", {"tcpSocket": {"port": "http"}})),
     {"terminate": False}, None),
]


def self_check(objs: list[dict], binaries: dict[str, str]) -> list[str]:
    """Runs each mutation (output kept back unless it goes wrong); returns the problems."""
    problems = []
    for label, mutate, options, expect in MUTATIONS:
        mutated = copy.deepcopy(objs)
        try:
            mutate(mutated)
        except Failure as failure:
            problems.append(str(failure))
            continue
        started = time.time()
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            message = run_rendering(f"self-check ({label})", mutated, binaries, **options)
        took = time.time() - started
        if expect is None:
            if message is None:
                print(f"ok: self-check: {label} ({took:.1f}s)")
            else:
                problems.append(f"self-check: {label}: the run failed: {message}\n{output.getvalue()}")
            continue
        fragments, output_fragment = expect
        if message is None:
            problems.append(f"self-check: the run passed with {label}:\n{output.getvalue()}")
        elif not all(f in message for f in fragments) or (
                output_fragment and output_fragment not in message.split("its output:")[-1]):
            problems.append(f"self-check: with {label} the run failed, but its message lacks "
                            f"{fragments} or the program's output naming {output_fragment}:\n{message}")
        elif "processes left running" in message:
            problems.append(f"self-check: {label}: {message}")
        else:
            print(f"ok: self-check: {label}: fails in {took:.1f}s with: {message.splitlines()[0]}")
    return problems


def main() -> int:
    global REPO
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=REPO)
    parser.add_argument("--tools", default=None, help="deploy tools dir (default: deploytools)")
    parser.add_argument("--binary", action="append", default=[], metavar="PROGRAM=PATH")
    parser.add_argument("--no-self-check", action="store_true")
    args = parser.parse_args()
    REPO = os.path.abspath(args.repo)
    binaries = dict(pair.split("=", 1) for pair in args.binary)
    for program in ("berry-proxy", "berry-control-plane", "berryctl", "berry-mock-upstream"):
        if not os.access(binaries.get(program, ""), os.X_OK):
            print(f"FAIL: --binary {program}=PATH missing or not executable ({binaries.get(program)})")
            return 1
    try:
        import yaml  # noqa: F401
    except ImportError:
        print("SKIP: python3-yaml is not installed (scripts/install-deps installs it)")
        return SKIP
    tools = deploytools.Tools(args.tools)
    try:
        helm, kubectl = tools.helm, tools.kubectl
    except deploytools.Unavailable as why:
        print(f"SKIP: {why}")
        return SKIP

    # SIGTERM/SIGINT (ctest, Ctrl-C): unwind, so that every started process is stopped and the
    # temporary directories removed. (On SIGKILL the servers die with this process: runlib.)
    def interrupted(signum, _frame):
        raise SystemExit(f"interrupted by signal {signum}")
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, interrupted)

    started = time.time()
    failures = []
    renderings = []
    try:
        renderings.append(("helm ci/demo-values.yaml", render_helm(helm)))
        renderings.append(("kustomize overlays/dev", render_kustomize(kubectl)))
    except (Failure, RuntimeError) as error:
        print(f"FAIL: rendering: {error}")
        return 1
    for label, objs in renderings:
        t = time.time()
        message = run_rendering(label, objs, binaries)
        if message:
            print(f"FAIL: {label}: {message}")
            failures.append(label)
        else:
            print(f"ok: {label}: the manifests run ({time.time() - t:.1f}s)")
    if not args.no_self_check:
        for problem in self_check(renderings[0][1], binaries):
            print(f"FAIL: {problem}")
            failures.append(problem.splitlines()[0])
    print(f"({time.time() - started:.1f}s)")
    if failures:
        print(f"{len(failures)} problem(s)")
        return 1
    print("ok: the rendered manifests' command lines, env, mounts and probes run as configured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
