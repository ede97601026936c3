#!/usr/bin/env bash
# `lockstep run` inside a real Slurm allocation (the local cluster, 2 nodes x
# 2 tasks): ranks start with srun --mpi=pmix, one rank is killed mid-run, the
# launcher restarts the job inside the same allocation, and the final weights
# equal those of a 4-rank run started with mpirun outside Slurm.
# Usage: lockstep_run_test.sh <local-cluster dir> <lockstep> <lockstep-mlp> <scratch dir>
set -euo pipefail
scripts=$1 lockstep=$2 mlp=$3 scratch=$4
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

trainer=("$mlp" --steps 120 --hidden 128,128)
export LOCKSTEP_CHECKPOINT_EVERY=20

# The reference: 4 ranks with mpirun, no Slurm, no failure.
"$lockstep" run --no-slurm -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 ||
  { fail "reference run"; tail -20 "$scratch/reference.log"; }

start_cluster
cat >"$scratch/job.sh" <<JOB
#!/bin/bash
#SBATCH -N2 --ntasks-per-node=2 --overcommit
exec "$lockstep" run --run-dir "$scratch/run" --inject-failure 2:50 -- ${trainer[*]} --step-ms 10 \
  --weights-out "$scratch/slurm.bin"
JOB
rc=0
sbatch --wait -o "$scratch/job.out" "$scratch/job.sh" >"$scratch/sbatch.log" 2>&1 || rc=$?
check "the job under Slurm completes (sbatch exit $rc)" "[ $rc -eq 0 ]"
touch "$scratch/job.out"
expect_grep '^\[srun\] ' "$scratch/job.out" "ranks were started with srun"
expect_grep 'first failure: rank 2 on n2 killed by signal 9' "$scratch/job.out" \
  "the killed rank and its node are named"
check "two attempts in one allocation" "[ \$(wc -l <'$scratch/run/attempts.jsonl') -eq 2 ]"
check "final weights equal the mpirun run's" "cmp -s '$scratch/reference.bin' '$scratch/slurm.bin'"
stop_cluster_and_check
finish
