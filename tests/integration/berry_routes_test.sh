#!/usr/bin/env bash
# berry-routes end to end: a valid config prints its table (and its warnings on stderr), an
# invalid one lists every error without leaking secrets, bad arguments exit 2.
set -u
bin=$1
src=$2
fails=0
pass=0
check() {  # check NAME CONDITION-EXIT-STATUS
  if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else echo "FAIL: $1"; fails=$((fails + 1)); fi
}

out=$("$bin" --config "$src/examples/demo.toml" 2>&1); rc=$?
check "demo config exits 0 (got $rc)" $([ $rc -eq 0 ]; echo $?)
echo "$out" | grep -Eq '^route table version [0-9a-f]{16}$'; check "prints a 16-hex version" $?
echo "$out" | grep -q 'demo_chat/mock/mock-large  weight=3'; check "lists backends with weights" $?
echo "$out" | grep -q 'sk-demo'; check "does not print the provider key" $([ $? -ne 0 ]; echo $?)

echo "$out" | grep -q 'warning'; check "a config without compatibility keys has no warning" $([ $? -ne 0 ]; echo $?)

err=$("$bin" --config "$src/examples/berry-api.toml" 2>&1 >/dev/null); rc=$?
check "Berry API example exits 0 (got $rc)" $([ $rc -eq 0 ]; echo $?)
echo "$err" | grep -Eq '^berry-routes: warning: .*berry-api.toml:[0-9]+:[0-9]+: settings.max_internal_retries: has no effect'
check "warns on stderr about settings.max_internal_retries with file:line:column" $?
echo "$err" | grep -Eq '^berry-routes: warning: .*berry-api.toml:[0-9]+:[0-9]+: settings.smart_ai: has no effect'
check "warns on stderr about [settings.smart_ai] with file:line:column" $?

out=$(CONFIG_PATH="$src/examples/demo.toml" "$bin" 2>&1); rc=$?
check "CONFIG_PATH is honoured (got $rc)" $([ $rc -eq 0 ]; echo $?)

out=$("$bin" --config "$src/tests/integration/testdata/broken.toml" 2>&1); rc=$?
check "broken config exits 1 (got $rc)" $([ $rc -eq 1 ]; echo $?)
echo "$out" | grep -q 'providers.p.base_url'; check "names the base_url key path" $?
echo "$out" | grep -q 'models.chat.backends\[0\].provider'; check "names the dangling provider" $?
echo "$out" | grep -q 'models.chat.backends\[0\].weight'; check "names the bad weight" $?
echo "$out" | grep -q 'broken.toml:[0-9]*:[0-9]*:'; check "gives file:line:column" $?
echo "$out" | grep -q 'sk-SECRET'; check "does not leak the key" $([ $? -ne 0 ]; echo $?)

"$bin" --bogus >/dev/null 2>&1; rc=$?
check "unknown flag exits 2 (got $rc)" $([ $rc -eq 2 ]; echo $?)
"$bin" --help | grep -q 'usage: berry-routes'; check "--help prints usage" $?

echo "$pass passed, $fails failed"
[ $fails -eq 0 ]
