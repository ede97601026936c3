#!/usr/bin/env bash
# Ranks that register different gradients must all stop within seconds with
# an error naming the first differing parameter and the ranks on each side.
# Usage: grad_sync_mismatch_test.sh <grad_sync_mismatch binary> <mpiexec command...>
set -u
binary=$1
shift
mpiexec=("$@")
limit=30
status=0

# expect_failure <name> <mode> <text that must appear>...
expect_failure() {
  local name=$1 mode=$2
  shift 2
  local log start end rc needle
  log=$(mktemp)
  start=$(date +%s)
  timeout 120 "${mpiexec[@]}" -n 4 "$binary" "$mode" >"$log" 2>&1
  rc=$?
  end=$(date +%s)
  local failed=0
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
    echo "FAIL $name: exit status $rc (0 = mismatch unnoticed, 124 = job hung)"; failed=1
  elif [ $((end - start)) -gt $limit ]; then
    echo "FAIL $name: took $((end - start)) s to end (limit $limit s)"; failed=1
  else
    for needle in "$@"; do
      if ! grep -qF -- "$needle" "$log"; then
        echo "FAIL $name: output lacks '$needle'"; failed=1
      fi
    done
  fi
  if [ "$failed" -eq 0 ]; then
    echo "ok   $name: exit $rc after $((end - start)) s"
  else
    status=1
    sed 's/^/     | /' "$log" | tail -30
  fi
  rm -f "$log"
}

expect_failure "different shape" shape \
  "the first difference is parameter #1" \
  "'fc2.weight f32[8, 16]' on rank 1" \
  "'fc2.weight f32[16, 8]' on ranks 0, 2, 3"
expect_failure "missing parameter" count \
  "the first difference is parameter #2" \
  "'fc2.bias f32[8]' on ranks 0, 1, 3" \
  "nothing on rank 2"

if ! timeout 120 "${mpiexec[@]}" -n 4 "$binary" ok >/dev/null 2>&1; then
  echo "FAIL same registration: non-zero exit"; status=1
else
  echo "ok   same registration exits 0"
fi
exit $status
