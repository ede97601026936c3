#!/usr/bin/env bash
# The example trainer on a GPU (--device cuda, one rank, through `lockstep
# run`): two runs of one seed end with bit-identical weights; a run killed
# part-way and resumed from its checkpoint ends with the same weights; it
# starts from the CPU model's initial weights, and a few steps later its
# weights are close to the CPU model's. Where no GPU is visible it prints
# "skipped: no GPU ..." and exits 77, which ctest reports as skipped.
# Usage: mlp_cuda_test.sh <lockstep> <mlp> <gpu_count> <compare_weights.py> <scratch dir>
set -u
lockstep=$1 mlp=$2 probe=$3 compare=$4 scratch=$5
visible=$("$probe" 2>/dev/null) || visible=0
[[ $visible =~ ^[0-9]+$ ]] || visible=0
if [ "$visible" -lt 1 ]; then
  echo "skipped: no GPU is visible to the CUDA runtime"
  exit 77
fi
rm -rf "$scratch"
mkdir -p "$scratch"
export LOCKSTEP_CHECKPOINT_EVERY=10
model=(--hidden 256,256 --seed 77)
failures=0
check() { if eval "$2"; then echo "ok:   $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi; }

# train NAME [lockstep run options] -- [trainer options]: weights in NAME.bin
train() {
  local name=$1
  shift
  local run_options=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    run_options+=("$1")
    shift
  done
  shift
  timeout 300 "$lockstep" run -n 1 --run-dir "$scratch/$name" "${run_options[@]}" -- \
    "$mlp" "${model[@]}" --weights-out "$scratch/$name.bin" "$@" >"$scratch/$name.log" 2>&1
  local rc=$?
  check "run '$name' succeeds (exit $rc)" "[ $rc -eq 0 ]"
}

train cuda-a -- --device cuda --steps 60
train cuda-b -- --device cuda --steps 60
check "two runs end with bit-identical weights" "cmp -s '$scratch/cuda-a.bin' '$scratch/cuda-b.bin'"
check "they trained on the GPU" "grep -q 'steps 0\.\.60 on cuda:' '$scratch/cuda-a.log'"

# A GPU step takes about a millisecond and the launcher hears of steps every
# 200 ms: --step-ms (a sleep, no arithmetic) lets the kill land mid-run.
train cuda-resumed --inject-failure 0:35 -- --device cuda --steps 60 --step-ms 20
check "the killed run was restarted" \
  "grep -q '\"failure\":\"killed by signal 9' '$scratch/cuda-resumed/attempts.jsonl'"
check "it resumed from a checkpoint" "grep -Eq 'steps [1-9][0-9]*\.\.60 on cuda:' '$scratch/cuda-resumed.log'"
check "the resumed run ends with the uninterrupted run's weights" \
  "cmp -s '$scratch/cuda-a.bin' '$scratch/cuda-resumed.bin'"

train cuda-start -- --device cuda --steps 0
train cpu-start -- --device cpu --steps 0
check "GPU and CPU models start from the same weights" \
  "cmp -s '$scratch/cuda-start.bin' '$scratch/cpu-start.bin'"
train cuda-5 -- --device cuda --steps 5
train cpu-5 -- --device cpu --steps 5
check "after 5 steps GPU and CPU weights differ by under 2% of what training moved" \
  "python3 '$compare' '$scratch/cuda-5.bin' '$scratch/cpu-5.bin' '$scratch/cpu-start.bin' 0.02"

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed; log tails:"
  for log in "$scratch"/*.log; do
    echo "--- $log"
    tail -15 "$log"
  done
  exit 1
fi
