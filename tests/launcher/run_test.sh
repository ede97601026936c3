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
# start_job <dir> [lockstep run options...] -- [trainer args]: in the
# background; waits until rank 0 trains. The launcher's pid is in $launcher.
start_job() {
  local dir=$1
  shift
  "$lockstep" run --run-dir "$dir" "$@" >"$dir.log" 2>&1 &
  launcher=$!
  for _ in $(seq 150); do grep -q "starting at step" "$dir.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "starting at step" "$dir.log" || fail "the job in $dir did not start"
}
# pids of the ranks of the run in <dir> (processes whose environment has it)
rank_pids() {
  grep -l "LOCKSTEP_RUN_DIR=$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 |
    while read -r pid; do
      [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$(basename "$trainer" | cut -c1-15)" ] && echo "$pid"
    done
}
# Waits up to <seconds> for every process of the run in <dir> to be gone.
expect_all_gone_within() {
  local dir=$1 seconds=$2 left=0
  for _ in $(seq $((seconds * 10))); do
    left=$(grep -l "LOCKSTEP_RUN_DIR=$dir" /proc/[0-9]*/environ 2>/dev/null | wc -l)
    [ "$left" -eq 0 ] && break
    sleep 0.1
  done
  if [ "$left" -eq 0 ]; then ok "no process of $dir outlives its launcher by ${seconds} s"
  else fail "$left processes of $dir still run ${seconds} s after the launcher died"; ps -ef | grep -F "$trainer" | grep -v grep | sed 's/^/    | /'; fi
}
# CPU seconds (user + system) a process has used so far.
cpu_seconds() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
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
  # Every LOCKSTEP_* variable is checked before anything starts.
  printf '#!/bin/sh\ntouch %s/mpirun-started\n' "$scratch" >"$scratch/fake-mpirun"
  chmod +x "$scratch/fake-mpirun"
  LOCKSTEP_CHECKPOINT_EVERY=abc run "$scratch/env" -n 2 --mpirun "$scratch/fake-mpirun" -- "$trainer"
  expect_rc 2 $? "a bad LOCKSTEP_* value is a usage error"
  expect_grep "LOCKSTEP_CHECKPOINT_EVERY='abc' is not an integer; accepted: an integer" "$scratch/env.log" \
    "the bad variable, its value and what is accepted are named"
  [ ! -e "$scratch/mpirun-started" ] && ok "mpirun was not started" || fail "mpirun was started"
  [ ! -e "$scratch/env" ] && ok "no run directory was made" || fail "the run directory was made"
  LOCKSTEP_COLLECTIVE_TIMEOUT=nan run "$scratch/env" -n 2 --mpirun "$scratch/fake-mpirun" -- "$trainer"
  expect_rc 2 $? "LOCKSTEP_COLLECTIVE_TIMEOUT=nan is a usage error"
  # A run directory that cannot be one.
  touch "$scratch/a-file"
  "$lockstep" run -n 2 --run-dir "$scratch/a-file" -- "$trainer" >"$dir.log" 2>&1
  expect_rc 2 $? "--run-dir naming a file is a usage error"
  expect_grep "run-dir .*a-file: it exists and is not a directory" "$dir.log" "--run-dir naming a file says so"
  "$lockstep" run -n 2 --run-dir "$scratch/a-file/run" -- "$trainer" >"$dir.log" 2>&1
  expect_rc 2 $? "--run-dir under a file is a usage error"
  expect_grep "run-dir .*a-file/run: cannot create it" "$dir.log" "--run-dir under a file says so"
  mkdir -p "$scratch/read-only"
  if mount -t tmpfs -o ro,size=1m tmpfs "$scratch/read-only" 2>/dev/null; then
    "$lockstep" run -n 2 --run-dir "$scratch/read-only/run" -- "$trainer" >"$dir.log" 2>&1
    expect_rc 2 $? "--run-dir under a read-only parent is a usage error"
    expect_grep "read-only/run: cannot create it \(Read-only file system\)" "$dir.log" \
      "--run-dir under a read-only parent names the reason"
    umount "$scratch/read-only"
  fi
  # A run directory another user could tamper with: refused before anything
  # starts, with the reason and what to do.
  mkdir -p "$scratch/theirs" "$scratch/open"
  chmod 0777 "$scratch/open"
  if chown nobody "$scratch/theirs" 2>/dev/null; then
    run "$scratch/theirs" -n 2 -- "$trainer"
    expect_rc 2 $? "--run-dir owned by another user is a usage error"
    expect_grep "theirs is owned by (nobody \()?uid 65534\)?, not by this user" "$scratch/theirs.log" \
      "--run-dir owned by another user names the owner"
    if [ -z "$(ls -A "$scratch/theirs")" ]; then ok "nothing was written into it"
    else fail "the launcher wrote into another user's run directory: $(ls -A "$scratch/theirs")"; fi
  fi
  run "$scratch/open" -n 2 -- "$trainer"
  expect_rc 2 $? "--run-dir that every user may write to is a usage error"
  expect_grep "open may be written by every user \(mode 0777\).*give a directory that only you" \
    "$scratch/open.log" "--run-dir that every user may write to says so and what to do"
  run "$scratch/open/run" -n 2 -- "$trainer"
  expect_rc 2 $? "--run-dir in a directory every user may write to is a usage error"
  expect_grep "lies in .*/open, which every user may write to without the sticky bit" \
    "$scratch/open/run.log" "--run-dir in an open directory names it"
  if [ ! -e "$scratch/open/run" ]; then ok "the refused run directory was not left behind"
  else fail "the refused run directory $scratch/open/run was left behind"; fi
  LOCKSTEP_RUN_DIR="$scratch/open" "$trainer" --steps 1 >"$scratch/open-rank.log" 2>&1
  rank_rc=$?
  if [ "$rank_rc" -ne 0 ]; then ok "a rank started alone refuses such a run directory (exit $rank_rc)"
  else fail "a rank started alone trained in a run directory every user may write to"; fi
  expect_grep "the run directory .*open: .*every user.*set LOCKSTEP_RUN_DIR" \
    "$scratch/open-rank.log" "and says which setting to change"
  # Whatever the umask, no directory or report lockstep makes is writable
  # by every user (the toy trainer's own files are its business).
  (umask 000 && run "$scratch/umask" -n 2 -- "$trainer" --steps 3)
  expect_rc 0 $? "a run under umask 000 completes"
  open_entries=$(find "$scratch/umask" \( -type d -o -name '*.json*' \) -perm -o+w)
  if [ -z "$open_entries" ]; then ok "under umask 000 nothing lockstep made is writable by every user"
  else fail "writable by every user under umask 000: $open_entries"; fi
  mkdir -p "$scratch/hosts-dir"
  run "$dir" -n 2 --hostfile "$scratch/hosts-dir" -- "$trainer"
  expect_rc 2 $? "a hostfile that is a directory is a usage error"
  expect_grep "hostfile .*hosts-dir is a directory" "$dir.log" "a hostfile that is a directory says so"
  # Unknown commands and options are named, with a likely spelling.
  "$lockstep" frobnicate >"$dir.log" 2>&1
  expect_rc 2 $? "an unknown command is a usage error"
  expect_grep "unknown command 'frobnicate'" "$dir.log" "the unknown command is named"
  expect_grep "The commands are run, " "$dir.log" "the commands are listed"
  "$lockstep" rnu -n 2 >"$dir.log" 2>&1
  expect_grep "did you mean 'run'" "$dir.log" "a misspelt command gets a suggestion"
  run "$dir" -n 2 --hang-timout 5 -- "$trainer"
  expect_rc 2 $? "a misspelt option is a usage error"
  expect_grep "has no option '--hang-timout' \(did you mean --hang-timeout\?\)" "$dir.log" \
    "a misspelt option is named with its likely spelling"
  run "$dir" -n 2 --no-such-option -- "$trainer"
  if grep -qE -- "'-- |-- --no-such|: --$" "$dir.log"; then fail "the unknown option is reported with the -- separator"; else ok "the unknown option is reported without the -- separator"; fi
  # Numbers: NaN, infinities and overflows are refused for every option.
  for option in --hang-timeout --grace --status-interval; do
    for value in nan inf -inf 1e300 -1 abc; do
      run "$dir" -n 2 "$option" "$value" -- "$trainer"
      expect_rc 2 $? "$option $value is a usage error"
      expect_grep "$option: '$value' is not a number of seconds from" "$dir.log" "$option $value is named with the range"
    done
  done
  for option in -n --max-restarts --min-nodes --exclude-after --total-steps; do
    run "$dir" "$option" 99999999999999999999 -n 2 -- "$trainer"
    expect_rc 2 $? "$option 99999999999999999999 is a usage error"
    expect_grep "'99999999999999999999' is not a whole number from" "$dir.log" "$option overflow is named with the range"
  done
  run "$dir" -n 99999999999 -- "$trainer"
  expect_grep "--ranks: '99999999999' is not a whole number from 0 to" "$dir.log" "-n 99999999999 says what is accepted"
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
orphans)
  # The launcher killed with SIGKILL: mpirun gets its parent-death signal
  # and the ranks see the heartbeat channel close; nothing may train on.
  dir=$scratch/orphans
  start_job "$dir" -n 4 -- "$trainer" --steps 100000 --step-ms 50
  kill -KILL "$launcher"
  wait "$launcher" 2>/dev/null
  expect_all_gone_within "$dir" 8
  # The launcher and mpirun killed together: the ranks stop by themselves
  # when the channel to their launcher is gone.
  dir=$scratch/orphans-both
  start_job "$dir" -n 4 -- "$trainer" --steps 100000 --step-ms 50
  kill -KILL "$launcher" "$(pgrep -P "$launcher" | head -1)"
  wait "$launcher" 2>/dev/null
  expect_all_gone_within "$dir" 10
  ;;
