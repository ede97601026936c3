#!/usr/bin/env bash
# Recovery benchmark of `lockstep run` across hosts: time to recovery when a
# rank is killed and when a whole host is lost, on hosts made of Linux
# namespaces by tests/support/hosts (each its own address, hostname and
# /dev/shm; one kernel, the machine's cores shared). Cases, each repeated
# REPEATS times (interleaved), median reported:
#  1. one host, 4 ranks (no host list): rank 2 SIGKILLed, the baseline;
#  2. 2 hosts x 2 ranks: rank 2 (on the second host) SIGKILLed;
#  3. 2 hosts x 2 ranks, the second host lost (hosts-lose.sh: link down,
#     every process in it killed), a spare host in the list: same world size;
#  4. the same without a spare: the run shrinks to 2 ranks on one host;
#  5. the second host cut off (link down only, its processes alive), a spare
#     in the list, default --host-timeout: found by the ranks' silence.
# The same model everywhere: lockstep-mlp --hidden 256,256, a checkpoint
# every 10 steps, slowed to ~60 ms a step so that a host can be lost mid-run;
# the failure strikes at step 60 (the kill) or right after the checkpoint of
# step 59 is committed (the loss). Every run must end with exit code 0 and
# exactly one recovery, with the root cause the case expects; anything else
# stops the benchmark.
#
# Usage: bench/recovery/hosts.sh [build dir] [repeats]
# Needs root (namespaces, a bridge); exits 77 with the reason otherwise.
# Waits while another set of namespace hosts is up: their names (node1, ...)
# are machine-wide, and two sets confuse the launcher's choice of address.
set -euo pipefail
build=${1:-build}
repeats=${2:-3}
# 2 + 3 x REPEATS hosts, at most 200.
if ! [[ $repeats =~ ^[1-9][0-9]?$ ]] || [ "$repeats" -gt 66 ]; then
  echo "usage: $0 [build dir] [repeats, 1..66]" >&2
  exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
harness=$here/../../tests/support/hosts

if [ "$(id -u)" -ne 0 ]; then
  echo "hosts.sh: skipped: making hosts out of namespaces needs root"
  exit 77
fi
for tool in ip nsenter unshare python3; do
  command -v "$tool" >/dev/null || { echo "hosts.sh: skipped: $tool is not installed"; exit 77; }
done

scratch=$(mktemp -d /tmp/lockstep-recovery-hosts.XXXXXX)
dir=$scratch/hosts
hosts_made=false
# shellcheck disable=SC2317 # the trap calls it
cleanup() {
  local status=$?
  if [ -n "${run_pid:-}" ] && kill -0 "$run_pid" 2>/dev/null; then
    kill -TERM "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  if $hosts_made && ! "$harness/hosts-down.sh" "$dir" >/dev/null 2>&1; then
    echo "hosts.sh: hosts-down reported survivors (see $dir)" >&2
    status=1
  fi
  if [ "$status" -eq 0 ]; then rm -rf "$scratch"; else echo "hosts.sh: logs kept in $scratch" >&2; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
  echo "hosts.sh: error: $*" >&2
  exit 1
}

# Copies: a rebuild while the benchmark runs must not change or remove them.
mkdir "$scratch/bin"
cp "$build/launcher/lockstep" "$build/examples/mlp/lockstep-mlp" "$scratch/bin/"
lockstep=$scratch/bin/lockstep
mlp=$scratch/bin/lockstep-mlp

export OMPI_MCA_mpi_yield_when_idle=1
export LOCKSTEP_CHECKPOINT_EVERY=10
trainer=("$mlp" --hidden "256,256" --steps 150 --step-ms 60)
kill_step=60       # --inject-failure 2:60
lose_after=59      # lose the host once checkpoints/step-59 is committed

