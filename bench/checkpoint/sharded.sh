#!/usr/bin/env bash
# Checkpoints of sharded (ZeRO-1) state: GPT-2 small with Adam's moments
# sharded as ShardedGradSync lays them out. Saves at SAVE_RANKS ranks,
# sharded against replicated, then restores that save at each of
# RESTORE_RANKS ranks against cat of its files; prints one table.
#
# Usage: bench/checkpoint/sharded.sh [BUILD_DIR] [SCRATCH_DIR]
# Environment: SCALE (1.0 = GPT-2 small with Adam, 1.5 GB), REPEAT (5 saves
#   of each kind), ROUNDS (5 rounds of restore and cat), SAVE_RANKS (4),
#   RESTORE_RANKS ("2 4").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
scratch=${2:-/tmp/lockstep-bench-ckpt-sharded}
scale=${SCALE:-1.0}
repeat=${REPEAT:-5}
rounds=${ROUNDS:-5}
save_ranks=${SAVE_RANKS:-4}
restore_ranks=${RESTORE_RANKS:-2 4}
bench=$build/bench/checkpoint/bench_checkpoint_sharded
[[ -x $bench ]] || {
  echo "build $bench first: cmake --build $build --target bench_checkpoint_sharded"
  exit 2
}
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [[ $(id -u) -eq 0 ]]; then # containers often run as root
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# shellcheck source=bench/checkpoint/placement.sh
source "$here/placement.sh"
mkdir -p "$scratch"
results=$scratch/results.txt
: >"$results"
echo "load before: $(uptime)"
# shellcheck disable=SC2046
mpiexec $(placement "$save_ranks") -n "$save_ranks" "$bench" --dir "$scratch/state" \
  --scale "$scale" --repeat "$repeat" | tee -a "$results"
for ranks in $restore_ranks; do
  # shellcheck disable=SC2046
  mpiexec $(placement "$ranks") -n "$ranks" "$bench" --dir "$scratch/state" --restore \
    --scale "$scale" --rounds "$rounds" | tee -a "$results"
done
echo "load after: $(uptime)"
rm -rf "$scratch/state"

python3 - "$results" "$save_ranks" <<'PYTHON'
import sys
rows = [dict(item.split("=") for item in line.split()[1:])
        for line in open(sys.argv[1]) if line.startswith("RESULT ")]
saved = sys.argv[2]
print()
for r in rows:
    gb = float(r["bytes"]) / 1e9
    if r["phase"] == "save":
        print(f"save at {r['ranks']} ranks, {gb:.3f} GB: sharded {float(r['sharded_s']):.3f} s "
              f"({gb / float(r['sharded_s']):.3f} GB/s), replicated {float(r['replicated_s']):.3f} s "
              f"({gb / float(r['replicated_s']):.3f} GB/s), sharded/replicated {float(r['ratio']):.2f} "
              f"(target <= 1.00)")
    else:
        print(f"restore at {r['ranks']} ranks of the {saved}-rank save, {gb:.3f} GB: "
              f"{float(r['restore_s']):.3f} s ({gb / float(r['restore_s']):.3f} GB/s), cat "
              f"{float(r['cat_s']):.3f} s, restore/cat {float(r['rest_cat']):.2f} (target >= 0.80), "
              f"{r['wrong']} elements wrong")
PYTHON
