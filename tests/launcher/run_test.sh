#!/usr/bin/env bash
# End-to-end tests of `lockstep run` with a real mpirun and a toy trainer.
# Usage: run_test.sh <case> <lockstep binary> <toy_trainer binary> <scratch dir>
set -u
case_name=$1 lockstep=$2 trainer=$3 scratch=$4
rm -rf "$scratch"
mkdir -p "$scratch"
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }
expect_rc() { # expect_rc <wanted> <got> <what>
  if [ "$2" -eq "$1" ]; then ok "$3 (exit $2)"; else fail "$3: exit $2, wanted $1"; fi
}
expect_grep() { # expect_grep <pattern> <file> <what>
  if grep -qE -- "$1" "$2"; then ok "$3"; else fail "$3: /$1/ not in $2"; sed 's/^/    | /' "$2" | tail -40; fi
}
# No process may survive a run: look for any process carrying its run dir.
expect_no_survivors() {
  local dir=$1 left
  left=$(grep -l "LOCKSTEP_RUN_DIR=$dir" /proc/[0-9]*/environ 2>/dev/null | wc -l)
  if [ "$left" -eq 0 ]; then ok "no process of $dir survives"; else fail "$left processes of $dir survive"; fi
}
# run <dir> [lockstep run options...] -- [trainer args]: output in <dir>.log
run() {
  local dir=$1
  shift
  timeout 240 "$lockstep" run --run-dir "$dir" "$@" >"$dir.log" 2>&1
}
reference() { # the result of an uninterrupted run of <steps> steps
  run "$scratch/reference" -n 4 -- "$trainer" --steps "$1" --step-ms 5 || fail "reference run failed"
  cat "$scratch/reference/toy-result"
}

case $case_name in
usage)
  dir=$scratch/usage
  run "$dir" -n 0 -- "$trainer"
  expect_rc 2 $? "-n 0 is a usage error"
  expect_grep "-n must be at least 1" "$dir.log" "-n 0 names the problem"
  run "$dir" -n 2 -- /nonexistent/trainer
  expect_rc 2 $? "missing program is a usage error"
  expect_grep "'/nonexistent/trainer' does not exist" "$dir.log" "missing program is named"
  printf '#!/bin/sh\n' >"$scratch/not-executable"
  run "$dir" -n 2 -- "$scratch/not-executable"
  expect_rc 2 $? "non-executable program is a usage error"
  expect_grep "is not executable" "$dir.log" "non-executable program is named"
  run "$dir" -n 2 -H "node1:4,node2:x" -- "$trainer"
  expect_rc 2 $? "malformed host list is a usage error"
  expect_grep "bad host list.*node2:x" "$dir.log" "malformed host entry is named"
  printf 'node1 slots=2\n# comment\nnode2 slots=two\n' >"$scratch/hostfile"
  run "$dir" -n 2 --hostfile "$scratch/hostfile" -- "$trainer"
  expect_rc 2 $? "malformed hostfile is a usage error"
  expect_grep "hostfile:3: 'slots=two'" "$dir.log" "hostfile error has the line number"
  run "$dir" -n 2 --no-such-option -- "$trainer"
  expect_rc 2 $? "unknown option is a usage error"
  (unset SLURM_JOB_ID && run "$dir" --slurm -n 2 -- "$trainer")
  expect_rc 2 $? "--slurm outside an allocation is a usage error"
  expect_grep "not inside a Slurm allocation.*sbatch" "$dir.log" "--slurm outside an allocation says what to do"
  SLURM_JOB_ID=1 SLURM_JOB_NUM_NODES=2 SLURM_NTASKS=4 run "$dir" --srun /nonexistent/srun -- "$trainer"
  expect_rc 2 $? "a missing srun inside an allocation is a usage error"
  expect_grep "srun '/nonexistent/srun' does not exist" "$dir.log" "the missing srun is named"
  SLURM_JOB_ID=1 SLURM_JOB_NUM_NODES=2 run "$dir" --srun /bin/true --min-nodes 3 -- "$trainer"
  expect_rc 2 $? "--min-nodes above the allocation is a usage error"
  expect_grep "--min-nodes 3 exceeds the 2 node" "$dir.log" "--min-nodes names the allocation's size"
  [ ! -e "$dir/attempts.jsonl" ] && ok "nothing was started" || fail "a usage error started a job"
  SLURM_JOB_ID=1 SLURM_JOB_NUM_NODES=2 SLURM_NTASKS=4 run "$dir" --srun /bin/true --dry-run -- "$trainer"
  expect_rc 0 $? "--dry-run inside an allocation"
  expect_grep "^/bin/true --mpi=pmix --kill-on-bad-exit=1 --label --unbuffered .*toy_trainer$" "$dir.log" "--dry-run inside an allocation prints the srun command"
  run "$dir" -n 4 --dry-run -- "$trainer" --steps 3
  expect_rc 0 $? "--dry-run"
  expect_grep "^mpirun -n 4 .*--tag-output .*-x LOCKSTEP_MONITOR_TOKEN .*toy_trainer --steps 3$" "$dir.log" "--dry-run prints the mpirun command"
  if [ "$(nproc)" -lt 4 ]; then expect_grep "--oversubscribe" "$dir.log" "oversubscribes beyond the cores"; fi
  if [ "$(id -u)" -eq 0 ]; then expect_grep "--allow-run-as-root" "$dir.log" "allows root"; fi
  ;;
