#!/usr/bin/env bash
# The planes meet only in common/: no file under control-plane/ includes a data-plane/ header,
# none under data-plane/ includes a control-plane/ one, and common/ includes neither.
# Usage: layering_test.sh SOURCE_DIR
set -euo pipefail
root="${1:?usage: layering_test.sh SOURCE_DIR}"

# Prints every include in $1/$2 of a header under one of the other directories; fails if any.
check() {
  local tree="$1" dir="$2"; shift 2
  local pattern bad
  pattern="^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]($(IFS='|'; echo "$*"))/"
  bad=$(cd "$tree" && grep -rnE "$pattern" "$dir" --include='*.h' --include='*.cc' || true)
  if [ -n "$bad" ]; then
    echo "layering: $dir/ must not include $*/ headers:" >&2
    echo "$bad" >&2
    return 1
  fi
}

# The checker must catch a violation before its verdict on the real tree means anything.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/control-plane/x"
printf '#include <vector>\n  #include "data-plane/proxy/route_store.h"\n' \
  > "$scratch/control-plane/x/bad.cc"
if check "$scratch" control-plane data-plane 2>/dev/null; then
  echo "layering: self-check failed: a control-plane file including data-plane/ passed" >&2
  exit 1
fi

status=0
check "$root" control-plane data-plane || status=1
check "$root" data-plane control-plane || status=1
check "$root" common data-plane control-plane || status=1
[ $status -eq 0 ] && echo "layering: control-plane/ and data-plane/ share only common/"
exit $status
