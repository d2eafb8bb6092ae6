#!/usr/bin/env python3
"""deploy_observability_rules_unit: `promtool test rules` on berry-alerts.test.yml, and a
coverage check: every alert of the rules file (each severity of it) has a case where it fires
with its annotations checked, and a case where it must stay quiet.

usage: rules_unit_test.py RULES_FILE UNIT_TEST_FILE
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import obslib  # noqa: E402


def main():
    yaml = obslib.need_yaml()
    promtool = obslib.need_promtool()
    rules_path, test_path = sys.argv[1], sys.argv[2]
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    with open(test_path) as f:
        tests = yaml.safe_load(f)
    # The test file names the rules file relative to itself; make sure it is this one.
    named = [os.path.realpath(os.path.join(os.path.dirname(test_path), p))
             for p in tests.get("rule_files") or []]
    failures = obslib.report("the unit tests load the rules file",
                             [] if os.path.realpath(rules_path) in named else
                             [f"rule_files {tests.get('rule_files')} does not name {rules_path}"])
    failures += obslib.report("every alert tested firing and quiet",
                              obslib.check_unit_test_coverage(rules, tests))
    proc = subprocess.run([promtool, "test", "rules", test_path], capture_output=True, text=True)
    print((proc.stdout + proc.stderr).strip())
    failures += obslib.report("promtool test rules",
                              [] if proc.returncode == 0 else [f"promtool exited {proc.returncode}"])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
