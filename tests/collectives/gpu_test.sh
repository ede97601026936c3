#!/usr/bin/env bash
# Runs a GPU test when the CUDA runtime sees enough GPUs; otherwise prints
# why not and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE),
# never as passed.
# Usage: gpu_test.sh <GPUs needed> <gpu_count program> <command> [args...]
set -u
needed=$1 probe=$2
shift 2
visible=$("$probe" 2>/dev/null) || visible=0
[[ $visible =~ ^[0-9]+$ ]] || visible=0
if [ "$visible" -lt 1 ]; then
  echo "skipped: no GPU is visible to the CUDA runtime"
  exit 77
fi
if [ "$visible" -lt "$needed" ]; then
  # One rank per GPU: NCCL refuses two ranks on one GPU.
  echo "skipped: no GPU for every rank ($needed needed, $visible visible)"
  exit 77
fi
exec "$@"
