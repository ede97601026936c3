#!/usr/bin/env bash
# The small version of bench/monitor: 1,024 simulated ranks on nodes of 8,
# each on its own connection and through node relays, against the real
# monitor. Every rank must be seen stepping with nothing refused or
# dropped, a step must reach the view well within 2 s, the hang must be
# seen within the hang timeout + 2 s, and a relay must hold one connection
# per node.
# Usage: monitor_scale_test.sh <monitor_bench>
set -u
bench=$1
# shellcheck source=../support/checks.sh
source "$(dirname "$0")/../support/checks.sh"
field() { # field <line> <key>
  awk -v key="$2" '{ for (i = 1; i < NF; i += 2) if ($i == key) print $(i + 1) }' <<<"$1"
}
below() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$1" "$2"; }
for mode in direct relay; do
  line=$("$bench" --mode "$mode" --ranks 1024 --ranks-per-node 8 --seconds 4 --hang-timeout 3)
  expect_rc 0 $? "$mode: the bench ran and saw the hang"
  echo "    $line"
  check "$mode: every rank was seen stepping" "[ '$(field "$line" ranks_stepping)' = 1024 ]"
  check "$mode: nothing malformed or refused" \
    "[ '$(field "$line" malformed) $(field "$line" refused)' = '0 0' ]"
  wanted=$([ "$mode" = relay ] && echo 128 || echo 1024)
  check "$mode: $wanted connections" "[ '$(field "$line" connections)' = $wanted ]"
  check "$mode: the oldest step in the view is under 2 s old" \
    "below '$(field "$line" oldest_view_s)' 2"
  check "$mode: the hang is seen within the timeout + 2 s" \
    "below '$(field "$line" hang_worst_after_timeout_s)' 2"
done
finish
