#!/usr/bin/env bash
# A failing node on the local cluster: every rank on n2 is killed whenever the
# run has committed a newer checkpoint. After two failed attempts that
# implicate n2, `lockstep run` leaves it out (srun --exclude) and the run
# finishes on n1 with half the ranks, resuming from the 4-rank checkpoint.
# Usage: node_exclusion_test.sh <local-cluster dir> <slurm dir> <lockstep> <lockstep-mlp> <scratch dir>
set -euo pipefail
scripts=$1 templates=$2 lockstep=$3 mlp=$4 scratch=$5
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

trainer=(lockstep-mlp --steps 300 --hidden 128,128 --step-ms 50)
export LOCKSTEP_CHECKPOINT_EVERY=20
export PATH="$(dirname "$lockstep"):$(dirname "$mlp"):$PATH"
start_cluster
ok "cluster started"

RUN_DIR=$scratch/run RUN_ARGS="--max-restarts 4 --exclude-after 2 --min-nodes 1" \
  sbatch --parsable -N2 --ntasks-per-node=2 --overcommit -o "$scratch/job.out" \
  "$templates/train.sbatch" "${trainer[@]}" >"$scratch/sbatch.log"
job=$(job_id_in "$scratch/sbatch.log")

newest_checkpoint() {
  { find "$scratch/run/checkpoints" -maxdepth 1 -name 'step-*' 2>/dev/null || true; } |
    sed -n 's/.*\/step-\([0-9]*\)$/\1/p' | sort -n | tail -1
}
ranks_on_n2() { # pids of the trainer's processes that Slurm started on n2
  local f
  for f in $(grep -l "SLURMD_NODENAME=n2" /proc/[0-9]*/environ 2>/dev/null || true); do
    f=${f%/environ}
    if grep -qz "^LOCKSTEP_RUN_DIR=$scratch/run$" "$f/environ" 2>/dev/null &&
      [ "$(tr '\0' '\n' <"$f/cmdline" 2>/dev/null | head -1)" = "$mlp" ]; then
      echo "${f#/proc/}"
    fi
  done
}
# n2 fails: each time the run gets further (a newer checkpoint), its ranks
# there are killed.
last=-1 kills=0 deadline=$((SECONDS + 300)) state=""
while [ $SECONDS -lt $deadline ]; do
  state=$(job_field "$job" JobState)
  case $state in PENDING | RUNNING | CONFIGURING | COMPLETING | "") ;; *) break ;; esac
  step=$(newest_checkpoint)
  if [ -n "$step" ] && [ "$step" -gt "$last" ]; then
    pids=$(ranks_on_n2 | tr '\n' ' ')
    if [ -n "$pids" ]; then
      echo "killing the ranks on n2 (pids $pids) after the checkpoint of step $step"
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
      last=$step
      kills=$((kills + 1))
    fi
  fi
  sleep 0.3
done
[ -n "$state" ] || state=$(wait_for_job "$job" 5)
check "the job completes (state $state)" "[ '$state' = COMPLETED ]"
check "n2 failed twice (killed $kills times)" "[ $kills -eq 2 ]"
touch "$scratch/job.out"
expect_grep "node n2 is implicated in 2 failed attempts: the next attempts leave it out and run 2 ranks on 1 node" \
  "$scratch/job.out" "the launcher leaves n2 out"
expect_grep "mlp: .* 2 ranks x 128 samples, steps [1-9][0-9]*\.\.300" "$scratch/job.out" \
  "the last attempt resumed on 2 ranks"
expect_grep "finished 300 steps" "$scratch/job.out" "the run finished"
check "three attempts" "[ \$(wc -l <'$scratch/run/attempts.jsonl') -eq 3 ]"
excluded=$(python3 -c 'import json,sys; print(",".join(json.load(open(sys.argv[1]))["slurm"]["excluded_nodes"]))' \
  "$scratch/run/summary.json" 2>/dev/null || true)
check "summary.json lists n2 as left out (got '$excluded')" "[ '$excluded' = n2 ]"

stop_cluster_and_check
finish
