#!/usr/bin/env bash
# The demo: `lockstep run` trains the example MLP on 4 ranks of this machine,
# kills one rank in the middle (a deliberate failure), restarts the job from
# its last checkpoint, and ends with the accuracy and the goodput summary.
set -euo pipefail
build=${1:-build}
lockstep=$build/launcher/lockstep
mlp=$build/examples/mlp/lockstep-mlp
run_dir=$build/demo-run
rm -rf "$run_dir"
export OMPI_MCA_mpi_yield_when_idle=1

if [ ! -x "$mlp" ]; then
  # Without the example trainer (collectives or checkpoints not built), show
  # the runtime: 4 ranks agree on a checkpoint that only one rank was asked for.
  echo "== lockstep demo: 4 ranks of examples/smoke (the example trainer is not built)"
  exec "$lockstep" run -n 4 --run-dir "$run_dir" -- "$build/examples/smoke/lockstep_smoke" \
    --steps 8 --signal-rank 1 --signal-step 3
fi

cat <<'TEXT'
== lockstep demo
   4 ranks train an MLP classifier (examples/mlp) on a synthetic task, data-parallel:
   gradients are averaged with GradSync, checkpoints are written every 100 steps.
   At step 250 the launcher kills rank 2 with SIGKILL (--inject-failure 2:250).
   Watch it: the launcher names the failed rank, stops the job, restarts it,
   and the trainer resumes from the checkpoint of step 200.

$ LOCKSTEP_CHECKPOINT_EVERY=100 lockstep run -n 4 --inject-failure 2:250 -- mlp --steps 600
TEXT
LOCKSTEP_CHECKPOINT_EVERY=100 "$lockstep" run -n 4 --run-dir "$run_dir" --total-steps 600 \
  --status-interval 2 --inject-failure 2:250 -- "$mlp" --steps 600 --step-ms 10
echo
echo "== what happened, attempt by attempt ($run_dir/attempts.jsonl):"
sed 's/"tail":\[[^]]*\]/"tail":[...]/' "$run_dir/attempts.jsonl"
echo "== checkpoints kept (newest 3): $(ls "$run_dir/checkpoints" | tr '\n' ' ')"
"$lockstep" report "$run_dir" 2>/dev/null
"$lockstep" trace "$run_dir" 2>/dev/null
echo "== the run's report, one page for any browser: $run_dir/report.html"
echo "== its timeline, every rank and attempt: $run_dir/trace.json (open it in https://ui.perfetto.dev)"
