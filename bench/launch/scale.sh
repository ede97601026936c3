#!/usr/bin/env bash
# How `lockstep run` grows with the number of ranks, against bare mpirun, on
# this machine (ranks oversubscribed): for each N, the wall time of a start
# and an orderly end of the example with zero steps, bare and under the
# launcher (the launcher's own overhead is the difference), and the
# teardown after a rank is SIGKILLed mid-run (from the launcher seeing the
# failure to mpirun gone, from attempts.jsonl), and the CPU time of the
# launcher process itself.
# Usage: bench/launch/scale.sh [build dir] [rank counts...]   (default 1 4 16 64)
set -euo pipefail
build=${1:-build}
shift || true
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 4 16 64)
lockstep=$(realpath "$build/launcher/lockstep")
mlp=$(realpath "$build/examples/mlp/lockstep-mlp")
scratch=$(mktemp -d /tmp/lockstep-launch-scale.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export OMPI_MCA_mpi_yield_when_idle=1
mpirun_flags=(--oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpirun_flags+=(--allow-run-as-root)
trainer=("$mlp" --hidden 8)
seconds_of() { # wall seconds of "$@", its output dropped
  local start
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || true
  awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}
# CPU seconds of one process, without its children's (fields 14 and 15 of
# /proc/PID/stat), sampled until it ends.
own_cpu_of() { # own_cpu_of <pid>
  local last=0 fields
  while fields=$(cut -d' ' -f14,15 "/proc/$1/stat" 2>/dev/null); do
    last=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($1 + $2) / hz }' <<<"$fields")
    sleep 0.1
  done
  echo "$last"
}
echo "# launch scaling, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%6s %10s %14s %10s %13s %10s\n" ranks mpirun "lockstep run" overhead "launcher cpu" teardown
for n in "${counts[@]}"; do
  bare=$(seconds_of env LOCKSTEP_RUN_DIR="$scratch/bare-$n" mpirun "${mpirun_flags[@]}" -n "$n" \
    "${trainer[@]}" --steps 0)
  supervised=$(seconds_of "$lockstep" run -n "$n" --run-dir "$scratch/run-$n" -- "${trainer[@]}" \
    --steps 0)
  # The launcher's own CPU in a run like the one above.
  "$lockstep" run -n "$n" --run-dir "$scratch/cpu-$n" -- "${trainer[@]}" --steps 0 \
    >/dev/null 2>&1 &
  launcher_cpu=$(own_cpu_of $!)
  wait $! || true
  "$lockstep" run -n "$n" --run-dir "$scratch/kill-$n" --max-restarts 0 \
    --inject-failure "$((n > 1 ? 1 : 0)):3:KILL" -- "${trainer[@]}" --steps 200 --step-ms 50 \
    >"$scratch/kill-$n.log" 2>&1 || true
  teardown=$(/usr/bin/python3 -c '
import json, sys
attempt = json.loads(open(sys.argv[1]).readline())
print("%.2f" % (attempt["end_s"] - attempt["failure_s"]))' "$scratch/kill-$n/attempts.jsonl")
  awk -v n="$n" -v a="$bare" -v b="$supervised" -v c="$launcher_cpu" -v t="$teardown" \
    'BEGIN { printf "%6d %9.2fs %13.2fs %9.2fs %12.2fs %9.2fs\n", n, a, b, b - a, c, t }'
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
