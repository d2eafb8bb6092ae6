#!/usr/bin/env python3
"""deploy_observability_dashboard: the Grafana dashboard is valid JSON that both compose
provisioning and the Kubernetes sidecar can load: a `datasource` variable of type prometheus that
every panel, target and query variable uses (no import-time __inputs), unique integer panel ids,
every panel (rows aside) with at least one target with an expression, a sane non-overlapping
24-column layout, every $variable defined and used only in regex matchers, and a panel for each
metric issue 11 asks for.

usage: check_dashboard.py DASHBOARD_JSON
"""
import json
import os
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import obslib  # noqa: E402


def main():
    path = sys.argv[1]
    try:
        with open(path) as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        return obslib.report("dashboard JSON", [f"{path}: {e}"])
    panels = [p for p in obslib.walk_panels(dashboard.get("panels")) if p.get("type") != "row"]
    print(f"{path}: {len(panels)} panels, "
          f"{sum(len(p.get('targets') or []) for p in panels)} targets")
    return obslib.report("dashboard structure", obslib.check_dashboard(dashboard))


if __name__ == "__main__":
    sys.exit(main())
