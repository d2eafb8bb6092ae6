"""Shared helpers of the observability checks (tests/deploy/observability).

- Expressions: every PromQL expression of the Grafana dashboard (panel targets and template
  variable queries, with Grafana's variables replaced by plausible values) and of the alert rules.
- A small PromQL scanner: the metric names, the label names used in selectors and the label names
  of grouping clauses (by/without/on/ignoring/group_left/group_right) of an expression. It does
  not validate syntax: promtool does (promtool_parse_problems).
- The Prometheus text exposition of a live /metrics: which metric names can be selected (a
  histogram `h` gives h_bucket, h_sum, h_count; `h` alone is not selectable) and their labels.
- The checks themselves return lists of problems (strings), so selfcheck.py can run them on
  broken copies and demand that they complain.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77

# Labels Prometheus (or Kubernetes service discovery relabelling) puts on every scraped series;
# expressions may select and group by them although Berry does not export them.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint",
                 "node"}

# What the dashboard must show (issue 11, "Dashboard and alerts").
DASHBOARD_REQUIRED_METRICS = {
    "berry_requests_total", "berry_request_duration_seconds_bucket",
    "berry_upstream_ttfb_seconds_bucket", "berry_tokens_total", "berry_backend_ejected",
    "berry_cp_backend_healthy", "berry_cp_health_checks_total", "berry_retries_total",
    "berry_panic_total", "berry_rate_limited_total", "berry_stream_broken_total",
    "berry_inflight_requests", "berry_route_table_version_info", "berry_cp_connected_proxies",
    "berry_cp_config_pushes_total", "berry_cp_nacks_total", "berry_cp_config_rejected_total",
    "berry_cp_admin_unauthenticated_total",
}

# Alerts the rules file must define.
REQUIRED_ALERTS = {
    "BerryBackendUnhealthy", "BerryBackendEjected", "BerryHigh5xxRatio",
    "BerryProxiesDisconnected", "BerryRouteTableVersionSkew", "BerryConfigRejected",
    "BerryRouteTableNacked",
}
SEVERITIES = {"critical", "warning", "info"}

# Grafana's built-in variables and what a plausible dashboard would substitute.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
    "__range_ms": "3600000", "__interval_ms": "60000",
}

VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z]+)?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
                    r"|\[\[([A-Za-z_][A-Za-z0-9_]*)\]\]")


def fail_skip(message):
    print(f"SKIP: {message}")
    sys.exit(SKIP)


def need_yaml():
    try:
        import yaml  # noqa: F401
    except ImportError:
        fail_skip("python3-yaml is not installed (scripts/install-deps installs it)")
    import yaml
    return yaml


def need_promtool():
    path = shutil.which("promtool")
    if path is None:
        fail_skip("promtool not found (Debian package prometheus; scripts/install-deps installs it)")
    return path


def variables_in(text):
    return {next(g for g in m.groups() if g) for m in VAR_RE.finditer(text)}


def substitute(expr, values=None):
    """Grafana variables -> plausible values: builtins as in GRAFANA_BUILTINS, others `.*`."""
    values = values or {}

    def repl(match):
        name = next(g for g in match.groups() if g)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        return values.get(name, ".*")
    return VAR_RE.sub(repl, expr)


# --- expressions -------------------------------------------------------------------------------

def walk_panels(panels):
    for panel in panels or []:
        yield panel
        yield from walk_panels(panel.get("panels"))


LABEL_VALUES_RE = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


def variable_query(var):
    query = var.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    return query if isinstance(query, str) else ""


def dashboard_expressions(dashboard):
    """[(where, expr with variables substituted, extra labels that must exist)]."""
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = variable_query(var)
        m = LABEL_VALUES_RE.match(query)
        if m:
            out.append((f"variable ${var.get('name')}", substitute(m.group(1)), {m.group(2)}))
        elif query.strip():
            qm = re.match(r"^\s*query_result\((.*)\)\s*$", query, re.S)
            out.append((f"variable ${var.get('name')}", substitute(qm.group(1) if qm else query),
                        set()))
    for panel in walk_panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if isinstance(expr, str) and expr.strip():
                where = f"panel {panel.get('id')} \"{panel.get('title')}\" target {target.get('refId')}"
                out.append((where, substitute(expr), set()))
    return out


def rules_expressions(rules):
    out = []
    for group in rules.get("groups") or []:
        for i, rule in enumerate(group.get("rules") or []):
            name = rule.get("alert") or rule.get("record") or f"#{i}"
            severity = (rule.get("labels") or {}).get("severity")
            where = f"rule {name}" + (f" ({severity})" if severity else "") + f" in group {group.get('name')}"
            out.append((where, str(rule.get("expr", "")), set()))
    return out


# --- PromQL scanning -----------------------------------------------------------------------------

TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0[xX][0-9a-fA-F]+)|(?:[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?(?:[smhdwy]|ms)?)+)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<matchop>=~|!~|!=|==|=)
  | (?P<punct>[{}()\[\],@])
  | (?P<other>[-+*/%^<>!]=?|.)
""", re.X)

KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "by", "without", "on",
            "ignoring", "group_left", "group_right"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregation operators may be followed by `by (...)` instead of `(`.
AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
               "bottomk", "topk", "quantile", "limitk", "limit_ratio"}


def tokens(expr):
    out = []
    for m in TOKEN_RE.finditer(expr):
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        out.append((kind, m.group()))
    return out


def scan(expr):
    """-> (metrics: {name: set(selector label names)}, grouping label names)."""
    toks = tokens(expr)
    metrics = {}
    grouping = set()
    i = 0
    n = len(toks)
    while i < n:
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < n else None
        if kind == "punct" and text == "[":  # range or subquery: skip to the matching ]
            while i < n and toks[i][1] != "]":
                i += 1
            i += 1
            continue
        if kind == "ident" and text in GROUPING:
            if nxt == "(":
                i += 2
                while i < n and toks[i][1] != ")":
                    if toks[i][0] == "ident":
                        grouping.add(toks[i][1])
                    i += 1
            i += 1
            continue
        if kind == "ident" and (text.lower() in KEYWORDS or text.lower() in AGGREGATORS):
            i += 1
            continue
        if kind == "ident" and nxt == "(":  # function or aggregation
            i += 1
            continue
        if kind == "ident" or (kind == "punct" and text == "{"):
            name = text if kind == "ident" else None
            labels = set()
            j = i + 1 if kind == "ident" else i
            if j < n and toks[j][1] == "{":
                j += 1
                while j < n and toks[j][1] != "}":
                    if toks[j][0] == "ident" and j + 1 < n and toks[j + 1][0] == "matchop":
                        labels.add(toks[j][1])
                        if toks[j][1] == "__name__" and toks[j + 1][1] == "=" and j + 2 < n:
                            name = toks[j + 2][1][1:-1]
                    j += 1
                i = j + 1
            else:
                i = j
            labels.discard("__name__")
            if name is not None:
                metrics.setdefault(name, set()).update(labels)
            continue
        i += 1
    return metrics, grouping


# --- the live exposition -------------------------------------------------------------------------

SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+\S+")
LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*"')


def parse_exposition(text):
    """-> {selectable metric name: set of label names, or None when it has no sample yet}."""
    types = {}
    samples = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        labels = set(LABEL_RE.findall(m.group(3) or ""))
        samples.setdefault(m.group(1), set()).update(labels)
    exported = {}
    for family, kind in types.items():
        if kind == "histogram":
            names = [family + "_bucket", family + "_sum", family + "_count"]
        elif kind == "summary":
            names = [family, family + "_sum", family + "_count"]
        else:
            names = [family]
        for name in names:
            exported[name] = samples.get(name)
    for name, labels in samples.items():  # untyped samples
        exported.setdefault(name, labels)
    return exported


def merge_exports(*exports):
    out = {}
    for export in exports:
        for name, labels in export.items():
            if labels is None:
                out.setdefault(name, None)
            else:
                out[name] = (out.get(name) or set()) | labels
    return out


