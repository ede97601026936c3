#!/usr/bin/env bash
# `lockstep trace`: the example trainer at 4 ranks with a rank killed at
# step 45; the merged timeline is valid Trace Event JSON whose spans nest,
# with both attempts, the kill and the restart. Damaged and hostile files in
# the trace directory are skipped and named; LOCKSTEP_TRACE=off records
# nothing; a symbolic link in a timeline's place is not followed.
# Usage: trace_test.sh <lockstep binary> <example trainer> <toy_trainer> <python> <scratch dir>
#                      <mpiexec...>
set -u
lockstep=$1 mlp=$2 toy=$3 python=$4 scratch=$5
shift 5
mpiexec=("$@")
rm -rf "$scratch"
mkdir -p "$scratch"
# shellcheck source=../support/checks.sh
. "$(dirname "$0")/../support/checks.sh"
checker=$(dirname "$0")/check_trace.py
export LOCKSTEP_CHECKPOINT_EVERY=10

dir=$scratch/run
timeout 300 "$lockstep" run -n 4 --run-dir "$dir" --inject-failure 2:45 -- \
  "$mlp" --steps 80 --hidden 64 --step-ms 20 >"$dir.log" 2>&1
expect_rc 0 $? "the run with a kill completes"
"$lockstep" trace "$dir" >"$scratch/trace.out" 2>&1
expect_rc 0 $? "lockstep trace merges it"
expect_grep "events of 4 rank\(s\) in 2 attempt\(s\) over 1 start\(s\)" "$scratch/trace.out" "it says what it merged"
expect_grep "ui.perfetto.dev" "$scratch/trace.out" "and how to open it"
"$python" "$checker" "$dir/trace.json" --ranks 4 --attempts 2 --killed-rank 2 >"$scratch/check.out" 2>&1
expect_rc 0 $? "valid Trace Event JSON, nested spans, both attempts, the kill and the restart"
grep FAIL "$scratch/check.out"

# A second start of lockstep run in the same directory is a second session.
timeout 300 "$lockstep" run -n 2 --run-dir "$dir" -- "$mlp" --steps 85 --hidden 64 >"$dir.2.log" 2>&1
expect_rc 0 $? "a second start in the same run directory completes"
"$lockstep" trace "$dir" -o "$scratch/both.json" >"$scratch/trace2.out" 2>&1
expect_grep "in 3 attempt\(s\) over 2 start\(s\)" "$scratch/trace2.out" "both starts are merged"
"$python" "$checker" "$scratch/both.json" >/dev/null
expect_rc 0 $? "the merged starts are valid and nest"

# A hang: rank 2 is stopped (SIGSTOP) at step 40 while the others wait in
# its all-reduce. The launcher asks the ranks for their flight records and
# names the collective rank 2 never joined.
hang=$scratch/hang
timeout 300 "$lockstep" run -n 4 --run-dir "$hang" --hang-timeout 3 --inject-failure 2:40:STOP -- \
  "$mlp" --steps 60 --hidden 64 --step-ms 20 >"$hang.log" 2>&1
expect_rc 0 $? "the run with a hang completes after a restart"
# The others wait in the runtime's decision or in GradSync's all-reduce,
# whichever rank 2 stopped in or before (a rank that got rank 2's part of a
# collective may finish it and wait in the next); rank 2 writes its own
# records only once the launcher's stop resumes it, too late to count.
expect_grep "flight recorder: collective #[0-9]+ on (runtime|mpi) [0-9]+ \((decision|allreduce) \([0-9]+ bytes.*\)( never joined by rank 2; ranks? [0-9, -]+ waits? in it|: ranks? [0-9, -]+ waits? in it; no flight record from rank 2 \(stopped)" \
  "$hang.log" "the launcher names the collective and the rank that never joined it"
