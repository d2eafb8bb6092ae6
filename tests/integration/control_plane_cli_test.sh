#!/usr/bin/env bash
# berry-control-plane's command line: --help, bad flags, an invalid config (exit 1 with every
# error, before listening), and the refusal to serve route tables (which carry provider keys) in
# plaintext on a non-loopback address unless --insecure. Nothing here listens off loopback: the
# refusal happens before any socket is opened.
set -u
bin=$1
src=$2
fails=0
pass=0
check() {  # check NAME STATUS
  if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else echo "FAIL: $1"; fails=$((fails + 1)); fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

out=$("$bin" --help 2>&1); rc=$?
check "--help exits 0 (got $rc)" $([ $rc -eq 0 ]; echo $?)
for flag in --config --grpc-listen --http-listen --tls-ca --tls-cert --tls-key --admin-token-file \
            --insecure --log-level --report-interval-seconds --upstream-ca; do
  echo "$out" | grep -q -- "$flag"; check "--help lists $flag" $?
done

"$bin" --config "$src/examples/demo.toml" --bogus >/dev/null 2>&1; rc=$?
check "unknown flag exits 2 (got $rc)" $([ $rc -eq 2 ]; echo $?)

out=$("$bin" --config "$src/tests/integration/testdata/broken.toml" --grpc-listen 127.0.0.1:0 \
      --http-listen 127.0.0.1:0 2>&1); rc=$?
check "invalid config exits 1 (got $rc)" $([ $rc -eq 1 ]; echo $?)
echo "$out" | grep -q 'providers.p.base_url'; check "lists the base_url error" $?
echo "$out" | grep -q 'models.chat.backends\[0\].weight'; check "lists the weight error" $?
echo "$out" | grep -q 'listening'; check "does not listen" $([ $? -ne 0 ]; echo $?)
echo "$out" | grep -q 'sk-SECRET'; check "does not leak the key" $([ $? -ne 0 ]; echo $?)

out=$("$bin" --config "$src/examples/demo.toml" --grpc-listen 192.0.2.1:50051 \
      --http-listen 127.0.0.1:0 2>&1); rc=$?
check "plaintext off loopback is refused with exit 2 (got $rc)" $([ $rc -eq 2 ]; echo $?)
echo "$out" | grep -q -- '--insecure'; check "the refusal names --insecure" $?
echo "$out" | grep -q -- '--tls-ca'; check "the refusal names the TLS flags" $?

"$bin" --config "$src/examples/demo.toml" --tls-ca /nonexistent >/dev/null 2>&1; rc=$?
check "partial TLS flags exit 2 (got $rc)" $([ $rc -eq 2 ]; echo $?)

# On loopback it serves, and warns that the channel is plaintext.
"$bin" --config "$src/examples/demo.toml" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q 'listening on grpc' "$tmp/out" && break; sleep 0.1; done
grep -q 'berry-control-plane listening on grpc 127.0.0.1:[0-9]* http 127.0.0.1:[0-9]*' "$tmp/out"
check "prints the listening line" $?
grep -q 'plaintext' "$tmp/err"; check "warns that the gRPC channel is plaintext" $?
kill -TERM $pid; wait $pid; rc=$?
check "SIGTERM exits 0 (got $rc)" $([ $rc -eq 0 ]; echo $?)

echo "$pass passed, $fails failed"
[ $fails -eq 0 ]
