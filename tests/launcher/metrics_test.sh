#!/usr/bin/env bash
# `lockstep run --metrics-port`: Prometheus metrics while a job runs, through
# a failure and a restart, checked with curl and promtool; bad options and a
# taken port stop the run before it starts; hostile clients do not stop the
# server or the run.
# Usage: metrics_test.sh <lockstep binary> <toy_trainer binary> <scratch dir>
set -u
lockstep=$1 trainer=$2 scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
# shellcheck source=../support/checks.sh
. "$(dirname "$0")/../support/checks.sh"
for tool in curl promtool ss; do
  command -v $tool >/dev/null || { echo "FAIL: $tool is missing (make deps installs it)"; exit 1; }
done

# Usage errors: nothing starts, the message says what to do.
"$lockstep" run -n 1 --run-dir "$scratch/usage" --metrics-port 70000 -- "$trainer" >"$scratch/usage.log" 2>&1
expect_rc 2 $? "a port above 65535 is a usage error"
"$lockstep" run -n 1 --run-dir "$scratch/usage" --metrics-port 0 --metrics-address my-host \
  -- "$trainer" >"$scratch/usage.log" 2>&1
expect_rc 2 $? "an address that is not IPv4 is a usage error"
expect_grep "metrics-address 'my-host' is not an IPv4 address" "$scratch/usage.log" "the address is named"
"$lockstep" run -n 1 --run-dir "$scratch/usage" --metrics-address 127.0.0.1 -- "$trainer" \
  >"$scratch/usage.log" 2>&1
expect_rc 2 $? "--metrics-address without --metrics-port is a usage error"

# A run with a failure: rank 1 is killed at step 20, the job restarts.
dir=$scratch/run
LOCKSTEP_CHECKPOINT_EVERY=10 "$lockstep" run -n 2 --run-dir "$dir" --metrics-port 0 \
  --total-steps 120 --inject-failure 1:20 -- "$trainer" --steps 120 --step-ms 100 >"$dir.log" 2>&1 &
launcher=$!
for _ in $(seq 100); do grep -q "metrics at http" "$dir.log" 2>/dev/null && break; sleep 0.1; done
url=$(grep -oE "http://127\.0\.0\.1:[0-9]+/metrics" "$dir.log" | head -1)
check "the launcher prints where the metrics are ($url)" '[ -n "$url" ]'
port=${url##*:}
port=${port%/metrics}

# Only the launcher listens, only on loopback: the ranks do not inherit the socket.
for _ in $(seq 100); do grep -q "starting at step" "$dir.log" 2>/dev/null && break; sleep 0.1; done
ss -Hltnp "sport = :$port" >"$scratch/listeners.txt"
check "one listener, on 127.0.0.1 ($(tr -s ' ' <"$scratch/listeners.txt"))" \
  '[ "$(wc -l <"$scratch/listeners.txt")" -eq 1 ] && grep -q "127.0.0.1:$port" "$scratch/listeners.txt"'
expect_no_grep "toy_trainer|mpirun|prted" "$scratch/listeners.txt" "no rank or mpirun holds the port"

# A second run on the same port stops before starting anything.
"$lockstep" run -n 1 --run-dir "$scratch/second" --metrics-port "$port" -- "$trainer" \
  >"$scratch/second.log" 2>&1
expect_rc 2 $? "a port in use is a usage error"
expect_grep "metrics-port $port on 127.0.0.1: cannot listen there \(Address already in use\); another program has the port" \
  "$scratch/second.log" "the error names the port and what to do"
check "the second run started nothing and made no run directory" '[ ! -e "$scratch/second" ]'

# Hostile clients: idle connections, a huge request line, a POST, a wrong path.
exec {idle1}<>"/dev/tcp/127.0.0.1/$port" {idle2}<>"/dev/tcp/127.0.0.1/$port" \
  {idle3}<>"/dev/tcp/127.0.0.1/$port" {idle4}<>"/dev/tcp/127.0.0.1/$port"
head -c 1048576 /dev/zero | tr '\0' 'A' | timeout 5 curl -s -o /dev/null --max-time 4 \
  -H "X-Junk: $(head -c 100000 /dev/zero | tr '\0' 'B')" "http://127.0.0.1:$port/$(head -c 5000 /dev/zero | tr '\0' 'C')"
code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 4 -X POST -d x=1 "$url")
check "a POST gets 405 (got $code)" '[ "$code" = 405 ]'
code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 4 "http://127.0.0.1:$port/secrets")
check "another path gets 404 (got $code)" '[ "$code" = 404 ]'

# Scraped while the first attempt trains.
for _ in $(seq 100); do
  curl -s --max-time 2 "$url" >"$scratch/first.txt"
  grep -q '^lockstep_rank_step{rank="1"' "$scratch/first.txt" && grep -q "^lockstep_step " "$scratch/first.txt" && break
  sleep 0.1
done
check "a scrape answers while idle connections are held" '[ -s "$scratch/first.txt" ]'
exec {idle1}>&- {idle2}>&- {idle3}>&- {idle4}>&-
curl -s --max-time 2 -D "$scratch/headers.txt" -o /dev/null "$url"
expect_grep "Content-Type: text/plain; version=0.0.4" "$scratch/headers.txt" "the exposition format's content type"
promtool check metrics <"$scratch/first.txt" >"$scratch/promtool-first.txt" 2>&1
expect_rc 0 $? "promtool accepts the metrics of the first attempt"
expect_grep '^lockstep_attempt 0$' "$scratch/first.txt" "the first attempt"
expect_grep '^lockstep_ranks_reporting 2$' "$scratch/first.txt" "both ranks report"
expect_grep '^lockstep_rank_heartbeat_age_seconds\{rank="1",host="[^"]+"\} 0\.[0-9]' "$scratch/first.txt" "rank 1's heartbeat is fresh"
expect_grep '^lockstep_training_metric\{name="value"\} ' "$scratch/first.txt" "the program's metric"
expect_grep '^lockstep_total_steps 120$' "$scratch/first.txt" "the total steps"

# Scraped after the restart, once a checkpoint of the second attempt exists.
for _ in $(seq 200); do
  curl -s --max-time 2 "$url" >"$scratch/second.txt"
  grep -q '^lockstep_attempt 1$' "$scratch/second.txt" && grep -q '^lockstep_rank_step{rank="1",host="[^"]*"} [1-9]' "$scratch/second.txt" &&
    grep -qE '^lockstep_checkpoint_last_step (29|[3-9][0-9])$' "$scratch/second.txt" && break
  sleep 0.1
done
promtool check metrics <"$scratch/second.txt" >"$scratch/promtool-second.txt" 2>&1
expect_rc 0 $? "promtool accepts the metrics after the restart"
expect_grep '^lockstep_attempt 1$' "$scratch/second.txt" "the second attempt"
expect_grep '^lockstep_restarts_total 1$' "$scratch/second.txt" "one restart"
expect_grep '^lockstep_checkpoint_age_seconds [0-9]' "$scratch/second.txt" "the checkpoint's age"
expect_grep '^lockstep_goodput_seconds\{category="lost"\} [0-9.e-]+$' "$scratch/second.txt" "lost time"
lost=$(awk '/^lockstep_goodput_seconds\{category="lost"\}/ { print $2 }' "$scratch/second.txt")
check "the steps recomputed after the failure count as lost ($lost s)" \
  "awk -v x='$lost' 'BEGIN { exit !(x > 0) }'"
wait "$launcher"
expect_rc 0 $? "the run completes"
code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 2 "$url")
check "the port is closed when the run ends (got $code)" '[ "$code" = 000 ]'
finish
