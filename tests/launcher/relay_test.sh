#!/usr/bin/env bash
# Heartbeats through the node relay (LOCKSTEP_HEARTBEAT_RELAY=on): the
# example trainer at 4 ranks on this host, whose first rank relays for the
# others over one connection. The launcher must see every rank as before:
# a killed rank (relayed, or the relay's own) is named as the root cause and
# the run recovers bit-identical; a stopped rank is a hang with its rank
# named; a slow rank is named a straggler.
# Usage: relay_test.sh <lockstep> <lockstep-mlp> <scratch dir>
set -u
lockstep=$1 mlp=$2 scratch=$3
# shellcheck source=../support/checks.sh
source "$(dirname "$0")/../support/checks.sh"
rm -rf "$scratch"
mkdir -p "$scratch"
export LOCKSTEP_CHECKPOINT_EVERY=20
trainer=("$mlp" --steps 120 --hidden 32)

LOCKSTEP_HEARTBEAT_RELAY=off timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/reference" -- \
  "${trainer[@]}" --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1
expect_rc 0 $? "the reference run without the relay completes"
check "without the relay no relay connects" \
  "[ \"$(summary_field "$scratch/reference/summary.json" "s['heartbeat_relays']")\" = 0 ]"
export LOCKSTEP_HEARTBEAT_RELAY=on

# A relayed rank and then the relaying rank itself are killed.
timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/kills" --inject-failure 2:45 \
  --inject-failure 0:85 -- "${trainer[@]}" --step-ms 10 --weights-out "$scratch/kills.bin" \
  >"$scratch/kills.log" 2>&1
expect_rc 0 $? "the run through the relay survives two kills"
summary=$scratch/kills/summary.json
check "one relay per attempt carried the ranks" \
  "[ \"$(summary_field "$summary" "s['heartbeat_relays']")\" = 3 ]"
check "it restarted twice" "[ \"$(summary_field "$summary" "s['restarts']")\" = 2 ]"
expect_grep "first failure: rank 2 .*killed by signal 9" "$scratch/kills.log" \
  "the relayed rank is named as the first failure"
expect_grep "first failure: rank 0 .*killed by signal 9" "$scratch/kills.log" \
  "the relaying rank is named as the first failure"
expect_same_file "$scratch/reference.bin" "$scratch/kills.bin" \
  "the final weights equal the run's without failures"
check "every attempt heard from all 4 ranks" \
  "[ \"$(python3 -c 'import json,sys; print(sorted({json.loads(l)["ranks_reported"] for l in open(sys.argv[1])}))' "$scratch/kills/attempts.jsonl")\" = '[4]' ]"

# A relayed rank stopped: a hang, its rank named.
timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/hang" --hang-timeout 3 --grace 2 \
  --max-restarts 0 --inject-failure 1:30:STOP -- "${trainer[@]}" --step-ms 5 \
  >"$scratch/hang.log" 2>&1
expect_rc 1 $? "a hang through the relay ends the run without restarts"
expect_grep '"outcome":"hang"' "$scratch/hang/attempts.jsonl" "the hang is recorded"
expect_grep '"failed_rank":1,.*"failure":"no heartbeat' "$scratch/hang/attempts.jsonl" \
  "the stopped rank is named"

# A slow relayed rank is a straggler; the relay merges its compute times.
timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/slow" --straggler-interval 1 \
  --straggler-reports 2 --inject-slow 3:4 -- "$mlp" --steps 300 --hidden 32 --step-ms 4 \
  >"$scratch/slow.log" 2>&1
expect_rc 0 $? "the run with a slow rank completes"
check "summary.json names rank 3 only" \
  "[ \"$(summary_field "$scratch/slow/summary.json" "[x['rank'] for x in s['stragglers']]")\" = '[3]' ]"
finish
