#!/usr/bin/env bash
# The small version of bench/launch/scale.sh: 1 and 4 ranks. Every figure
# must be there, teardown after a kill under a few seconds, and the
# launcher process's own CPU far under the 0.5 s it may add (CPU time, not
# wall time, so that a busy machine does not fail it).
# Usage: launch_scale_test.sh <source dir> <build dir>
set -u
source_dir=$1 build=$2
# shellcheck source=../support/checks.sh
source "$(dirname "$0")/../support/checks.sh"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
bash "$source_dir/bench/launch/scale.sh" "$build" 1 4 >"$out" 2>&1
expect_rc 0 $? "the launch benchmark runs at 1 and 4 ranks"
sed 's/^/    | /' "$out"
for ranks in 1 4; do
  row=$(awk -v n="$ranks" '$1 == n' "$out")
  check "a row for $ranks rank(s) with every figure" "[ \"$(wc -w <<<"$row")\" = 6 ]"
  cpu=$(awk '{ sub(/s$/, "", $5); print $5 }' <<<"$row")
  teardown=$(awk '{ sub(/s$/, "", $6); print $6 }' <<<"$row")
  check "$ranks rank(s): the launcher's own CPU ($cpu s) is under 0.5 s" \
    "awk -v c='$cpu' 'BEGIN { exit !(c != \"\" && c < 0.5) }'"
  check "$ranks rank(s): teardown after a kill ($teardown s) is under 5 s" \
    "awk -v t='$teardown' 'BEGIN { exit !(t != \"\" && t < 5) }'"
done
finish