expect_grep '"flight_recorder":\{.*"(not_joined|no_record)":\[2\]' "$hang/attempts.jsonl" "attempts.jsonl records it"
check "the waiting ranks wrote their records" '[ "$(ls "$hang"/trace/*/attempt-0/flight-rank-*.json | wc -l)" -ge 3 ]'
"$python" -c '
import json, sys
dump = json.load(open(sys.argv[1]))
assert dump["rank"] == 0 and "hung" in dump["reason"], dump["reason"]
stuck = [c["records"][-1] for c in dump["channels"] if c["records"] and c["records"][-1]["state"] == "started"]
assert len(stuck) == 1, dump["channels"]
last = stuck[0]
assert last["op"] in ("allreduce", "decision") and last["bytes"] > 0 and last["dtype"], last
assert last["started_ns"] > 0 and last["done_ns"] == 0, last
for channel in dump["channels"]:
    assert all(r["state"] == "done" and r["done_ns"] >= r["started_ns"] > 0 for r in channel["records"][:-1])
' "$(ls "$hang"/trace/*/attempt-0/flight-rank-0.json)"
expect_rc 0 $? "rank 0's record: the op, bytes, dtype, state and times of its collectives"

# Damaged and hostile files: skipped and counted, never followed.
session=$(ls -d "$dir"/trace/2*/ | head -1)
file=$session/attempt-0/rank-1.jsonl
{
  echo 'not json'
  echo '{"ph":"X","cat":"step","name":"no time","tid":0}'
  echo '{"ph":"X","cat":"step","name":"negative","ts":5,"dur":-1,"tid":0}'
  echo '{"ph":"X","cat":"step","name":"big tid","ts":5,"dur":1,"tid":99999}'
  echo '{"ph":"A","cat":"collective","name":"no id","ts":5,"dur":1,"tid":0}'
  echo '{"ph":"Q","cat":"x","name":"unknown phase","ts":5,"tid":0}'
  head -c 100000 /dev/zero | tr '\0' 'x'
  echo
  printf '{"ph":"X","cat":"step","name":"torn'
} >>"$file"
mkdir -p "$session/attempt-0" "$session/attempt-x"
echo '{"rank":"zero"}' >"$session/attempt-0/rank-9.jsonl"
echo 'secret' >"$scratch/secret.txt"
ln -s "$scratch/secret.txt" "$session/attempt-0/rank-7.jsonl"
ln -s /etc "$session/attempt-5"
started=$("$python" -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["started"])' \
  "$session/launcher.jsonl")
echo "{\"ph\":\"i\",\"cat\":\"failure\",\"name\":\"<img src=x onerror=alert(1)> <b>bold\",\"ts\":$((started + 1000))}" \
  >>"$session/launcher.jsonl"
echo '{"ph":"i","cat":"failure","name":"before the run","ts":1}' >>"$session/launcher.jsonl"
"$lockstep" trace "$dir" -o "$scratch/damaged.json" >"$scratch/damaged.out" 2>&1
expect_rc 0 $? "a damaged trace directory still merges"
expect_grep "9 damaged or unknown line\(s\) skipped" "$scratch/damaged.out" "the damaged lines are counted"
expect_grep "rank-9.jsonl: no valid first line; left out" "$scratch/damaged.out" "a file without a header is named"
expect_no_grep "secret" "$scratch/damaged.json" "a symbolic link is not followed"
"$python" "$checker" "$scratch/damaged.json" --ranks 4 >/dev/null
expect_rc 0 $? "what remains is valid and nests"

# lockstep report: one self-contained page, rendered by a real browser.
"$lockstep" report "$dir" >"$scratch/report.out" 2>&1
expect_rc 0 $? "lockstep report writes the page"
page=$dir/report.html
expect_no_grep '<(script|img|link|iframe|object)|(src|href)="|@import|url\(' "$page" "it loads nothing: no script, no link, no remote resource"
expect_no_grep "<img src=x|<b>bold" "$page" "text from the run directory is escaped"
"$lockstep" report "$hang" -o "$scratch/hang.html" >/dev/null 2>&1
expect_rc 0 $? "the hung run's page is written too"
browser=(chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars
  --user-data-dir="$scratch/browser" --window-size=1200,1400)