def check_expression(where, expr, exported, extra_labels=()):
    """Problems with the metric and label names of one expression against `exported`."""
    problems = []
    metrics, grouping = scan(expr)
    if not metrics:
        problems.append(f"{where}: names no metric at all: {expr!r}")
    known_labels = set(TARGET_LABELS)
    for name, selector_labels in sorted(metrics.items()):
        if name not in exported:
            problems.append(f"{where}: unknown metric {name} (not in the live /metrics of "
                            f"berry-proxy or berry-control-plane)")
            continue
        labels = exported[name]
        if labels is None:
            problems.append(f"{where}: {name} is exported but had no sample in the scrape, so "
                            f"its labels cannot be checked (make the test's traffic create it)")
            known_labels = None
            continue
        if known_labels is not None:
            known_labels |= labels
        for label in sorted(selector_labels - labels - TARGET_LABELS):
            problems.append(f"{where}: {name} has no label {label!r} (it has: "
                            f"{', '.join(sorted(labels)) or 'none'})")
    if known_labels is not None:
        for label in sorted((set(grouping) | set(extra_labels)) - known_labels):
            problems.append(f"{where}: label {label!r} is on none of the metrics it uses "
                            f"({', '.join(sorted(metrics))})")
    return problems


def promtool_parse_problems(promtool, expressions):
    """Parse every expression with promtool: one recording rule per expression in a temporary
    rules file; errors are mapped back to where the expression came from."""
    yaml = need_yaml()
    rules = [{"record": f"berry_check:e{i}", "expr": expr} for i, (_, expr, _) in enumerate(expressions)]
    with tempfile.TemporaryDirectory(prefix="berry-promql-") as tmp:
        path = os.path.join(tmp, "exprs.yml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": [{"name": "berry-promql-check", "rules": rules}]}, f,
                           sort_keys=False, width=1000)
        proc = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    if proc.returncode == 0:
        return []
    out = proc.stdout + proc.stderr
    problems = []
    for i, (where, expr, _) in enumerate(expressions):
        pattern = re.compile(r'"berry_check:e%d"[^\n]*' % i)
        for m in pattern.finditer(out):
            problems.append(f"{where}: promtool: {m.group()} -- expression: {expr!r}")
    if not problems:
        problems.append("promtool check rules failed on the generated expressions file:\n" + out)
    return problems


# --- dashboard structure -------------------------------------------------------------------------

def check_dashboard(dashboard):
    problems = []
    if not isinstance(dashboard, dict):
        return ["the dashboard is not a JSON object"]
    text = json.dumps(dashboard)
    if "__inputs" in dashboard or "${DS_" in text:
        problems.append("dashboard has import-time inputs (__inputs / ${DS_...}): provisioning "
                        "would leave them unresolved; use the ${datasource} variable")
    for key in ("uid", "title"):
        if not dashboard.get(key):
            problems.append(f"dashboard has no {key}")
    schema = dashboard.get("schemaVersion")
    if not isinstance(schema, int) or not 36 <= schema <= 41:
        problems.append(f"schemaVersion {schema!r}: expected 36..41 (Grafana 9-11)")

    variables = dashboard.get("templating", {}).get("list", [])
    names = [v.get("name") for v in variables]
    ds_vars = [v for v in variables if v.get("type") == "datasource"]
    if not any(v.get("name") == "datasource" and v.get("query") == "prometheus" for v in ds_vars):
        problems.append("no template variable `datasource` of type datasource for prometheus")
    if len(names) != len(set(names)):
        problems.append(f"duplicate template variable names: {names}")
    ds_ref = {"type": "prometheus", "uid": "${datasource}"}
    for var in variables:
        if var.get("type") == "query":
            if var.get("datasource") != ds_ref:
                problems.append(f"variable ${var.get('name')}: datasource is "
                                f"{var.get('datasource')!r}, expected {ds_ref}")
            if not variable_query(var).strip():
                problems.append(f"variable ${var.get('name')}: empty query")
    defined = set(names) | set(GRAFANA_BUILTINS)

    ids = []
    boxes = []
    for panel in walk_panels(dashboard.get("panels")):
        pid = panel.get("id")
        title = panel.get("title")
        label = f"panel {pid} \"{title}\""
        if not isinstance(pid, int):
            problems.append(f"{label}: id is not an integer")
        ids.append(pid)
        if not title:
            problems.append(f"{label}: no title")
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            problems.append(f"{label}: no complete gridPos")
        else:
            if grid["x"] < 0 or grid["w"] <= 0 or grid["x"] + grid["w"] > 24 or grid["h"] <= 0:
                problems.append(f"{label}: gridPos {grid} is outside the 24-column grid")
            boxes.append((label, grid))
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != ds_ref:
            problems.append(f"{label}: datasource is {panel.get('datasource')!r}, expected {ds_ref}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{label}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or not all(refs):
            problems.append(f"{label}: refIds missing or not unique: {refs}")
        for target in targets:
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{label} target {target.get('refId')}: no expr")
                continue
            if "datasource" in target and target["datasource"] != ds_ref:
                problems.append(f"{label} target {target.get('refId')}: datasource "
                                f"{target['datasource']!r}, expected {ds_ref}")
    seen = set()
    for pid in ids:
        if pid in seen:
            problems.append(f"panel id {pid} is used more than once")
        seen.add(pid)
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (la, ga), (lb, gb) = boxes[a], boxes[b]
            if (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                    and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]):
                problems.append(f"{la} and {lb} overlap")

    # Variables: defined, and (being multi-value / All = .*) used only in regex matchers.
    sources = [(f"variable ${v.get('name')}", variable_query(v)) for v in variables
               if v.get("type") == "query"]
    for panel in walk_panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            if isinstance(target.get("expr"), str):
                sources.append((f"panel {panel.get('id')} target {target.get('refId')}",
                                target["expr"]))
    for where, expr in sources:
        for name in sorted(variables_in(expr) - defined):
            problems.append(f"{where}: uses undefined variable ${name}")
        for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"', expr):
            if variables_in(m.group(3)) - set(GRAFANA_BUILTINS) and m.group(2) not in ("=~", "!~"):
                problems.append(f"{where}: {m.group(1)}{m.group(2)}\"{m.group(3)}\": a multi-value "
                                f"variable needs a regex matcher (=~)")

    used = set()
    for _, expr, _ in dashboard_expressions(dashboard):
        used |= set(scan(expr)[0])
    for name in sorted(DASHBOARD_REQUIRED_METRICS - used):
        problems.append(f"no panel shows {name}")
    return problems


