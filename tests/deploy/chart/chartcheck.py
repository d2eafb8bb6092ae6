#!/usr/bin/env python3
"""Offline checks of Berry's Helm chart and kustomize tree (deploy/k8s). One subcommand per ctest
test (tests/deploy/chart/CMakeLists.txt); each also proves it can fail, on deliberately broken
input, before it passes.

    chartcheck.py [--tools DIR] lint | golden [--update] | values-schema | properties |
                  base-drift | kustomize-build | overlays | schema | yamllint

--tools: what tests/deploy/tools/setup-tools installed (default $BERRY_DEPLOY_TOOLS, else
build/test/deploy-tools). Goldens: BERRY_UPDATE_GOLDEN=1 (or --update) rewrites
tests/deploy/chart/golden/ from the current chart. Exit 0 pass, 1 fail, 77 skip (a tool is
missing: the message says which and why).
"""
import argparse
import base64
import copy
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # it imports deploy/k8s/render.py: leave no __pycache__ there
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def _ensure_yaml():
    """python3-yaml is a Debian package; a python3 earlier on PATH may lack it."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        system = "/usr/bin/python3"
        if os.path.realpath(sys.executable) != os.path.realpath(system) and os.path.exists(system):
            os.execv(system, [system] + sys.argv)
        print("SKIP: python3-yaml is not installed (scripts/install-deps installs it)")
        sys.exit(77)


_ensure_yaml()
import yaml  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "deploy", "k8s"))
sys.path.insert(0, os.path.join(REPO, "tests", "deploy", "tools"))
import deploytools  # noqa: E402
import render  # noqa: E402

CHART = render.CHART
CI_DIR = os.path.join(CHART, "ci")
GOLDEN_DIR = os.path.join(HERE, "golden")
KUSTOMIZE = os.path.join(REPO, "deploy", "k8s", "kustomize")
# Each overlay and the chart values it must render the same objects as.
OVERLAY_VALUES = {
    "dev": "demo-values.yaml",
    "ha": "ha-values.yaml",
    "mtls": "mtls-certmanager-values.yaml",
}
RULES_FILE = "files/rules/berry-alerts.yml"
DASHBOARD_FILE = "files/dashboards/berry.json"


class Failure(Exception):
    pass


class Check:
    """Collects problems; a subcommand fails when any were recorded."""

    def __init__(self, name):
        self.name = name
        self.problems = []
        self.passed = 0

    def expect(self, ok, message):
        if ok:
            self.passed += 1
        else:
            self.problems.append(message)
        return ok

    def fail(self, message):
        self.problems.append(message)


def ci_files():
    files = sorted(f for f in os.listdir(CI_DIR) if f.endswith(".yaml"))
    if not files:
        raise Failure(f"no values files in {CI_DIR}")
    return files


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def template(helm, values=(), sets=(), chart=CHART):
    return render.helm_template(helm, [os.path.join(CI_DIR, v) if not os.path.isabs(v) else v
                                       for v in values], sets, chart=chart)


def objects(text):
    return [o for _, o in render.split_documents(text)]


def kustomize(kubectl, path):
    r = run([kubectl, "kustomize", path])
    if r.returncode != 0:
        raise Failure(f"kubectl kustomize {os.path.relpath(path, REPO)} failed:\n{r.stderr}")
    return [o for o in yaml.safe_load_all(r.stdout) if o is not None]


def find(objs, kind, name=None, component=None):
    out = []
    for o in objs:
        md = o.get("metadata") or {}
        if o.get("kind") != kind:
            continue
        if name is not None and md.get("name") != name:
            continue
        if component is not None and (md.get("labels") or {}).get(
                "app.kubernetes.io/component") != component:
            continue
        out.append(o)
    return out


def one(objs, kind, **kw):
    found = find(objs, kind, **kw)
    if len(found) != 1:
        raise Failure(f"expected one {kind} {kw}, found {len(found)}")
    return found[0]


def chart_copy(tmp):
    dst = os.path.join(tmp, "berry")
    shutil.copytree(CHART, dst)
    return dst


# ---------------------------------------------------------------------------------------------
# lint

def cmd_lint(tools, args, check):
    helm = tools.helm

    def lint(values=None, chart=CHART):
        cmd = [helm, "lint", "--strict", chart]
        if values:
            cmd += ["--values", values]
        r = run(cmd)
        out = r.stdout + r.stderr
        bad = [l for l in out.splitlines() if re.match(r"\s*\[(WARNING|ERROR)\]", l)]
        return r.returncode == 0 and not bad, out

    ok, out = lint()
    check.expect(ok, f"helm lint --strict (defaults) failed:\n{out}")
    for f in ci_files():
        ok, out = lint(os.path.join(CI_DIR, f))
        check.expect(ok, f"helm lint --strict -f ci/{f} failed:\n{out}")

    # Negative checks: lint must refuse each of these.
    with tempfile.TemporaryDirectory() as tmp:
        bad_values = os.path.join(tmp, "typo.yaml")
        with open(bad_values, "w") as f:
            f.write("proxies:\n  replicas: 3\n")
        ok, out = lint(bad_values)
        check.expect(not ok and "proxies" in out,
                     f"negative: lint accepted an unknown top-level key:\n{out}")

        broken = chart_copy(tmp)
        with open(os.path.join(broken, "templates", "broken.yaml"), "w") as f:
            f.write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: {}\n")
        ok, out = lint(chart=broken)
        check.expect(not ok, f"negative: lint accepted a template that is not YAML:\n{out}")

        badname = chart_copy(os.path.join(tmp, "n"))
        with open(os.path.join(badname, "templates", "badname.yaml"), "w") as f:
            f.write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_DNS_Name\n")
        ok, out = lint(chart=badname)
        check.expect(not ok and "Not_A_DNS_Name" in out,
                     f"negative: lint accepted an object name Kubernetes refuses:\n{out}")
    # (helm lint only logs a template's `fail` as [INFO]: the chart's own refusals are checked
    # with helm template by values-schema.)


# ---------------------------------------------------------------------------------------------
# golden files

RANDOM_TOKEN = "<random: generated at install>"


def golden_text(helm, values_file, sets=()):
    """`helm template` of one values file, normalised: one document per object with its
    # Source line; the random admin token and the embedded chart files (dashboard, rules, checked
    against their files by `properties`) replaced by markers, so goldens track the chart."""
    text = template(helm, [values_file], sets)
    rules = yaml.safe_load(open(os.path.join(CHART, RULES_FILE)))
    dashboard = open(os.path.join(CHART, DASHBOARD_FILE)).read().rstrip("\n")
    out = []
    for source, obj in render.split_documents(text):
        if render.is_generated_secret(obj):
            obj["data"] = {k: RANDOM_TOKEN for k in obj.get("data", {})}
        if obj.get("kind") == "PrometheusRule" and obj["spec"].get("groups") == rules.get("groups"):
            obj["spec"]["groups"] = f"<the groups of {RULES_FILE}>"
        if obj.get("kind") == "ConfigMap" and (obj.get("data") or {}).get("berry.json") == dashboard:
            obj["data"]["berry.json"] = f"<{DASHBOARD_FILE}>"
        out.append(f"---\n# Source: {source}\n{render.dump(obj)}")
    return "".join(out)


def golden_path(values_file):
    return os.path.join(GOLDEN_DIR, values_file.replace("-values.yaml", "").replace(".yaml", "")
                        + ".yaml")


def diff(a, b, name_a, name_b, limit=80):
    lines = list(difflib.unified_diff(a.splitlines(True), b.splitlines(True), name_a, name_b))
    more = f"... ({len(lines) - limit} more diff lines)\n" if len(lines) > limit else ""
    return "".join(lines[:limit]) + more


def cmd_golden(tools, args, check):
    helm = tools.helm
    update = args.update or os.environ.get("BERRY_UPDATE_GOLDEN") == "1"
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    expected = set()
    for f in ci_files():
        path = golden_path(f)
        expected.add(os.path.basename(path))
        text = golden_text(helm, f)
        if update:
            with open(path, "w") as out:
                out.write(text)
            print(f"wrote {os.path.relpath(path, REPO)}")
            continue
        if not os.path.exists(path):
            check.fail(f"no golden file {os.path.relpath(path, REPO)} for ci/{f} "
                       "(BERRY_UPDATE_GOLDEN=1 writes it)")
            continue
        have = open(path).read()
        check.expect(have == text, f"helm template -f ci/{f} differs from its golden file "
                     f"(review, then BERRY_UPDATE_GOLDEN=1 to accept):\n"
                     + diff(have, text, os.path.relpath(path, REPO), "rendered"))
    for stale in sorted(set(os.listdir(GOLDEN_DIR)) - expected):
        if update:
            os.remove(os.path.join(GOLDEN_DIR, stale))
        else:
            check.fail(f"golden/{stale} belongs to no ci/ values file")
    if update:
        return
    # Negative: a one-value change must show up as a difference from the golden file.
    changed = golden_text(helm, "demo-values.yaml", ["proxy.drainSeconds=31"])
    have = open(golden_path("demo-values.yaml")).read()
    d = diff(have, changed, "golden", "changed")
    check.expect("terminationGracePeriodSeconds: 46" in d and "'31'" in d,
                 f"negative: proxy.drainSeconds=31 did not show in the golden diff:\n{d}")
    # The generated token really is random, so replacing it in goldens hides nothing stable.
    a, b = (one(objects(template(helm)), "Secret", name="berry-admin-token") for _ in range(2))
    check.expect(a["data"]["token"] != b["data"]["token"],
                 "the generated admin token is the same in two renderings")


# ---------------------------------------------------------------------------------------------
# values.schema.json and the chart's own refusals

# (values YAML, what the error must mention, a close variant that must pass or None)
BAD_VALUES = [
    ("proxy:\n  replicas: two\n", "proxy.replicas", "proxy:\n  replicas: 3\n"),
    ("proxy:\n  drainSeconds: -1\n", "proxy.drainSeconds", "proxy:\n  drainSeconds: 0\n"),
    ("proxy:\n  threads: 1.5\n", "proxy.threads", "proxy:\n  threads: 4\n"),
    ("proxy:\n  shutdownDelaySeconds: '10'\n", "proxy.shutdownDelaySeconds",
     "proxy:\n  shutdownDelaySeconds: 12\n"),
    ("proxy:\n  autoscaling:\n    enabled: 'yes'\n", "proxy.autoscaling.enabled",
     "proxy:\n  autoscaling:\n    enabled: false\n"),
    ("proxy:\n  autoscaling:\n    behavior: fast\n", "proxy.autoscaling.behavior",
     "proxy:\n  autoscaling:\n    behavior:\n      scaleDown:\n        stabilizationWindowSeconds: 60\n"),
    ("proxy:\n  topologySpread:\n    zone: Sometimes\n", "proxy.topologySpread.zone",
     "proxy:\n  topologySpread:\n    zone: DoNotSchedule\n"),
    ("proxy:\n  bogus: 1\n", "bogus", None),
    ("proxies:\n  replicas: 3\n", "proxies", None),
    ("mtls:\n  mode: off\n", "mtls.mode", "mtls:\n  mode: \"off\"\n"),
    ("mtls:\n  mode: sometimes\n", "mtls.mode", "mtls:\n  mode: certManager\n"),
    ("providerKeys:\n  OPENAI_API_KEY: 123\n", "providerKeys",
     "providerKeys:\n  OPENAI_API_KEY: sk-123\n"),
    ("providerKeys:\n  openai-key: sk-1\n", "providerKeys", "providerKeys:\n  OPENAI_KEY: sk-1\n"),
    ("image:\n  pullPolicy: Sometimes\n", "image.pullPolicy", "image:\n  pullPolicy: Always\n"),
    ("image:\n  digest: latest\n", "image.digest", None),
    ("controlPlane:\n  config: 42\n", "controlPlane.config", None),
    ("controlPlane:\n  service:\n    grpcPort: 70000\n", "controlPlane.service.grpcPort",
     "controlPlane:\n  service:\n    grpcPort: 50052\n"),
    ("controlPlane:\n  livenessProbe:\n    timeoutSeconds: 0\n", "controlPlane.livenessProbe",
     "controlPlane:\n  livenessProbe:\n    timeoutSeconds: 5\n"),
    ("controlPlane:\n  logLevel: verbose\n", "controlPlane.logLevel",
     "controlPlane:\n  logLevel: debug\n"),
    ("networkPolicy:\n  blockedCIDRs: [metadata]\n", "networkPolicy.blockedCIDRs",
     "networkPolicy:\n  blockedCIDRs: [169.254.169.254/32]\n"),
    ("serviceMonitor:\n  interval: 30\n", "serviceMonitor.interval",
     "serviceMonitor:\n  interval: 1m30s\n"),
    ("demo:\n  models: []\n", "demo.models", "demo:\n  models: [m1]\n"),
    ("imagePullSecrets: [regcred]\n", "imagePullSecrets", "imagePullSecrets: [{name: regcred}]\n"),
    # Refused by the templates (validate.yaml, _helpers.tpl), not by the schema.
    ("proxy:\n  terminationGracePeriodSeconds: 39\n", "at least proxy.shutdownDelaySeconds",
     "proxy:\n  terminationGracePeriodSeconds: 40\n"),
    ("mtls:\n  mode: existingSecret\n", "mtls.existingSecret.controlPlane",
     "mtls:\n  mode: existingSecret\n  existingSecret: {controlPlane: a, proxy: b}\n"),
    ("controlPlane:\n  config: ''\n", "controlPlane.config is empty",
     "controlPlane:\n  config: ''\n  existingConfigMap: mine\n"),
    ("providerKeys: {A: b}\nexistingSecret: keys\n", "not both", "existingSecret: keys\n"),
    ("proxy:\n  autoscaling:\n    minReplicas: 5\n    maxReplicas: 3\n", "minReplicas",
     "proxy:\n  autoscaling:\n    minReplicas: 3\n    maxReplicas: 3\n"),
    ("proxy:\n  autoscaling:\n    targetCPUUtilizationPercentage: null\n", "no metric",
     "proxy:\n  autoscaling:\n    targetCPUUtilizationPercentage: null\n"
     "    targetMemoryUtilizationPercentage: 80\n"),
]


def cmd_values_schema(tools, args, check):
    helm = tools.helm
    with tempfile.TemporaryDirectory() as tmp:
        def attempt(text):
            path = os.path.join(tmp, "values.yaml")
            with open(path, "w") as f:
                f.write(text)
            r = run([helm, "template", "berry", CHART, "--values", path])
            return r.returncode, r.stderr

        for bad, mention, good in BAD_VALUES:
            rc, err = attempt(bad)
            check.expect(rc != 0 and mention in err,
                         f"values {bad!r} should fail mentioning {mention!r}; helm exit {rc}: "
                         f"{err.strip()[:400]}")
            if good is not None:
                rc, err = attempt(good)
                check.expect(rc == 0, f"values {good!r} (the valid variant) failed: {err[:400]}")
    # Switched-on monitoring objects need their files in the chart.
    with tempfile.TemporaryDirectory() as tmp:
        for rel, values in ((RULES_FILE, "prometheusRule.enabled=true"),
                            (DASHBOARD_FILE, "dashboards.enabled=true")):
            chart = chart_copy(os.path.join(tmp, os.path.basename(rel)))
            os.remove(os.path.join(chart, rel))
            r = run([helm, "template", "berry", chart, "--set", values])
            check.expect(r.returncode != 0 and rel in r.stderr,
                         f"{values} without {rel} should fail naming it: {r.stderr[:300]}")
    # The schema is draft-07 JSON and refuses unknown top-level keys.
    schema = json.load(open(os.path.join(CHART, "values.schema.json")))
    check.expect(schema.get("$schema") == "http://json-schema.org/draft-07/schema#",
                 "values.schema.json does not declare draft-07")
    check.expect(schema.get("additionalProperties") is False,
                 "values.schema.json accepts unknown top-level keys")
    defaults = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    check.expect(set(defaults) <= set(schema["properties"]),
                 f"values.yaml keys missing from the schema: "
                 f"{sorted(set(defaults) - set(schema['properties']))}")


# ---------------------------------------------------------------------------------------------
# properties of the rendered objects

def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def container(obj):
    containers = pod_spec(obj)["containers"]
    if len(containers) != 1:
        raise Failure(f"{obj['metadata']['name']}: expected one container")
    return containers[0]


def args_map(c):
    """--flag value pairs of a container's args (flags without a value map to True)."""
    args = c.get("args") or []
    out = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[a] = args[i + 1]
            i += 2
        else:
            out[a] = True
            i += 1
    return out


