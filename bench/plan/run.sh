#!/usr/bin/env bash
# `lockstep plan --simulate` for a 16,384-GPU, 54-day run (1,000 runs each):
#  1. with lockstep's measured costs (docs/BENCHMARKS.md: save stall
#     0.07 s, time to recovery 7.8 s), disk only;
#  2. with Llama 3's failure figures and assumed costs (5 s stall, 600 s
#     restart; the 47 planned interruptions as requeues every 54 days / 47);
#  3. variations: Meta's 1.8-hour MTBF, Weibull failures, no spares, a
#     memory tier, and R comparable to the MTBF (where the closed form fails);
#  4. the speed of the simulation with one thread and with every core.
# Usage: bench/plan/run.sh [build dir]
set -euo pipefail
build=${1:-build}
lockstep=$(realpath "$build/launcher/lockstep")
echo "# lockstep plan benchmark, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# summary <label> <plan arguments>: one line per configuration.
summary() {
  local label=$1
  shift
  echo "\$ lockstep plan $*"
  "$lockstep" plan --json "$@" | python3 -c '
import json, sys
label = sys.argv[1]
for c in json.load(sys.stdin)["configurations"]:
    s = c["simulation"]
    g, lost = s["goodput"], s["lost"]
    print("%-27s %-11s tau %6.1f s | closed %6.2f%% exact-exp %6.2f%% | sim %6.2f%% +-%.3f p5 %6.2f p95 %6.2f | "
          "interruptions %5.1f | lost %%: stall %.2f recompute %.2f restart %.2f requeue %.2f excluded %.2f | "
          "disk restores %.2f | %.3f s" % (
          label, c["name"], c["interval_seconds"], 100 * c["goodput"], 100 * c["exponential_goodput"],
          100 * g["mean"], 100 * g["ci95"], 100 * g["p5"], 100 * g["p95"], s["interruptions"],
          100 * lost["stall"], 100 * lost["recompute"], 100 * lost["restart"], 100 * lost["requeue"],
          100 * lost["excluded"], s["disk_restores"], s["elapsed_seconds"]))
' "$label"
}

common=(--gpus 16384 --gpus-per-node 8 --days 54 --simulate --runs 1000 --seed 1)
summary "lockstep measured" "${common[@]}" --save-stall 0.07 --restart-cost 7.8
summary "lockstep, Meta 1.8 h" "${common[@]}" --save-stall 0.07 --restart-cost 7.8 --mtbf-hours 1.8
summary "Llama 3 (assumed C, R)" "${common[@]}" --save-stall 5 --restart-cost 600 \
  --time-limit-hours 27.574
summary "Llama 3, Weibull 0.7" "${common[@]}" --save-stall 5 --restart-cost 600 \
  --time-limit-hours 27.574 --weibull-shape 0.7
summary "Llama 3, 16 spares" "${common[@]}" --save-stall 5 --restart-cost 600 \
  --time-limit-hours 27.574 --spares 16 --replace-delay 600 --repair-hours 72
summary "Llama 3, memory tier" "${common[@]}" --save-stall 5 --restart-cost 600 \
  --time-limit-hours 27.574 --memory-save-stall 1 --memory-restart-cost 120
summary "Llama 3, Meta 1.8 h" "${common[@]}" --save-stall 5 --restart-cost 600 \
  --time-limit-hours 27.574 --mtbf-hours 1.8
for restart in 1800 5400 10800; do
  summary "C 5 s, R $restart s, MTBF 3 h" "${common[@]}" --save-stall 5 --restart-cost "$restart" \
    --mtbf-hours 3
done

# Speed: wall time of the whole command, best of 3.
for threads in 1 0; do
  for shape in exponential weibull; do
    best=
    for _ in 1 2 3; do
      start=$(date +%s.%N)
      extra=()
      [ "$shape" = weibull ] && extra=(--weibull-shape 0.7)
      "$lockstep" plan "${common[@]}" --save-stall 0.07 --restart-cost 7.8 --threads "$threads" \
        "${extra[@]}" >/dev/null
      took=$(echo "$(date +%s.%N) - $start" | bc)
      if [ -z "$best" ] || [ "$(echo "$took < $best" | bc)" -eq 1 ]; then best=$took; fi
    done
    printf 'speed: 1000 runs of 16,384 GPUs x 54 days, C 0.07 s, R 7.8 s, %s failures, %s thread(s): %.2f s\n' \
      "$shape" "$([ "$threads" = 0 ] && nproc || echo 1)" "$best"
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
