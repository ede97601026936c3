#!/usr/bin/env bash
# The small version of bench/checkpoint's memory tier bench: 2 ranks, 8 MB,
# two rounds of 20 steps with a save every 5 and every 2nd on disk, once
# with steps that compute and once with steps that wait. Both modes must
# print their figures (the memory tier's ranks on two nodes, so that partner
# copies move), every save must be counted, the memory
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
# run_bench <step kind>: one run of the bench and its checks.
run_bench() {
  local kind=$1 out disk memory rounds
  rm -rf "$scratch"
  mkdir -p "$scratch/memory"
  out=$("${mpiexec[@]}" -n 2 "$bench" --mb 8 --steps 20 --rounds 2 --every 5 --disk-every 2 \
    --step-ms 20 --step "$kind" --dir "$scratch/disk" --memory "$scratch/memory" 2>&1)
  expect_rc 0 $? "the bench ran with --step $kind"
  echo "$out" | grep -v '^RESULT' | sed 's/^/    /'
  disk=$(grep "^RESULT mode=disk step=$kind " <<<"$out")
  memory=$(grep "^RESULT mode=memory step=$kind " <<<"$out")
  check "$kind: a RESULT line for each mode" "[ -n '$disk' ] && [ -n '$memory' ]"
  rounds=$(grep -c '^round [12]/2: loops' <<<"$out")
  check "$kind: both rounds were run" "[ '$rounds' = 2 ]"
  check "$kind: every save was counted" \
    "[ '$(field "$disk" saves) $(field "$memory" saves)' = '8 8' ]"
  check "$kind: stall, memcpy, the stall's share and the writer were measured" \
    "python3 -c 'import sys; sys.exit(0 if min(map(float, sys.argv[1:])) > 0 else 1)' \
       '$(field "$memory" stall_s)' '$(field "$disk" stall_s)' '$(field "$memory" memcpy_s)' \
       '$(field "$memory" stall_share)' '$(field "$memory" write_s)' '$(field "$disk" write_s)'"
  # The last save's writer mostly ends inside the loop: its wait may round to 0.
  check "$kind: the wait for the last save was measured" \
    "python3 -c 'import sys; sys.exit(0 if min(map(float, sys.argv[1:])) >= 0 else 1)' \
       '$(field "$memory" drain_s)' '$(field "$disk" drain_s)'"
  check "$kind: the memory tier's ranks were on 2 nodes" "[ '$(field "$memory" nodes)' = 2 ]"
  if grep -q "no partner copies" <<<"$out"; then
    fail "$kind: the memory tier made no partner copies"
  else
    ok "$kind: the memory tier made partner copies"
  fi
  if [ "$kind" = wait ]; then
    check "wait: the loop without saves waited 20 steps of 20 ms" \
      "python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= 0.4 else 1)' '$(field "$memory" plain_s)'"
  fi
  check "$kind: every 2nd save of the memory tier went to disk: half the bytes" \
    "python3 -c 'import sys; r = int(sys.argv[1]) / int(sys.argv[2]); sys.exit(0 if 0.45 < r < 0.55 else 1)' \
       '$(field "$memory" disk_bytes)' '$(field "$disk" disk_bytes)'"
  check "$kind: the scratch directory is gone" "[ ! -e '$scratch/disk' ]"
  check "$kind: the memory tier is gone" "[ -z \"\$(ls -A '$scratch/memory')\" ]"
}
mpiexec=("$@")
run_bench cpu
run_bench wait
out=$("${mpiexec[@]}" -n 2 "$bench" --nodes 3 --dir "$scratch/disk" 2>&1)
expect_rc 2 $? "more nodes than ranks is refused"
check "the error names the option and the limit" \
  "grep -q -- '--nodes 3 is more than the 2 ranks; give at most 2' <<<\"\$out\""
rm -rf "$scratch"
finish
