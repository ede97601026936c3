#!/usr/bin/env bash
# Start a real Slurm on this machine: munge, one slurmctld and one slurmd per
# compute node (n1, n2, ...), with every file they write under one state
# directory. Each node is a host of its own, made of Linux namespaces by
# tests/support/hosts/hosts-up.sh (hostname nodeI, address 10.77.X.(10+I) on
# a bridge, private /dev/shm); slurmctld and munged stay in this machine's
# namespaces. Where such hosts cannot be made, all slurmd run on this host,
# each in a mount namespace of its own (the "one-host" layout).
#
#   slurm/local-cluster/start.sh DIR     # then: source DIR/env.sh
#   slurm/local-cluster/stop.sh DIR
#
# Needs root (the daemons run as root; hosts need namespaces and a bridge).
# Installs slurm-wlm and munge with apt-get when they are missing.
#
# Environment knobs:
#   LOCAL_CLUSTER_NODES     compute nodes (2); more give a test spare nodes
#   LOCAL_CLUSTER_LAYOUT    hosts (default: one host per node, falling back to
#                           one-host when hosts cannot be made) or one-host
#   LOCAL_CLUSTER_TIMEOUT   seconds to wait for every node to be idle (60)
#   LOCAL_CLUSTER_CPUS      CPUs declared per node (the machine's count)
#   LOCAL_CLUSTER_KEEP_ON_FAILURE=1  leave the daemons running when start-up
#                           fails, to inspect them (stop.sh DIR still works)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly here
readonly hosts_scripts=$here/../../tests/support/hosts

log() { printf 'local-cluster: %s\n' "$*"; }
die() {
  printf 'local-cluster: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat >&2 <<EOF
usage: $0 DIR
Starts slurmctld and one slurmd per node (n1, n2, ...; LOCAL_CLUSTER_NODES,
2 by default), each node on a namespace host of its own where they can be
made, with state, spool, logs and configuration under DIR, and waits until
every node is idle.
EOF
  exit 2
}

[ $# -eq 1 ] || usage
case $1 in -h | --help) usage ;; esac
[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd needs namespaces and runs jobs as any user)"

count=${LOCAL_CLUSTER_NODES:-2}
if ! [[ $count =~ ^[1-9][0-9]*$ ]] || [ "$count" -gt 64 ]; then
  die "LOCAL_CLUSTER_NODES must be a number from 1 to 64, not '$count'"
fi
layout=${LOCAL_CLUSTER_LAYOUT:-hosts}
case $layout in hosts | one-host) ;; *) die "LOCAL_CLUSTER_LAYOUT must be hosts or one-host, not '$layout'" ;; esac
nodes=()
for ((i = 1; i <= count; i++)); do nodes+=("n$i"); done
readonly count nodes
# Seconds without an answer after which slurmctld marks a node DOWN.
readonly slurmd_timeout=${LOCAL_CLUSTER_SLURMD_TIMEOUT:-10}
[[ $slurmd_timeout =~ ^[1-9][0-9]*$ ]] || die "LOCAL_CLUSTER_SLURMD_TIMEOUT must be a positive number"
# The PMIx client directory of every node, in the node's private /dev/shm.
readonly pmix_dir=/dev/shm/slurm-pmix

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

mkdir -p "$run" "$dir/log" "$dir/state"
for n in "${nodes[@]}"; do mkdir -p "$dir/spool/$n"; done
# A layout of an earlier start in DIR describes hosts that are gone.
rm -f "$run/layout"

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
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

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

