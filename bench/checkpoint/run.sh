#!/usr/bin/env bash
# Runs the whole checkpoint benchmark and prints one table: lockstep's save
# and restore at 1, 2 and 4 ranks against dd, cat and torch.save + fsync of
# the same bytes, all on the same file system, plus the machine load.
#
# Usage: bench/checkpoint/run.sh [BUILD_DIR] [SCRATCH_DIR]
# Environment: SCALE (1.0 = GPT-2 small with Adam, 1.5 GB), REPEAT (3),
#   RANKS ("1 2 4"), EVERY (the loop saves every K steps; 0, the default,
#   takes the Young/Daly interval for the measured stall and MTBF), MTBF
#   (3600 s), PAIRS (9: pairs of plain steps and steps with a save, from
#   which the cost of one save to the loop is the median),
#   STEP_MS (100), RESTORES (3: rounds of restore, read floor and cat per
#   repetition),
#   DEVICE (cpu; cuda keeps the state, and the peer's, on each rank's GPU:
#   one rank per GPU), PYTHON (/usr/bin/python3).
# The torch.save peer runs in every repetition of every rank count, between
# lockstep's saves and dd, so that all three see the same disk.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
scratch=${2:-/tmp/lockstep-bench-ckpt}
scale=${SCALE:-1.0}
repeat=${REPEAT:-3}
ranks_list=${RANKS:-1 2 4}
every=${EVERY:-0}
pairs=${PAIRS:-9}
mtbf=${MTBF:-3600}
step_ms=${STEP_MS:-100}
restores=${RESTORES:-3}
bench=$build/bench/checkpoint/bench_checkpoint
device=${DEVICE:-cpu}
python=${PYTHON:-/usr/bin/python3}
[[ -x $bench ]] || { echo "build $bench first: cmake --build $build --target bench_checkpoint"; exit 2; }
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [[ $(id -u) -eq 0 ]]; then  # containers often run as root
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
mkdir -p "$scratch"
results=$scratch/results.txt
: >"$results"

# The peer needs PyTorch; Debian packages it.
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "installing python3-torch for the torch.save peer"
  apt-get install -y python3-torch >/dev/null || { echo "cannot install python3-torch"; exit 2; }
fi

echo "load before: $(uptime)"
mpiexec -n 1 "$bench" --scale "$scale" --shapes-only "$scratch/shapes.json"
peer="$python $here/../peers/torch_save.py $scratch/shapes.json $scratch/torch 1 $device"
# shellcheck source=bench/checkpoint/placement.sh
source "$here/placement.sh"
for ranks in $ranks_list; do
  # shellcheck disable=SC2046
  mpiexec $(placement "$ranks") -n "$ranks" "$bench" --scale "$scale" --repeat "$repeat" \
    --every "$every" --mtbf "$mtbf" --pairs "$pairs" --restores "$restores" --step-ms "$step_ms" \
    --torch-peer "$peer" --device "$device" --dir "$scratch/np$ranks" | tee -a "$results"
done
echo "load after: $(uptime)"

"$python" - "$results" <<'PYTHON'
import re, sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        rows.append({k: float(v) for k, v in (item.split("=") for item in line.split()[1:])})
gb = lambda r, s: r["bytes"] / 1e9 / s
print()
print(f"{'ranks':>5} {'GB':>6} | {'save GB/s':>9} {'dd GB/s':>8} {'save/dd':>7} | "
      f"{'torch GB/s':>10} {'save/torch':>10} | {'stall s':>7} {'stall/sync':>10} "
      f"{'cost s':>6} {'loop loss':>9} | {'restore GB/s':>12} {'cat GB/s':>8} {'rest/cat':>8} "
      f"{'rest/floor':>10}")
for r in rows:
    torch_cols = f"{gb(r, r['torch_s']):10.3f} {r['torch_s'] / r['sync_s']:10.2f}"
    floor_col = f"{r['rest_floor']:10.2f}" if r["rest_floor"] > 0 else f"{'-':>10}"
    print(f"{int(r['ranks']):5d} {r['bytes'] / 1e9:6.3f} | {gb(r, r['sync_s']):9.3f} "
          f"{gb(r, r['dd_s']):8.3f} {r['dd_s'] / r['sync_s']:7.2f} | {torch_cols} | "
          f"{r['stall_s']:7.3f} {100 * r['stall_s'] / r['sync_s']:9.1f}% "
          f"{r['save_cost_s']:6.3f} {100 * r['loop_loss']:8.1f}% | {gb(r, r['restore_s']):12.3f} "
          f"{gb(r, r['cat_s']):8.3f} {r['rest_cat']:8.2f} {floor_col}")
print("targets: save/dd >= 0.80, save/torch >= 1.00, stall/sync <= 10%, loop loss <= 5%, "
      "rest/cat >= 0.80")
print("rest/cat: the median over the rounds of restore, read floor and cat of their ratio; "
      "rest/floor: the same against the read floor (every rank reads every file into its own "
      "memory, no checks: the least a restore that gives each rank its own copy can cost)")
PYTHON
