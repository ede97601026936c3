#!/usr/bin/env bash
# The hosts harness (tests/support/hosts/) end to end: two hosts with their
# own hostname, address and /dev/shm; the agent runs commands in them; mpirun
# runs 4 ranks over them through the agent; a lost host fails like ssh to a
# dead machine; hosts-down leaves nothing. Then a test killed with SIGTERM,
# once after hosts-up and once during it, leaves nothing either.
#
# Usage: harness_test.sh <tests/support/hosts dir> <mpirun> <lockstep_smoke> <scratch dir>
# Exit 77 (skipped) when hosts cannot be made here (not root, no namespaces).
set -euo pipefail

# --- the victim: a test that makes hosts and is killed -------------------------
# harness_test.sh --victim <tests/support/hosts dir> <DIR>: runs hosts-up in
# DIR, touches DIR.ready, and waits to be killed. Its trap removes the hosts,
# as every test that makes hosts should.
if [ "${1:-}" = --victim ]; then
  harness=$2 dir=$3
  up_pid="" sleeper=""
  # shellcheck disable=SC2317 # the trap calls it
  cleanup() {
    # A hosts-up still running is stopped first (it removes what it made);
    # otherwise it would go on making hosts behind hosts-down's back.
    if [ -n "$up_pid" ]; then
      kill -TERM "$up_pid" 2>/dev/null || true
      wait "$up_pid" || true
    fi
    if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null || true; fi
    "$harness/hosts-down.sh" "$dir"
  }
  trap cleanup EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
  "$harness/hosts-up.sh" "$dir" 2 &
  up_pid=$!
  wait "$up_pid"
  up_pid=""
  touch "$dir.ready"
  sleep 600 &
  sleeper=$!
  wait "$sleeper"
  exit 0
fi

[ $# -eq 4 ] || {
  echo "usage: $0 <tests/support/hosts dir> <mpirun> <lockstep_smoke> <scratch dir>" >&2
  exit 2
}
harness=$(cd "$1" && pwd -P) mpirun=$2 smoke=$3 scratch=$4
# shellcheck source=SCRIPTDIR/../support/hosts/lib.sh
. "$harness/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: making hosts needs root"
  exit 77
fi
# A run that was killed (a timeout's SIGKILL) may have left its hosts.
for d in "$scratch"/hosts "$scratch"/victim-*; do
  if [ -d "$d" ]; then "$harness/hosts-down.sh" "$d" || true; fi
done
rm -rf "$scratch"
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd -P)
hosts=$scratch/hosts
failures=0

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
ok() { echo "ok:   $*"; }
check() { # check <what> <shell condition>
  if eval "$2"; then ok "$1"; else fail "$1"; fi
}
expect_eq() { # expect_eq <what> <wanted> <got>
  if [ "$2" = "$3" ]; then ok "$1: $3"; else fail "$1: wanted '$2', got '$3'"; fi
}
elapsed_since() { # elapsed_since <start from date +%s.%N>
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}