def labels_match(selector, labels):
    return all((labels or {}).get(k) == v for k, v in selector.items())


def property_problems(objs, values):
    """Everything a careful operator expects of a rendering, as a list of problems."""
    p = []
    name = lambda o: f"{o['kind']}/{o['metadata']['name']}"  # noqa: E731
    deployments = find(objs, "Deployment")
    secrets = {o["metadata"]["name"]: o for o in find(objs, "Secret")}
    configmaps = {o["metadata"]["name"]: o for o in find(objs, "ConfigMap")}
    # Objects the values say the operator provides.
    v_mtls_secrets = ((values.get("mtls") or {}).get("existingSecret") or {}).values()
    external = {values.get("existingSecret"), (values.get("adminToken") or {}).get("existingSecret"),
                (values.get("controlPlane") or {}).get("existingConfigMap"), *v_mtls_secrets}
    for comp in ("controlPlane", "proxy"):
        for ef in (values.get(comp) or {}).get("envFrom") or []:
            external.add((ef.get("secretRef") or ef.get("configMapRef") or {}).get("name"))
    external.discard(None)
    external.discard("")
    certificates = {o["spec"]["secretName"] for o in find(objs, "Certificate")}
    for sa in find(objs, "ServiceAccount"):
        if sa.get("automountServiceAccountToken") is not False:
            p.append(f"{name(sa)}: automountServiceAccountToken is not false")
    for d in deployments:
        spec = pod_spec(d)
        sc = spec.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 65532
                and sc.get("runAsGroup") == 65532
                and (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"):
            p.append(f"{name(d)}: pod securityContext is not restricted: {sc}")
        if spec.get("automountServiceAccountToken") is not False:
            p.append(f"{name(d)}: pod mounts a service account token")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            csc = c.get("securityContext") or {}
            if not (csc.get("allowPrivilegeEscalation") is False
                    and csc.get("readOnlyRootFilesystem") is True
                    and (csc.get("capabilities") or {}).get("drop") == ["ALL"]
                    and csc.get("runAsNonRoot") is True):
                p.append(f"{name(d)}/{c['name']}: container securityContext is not restricted")
            if not c.get("image", "").startswith("ghcr.io/berry-lb/berry"):
                p.append(f"{name(d)}/{c['name']}: image {c.get('image')}")
            ports = {pt["name"]: pt["containerPort"] for pt in c.get("ports", [])}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.get(kind)
                if probe is None:
                    continue
                for field in ("timeoutSeconds", "periodSeconds", "failureThreshold"):
                    if field not in probe:
                        p.append(f"{name(d)}: {kind} has no explicit {field}")
                port = (probe.get("httpGet") or {}).get("port")
                if port not in ports:
                    p.append(f"{name(d)}: {kind} port {port} is not a container port")
            mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            for m in mounts:
                if m not in vols:
                    p.append(f"{name(d)}: volumeMount {m} has no volume")
        # Every Secret/ConfigMap a pod reads exists in the rendering or is named in the values.
        refs = []
        for v in spec.get("volumes", []):
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            for src in (v.get("projected") or {}).get("sources", []):
                if "secret" in src:
                    refs.append(("Secret", src["secret"]["name"]))
                if "configMap" in src:
                    refs.append(("ConfigMap", src["configMap"]["name"]))
        for c in spec["containers"]:
            for ef in c.get("envFrom", []):
                if "secretRef" in ef:
                    refs.append(("Secret", ef["secretRef"]["name"]))
        for kind, ref in refs:
            known = secrets if kind == "Secret" else configmaps
            if ref not in known and ref not in external and ref not in certificates:
                p.append(f"{name(d)}: reads {kind} {ref}, which nothing creates")

    cp = one(objs, "Deployment", component="control-plane")
    proxy = one(objs, "Deployment", component="proxy")
    cpc, pc = container(cp), container(proxy)
    cpa, pa = args_map(cpc), args_map(pc)
    v_cp = values.get("controlPlane") or {}
    v_proxy = values.get("proxy") or {}
    v_mtls = (values.get("mtls") or {}).get("mode", "off")

    # Control plane: one replica, surge-only updates, the contract's command line.
    if cp["spec"].get("replicas") != 1:
        p.append("control plane: replicas is not 1")
    ru = cp["spec"]["strategy"].get("rollingUpdate") or {}
    if not (cp["spec"]["strategy"].get("type") == "RollingUpdate" and ru.get("maxUnavailable") == 0
            and ru.get("maxSurge") == 1):
        p.append(f"control plane: strategy {cp['spec']['strategy']}")
    if cpc["command"] != ["/usr/local/bin/berry-control-plane"]:
        p.append(f"control plane: command {cpc['command']}")
    for flag, value in (("--config", "/etc/berry/config.toml"), ("--grpc-listen", "0.0.0.0:50051"),
                        ("--http-listen", "0.0.0.0:9090")):
        if cpa.get(flag) != value:
            p.append(f"control plane: {flag} {cpa.get(flag)!r}, expected {value}")
    ports = {pt["name"]: pt["containerPort"] for pt in cpc["ports"]}
    if ports != {"grpc": 50051, "http": 9090}:
        p.append(f"control plane: ports {ports}")
    if [cpc[k]["httpGet"]["path"] for k in ("startupProbe", "livenessProbe", "readinessProbe")] \
            != ["/healthz", "/healthz", "/readyz"]:
        p.append("control plane: probe paths are not /healthz, /healthz, /readyz")
    # checksum/config: on the control plane only, the SHA-256 of the ConfigMap's config.toml.
    cp_ann = cp["spec"]["template"]["metadata"].get("annotations") or {}
    if v_cp.get("existingConfigMap"):
        if "checksum/config" in cp_ann:
            p.append("control plane: checksum/config although the ConfigMap is external")
    else:
        cm = configmaps.get(f"{cp['metadata']['name']}-config") or {}
        text = (cm.get("data") or {}).get("config.toml")
        if text is None or not text.endswith("\n") or text.endswith("\n\n"):
            p.append("control plane: config.toml missing or not ending in exactly one newline")
        elif cp_ann.get("checksum/config") != hashlib.sha256(text.encode()).hexdigest():
            p.append("control plane: checksum/config is not the SHA-256 of config.toml")
    for d in deployments:
        if d is not cp and "checksum/config" in (d["spec"]["template"]["metadata"].get(
                "annotations") or {}):
            p.append(f"{name(d)}: has checksum/config (only the control plane may restart on "
                     "a config edit)")
    # The config volume: config.toml, the admin token, TLS files under /etc/berry.
    etc = [v for v in pod_spec(cp)["volumes"] if v["name"] == "etc-berry"]
    paths = {i["path"] for v in etc for s in v["projected"]["sources"]
             for src in s.values() for i in src.get("items", [])}
    if "config.toml" not in paths:
        p.append("control plane: config.toml is not projected into /etc/berry")
    admin = (values.get("adminToken") or {}).get("enabled", True)
    if admin != ("--admin-token-file" in cpa) or admin != ("admin/token" in paths):
        p.append("control plane: --admin-token-file and the mounted token disagree with "
                 "adminToken.enabled")
    if admin and cpa.get("--admin-token-file") != "/etc/berry/admin/token":
        p.append("control plane: --admin-token-file is not /etc/berry/admin/token")

    # mTLS: --insecure on both sides exactly when off; TLS flags on both sides otherwise.
    tls_flags = {"--tls-ca": "/etc/berry/tls/ca.crt", "--tls-cert": "/etc/berry/tls/tls.crt",
                 "--tls-key": "/etc/berry/tls/tls.key"}
    if v_mtls == "off":
        for who, a in (("control plane", cpa), ("proxy", pa)):
            if a.get("--insecure") is not True:
                p.append(f"mtls off: the {who} lacks --insecure")
        for a in (cpa, pa):
            if set(tls_flags) & set(a):
                p.append("mtls off: TLS flags present")
    else:
        for who, a in (("control plane", cpa), ("proxy", pa)):
            if "--insecure" in a:
                p.append(f"mtls {v_mtls}: the {who} still has --insecure")
        for who, a in (("control plane", cpa), ("proxy", pa)):
            for flag, path in tls_flags.items():
                if a.get(flag) != path:
                    p.append(f"mtls {v_mtls}: {who} {flag} is {a.get(flag)!r}")
        if not {"tls/ca.crt", "tls/tls.crt", "tls/tls.key"} <= paths:
            p.append(f"mtls {v_mtls}: control plane does not mount the TLS files")
        tls_mounts = [m for m in pc.get("volumeMounts", []) if m["mountPath"] == "/etc/berry/tls"]
        if len(tls_mounts) != 1:
            p.append(f"mtls {v_mtls}: proxy does not mount /etc/berry/tls")
    if v_mtls == "certManager":
        server = one(objs, "Certificate", component="control-plane")
        svc = cp["metadata"]["name"]
        if svc not in server["spec"]["dnsNames"] or "server auth" not in server["spec"]["usages"]:
            p.append("certManager: the server certificate does not name the control-plane Service")
        client = one(objs, "Certificate", component="proxy")
        if "client auth" not in client["spec"]["usages"]:
            p.append("certManager: the proxy certificate is not for client auth")
        if not (values.get("mtls") or {}).get("certManager", {}).get("issuerRef"):
            ca = one(objs, "Certificate", name=f"{render.RELEASE}-ca")
            if ca["spec"].get("isCA") is not True:
                p.append("certManager: the CA Certificate is not isCA")
            issuer = one(objs, "Issuer", name=f"{render.RELEASE}-ca")
            if issuer["spec"]["ca"]["secretName"] != ca["spec"]["secretName"]:
                p.append("certManager: the CA Issuer does not use the CA's Secret")
            for cert in (server, client):
                if cert["spec"]["issuerRef"]["name"] != issuer["metadata"]["name"]:
                    p.append(f"certManager: {name(cert)} is not issued by the CA Issuer")

    # Provider keys reach the control plane only (proxies get them inside the route table).
    keys = values.get("existingSecret") or (f"{render.RELEASE}-provider-keys"
                                            if values.get("providerKeys") else None)
    cp_env_secrets = [e.get("secretRef", {}).get("name") for e in cpc.get("envFrom", [])]
    if keys and keys not in cp_env_secrets:
        p.append(f"control plane: provider keys Secret {keys} is not in envFrom")
    for d in deployments:
        if d is not cp and keys and keys in str(pod_spec(d)):
            p.append(f"{name(d)}: reads the provider keys")

    # Proxies: the contract's command line, node id, state dir, probes, shutdown arithmetic.
    if pc["command"] != ["/usr/local/bin/berry-proxy"]:
        p.append(f"proxy: command {pc['command']}")
    cp_svc = one(objs, "Service", component="control-plane")
    grpc_port = next(pt["port"] for pt in cp_svc["spec"]["ports"] if pt["name"] == "grpc")
    if pa.get("--control-plane") != f"{cp_svc['metadata']['name']}:{grpc_port}":
        p.append(f"proxy: --control-plane {pa.get('--control-plane')!r}")
    if pa.get("--listen") != "0.0.0.0:8080":
        p.append("proxy: --listen is not 0.0.0.0:8080")
    if pa.get("--admin-listen") != "0.0.0.0:8081":
        p.append("proxy: --admin-listen is not 0.0.0.0:8081 (/metrics apart from the API)")
    node_id = [e for e in pc.get("env", []) if e["name"] == "NODE_ID"]
    if not node_id or node_id[0].get("valueFrom", {}).get("fieldRef", {}).get(
            "fieldPath") != "metadata.name":
        p.append("proxy: NODE_ID does not come from metadata.name")
    state = [m for m in pc["volumeMounts"] if m["mountPath"] == pa.get("--state-dir")]
    state_vol = [v for v in pod_spec(proxy)["volumes"] if state and v["name"] == state[0]["name"]]
    if not state_vol or not (state_vol[0].get("emptyDir") or {}).get("sizeLimit"):
        p.append("proxy: --state-dir is not an emptyDir with a sizeLimit")
    if pc["livenessProbe"]["httpGet"]["path"] != "/healthz" or \
            pc["readinessProbe"]["httpGet"]["path"] != "/readyz":
        p.append("proxy: liveness is not /healthz or readiness is not /readyz")
    if {pt["name"]: pt["containerPort"] for pt in pc["ports"]} != {"http": 8080, "admin": 8081}:
        p.append("proxy: ports are not http 8080 and admin 8081")
    s = int(pa.get("--shutdown-delay-seconds", -1))
    dr = int(pa.get("--drain-seconds", -1))
    want_s, want_d = v_proxy.get("shutdownDelaySeconds", 10), v_proxy.get("drainSeconds", 30)
    if (s, dr) != (want_s, want_d):
        p.append(f"proxy: S={s} D={dr}, values say S={want_s} D={want_d}")
    grace = pod_spec(proxy).get("terminationGracePeriodSeconds")
    want_grace = v_proxy.get("terminationGracePeriodSeconds") or s + dr + 5
    if grace != want_grace or grace < s + dr:
        p.append(f"proxy: terminationGracePeriodSeconds {grace}, expected {want_grace} "
                 f"(S {s} + D {dr} + 5 unless overridden)")
    if "preStop" in str(pc.get("lifecycle")):
        p.append("proxy: has a preStop hook (the image has no shell; the delay is in the binary)")
    if pa.get("--threads") != str(v_proxy.get("threads", 2)):
        p.append("proxy: --threads does not follow proxy.threads")
    autoscaling = (v_proxy.get("autoscaling") or {}).get("enabled", True)
    hpas = find(objs, "HorizontalPodAutoscaler")
    if autoscaling:
        if "replicas" in proxy["spec"]:
            p.append("proxy: replicas set although the HPA owns the count")
        if len(hpas) != 1 or hpas[0]["apiVersion"] != "autoscaling/v2" or \
                hpas[0]["spec"]["scaleTargetRef"]["name"] != proxy["metadata"]["name"]:
            p.append("proxy: no autoscaling/v2 HPA targeting the proxies")
        elif not any(m.get("resource", {}).get("name") == "cpu" for m in hpas[0]["spec"]["metrics"]):
            p.append("proxy: the HPA does not scale on CPU")
    else:
        if hpas or proxy["spec"].get("replicas") != v_proxy.get("replicas", 2):
            p.append("proxy: HPA off but replicas do not follow proxy.replicas")
    for pdb in find(objs, "PodDisruptionBudget"):
        if pdb["spec"].get("maxUnavailable") != 1 or not labels_match(
                pdb["spec"]["selector"]["matchLabels"],
                proxy["spec"]["template"]["metadata"]["labels"]):
            p.append(f"{name(pdb)}: not maxUnavailable 1 over the proxies")
    spread = pod_spec(proxy).get("topologySpreadConstraints") or []
    keys = {c["topologyKey"]: c["whenUnsatisfiable"] for c in spread}
    want_zone = (v_proxy.get("topologySpread") or {}).get("zone", "ScheduleAnyway")
    if keys != {"topology.kubernetes.io/zone": want_zone,
                "kubernetes.io/hostname": "ScheduleAnyway"}:
        p.append(f"proxy: topology spread {keys}")

    # Services select exactly one Deployment's pods and name ports those pods have.
    for svc in find(objs, "Service"):
        sel = svc["spec"]["selector"]
        matches = [d for d in deployments if labels_match(sel, d["spec"]["template"]["metadata"][
            "labels"])]
        if len(matches) != 1:
            p.append(f"{name(svc)}: selects {len(matches)} Deployments")
            continue
        cports = {pt["name"] for c in pod_spec(matches[0])["containers"] for pt in c["ports"]}
        for pt in svc["spec"]["ports"]:
            if pt["targetPort"] not in cports:
                p.append(f"{name(svc)}: targetPort {pt['targetPort']} is not a container port")
    for d in deployments:
        if not labels_match(d["spec"]["selector"]["matchLabels"],
                            d["spec"]["template"]["metadata"]["labels"]):
            p.append(f"{name(d)}: selector does not match its pods")

    # Scrape annotations on the pods that serve /metrics, unless turned off.
    scrape = (values.get("metrics") or {}).get("podAnnotations", True)
    for d, port in ((cp, "9090"), (proxy, "8081")):
        ann = d["spec"]["template"]["metadata"].get("annotations") or {}
        has = ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == port
        if has != scrape:
            p.append(f"{name(d)}: prometheus.io annotations {'missing' if scrape else 'present'}")

    # Prometheus Operator monitors scrape the control plane's http port and the proxies' admin
    # port; the proxies' client Service never exposes the admin port.
    for kind, key in (("PodMonitor", "podMetricsEndpoints"), ("ServiceMonitor", "endpoints")):
        for component, want in (("control-plane", "http"), ("proxy", "admin")):
            for monitor in find(objs, kind, component=component):
                ports = [e.get("port") for e in monitor["spec"][key]]
                if ports != [want]:
                    p.append(f"{name(monitor)}: scrapes ports {ports}, not [{want!r}]")
    proxy_services = find(objs, "Service", component="proxy")
    for svc in proxy_services:
        names = {pt["name"] for pt in svc["spec"]["ports"]}
        if "admin" in names and "http" in names:
            p.append(f"{name(svc)}: the API Service also exposes the admin port")
    if find(objs, "ServiceMonitor", component="proxy") and not any(
            pt["name"] == "admin" for svc in proxy_services for pt in svc["spec"]["ports"]):
        p.append("serviceMonitor: no proxy Service exposes the admin port it scrapes")

    # NetworkPolicies: gRPC only from the proxies, egress minus the metadata endpoints.
    if (values.get("networkPolicy") or {}).get("enabled"):
        cp_np = one(objs, "NetworkPolicy", component="control-plane")
        grpc_rules = [r for r in cp_np["spec"]["ingress"]
                      if any(pt.get("port") == "grpc" for pt in r.get("ports", []))]
        proxy_labels = proxy["spec"]["template"]["metadata"]["labels"]
        if len(grpc_rules) != 1 or not grpc_rules[0].get("from") or not all(
                labels_match(f.get("podSelector", {}).get("matchLabels", {"x": "y"}), proxy_labels)
                for f in grpc_rules[0]["from"][:1]):
            p.append("networkPolicy: control-plane gRPC is not limited to the proxies")
        for np_ in find(objs, "NetworkPolicy"):
            blocks = {b["ipBlock"]["cidr"]: b["ipBlock"].get("except", [])
                      for r in np_["spec"].get("egress", []) for b in r.get("to", [])
                      if "ipBlock" in b}
            if blocks.get("0.0.0.0/0") != ["169.254.169.254/32"] or \
                    blocks.get("::/0") != ["fd00:ec2::254/128"]:
                p.append(f"{name(np_)}: egress does not block exactly the metadata endpoints: "
                         f"{blocks}")
            if "Egress" not in np_["spec"]["policyTypes"]:
                p.append(f"{name(np_)}: egress is not restricted")
        proxy_np = one(objs, "NetworkPolicy", component="proxy")
        opened = {pt.get("port") for r in proxy_np["spec"]["ingress"] for pt in r.get("ports", [])}
        if opened != {"http", "admin"}:
            p.append(f"networkPolicy: proxy ingress opens {sorted(opened)}, not http and admin")
        if not any(any(labels_match(t.get("podSelector", {}).get("matchLabels", {"x": "y"}),
                                    cp["spec"]["template"]["metadata"]["labels"])
                       for t in r.get("to", [])) for r in proxy_np["spec"]["egress"]):
            p.append("networkPolicy: proxies may not reach the control plane")
    elif find(objs, "NetworkPolicy"):
        p.append("networkPolicy: rendered although disabled")

    # Embedded chart files are the files, unchanged.
    for rule in find(objs, "PrometheusRule"):
        want = yaml.safe_load(open(os.path.join(CHART, RULES_FILE)))["groups"]
        if rule["spec"]["groups"] != want:
            p.append(f"{name(rule)}: groups differ from {RULES_FILE}")
    for cm in configmaps.values():
        if "berry.json" in (cm.get("data") or {}):
            if cm["data"]["berry.json"] != open(os.path.join(CHART, DASHBOARD_FILE)).read() \
                    .rstrip("\n"):
                p.append(f"{name(cm)}: differs from {DASHBOARD_FILE}")
            if cm["metadata"]["labels"].get("grafana_dashboard") != "1":
                p.append(f"{name(cm)}: no grafana_dashboard: \"1\" label")
    return p


# Renderings whose properties are checked besides every ci/ file: variants for other branches.
VARIANT_SETS = [
    ("default-values.yaml", ["proxy.shutdownDelaySeconds=7", "proxy.drainSeconds=20"]),
    ("default-values.yaml", ["proxy.terminationGracePeriodSeconds=90"]),
    ("default-values.yaml", ["proxy.autoscaling.enabled=false", "proxy.replicas=4",
                             "adminToken.enabled=false", "providerKeys.OPENAI_API_KEY=sk-x"]),
    ("demo-values.yaml", ["networkPolicy.enabled=true", "mtls.mode=certManager"]),
    ("mtls-certmanager-values.yaml", ["mtls.certManager.issuerRef.name=corp-ca",
                                      "mtls.certManager.issuerRef.kind=ClusterIssuer"]),
]


def values_of(files, sets):
    merged = {}

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v

    for f in files:
        merge(merged, yaml.safe_load(open(os.path.join(CI_DIR, f))) or {})
    for s in sets:
        key, _, raw = s.partition("=")
        value = yaml.safe_load(raw)
        node = merged
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return merged


def cmd_properties(tools, args, check):
    helm = tools.helm
    cases = [(f, []) for f in ci_files()] + VARIANT_SETS
    for f, sets in cases:
        objs = objects(template(helm, [f], sets))
        label = f"ci/{f}" + (f" --set {','.join(sets)}" if sets else "")
        try:
            problems = property_problems(objs, values_of([f], sets))
        except (Failure, KeyError, StopIteration, TypeError) as e:
            problems = [f"could not inspect the rendering: {type(e).__name__}: {e}"]
        check.expect(not problems, f"{label}:\n  " + "\n  ".join(problems))
    # The admin token: random 32 characters when generated, the given value otherwise.
    tok = one(objects(template(helm)), "Secret", name="berry-admin-token")
    raw = base64.b64decode(tok["data"]["token"]).decode()
    check.expect(re.fullmatch(r"[A-Za-z0-9]{32}", raw) is not None,
                 f"generated admin token is not 32 alphanumerics: {len(raw)} chars")
    tok = one(objects(template(helm, ["demo-values.yaml"])), "Secret", name="berry-admin-token")
    check.expect(base64.b64decode(tok["data"]["token"]).decode() == "dev-admin-token-change-me",
                 "adminToken.value is not what the Secret holds")

    # Negative: the checker must notice each of these defects in an otherwise good rendering.
    sets = ["providerKeys.OPENAI_API_KEY=sk-x"]
    good = objects(template(helm, ["ha-values.yaml"], sets))
    values = values_of(["ha-values.yaml"], sets)
    check.expect(not property_problems(copy.deepcopy(good), values),
                 "the rendering the negative checks damage has problems of its own")
    defects = {
        "container securityContext is not restricted":
            lambda o: container(one(o, "Deployment", component="proxy"))["securityContext"]
            .pop("readOnlyRootFilesystem"),
        "has checksum/config": lambda o: one(o, "Deployment", component="proxy")["spec"][
            "template"]["metadata"].setdefault("annotations", {}).update(
                {"checksum/config": "x"}),
        "terminationGracePeriodSeconds": lambda o: pod_spec(
            one(o, "Deployment", component="proxy")).update(terminationGracePeriodSeconds=30),
        "NODE_ID": lambda o: container(one(o, "Deployment", component="proxy"))["env"].clear(),
        "egress does not block": lambda o: one(o, "NetworkPolicy", component="proxy")["spec"][
            "egress"][-1]["to"][0]["ipBlock"].pop("except"),
        "--insecure": lambda o: container(one(o, "Deployment", component="control-plane"))[
            "args"].remove("--insecure"),
        "reads Secret": lambda o: pod_spec(one(o, "Deployment", component="control-plane"))[
            "volumes"][0]["projected"]["sources"].append({"secret": {"name": "nowhere"}}),
        "targetPort": lambda o: one(o, "Service", component="proxy")["spec"]["ports"][0].update(
            targetPort="api"),
        "reads the provider keys": lambda o: container(one(o, "Deployment", component="proxy"))
        .setdefault("envFrom", []).append({"secretRef": {"name": "berry-provider-keys"}}),
        "no explicit timeoutSeconds": lambda o: container(one(o, "Deployment",
                                                              component="control-plane"))[
            "livenessProbe"].pop("timeoutSeconds"),
    }
    for mention, damage in defects.items():
        broken = copy.deepcopy(good)
        damage(broken)
        found = property_problems(broken, values)
        check.expect(any(mention in x for x in found),
                     f"negative: the property check missed a defect ({mention}); it said {found}")


# ---------------------------------------------------------------------------------------------
# kustomize

def cmd_base_drift(tools, args, check):
    helm = tools.helm
    problems = render.check(helm)
    check.expect(not problems, "deploy/k8s/kustomize/base differs from the chart's default "
                 "rendering (run deploy/k8s/render.py):\n" + "".join(problems)[:6000])
    # Negative: an edited base (in a copy) is reported, and so is a chart change.
    with tempfile.TemporaryDirectory() as tmp:
        copy_base = os.path.join(tmp, "base")
        shutil.copytree(render.BASE, copy_base)
        path = os.path.join(copy_base, "deployment-berry-proxy.yaml")
        text = open(path).read()
        with open(path, "w") as f:
            f.write(text.replace("- '30'", "- '60'", 1))
        found = render.check(helm, base=copy_base)
        check.expect(any("deployment-berry-proxy.yaml" in x for x in found),
                     "negative: an edited base file was not reported as drift")
        os.remove(os.path.join(copy_base, "service-berry-proxy.yaml"))
        found = render.check(helm, base=copy_base)
        check.expect(any("missing in the committed base: service-berry-proxy.yaml" in x
                         for x in found), "negative: a deleted base file was not reported")
        chart = chart_copy(tmp)
        vals = os.path.join(chart, "values.yaml")
        with open(vals) as f:
            text = f.read()
        with open(vals, "w") as f:
            f.write(text.replace("  drainSeconds: 30\n", "  drainSeconds: 25\n", 1))
        found = render.check(helm, chart=chart)
        check.expect(any("drain-seconds" in x or "'25'" in x for x in found),
                     "negative: a chart default change was not reported as drift")


def overlays():
    root = os.path.join(KUSTOMIZE, "overlays")
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def cmd_kustomize_build(tools, args, check):
    kubectl = tools.kubectl
    base = kustomize(kubectl, os.path.join(KUSTOMIZE, "base"))
    check.expect(len(base) >= 8, f"the base renders only {len(base)} objects")
    check.expect(set(overlays()) >= {"dev", "ha", "mtls"},
                 f"overlays {overlays()} lack one of dev, ha, mtls")
    for ov in overlays():
        try:
            objs = kustomize(kubectl, os.path.join(KUSTOMIZE, "overlays", ov))
        except Failure as e:
            check.fail(str(e))
            continue
        names = {(o["kind"], o["metadata"]["name"]) for o in objs}
        check.expect(len(names) == len(objs), f"overlays/{ov}: duplicate objects")
        check.expect(all(o["metadata"].get("namespace") == "berry" for o in objs),
                     f"overlays/{ov}: not every object is in namespace berry")
        check.expect({("Deployment", "berry-control-plane"), ("Deployment", "berry-proxy"),
                      ("Service", "berry-proxy")} <= names, f"overlays/{ov}: objects missing")
    # Negative: kustomize must refuse an overlay whose patch misses, or whose JSON-patch test
    # fails (the guard the ha and mtls overlays rely on).
    with tempfile.TemporaryDirectory() as tmp:
        for i, patch in enumerate([
            "  - target: {kind: Deployment, name: berry-proxi}\n    patch: |-\n"
            "      - op: replace\n        path: /spec/template/spec/containers/0/image\n"
            "        value: x\n",
            "  - target: {kind: Deployment, name: berry-proxy}\n    patch: |-\n"
            "      - op: test\n        path: /spec/template/spec/containers/0/name\n"
            "        value: not-the-proxy\n",
        ]):
            d = os.path.join(tmp, f"bad{i}")
            os.makedirs(d)
            with open(os.path.join(d, "kustomization.yaml"), "w") as f:
                f.write(f"resources:\n  - {os.path.join(KUSTOMIZE, 'base')}\npatches:\n{patch}")
            r = run([kubectl, "kustomize", d])
            check.expect(r.returncode != 0, f"negative: kubectl kustomize accepted bad overlay "
                         f"#{i}:\n{r.stdout[:300]}")


def normalised(objs):
    """Objects compared between kustomize and Helm: namespace dropped, sorted by identity."""
    out = []
    for o in objs:
        o = copy.deepcopy(o)
        (o.get("metadata") or {}).pop("namespace", None)
        out.append(o)
    out.sort(key=lambda o: (o["apiVersion"], o["kind"], o["metadata"]["name"]))
    return yaml.safe_dump_all(out, sort_keys=True, default_flow_style=False, width=100000)


def cmd_overlays(tools, args, check):
    helm, kubectl = tools.helm, tools.kubectl
    check.expect(set(overlays()) == set(OVERLAY_VALUES),
                 f"every overlay needs its ci/ values file here (OVERLAY_VALUES): overlays "
                 f"{overlays()}, mapped {sorted(OVERLAY_VALUES)}")
    rendered = {}
    for ov, values_file in sorted(OVERLAY_VALUES.items()):
        try:
            k = normalised(kustomize(kubectl, os.path.join(KUSTOMIZE, "overlays", ov)))
        except Failure as e:
            check.fail(str(e))
            continue
        h = normalised(render.for_kustomize(objects(template(helm, [values_file]))))
        rendered[ov] = (k, h)
        check.expect(k == h, f"kubectl kustomize overlays/{ov} differs from helm template "
                     f"-f ci/{values_file} (normalised):\n"
                     + diff(k, h, f"overlays/{ov}", f"ci/{values_file}", 120))
    # Negative: the comparison tells two different set-ups apart.
    if "dev" in rendered and "ha" in rendered:
        check.expect(rendered["dev"][0] != rendered["ha"][1],
                     "negative: overlays/dev compared equal to ci/ha-values.yaml")


# ---------------------------------------------------------------------------------------------
# schema validation of every rendered object

def bad_objects():
    """Deliberately wrong objects, each with the pass that must reject it."""
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    unknown_field = copy.deepcopy(deployment)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    missing = copy.deepcopy(deployment)
    del missing["spec"]["selector"]
    cert = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "bad"},
            "spec": {"secretName": "s", "issuerRef": {"name": "i"}, "dnsName": ["typo"]}}
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": {"name": "bad"},
               "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "30s"}]}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "bad"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3,
                    "targetCPUUtilizationPercentage": 70}}
    return [
        ("replicas: \"two\"", wrong_type, "any"),
        ("container field comand", unknown_field, "tsc"),
        ("Deployment without selector", missing, "any"),
        ("Certificate spec.dnsName", cert, "tsc"),
        ("ServiceMonitor endpoint intervall", monitor, "tsc"),
        ("HPA v1 field in autoscaling/v2", hpa, "tsc"),
        ("unknown kind", {"apiVersion": "berry.io/v1", "kind": "Gateway",
                          "metadata": {"name": "x"}}, "validate"),
    ]


