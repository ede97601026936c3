#!/usr/bin/env bash
# Silent data corruption: one bit of one rank's parameters flipped mid-run.
# The replica check names the rank, the job restarts from the newest
# checkpoint (saved after a check that passed), and the final weights equal
# an uninterrupted run's.
# Usage: sdc_test.sh <lockstep> <lockstep-mlp> <scratch dir>
set -u
lockstep=$1 mlp=$2 scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }
export LOCKSTEP_CHECKPOINT_EVERY=50 LOCKSTEP_REPLICA_CHECK_EVERY=20
trainer=("$mlp" --steps 200 --hidden 64,64)
timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 || fail "reference run"
timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/flip" --inject-bitflip 2:110 -- "${trainer[@]}" \
  --weights-out "$scratch/flip.bin" >"$scratch/flip.log" 2>&1
rc=$?
[ $rc -eq 0 ] && ok "the run with a flipped bit completes" || fail "exit $rc"
grep -q "first failure: rank 2 on .* silent data corruption: after step 119 the parameters of rank 2" "$scratch/flip.log" &&
  ok "the divergent rank is named as the cause" || { fail "the divergent rank is not named"; tail -30 "$scratch/flip.log"; }
grep -q '"failed_rank":2,.*silent data corruption' "$scratch/flip/attempts.jsonl" &&
  ok "attempts.jsonl records it" || fail "attempts.jsonl does not record it"
grep -q "restored step 99 " "$scratch/flip.log" &&
  ok "it restarts from the checkpoint before the divergence" || fail "not restored from step 99"
cmp -s "$scratch/reference.bin" "$scratch/flip.bin" &&
  ok "final weights equal the uninterrupted run's" || fail "final weights differ"
[ $failures -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
