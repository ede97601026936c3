#!/usr/bin/env bash
# `lockstep run` in slurm/train.sbatch on three nodes, each a namespace host,
# with 4 ranks of 2 per node: one node is a spare. The memory tier is on, in
# each host's own /dev/shm, with every second save on disk, and Adam's state
# is sharded (ZeRO-1). Mid-run the host
# of a node with ranks dies (tests/support/hosts/hosts-lose.sh: every
# process, slurmd too, killed, its link down, its /dev/shm gone). The
# launcher names the lost node within seconds, leaves it out, takes the
# spare in its place inside the same allocation (the template's --no-kill
# keeps it alive); the ranks on the spare get their files from the partner
# copies on the node before, and the run finishes with weights
# bit-identical to a 4-rank run without Slurm. Then a job on the two nodes
# left loses one of them and, without a spare, finishes on 2 ranks from the
# copies in the memory of the node left.
# Usage: lost_node_run_test.sh <local-cluster dir> <slurm dir> <lockstep> <lockstep-mlp> <scratch dir>
# Exit 77 (skipped) when not root, or when the cluster's nodes cannot be
# separate hosts here.
set -euo pipefail
scripts=$1 templates=$2 lockstep=$3 mlp=$4 scratch=$5
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
hosts_scripts=$(cd "$scripts/../../tests/support/hosts" && pwd)

trainer=(lockstep-mlp --steps 120 --hidden 64,64)
export LOCKSTEP_CHECKPOINT_EVERY=10
launcher_path="$(dirname "$lockstep"):$(dirname "$mlp"):$PATH"
PATH=$launcher_path lockstep run --no-slurm -n 4 --run-dir "$scratch/reference" -- \
  "${trainer[@]}" --weights-out "$scratch/reference.bin" >"$scratch/reference.log" 2>&1 ||
  { fail "reference run"; tail -20 "$scratch/reference.log"; }

export LOCAL_CLUSTER_NODES=3
start_cluster
if [ "$LOCAL_CLUSTER_LAYOUT" != hosts ]; then
  echo "SKIP: the cluster's nodes are not separate hosts here"
  stop_cluster_and_check >/dev/null
  exit 77
fi
ok "cluster started: ${LOCAL_CLUSTER_NODE_NAMES} on ${LOCAL_CLUSTER_HOST_NAMES}"

# Slowed so that a node can be lost mid-run (sleeps do not change the
# arithmetic).
memory=(LOCKSTEP_CHECKPOINT_MEMORY_DIR=/dev/shm/lockstep-lost-node-$$ LOCKSTEP_CHECKPOINT_DISK_EVERY=2)
env "${memory[@]}" PATH=$launcher_path RUN_DIR=$scratch/run RUN_ARGS="-n 4" sbatch --parsable -N3 \
  --ntasks-per-node=2 --overcommit -o "$scratch/job.out" "$templates/train.sbatch" \
  "${trainer[@]}" --zero 1 --step-ms 80 --weights-out "$scratch/slurm.bin" >"$scratch/sbatch.log"
job=$(job_id_in "$scratch/sbatch.log")

# The node (other than the batch script's n1) whose ranks train, once a
# checkpoint of step 29 is committed on disk (every save is in memory).
victim="" deadline=$((SECONDS + 180))
while [ -z "$victim" ] && [ $SECONDS -lt $deadline ]; do
  if [ -d "$scratch/run/checkpoints/step-29" ]; then
    for file in $(grep -lz "^LOCKSTEP_RUN_DIR=$scratch/run\$" /proc/[0-9]*/environ 2>/dev/null || true); do
      node=$(tr '\0' '\n' <"$file" 2>/dev/null | sed -n 's/^SLURMD_NODENAME=//p')
      if [ -n "$node" ] && [ "$node" != n1 ] &&
        [ "$(tr '\0' '\n' <"${file%/environ}/cmdline" 2>/dev/null | head -1)" = "$mlp" ]; then
        victim=$node
        break
      fi
    done
  fi
  [ -n "$victim" ] || sleep 0.1
