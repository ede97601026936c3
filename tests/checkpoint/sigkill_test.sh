#!/usr/bin/env bash
# SIGKILL of one rank in the middle of a real 3-rank save (whole tensors and
# sharded chunks) leaves the last committed step loadable (at another world
# size, into chunks cut for it), and the torn save is ignored and then
# cleaned up.
# Usage: sigkill_test.sh <checkpoint_kill_saver> <scratch dir> <mpiexec...>
set -u
saver=$1 scratch=$2
shift 2
rm -rf "$scratch"
mkdir -p "$scratch"
dir="$scratch/ckpt"
log="$scratch/save.log"

"$@" -n 3 "$saver" save "$dir" >"$log" 2>&1 &
job=$!
# Wait for three committed steps, so there is history to protect.
for _ in $(seq 1 600); do
  grep -q "^committed 3$" "$log" && break
  kill -0 $job 2>/dev/null || break
  sleep 0.1
done
if ! grep -q "^committed 3$" "$log"; then
  echo "FAIL: the saver did not commit 3 steps"; cat "$log"; kill -9 $job 2>/dev/null; exit 1
fi
victim=$(awk '$1 == "pid" && $2 == 1 {print $3}' "$log")
# Land the kill inside a save: wait until a temporary directory is there.
for _ in $(seq 1 100); do
  ls "$dir" | grep -q '\.tmp-' && break
  sleep 0.02
done
sleep "0.$((RANDOM % 3))"
in_flight=$(ls "$dir" | grep '\.tmp-' || true)
kill -9 "$victim"
committed_before=$(grep '^committed' "$log" | tail -1 | awk '{print $2}')
echo "killed rank 1 (pid $victim) after step $committed_before was committed; in flight: ${in_flight:-none}"
timeout 60 tail --pid=$job -f /dev/null
wait $job
echo "the job ended with status $?"

ls "$dir"
status=0
output=$("$@" -n 2 "$saver" restore "$dir" 2>&1)
echo "$output" | tail -5
restored=$(echo "$output" | awk '$1 == "restored" {print $2}')
if [ -z "$restored" ]; then
  echo "FAIL: nothing was restored"; status=1
elif [ "$restored" -lt "$committed_before" ]; then
  echo "FAIL: restored step $restored, but step $committed_before was committed"; status=1
else
  echo "ok: restored step $restored (last reported committed: $committed_before)"
fi
if ls "$dir" | grep -q '\.'; then
  echo "FAIL: debris left after the restart:"; ls "$dir"; status=1
fi
exit $status