def cmd_schema(tools, args, check):
    helm, kubectl, node, node_modules = tools.helm, tools.kubectl, tools.node, tools.node_modules
    items = []
    for f in ci_files():
        for source, obj in render.split_documents(template(helm, [f])):
            items.append({"source": f"helm -f ci/{f}: {source}", "object": obj})
    for path in [os.path.join(KUSTOMIZE, "base")] + [os.path.join(KUSTOMIZE, "overlays", o)
                                                     for o in overlays()]:
        for obj in kustomize(kubectl, path):
            items.append({"source": f"kustomize {os.path.relpath(path, KUSTOMIZE)}", "object": obj})
    first_bad = len(items)
    bad = bad_objects()
    for label, obj, _ in bad:
        items.append({"source": f"negative: {label}", "object": obj})
    work = tempfile.mkdtemp(prefix="schema-", dir=tools.dir)
    try:
        objects_json = os.path.join(work, "objects.json")
        with open(objects_json, "w") as f:
            json.dump(items, f)
        r = run([node, os.path.join(HERE, "validate-objects.mjs"), node_modules,
                 os.path.join(work, "ts"), objects_json], timeout=240)
        if r.returncode != 0:
            raise Failure(f"validate-objects.mjs failed ({r.returncode}):\n{r.stderr[-3000:]}")
        results = json.loads(r.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kinds = {}
    for item, res in zip(items[:first_bad], results):
        obj = item["object"]
        kinds[f"{obj.get('apiVersion')} {obj.get('kind')}"] = kinds.get(
            f"{obj.get('apiVersion')} {obj.get('kind')}", 0) + 1
        check.expect(res["validate"] is None,
                     f"{item['source']} {obj.get('kind')}/{obj.get('metadata', {}).get('name')}: "
                     f"schema: {res['validate']}")
        check.expect(not res["tsc"],
                     f"{item['source']} {obj.get('kind')}/{obj.get('metadata', {}).get('name')}: "
                     f"typed strictly: {res['tsc']}")
    for (label, _, how), res in zip(bad, results[first_bad:first_bad + len(bad)]):
        rejected = {"validate": res["validate"] is not None, "tsc": bool(res["tsc"])}
        ok = rejected[how] if how != "any" else any(rejected.values())
        check.expect(ok, f"negative: {label} was not rejected by {how}: {res}")
    for stray in results[first_bad + len(bad):]:
        check.fail(f"tsc said something about no object: {stray['tsc']}")
    print(f"{first_bad} rendered objects validated; kinds: "
          + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))


