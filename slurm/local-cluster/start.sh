#!/usr/bin/env bash
# Start a real Slurm on this machine: munge, one slurmctld and two slurmd
# ("nodes" n1 and n2), with every file they write under one state directory.
#
#   slurm/local-cluster/start.sh DIR     # then: source DIR/env.sh
#   slurm/local-cluster/stop.sh DIR
#
# Needs root (the daemons run as root, slurmd needs its own mount namespace).
# Installs slurm-wlm and munge with apt-get when they are missing.
#
# Environment knobs:
#   LOCAL_CLUSTER_TIMEOUT   seconds to wait for both nodes to be idle (60)
#   LOCAL_CLUSTER_CPUS      CPUs declared per node (the machine's count)
#   LOCAL_CLUSTER_KEEP_ON_FAILURE=1  leave the daemons running when start-up
#                           fails, to inspect them (stop.sh DIR still works)
set -euo pipefail

readonly nodes=(n1 n2)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly here

log() { printf 'local-cluster: %s\n' "$*"; }
die() {
  printf 'local-cluster: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat >&2 <<EOF
usage: $0 DIR
Starts slurmctld and two slurmd (n1, n2) with state, spool, logs and
configuration under DIR, and waits until both nodes are idle.
EOF
  exit 2
}

[ $# -eq 1 ] || usage
case $1 in -h | --help) usage ;; esac
[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd needs mount namespaces and runs jobs as any user)"

mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
readonly dir
readonly conf=$dir/slurm.conf
readonly run=$dir/run

# A cluster whose daemons still run in DIR must not be started twice: the
# second slurmctld would fight the first over the same state files. Its
# daemons are the processes started with "-f DIR/slurm.conf".
running_here() {
  local p
  local -a args
  for p in /proc/[0-9]*; do
    { mapfile -d '' -t args <"$p/cmdline"; } 2>/dev/null || continue
    case " ${args[*]:-} " in
      *" -f $conf "*)
        echo "${p#/proc/}"
        return 0
        ;;
    esac
  done
  return 1
}
if pid=$(running_here); then
  die "$dir already holds a running cluster (pid $pid); stop it first: $here/stop.sh $dir"
fi

# Unix sockets live under DIR (slurmstepd's in the spool, PMIx's in the PMIx
# directory) and their paths are limited to 107 bytes.
if [ "${#dir}" -gt 64 ]; then
  log "warning: $dir is ${#dir} characters long; socket paths under it may exceed the 107-byte limit"
fi

# --- packages ---------------------------------------------------------------
need_install=0
for cmd in slurmctld slurmd sbatch srun scontrol sinfo squeue scancel munged munge unmunge; do
  command -v "$cmd" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" -eq 1 ]; then
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi
if ! compgen -G '/usr/lib/*/slurm-wlm/mpi_pmix*.so' >/dev/null; then
  log "warning: no Slurm mpi_pmix plugin found; srun --mpi=pmix will not work"
fi

mkdir -p "$run" "$dir/log" "$dir/state" "$dir/pmixtmp"
for n in "${nodes[@]}"; do mkdir -p "$dir/spool/$n" "$dir/pmix-$n"; done

# From here on a failure stops whatever was started, unless asked to keep it.
started=0
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$started" -eq 1 ]; then
    if [ "${LOCAL_CLUSTER_KEEP_ON_FAILURE:-0}" = 1 ]; then
      log "start-up failed; daemons left running for inspection: $here/stop.sh $dir"
    else
      log "start-up failed; stopping what was started (logs stay in $dir/log)"
      "$here/stop.sh" "$dir" >&2 || true
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT

# --- munge ------------------------------------------------------------------
# Slurm authenticates every message with munge. A munged that already answers
# (system service, another cluster) is used as it is and left alone by stop.sh.
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
# A munged this directory's earlier cluster started, and stop.sh left for
# other clusters, is still this directory's to stop.
owned=$(cat "$run/munged.started-here" 2>/dev/null || true)
if [ -z "$owned" ] || ! kill -0 "$owned" 2>/dev/null; then rm -f "$run/munged.started-here"; fi
if munge_works; then
  log "using the munged that is already running"
else
  key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    log "creating $key"
    mkdir -p /etc/munge
    (umask 077 && head -c 1024 /dev/urandom >"$key")
  fi
  # munged refuses keys and directories that others could read or write.
  chown munge:munge /etc/munge "$key"
  chmod 0700 /etc/munge
  chmod 0400 "$key"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  chmod 0700 /var/log/munge
  # --force: a socket left by a munged that died is not a reason to refuse.
  # The marker tells stop.sh that this munged is the cluster's to stop; it
  # holds munged's pid once known (stop.sh falls back to munged's pid file).
  touch "$run/munged.started-here"
  started=1
  runuser -u munge -- munged --force --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do
    munge_works && break
    sleep 0.1
  done
  cp /run/munge/munged.pid "$run/munged.started-here" || true
  munge_works || die "munged does not answer; see /var/log/munge/munged.log"
  log "started munged (pid $(cat "$run/munged.started-here"))"
fi

