#!/usr/bin/env bash
# A rank that skips a collective must not leave the others waiting forever:
# with a 2 s collective timeout their watchdog reports the collective and the
# rank that never reached it, and aborts the job with a non-zero status.
# Usage: watchdog_test.sh <watchdog_skip binary> <mpiexec command...>
set -u
binary=$1
shift
mpiexec=("$@")
limit=40
status=0
log=$(mktemp)
run_dir=$(mktemp -d)
trap 'rm -rf "$log" "$run_dir"' EXIT

start=$(date +%s)
LOCKSTEP_RUN_DIR=$run_dir LOCKSTEP_COLLECTIVE_TIMEOUT=2 timeout 120 "${mpiexec[@]}" -n 4 "$binary" skip \
  >"$log" 2>&1
rc=$?
end=$(date +%s)
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
  echo "FAIL skipped collective: exit status $rc (0 = unnoticed, 124 = job hung)"; status=1
elif [ $((end - start)) -gt $limit ]; then
  echo "FAIL skipped collective: took $((end - start)) s (limit $limit s)"; status=1
else
  for needle in "allreduce (4096 bytes, f32, sum) #3 on backend mpi did not finish within 2 s" \
                "ranks that have not reached #3: 1 " "rank 1 last started #2"; do
    if ! grep -qF -- "$needle" "$log"; then
      echo "FAIL skipped collective: output lacks '$needle'"; status=1
    fi
  done
fi
# Before aborting, each waiting rank wrote its flight recorder's records:
# #3 started and not done, the two before it done.
for rank in 0 2 3; do
  record=$run_dir/trace/local/attempt-0/flight-rank-$rank.json
  if ! python3 -c '
import json, sys
dump = json.load(open(sys.argv[1]))
assert dump["reason"].startswith("the watchdog: allreduce (4096 bytes, f32, sum) #3"), dump["reason"]
records = next(c["records"] for c in dump["channels"] if c["channel"].startswith("mpi"))
states = [(r["seq"], r["state"], r["op"], r["bytes"], r["dtype"]) for r in records]
assert states == [(1, "done", "allreduce", 4096, "f32"), (2, "done", "allreduce", 4096, "f32"),
                  (3, "started", "allreduce", 4096, "f32")], states
' "$record" 2>"$log.check"; then
    echo "FAIL skipped collective: rank $rank's flight record: $(tail -1 "$log.check")"; status=1
  fi
done
rm -f "$log.check"
if [ -e "$run_dir/trace/local/attempt-0/flight-rank-1.json" ]; then
  echo "FAIL skipped collective: rank 1, which waited elsewhere, wrote a flight record"; status=1
fi
if [ "$status" -eq 0 ]; then
  echo "ok   skipped collective: exit $rc after $((end - start)) s; flight records of ranks 0, 2, 3"
else
  sed 's/^/     | /' "$log" | tail -30
fi

if ! LOCKSTEP_COLLECTIVE_TIMEOUT=2 timeout 120 "${mpiexec[@]}" -n 4 "$binary" ok >"$log" 2>&1; then
  echo "FAIL healthy job: non-zero exit"; status=1
  sed 's/^/     | /' "$log" | tail -30
else
  echo "ok   healthy job exits 0"
fi
exit $status