# Checks that nothing of slot X is left: no network namespace, link, mount,
# /etc/hosts block or registry file, and none of the given processes
# ("pid start-time" lines: holders, and processes started in the hosts).
expect_nothing_left() { # expect_nothing_left <what> <slot> <processes file>
  local what=$1 x=$2 pid start
  local -a left=()
  mapfile -t -O 0 left < <(
    ip netns list | grep -E "^lsh$x-node[0-9]+( |\$)" | sed 's/^/netns /'
    ip -o link show | grep -oE ": (lsh${x}n[0-9]+|lshbr$x)[@:]" | sed 's/^/link/'
    grep -E " /run/netns/lsh$x-node[0-9]+ " /proc/self/mountinfo | sed 's/^/mount: /'
    grep -E "^# BEGIN lockstep-hosts $x( noeol)?\$" /etc/hosts | sed 's/^/in \/etc\/hosts: /'
    if [ -e "$registry/slot-$x" ]; then echo "$registry/slot-$x"; fi
    while read -r pid start; do
      if holder_alive "$pid" "$start"; then echo "process $pid"; fi
    done <"$3"
  )
  if [ ${#left[@]} -eq 0 ]; then ok "$what: nothing left"; else
    fail "$what: left: $(printf '[%s] ' "${left[@]}")"
  fi
}

# The processes of the hosts in DIR: the holders, as "pid start-time" lines.
holders_of() { awk '{ print $5, $6 }' "$1/hosts.tsv"; }

# /etc/hosts as it was, for comparing after hosts-down; another harness
# running at the same time may have its own block in it meanwhile.
cp /etc/hosts "$scratch/etc-hosts.before"
own_name=$(hostname)
# IPv4 lookups only in the root namespace: a name that /etc/hosts has for
# IPv4 only would make `getent hosts` ask the machine's name server for IPv6.
address_of() { getent ahostsv4 "$1" | awk 'NR == 1 { print $1 }'; }
own_mapping=$(address_of "$own_name")

victim_pid=""
cleanup() {
  if [ -n "$victim_pid" ]; then
    kill -TERM "$victim_pid" 2>/dev/null || true
    wait "$victim_pid" 2>/dev/null || true
  fi
  for d in "$hosts" "$scratch"/victim-*; do
    if [ -d "$d" ]; then "$harness/hosts-down.sh" "$d" >/dev/null 2>&1 || true; fi
  done
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# --- up -----------------------------------------------------------------------
t0=$(date +%s.%N)
up_status=0
"$harness/hosts-up.sh" "$hosts" 2 >"$scratch/up.log" 2>&1 || up_status=$?
up_seconds=$(elapsed_since "$t0")
if [ "$up_status" -eq 77 ]; then
  echo "SKIP: $(cat "$scratch/up.log")"
  exit 77
fi
if [ "$up_status" -ne 0 ]; then
  sed 's/^/    | /' "$scratch/up.log"
  echo "FAIL: hosts-up failed ($up_status)"
  exit 1
fi
ok "hosts-up of 2 hosts in $up_seconds s"
# shellcheck source=/dev/null
. "$hosts/env.sh"
agent=$HOSTS_AGENT
slot=$HOSTS_SLOT
holders_of "$hosts" >"$scratch/processes.txt"
read -r addr1 addr2 <<<"$HOSTS_ADDRS"
expect_eq "host names" "node1 node2" "$HOSTS_NAMES"
expect_eq "the bridge's address" "10.77.$slot.1" "$HOSTS_BRIDGE_ADDR"
expect_eq "the hosts' addresses" "10.77.$slot.11 10.77.$slot.12" "$HOSTS_ADDRS"
expect_eq "Open MPI's agent" "$agent" "${OMPI_MCA_plm_rsh_agent:-}"
expect_eq "Open MPI's transports" "tcp,self" "${OMPI_MCA_btl:-}"
expect_eq "Open MPI's interfaces" "10.77.$slot.0/24 10.77.$slot.0/24" \
  "${OMPI_MCA_btl_tcp_if_include:-} ${OMPI_MCA_oob_tcp_if_include:-}"

# --- each host is a host ------------------------------------------------------
expect_eq "node1's hostname" node1 "$("$agent" node1 hostname)"
expect_eq "node2's hostname" node2 "$("$agent" node2 hostname)"
expect_eq "the root namespace's hostname" "$own_name" "$(hostname)"
# ssh options as Open MPI and users pass them are ignored.
# shellcheck disable=SC2016 # $(hostname) runs in node1
expect_eq "the agent with ssh options" "node1 a b" \
  "$("$agent" -x -T -o BatchMode=yes -p22 -l root root@node1 echo '$(hostname)' a b)"
expect_eq "node1's address" "$addr1/24" \
  "$("$agent" node1 ip -4 -o addr show dev eth0 | awk '{ print $4 }')"
expect_eq "node2's address" "$addr2/24" \
  "$("$agent" node2 ip -4 -o addr show dev eth0 | awk '{ print $4 }')"
expect_eq "node2 by name from node1" "$addr2" "$("$agent" node1 getent hosts node2 | awk '{ print $1 }')"
check "node1 and node2 in the root namespace's /etc/hosts" \
  "grep -qx '$addr1 node1' /etc/hosts && grep -qx '$addr2 node2' /etc/hosts"
# With another harness's hosts up, the first block in /etc/hosts wins.
if [ "$(grep -c '^# BEGIN lockstep-hosts ' /etc/hosts)" -eq 1 ]; then
  expect_eq "node1 by name in the root namespace" "$addr1" "$(address_of node1)"
fi
expect_eq "the machine's own name in node1 (unchanged)" "$own_mapping" \
  "$("$agent" node1 getent ahostsv4 "$own_name" | awk 'NR == 1 { print $1 }')"
expect_eq "the machine's own name in the root namespace (unchanged)" "$own_mapping" \
  "$(address_of "$own_name")"
# The hosts have no name server: an unknown name fails at once.
check "an unknown name fails at once in node1" \
  "! timeout 5 \"\$agent\" node1 getent hosts no-such-host.invalid"
# A TCP connection from node1 to node2's port 9, where nothing listens: a
# refusal is node2's kernel answering; silence is an unreachable host.
connect_from_node1() { "$agent" node1 "timeout 3 bash -c 'exec 3<>/dev/tcp/$1/9' 2>&1" || true; }
check "node1 reaches node2 over TCP (a refusal is an answer)" \
  "connect_from_node1 $addr2 | grep -q 'Connection refused'"
# Each host has its own /dev/shm.
probe=lockstep-hosts-probe-$$
"$agent" node1 "echo here >/dev/shm/$probe"
check "node1 sees its /dev/shm file" "\"\$agent\" node1 test -e /dev/shm/$probe"
check "node2 does not see node1's /dev/shm file" "! \"\$agent\" node2 test -e /dev/shm/$probe"
check "the root namespace does not see node1's /dev/shm file" "[ ! -e /dev/shm/$probe ]"
# A process left running in each host, as a daemon would be.
for h in node1 node2; do
  pid=$("$agent" "$h" 'sleep 600 </dev/null >/dev/null 2>&1 & echo $!')
  echo "$pid $(start_time_of "$pid")" >"$scratch/daemon-$h.txt"
  check "a process runs in $h" "holder_alive $pid '$(start_time_of "$pid")'"
done

# A second harness cannot take a subnet in use, and leaves nothing.
taken_status=0
"$harness/hosts-up.sh" "$scratch/taken" 1 --subnet "10.77.$slot" >"$scratch/taken.log" 2>&1 ||
  taken_status=$?
expect_eq "hosts-up on a subnet in use fails" 1 "$taken_status"
check "... and says why" "grep -q 'in use by the hosts of $hosts' '$scratch/taken.log'"
check "... and still owns no slot" "[ ! -e '$scratch/taken/slot' ]"
check "... and has left our hosts alone" "[ \"\$(\"\$agent\" node1 hostname)\" = node1 ]"

# --- MPI over the hosts -------------------------------------------------------
printf 'node1 slots=2\nnode2 slots=2\n' >"$scratch/hostfile"
mpi_flags=(--hostfile "$scratch/hostfile" -np 4 --oversubscribe)
if [ "$(id -u)" -eq 0 ]; then mpi_flags+=(--allow-run-as-root); fi
t0=$(date +%s.%N)
mpi_status=0
timeout 120 "$mpirun" "${mpi_flags[@]}" "$smoke" >"$scratch/mpirun.log" 2>&1 || mpi_status=$?
expect_eq "mpirun over node1 and node2 (in $(elapsed_since "$t0") s)" 0 "$mpi_status"
# "[2/4 node2] 12:00:01.123 info: host node2 node 1/2 ..." -> rank and host.
placement=$(sed -nE 's|^\[([0-9]+)/4 [^]]*\] .* info: host ([^ ]+) node .*|\1 \2|p' "$scratch/mpirun.log" |
  sort -n | awk '{ printf "%s%s", sep, $2; sep = "," }')
expect_eq "the ranks' hosts" "node1,node1,node2,node2" "$placement"
check "the all-reduce over 4 ranks" "grep -q 'all-reduce over 4 ranks: 10 (correct)' '$scratch/mpirun.log'"
if [ "$failures" -ne 0 ]; then sed 's/^/    | /' "$scratch/mpirun.log" | tail -30; fi

# --- losing a host ------------------------------------------------------------
t0=$(date +%s.%N)
check "hosts-lose node2" "'$harness/hosts-lose.sh' '$hosts' node2 >/dev/null"
lose_seconds=$(elapsed_since "$t0")
read -r pid start <"$scratch/daemon-node2.txt"
check "node2's process is gone" "! holder_alive $pid $start"
agent_status=0
"$agent" node2 true 2>"$scratch/agent-lost.err" || agent_status=$?
expect_eq "the agent for the lost node2 exits" 255 "$agent_status"
check "... saying it cannot enter node2" \
  "grep -q '^agent: cannot enter host node2: ' '$scratch/agent-lost.err'"
expect_eq "node1 lives on" node1 "$("$agent" node1 hostname)"
check "node2's address is gone for node1" "! connect_from_node1 $addr2 | grep -q 'Connection refused'"

# --- down ---------------------------------------------------------------------
cat "$scratch"/daemon-*.txt >>"$scratch/processes.txt"
t0=$(date +%s.%N)
down_status=0
"$harness/hosts-down.sh" "$hosts" >"$scratch/down.log" 2>&1 || down_status=$?
down_seconds=$(elapsed_since "$t0")
expect_eq "hosts-down (in $down_seconds s)" 0 "$down_status"
if [ "$down_status" -ne 0 ]; then sed 's/^/    | /' "$scratch/down.log"; fi
expect_nothing_left "after hosts-down" "$slot" "$scratch/processes.txt"
agent_status=0
"$agent" node1 true 2>/dev/null || agent_status=$?
expect_eq "the agent for node1 after hosts-down exits" 255 "$agent_status"
check "hosts-down again (idempotent)" "'$harness/hosts-down.sh' '$hosts' >/dev/null"
if cmp -s /etc/hosts "$scratch/etc-hosts.before"; then
  ok "/etc/hosts is as it was, byte for byte"
elif cmp -s <(without_any_hosts_block /etc/hosts) <(without_any_hosts_block "$scratch/etc-hosts.before"); then
  ok "/etc/hosts is as it was, apart from the blocks of harnesses running beside this one"
else
  fail "/etc/hosts differs from before: $(diff "$scratch/etc-hosts.before" /etc/hosts | tr '\n' ' ')"
fi

# --- a test killed with SIGTERM leaves nothing ---------------------------------
# after_up: killed while its hosts are up; during_up: killed while hosts-up
# is making them.
for when in after_up during_up; do
  victim=$scratch/victim-$when
  bash "$0" --victim "$harness" "$victim" >"$victim.log" 2>&1 &
  victim_pid=$!
  deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    if [ "$when" = after_up ]; then
      [ ! -e "$victim.ready" ] || break
    elif [ -s "$victim/slot" ] && ip netns list | grep -qE "^lsh$(cat "$victim/slot")-node1( |\$)"; then
      break
    fi
    kill -0 "$victim_pid" 2>/dev/null || break
    sleep 0.02
  done
  victim_slot=$(cat "$victim/slot" 2>/dev/null || true)
  if [ -e "$victim/env.sh" ]; then up_state="its hosts up"; else up_state="hosts-up part-way"; fi
  if [ -f "$victim/hosts.tsv" ]; then holders_of "$victim" >"$victim.processes"; else : >"$victim.processes"; fi
  kill -TERM "$victim_pid" 2>/dev/null || true
  victim_status=0
  wait "$victim_pid" || victim_status=$?
  victim_pid=""
  expect_eq "the test killed $when ($up_state) ends by SIGTERM" 143 "$victim_status"
  check "... its hosts-down found nothing surviving" "! grep -q 'still there' '$victim.log'"
  if [ -z "$victim_slot" ]; then
    fail "the test killed $when had no slot when killed"
    sed 's/^/    | /' "$victim.log"
  else
    expect_nothing_left "the test killed $when" "$victim_slot" "$victim.processes"
  fi
done

echo "timings: hosts-up ${up_seconds} s, hosts-lose ${lose_seconds} s, hosts-down ${down_seconds} s (2 hosts)"
if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