# --- ports ------------------------------------------------------------------
# Free TCP ports below the kernel's ephemeral range, so that a connection made
# later cannot take one between now and the daemons' bind().
listening=$(ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://' || true)
picked=()
port_free() {
  local p=$1 q
  for q in "${picked[@]}"; do [ "$q" != "$p" ] || return 1; done
  if grep -qx -- "$p" <<<"$listening"; then return 1; fi
  # Anything that accepts a connection there is a listener ss did not show.
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then return 1; fi
  return 0
}
pick_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    if port_free "$p"; then
      picked+=("$p")
      return 0
    fi
  done
  die "found no free TCP port between 20000 and 32000"
}
pick_port
pick_port
pick_port
ctld_port=${picked[0]}
declare -A node_port=([n1]=${picked[1]} [n2]=${picked[2]})

# --- configuration ----------------------------------------------------------
host=$(hostname -s)
cpus=${LOCAL_CLUSTER_CPUS:-$(nproc)}
[[ $cpus =~ ^[1-9][0-9]*$ ]] || die "LOCAL_CLUSTER_CPUS must be a positive number, not '$cpus'"
# Both nodes share this machine's memory; declare half each so that neither
# claims more than exists.
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 / 2)}' /proc/meminfo)

cat >"$conf" <<EOF
# Generated by $here/start.sh: a one-machine test cluster.
# Every path is absolute because the daemons change directory at start-up.
ClusterName=localcluster
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=${node_port[n1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge

StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# Keep the daemons away from the system's /etc/slurm.
PlugStackConfig=$dir/plugstack.conf

# No cgroups: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true

# Requeue and preemption: jobs may be requeued, and are killed soon after
# their SIGTERM; finished jobs leave squeue quickly.
JobRequeue=1
KillWait=5
MinJobAge=30
ReturnToService=2
InactiveLimit=0
MessageTimeout=10

# The nodes are declared, not probed: both slurmd see the same machine.
SlurmdParameters=config_overrides
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=${node_port[n1]} CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=${node_port[n2]} CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
: >"$dir/plugstack.conf"
# Read from beside slurm.conf. Each slurmd sees its own directory at this
# path (see below), so two steps of one job never collide.
cat >"$dir/mpi.conf" <<EOF
PMIxCliTmpDirBase=$dir/pmixtmp
EOF

cat >"$dir/env.sh" <<EOF
# Source this file to use the local cluster in $dir.
export SLURM_CONF=$conf
# Ranks on n1 and n2 share one kernel; Open MPI's shared-memory transport
# between the two "nodes" crashes, so ranks talk over TCP as on real nodes.
export OMPI_MCA_btl=tcp,self
EOF

# --- daemons ----------------------------------------------------------------
show_logs() {
  local f
  for f in "$dir"/log/*.log; do
    [ -f "$f" ] || continue
    printf -- '--- last lines of %s\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
}
alive() { # alive <pid file>
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

export SLURM_CONF=$conf
log "starting slurmctld (port $ctld_port)"
started=1
slurmctld -f "$conf" || {
  show_logs
  die "slurmctld did not start (configuration: $conf)"
}

for n in "${nodes[@]}"; do
  log "starting slurmd $n (port ${node_port[$n]})"
  # Its own mount namespace, with pmix-$n bound over pmixtmp: both slurmd
  # would otherwise create the same PMIx directory for a step and the second
  # fails. The namespace id is written first so that stop.sh can find the
  # node's job steps even when slurmd itself is gone.
  # shellcheck disable=SC2016 # expanded by that sh, from its arguments
  unshare -m --propagation private sh -c \
    'readlink /proc/self/ns/mnt >"$1" && mount --bind "$2" "$3" && exec slurmd -N "$4" -f "$5"' \
    sh "$run/slurmd-$n.mntns" "$dir/pmix-$n" "$dir/pmixtmp" "$n" "$conf" || {
    show_logs
    die "slurmd $n did not start (it needs a private mount namespace: unshare -m, mount --bind)"
  }
done

# --- wait for idle nodes ----------------------------------------------------
timeout_s=${LOCAL_CLUSTER_TIMEOUT:-60}
wait_start=$SECONDS
deadline=$((wait_start + timeout_s))
states=""
while :; do
  states=$(timeout 15 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u | tr '\n' ' ' || true)
  if [ "$states" = "n1 idle n2 idle " ]; then break; fi
  # A daemon that died will not come back: say so now rather than at the end
  # (after a few seconds, the time a daemon takes to write its pid file).
  for f in "$run/slurmctld.pid" "${nodes[@]/#/$run/slurmd-}"; do
    f=${f%.pid}.pid
    if [ $((SECONDS - wait_start)) -gt 5 ] && ! alive "$f"; then
      show_logs
      die "$(basename "$f" .pid) is not running (node states: ${states:-none})"
    fi
  done
  if [ "$SECONDS" -ge "$deadline" ]; then
    show_logs
    die "nodes not idle after ${timeout_s}s (node states: ${states:-none})"
  fi
  sleep 1
done

cat <<EOF
local-cluster: ready: n1 and n2 idle (slurmctld pid $(cat "$run/slurmctld.pid"), slurmd pids $(cat "$run/slurmd-n1.pid") $(cat "$run/slurmd-n2.pid"))

  source $dir/env.sh
  sinfo
  srun -N2 --ntasks-per-node=2 --overcommit hostname
  srun -N2 --ntasks-per-node=2 --overcommit --mpi=pmix ./my_mpi_program
  sbatch -N2 --ntasks-per-node=2 --overcommit job.sh

  logs: $dir/log/
  stop: $here/stop.sh $dir
EOF
