#!/usr/bin/env bash
# Time to recovery with the memory tier against disk only, in one run:
# 4 ranks of the example with a ~100 MB model (25M f32 parameters, plus
# Adam's two moments: 305 MB of state), a checkpoint every 3 steps, one rank
# SIGKILLed at step 7. The two modes alternate, REPEATS times each. Reports,
# from summary.json, attempts.jsonl and the log: the time to recovery (kill
# to the first completed step after the restart), how much of it is mpirun
# tearing the job down and starting it again, and the restore itself.
# Usage: bench/recovery/memory.sh [build dir] [repeats]
set -euo pipefail
build=${1:-build}
repeats=${2:-3}
lockstep=$(realpath "$build/launcher/lockstep")
mlp=$(realpath "$build/examples/mlp/lockstep-mlp")
scratch=$(mktemp -d /tmp/lockstep-recovery-memory.XXXXXX)
memory=/dev/shm/lockstep-recovery-bench-$$
trap 'rm -rf "$scratch" "$memory"' EXIT
export OMPI_MCA_mpi_yield_when_idle=1
echo "# recovery with the memory tier, 4 ranks, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
model=(--hidden "2900,2900,2900,2900" --batch 16)
for attempt in $(seq "$repeats"); do
  for mode in disk memory; do
    dir=$scratch/$mode-$attempt
    tier=()
    [[ $mode == memory ]] && tier=(LOCKSTEP_CHECKPOINT_MEMORY_DIR="$memory" LOCKSTEP_CHECKPOINT_DISK_EVERY=10)
    env LOCKSTEP_CHECKPOINT_EVERY=3 "${tier[@]}" "$lockstep" run -n 4 --run-dir "$dir" \
      --inject-failure "$((attempt % 4)):7" -- "$mlp" "${model[@]}" --steps 10 >"$dir.log" 2>&1 ||
      { echo "run failed:"; tail -20 "$dir.log"; exit 1; }
    /usr/bin/python3 - "$mode" "$dir/summary.json" "$dir/attempts.jsonl" "$dir.log" <<'PY'
import json, re, sys
mode, summary_path, attempts_path, log_path = sys.argv[1:]
summary = json.load(open(summary_path))
failed = [json.loads(line) for line in open(attempts_path)][0]
restore = re.findall(r"restored step (\d+) from (memory|disk) .* in ([0-9.]+) s", open(log_path).read())
ttr = summary["mean_time_to_recovery_seconds"]
teardown = failed["end_s"] - failed["failure_s"]
step, where, seconds = restore[-1]
print(f"{mode:6} ttr {ttr:.2f} s  teardown {teardown:.2f} s  restart to first step "
      f"{ttr - teardown:.2f} s  restore of step {step} from {where} {float(seconds):.2f} s")
PY
  done
done | tee "$scratch/ttr.txt"
/usr/bin/python3 - "$scratch/ttr.txt" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode = line.split()[0]
    values = [float(v) for v in re.findall(r"([0-9.]+) s", line)]
    rows.setdefault(mode, []).append(values)
med = {m: [statistics.median(col) for col in zip(*r)] for m, r in rows.items()}
for m, (ttr, teardown, restart, restore) in med.items():
    print(f"median {m:6}: ttr {ttr:.2f} s, teardown {teardown:.2f} s, restart to first step "
          f"{restart:.2f} s, restore {restore:.2f} s")
print(f"memory / disk time to recovery: {med['memory'][0] / med['disk'][0]:.2f}; "
      f"restore {med['memory'][3]:.2f} s against {med['disk'][3]:.2f} s (target: ttr <= 3 s)")
PY
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