rootcause)
  # mpirun killed from outside: the report blames mpirun, not the ranks
  # that lost their connection when it died; the run recovers.
  want=$(reference 60)
  dir=$scratch/rootcause
  LOCKSTEP_CHECKPOINT_EVERY=5 start_job "$dir" -n 4 -- "$trainer" --steps 60 --step-ms 40
  sleep 1
  mpirun_pid=$(pgrep -P "$launcher" | head -1)
  kill -KILL "$mpirun_pid"
  wait "$launcher"
  expect_rc 0 $? "a run whose mpirun was killed recovers"
  expect_grep "first failure: mpirun \(pid $mpirun_pid\) was killed by signal 9" "$dir.log" "mpirun is named as the first failure"
  expect_grep '"failed_process":"mpirun \(pid '"$mpirun_pid"'\)"' "$dir/attempts.jsonl" "attempts.jsonl names mpirun"
  if grep -q "lost its connection" "$dir.log"; then fail "a rank is blamed for mpirun's death"; else ok "no rank is blamed"; fi
  [ "$(cat "$dir/toy-result" 2>/dev/null)" = "$want" ] && ok "result equals the uninterrupted run" || fail "result differs"
  expect_no_survivors "$dir"
  ;;
flood)
  # A flood of idle strangers on the heartbeat port under a low descriptor
  # limit: capped, reported, and the restart still gets its pipes.
  want=$(reference 300)
  dir=$scratch/flood
  (
    ulimit -n 1024
    LOCKSTEP_CHECKPOINT_EVERY=5 exec "$lockstep" run --run-dir "$dir" -n 4 -- "$trainer" --steps 300 --step-ms 40
  ) >"$dir.log" 2>&1 &
  launcher=$!
  for _ in $(seq 150); do grep -q "starting at step" "$dir.log" 2>/dev/null && break; sleep 0.1; done
  rank=$(rank_pids "$dir" | head -1)
  port=$(tr '\0' '\n' <"/proc/$rank/environ" | sed -n 's/^LOCKSTEP_MONITOR_ADDRESS=.*://p')
  python3 - "$port" 1500 <<'PY' &
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(count):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
    except OSError:
        pass
