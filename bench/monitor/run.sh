#!/usr/bin/env bash
# The launcher's monitor at scale (monitor_bench): N simulated ranks on nodes
# of 8, each rank on its own connection ("direct") or each node through its
# relay ("relay"), on loopback. Targets at 131,072 ranks through relays: the
# monitor uses at most 1 core and 1 GiB, a step reaches the launcher's view
# within 2 s, a hang is seen within the hang timeout + 2 s.
# Direct connections stop at 16,384 ranks: 131,072 would need as many
# descriptors and loopback ports on each side, more than a host gives one
# process.
# Usage: bench/monitor/run.sh [build dir] [seconds per case]
set -euo pipefail
build=${1:-build}
seconds=${2:-15}
bench=$build/bench/monitor/monitor_bench
echo "# monitor at scale, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for case in "direct 1024" "relay 1024" "direct 16384" "relay 16384" "relay 131072"; do
  read -r mode ranks <<<"$case"
  "$bench" --mode "$mode" --ranks "$ranks" --ranks-per-node 8 --seconds "$seconds" --hang-timeout 5
done
