#!/usr/bin/env bash
# Hosts lost under `lockstep run --hostfile`, on five hosts made of
# namespaces (2 ranks per host, 4 ranks per run):
# (1) a rank stuck outside a collective on node2, over TCP only (no MPI
#     one-sided communication): the launcher names it from the heartbeats;
# (2) node2 lost mid-run (its processes killed, its link down) with a spare
#     in the list: "host node2 lost" within seconds, the spare takes its
#     place, and the weights equal an uninterrupted run's;
# (3) a lost host in the list before the start, with a spare: preflight
#     names it and the run goes on with the spare;
# (4) node3 lost without a spare: the run goes on at 2 ranks from the
#     newest checkpoint and finishes;
# (5) node4 cut off (its link down, its processes alive) with a 2 s host
#     timeout: found by the ranks' silence, replaced by a spare,
#     bit-identical weights.
#
# Usage: host_loss_test.sh <tests/support/hosts dir> <lockstep> <lockstep-mlp> <watchdog_skip> <scratch dir>
# Exit 77 (skipped) when hosts cannot be made here (not root, no namespaces).
set -euo pipefail
harness=$(cd "$1" && pwd -P) lockstep=$2 mlp=$3 skip=$4 scratch=$5
# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "$0")/common.sh"

export LOCKSTEP_CHECKPOINT_EVERY=10
trainer=("$mlp" --steps 120 --hidden 64,64)
# Slowed so that a host can be lost mid-run (sleeps do not change the
# arithmetic).
slow=(--step-ms 80)

"$lockstep" run --no-slurm -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 ||
  fail "the reference run failed (see $scratch/reference.log)"

hosts_up 5
ok "hosts $HOSTS_NAMES up"
hostfile() { # hostfile NAME HOST... : a hostfile with 2 slots per host
  local name=$1 host
  shift
  for host in "$@"; do echo "$host slots=2"; done >"$scratch/$name.hosts"
  echo "$scratch/$name.hosts"
}
# Starts a run in the background: start_run NAME HOSTFILE [lockstep options]
start_run() {
  local name=$1 hosts=$2
  shift 2
  "$lockstep" run --hostfile "$hosts" -n 4 --run-dir "$scratch/$name" "$@" -- "${trainer[@]}" \
    "${slow[@]}" --weights-out "$scratch/$name.bin" >"$scratch/$name.log" 2>&1 &
  run_pid=$!
}
wait_for_checkpoint() { # wait_for_checkpoint NAME STEP: true once it is committed
  local deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    [ -d "$scratch/$1/checkpoints/step-$2" ] && return 0
    kill -0 "$run_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
# Seconds (one decimal) from now until PATTERN is in FILE, at most 60.
seconds_until() { # seconds_until PATTERN FILE
  local start=$EPOCHREALTIME deadline=$((SECONDS + 60))
  until grep -qE -- "$1" "$2" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo never; return; }
    sleep 0.1
  done
  awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}
finish_run() { # finish_run: waits for the background run; its status in rc
  rc=0
  wait "$run_pid" || rc=$?
}
within() { awk -v t="$1" -v limit="$2" 'BEGIN { exit !(t != "never" && t + 0 <= limit) }'; }
# Once NAME's checkpoint of step 39 is committed, runs COMMAND... (a loss)
# and expects "host HOST lost" as the root cause within LIMIT seconds.
strike() { # strike NAME HOST LIMIT COMMAND...
  local name=$1 host=$2 limit=$3 took
  shift 3
  if ! wait_for_checkpoint "$name" 39; then
    fail "the $name run reached no checkpoint of step 39"
    return
  fi
  "$@" >/dev/null
  took=$(seconds_until "first failure: host $host lost" "$scratch/$name.log")
  if within "$took" "$limit"; then ok "$host's loss is the root cause within seconds ($took s)"; else
    fail "no 'host $host lost' within $limit s ($took)"
  fi
}

# --- (1) a rank that never enters a collective, over TCP only -------------
rc=0
LOCKSTEP_COLLECTIVE_TIMEOUT=2 "$lockstep" run --hostfile "$(hostfile stuck node1 node4)" -n 4 \
  --max-restarts 0 --run-dir "$scratch/stuck" -- "$skip" skip 3 >"$scratch/stuck.log" 2>&1 || rc=$?
