#!/usr/bin/env bash
# The local Slurm cluster end to end: start it, check that its nodes are
# separate hosts (hostname, address, /dev/shm), run the smoke program on two
# nodes through sbatch and through srun with PMIx, stop it, and check that no
# daemon, job step, task, namespace, link or /etc/hosts line survives.
# Usage: local_cluster_test.sh <slurm/local-cluster dir> <lockstep_smoke binary> <scratch dir>
# Exit 77 (skipped) when not root: the cluster's daemons need root (common.sh).
set -euo pipefail
[ $# -eq 3 ] || {
  echo "usage: $0 <local-cluster dir> <lockstep_smoke> <scratch dir>" >&2
  exit 2
}
scripts=$1 smoke=$2 scratch=$3
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
expect_fixed() { # expect_fixed <fixed string> <file> <what>
  if grep -qF -- "$1" "$2"; then ok "$3"; else
    fail "$3: '$1' not in $2"
    sed 's/^/    | /' "$2" | tail -40
  fi
}
expect_count() { # expect_count <n> <fixed string> <file> <what>
  local got
  got=$(grep -cF -- "$2" "$3" || true)
  if [ "$got" -eq "$1" ]; then ok "$4"; else
    fail "$4: '$2' $got times in $3, wanted $1"
    sed 's/^/    | /' "$3" | tail -40
  fi
}

# Slurm processes that are not zombies, as "pid name" lines; the ones present
# before the test (some other cluster) are not the test's business.
slurm_processes() {
  local p stat name rest
  for p in /proc/[0-9]*; do
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    name=${stat#*(}
    name=${name%%)*}
    rest=${stat##*) }
    [ "${rest%% *}" != Z ] || continue
    case $name in slurmctld | slurmd | slurmstepd | slurmscriptd) echo "${p#/proc/} $name" ;; esac
  done | sort
}
slurm_processes >"$scratch/before.txt"

