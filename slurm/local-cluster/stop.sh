#!/usr/bin/env bash
# Stop the local cluster that start.sh started in DIR: cancel its jobs, stop
# every slurmd (and whatever still runs in their mount namespaces: job steps,
# tasks), slurmctld, munged when start.sh started it, and take the nodes'
# namespace hosts down (tests/support/hosts/hosts-down.sh: processes,
# namespaces, links, mounts, the /etc/hosts block). Works on a cluster that
# only half started and on one that lost a host. Exits 1 if anything of the
# cluster survives.
#
#   slurm/local-cluster/stop.sh DIR
#
# Environment knobs:
#   LOCAL_CLUSTER_GRACE   seconds between SIGTERM and SIGKILL (10)
set -euo pipefail

log() { printf 'local-cluster: %s\n' "$*"; }

if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  echo "usage: $0 DIR   (DIR as given to start.sh)" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  log "$1 does not exist; nothing to stop"
  exit 0
fi
dir=$(cd "$1" && pwd -P)
readonly dir
readonly conf=$dir/slurm.conf
readonly run=$dir/run
readonly grace=${LOCAL_CLUSTER_GRACE:-10}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly hosts_scripts=$here/../../tests/support/hosts
readonly hosts_dir=$dir/hosts

# Alive: exists and is not a zombie (a zombie has ended; only its parent's
# wait() is missing, and a daemon's parent is init, which may be slow).
alive() {
  local stat
  [ -n "$1" ] && { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# One pass over /proc, without a command per process (forks are slow on some
# virtual machines): the parent, command line and mount namespace of each.
declare -A parent_of cmd_of ns_of
scan() {
  local p pid stat rest line
  local -a args
  parent_of=() cmd_of=() ns_of=()
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    { read -r stat <"$p/stat" && mapfile -d '' -t args <"$p/cmdline"; } 2>/dev/null || continue
    rest=${stat##*) } # after the name, which may hold spaces: "S ppid ..."
    # A zombie has finished; only its parent's wait() is missing.
    [ "${rest%% *}" != Z ] || continue
    rest=${rest#* }
    parent_of[$pid]=${rest%% *}
    cmd_of[$pid]=" ${args[*]} "
  done
  while read -r p line; do
    pid=${p#/proc/}
    pid=${pid%/ns}
    if [ -n "${parent_of[$pid]:-}" ]; then ns_of[$pid]=$line; fi
  done < <(find /proc/[0-9]*/ns/mnt -maxdepth 0 -printf '%h %l\n' 2>/dev/null || true)
}

# The daemons of this cluster are the processes started with "-f DIR/slurm.conf"
# (start.sh starts them so); that finds them with or without pid files, also
# after a start-up that failed half-way, and never another cluster's.
daemon_pids() { # daemon_pids slurmctld|slurmd
  local pid
  for pid in "${!cmd_of[@]}"; do
    case ${cmd_of[$pid]} in
      " $1 "*"-f $conf "* | *"/$1 "*"-f $conf "*) echo "$pid" ;;
    esac
  done
}

# Job steps (slurmstepd) and the tasks they started run in the mount
# namespace of the slurmd that started them, a namespace made for that slurmd
# alone (or its host's). They outlive slurmd, so they are found by that
# namespace. A host's holder, which keeps the host's namespaces open, is
# hosts-down.sh's to stop, last.
namespace_pids() {
  local f ns pid holders
  holders=" $(awk '{ printf "%s ", $5 }' "$hosts_dir/hosts.tsv" 2>/dev/null || true)"
  for f in "$run"/slurmd-*.mntns; do
    [ -f "$f" ] || continue
    ns=$(<"$f")
    [ -n "$ns" ] || continue
    for pid in "${!ns_of[@]}"; do
      [ "${ns_of[$pid]}" = "$ns" ] && [[ $holders != *" $pid "* ]] && echo "$pid"
    done
  done
  return 0
}

# The given pids and their children (slurmctld forks slurmscriptd, which must
# not outlive it when slurmctld has to be killed).
with_children() {
  local pid
  [ $# -gt 0 ] || return 0
  printf '%s\n' "$@"
  for pid in "${!parent_of[@]}"; do
    case " $* " in *" ${parent_of[$pid]} "*) echo "$pid" ;; esac
  done
}

all_pids() { # after scan
  # shellcheck disable=SC2046 # one pid per word
  { with_children $(daemon_pids slurmd) $(daemon_pids slurmctld); namespace_pids; } | sort -un
}

# signal_and_wait SIGNAL SECONDS PID...: send, then wait until all are gone.
signal_and_wait() {
  local sig=$1 secs=$2 p left
  shift 2
  [ $# -gt 0 ] || return 0
  kill "-$sig" "$@" 2>/dev/null || true
  for _ in $(seq $((secs * 5))); do
    left=0
    for p in "$@"; do alive "$p" && left=1; done
    [ "$left" -eq 0 ] && return 0
    sleep 0.2
  done
  return 1
}

# --- jobs -------------------------------------------------------------------
# Cancelling through the controller lets slurmstepd end the tasks the normal
# way; what does not end is killed below anyway.
scan
ctld=$(daemon_pids slurmctld)
if [ -n "$ctld" ] && [ -f "$conf" ]; then
  export SLURM_CONF=$conf
  jobs=$(timeout 15 squeue -h -o %A 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
    # shellcheck disable=SC2086 # one job id per word
    timeout 15 scancel $jobs 2>/dev/null || true
    for _ in $(seq 20); do
      [ -z "$(timeout 15 squeue -h -o %A 2>/dev/null || true)" ] && break
      sleep 0.5
    done
  fi
fi

# --- daemons ----------------------------------------------------------------
# slurmd first (the controller would otherwise mark them down and try to
# requeue), then their leftover steps, then slurmctld.
scan
mapfile -t pids < <(daemon_pids slurmd | sort -n)
if [ "${#pids[@]}" -gt 0 ]; then
  log "stopping slurmd (pids ${pids[*]})"
  signal_and_wait TERM "$grace" "${pids[@]}" || signal_and_wait KILL 5 "${pids[@]}" || true
fi
scan
mapfile -t pids < <(namespace_pids | sort -n)
if [ "${#pids[@]}" -gt 0 ]; then
  log "stopping job steps and tasks left on the nodes (pids ${pids[*]})"
  signal_and_wait TERM "$grace" "${pids[@]}" || signal_and_wait KILL 5 "${pids[@]}" || true
fi
scan
mapfile -t pids < <(daemon_pids slurmctld)
[ "${#pids[@]}" -eq 0 ] || mapfile -t pids < <(with_children "${pids[@]}" | sort -un)
if [ "${#pids[@]}" -gt 0 ]; then
  log "stopping slurmctld (pids ${pids[*]})"
  signal_and_wait TERM "$grace" "${pids[@]}" || signal_and_wait KILL 5 "${pids[@]}" || true
fi

# --- munged -----------------------------------------------------------------
# Only the munged that start.sh started for this cluster, and only when no
# other Slurm daemon on the machine still needs it.
if [ -f "$run/munged.started-here" ]; then
  pid=$(cat "$run/munged.started-here" 2>/dev/null || true)
  [ -n "$pid" ] || pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
  scan
  if alive "$pid" && [[ ${cmd_of[$pid]:-} == *munged* ]]; then
    others=""
    for p in "${!cmd_of[@]}"; do
      case ${cmd_of[$p]} in
        " slurmctld "* | " slurmd "* | " slurmstepd"* | *"/slurmctld "* | *"/slurmd "*) others+=" $p" ;;
      esac
    done
    if [ -n "$others" ]; then
      log "leaving munged (pid $pid) running: other Slurm daemons use it (pids$others)"
    else
      log "stopping munged (pid $pid)"
      signal_and_wait TERM "$grace" "$pid" || signal_and_wait KILL 5 "$pid" || true
      if alive "$pid"; then
        log "munged (pid $pid) did not stop"
      else
        rm -f "$run/munged.started-here"
      fi
    fi
  else
    rm -f "$run/munged.started-here"
  fi
fi

# --- hosts --------------------------------------------------------------------
# The nodes' namespace hosts, whatever is left of them (a host may be lost):
# whatever still runs in them, their namespaces, links, mounts and /etc/hosts
# block. Before the report, so that it can list a step that survived.
hosts_left=0
if [ -e "$hosts_dir" ]; then
  if [ ! -x "$hosts_scripts/hosts-down.sh" ]; then
    log "cannot take the hosts in $hosts_dir down: no $hosts_scripts/hosts-down.sh"
    hosts_left=1
  elif ! "$hosts_scripts/hosts-down.sh" "$hosts_dir"; then
    log "the hosts in $hosts_dir are not all gone (see above)"
    hosts_left=1
  fi
fi

# --- report -----------------------------------------------------------------
scan
mapfile -t left < <(all_pids)
if [ "${#left[@]}" -gt 0 ]; then
  log "still running after SIGKILL:"
  for p in "${left[@]}"; do printf '  %s%s\n' "$p" "${cmd_of[$p]:-}"; done
  exit 1
fi
[ "$hosts_left" -eq 0 ] || exit 1
rm -f "$run"/slurmctld.pid "$run"/slurmd-*.pid "$run"/slurmd-*.mntns
log "stopped; nothing of the cluster in $dir is running (logs in $dir/log)"
