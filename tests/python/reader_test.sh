#!/usr/bin/env bash
# python/lockstep_checkpoint.py reads what lockstep wrote: the h5py writer's
# checkpoint (every dtype and shape, sharded tensors) at 3 ranks, and the
# example's with sharded Adam state at 2 ranks (when the example is built).
# Usage: reader_test.sh <python3> <module dir> <writer> <scratch dir> <mlp or ""> <mpiexec...>
set -euo pipefail
python=$1 module_dir=$2 writer=$3 scratch=$4 mlp=$5
shift 5
rm -rf "$scratch"
mkdir -p "$scratch"
"$@" -n 3 "$writer" "$scratch/writer"
example=()
if [[ -n $mlp ]]; then
  LOCKSTEP_RUN_DIR=$scratch/example LOCKSTEP_CHECKPOINT_EVERY=5 LOCKSTEP_DEVICE=cpu \
    "$@" -n 2 "$mlp" --zero 1 --hidden 64,64 --steps 12 >"$scratch/example.log" 2>&1 ||
    { cat "$scratch/example.log"; exit 1; }
  example=("$scratch/example/checkpoints")
fi
"$python" "$(dirname "$0")/check_reader.py" "$module_dir" "$scratch/writer/ckpt" \
  "$scratch/writer/expected" "$scratch/damaged" "${example[@]}"
