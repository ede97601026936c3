#!/usr/bin/env bash
# Chaos: the example trainer at 4 ranks while ranks are SIGKILLed at random
# steps (five times, once while an asynchronous checkpoint is being written)
# and one rank is SIGSTOPped (a hang). The chaotic run shards Adam's state
# (--zero 1) and keeps its checkpoints in the memory tier too (every third
# on disk), the uninterrupted one does neither; the chaotic run must finish
# with weights bit-identical to the uninterrupted run of the same seed.
# Usage: chaos_test.sh <lockstep> <mlp> <scratch dir>   (CHAOS_SEED to replay)
set -u
lockstep=$1 mlp=$2 scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
seed=${CHAOS_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$seed
echo "chaos seed $seed (replay with CHAOS_SEED=$seed)"
steps=400
trainer=("$mlp" --steps $steps --hidden 512,512 --step-ms 10)
export LOCKSTEP_CHECKPOINT_EVERY=40

timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 || {
  echo "FAIL: the uninterrupted run failed"; tail -30 "$scratch/reference.log"; exit 1; }

# Five SIGKILLs at increasing random steps on random ranks, the third one
# timed by a checkpoint, and one SIGSTOP between the others.
injections=()
step=20
for i in 1 2 3 4 5 6; do
  step=$((step + 30 + RANDOM % 30))
  rank=$((RANDOM % 4))
  case $i in
    3) injections+=(--inject-failure "$rank:${step}c:KILL") ;;
    5) injections+=(--inject-failure "$rank:$step:STOP") ;;
    *) injections+=(--inject-failure "$rank:$step:KILL") ;;
  esac
done
echo "injections: ${injections[*]}"
memory=/dev/shm/lockstep-chaos-$$
trap 'rm -rf "$memory"' EXIT
LOCKSTEP_CHECKPOINT_MEMORY_DIR=$memory LOCKSTEP_CHECKPOINT_DISK_EVERY=3 \
  timeout 600 "$lockstep" run -n 4 --run-dir "$scratch/chaos" --max-restarts 12 --hang-timeout 6 \
  --grace 2 "${injections[@]}" -- "${trainer[@]}" --zero 1 --weights-out "$scratch/chaos.bin" \
  >"$scratch/chaos.log" 2>&1
rc=$?
failures=0
check() { if eval "$2"; then echo "ok:   $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
check "the chaotic run completes (exit $rc)" "[ $rc -eq 0 ]"
check "final weights (ZeRO-1, interrupted) are bit-identical to the uninterrupted replicated run" \
  "cmp -s '$scratch/reference.bin' '$scratch/chaos.bin'"
kills=$(grep -c '"failure":"killed by signal 9' "$scratch/chaos/attempts.jsonl")
check "at least 5 SIGKILLs were recovered ($kills)" "[ $kills -ge 5 ]"
check "one injection hit a checkpoint being written" "grep -q 'at the checkpoint of step' '$scratch/chaos.log'"
from_memory=$(grep -c "restored step [0-9]* from memory" "$scratch/chaos.log")
check "restarts restored from the memory tier ($from_memory)" "[ $from_memory -ge 1 ]"
left_in_memory=$(find "$memory" -mindepth 1 2>/dev/null | wc -l)
check "the finished run left nothing in the memory tier ($left_in_memory)" "[ $left_in_memory -eq 0 ]"
check "the hang was detected and recovered" "grep -q '\"outcome\":\"hang\"' '$scratch/chaos/attempts.jsonl'"
check "no attempt left a process behind" "! grep -q '\"survivors\":[1-9]' '$scratch/chaos/attempts.jsonl'"
left=$(grep -l "LOCKSTEP_RUN_DIR=$scratch" /proc/[0-9]*/environ 2>/dev/null | wc -l)
check "no process of the run survives ($left)" "[ $left -eq 0 ]"
grep -E "^lockstep: (attempt|injecting)|^goodput|^  (productive|lost|restarts|steps)" "$scratch/chaos.log"
if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed; log tail:"
  tail -40 "$scratch/chaos.log"
  exit 1
fi