expect_rc 1 "$rc" "a job whose rank 3 skips a collective fails"
expect_grep "no MPI one-sided communication on this network" "$scratch/stuck.log" \
  "the ranks have no one-sided MPI here (TCP only)"
expect_grep "first failure: rank 3 on node4 never entered allreduce \(4096 bytes, f32, sum\) #3 \(its last was #2\); ranks 0, 1, 2 wait in it" \
  "$scratch/stuck.log" "the launcher names the stuck rank, its host and the collective"

# --- (2) a lost host, with a spare -----------------------------------------
start_run spare "$(hostfile spare node1 node2 node3)"
strike spare node2 15 "$harness/hosts-lose.sh" "$dir" node2
finish_run
expect_rc 0 "$rc" "the run with a spare completes"
expect_grep "take the spare host node3 in its place: 4 ranks on 2 host\(s\) \(node1,node3\), the same world size" \
  "$scratch/spare.log" "the spare takes node2's place"
expect_same_file "$scratch/reference.bin" "$scratch/spare.bin" \
  "final weights equal an uninterrupted run's"
left=$(summary_field "$scratch/spare/summary.json" '",".join(h["host"] for h in s["hosts_left_out"])')
check "summary.json lists node2 as left out (got '$left')" "[ '$left' = node2 ]"
second=$(sed -n 2p "$scratch/spare/attempts.jsonl" | python3 -c 'import json,sys; print(",".join(json.load(sys.stdin).get("hosts", [])))' 2>/dev/null || true)
check "the second attempt ran on node1,node3 (got '$second')" "[ '$second' = node1,node3 ]"

# --- (3) a lost host before the start, with a spare ------------------------
rc=0
"$lockstep" run --hostfile "$(hostfile preflight node1 node2 node5)" -n 4 \
  --run-dir "$scratch/preflight" -- "${trainer[@]}" --weights-out "$scratch/preflight.bin" \
  >"$scratch/preflight.log" 2>&1 || rc=$?
expect_rc 0 "$rc" "a list with a lost host and a spare runs"
expect_grep "preflight: host node2 cannot be entered with .*agent: cannot enter host node2" \
  "$scratch/preflight.log" "preflight names the lost host"
expect_grep "take the spare host node5 in its place" "$scratch/preflight.log" \
  "the spare is used from the first attempt"
expect_same_file "$scratch/reference.bin" "$scratch/preflight.bin" "weights as on one host"

# --- (4) a lost host, without a spare --------------------------------------
start_run shrink "$(hostfile shrink node1 node3)"
strike shrink node3 15 "$harness/hosts-lose.sh" "$dir" node3
finish_run
expect_rc 0 "$rc" "the run without a spare completes"
expect_grep "first failure: host node3 lost" "$scratch/shrink.log" "node3's loss is the root cause"
expect_grep "run 2 ranks on 1 host\(s\) \(node1\); no spare host is left" "$scratch/shrink.log" \
  "the launcher says it goes on smaller"
expect_grep "mlp: .* 2 ranks x 128 samples, steps ([4-9][0-9]|1[01][0-9])\.\.120" "$scratch/shrink.log" \
  "the last attempt resumed on 2 ranks from a checkpoint"
expect_grep "mlp: finished 120 steps" "$scratch/shrink.log" "the run finished"

# --- (5) a host cut off, found by silence ----------------------------------
start_run cut "$(hostfile cut node1 node4 node5)" --host-timeout 2
strike cut node4 10 ip link set "$(awk '$1 == "node4" { print $4 }' "$dir/hosts.tsv")" down
finish_run
expect_rc 0 "$rc" "the run with a host cut off completes"
expect_grep "host node4 lost: no message from its 2 ranks \([0-9], [0-9]\) for [0-9.]+ s, and it cannot be entered" \
  "$scratch/cut.log" "the ranks' silence found it"
expect_same_file "$scratch/reference.bin" "$scratch/cut.bin" "final weights equal an uninterrupted run's"

finish_hosts
