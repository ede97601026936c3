#!/usr/bin/env bash
# The example trainer refuses bad usage before training, with exit code 2
# and a message that says what to do: --device cuda on a rank the Runtime
# bound to no GPU (LOCKSTEP_DEVICE=cpu makes that so on any machine), a
# bad --hidden, and a --batch that the ranks do not divide.
# Usage: mlp_usage_test.sh <mlp> <scratch dir> <mpiexec command...>
set -u
mlp=$1 scratch=$2
shift 2
mpiexec=("$@")
rm -rf "$scratch"
mkdir -p "$scratch"
export LOCKSTEP_RUN_DIR=$scratch/run
failures=0
check() { if eval "$2"; then echo "ok:   $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi; }

LOCKSTEP_DEVICE=cpu timeout 60 "${mpiexec[@]}" -n 1 "$mlp" --device cuda --steps 1 \
  >"$scratch/cuda.log" 2>&1
rc=$?
check "--device cuda without a GPU exits 2 (exit $rc)" "[ $rc -eq 2 ]"
check "it says why: no GPU bound, or no CUDA in this build" \
  "grep -Eq -- '--device cuda, but (LOCKSTEP_DEVICE=cpu|this lockstep-mlp was built without CUDA)' '$scratch/cuda.log'"
check "it says what to do instead" "grep -q -- 'train with --device cpu' '$scratch/cuda.log'"
check "it trained nothing" "! grep -q 'mlp: finished' '$scratch/cuda.log'"

timeout 60 "${mpiexec[@]}" -n 1 "$mlp" --hidden 64,0 --steps 1 >"$scratch/hidden.log" 2>&1
rc=$?
check "--hidden with a zero width exits 2 (exit $rc)" "[ $rc -eq 2 ]"
check "it names the option" "grep -q -- '--hidden widths must be positive' '$scratch/hidden.log'"

timeout 60 "${mpiexec[@]}" -n 3 "$mlp" --batch 256 --steps 1 >"$scratch/batch.log" 2>&1
rc=$?
check "--batch that 3 ranks do not divide exits 2 (exit $rc)" "[ $rc -eq 2 ]"
check "it says what to pass instead" "grep -q -- '--batch 256 must be a positive multiple of the number of ranks (3).*pass --batch 255' '$scratch/batch.log'"

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed; the trainer's output:"
  tail -20 "$scratch"/*.log
  exit 1
fi