timeout 120 "${browser[@]}" --screenshot="$scratch/report.png" "file://$page" >"$scratch/browser.log" 2>&1
expect_rc 0 $? "headless Chromium renders it"
"$python" - "$scratch/report.png" <<'PY'
import sys
from PIL import Image
image = Image.open(sys.argv[1]).convert("RGB")
colors = image.getcolors(maxcolors=1 << 24)
inked = sum(count for count, color in colors if sum(color) < 3 * 235)
share = inked / (image.width * image.height)
print(f"screenshot: {len(colors)} colours, {share:.1%} inked")
sys.exit(0 if len(colors) > 50 and share > 0.03 else 1)
PY
expect_rc 0 $? "the screenshot is not blank"
timeout 120 "${browser[@]}" --dump-dom "file://$page" >"$scratch/report.dom" 2>/dev/null
for name in "start 1, attempt 0" "start 1, attempt 1" "start 2, attempt 0"; do
  expect_grep "$name" "$scratch/report.dom" "the rendered page names $name"
done
expect_grep "rank 2 on [^:]+: killed by signal 9" "$scratch/report.dom" "and the root cause of the failed attempt"
expect_grep "Goodput <b>[0-9.]+%" "$scratch/report.dom" "and the goodput"
shares=$("$python" -c 'import re, sys; print(sum(float(x) for x in re.findall(r"<td>([0-9.]+)%</td>", open(sys.argv[1]).read())))' \
  "$scratch/report.dom")
check "the goodput's parts add up to the wall time ($shares %)" \
  "\"$python\" -c 'import sys; sys.exit(0 if 99.4 < $shares < 100.6 else 1)'"
timeout 120 "${browser[@]}" --dump-dom "file://$scratch/hang.html" >"$scratch/hang.dom" 2>/dev/null
expect_grep "flight recorder:</i> collective #[0-9]+ on" "$scratch/hang.dom" "the hung run's page has the flight recorder's verdict"

# Usage errors.
"$lockstep" report "$scratch/empty" >"$scratch/usage.out" 2>&1
expect_rc 2 $? "lockstep report on a directory without trace/ is a usage error"
"$lockstep" trace "$scratch/nowhere" >"$scratch/usage.out" 2>&1
expect_rc 2 $? "a missing directory is a usage error"
mkdir -p "$scratch/empty"
"$lockstep" trace "$scratch/empty" >"$scratch/usage.out" 2>&1
expect_rc 2 $? "a directory without trace/ is a usage error"
expect_grep "has no trace/ directory: run the job with .lockstep run --run-dir" "$scratch/usage.out" "it says how to get one"
cp "$dir/trace.json" "$scratch/before.json"
"$lockstep" trace "$dir" -o "$dir" >"$scratch/usage.out" 2>&1
expect_rc 2 $? "an output that is a directory is a usage error"
expect_same_file "$scratch/before.json" "$dir/trace.json" "the earlier trace.json is untouched"

# LOCKSTEP_TRACE=off: the ranks record nothing; the launcher still does.
off=$scratch/off
LOCKSTEP_TRACE=off timeout 300 "$lockstep" run -n 2 --run-dir "$off" -- "$mlp" --steps 20 --hidden 64 \
  >"$off.log" 2>&1
expect_rc 0 $? "a run with LOCKSTEP_TRACE=off completes"
check "no rank wrote a timeline" '[ -z "$(find "$off/trace" -name "rank-*")" ]'
check "the launcher's events are there" '[ -n "$(find "$off/trace" -name launcher.jsonl)" ]'

# Outside lockstep run with LOCKSTEP_TRACE=on the path is predictable: a
# symbolic link planted there is refused, and training goes on.
local_dir=$scratch/local
mkdir -p "$local_dir/trace/local/attempt-0"
echo 'precious' >"$scratch/victim.txt"
ln -s "$scratch/victim.txt" "$local_dir/trace/local/attempt-0/rank-0.jsonl"
LOCKSTEP_TRACE=on LOCKSTEP_RUN_DIR=$local_dir timeout 120 "${mpiexec[@]}" -n 1 "$toy" --steps 5 \
  >"$local_dir.log" 2>&1
expect_rc 0 $? "a rank whose timeline file is a planted link still trains"
expect_grep "cannot create .*rank-0.jsonl .*training goes on without a timeline" "$local_dir.log" "it warns"
check "the link's target is untouched" '[ "$(cat "$scratch/victim.txt")" = precious ]'
finish
