#!/usr/bin/env bash
# slurm/train.sbatch on the local cluster (2 nodes x 2 tasks): the example
# trainer trains to the end, and its final weights equal those of a 4-rank
# `lockstep run` outside Slurm; so does slurm/train-gpu.sbatch with its GPU
# request set to zero (the cluster has none) and the CPU trainer. Submitted without the launcher on PATH, the
# template fails at once, says why, and starts nothing.
# Usage: template_test.sh <local-cluster dir> <slurm dir> <lockstep> <lockstep-mlp> <scratch dir>
set -euo pipefail
scripts=$1 templates=$2 lockstep=$3 mlp=$4 scratch=$5
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

trainer=(lockstep-mlp --steps 120 --hidden 128,128)
export LOCKSTEP_CHECKPOINT_EVERY=20
launcher_path="$(dirname "$lockstep"):$(dirname "$mlp"):$PATH"

# The reference: 4 ranks with mpirun, no Slurm.
PATH=$launcher_path lockstep run --no-slurm -n 4 --run-dir "$scratch/reference" -- \
  "${trainer[@]}" --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 ||
  { fail "reference run"; tail -20 "$scratch/reference.log"; }

start_cluster
ok "cluster started"

# --- the template as a user submits it --------------------------------------
PATH=$launcher_path RUN_DIR=$scratch/run sbatch --parsable -N2 --ntasks-per-node=2 --overcommit \
  -o "$scratch/job.out" "$templates/train.sbatch" "${trainer[@]}" \
  --weights-out "$scratch/slurm.bin" >"$scratch/sbatch.log"
job=$(job_id_in "$scratch/sbatch.log")
state=$(wait_for_job "$job" 300)
check "the template's job completes (state $state)" "[ $state = COMPLETED ]"
touch "$scratch/job.out"
expect_grep "^train.sbatch: job $job start 1 on n\[1-2\]" "$scratch/job.out" "the template names its job and nodes"
expect_grep "mlp: .* 4 ranks x 64 samples" "$scratch/job.out" "4 ranks trained"
expect_grep "^\[rank 0 n1\]|\[0/4 n1\]" "$scratch/job.out" "output lines name rank and node"
expect_grep "held-out accuracy" "$scratch/job.out" "the trainer reports its accuracy"
check "final weights equal the mpirun run's" "cmp -s '$scratch/reference.bin' '$scratch/slurm.bin'"
check "summary.json names the job" \
  "python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(s[\"slurm\"][\"job_id\"]!=sys.argv[2] or s[\"outcome\"]!=\"success\")' '$scratch/run/summary.json' '$job'"

# --- the GPU template, on nodes without GPUs: launcher, srun, same weights ----
PATH=$launcher_path RUN_DIR=$scratch/gpu sbatch --parsable --gpus-per-node=0 --cpus-per-task=1 \
  -N2 --ntasks-per-node=2 --overcommit -o "$scratch/gpu.out" "$templates/train-gpu.sbatch" \
  "${trainer[@]}" --weights-out "$scratch/gpu.bin" >"$scratch/sbatch.log"
job=$(job_id_in "$scratch/sbatch.log")
state=$(wait_for_job "$job" 300)
check "the GPU template's job completes on CPUs (state $state)" "[ $state = COMPLETED ]"
touch "$scratch/gpu.out"
expect_grep "^train-gpu.sbatch: job $job start 1 on n\[1-2\]" "$scratch/gpu.out" "the GPU template names its job and nodes"
check "the GPU template's weights equal the mpirun run's" "cmp -s '$scratch/reference.bin' '$scratch/gpu.bin'"

# --- the launcher is not on PATH ---------------------------------------------
PATH=/usr/bin:/bin RUN_DIR=$scratch/nolauncher sbatch --parsable -N1 -n1 \
  -o "$scratch/nolauncher.out" "$templates/train.sbatch" >"$scratch/sbatch.log"
job=$(job_id_in "$scratch/sbatch.log")
state=$(wait_for_job "$job" 120)
check "without the launcher the job fails (state $state)" "[ $state = FAILED ]"
touch "$scratch/nolauncher.out"
expect_grep "the launcher 'lockstep' is not on PATH on .*nothing was started" \
  "$scratch/nolauncher.out" "the template says the launcher is missing and what to do"
check "nothing was started (no run directory)" "[ ! -e '$scratch/nolauncher' ]"

stop_cluster_and_check
finish
