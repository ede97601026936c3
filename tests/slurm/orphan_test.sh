#!/usr/bin/env bash
# SIGKILL of `lockstep run` inside a Slurm job whose batch script lives on
# (it runs the launcher as a child and then keeps the allocation): Slurm
# itself sees no reason to end the job, so only lockstep's own ties (srun's
# parent-death signal, and each rank stopping once the launcher's channel is
# gone) can end srun and the ranks. None of them may outlive the launcher by
# more than a few seconds. A second job has srun killed with the launcher,
# as a kill of the whole process group would.
# Usage: orphan_test.sh <local-cluster dir> <lockstep> <lockstep-mlp> <scratch dir>
set -euo pipefail
scripts=$1 lockstep=$2 mlp=$3 scratch=$4
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# Bound on how long a process of the job may outlive the launcher: the
# ranks' grace after losing the launcher is 5 s.
bound=10
start_cluster
# One job per case: $1 names it; with $2 = "with-srun", srun is killed
# together with the launcher.
kill_case() { # kill_case <name> [with-srun]
  local name=$1 dir=$scratch/$1 marker=$scratch/$1/weights.bin
  mkdir -p "$dir"
  cat >"$dir/job.sh" <<JOB
#!/bin/bash
#SBATCH -N2 --ntasks-per-node=2 --overcommit
"$lockstep" run --run-dir "$dir/run" -- "$mlp" --steps 100000 --hidden 64 \\
  --step-ms 20 --weights-out "$marker" &
echo \$! >"$dir/launcher.pid"
rc=0
wait \$! || rc=\$?
echo "job script: the launcher exited with \$rc"
sleep 300
JOB
  sbatch --parsable -o "$dir/job.out" "$dir/job.sh" >"$dir/sbatch.log"
  local job
  job=$(job_id_in "$dir/sbatch.log")
  # The launcher, srun and the ranks all carry the marker in their arguments.
  ranks_running() { pgrep -f -- "^$mlp .*$marker" | wc -l; }
  local deadline=$((SECONDS + 90))
  while [ $SECONDS -lt $deadline ] && [ "$(ranks_running)" -lt 4 ]; do sleep 1; done
  check "$name: four ranks run under srun ($(ranks_running))" "[ $(ranks_running) -ge 4 ]"
  # Let training get going: the ranks connect to the launcher and are welcomed.
  sleep 3
  local launcher victims
  launcher=$(cat "$dir/launcher.pid" 2>/dev/null || echo 0)
  check "$name: the launcher runs (pid $launcher)" "[ $launcher -gt 1 ] && kill -0 $launcher"
  victims=$launcher
  if [ "${2:-}" = with-srun ]; then victims+=" $(pgrep -f -- "^srun .*$marker" | tr '\n' ' ')"; fi
  # shellcheck disable=SC2086
  kill -KILL $victims 2>/dev/null || true
  local killed_at=$SECONDS left
  left=$(pgrep -f -- "$marker" || true)
  while [ -n "$left" ] && [ $((SECONDS - killed_at)) -le $bound ]; do
    sleep 0.5
    left=$(pgrep -f -- "$marker" || true)
  done
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    ps -o pid,ppid,etimes,args -p "$(echo $left | tr ' ' ,)" | sed 's/^/    | /' || true
  fi
  check "$name: no process of the job outlives the launcher by more than ${bound} s (gone after ~$((SECONDS - killed_at)) s)" \
    "[ -z '$left' ]"
  local state
  state=$(job_field "$job" JobState)
  check "$name: the batch script still holds the allocation, so Slurm ended nothing (state $state)" \
    "[ '$state' = RUNNING ]"
  expect_grep "job script: the launcher exited with 137" "$dir/job.out" "$name: the launcher was killed"
  scancel "$job" >/dev/null 2>&1 || true
  wait_for_job "$job" 60 >/dev/null
}
kill_case launcher
kill_case launcher-and-srun with-srun
stop_cluster_and_check
finish
