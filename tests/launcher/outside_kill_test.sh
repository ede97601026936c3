#!/usr/bin/env bash
# SIGKILLs from outside the program that land before an attempt's first step
# (an operator, the OOM killer, a chaos tool) are faults to recover from, not
# signs of a bug: twice in a row a rank is killed while the job starts, and
# the run must restart both times and finish, with weights bit-identical to
# an uninterrupted run. A program that fails by itself before its first step
# twice in a row still stops the restarts (launcher_run_giveup).
# Usage: outside_kill_test.sh <lockstep> <lockstep-mlp> <scratch dir>
set -uo pipefail
lockstep=$1 mlp=$2 scratch=$3
# shellcheck source=SCRIPTDIR/../support/checks.sh
. "$(dirname "$0")/../support/checks.sh"
rm -rf "$scratch"
mkdir -p "$scratch"
trainer=("$mlp" --steps 40 --hidden 64,64)
export LOCKSTEP_CHECKPOINT_EVERY=10

timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 ||
  fail "the uninterrupted run failed (see $scratch/reference.log)"

# The pid of a rank process of attempt $1 (0-based), once one exists.
rank_of_attempt() {
  local file pid
  for file in $(grep -lz "^LOCKSTEP_RESTART_COUNT=$1\$" /proc/[0-9]*/environ 2>/dev/null); do
    pid=${file#/proc/}
    pid=${pid%/environ}
    if grep -qz "^LOCKSTEP_RUN_DIR=$scratch/kills\$" "$file" 2>/dev/null &&
      [ "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -1)" = "$mlp" ]; then
      echo "$pid"
      return
    fi
  done
}

timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/kills" --max-restarts 4 -- "${trainer[@]}" \
  --weights-out "$scratch/kills.bin" >"$scratch/kills.log" 2>&1 &
run=$!
for attempt in 0 1; do
  deadline=$((SECONDS + 60)) pid=""
  while [ -z "$pid" ] && [ $SECONDS -lt $deadline ]; do
    pid=$(rank_of_attempt "$attempt")
    [ -n "$pid" ] || sleep 0.02
  done
  if [ -n "$pid" ]; then
    kill -KILL "$pid" && echo "killed pid $pid of attempt $((attempt + 1)) as it started"
  else fail "no rank of attempt $((attempt + 1)) appeared"; fi
done
rc=0
wait "$run" || rc=$?
expect_rc 0 "$rc" "the run recovers from two outside kills before a first step"
expect_no_grep "looks like a bug" "$scratch/kills.log" "the kills are not taken for a bug"
first_steps=$(python3 -c 'import json,sys
print(",".join(str(json.loads(l)["first_step"]) for l in open(sys.argv[1])))' \
  "$scratch/kills/attempts.jsonl" 2>/dev/null || true)
check "attempts 1 and 2 ended before their first step (first steps: $first_steps)" \
  "[[ '$first_steps' == -1,-1,* ]]"
outside=$(python3 -c 'import json,sys
print(",".join(str(json.loads(l).get("outside_kill")) for l in open(sys.argv[1])))' \
  "$scratch/kills/attempts.jsonl" 2>/dev/null || true)
check "both count as kills from outside (outside_kill: $outside)" "[[ '$outside' == True,True,* ]]"
expect_grep "killed by signal 9" "$scratch/kills.log" "the root cause says how the rank died"
expect_same_file "$scratch/reference.bin" "$scratch/kills.bin" \
  "final weights equal an uninterrupted run's"
finish
