#!/usr/bin/env bash
# `lockstep run` inside a real Slurm allocation (the local cluster, 2 nodes x
# 2 tasks): ranks start with srun --mpi=pmix, one rank is killed mid-run, the
# launcher restarts the job inside the same allocation, and the final weights
# equal those of a 4-rank run started with mpirun outside Slurm.
# Usage: lockstep_run_test.sh <local-cluster dir> <lockstep> <mlp> <scratch dir>
set -euo pipefail
scripts=$1 lockstep=$2 mlp=$3 scratch=$4
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the local Slurm cluster needs root"
  exit 77
fi
if [ -d "$scratch/cluster" ]; then "$scripts/stop.sh" "$scratch/cluster" || true; fi
rm -rf "$scratch"
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd -P)
cluster=$scratch/cluster
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }

trainer=("$mlp" --steps 120 --hidden 128,128)
export OMPI_MCA_mpi_yield_when_idle=1 LOCKSTEP_CHECKPOINT_EVERY=20

# The reference: 4 ranks with mpirun, no Slurm, no failure.
"$lockstep" run --no-slurm -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 ||
  { fail "reference run"; tail -20 "$scratch/reference.log"; }

trap '"$scripts/stop.sh" "$cluster" >/dev/null 2>&1 || true' EXIT
"$scripts/start.sh" "$cluster" >"$scratch/start.log" 2>&1 ||
  { cat "$scratch/start.log"; exit 1; }
# shellcheck source=/dev/null
source "$cluster/env.sh"
cat >"$scratch/job.sh" <<JOB
#!/bin/bash
#SBATCH -N2 --ntasks-per-node=2 --overcommit
exec "$lockstep" run --run-dir "$scratch/run" --inject-failure 2:50 -- ${trainer[*]} \
  --weights-out "$scratch/slurm.bin"
JOB
rc=0
sbatch --wait -o "$scratch/job.out" "$scratch/job.sh" >"$scratch/sbatch.log" 2>&1 || rc=$?
check "the job under Slurm completes (sbatch exit $rc)" "[ $rc -eq 0 ]"
check "ranks were started with srun" "grep -q '^\[srun\] ' '$scratch/job.out'"
check "the killed rank is named" \
  "grep -q 'first failure: rank 2 .*killed by signal 9' '$scratch/job.out'"
check "two attempts in one allocation" "[ \$(wc -l <'$scratch/run/attempts.jsonl') -eq 2 ]"
check "final weights equal the mpirun run's" "cmp -s '$scratch/reference.bin' '$scratch/slurm.bin'"
"$scripts/stop.sh" "$cluster" >"$scratch/stop.log" 2>&1 || fail "stop.sh reported survivors"
trap - EXIT
left=$( (grep -l "LOCKSTEP_RUN_DIR=$scratch" /proc/[0-9]*/environ 2>/dev/null || true) | wc -l)
check "no process of the job survives ($left)" "[ $left -eq 0 ]"
if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed; job output:"
  tail -40 "$scratch/job.out"
  exit 1
fi
