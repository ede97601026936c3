#!/usr/bin/env bash
# Usage: run.sh <lockstep build dir> <consumer source dir> <scratch dir> <mpiexec command...>
set -euo pipefail
build=$1 consumer=$2 scratch=$3
shift 3
rm -rf "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
test -f "$scratch/prefix/include/lockstep/lockstep.h"
test -x "$scratch/prefix/bin/lockstep"
"$scratch/prefix/bin/lockstep" --version
cmake -S "$consumer" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/build" >/dev/null
output=$("$@" -n 2 "$scratch/build/consumer")
echo "$output"
grep -q "consumer ok: 2 ranks" <<<"$output"
