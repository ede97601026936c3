#!/usr/bin/env bash
# The timeline's cost against training: the cost of one span (trace_bench),
# times the spans a step of the example trainer records (4 ranks, from its
# own timeline), against that step's time; and the example's step time with
# LOCKSTEP_TRACE=on against off, median of several runs.
# Usage: bench/trace/run.sh [build dir] [repeats]
set -euo pipefail
build=${1:-build}
repeats=${2:-3}
lockstep=$(realpath "$build/launcher/lockstep")
mlp=$(realpath "$build/examples/mlp/lockstep-mlp")
scratch=$(mktemp -d /tmp/lockstep-trace-bench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export OMPI_MCA_mpi_yield_when_idle=1 LOCKSTEP_CHECKPOINT_EVERY=50
echo "# timeline cost, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench/trace/trace_bench" | sed 's/^/span: /'
span_ns=$("$build/bench/trace/trace_bench" | awk '/^on_ns_per_span /{print $2}')
for mode in off on; do
  for attempt in $(seq "$repeats"); do
    dir=$scratch/$mode-$attempt
    LOCKSTEP_TRACE=$mode "$lockstep" run -n 4 --run-dir "$dir" -- "$mlp" --steps 400 --hidden 256,256 \
      >"$dir.log" 2>&1 || { echo "run failed:"; tail -20 "$dir.log"; exit 1; }
    /usr/bin/python3 - "$dir/summary.json" "$mode" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} step_ms {1000 * s['productive_seconds'] / max(1, s['steps_completed']):.3f}")
PY
  done
done | tee "$scratch/steps.txt"
# Records per step on one rank of a traced run.
records=$(find "$scratch/on-1/trace" -name rank-0.jsonl -exec wc -l {} + | awk '{print $1}')
/usr/bin/python3 - "$scratch/steps.txt" "$span_ns" "$records" 400 <<'PY'
import statistics, sys
steps = {"on": [], "off": []}
for line in open(sys.argv[1]):
    mode, _, ms = line.split()
    steps[mode].append(float(ms))
span_ns, records, count = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
off, on = statistics.median(steps["off"]), statistics.median(steps["on"])
per_step = records / count
print(f"step time: off {off:.3f} ms, on {on:.3f} ms, on/off {on / off:.3f}")
print(f"records per step (rank 0): {per_step:.1f}; at {span_ns:.0f} ns each: "
      f"{per_step * span_ns / 1000:.2f} us per step = {per_step * span_ns / 1e4 / off:.4f}% of a step")
PY
