#!/usr/bin/env bash
# `lockstep plan` end to end: the table, --json, --from a run directory,
# --simulate, --help's sources, and bad input (exit 2, the input named).
# Usage: plan_cli_test.sh <lockstep binary> <scratch dir>
set -u
lockstep=$1 scratch=$2
rm -rf "$scratch"
mkdir -p "$scratch"
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }
# expect <exit code> <pattern> <what> -- <plan arguments>: output in $scratch/out
expect() {
  local wanted=$1 pattern=$2 what=$3
  shift 4
  "$lockstep" plan "$@" >"$scratch/out" 2>&1
  local got=$?
  if [ "$got" -ne "$wanted" ]; then
    fail "$what: exit $got, wanted $wanted"
    sed 's/^/    | /' "$scratch/out" | tail -20
  elif ! grep -qE -- "$pattern" "$scratch/out"; then
    fail "$what: /$pattern/ not in the output"
    sed 's/^/    | /' "$scratch/out" | tail -20
  else
    ok "$what (exit $got)"
  fi
}
# json_check <python expression over d> <what> -- <plan arguments>
json_check() {
  local expression=$1 what=$2
  shift 3
  if "$lockstep" plan --json "$@" >"$scratch/out.json" 2>"$scratch/err" &&
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($expression) else 1)" \
      "$scratch/out.json"; then
    ok "$what"
  else
    fail "$what"
    sed 's/^/    | /' "$scratch/out.json" "$scratch/err" | head -40
  fi
}

# The table and the issue's first-order example (MTBF 3 h, C 5 s, R 600 s).
expect 0 "Young/Daly interval +329 s" "table: interval" -- --mtbf-hours 3 --save-stall 5 --restart-cost 600
expect 0 "expected goodput +91.40%" "table: goodput" -- --mtbf-hours 3 --save-stall 5 --restart-cost 600
expect 0 "lever that buys the most +halve the restart cost" "table: lever" -- --mtbf-hours 3 --save-stall 5 --restart-cost 600
json_check 'abs(d["configurations"][0]["interval_seconds"] - 805) < 1 and abs(d["configurations"][0]["goodput"] - 0.870) < 0.0005' \
  "json: C 30 s, R 600 s gives 805 s and 0.870" -- --mtbf-hours 3 --save-stall 30 --restart-cost 600
json_check 'd["inputs"]["nodes"] == 2048 and abs(d["inputs"]["mtbf_seconds"] - 54 * 86400 / 419) < 1e-6' \
  "json: the default rate is Llama 3's" -- --save-stall 5 --restart-cost 600
json_check 'len(d["configurations"]) == 2 and d["configurations"][1]["name"] == "memory+disk" and "simulation" in d["configurations"][1] and 0 < d["configurations"][1]["simulation"]["goodput"]["p5"] <= d["configurations"][1]["simulation"]["goodput"]["p95"] < 1' \
  "json: tiers side by side, simulated" -- --save-stall 30 --restart-cost 600 --memory-save-stall 2 \
  --memory-restart-cost 120 --simulate --runs 100 --weibull-shape 0.8 --spares 4 --time-limit-hours 48

# The same seed gives the same figures.
"$lockstep" plan --save-stall 5 --restart-cost 600 --simulate --runs 200 --seed 7 --json |
  grep -v elapsed_seconds >"$scratch/a.json"
"$lockstep" plan --save-stall 5 --restart-cost 600 --simulate --runs 200 --seed 7 --json --threads 1 |
  grep -v elapsed_seconds >"$scratch/b.json"
if cmp -s "$scratch/a.json" "$scratch/b.json"; then ok "seeded: the same figures"; else fail "seeded runs differ"; fi

# --help cites the sources of the default rate.
expect 0 "Llama 3 .*466 job" "--help: Llama 3" -- --help
expect 0 "1.8 h" "--help: Meta's cluster study" -- --help

# --from a run directory: C = stall / saves, R = mean time to recovery.
mkdir -p "$scratch/run"
cat >"$scratch/run/summary.json" <<'JSON'
{"summary_version": 1, "outcome": "success", "exit_code": 0, "checkpoints": 20,
 "checkpoint_stall_seconds": 1.4, "restarts": 3, "mean_time_to_recovery_seconds": 7.8}
JSON
json_check 'abs(d["inputs"]["disk"]["save_stall_seconds"] - 0.07) < 1e-12 and d["inputs"]["disk"]["restart_cost_seconds"] == 7.8 and d["inputs"]["from"]["checkpoints"] == 20' \
  "--from takes C and R from summary.json" -- --from "$scratch/run"
json_check 'd["inputs"]["disk"]["restart_cost_seconds"] == 60' "a flag wins over --from" -- \
  --from "$scratch/run" --restart-cost 60

# Bad input: exit 2, the input named.
expect 2 "--gpus must be at least 1" "zero GPUs" -- --gpus 0 --save-stall 5 --restart-cost 600
expect 2 "--gpus must be at least 1" "negative GPUs" -- --gpus -16 --save-stall 5 --restart-cost 600
expect 2 "--gpus 100 is not a multiple of --gpus-per-node 8" "GPUs not whole nodes" -- \
  --gpus 100 --save-stall 5 --restart-cost 600
expect 2 "--failures-per-node-day must be a positive" "zero rate" -- \
  --failures-per-node-day 0 --save-stall 5 --restart-cost 600
expect 2 "--mtbf-hours must be a positive" "negative MTBF" -- --mtbf-hours -3 --save-stall 5 --restart-cost 600
expect 2 "--save-stall must be a positive" "zero save stall" -- --save-stall 0 --restart-cost 600
expect 2 "--restart-cost must be a positive" "negative restart cost" -- --save-stall 5 --restart-cost -1
expect 2 "--save-stall is needed" "no costs" --
expect 2 "give both or neither" "half a memory tier" -- --save-stall 5 --restart-cost 600 --memory-save-stall 1
expect 2 "--runs must be at least 1" "zero runs" -- --save-stall 5 --restart-cost 600 --simulate --runs 0
expect 2 "--weibull-shape must be a positive" "zero shape" -- --save-stall 5 --restart-cost 600 --simulate --weibull-shape 0
expect 2 "cannot read .*/nowhere/summary.json" "--from a missing run" -- --from "$scratch/nowhere"
mkdir -p "$scratch/failed" "$scratch/older" "$scratch/broken"
sed 's/"success"/"failed"/; s/"exit_code": 0/"exit_code": 1/' "$scratch/run/summary.json" >"$scratch/failed/summary.json"
expect 2 "failed/summary.json is from a run that did not succeed" "--from a failed run" -- --from "$scratch/failed"
sed 's/"summary_version": 1, //' "$scratch/run/summary.json" >"$scratch/older/summary.json"
expect 2 "older/summary.json has summary_version \(none\).*older lockstep" "--from an older format" -- \
  --from "$scratch/older"
echo '{"summary_version": 1, "outcome": "success"' >"$scratch/broken/summary.json"
expect 2 "broken/summary.json is not a JSON object" "--from a damaged summary" -- --from "$scratch/broken"
expect 2 "could not convert|Could not convert|not a valid|invalid" "a number that is not one" -- \
  --gpus lots --save-stall 5 --restart-cost 600

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
