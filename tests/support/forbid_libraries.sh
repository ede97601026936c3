#!/usr/bin/env bash
# Usage: forbid_libraries.sh <pattern> <binary>...
# Fails when a binary lists a shared library whose name matches the extended
# regular expression <pattern> among the libraries it needs (DT_NEEDED): a
# layer has started to link a library of a layer above it.
set -euo pipefail
pattern=$1
shift
status=0
for binary in "$@"; do
  needed=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
  if offending=$(grep -E "$pattern" <<<"$needed"); then
    echo "FAIL: $binary needs $(echo $offending), which match '$pattern'"
    echo "  everything it needs: $(echo $needed)"
    status=1
  else
    echo "ok: $binary needs nothing that matches '$pattern': $(echo $needed)"
  fi
done
exit $status
