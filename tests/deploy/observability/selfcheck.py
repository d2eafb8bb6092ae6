#!/usr/bin/env python3
"""deploy_observability_selfcheck: the dashboard, rules and unit-test checks fail on broken
copies. The real files must pass; each mutation below must be reported, or the check that
should catch it is toothless. (The PromQL/metric-name check has its own self-check inside
check_promql.py, because it needs the live scrape.)

usage: selfcheck.py DASHBOARD_JSON RULES_FILE UNIT_TEST_FILE
"""
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import obslib  # noqa: E402


def first_data_panel(d):
    return next(p for p in obslib.walk_panels(d["panels"]) if p.get("type") != "row")


def data_panels(d):
    return [p for p in obslib.walk_panels(d["panels"]) if p.get("type") != "row"]


def first_alert(r, name=None):
    for group in r["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") and (name is None or rule["alert"] == name):
                return rule
    raise KeyError(name)


def remove_alert(r, name):
    for group in r["groups"]:
        group["rules"] = [x for x in group["rules"] if x.get("alert") != name]


def mutate(obj, fn):
    obj = copy.deepcopy(obj)
    fn(obj)
    return obj


def main():
    yaml = obslib.need_yaml()
    promtool = obslib.need_promtool()
    dashboard_path, rules_path, test_path = sys.argv[1:4]
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    with open(test_path) as f:
        tests = yaml.safe_load(f)
    problems = []

    def expect(title, found, wanted):
        if not found:
            problems.append(f"{title}: not reported")
        elif wanted and not any(wanted in p for p in found):
            problems.append(f"{title}: reported, but not as {wanted!r}: {found}")
        else:
            print(f"ok: caught {title}")

    # The real files pass.
    for title, found in (("the dashboard", obslib.check_dashboard(dashboard)),
                         ("the rules", obslib.check_rules_conventions(rules)),
                         ("the unit-test coverage", obslib.check_unit_test_coverage(rules, tests))):
        if found:
            problems.append(f"{title} should pass but: {found}")

    # --- dashboard -----------------------------------------------------------------------------
    def dup_id(d):
        ps = data_panels(d)
        ps[1]["id"] = ps[0]["id"]

    def no_ds(d):
        del first_data_panel(d)["datasource"]

    def fixed_ds(d):
        first_data_panel(d)["datasource"] = {"type": "prometheus", "uid": "prometheus"}

    def no_targets(d):
        first_data_panel(d)["targets"] = []

    def empty_expr(d):
        first_data_panel(d)["targets"][0]["expr"] = " "

    def undefined_var(d):
        t = first_data_panel(d)["targets"][0]
        t["expr"] = t["expr"].replace("$model", "$modle")

    def equality_var(d):
        t = first_data_panel(d)["targets"][0]
        t["expr"] = t["expr"].replace('model=~"$model"', 'model="$model"')

    def no_ds_var(d):
        d["templating"]["list"] = [v for v in d["templating"]["list"] if v["name"] != "datasource"]

    def inputs(d):
        d["__inputs"] = [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}]

    def overlap(d):
        ps = data_panels(d)
        ps[1]["gridPos"] = dict(ps[0]["gridPos"])

    def too_wide(d):
        first_data_panel(d)["gridPos"]["w"] = 30

    def drop_metric(d):
        for p in data_panels(d):
            p["targets"] = [t for t in p["targets"] if "berry_cp_nacks_total" not in t["expr"]]

    def old_schema(d):
        d["schemaVersion"] = 16

    for title, fn, wanted in (
            ("duplicate panel id", dup_id, "used more than once"),
            ("panel without datasource", no_ds, "datasource is None"),
            ("panel with a fixed datasource uid", fixed_ds, "expected"),
            ("panel without targets", no_targets, "no targets"),
            ("target without expr", empty_expr, "no expr"),
            ("undefined variable", undefined_var, "undefined variable $modle"),
            ("variable in an equality matcher", equality_var, "regex matcher"),
            ("no datasource variable", no_ds_var, "no template variable `datasource`"),
            ("import-time __inputs", inputs, "__inputs"),
            ("overlapping panels", overlap, "overlap"),
            ("panel wider than the grid", too_wide, "24-column"),
            ("required metric missing (NACKs)", drop_metric, "berry_cp_nacks_total"),
            ("ancient schemaVersion", old_schema, "schemaVersion")):
        expect(f"dashboard: {title}", obslib.check_dashboard(mutate(dashboard, fn)), wanted)

    # A file that is not JSON fails check_dashboard.py itself.
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory(prefix="berry-obs-self-") as tmp:
        bad = os.path.join(tmp, "berry.json")
        with open(bad, "w") as f:
            f.write(json.dumps(dashboard)[:-2])
        rc = subprocess.run([sys.executable, os.path.join(here, "check_dashboard.py"), bad],
                            capture_output=True, text=True).returncode
        if rc == 0:
            problems.append("check_dashboard.py accepted truncated JSON")
        else:
            print("ok: caught dashboard: truncated JSON")

    # --- rules conventions -----------------------------------------------------------------------
    for title, fn, wanted in (
            ("alert without severity", lambda r: first_alert(r)["labels"].pop("severity"), "severity"),
            ("unknown severity", lambda r: first_alert(r)["labels"].update(severity="page"), "severity"),
            ("alert without for", lambda r: first_alert(r).pop("for"), "for:"),
            ("alert without description",
             lambda r: first_alert(r)["annotations"].pop("description"), "description"),
            ("alert without summary", lambda r: first_alert(r)["annotations"].pop("summary"), "summary"),
            ("required alert missing", lambda r: remove_alert(r, "BerryRouteTableNacked"),
             "missing alert BerryRouteTableNacked"),
            ("no groups", lambda r: r.pop("groups"), "groups")):
        expect(f"rules: {title}", obslib.check_rules_conventions(mutate(rules, fn)), wanted)

    # --- unit-test coverage ----------------------------------------------------------------------
    def drop_quiet(t, name):
        for case in t["tests"]:
            case["alert_rule_test"] = [a for a in case.get("alert_rule_test", [])
                                       if not (a["alertname"] == name and not a.get("exp_alerts"))]

    def drop_firing(t, name, severity):
        for case in t["tests"]:
            for a in case.get("alert_rule_test", []):
                if a["alertname"] == name:
                    a["exp_alerts"] = [e for e in a.get("exp_alerts") or []
                                       if e["exp_labels"].get("severity") != severity]

    def unchecked_annotations(t):
        for case in t["tests"]:
            for a in case.get("alert_rule_test", []):
                for e in a.get("exp_alerts") or []:
                    e.pop("exp_annotations", None)

    for title, fn, wanted in (
            ("alert never tested quiet", lambda t: drop_quiet(t, "BerryBackendEjected"),
             "BerryBackendEjected: no unit test where it must not fire"),
            ("severity never tested firing",
             lambda t: drop_firing(t, "BerryHigh5xxRatio", "critical"),
             "BerryHigh5xxRatio (critical): no unit test where it fires"),
            ("annotations not checked", unchecked_annotations, "annotations")):
        expect(f"unit tests: {title}",
               obslib.check_unit_test_coverage(rules, mutate(tests, fn)), wanted)
    # A new alert without tests.
    def add_alert(r):
        r["groups"][0]["rules"].append({"alert": "BerryNewThing", "expr": "vector(1)", "for": "1m",
                                        "labels": {"severity": "info"},
                                        "annotations": {"summary": "s", "description": "d"}})
    expect("unit tests: an alert nobody tests",
           obslib.check_unit_test_coverage(mutate(rules, add_alert), tests), "BerryNewThing")

    # --- promtool: a broken rules file, and a unit test whose expectation is wrong ---------------
    with tempfile.TemporaryDirectory(prefix="berry-obs-self-") as tmp:
        broken = mutate(rules, lambda r: first_alert(r).update(expr="sum(rate(berry_requests_total[5m])"))
        path = os.path.join(tmp, "rules.yml")
        with open(path, "w") as f:
            yaml.safe_dump(broken, f, sort_keys=False)
        if subprocess.run([promtool, "check", "rules", path], capture_output=True).returncode == 0:
            problems.append("promtool check rules accepted an unbalanced expression")
        else:
            print("ok: caught rules: unbalanced expression (promtool check rules)")

        bad_template = mutate(rules, lambda r: first_alert(r)["annotations"].update(
            description="{{ $labels.backend "))
        with open(path, "w") as f:
            yaml.safe_dump(bad_template, f, sort_keys=False)
        if subprocess.run([promtool, "check", "rules", path], capture_output=True).returncode == 0:
            problems.append("promtool check rules accepted a broken annotation template")
        else:
            print("ok: caught rules: broken annotation template (promtool check rules)")

        def wrong_expectation(t):
            for case in t["tests"]:
                for a in case.get("alert_rule_test", []):
                    for e in a.get("exp_alerts") or []:
                        e["exp_labels"]["severity"] = "info" if e["exp_labels"]["severity"] != "info" else "warning"
                        return
        wrong = mutate(tests, wrong_expectation)
        wrong["rule_files"] = [os.path.abspath(rules_path)]
        tpath = os.path.join(tmp, "tests.yml")
        with open(tpath, "w") as f:
            yaml.safe_dump(wrong, f, sort_keys=False)
        if subprocess.run([promtool, "test", "rules", tpath], capture_output=True).returncode == 0:
            problems.append("promtool test rules passed with a wrong expected severity")
        else:
            print("ok: caught unit tests: wrong expectation (promtool test rules)")
        # ...and the same file with the right expectation passes (the rewrite itself is sound).
        right = copy.deepcopy(tests)
        right["rule_files"] = [os.path.abspath(rules_path)]
        with open(tpath, "w") as f:
            yaml.safe_dump(right, f, sort_keys=False)
        proc = subprocess.run([promtool, "test", "rules", tpath], capture_output=True, text=True)
        if proc.returncode != 0:
            problems.append(f"the unmodified unit tests failed after a YAML round trip:\n{proc.stdout}")

    return obslib.report("self-check of the dashboard, rules and unit-test checks", problems)


if __name__ == "__main__":
    sys.exit(main())