# One host stays, one is the spare, and each lost or cut host is a fresh one:
# 2 + 3 x REPEATS hosts, made once.
count=$((2 + 3 * repeats))
for ((waited = 0; ; waited += 30)); do
  if ! compgen -G "/run/lockstep-hosts/slot-*" >/dev/null; then break; fi
  [ "$waited" -lt 1800 ] || die "other namespace hosts stayed up for 30 minutes: $(cat /run/lockstep-hosts/slot-*)"
  echo "# other namespace hosts are up ($(cat /run/lockstep-hosts/slot-* | tr '\n' ' ')); waiting"
  sleep 30
done
hosts_made=true
"$harness/hosts-up.sh" "$dir" "$count" >"$scratch/hosts-up.log" 2>&1 || {
  rc=$?
  hosts_made=false
  cat "$scratch/hosts-up.log" >&2
  [ "$rc" -eq 77 ] && echo "hosts.sh: skipped: hosts cannot be made here"
  exit "$rc"
}
# shellcheck source=/dev/null
. "$dir/env.sh"
read -r -a names <<<"$HOSTS_NAMES"
read -r -a addrs <<<"$HOSTS_ADDRS"
# In the root namespace nodeI resolves to the first set's address.
resolved=$(getent ahostsv4 node1 | awk 'NR == 1 { print $1 }')
[ "$resolved" = "${addrs[0]}" ] || die "node1 resolves to $resolved, not to this set's ${addrs[0]}: another set of hosts came up"

keep=${names[0]}
spare=${names[$((count - 1))]}
next_victim=1
hostfile() { # hostfile NAME HOST...: 2 slots per host
  local name=$1 host
  shift
  for host in "$@"; do echo "$host slots=2"; done >"$scratch/$name.hosts"
  echo "$scratch/$name.hosts"
}
one_host_env=(env -u OMPI_MCA_plm_rsh_agent -u OMPI_MCA_btl -u OMPI_MCA_btl_tcp_if_include
  -u OMPI_MCA_oob_tcp_if_include)

echo "# recovery across hosts: $(nproc) cores, $count namespace hosts on one kernel, $repeats repeats, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# model: lockstep-mlp --hidden 256,256 --steps 150 --step-ms 60, checkpoint every 10 steps, 4 ranks"