time.sleep(60)
PY
  flood=$!
  sleep 2
  before=$(cpu_seconds "$launcher")
  sleep 2
  after=$(cpu_seconds "$launcher")
  awk -v a="$after" -v b="$before" 'BEGIN { exit !(a - b < 0.5) }' &&
    ok "the launcher does not spin under the flood ($before -> $after CPU s in 2 s)" ||
    fail "the launcher spins under the flood ($before -> $after CPU s in 2 s)"
  kill -KILL "$(rank_pids "$dir" | sed -n 3p)"
  wait "$launcher"
  expect_rc 0 $? "the run recovers from a killed rank during the flood"
  kill "$flood" 2>/dev/null
  wait "$flood" 2>/dev/null
  expect_grep "restarting the job" "$dir.log" "the job was restarted"
  if grep -q "Too many open files" "$dir.log"; then fail "the launcher ran out of descriptors"; else ok "the launcher kept descriptors for itself"; fi
  expect_grep "refused [0-9]+ connection\(s\) to the heartbeat port $port" "$dir.log" "refused connections are reported"
  expect_grep '"heartbeats_refused": [1-9][0-9]+' "$dir/summary.json" "summary.json counts them"
  [ "$(cat "$dir/toy-result" 2>/dev/null)" = "$want" ] && ok "result equals the uninterrupted run" || fail "result differs"
  expect_no_survivors "$dir"
  ;;
