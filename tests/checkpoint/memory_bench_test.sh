#!/usr/bin/env bash
# The small version of bench/checkpoint's memory tier bench: 2 ranks, 8 MB,
# two rounds of 20 steps with a save every 5 and every 2nd on disk. Both
# modes must print their figures, every save must be counted, the memory
# tier must put half the bytes of disk-only saves on disk, and neither the
# scratch directory nor the memory tier may be left behind.
# Usage: memory_bench_test.sh <bench_checkpoint_memory> <scratch> <mpiexec...>
set -u
bench=$1
scratch=$2
shift 2
# shellcheck source=../support/checks.sh
source "$(dirname "$0")/../support/checks.sh"
field() { # field <line> <key>
  tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}
rm -rf "$scratch"
mkdir -p "$scratch/memory"
out=$("$@" -n 2 "$bench" --mb 8 --steps 20 --rounds 2 --every 5 --disk-every 2 --step-ms 20 \
  --dir "$scratch/disk" --memory "$scratch/memory" 2>&1)
expect_rc 0 $? "the bench ran"
echo "$out" | grep -v '^RESULT' | sed 's/^/    /'
disk=$(grep '^RESULT mode=disk ' <<<"$out")
memory=$(grep '^RESULT mode=memory ' <<<"$out")
check "a RESULT line for each mode" "[ -n '$disk' ] && [ -n '$memory' ]"
rounds=$(grep -c '^round [12]/2: loops' <<<"$out")
check "both rounds were run" "[ '$rounds' = 2 ]"
check "every save was counted" "[ '$(field "$disk" saves) $(field "$memory" saves)' = '8 8' ]"
check "stall, memcpy, the stall's share and the writer were measured" \
  "python3 -c 'import sys; sys.exit(0 if min(map(float, sys.argv[1:])) > 0 else 1)' \
     '$(field "$memory" stall_s)' '$(field "$disk" stall_s)' '$(field "$memory" memcpy_s)' \
     '$(field "$memory" stall_share)' '$(field "$memory" write_s)' '$(field "$disk" write_s)'"
check "every 2nd save of the memory tier went to disk: half the bytes" \
  "python3 -c 'import sys; r = int(sys.argv[1]) / int(sys.argv[2]); sys.exit(0 if 0.45 < r < 0.55 else 1)' \
     '$(field "$memory" disk_bytes)' '$(field "$disk" disk_bytes)'"
check "the scratch directory is gone" "[ ! -e '$scratch/disk' ]"
check "the memory tier is gone" "[ -z \"\$(ls -A '$scratch/memory')\" ]"
rm -rf "$scratch"
finish
