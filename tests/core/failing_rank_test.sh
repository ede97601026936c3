#!/usr/bin/env bash
# A failing rank must end the whole job quickly and non-zero, with its message
# and rank in the output, instead of leaving the other ranks waiting.
# Usage: failing_rank_test.sh <failing_rank binary> <mpiexec command...>
set -u
binary=$1
shift
mpiexec=("$@")
limit=30
status=0

# expect_failure <name> <env assignment or -> <mode> <text that must appear>
expect_failure() {
  local name=$1 assignment=$2 mode=$3 needle=$4
  local log start end rc
  log=$(mktemp)
  start=$(date +%s)
  if [ "$assignment" = "-" ]; then
    timeout 120 "${mpiexec[@]}" -n 4 "$binary" "$mode" >"$log" 2>&1
  else
    env "$assignment" timeout 120 "${mpiexec[@]}" -n 4 "$binary" "$mode" >"$log" 2>&1
  fi
  rc=$?
  end=$(date +%s)
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
    echo "FAIL $name: exit status $rc (0 = failure unnoticed, 124 = job hung)"; status=1
  elif [ $((end - start)) -gt $limit ]; then
    echo "FAIL $name: took $((end - start)) s to end (limit $limit s)"; status=1
  elif ! grep -qF -- "$needle" "$log"; then
    echo "FAIL $name: output lacks '$needle'"; status=1
  else
    echo "ok   $name: exit $rc after $((end - start)) s"
  fi
  [ "$status" -eq 0 ] || sed 's/^/     | /' "$log" | tail -30
  rm -f "$log"
}

expect_failure "uncaught exception" - uncaught "[1/4 $(uname -n)]"
expect_failure "uncaught exception message" - uncaught "uncaught exception: injected failure on rank 1 (uncaught)"
expect_failure "exception leaving Runtime scope" - scope "exception is leaving the scope of lockstep::Runtime on rank 1"
expect_failure "bad configuration" LOCKSTEP_LOG_LEVEL=loud ok "LOCKSTEP_LOG_LEVEL='loud' is not a known choice"

# The failing rank writes its flight recorder's records (the runtime's own
# decisions) before it takes the job down, saying why.
run_dir=$(mktemp -d)
LOCKSTEP_RUN_DIR=$run_dir timeout 120 "${mpiexec[@]}" -n 4 "$binary" uncaught >/dev/null 2>&1
record=$run_dir/trace/local/attempt-0/flight-rank-1.json
if ! python3 -c '
import json, sys
dump = json.load(open(sys.argv[1]))
assert "uncaught exception: injected failure on rank 1" in dump["reason"], dump["reason"]
assert dump["rank"] == 1 and any(c["channel"] == "runtime 1" for c in dump["channels"]), dump
' "$record" 2>/dev/null; then
  echo "FAIL flight record of the failing rank: $record is missing or wrong"; status=1
else
  echo "ok   the failing rank wrote its flight record, with the exception as the reason"
fi
rm -rf "$run_dir"

help=$(timeout 120 "${mpiexec[@]}" -n 2 "$binary" ok --lockstep-help 2>&1)
if [ "$(grep -c 'LOCKSTEP_LOG_LEVEL' <<<"$help")" -ne 1 ]; then
  echo "FAIL --lockstep-help: the settings were not printed once"; status=1
else
  echo "ok   --lockstep-help prints the settings once"
fi

if ! timeout 120 "${mpiexec[@]}" -n 4 "$binary" ok >/dev/null 2>&1; then
  echo "FAIL healthy job: non-zero exit"; status=1
else
  echo "ok   healthy job exits 0"
fi
exit $status