crash)
  want=$(reference 40)
  dir=$scratch/crash
  LOCKSTEP_CHECKPOINT_EVERY=5 run "$dir" -n 4 --inject-failure 2:15 -- "$trainer" --steps 40 --step-ms 30
  expect_rc 0 $? "a run with a killed rank completes"
  [ "$(cat "$dir/toy-result" 2>/dev/null)" = "$want" ] && ok "result equals the uninterrupted run" || fail "result $(cat "$dir/toy-result" 2>/dev/null) != $want"
  [ "$(wc -l <"$dir/attempts.jsonl")" -eq 2 ] && ok "two attempts recorded" || fail "attempts: $(wc -l <"$dir/attempts.jsonl")"
  expect_grep '"failed_rank":2' "$dir/attempts.jsonl" "root cause names rank 2"
  expect_grep '"failure":"killed by signal 9' "$dir/attempts.jsonl" "root cause names SIGKILL"
  expect_grep "first failure: rank 2 .*killed by signal 9" "$dir.log" "root cause printed"
  expect_grep '"restarts": 1' "$dir/summary.json" "summary counts one restart"
  expect_grep '"survivors":0' "$dir/attempts.jsonl" "no survivors recorded"
  expect_grep '^\[[0-3]/4 ' "$dir.log" "rank lines carry their rank"
  expect_grep "goodput: " "$dir.log" "goodput summary printed"
  expect_no_survivors "$dir"
  ;;
hang)
  want=$(reference 30)
  dir=$scratch/hang
  LOCKSTEP_CHECKPOINT_EVERY=5 run "$dir" -n 4 --hang-timeout 4 --grace 2 --inject-failure 1:10:STOP -- "$trainer" --steps 30 --step-ms 30
  expect_rc 0 $? "a run with a stopped (hung) rank completes"
  [ "$(cat "$dir/toy-result" 2>/dev/null)" = "$want" ] && ok "result equals the uninterrupted run" || fail "result differs"
  expect_grep '"outcome":"hang"' "$dir/attempts.jsonl" "the hang is recorded"
  expect_grep "no heartbeat for 4 s" "$dir.log" "the hang is reported"
  expect_grep '"failed_rank":1,.*"failure":"no heartbeat.*its process [0-9]+ is stopped' "$dir/attempts.jsonl" "the stopped rank is blamed"
  expect_no_survivors "$dir"
  ;;
giveup)
  dir=$scratch/bug
  run "$dir" -n 2 -- "$trainer" --fail-before-first-step
  expect_rc 1 $? "a program that fails at start fails the run"
  [ "$(wc -l <"$dir/attempts.jsonl")" -eq 2 ] && ok "stopped after two attempts" || fail "attempts: $(wc -l <"$dir/attempts.jsonl")"
  expect_grep "looks like a bug" "$dir.log" "says it is a bug, not a fault"
  expect_grep "configured to fail at start" "$dir.log" "shows the program's error"
  expect_no_survivors "$dir"
  dir=$scratch/exhausted
  LOCKSTEP_CHECKPOINT_EVERY=5 run "$dir" -n 4 --max-restarts 1 --inject-failure 2:8 --inject-failure 1:20 -- "$trainer" --steps 60 --step-ms 30
  expect_rc 1 $? "restarts run out"
  expect_grep "giving up after 1 restarts" "$dir.log" "says why it gave up"
  expect_no_survivors "$dir"
  ;;
stop)
  want=$(reference 60)
  dir=$scratch/stop
  LOCKSTEP_CHECKPOINT_EVERY=1000 timeout 240 "$lockstep" run --run-dir "$dir" -n 4 -- "$trainer" --steps 60 --step-ms 60 >"$dir.log" 2>&1 &
  launcher=$!
  for _ in $(seq 100); do grep -q "starting at step" "$dir.log" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  # Twice, a moment apart, as `timeout` and Slurm may: the ranks are asked
  # once, and the second signal must not turn the orderly stop into a failure.
  kill -TERM "$(pgrep -P $launcher)"
  sleep 0.1
  kill -TERM "$(pgrep -P $launcher)" 2>/dev/null
  wait $launcher
  expect_rc 3 $? "SIGTERM stops the run after a checkpoint"
  [ "$(grep -c "stop requested" "$dir.log")" -eq 1 ] && ok "the ranks were asked to stop once" ||
    fail "the ranks were asked to stop $(grep -c "stop requested" "$dir.log") times"
  [ -s "$dir/toy-checkpoint" ] && ok "a checkpoint was written on the way out" || fail "no checkpoint after SIGTERM"
  expect_no_survivors "$dir"
  LOCKSTEP_CHECKPOINT_EVERY=1000 run "$dir" -n 4 -- "$trainer" --steps 60 --step-ms 5
  expect_rc 0 $? "the run resumes and completes"
  expect_grep "starting at step [1-9]" "$dir.log" "it resumed from the checkpoint"
  [ "$(cat "$dir/toy-result" 2>/dev/null)" = "$want" ] && ok "result equals the uninterrupted run" || fail "result differs"
  ;;
*)
  echo "unknown case $case_name"; exit 2 ;;
esac
[ $failures -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
