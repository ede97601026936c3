#!/usr/bin/env bash
# A checkpoint written by 3 ranks opens in h5py, h5ls and h5dump, and holds
# the saved values; the bf16 recipe of docs/CHECKPOINTS.md, run as written
# there, gives the saved values for every dataset shape (scalar, 1-d, n-d).
# Usage: h5py_test.sh <writer binary> <python3> <check_h5py.py> <scratch dir> <mpiexec...>
set -euo pipefail
writer=$1 python=$2 check=$3 scratch=$4
shift 4
rm -rf "$scratch"
mkdir -p "$scratch"
"$@" -n 3 "$writer" "$scratch"
step_dir="$scratch/ckpt/step-5"
"$python" -c "import h5py" || { echo "FAIL: h5py is missing (apt-get install python3-h5py)"; exit 1; }
"$python" "$check" "$step_dir" "$scratch/expected" 3
if command -v h5ls >/dev/null; then
  (cd "$step_dir" && h5ls -r checkpoint.h5 | grep -q "model/f32/shape5 *Dataset {129, 33}")
  (cd "$step_dir" && h5dump -d /model/i32/shape2 checkpoint.h5 >/dev/null)
  echo "h5ls and h5dump read the checkpoint"
fi
