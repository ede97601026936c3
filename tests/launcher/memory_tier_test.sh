#!/usr/bin/env bash
# The example with the memory tier (LOCKSTEP_CHECKPOINT_MEMORY_DIR): a rank
# SIGKILLed mid-run, and another during a save; each restart restores from
# the node's memory (the log says so), only every 4th save reaches the disk,
# the run ends bit-identical to an uninterrupted disk-only run, and leaves
# nothing in memory.
# Usage: memory_tier_test.sh <lockstep> <mlp> <scratch dir>
set -u
lockstep=$1 mlp=$2 scratch=$3
source "$(dirname "$0")/../support/checks.sh"
rm -rf "$scratch"
mkdir -p "$scratch"
memory=/dev/shm/lockstep-memory-tier-test-$$
rm -rf "$memory"
trap 'rm -rf "$memory"' EXIT
trainer=("$mlp" --steps 200 --hidden 128,128 --step-ms 5)
export LOCKSTEP_CHECKPOINT_EVERY=10

timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1
check "the uninterrupted disk-only run completes" "[ $? -eq 0 ]"

LOCKSTEP_CHECKPOINT_MEMORY_DIR=$memory LOCKSTEP_CHECKPOINT_DISK_EVERY=4 \
  timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/tiered" --max-restarts 4 \
  --inject-failure 1:95:KILL --inject-failure 2:150c:KILL -- "${trainer[@]}" \
  --weights-out "$scratch/tiered.bin" >"$scratch/tiered.log" 2>&1
check "the run with the memory tier and two SIGKILLs completes" "[ $? -eq 0 ]"
expect_same_file "$scratch/reference.bin" "$scratch/tiered.bin" \
  "its weights are bit-identical to the uninterrupted run's"
restores=$(grep -c "restored step [0-9]* from memory (own copies" "$scratch/tiered.log")
check "both restarts restored from memory ($restores)" "[ $restores -eq 2 ]"
expect_no_grep "restored step [0-9]* from disk" "$scratch/tiered.log" "none read the disk"
on_disk=$(find "$scratch/tiered/checkpoints" -maxdepth 1 -name 'step-*' | wc -l)
check "the disk holds the kept steps of every 4th save and the final one ($on_disk)" \
  "[ $on_disk -ge 1 ] && [ $on_disk -le 4 ]"
expect_grep "step-199" <(ls "$scratch/tiered/checkpoints") "the final state is on disk"
left=$(find "$memory" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
check "the finished run left nothing in the memory tier ($left)" "[ $left -eq 0 ]"

# A run that fails for good keeps its memory copies; `lockstep ckpt list`
# shows them beside the disk's.
LOCKSTEP_CHECKPOINT_MEMORY_DIR=$memory LOCKSTEP_CHECKPOINT_DISK_EVERY=4 \
  timeout 300 "$lockstep" run -n 4 --run-dir "$scratch/failed" --max-restarts 0 \
  --inject-failure 0:45:KILL -- "${trainer[@]}" >"$scratch/failed.log" 2>&1
check "a run out of restarts fails" "[ $? -ne 0 ]"
LOCKSTEP_CHECKPOINT_MEMORY_DIR=$memory "$lockstep" ckpt list "$scratch/failed/checkpoints" \
  >"$scratch/list.txt" 2>&1
expect_grep "^memory tier of node [^ ]+ \($memory/" "$scratch/list.txt" \
  "ckpt list finds the run's memory tier"
expect_grep "in memory +[0-9.]+ [KM]iB +4 " "$scratch/list.txt" "and lists its steps"
expect_grep "committed" "$scratch/list.txt" "beside the steps on disk"
finish