# ---------------------------------------------------------------------------------------------
# yamllint

YAMLLINT_CONFIG = os.path.join(REPO, "tests", "deploy", "tools", "yamllint.yaml")


def yaml_files():
    """Hand-written and generated YAML of the deployment (not Helm templates: Go templating)."""
    found = []
    for path in [os.path.join(CHART, "Chart.yaml"), os.path.join(CHART, "values.yaml"),
                 os.path.join(REPO, "docker-compose.yml"), os.path.join(REPO, "docker-compose.yaml")]:
        if os.path.exists(path):
            found.append(path)
    for root in [CI_DIR, KUSTOMIZE, os.path.join(CHART, "files"),
                 os.path.join(REPO, "deploy", "compose"), os.path.join(HERE, "golden")]:
        for dirpath, _, files in os.walk(root):
            found += [os.path.join(dirpath, f) for f in sorted(files)
                      if f.endswith((".yaml", ".yml"))]
    return sorted(set(found))


def cmd_yamllint(tools, args, check):
    yamllint = shutil.which("yamllint")
    if not yamllint:
        raise deploytools.Unavailable("yamllint not installed (scripts/install-deps installs it)")
    files = yaml_files()
    must = [os.path.join(CHART, "values.yaml"), os.path.join(KUSTOMIZE, "base",
                                                             "kustomization.yaml")]
    check.expect(all(m in files for m in must), "the chart values or the kustomize base are missing")
    r = run([yamllint, "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG] + files)
    check.expect(r.returncode == 0, "yamllint:\n" + r.stdout + r.stderr)
    print(f"yamllint: {len(files)} files: "
          + ", ".join(sorted({os.path.relpath(os.path.dirname(f), REPO) for f in files})))
    # Negative: the same config refuses typical mistakes.
    with tempfile.TemporaryDirectory() as tmp:
        for label, text in [("duplicate key", "a: 1\na: 2\n"),
                            ("trailing spaces", "a: 1  \n"),
                            ("truthy off", "mtls:\n  mode: off\n"),
                            ("bad indentation", "a:\n   b: 1\n  c: 2\n")]:
            path = os.path.join(tmp, "bad.yaml")
            with open(path, "w") as f:
                f.write(text)
            r = run([yamllint, "--strict", "-c", YAMLLINT_CONFIG, path])
            check.expect(r.returncode != 0, f"negative: yamllint accepted {label}")


# ---------------------------------------------------------------------------------------------

COMMANDS = {
    "lint": cmd_lint,
    "golden": cmd_golden,
    "values-schema": cmd_values_schema,
    "properties": cmd_properties,
    "base-drift": cmd_base_drift,
    "kustomize-build": cmd_kustomize_build,
    "overlays": cmd_overlays,
    "schema": cmd_schema,
    "yamllint": cmd_yamllint,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=sorted(COMMANDS))
    ap.add_argument("--tools", help="the folder setup-tools installed into")
    ap.add_argument("--update", action="store_true", help="golden: rewrite the golden files")
    args = ap.parse_args()
    tools = deploytools.Tools(args.tools)
    check = Check(args.command)
    start = time.monotonic()
    try:
        COMMANDS[args.command](tools, args, check)
    except deploytools.Unavailable as e:
        print(f"SKIP: {e}")
        return deploytools.SKIP
    except (Failure, RuntimeError) as e:
        check.fail(str(e))
    took = time.monotonic() - start
    for problem in check.problems:
        print(f"FAIL: {problem}\n")
    print(f"{args.command}: {check.passed} checks passed, {len(check.problems)} failed "
          f"({took:.1f} s)")
    return 1 if check.problems else 0


if __name__ == "__main__":
    sys.exit(main())
