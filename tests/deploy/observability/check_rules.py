#!/usr/bin/env python3
"""deploy_observability_rules: the alert rules file is valid for Prometheus (`promtool check
rules`: syntax, PromQL, annotation templates) and follows our conventions: every alert has an
explicit `for:`, a severity label (critical/warning/info), summary and description annotations,
and the alerts issue 11 asks for exist. yamllint runs on the rules and the unit-test file when it
is installed.

usage: check_rules.py RULES_FILE [UNIT_TEST_FILE]
"""
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import obslib  # noqa: E402

YAMLLINT_CONFIG = """
extends: default
rules:
  document-start: disable
  line-length: {max: 140}
  comments: {min-spaces-from-content: 1}
  truthy: {check-keys: false}
"""


def main():
    yaml = obslib.need_yaml()
    promtool = obslib.need_promtool()
    rules_path = sys.argv[1]
    extra = sys.argv[2:]
    failures = 0

    proc = subprocess.run([promtool, "check", "rules", rules_path], capture_output=True, text=True)
    print((proc.stdout + proc.stderr).strip())
    failures += obslib.report("promtool check rules", [] if proc.returncode == 0 else
                              [f"promtool exited {proc.returncode}"])

    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    failures += obslib.report("rule conventions", obslib.check_rules_conventions(rules))

    if shutil.which("yamllint"):
        proc = subprocess.run(["yamllint", "-s", "-d", YAMLLINT_CONFIG, rules_path, *extra],
                              capture_output=True, text=True)
        problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        failures += obslib.report("yamllint", problems if proc.returncode else [])
    else:
        print("note: yamllint not installed, YAML style not checked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
