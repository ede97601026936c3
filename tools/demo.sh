#!/usr/bin/env bash
# The demo: a 4-rank smoke run of the runtime on this machine. Rank 1 alone
# receives SIGUSR1 at step 3, and every rank agrees to checkpoint there.
set -euo pipefail
build=${1:-build}
flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
echo "== lockstep demo: 4 ranks of examples/smoke under mpiexec"
echo "== rank 1 gets SIGUSR1 at step 3; all ranks must agree to checkpoint after it"
OMPI_MCA_mpi_yield_when_idle=1 LOCKSTEP_RUN_DIR="$build/demo-run" \
  mpiexec "${flags[@]}" -n 4 "$build/examples/smoke/lockstep_smoke" --steps 8 --signal-rank 1 --signal-step 3
echo "== demo finished"
