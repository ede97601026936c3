#!/usr/bin/env bash
# Recovery benchmark of `lockstep run`, 4 ranks on this machine:
#  1. mean time to recovery for a ~100 MB model (25M f32 parameters, plus
#     Adam state): from the SIGKILL of one rank to the first completed step
#     after the restart, as measured by the launcher (summary.json);
#  2. launcher overhead: `lockstep run` against bare `mpirun` of the same
#     trainer with zero steps, median of several runs.
# Usage: bench/recovery/run.sh [build dir] [repeats]
# Recovery across hosts (a killed rank against a lost host): hosts.sh.
set -euo pipefail
build=${1:-build}
repeats=${2:-5}
lockstep=$(realpath "$build/launcher/lockstep")
mlp=$(realpath "$build/examples/mlp/lockstep-mlp")
scratch=$(mktemp -d /tmp/lockstep-recovery.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export OMPI_MCA_mpi_yield_when_idle=1
mpirun_flags=(--oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpirun_flags+=(--allow-run-as-root)
echo "# recovery benchmark, 4 ranks, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. Time to recovery. 4 x 2900 hidden units: 25.4M parameters = 102 MB f32.
model=(--hidden "2900,2900,2900,2900" --batch 16)
for attempt in $(seq "$repeats"); do
  dir=$scratch/mttr-$attempt
  LOCKSTEP_CHECKPOINT_EVERY=3 "$lockstep" run -n 4 --run-dir "$dir" --inject-failure "$((attempt % 4)):7" \
    -- "$mlp" "${model[@]}" --steps 10 >"$dir.log" 2>&1 || { echo "run failed:"; tail -20 "$dir.log"; exit 1; }
  /usr/bin/python3 - "$dir/summary.json" "$dir/attempts.jsonl" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
attempts = [json.loads(line) for line in open(sys.argv[2])]
failed = attempts[0]
print(f"mttr {summary['mean_time_to_recovery_seconds']:.2f} s  "
      f"(failure detected -> mpirun gone {failed['end_s'] - failed['failure_s']:.2f} s, "
      f"restart -> first step {summary['mean_time_to_recovery_seconds'] - (failed['end_s'] - failed['failure_s']):.2f} s; "
      f"step {failed['step_seconds']:.2f} s)")
PY
done | tee "$scratch/mttr.txt"
awk '{print $2}' "$scratch/mttr.txt" | sort -n | awk '{a[NR]=$1} END {printf "median time to recovery: %.2f s (target < 10 s)\n", a[int((NR+1)/2)]}'

# 2. Launcher overhead with zero training steps.
time_it() { # prints seconds of wall time of "$@"
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}'
}
for attempt in $(seq "$repeats"); do
  bare=$(time_it env LOCKSTEP_RUN_DIR="$scratch/bare-$attempt" mpirun "${mpirun_flags[@]}" -n 4 "$mlp" --steps 0)
  supervised=$(time_it "$lockstep" run -n 4 --run-dir "$scratch/run-$attempt" -- "$mlp" --steps 0)
  echo "$bare $supervised"
done | tee "$scratch/overhead.txt" | awk '{printf "mpirun %.3f s, lockstep run %.3f s\n", $1, $2}'
sort -n -k1 "$scratch/overhead.txt" | awk '{b[NR]=$1} END {print b[int((NR+1)/2)]}' >"$scratch/bare"
sort -n -k2 "$scratch/overhead.txt" | awk '{s[NR]=$2} END {print s[int((NR+1)/2)]}' >"$scratch/sup"
awk -v b="$(cat "$scratch/bare")" -v s="$(cat "$scratch/sup")" 'BEGIN {
  printf "median: mpirun %.3f s, lockstep run %.3f s, overhead %.3f s (target < 0.5 s)\n", b, s, s - b }'
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
