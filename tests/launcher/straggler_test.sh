#!/usr/bin/env bash
# Straggler detection end to end: the example trainer at 4 ranks with rank 2
# made 4x slower (--inject-slow) is named, with its host and how much
# slower, in the log, the status line and summary.json; the same run
# without it names nobody. Bad options are usage errors that start nothing.
# Usage: straggler_test.sh <lockstep> <lockstep-mlp> <scratch dir>
set -u
lockstep=$1 mlp=$2 scratch=$3
# shellcheck source=../support/checks.sh
source "$(dirname "$0")/../support/checks.sh"
rm -rf "$scratch"
mkdir -p "$scratch"
export LOCKSTEP_CHECKPOINT_EVERY=100

# --- bad options: exit 2, nothing made --------------------------------------
for bad in x 2 2: :3 -1:2 4:2 2:0.5 2:abc 2:3x 2:1e9 99999999999:2; do
  timeout 30 "$lockstep" run -n 4 --run-dir "$scratch/bad" --inject-slow="$bad" -- "$mlp" \
    >"$scratch/bad.log" 2>&1
  rc=$?
  expect_rc 2 $rc "--inject-slow '$bad' is refused"
  expect_grep "inject-slow" "$scratch/bad.log" "the error for '$bad' names the option"
done
for bad in "--straggler-threshold 1.5" "--straggler-threshold 0" "--straggler-interval 0" \
  "--straggler-interval -1" "--straggler-reports 0" "--straggler-reports x"; do
  # shellcheck disable=SC2086
  timeout 30 "$lockstep" run -n 4 --run-dir "$scratch/bad" $bad -- "$mlp" >"$scratch/bad.log" 2>&1
  expect_rc 2 $? "'$bad' is refused"
done
check "no run directory was made for a bad option" "[ ! -e '$scratch/bad' ]"
# A rank's own check, for a program started without the launcher's check.
LOCKSTEP_INJECT_SLOW=2:x LOCKSTEP_RUN_DIR="$scratch/direct" timeout 60 "$mlp" --steps 2 \
  >"$scratch/direct.log" 2>&1
check "a bad LOCKSTEP_INJECT_SLOW stops the program" "[ $? -ne 0 ]"
expect_grep "LOCKSTEP_INJECT_SLOW='2:x' is not RANK:FACTOR" "$scratch/direct.log" \
  "its error says what the knob takes"

# --- one slow rank ----------------------------------------------------------
# --step-ms stands for each step's computation; rank 2 takes 4x as long.
trainer=("$mlp" --steps 400 --hidden 32 --step-ms 4)
watch=(--straggler-interval 1 --straggler-reports 2 --status-interval 1)
timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/slow" "${watch[@]}" --inject-slow 2:4 -- \
  "${trainer[@]}" >"$scratch/slow.log" 2>&1
expect_rc 0 $? "the run with a slow rank completes"
expect_grep "lockstep: straggler: rank 2 on [^ ]+ computes [0-9.]+x slower than the median of the other ranks" \
  "$scratch/slow.log" "the log names rank 2, its host and how much slower"
expect_no_grep "straggler: rank [013] " "$scratch/slow.log" "no other rank is named"
expect_grep "lockstep: step .*\| straggler rank 2 \([^)]+\) [0-9.]+x" "$scratch/slow.log" \
  "the status line shows it"
summary=$scratch/slow/summary.json
check "summary.json names exactly rank 2" \
  "[ \"$(summary_field "$summary" "[x['rank'] for x in s['stragglers']]")\" = '[2]' ]"
slowdown=$(summary_field "$summary" "s['stragglers'][0]['slowdown']")
check "summary.json says it computes 2.5x slower or more ($slowdown)" \
  "python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= 2.5 else 1)' '$slowdown'"
check "summary.json gives its host, scores and attempt" \
  "[ \"$(summary_field "$summary" "(bool(s['stragglers'][0]['host']), 0 < s['stragglers'][0]['relative_score'] < 0.5, 0 < s['stragglers'][0]['individual_score'] <= 1, s['stragglers'][0]['attempt'])")\" = '(True, True, True, 0)' ]"
expect_grep '"stragglers":\[\{"compute_seconds"' "$scratch/slow/attempts.jsonl" \
  "attempts.jsonl records it"

# --- the same run, nobody slowed ----------------------------------------------
timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/even" "${watch[@]}" -- "${trainer[@]}" \
  >"$scratch/even.log" 2>&1
expect_rc 0 $? "the run without a slow rank completes"
expect_no_grep "lockstep: straggler:|\| straggler rank" "$scratch/even.log" \
  "nobody is named when nobody is slow"
check "summary.json lists no straggler" \
  "[ \"$(summary_field "$scratch/even/summary.json" "s['stragglers']")\" = '[]' ]"
finish
