#!/usr/bin/env bash
# `lockstep run --hostfile` from this machine's root namespace over two
# hosts made of namespaces (2 ranks each), with the machine's hostname left
# resolving to loopback as it does here:
# (1) the launcher advertises an address the hosts reach, heartbeats arrive,
#     and the final weights equal those of 4 ranks on one host;
# (2) a rank SIGKILLed on node2 is named with its host, the job restarts,
#     and the weights are again bit-identical;
# (3) an advertised address the hosts cannot reach: a clear error within
#     seconds naming the ranks, their hosts and the address; exit 1, no
#     restart, nothing reported as success;
# (4) a lost host in the host list: preflight names it with the rsh agent's
#     error within seconds, and mpirun is not started.
#
# Usage: launcher_test.sh <tests/support/hosts dir> <lockstep> <lockstep-mlp> <scratch dir>
# Exit 77 (skipped) when hosts cannot be made here (not root, no namespaces).
set -euo pipefail
harness=$(cd "$1" && pwd -P) lockstep=$2 mlp=$3 scratch=$4

# shellcheck source=SCRIPTDIR/common.sh
. "$(dirname "$0")/common.sh"
extra=""
# shellcheck disable=SC2317 # cleanup calls it
cleanup_more() {
  if [ -n "$extra" ]; then ip addr del "$extra/32" dev lo 2>/dev/null || true; fi
}

trainer=("$mlp" --steps 60 --hidden 64,64)
export LOCKSTEP_CHECKPOINT_EVERY=10

# The reference: 4 ranks on this host, before any host exists.
"$lockstep" run --no-slurm -n 4 --run-dir "$scratch/reference" -- "${trainer[@]}" \
  --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 ||
  fail "the reference run failed (see $scratch/reference.log)"

hosts_up 2
ok "hosts $HOSTS_NAMES up at $HOSTS_ADDRS (bridge $HOSTS_BRIDGE $HOSTS_BRIDGE_ADDR)"
loopback=$(getent ahostsv4 "$(hostname)" | awk 'NR == 1 { print $1 }')
case $loopback in
  127.*) ok "this machine's hostname resolves to loopback ($loopback), as users have it" ;;
  *) echo "note: this machine's hostname resolves to $loopback, not loopback" ;;
esac
printf 'node1 slots=2\nnode2 slots=2\n' >"$scratch/hostfile"

# --- (1) a clean run over two hosts ------------------------------------------
rc=0
"$lockstep" run --hostfile "$scratch/hostfile" -n 4 --run-dir "$scratch/clean" -- \
  "${trainer[@]}" --weights-out "$scratch/clean.bin" >"$scratch/clean.log" 2>&1 || rc=$?
expect_rc 0 "$rc" "the run over two hosts completes"
expect_grep "ranks report to $HOSTS_BRIDGE_ADDR:[0-9]+ \(the address of interface $HOSTS_BRIDGE that routes to node[12]" \
  "$scratch/clean.log" "the launcher advertises the bridge address, and says why"
steps=$(summary_field "$scratch/clean/summary.json" 's["steps_completed"]')
monitored=$(summary_field "$scratch/clean/summary.json" 's["monitored"]')
if [ "$steps" = 60 ] && [ "$monitored" = True ]; then ok "heartbeats arrived: 60 steps, monitored"; else
  fail "summary.json: steps_completed=$steps monitored=$monitored"
fi
expect_grep "goodput: [0-9.]+% of" "$scratch/clean.log" "a goodput is reported"
expect_same_file "$scratch/reference.bin" "$scratch/clean.bin" "final weights equal 4 ranks on one host"

# --- (2) a rank killed on node2 ----------------------------------------------
# Slowed (sleeps do not change the arithmetic): unslowed, 60 steps can end
# before the launcher hears of step 35 and strikes.
rc=0
"$lockstep" run --hostfile "$scratch/hostfile" -n 4 --run-dir "$scratch/killed" \
  --inject-failure 2:35 -- "${trainer[@]}" --step-ms 30 --weights-out "$scratch/killed.bin" \
  >"$scratch/killed.log" 2>&1 || rc=$?
