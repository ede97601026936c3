#!/usr/bin/env bash
# A node lost as a machine dies, on a local cluster of three namespace hosts:
# node2 and node3 are lost at the same moment (tests/support/hosts/hosts-lose.sh:
# every process on them, slurmd too, is killed and their links go down)
# while two jobs run:
# - job A, `sbatch --no-kill` on n1,n2: Slurm ends the step that spans n2
#   once it marks n2 DOWN, but the job lives on; its batch script (on n1)
#   starts a new step on n1 (srun -N1 --exclude=n2) and the job completes;
# - job B, plain `sbatch --no-requeue` on n1,n3: Slurm cancels the job for
#   the node failure (NODE_FAIL).
# It prints how long Slurm took to see the nodes NOT_RESPONDING and DOWN.
# Usage: node_loss_test.sh <local-cluster dir> <scratch dir>
# Exit 77 (skipped) when not root, or when the cluster's nodes cannot be
# separate hosts here (its one-host layout cannot lose a node alone).
set -euo pipefail
[ $# -eq 2 ] || {
  echo "usage: $0 <local-cluster dir> <scratch dir>" >&2
  exit 2
}
scripts=$1 scratch=$2
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
hosts_scripts=$(cd "$scripts/../../tests/support/hosts" && pwd)

export LOCAL_CLUSTER_NODES=3
start_cluster
if [ "$LOCAL_CLUSTER_LAYOUT" != hosts ]; then
  echo "SKIP: the cluster's nodes are not separate hosts here: $(cat "$cluster/log/hosts-up.log" 2>/dev/null)"
  stop_cluster_and_check >/dev/null
  exit 77
fi
ok "cluster started: ${LOCAL_CLUSTER_NODE_NAMES} on ${LOCAL_CLUSTER_HOST_NAMES}"

# Each job's first step runs one task per node until the node is lost; then
# the batch script carries on.
# shellcheck disable=SC2016 # expanded by the job
cat >"$scratch/no-kill.sh" <<'EOF'
#!/bin/bash
echo "batch script on $(hostname) ($SLURMD_NODENAME), allocation $SLURM_JOB_NODELIST"
srun -N2 --ntasks-per-node=1 sh -c 'touch "$0/step-on-$SLURMD_NODENAME"; exec sleep 300' "$1"
echo "first step ended (exit $?)"
srun -N1 --exclude=n2 sh -c 'echo "second step on $SLURMD_NODENAME $(hostname)"'
echo "second step ended (exit $?)"
EOF
mkdir -p "$scratch/a" "$scratch/b"
sbatch --parsable --no-kill -N2 -w n1,n2 -o "$scratch/a.out" "$scratch/no-kill.sh" "$scratch/a" \
  >"$scratch/sbatch-a.log"
sbatch --parsable --no-requeue -N2 -w n1,n3 -o "$scratch/b.out" "$scratch/no-kill.sh" "$scratch/b" \
  >"$scratch/sbatch-b.log"
job_a=$(job_id_in "$scratch/sbatch-a.log")
job_b=$(job_id_in "$scratch/sbatch-b.log")

# Both first steps run on both of their nodes.
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
  [ "$(find "$scratch/a" "$scratch/b" -name 'step-on-*' | wc -l)" -eq 4 ] && break
  sleep 0.5
done
check "both jobs' first steps run on both nodes" \
  "[ \$(find '$scratch/a' '$scratch/b' -name 'step-on-*' | wc -l) -eq 4 ]"

node_state() { sinfo -h -N -n "$1" -o %t 2>/dev/null || true; }
lost_at=$SECONDS
"$hosts_scripts/hosts-lose.sh" "$LOCAL_CLUSTER_HOSTS_DIR" node2 >/dev/null &
"$hosts_scripts/hosts-lose.sh" "$LOCAL_CLUSTER_HOSTS_DIR" node3 >/dev/null &
wait
ok "node2 and node3 lost"
check "the agent cannot enter node2 any more" "! '$cluster/hosts/agent' node2 true 2>/dev/null"

# How long Slurm takes: NOT_RESPONDING (state with '*') and then DOWN.
not_responding="" down="" deadline=$((SECONDS + 90))
while [ $SECONDS -lt $deadline ]; do
  state=$(node_state n2)
  [ -n "$not_responding" ] || [[ $state != *'*' ]] || not_responding=$((SECONDS - lost_at))
  if [[ $state == down* ]]; then
    down=$((SECONDS - lost_at))
    break
  fi
  sleep 0.5
done
echo "n2 NOT_RESPONDING after ${not_responding:-?} s, DOWN after ${down:-?} s" \
  "(SlurmdTimeout=$(sed -n 's/^SlurmdTimeout=//p' "$cluster/slurm.conf"))"
check "slurmctld marks n2 DOWN within 90 s (after ${down:-never} s)" "[ -n '$down' ]"

state_a=$(wait_for_job "$job_a" 90)
state_b=$(wait_for_job "$job_b" 30)
touch "$scratch/a.out" "$scratch/b.out"
check "the --no-kill job completes (state $state_a)" "[ '$state_a' = COMPLETED ]"
expect_grep "^batch script on node1 \(n1\)" "$scratch/a.out" "its batch script ran on node1"
expect_grep "Node failure on n2" "$scratch/a.out" "srun reports the node failure"
expect_grep "^first step ended" "$scratch/a.out" "the step across the lost node ended"
expect_grep "^second step on n1 node1$" "$scratch/a.out" "a new step ran on n1 after the loss"
expect_grep "^second step ended \(exit 0\)" "$scratch/a.out" "the new step succeeded"
check "the --no-kill job was not requeued (Restarts=$(job_field "$job_a" Restarts))" \
  "[ '$(job_field "$job_a" Restarts)' = 0 ]"
check "the job without --no-kill ends for the node failure (state $state_b)" \
  "[ '$state_b' = NODE_FAIL ]"
if grep -q "^second step" "$scratch/b.out"; then
  fail "the job without --no-kill started another step"
else
  ok "the job without --no-kill started no other step"
fi
check "n1 stays up ($(node_state n1))" "[[ '$(node_state n1)' == idle* || '$(node_state n1)' == mix* ]]"

stop_cluster_and_check
finish
