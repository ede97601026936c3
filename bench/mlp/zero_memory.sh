#!/usr/bin/env bash
# Memory of the example trainer with Adam's state replicated (--zero 0) and
# sharded (--zero 1): for each mode and rank count, the Adam state each rank
# holds (the largest over the ranks, from the trainer's log) against the
# replicated state / N, and the peak resident set of the largest rank.
#
# Usage: bench/mlp/zero_memory.sh [BUILD_DIR]
# Environment: HIDDEN (default 2048,2048: 4.3M parameters), RANKS ("2 4"),
#   STEPS (20).
set -euo pipefail
build=${1:-build}
hidden=${HIDDEN:-2048,2048}
ranks_list=${RANKS:-2 4}
steps=${STEPS:-20}
mlp=$build/examples/mlp/lockstep-mlp
[[ -x $mlp ]] || { echo "build $mlp first: cmake --build $build --target mlp"; exit 2; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export OMPI_MCA_mpi_yield_when_idle=1 LOCKSTEP_DEVICE=cpu LOCKSTEP_CHECKPOINT_EVERY=0 LOCKSTEP_LOG_LEVEL=debug
mpiexec=(mpiexec --oversubscribe --bind-to none)
[[ $(id -u) == 0 ]] && mpiexec+=(--allow-run-as-root)

printf '%5s %5s | %18s %14s %7s | %16s\n' ranks zero "Adam MiB per rank" "replicated / N" ratio "peak RSS MiB"
for n in $ranks_list; do
  replicated=""
  for zero in 0 1; do
    log=$scratch/$n-$zero.log
    LOCKSTEP_RUN_DIR=$scratch/run-$n-$zero "${mpiexec[@]}" -n "$n" \
      /usr/bin/time -f "peak_rss_kib %M" "$mlp" --hidden "$hidden" --steps "$steps" \
      --zero "$zero" >"$log" 2>&1
    adam=$(grep -Eo "Adam's state [0-9]+ bytes" "$log" | awk '{print $3}' | sort -n | tail -1)
    peak=$(awk '$1 == "peak_rss_kib" {print $2}' "$log" | sort -n | tail -1)
    [[ $zero == 0 ]] && replicated=$adam
    awk -v n="$n" -v z="$zero" -v a="$adam" -v r="$replicated" -v p="$peak" 'BEGIN {
      printf "%5d %5d | %18.3f %14.3f %7.4f | %16.1f\n", n, z, a / 1048576, r / n / 1048576,
             a / (r / n), p / 1024 }'
  done
done
echo "# ratio: the largest rank's Adam state over the replicated state / N (target: within 2 % of 1)"
