#!/usr/bin/env bash
# The local Slurm cluster end to end: start it, run the smoke program on two
# nodes through sbatch and through srun with PMIx, stop it, and check that no
# daemon, job step or task survives.
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

# --- stop -----------------------------------------------------------------------
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

if [ "$failures" -eq 0 ]; then
  echo "PASS"
else
  echo "$failures check(s) failed; daemon logs in $cluster/log"
  exit 1
fi
