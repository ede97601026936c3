#!/usr/bin/env bash
# The launcher's monitor at scale (monitor_bench): N simulated ranks on nodes
# of 8, each rank on its own connection ("direct") or each node through its
# relay ("relay"), on loopback. Targets at 131,072 ranks through relays: the
# monitor uses at most 1 core and 1 GiB, a step reaches the launcher's view
# within 2 s, a hang is seen within the hang timeout + 2 s.
# Direct connections stop at 16,384 ranks: 131,072 would need as many
# descriptors and loopback ports on each side, more than a host gives one
# process.
# Then the relayed loads against a real `lockstep run`, whose program is the
# generator.
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
# The same load against a real `lockstep run`, the generator being its
# program: the launcher's own CPU and memory while heartbeats flow (from
# /proc), and how long after the hang timeout it asked the ranks for their
# flight records, which it does when it finds the job hung.
lockstep=$build/launcher/lockstep
in_run() { # in_run <mode> <ranks>
  local dir pid
  dir=$(mktemp -d /tmp/lockstep-monitor-run.XXXXXX)
  "$lockstep" run -n 1 --run-dir "$dir/run" --hang-timeout 5 --max-restarts 0 \
    --startup-timeout 300 -- "$bench" --mode "$1" --ranks "$2" --ranks-per-node 8 \
    --seconds "$seconds" >"$dir/log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    # Time, the process's CPU ticks, its peak memory, the monitor thread's ticks.
    monitor_ticks=$(for task in /proc/"$pid"/task/*; do
      if [ "$(cat "$task/comm" 2>/dev/null)" = monitor ]; then cut -d' ' -f14,15 "$task/stat"; fi
    done 2>/dev/null | awk '{ print $1 + $2 }' || true)
    echo "$(date +%s.%N) $(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null)" \
      "$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null) ${monitor_ticks:-0}"
    sleep 0.5
  done >"$dir/samples"
  wait "$pid" || true
  /usr/bin/python3 - "$dir/log" "$dir/samples" "$1" "$2" "$(getconf CLK_TCK)" <<'PY'
import re, sys
log, samples, mode, ranks, hz = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
text = open(log).read()
def at(what):
    found = re.search(what + r" at ([0-9.]+)", text)
    if not found:
        sys.exit(f"no '{what}' in {log}:\n" + text[-2000:])
    return float(found.group(1))
begin, stop, dump = at("all in"), at("stopped stepping"), at("asked for flight records")
rows = [line.split() for line in open(samples)]
rows = [(float(r[0]), (int(r[1]) + int(r[2])) / hz, int(r[3]), int(r[4]) / hz)
        for r in rows if len(r) == 5]
inside = [r for r in rows if begin <= r[0] <= stop]
span = inside[-1][0] - inside[0][0]
cores = (inside[-1][1] - inside[0][1]) / span
monitor = (inside[-1][3] - inside[0][3]) / span
print(f"in_run mode {mode} ranks {ranks} launcher_cores {cores:.3f} monitor_thread_cores {monitor:.3f} "
      f"launcher_memory_mib {max(r[2] for r in rows) / 1024:.1f} "
      f"hang_seen_after_timeout_s {dump - stop - 5:.2f}")
PY
  rm -rf "$dir"
}
in_run relay 16384
in_run relay 131072