# record NAME CASE VICTIM LOSS_TIME RC: checks a finished run, appends its
# figures to runs.jsonl and prints them.
record() {
  python3 - "$scratch/$1" "$2" "$3" "$4" "$5" "$keep" "$spare" "$scratch/runs.jsonl" <<'PY' || die "run $1: see $scratch/$1.log"
import json, sys
run, case, victim, loss, rc, keep, spare, out = sys.argv[1:9]
def bad(why):
    print(f"hosts.sh: error: run {run}: {why}", file=sys.stderr)
    sys.exit(1)
if rc != "0":
    bad(f"lockstep run exited with {rc}")
summary = json.load(open(f"{run}/summary.json"))
attempts = [json.loads(line) for line in open(f"{run}/attempts.jsonl")]
if summary.get("exit_code") != 0 or summary.get("outcome") != "success":
    bad(f"summary says exit_code {summary.get('exit_code')}, outcome {summary.get('outcome')}")
if len(attempts) != 2 or attempts[1]["outcome"] != "success":
    bad(f"expected one failed and one successful attempt, got {[a['outcome'] for a in attempts]}")
failed, after = attempts
lost = bool(failed.get("host_lost"))
if case in ("1", "2") and (failed.get("failed_rank") != 2 or lost):
    bad(f"expected rank 2 to be the cause, got: {failed.get('failure')} (rank {failed.get('failed_rank')})")
if case == "2" and failed.get("failed_host") != victim:
    bad(f"expected rank 2 on {victim}, got host {failed.get('failed_host')}")
if case in ("3", "4", "5"):
    if not lost or failed.get("failed_host") != victim:
        bad(f"expected host {victim} lost, got: {failed.get('failed_host')}: {failed.get('failure')}")
    want = [keep] if case == "4" else [keep, spare]
    ranks = 2 if case == "4" else 4
    if after.get("hosts") != want or after.get("ranks_started") != ranks:
        bad(f"expected the next attempt on {want} with {ranks} ranks, "
            f"got {after.get('hosts')} with {after.get('ranks_started')}")
ttr = summary["mean_time_to_recovery_seconds"]
f = failed["failure_s"]
d = failed.get("detected_s", f)
e = failed["end_s"]
s = after["start_s"]
t = f + ttr  # the first step of the next attempt (one recovery: ttr = t - f)
if ttr <= 0 or not (f <= d <= e <= s <= t):
    bad(f"times out of order: failure {f}, detected {d}, end {e}, next start {s}, first step {t}")
# The loss on the launcher's clock (offsets from its start): summary.json is
# written right after the launcher measured wall_seconds.
import os
started = os.stat(f"{run}/summary.json").st_mtime - summary["wall_seconds"]
skew = os.stat(f"{run}/attempts.jsonl").st_mtime - after["end_s"] - started
if abs(skew) > 0.2:
    bad(f"the launcher's start is not known to within 0.2 s (the two estimates differ by {skew:.2f} s)")
loss_s = float(loss) - started if loss else None
r = {
    "case": int(case), "run": run.rsplit("/", 1)[-1], "ttr": ttr,
    "from_loss": t - loss_s if loss else None, "late": f - loss_s if loss else None,
    "detection": d - f, "teardown": e - d, "relaunch": s - e, "startup": t - s,
    "by_silence": "detected_s" in failed, "failure_s": f,
    "loss_s": loss_s, "failed_host": failed.get("failed_host"),
    "failure": failed.get("failure"), "first_step": after["first_step"],
    "hosts": after.get("hosts"), "step_s": failed.get("step_seconds"),
}
with open(out, "a") as runs:
    runs.write(json.dumps(r) + "\n")
where = ",".join(r["hosts"] or ["this host"])
loss = (f"; link down at {loss_s:.2f} s, failure_s {f:.2f} s ({f - loss_s:+.2f}), "
        f"{t - loss_s:.2f} s from the loss to the first step" if loss else "")
print(f"  case {case} {r['run']}: ttr {ttr:.2f} s = detection {r['detection']:.2f} + "
      f"teardown {r['teardown']:.2f} + relaunch {r['relaunch']:.2f} + start-up {r['startup']:.2f}"
      f"{loss}; resumed on {where} at step {r['first_step']}")
PY
}

# run_case NAME CASE [VICTIM]
run_case() {
  local name=$1 case=$2 victim=${3:-} loss="" rc=0 deadline
  local -a launch
  case $case in
    1) launch=("${one_host_env[@]}" "$lockstep" run -n 4) ;;
    2) launch=("$lockstep" run --hostfile "$(hostfile "$name" "$keep" "$victim")" -n 4) ;;
    3 | 5) launch=("$lockstep" run --hostfile "$(hostfile "$name" "$keep" "$victim" "$spare")" -n 4) ;;
    4) launch=("$lockstep" run --hostfile "$(hostfile "$name" "$keep" "$victim")" -n 4) ;;
  esac
  case $case in 1 | 2) launch+=(--inject-failure "2:$kill_step") ;; esac
  "${launch[@]}" --no-slurm --run-dir "$scratch/$name" -- "${trainer[@]}" >"$scratch/$name.log" 2>&1 &
  run_pid=$!
  if [ "$case" -ge 3 ]; then
    deadline=$((SECONDS + 120))
    until [ -d "$scratch/$name/checkpoints/step-$lose_after" ]; do
      kill -0 "$run_pid" 2>/dev/null || break
      [ $SECONDS -lt $deadline ] || die "run $name reached no checkpoint of step $lose_after in 120 s"
      sleep 0.05
    done
    loss=$EPOCHREALTIME # wall clock; the link goes down within milliseconds
    if [ "$case" -eq 5 ]; then
      ip link set "$(awk -v h="$victim" '$1 == h { print $4 }' "$dir/hosts.tsv")" down
    else
      "$harness/hosts-lose.sh" "$dir" "$victim" >/dev/null
    fi
  fi
  wait "$run_pid" || rc=$?
  run_pid=""
  record "$name" "$case" "$victim" "$loss" "$rc"
}