# --- rules conventions ---------------------------------------------------------------------------

DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def check_rules_conventions(rules):
    problems = []
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        return ["the rules file has no `groups:` list"]
    alerts = set()
    for group in rules["groups"]:
        for rule in group.get("rules") or []:
            name = rule.get("alert")
            if name is None:
                continue
            alerts.add(name)
            where = f"alert {name}"
            if not re.match(r"^Berry[A-Z][A-Za-z0-9]+$", name):
                problems.append(f"{where}: name should be BerryCamelCase")
            if "for" not in rule or not DURATION_RE.match(str(rule["for"])):
                problems.append(f"{where}: needs an explicit `for:` duration (got {rule.get('for')!r})")
            severity = (rule.get("labels") or {}).get("severity")
            if severity not in SEVERITIES:
                problems.append(f"{where}: severity label {severity!r} not in {sorted(SEVERITIES)}")
            annotations = rule.get("annotations") or {}
            for key in ("summary", "description"):
                if not str(annotations.get(key, "")).strip():
                    problems.append(f"{where}: no {key} annotation")
    for name in sorted(REQUIRED_ALERTS - alerts):
        problems.append(f"missing alert {name}")
    return problems


def alert_rules(rules):
    """{alertname: set of severities}."""
    out = {}
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            if rule.get("alert"):
                out.setdefault(rule["alert"], set()).add((rule.get("labels") or {}).get("severity"))
    return out


def check_unit_test_coverage(rules, tests):
    """Every alert (and each of its severities) fires in some case; every alert has a case where
    it is expected not to fire."""
    problems = []
    fired = {}
    quiet = set()
    for case in (tests or {}).get("tests") or []:
        for art in case.get("alert_rule_test") or []:
            name = art.get("alertname")
            expected = art.get("exp_alerts") or []
            if not expected:
                quiet.add(name)
            for alert in expected:
                fired.setdefault(name, set()).add((alert.get("exp_labels") or {}).get("severity"))
                if not (alert.get("exp_annotations") or {}).get("description"):
                    problems.append(f"a firing case of {name} does not check its annotations")
    for name, severities in sorted(alert_rules(rules).items()):
        for severity in sorted(severities - fired.get(name, set()), key=str):
            problems.append(f"{name} ({severity}): no unit test where it fires")
        if name not in quiet:
            problems.append(f"{name}: no unit test where it must not fire")
    return problems


def report(title, problems):
    if problems:
        print(f"FAIL: {title}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"ok: {title}")
    return 0
