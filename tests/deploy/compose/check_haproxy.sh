#!/usr/bin/env bash
# `haproxy -c` on deploy/compose/haproxy.cfg, the compose stack's front load balancer; a warning
# fails too. Debian 12's haproxy is 2.6 while the stack runs the haproxy:3.0 image: the config
# keeps to keywords both accept.
# Usage: check_haproxy.sh REPO [TOOLS_DIR]   (BERRY_HAPROXY=/path/to/haproxy picks the binary)
# Without an installed haproxy, Debian's package and the libraries it needs are fetched with
# `apt-get download` and unpacked into TOOLS_DIR (no service is installed or started).
# Exit codes: 0 passed, 1 failed, 77 haproxy can be neither found nor fetched (skipped).
set -euo pipefail
cfg="$1/deploy/compose/haproxy.cfg"
tools="${2:-}"
haproxy="${BERRY_HAPROXY:-}"
run=()
if [ -z "$haproxy" ]; then
  haproxy="$(command -v haproxy || true)"
  [ -n "$haproxy" ] || { [ -x /usr/sbin/haproxy ] && haproxy=/usr/sbin/haproxy; } || true
fi
if { [ -z "$haproxy" ] || [ ! -x "$haproxy" ]; } && [ -n "$tools" ]; then
  root="$tools/haproxy-root"
  if [ ! -x "$root/usr/sbin/haproxy" ]; then
    mkdir -p "$tools/haproxy-debs"
    if (cd "$tools/haproxy-debs" &&
        apt-get download haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1 \
          >/dev/null 2>&1); then
      for deb in "$tools"/haproxy-debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
    fi
  fi
  if [ -x "$root/usr/sbin/haproxy" ]; then
    haproxy="$root/usr/sbin/haproxy"
    run=(env "LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu")
  fi
fi
if [ -z "$haproxy" ] || [ ! -x "$haproxy" ]; then
  echo "SKIP: haproxy is neither installed nor fetchable with apt-get download, so $cfg is not parsed"
  exit 77
fi
if ! out="$("${run[@]}" "$haproxy" -c -f "$cfg" 2>&1)"; then
  printf '%s\n' "$out"
  echo "FAIL: $haproxy -c rejects $cfg"
  exit 1
fi
printf '%s\n' "$out"
if grep -q -e '\[WARNING\]' -e '\[ALERT\]' <<<"$out"; then
  echo "FAIL: $haproxy -c warns about $cfg"
  exit 1
fi
echo "ok: $cfg is valid for $("${run[@]}" "$haproxy" -v 2>&1 | head -1)"