expect_rc 0 "$rc" "the run with a rank killed on node2 recovers"
expect_grep "first failure: rank 2 on node2 killed by signal 9" "$scratch/killed.log" \
  "the killed rank and its host are named"
expect_same_file "$scratch/reference.bin" "$scratch/killed.bin" \
  "final weights after the restart equal the uninterrupted run's"

# --- (3) an address the hosts cannot reach -----------------------------------
# An address of this machine outside the hosts' subnet (on lo, not a
# loopback address), with the hosts' route to anything outside their subnet
# taken away: the ranks get "Network is unreachable" while mpirun's own
# traffic stays on the subnet.
extra=10.78.$HOSTS_SLOT.1
ip addr add "$extra/32" dev lo
for host in $HOSTS_NAMES; do "$HOSTS_AGENT" "$host" ip route del default; done
started=$SECONDS rc=0
LOCKSTEP_LAUNCHER_CONNECT_TIMEOUT=3 "$lockstep" run --hostfile "$scratch/hostfile" -n 4 \
  --run-dir "$scratch/unreachable" --monitor-address "10.78.$HOSTS_SLOT.1" -- \
  "${trainer[@]}" >"$scratch/unreachable.log" 2>&1 || rc=$?
expect_rc 1 "$rc" "ranks that cannot reach the launcher fail the run"
took=$((SECONDS - started))
if [ $took -lt 40 ]; then ok "the error comes within seconds ($took s)"; else fail "it took $took s"; fi
expect_grep "4 rank\(s\) cannot reach the launcher at 10\.78\.$HOSTS_SLOT\.1:[0-9]+" \
  "$scratch/unreachable.log" "the launcher counts every rank and names the address"
named=$(grep -oE "rank [0-9] on node[12] cannot reach the launcher" "$scratch/unreachable.log" |
  sort -u | wc -l)
check "each of the 4 ranks said so before any stopped ($named)" "[ '$named' = 4 ]"
expect_grep "rank [0-9] on node[12] cannot reach the launcher at 10\.78\.$HOSTS_SLOT\.1:[0-9]+ \(Network is unreachable" \
  "$scratch/unreachable.log" "each rank is named with its host and the reason"
expect_grep "monitor-address" "$scratch/unreachable.log" "the option to set is named"
attempts=$(wc -l <"$scratch/unreachable/attempts.jsonl")
if [ "$attempts" -eq 1 ]; then ok "no restart"; else fail "$attempts attempts"; fi
expect_no_grep "goodput: [0-9]" "$scratch/unreachable.log" "nothing is reported as success"

# --- (4) a host that cannot be entered: preflight names it -----------------
# With --min-nodes 2 the run cannot go on without it; the loss tests in
# host_loss_test.sh go on without it.
"$harness/hosts-lose.sh" "$dir" node2 >/dev/null 2>&1
started=$SECONDS rc=0
"$lockstep" run --hostfile "$scratch/hostfile" -n 4 --min-nodes 2 --run-dir "$scratch/lost" -- \
  "${trainer[@]}" >"$scratch/lost.log" 2>&1 || rc=$?
expect_rc 1 "$rc" "a host list with a lost host and --min-nodes 2 does not start"
took=$((SECONDS - started))
if [ $took -lt 15 ]; then ok "preflight answers within seconds ($took s)"; else fail "it took $took s"; fi
expect_grep "preflight: host node2 cannot be entered with .*agent: cannot enter host node2" \
  "$scratch/lost.log" "the lost host is named with the agent's own error"
expect_grep "1 host\(s\) remain \(node1\), fewer than --min-nodes 2" "$scratch/lost.log" \
  "the launcher says what is left and what to do"
expect_no_grep "^\[mpirun\]" "$scratch/lost.log" "mpirun was not started"
expect_grep '"outcome": "preflight"' "$scratch/lost/summary.json" "summary.json says why"
left=$(summary_field "$scratch/lost/summary.json" '",".join(h["host"] for h in s["hosts_left_out"])')
check "summary.json lists node2 as left out (got '$left')" "[ '$left' = node2 ]"

finish_hosts