for rep in $(seq "$repeats"); do
  echo "# repeat $rep"
  run_case "one-host-kill-$rep" 1
  victim=${names[$next_victim]}
  run_case "kill-$rep" 2 "$victim"
  run_case "lose-spare-$rep" 3 "$victim"
  victim=${names[$((next_victim + 1))]}
  run_case "lose-shrink-$rep" 4 "$victim"
  victim=${names[$((next_victim + 2))]}
  run_case "cut-spare-$rep" 5 "$victim"
  next_victim=$((next_victim + 3))
done

python3 - "$scratch/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
titles = {
    1: "one host, 4 ranks, rank 2 SIGKILLed",
    2: "2 hosts x 2 ranks, rank 2 SIGKILLed",
    3: "2 hosts x 2, host 2 lost, spare",
    4: "2 hosts x 2, host 2 lost, no spare",
    5: "2 hosts x 2, host 2 cut off, spare",
}
keys = ("ttr", "detection", "teardown", "relaunch", "startup", "late", "from_loss")
med = {}
print()
print(f"{'median of ' + str(len(runs) // len(titles)) + ' runs, seconds':38s}"
      f"{'TTR':>6s}{'detect':>8s}{'teardn':>8s}{'relnch':>8s}{'start':>8s}{'loss>f':>8s}{'loss>1st':>9s}")
for case, title in titles.items():
    mine = [r for r in runs if r["case"] == case]
    m = {k: statistics.median(r[k] for r in mine) if mine[0][k] is not None else None for k in keys}
    med[case] = m
    cells = "".join(f"{m[k]:8.2f}" if m[k] is not None else f"{'-':>8s}" for k in keys[1:6])
    last = f"{m['from_loss']:9.2f}" if m["from_loss"] is not None else f"{'-':>9s}"
    print(f"{case}. {title:35s}{m['ttr']:6.2f}{cells}{last}")
print("""
TTR     the launcher's mean_time_to_recovery_seconds: failure_s (a killed rank's
        connection closing; a lost host, found by silence or after mpirun
        ended the job: its ranks' last message) -> the first step of the next
        attempt
detect  failure_s -> detected_s: silence for --host-timeout, then the agent
        cannot enter the host; 0 where failure_s is itself the launcher's
        notice (a connection closing)
teardn  -> end_s of the failed attempt: the job stopped, mpirun gone (a killed
        rank: mpirun noticing it and ending the job)
relnch  -> start_s of the next attempt: the run's hosts entered again to name
        a lost one, the host pool, preflight of the next attempt's hosts
start   -> first step of the next attempt: mpirun's daemons and ranks, MPI
        start-up, restoring the newest checkpoint, one step
loss>f  the moment the link went down -> failure_s, on the launcher's clock
        (a positive figure is time the launcher's TTR leaves out)
loss>1st the link going down -> the first step of the next attempt
Each column is a median of its own; they need not add up.""")
kill, one = med[2]["ttr"], med[1]["ttr"]
print()
print(f"killed rank: across hosts {kill:.2f} s, on one host {one:.2f} s ({kill / one:.2f}x)")
for case, what in ((3, "lost host, spare"), (4, "lost host, no spare"), (5, "cut-off host, spare")):
    m = med[case]
    for label, value in (("launcher's TTR", m["ttr"]), ("from the loss", m["from_loss"])):
        r = value / kill
        print(f"{what:20s} {label:15s} {value:5.2f} s = {r:.2f}x the killed rank across hosts "
              f"(target <= 2x: {'met' if r <= 2 else 'not met'}), {value / one:.2f}x on one host")
PY
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