# Whatever happens, the daemons go.
stopped=0
cleanup() {
  if [ "$stopped" -eq 0 ]; then
    "$scripts/stop.sh" "$cluster" || true
  fi
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# --- start --------------------------------------------------------------------
if ! "$scripts/start.sh" "$cluster" >"$scratch/start.log" 2>&1; then
  sed 's/^/    | /' "$scratch/start.log"
  echo "FAIL: start.sh failed"
  exit 1
fi
ok "cluster started"
# Variables of an enclosing Slurm job (a test run inside an allocation of some
# other cluster) would point srun and sbatch at that job.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^SLURM_' || true)
# shellcheck source=/dev/null
. "$cluster/env.sh"
if [ "$(sinfo -h -N -o '%N %t' | sort -u | tr '\n' ' ')" = "n1 idle n2 idle " ]; then
  ok "sinfo shows n1 and n2 idle"
else
  fail "nodes not idle: $(sinfo -N 2>&1)"
fi

# Checks on the output of one run: tasks 0,1 on n1 and 2,3 on n2 (the slurmd
# each task ran under), and four smoke ranks whose runtime found two nodes.
check_run() { # check_run <output file> <what>
  local out=$1 what=$2 t
  for t in "0 on n1 node 0" "1 on n1 node 0" "2 on n2 node 1" "3 on n2 node 1"; do
    expect_fixed "task $t" "$out" "$what: task $t"
  done
  for t in 0 1 2 3; do expect_fixed "[$t/4 " "$out" "$what: smoke rank $t/4 ran"; done
  expect_count 2 "node 0/2 local rank" "$out" "$what: runtime sees two ranks on node 0 of 2"
  expect_count 2 "node 1/2 local rank" "$out" "$what: runtime sees two ranks on node 1 of 2"
  expect_fixed "all-reduce over 4 ranks: 10 (correct)" "$out" "$what: all-reduce across both nodes"
  expect_fixed "smoke run finished on 4 ranks" "$out" "$what: smoke run finished"
}
# shellcheck disable=SC2016 # expanded by the tasks
task_line='echo "task $SLURM_PROCID on $SLURMD_NODENAME node $SLURM_NODEID"'

# --- case 1: sbatch --wait of a batch script with two job steps ----------------
cat >"$scratch/job.sh" <<EOF
#!/bin/bash
set -e
srun --mpi=pmix sh -c '$task_line'
srun --mpi=pmix '$smoke' --steps 4
EOF
set +e
timeout 150 sbatch --wait -N2 --ntasks-per-node=2 --overcommit -J lockstep-smoke \
  -o "$scratch/job.out" "$scratch/job.sh" >"$scratch/sbatch.log" 2>&1
rc=$?
set -e
cat "$scratch/sbatch.log"
if [ "$rc" -eq 0 ]; then ok "sbatch --wait: job completed (exit 0)"; else
  fail "sbatch --wait: exit $rc"
fi
touch "$scratch/job.out"
check_run "$scratch/job.out" "sbatch"
job=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' "$scratch/sbatch.log")
if [ -n "$job" ]; then
  scontrol show job "$job" >"$scratch/job.info" 2>&1 || true
  expect_fixed "JobState=COMPLETED" "$scratch/job.info" "sbatch: controller records the job COMPLETED"
  expect_fixed "NodeList=n[1-2]" "$scratch/job.info" "sbatch: job ran on n1 and n2"
fi

# --- case 2: srun straight from here (it makes its own allocation) -------------
set +e
{
  timeout 120 srun -N2 --ntasks-per-node=2 --overcommit --mpi=pmix sh -c "$task_line" &&
    timeout 120 srun -N2 --ntasks-per-node=2 --overcommit --mpi=pmix "$smoke" --steps 4
} >"$scratch/srun.out" 2>&1
rc=$?
set -e
if [ "$rc" -eq 0 ]; then ok "srun --mpi=pmix without an allocation (exit 0)"; else
  fail "srun --mpi=pmix: exit $rc"
fi
check_run "$scratch/srun.out" "srun"

# --- case 3: each node is a host of its own ---------------------------------------
# Its own hostname and address (n1 on node1, n2 on node2), and its own
# /dev/shm: a file one node's task leaves there is not seen on the other node
# nor on this machine. A first step leaves the files, a second one looks.
if [ "$LOCAL_CLUSTER_LAYOUT" != hosts ]; then
  echo "skip: the nodes are not separate hosts here (one-host layout): $(head -c 300 "$cluster/log/hosts-up.log" 2>/dev/null)"
else
  read -ra host_names <<<"$LOCAL_CLUSTER_HOST_NAMES"
  read -ra host_addrs <<<"$LOCAL_CLUSTER_HOST_ADDRS"
  mark=lc-test-$$
  # shellcheck disable=SC2016 # expanded by the tasks
  leave='echo "id $SLURMD_NODENAME $(hostname) $(hostname -I)"; touch "/dev/shm/$0-$SLURMD_NODENAME"'
  # shellcheck disable=SC2016 # expanded by the tasks
  look='echo "shm $SLURMD_NODENAME:" /dev/shm/"$0"-*'
  rc=0
  { timeout 60 srun -N2 --ntasks-per-node=1 sh -c "$leave" "$mark" &&
    timeout 60 srun -N2 --ntasks-per-node=1 sh -c "$look" "$mark"; } >"$scratch/hosts.out" 2>&1 || rc=$?
  check "srun on both hosts (exit $rc)" "[ $rc -eq 0 ]"
  for i in 0 1; do
    expect_grep "^id n$((i + 1)) ${host_names[$i]} ${host_addrs[$i]} *\$" "$scratch/hosts.out" \
      "task on n$((i + 1)) runs on host ${host_names[$i]} with address ${host_addrs[$i]}"
  done
  names=$(awk '$1 == "id" { print $3 }' "$scratch/hosts.out" | sort -u | tr '\n' ' ')
  check "the two nodes' tasks see different hostnames ($names)" "[ \$(wc -w <<<'$names') -eq 2 ]"
  check "no task's hostname is this machine's ($(hostname))" "[[ ' $names' != *' $(hostname) '* ]]"
  expect_fixed "shm n1: /dev/shm/$mark-n1" "$scratch/hosts.out" "n1 sees only its own file in /dev/shm"
  expect_fixed "shm n2: /dev/shm/$mark-n2" "$scratch/hosts.out" "n2 sees only its own file in /dev/shm"
  check "this machine's /dev/shm has neither node's file" "! compgen -G '/dev/shm/$mark-*' >/dev/null"
fi

# --- stop -----------------------------------------------------------------------
slot=$(cat "${LOCAL_CLUSTER_HOSTS_DIR:-/nonexistent}/slot" 2>/dev/null || true)
stopped=1
if "$scripts/stop.sh" "$cluster" >"$scratch/stop.log" 2>&1; then ok "stop.sh"; else
  fail "stop.sh failed"
fi
sed 's/^/    | /' "$scratch/stop.log"
slurm_processes >"$scratch/after.txt"
left=$(comm -13 "$scratch/before.txt" "$scratch/after.txt")
if [ -z "$left" ]; then ok "no slurmctld, slurmd or slurmstepd survives"; else
  fail "Slurm processes survive: $left"
fi
if pgrep -af -- "$cluster/slurm.conf"; then fail "a daemon of $cluster survives"; else
  ok "no process started with $cluster/slurm.conf survives"
fi
tasks=""
for p in /proc/[0-9]*; do
  { mapfile -d '' -t args <"$p/cmdline"; } 2>/dev/null || continue
  if [ "${args[0]:-}" = "$smoke" ]; then tasks+=" ${p#/proc/}"; fi
done
if [ -z "$tasks" ]; then ok "no smoke task survives"; else fail "smoke tasks survive:$tasks"; fi
if [ -n "$slot" ]; then
  # What tests/support/hosts/ names slot X's kernel objects and its block.
  left=$({
    ip netns list 2>/dev/null | grep -E "^lsh$slot-node" || true
    ip -o link show 2>/dev/null | grep -E ": lsh(br)?$slot(n[0-9]+)?[:@]" || true
    grep -E "^# BEGIN lockstep-hosts $slot( |\$)" /etc/hosts || true
  })
  if [ -z "$left" ]; then ok "the hosts are gone: no namespace, link or /etc/hosts block of slot $slot"; else
    fail "the hosts of slot $slot survive: $left"
  fi
fi

if [ "$failures" -eq 0 ]; then
  echo "PASS"
else
  echo "$failures check(s) failed; daemon logs in $cluster/log"
  exit 1
fi