silent)
  # A program that never reports is not a quiet success.
  dir=$scratch/silent
  run "$dir" -n 2 -- /bin/true
  expect_rc 1 $? "a program that never reports does not end as a success"
  expect_grep "error: no rank of attempt 1 ever reported to the launcher" "$dir.log" "the unmonitored run is reported"
  expect_grep "allow-unmonitored" "$dir.log" "the error names the option that allows it"
  expect_grep '"monitored": false' "$dir/summary.json" "summary.json says it was not monitored"
  if grep -q "goodput: [0-9]" "$dir.log"; then fail "an unmonitored run reports a goodput"; else ok "no goodput is claimed"; fi
  dir=$scratch/silent-allowed
  run "$dir" -n 2 --allow-unmonitored -- /bin/true
  expect_rc 0 $? "with --allow-unmonitored it may end as a success"
  expect_grep "goodput: unknown" "$dir.log" "the goodput is said to be unknown"
  # Ranks told an address where no launcher listens stop within seconds,
  # and the launcher names them and the address, and does not restart.
  dir=$scratch/unreachable
  started=$SECONDS
  # The ranks are given port 1 of loopback, where nothing listens, in
  # place of the launcher's address.
  LOCKSTEP_LAUNCHER_CONNECT_TIMEOUT=1 run "$dir" -n 2 -- /usr/bin/env \
    LOCKSTEP_MONITOR_ADDRESS=127.0.0.1:1 "$trainer" --steps 50
  expect_rc 1 $? "ranks that cannot reach the launcher fail the run"
  expect_grep "2 rank\(s\) cannot reach the launcher" "$dir.log" "the launcher counts them"
  expect_grep "rank 0 on .* cannot reach the launcher at 127.0.0.1:1 \(Connection refused" "$dir.log" "each rank, its host, the address and why"
  expect_grep "rank 1 on .* cannot reach the launcher at 127.0.0.1:1 \(Connection refused" "$dir.log" "the other rank too, before either stopped"
  expect_grep "monitor-address" "$dir.log" "the option to set is named"
  took=$((SECONDS - started))
  if [ $took -lt 30 ]; then ok "it ends within seconds ($took s)"; else fail "it took $took s"; fi
  if [ "$(wc -l <"$dir/attempts.jsonl")" -eq 1 ]; then ok "no restart"; else fail "it restarted"; fi
  expect_grep '"unreachable"' "$dir/attempts.jsonl" "attempts.jsonl records them"
  # The run directory removed while the job runs: noticed, said, and the
  # attempts after it are still recorded.
  dir=$scratch/removed
  LOCKSTEP_CHECKPOINT_EVERY=5 start_job "$dir" -n 4 --inject-failure 1:40 -- "$trainer" --steps 60 --step-ms 60
  for _ in $(seq 100); do [ -s "$dir/toy-checkpoint" ] && break; sleep 0.1; done
  rm -rf "$dir"
  wait "$launcher"
  expect_rc 0 $? "the run completes"
  expect_grep "the run directory .*removed while the job ran" "$dir.log" "the removal is reported"
  expect_grep '"attempt":1' "$dir/attempts.jsonl" "attempts after the removal are recorded"
  [ -s "$dir/summary.json" ] && ok "summary.json is written" || fail "no summary.json"
  expect_no_survivors "$dir"
  ;;
*)
  echo "unknown case $case_name"; exit 2 ;;
esac
[ $failures -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
