#!/usr/bin/env bash
# A PyTorch DDP (gloo) script that does not link lockstep, under
# `lockstep run -n 2`, reporting through python/lockstep_client.py: a rank
# SIGKILLed mid-run and later one stopped (a hang); the run restarts twice,
# the script resumes from its own checkpoints, the final weights equal an
# uninterrupted run's, and the summary counts the restarts. SIGTERM stops
# it after a checkpoint, and it resumes there. Ranks that said goodbye and
# hang in their teardown are stopped. Then the start-up timeout: a program
# that never reports is stopped as hung after it, unless unmonitored runs
# are allowed.
# Usage: ddp_test.sh <lockstep> <python3> <scratch dir>
set -u
lockstep=$1 python=$2 scratch=$3
# shellcheck source=../support/checks.sh
. "$(dirname "$0")/../support/checks.sh"
rm -rf "$scratch"
mkdir -p "$scratch"
script=$(cd "$(dirname "$0")" && pwd)/ddp_train.py
if ! "$python" -c 'import torch' 2>/dev/null; then
  fail "$python cannot import torch (Debian's python3-torch); the dependency script installs it"
  finish
fi

train() {  # train <name> [lockstep run options...]
  local name=$1
  shift
  timeout 300 "$lockstep" run -n 2 --run-dir "$scratch/$name" "$@" -- "$python" "$script" \
    --steps 60 --every 10 --step-ms 50 --checkpoints "$scratch/$name/torch" \
    --weights-out "$scratch/$name.pt" >"$scratch/$name.log" 2>&1
}

train reference
expect_rc 0 $? "the uninterrupted DDP run completes"
expect_grep "ddp: finished 60 steps" "$scratch/reference.log" "it trains all 60 steps"
expect_grep '"monitored": true' "$scratch/reference/summary.json" "the launcher watched it"
expect_grep "lockstep: step [0-9]+ .*\| loss [0-9.]+ " "$scratch/reference.log" \
  "the status line shows its step and loss"

train chaos --hang-timeout 5 --grace 2 --inject-failure 1:25:KILL --inject-failure 0:45:STOP
expect_rc 0 $? "the run with a killed rank and a hung one completes"
expect_grep "attempt 1 failed at step [0-9]+: .*rank 1 .*signal 9" "$scratch/chaos.log" \
  "the killed rank is named"
expect_grep "no heartbeat for 5 s" "$scratch/chaos.log" "the hang is found by its heartbeats"
expect_grep "^\[mpirun\] mpirun noticed that process rank 1 with PID [0-9]+ on node [^ ]+ exited on signal 9" \
  "$scratch/chaos.log" "mpirun's notice of the kill is told in one line"
expect_no_grep "^\[mpirun\] -----" "$scratch/chaos.log" "without its lines of dashes"
expect_grep "^lockstep: step 59 \| .*loss 0\.5291 \| ckpt step 59 \|" "$scratch/reference.log" \
  "the last status line has the last step's loss and checkpoint, numbered as the script numbers them"
expect_grep "ddp: 2 ranks, steps 20\.\.60" "$scratch/chaos.log" \
  "after the kill the script resumed from its checkpoint of step 19"
# mpirun continues a stopped rank to end it, so the stop request may reach
# it in time to save where it stands (steps 45-48) before it goes.
expect_grep "ddp: 2 ranks, steps (40|4[6-9])\.\.60" "$scratch/chaos.log" \
  "after the hang it resumed from its checkpoint of step 39, or of the step where it stopped"
expect_grep '"restarts": 2' "$scratch/chaos/summary.json" "summary.json counts both restarts"
check "the final weights equal the uninterrupted run's" \
  "'$python' -c 'import sys, torch; a, b = (torch.load(p) for p in sys.argv[1:]); sys.exit(0 if a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) else 1)' '$scratch/reference.pt' '$scratch/chaos.pt'"

# SIGTERM to the launcher (a Slurm time limit, `timeout`): the script saves
# a checkpoint and stops; run again, it resumes there and finishes.
train stopped >/dev/null 2>&1 &
launcher=$!
for _ in $(seq 200); do grep -q "ddp: 2 ranks" "$scratch/stopped.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
kill -TERM "$(pgrep -P $launcher)"
wait $launcher
expect_rc 3 $? "SIGTERM stops the run"
expect_grep "ddp: stopped after step [0-9]+" "$scratch/stopped.log" "the script stopped on request"
stopped_at=$(sed -n 's/.*ddp: stopped after step \([0-9]*\).*/\1/p' "$scratch/stopped.log" | head -1)
check "it saved a checkpoint of that step first (step ${stopped_at:-?})" \
  "[ -n '$stopped_at' ] && [ -s '$scratch/stopped/torch/step-$stopped_at.pt' ]"
train stopped
expect_rc 0 $? "run again, it completes"
expect_grep "ddp: 2 ranks, steps $((${stopped_at:-0} + 1))\.\.60" "$scratch/stopped.log" \
  "it resumed after the step it stopped at"

# Ranks that said goodbye but whose processes hang in their teardown (as
# PyTorch's process groups sometimes do at exit) are stopped, and the run
# counts as a success.
client_dir=$(cd "$(dirname "$0")/../../python" && pwd)
timeout 120 "$lockstep" run -n 2 --run-dir "$scratch/linger" --max-restarts 0 -- "$python" -c "
import sys, time; sys.path.insert(0, '$client_dir')
import lockstep_client
run = lockstep_client.connect()
run.step(0, loss=1.0)
run.close()
time.sleep(300)" >"$scratch/linger.log" 2>&1
expect_rc 0 $? "a job whose ranks said goodbye and then hung ends as a success"
expect_grep "every rank said it exits with code 0 30 s ago" "$scratch/linger.log" \
  "the launcher says why it stopped them"

# A program that never reports is timed from its start.
timeout 60 "$lockstep" run -n 1 --run-dir "$scratch/silent" --startup-timeout 2 --grace 1 \
  --max-restarts 0 -- sleep 30 >"$scratch/silent.log" 2>&1
expect_rc 1 $? "a program that never reports fails after the start-up timeout"
expect_grep "no step heartbeat 2 s after the start \(--startup-timeout" "$scratch/silent.log" \
  "the start-up timeout is named"
# Unless it may run unwatched: then only its exit counts.
timeout 60 "$lockstep" run -n 1 --run-dir "$scratch/unwatched" --startup-timeout 1 \
  --hang-timeout 1 --allow-unmonitored -- sleep 4 >"$scratch/unwatched.log" 2>&1
expect_rc 0 $? "with --allow-unmonitored it runs to its end"
expect_no_grep "hangs" "$scratch/unwatched.log" "and is never called hung"
finish