done
if [ -z "$victim" ]; then
  fail "no checkpoint of step 29 with ranks on a node other than n1"
else
  host=node${victim#n}
  spare=$(for n in $LOCAL_CLUSTER_NODE_NAMES; do [ "$n" = n1 ] || [ "$n" = "$victim" ] || echo "$n"; done)
  "$hosts_scripts/hosts-lose.sh" "$LOCAL_CLUSTER_HOSTS_DIR" "$host" >/dev/null
  started=$EPOCHREALTIME
  until grep -q "first failure: host $victim lost" "$scratch/job.out" 2>/dev/null ||
    [ $SECONDS -gt $((deadline + 60)) ]; do sleep 0.1; done
  took=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  check "the lost node $victim is the root cause within seconds ($took s)" \
    "awk -v t=$took 'BEGIN { exit !(t < 20) }'"
fi
state=$(wait_for_job "$job" 300)
check "the job completes (state $state)" "[ '$state' = COMPLETED ]"
touch "$scratch/job.out"
expect_grep "take the spare node ${spare:-n3} in its place: 4 ranks on 2 node\(s\)" "$scratch/job.out" \
  "the spare node takes the lost one's place"
expect_grep "restored step [0-9]+ from memory \(partner copy of ranks [0-9]" "$scratch/job.out" \
  "the ranks on the spare restored from the partner copies"
expect_grep "finished 120 steps" "$scratch/job.out" "the run finished"
check "final weights equal the 4-rank run without Slurm" \
  "cmp -s '$scratch/reference.bin' '$scratch/slurm.bin'"
left=$(python3 -c 'import json,sys; print(",".join(json.load(open(sys.argv[1]))["slurm"]["excluded_nodes"]))' \
  "$scratch/run/summary.json" 2>/dev/null || true)
check "summary.json lists $victim as left out (got '$left')" "[ '$left' = '$victim' ]"

# --- without a spare: a two-node job loses a node and goes on smaller -------
if [ -n "${spare:-}" ]; then
  env "${memory[@]}" PATH=$launcher_path RUN_DIR=$scratch/shrink sbatch --parsable -N2 -w "n1,$spare" \
    --ntasks-per-node=2 --overcommit -o "$scratch/shrink.out" "$templates/train.sbatch" \
    "${trainer[@]}" --zero 1 --step-ms 80 >"$scratch/sbatch.log"
  job=$(job_id_in "$scratch/sbatch.log")
  deadline=$((SECONDS + 180))
  until [ -d "$scratch/shrink/checkpoints/step-29" ] || [ $SECONDS -gt $deadline ]; do sleep 0.1; done
  "$hosts_scripts/hosts-lose.sh" "$LOCAL_CLUSTER_HOSTS_DIR" "node${spare#n}" >/dev/null
  state=$(wait_for_job "$job" 300)
  check "the job without a spare completes (state $state)" "[ '$state' = COMPLETED ]"
  touch "$scratch/shrink.out"
  expect_grep "first failure: host $spare lost" "$scratch/shrink.out" "the lost node is named"
  expect_grep "run 2 ranks on 1 node\(s\) \(n1\); no spare node is left" "$scratch/shrink.out" \
    "the launcher says it goes on smaller"
  expect_grep "mlp: .* 2 ranks x 128 samples, steps ([3-9][0-9]|1[01][0-9])\.\.120" \
    "$scratch/shrink.out" "the last attempt resumed on 2 ranks from a checkpoint"
  expect_grep "restored step [0-9]+ from memory \(the copies on each node, saved by 4 ranks" \
    "$scratch/shrink.out" "the 2 ranks left restored from the copies in their node's memory"
  expect_grep "finished 120 steps" "$scratch/shrink.out" "the smaller run finished"
fi

stop_cluster_and_check
finish