# --- hosts --------------------------------------------------------------------
# One namespace host per node (tests/support/hosts/README.md): slurmd and the
# job steps of node nI then run with hostname nodeI, address 10.77.X.(10+I),
# their own /dev/shm and their own network stack, as on separate machines.
# Where hosts cannot be made (hosts-up.sh exits 77: no right to make network
# namespaces or bridges), every slurmd runs on this host instead.
hosts_dir=$dir/hosts
host_names=() host_addrs=() host_pids=()
if [ "$layout" = hosts ]; then
  if [ ! -x "$hosts_scripts/hosts-up.sh" ]; then
    log "no $hosts_scripts/hosts-up.sh; all nodes run on this host (one-host layout)"
    layout=one-host
  else
    started=1
    rc=0
    "$hosts_scripts/hosts-up.sh" "$hosts_dir" "$count" >"$dir/log/hosts-up.log" 2>&1 || rc=$?
    if [ "$rc" -eq 77 ]; then
      log "cannot make namespace hosts here ($(grep -m1 'skipped' "$dir/log/hosts-up.log" || true));" \
        "all nodes run on this host (one-host layout)"
      layout=one-host
    elif [ "$rc" -ne 0 ]; then
      cat "$dir/log/hosts-up.log" >&2
      die "making the hosts failed (exit $rc; see $dir/log/hosts-up.log)"
    else
      # The harness's env.sh also sets Open MPI's rsh agent; only the hosts'
      # names, addresses and holders are wanted here.
      # shellcheck disable=SC1091,SC2016 # the file is made at run time
      mapfile -t host_info < <(bash -c '. "$1" && echo "$HOSTS_NAMES" && echo "$HOSTS_ADDRS" &&
        echo "$HOSTS_PIDS" && echo "$HOSTS_BRIDGE_ADDR" && echo "$HOSTS_SUBNET"' sh "$hosts_dir/env.sh")
      read -ra host_names <<<"${host_info[0]}"
      read -ra host_addrs <<<"${host_info[1]}"
      read -ra host_pids <<<"${host_info[2]}"
      bridge_addr=${host_info[3]}
      subnet=${host_info[4]}
      [ "${#host_addrs[@]}" -eq "$count" ] || die "hosts-up.sh made ${#host_addrs[@]} hosts, not $count"
      log "made hosts ${host_names[*]} on $subnet"
    fi
  fi
fi
echo "$layout" >"$run/layout"

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
ctld_port=${picked[0]}
# Hosts have network stacks of their own: every slurmd listens on the same
# port. On one host each slurmd needs a port of its own.
declare -A node_port
for n in "${nodes[@]}"; do
  if [ "$layout" = one-host ] || [ "${#picked[@]}" -eq 1 ]; then pick_port; fi
  node_port[$n]=${picked[-1]}
done

# --- configuration ----------------------------------------------------------
host=$(hostname -s)
cpus=${LOCAL_CLUSTER_CPUS:-$(nproc)}
[[ $cpus =~ ^[1-9][0-9]*$ ]] || die "LOCAL_CLUSTER_CPUS must be a positive number, not '$cpus'"
# The nodes share this machine's memory; declare a share each so that
# together they claim no more than exists.
mem_mb=$(awk -v n="$count" '/^MemTotal:/ {print int($2 / 1024 / n)}' /proc/meminfo)

if [ "$layout" = hosts ]; then
  # slurmctld listens on every address of this namespace; the hosts reach it
  # on the bridge.
  ctld_addr=$bridge_addr
else
  ctld_addr=127.0.0.1
fi
node_lines=""
for i in "${!nodes[@]}"; do
  n=${nodes[$i]}
  if [ "$layout" = hosts ]; then
    node_lines+="NodeName=$n NodeHostname=${host_names[$i]} NodeAddr=${host_addrs[$i]}"
  else
    node_lines+="NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1"
  fi
  node_lines+=" Port=${node_port[$n]} CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"$'\n'
done
node_list=n[1-$count]
[ "$count" -gt 1 ] || node_list=n1

cat >"$conf" <<EOF
# Generated by $here/start.sh: a one-machine test cluster
# ($layout layout: $([ "$layout" = hosts ] && echo "one namespace host per node" || echo "every node on this host")).
# Every path is absolute because the daemons change directory at start-up.
ClusterName=localcluster
SlurmctldHost=$host($ctld_addr)
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
# A node that stops answering is marked DOWN after SlurmdTimeout seconds
# (the controller pings every SlurmdTimeout/3 s), so that a test that loses
# a host sees Slurm react within seconds (README.md: "Losing a node").
SlurmdTimeout=$slurmd_timeout

# The nodes are declared, not probed: they share this machine's cores.
SlurmdParameters=config_overrides
${node_lines}PartitionName=debug Nodes=$node_list Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
: >"$dir/plugstack.conf"
# Read from beside slurm.conf. Every slurmd sees its own /dev/shm (its host's,
# or one mounted for it on this host), so two nodes' steps of one job never
# collide on the same PMIx directory name.
cat >"$dir/mpi.conf" <<EOF
PMIxCliTmpDirBase=$pmix_dir
EOF

{
  echo "# Source this file to use the local cluster in $dir."
  echo "export SLURM_CONF=$conf"
  if [ "$layout" = hosts ]; then
    echo "# Ranks talk over TCP, as on real nodes, and only on the hosts' bridge."
    echo "export OMPI_MCA_btl=tcp,self"
    echo "export OMPI_MCA_btl_tcp_if_include=$subnet"
    echo "export OMPI_MCA_oob_tcp_if_include=$subnet"
  else
    echo "# Ranks on n1 and n2 share one kernel; Open MPI's shared-memory transport"
    echo "# between the two \"nodes\" crashes, so ranks talk over TCP as on real nodes."
    echo "export OMPI_MCA_btl=tcp,self"
  fi
  echo "# The cluster's shape, for tests (not exported): hosts or one-host; the node"
  echo "# names; with hosts, the hosts' directory (tests/support/hosts/hosts-lose.sh"
  echo "# DIR nodeI loses one), their names and addresses, in node order."
  echo "LOCAL_CLUSTER_LAYOUT=$layout"
  echo "LOCAL_CLUSTER_NODE_NAMES='${nodes[*]}'"
  echo "LOCAL_CLUSTER_HOSTS_DIR=$([ "$layout" = hosts ] && echo "$hosts_dir")"
  echo "LOCAL_CLUSTER_HOST_NAMES='${host_names[*]}'"
  echo "LOCAL_CLUSTER_HOST_ADDRS='${host_addrs[*]}'"
} >"$dir/env.sh"

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
log "starting slurmctld (port $ctld_port, address $ctld_addr)"
started=1
slurmctld -f "$conf" || {
  show_logs
  die "slurmctld did not start (configuration: $conf)"
}

# Runs in the node's mount namespace: records the namespace (stop.sh finds the
# node's job steps by it, also when slurmd itself is gone), makes the PMIx
# directory in the node's /dev/shm and becomes slurmd.
# shellcheck disable=SC2016 # expanded by that sh, from its arguments
readonly slurmd_script='readlink /proc/self/ns/mnt >"$1" && mkdir -p "$2" && exec slurmd -N "$3" -f "$4"'
for i in "${!nodes[@]}"; do
  n=${nodes[$i]}
  if [ "$layout" = hosts ]; then
    log "starting slurmd $n on host ${host_names[$i]} (${host_addrs[$i]}, port ${node_port[$n]})"
    # The holder's network, UTS and mount namespaces: the host itself.
    nsenter -t "${host_pids[$i]}" -n -u -m -- sh -c "$slurmd_script" \
      sh "$run/slurmd-$n.mntns" "$pmix_dir" "$n" "$conf" || {
      show_logs
      die "slurmd $n did not start in host ${host_names[$i]} (holder pid ${host_pids[$i]})"
    }
  else
    log "starting slurmd $n on this host (port ${node_port[$n]})"
    # A mount namespace of its own with a private /dev/shm: both slurmd would
    # otherwise create the same PMIx directory for a step and the second fails.
    unshare -m --propagation private sh -c \
      "mount -t tmpfs -o mode=1777 tmpfs /dev/shm && $slurmd_script" \
      sh "$run/slurmd-$n.mntns" "$pmix_dir" "$n" "$conf" || {
      show_logs
      die "slurmd $n did not start (it needs a private mount namespace: unshare -m, mount -t tmpfs)"
    }
  fi
done

# --- wait for idle nodes ----------------------------------------------------
timeout_s=${LOCAL_CLUSTER_TIMEOUT:-60}
wait_start=$SECONDS
deadline=$((wait_start + timeout_s))
wanted=$(for n in "${nodes[@]}"; do echo "$n idle"; done | sort | tr '\n' ' ')
states=""
while :; do
  states=$(timeout 15 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u | tr '\n' ' ' || true)
  if [ "$states" = "$wanted" ]; then break; fi
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

slurmd_pids=""
for n in "${nodes[@]}"; do slurmd_pids+=" $(cat "$run/slurmd-$n.pid")"; done
if [ "$layout" = hosts ]; then
  where="each on a host of its own (${host_names[*]} on $subnet)"
elif [ -s "$dir/log/hosts-up.log" ]; then
  where="all on this host (no namespace hosts: $dir/log/hosts-up.log says why)"
else
  where="all on this host"
fi
cat <<EOF
local-cluster: ready: ${nodes[*]} idle, $where
  (slurmctld pid $(cat "$run/slurmctld.pid"), slurmd pids$slurmd_pids)

  source $dir/env.sh
  sinfo
  srun -N2 --ntasks-per-node=2 --overcommit hostname
  srun -N2 --ntasks-per-node=2 --overcommit --mpi=pmix ./my_mpi_program
  sbatch -N2 --ntasks-per-node=2 --overcommit job.sh

  logs: $dir/log/
  stop: $here/stop.sh $dir
EOF
