#!/usr/bin/env bash
# Time limit and preemption on the local cluster, through slurm/train.sbatch:
# (1) a job with a one-minute limit and --signal=B:USR1@50 gets the signal,
#     checkpoints, requeues itself, and finishes on its second start with
#     final weights bit-identical to an uninterrupted run;
# (2) SIGTERM to the launcher (the batch script) makes the ranks checkpoint
#     and stop; the launcher exits with code 3 and does not requeue;
# (3) SIGTERM to the job steps only, as Slurm's preemption sends it: the
#     ranks checkpoint and stop, and the launcher reports a stop (exit 3).
# Usage: requeue_test.sh <local-cluster dir> <slurm dir> <lockstep> <lockstep-mlp> <scratch dir>
set -euo pipefail
scripts=$1 templates=$2 lockstep=$3 mlp=$4 scratch=$5
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# About 200 ms a step: 400 steps outlast the signal, which comes 10-40 s
# into the job (Slurm checks time limits every 30 s).
trainer=(lockstep-mlp --steps 400 --hidden 128,128)
slow=(--step-ms 200)
export LOCKSTEP_CHECKPOINT_EVERY=50
export PATH="$(dirname "$lockstep"):$(dirname "$mlp"):$PATH"
summary_field() { # summary_field <summary.json> <python expression on s>
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null || true
}

lockstep run --no-slurm -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 ||
  { fail "reference run"; tail -20 "$scratch/reference.log"; }

start_cluster
ok "cluster started"

# --- (1) time limit: warning signal, checkpoint, requeue, resume ------------
RUN_DIR=$scratch/run sbatch --parsable -N2 --ntasks-per-node=2 --overcommit --time=1 \
  --signal=B:USR1@50 -o "$scratch/job.out" "$templates/train.sbatch" "${trainer[@]}" \
  "${slow[@]}" --weights-out "$scratch/slurm.bin" >"$scratch/sbatch.log"
job=$(job_id_in "$scratch/sbatch.log")
# Wait for the requeue; the requeued job then gets a longer limit (so that
# it is not signalled again) and may start two seconds later instead of
# after the delay Slurm puts on requeued jobs. Not at once: slurmd refuses a
# job credential issued in the same second as the revocation of the job's
# previous one ("Job credential revoked") and the job then fails.
deadline=$((SECONDS + 150))
while [ $SECONDS -lt $deadline ] && [ "$(job_field "$job" Restarts)" != 1 ]; do sleep 1; done
check "the job was requeued (Restarts=$(job_field "$job" Restarts))" "[ '$(job_field "$job" Restarts)' = 1 ]"
# While the first start winds down the job may still show its end state
# (FAILED: exit code 3); wait until it is back in the queue.
deadline=$((SECONDS + 90))
while [ $SECONDS -lt $deadline ] && [ "$(job_field "$job" JobState)" != PENDING ]; do sleep 1; done
check "the requeued job is pending ($(job_field "$job" JobState))" "[ '$(job_field "$job" JobState)' = PENDING ]"
scontrol update JobId="$job" TimeLimit=10 >/dev/null 2>&1 || true
scontrol update JobId="$job" StartTime=now+2 >/dev/null 2>&1 || true
state=$(wait_for_job "$job" 240)
check "the requeued job completes (state $state)" "[ $state = COMPLETED ]"
touch "$scratch/job.out"
expect_grep "^train.sbatch: job $job start 1 " "$scratch/job.out" "first start"
expect_grep "^train.sbatch: job $job start 2 " "$scratch/job.out" "second start"
expect_grep "stop requested: ranks will checkpoint" "$scratch/job.out" "the warning signal reached the launcher"
expect_grep "requeued job $job: it resumes" "$scratch/job.out" "the launcher requeued the job"
expect_grep "mlp: .*steps [1-9][0-9]*\.\.400" "$scratch/job.out" "the second start resumed from the checkpoint"
expect_grep "finished 400 steps" "$scratch/job.out" "the run finished"
check "final weights equal an uninterrupted run's" "cmp -s '$scratch/reference.bin' '$scratch/slurm.bin'"
requeues=$(summary_field "$scratch/run/summary.json" 's["slurm"]["requeues"]')
check "summary.json counts one requeue (got '$requeues')" "[ '$requeues' = 1 ]"
# The run's timeline holds both starts, the requeue between them, and the
# ranks of both; the report names the attempts of both starts.
lockstep trace "$scratch/run" -o "$scratch/trace.json" >"$scratch/trace.out" 2>&1
expect_grep "over 2 start\(s\) of lockstep run" "$scratch/trace.out" "lockstep trace merges both starts"
expect_grep "requeued Slurm job $job" "$scratch/trace.json" "the requeue is on the launcher's track"
expect_grep "Slurm job $job \(restart count 1\)" "$scratch/trace.json" "the second start says it was requeued"
lockstep report "$scratch/run" >/dev/null 2>&1
expect_grep "start 2, attempt 0" "$scratch/run/report.html" "the report names the second start's attempt"

# Submits the slow run into RUN_DIR <name>, sends SIGTERM with `scancel
# <options>` once the launcher has reported a step, and waits for the job to
# end; sets `job` and `state`.
terminate_mid_run() { # terminate_mid_run <name> <scancel options...>
  local name=$1 deadline
  shift
  RUN_DIR=$scratch/$name sbatch --parsable -N2 --ntasks-per-node=2 --overcommit \
    -o "$scratch/$name.out" "$templates/train.sbatch" "${trainer[@]}" "${slow[@]}" \
    >"$scratch/sbatch.log"
  job=$(job_id_in "$scratch/sbatch.log")
  deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ] && ! grep -q "step [1-9][0-9]* |" "$scratch/$name.out" 2>/dev/null; do
    sleep 1
  done
  scancel --signal=TERM "$@" "$job"
  state=$(wait_for_job "$job" 120)
  touch "$scratch/$name.out"
}

# --- (2) SIGTERM to the launcher -------------------------------------------------
terminate_mid_run preempted --batch
exit_code=$(summary_field "$scratch/preempted/summary.json" 's["exit_code"]')
check "after SIGTERM the launcher stops with exit code 3 (got '$exit_code', state $state)" \
  "[ '$exit_code' = 3 ]"
expect_grep "stopped after step [0-9]+; run again to resume" "$scratch/preempted.out" \
  "the ranks checkpointed and stopped"
expect_grep "stopped on request after a checkpoint; run again to resume" \
  "$scratch/preempted.out" "the launcher says how to resume"
check "SIGTERM does not requeue ($(job_field "$job" Restarts))" "[ '$(job_field "$job" Restarts)' != 1 ]"
check "a checkpoint was committed" "ls '$scratch/preempted/checkpoints' | grep -q '^step-'"

# --- (3) SIGTERM to the job's steps only (what Slurm's preemption sends) -------
terminate_mid_run steps
exit_code=$(summary_field "$scratch/steps/summary.json" 's["exit_code"]')
check "after SIGTERM to the ranks the launcher reports a stop, exit code 3 (got '$exit_code')" \
  "[ '$exit_code' = 3 ]"
expect_grep "the ranks were asked to stop .* and stopped after a checkpoint; run again to resume" \
  "$scratch/steps.out" "the launcher says the ranks stopped on their own signal"

stop_cluster_and_check
finish
