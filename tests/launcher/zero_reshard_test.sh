#!/usr/bin/env bash
# The example with Adam's state sharded (--zero 1) resumes at another world
# size: 4 ranks to step 60, 3 ranks to step 120, 4 ranks to step 180, each
# from the checkpoint the run before it left, whose moments were saved as
# chunks of the ranks of that run. The loss and the accuracy end where an
# uninterrupted 4-rank run of 180 steps ends, within the noise of the
# changed split of the global batch; every resume says which step it
# restored, and `lockstep ckpt inspect` shows the moments saved as chunks.
# Usage: zero_reshard_test.sh <lockstep> <mlp> <scratch dir>
set -u
lockstep=$1 mlp=$2 scratch=$3
source "$(dirname "$0")/../support/checks.sh"
rm -rf "$scratch"
mkdir -p "$scratch"
export LOCKSTEP_CHECKPOINT_EVERY=20
# A global batch that 3 and 4 ranks divide: every step trains on the same
# samples at either size.
trainer=("$mlp" --zero 1 --hidden 128,128 --batch 240)

# run <name> <ranks> <steps> [run dir]: one lockstep run of the trainer.
run() {
  timeout 300 "$lockstep" run -n "$2" --run-dir "${4:-$scratch/$1}" -- "${trainer[@]}" \
    --steps "$3" >"$scratch/$1.log" 2>&1
}
# The final loss and accuracy a run's log reports.
finished() { grep -Eo 'finished [0-9]+ steps: loss [0-9.]+, held-out accuracy [0-9.]+' "$1"; }

run reference 4 180
check "the uninterrupted 4-rank run completes" "[ $? -eq 0 ]"
run first 4 60 "$scratch/resharded"
check "4 ranks train to step 60" "[ $? -eq 0 ]"
"$lockstep" ckpt inspect "$scratch/resharded/checkpoints" >"$scratch/inspect-first.txt" 2>&1
expect_grep "world size +4" "$scratch/inspect-first.txt" "4 ranks saved step 59"
expect_grep "optim.m/fc1.weight .*sharded, [2-4] chunks" "$scratch/inspect-first.txt" \
  "its moments are the ranks' chunks"
run second 3 120 "$scratch/resharded"
check "3 ranks go on to step 120" "[ $? -eq 0 ]"
expect_grep "restored step 59 from" "$scratch/second.log" "3 ranks resume from 4 ranks' step 59"
"$lockstep" ckpt inspect "$scratch/resharded/checkpoints" >"$scratch/inspect-second.txt" 2>&1
expect_grep "world size +3" "$scratch/inspect-second.txt" "3 ranks saved step 119"
expect_grep "optim.m/fc1.weight .*sharded, [2-3] chunks" "$scratch/inspect-second.txt" \
  "its moments are the 3 ranks' chunks"
run third 4 180 "$scratch/resharded"
check "4 ranks go on to step 180" "[ $? -eq 0 ]"
expect_grep "restored step 119 from" "$scratch/third.log" "4 ranks resume from 3 ranks' step 119"

read -r reference_loss reference_accuracy < <(finished "$scratch/reference.log" |
  awk '{print $5, $8}' | tr -d ,)
read -r loss accuracy < <(finished "$scratch/third.log" | awk '{print $5, $8}' | tr -d ,)
echo "uninterrupted: loss $reference_loss, accuracy $reference_accuracy%; resharded: loss $loss, accuracy $accuracy%"
check "the resharded run ends near the uninterrupted loss ($loss against $reference_loss)" \
  "awk 'BEGIN { exit !($loss <= 1.25 * $reference_loss + 0.02) }'"
check "and near its accuracy ($accuracy% against $reference_accuracy%)" \
  "awk 'BEGIN { exit !($accuracy >= $reference_accuracy - 3) }'"
finish
