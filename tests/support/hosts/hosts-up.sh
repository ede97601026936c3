#!/usr/bin/env bash
# Makes hosts node1..nodeN on this machine out of Linux namespaces: a bridge
# in the root namespace and, per host, a network namespace with its own
# address on the bridge, its own hostname and its own /dev/shm, held open by
# one process. Writes DIR/env.sh for a test to source (names, addresses,
# holder pids, the rsh agent, Open MPI's settings) and adds the names to
# /etc/hosts in a marked block. See README.md.
#
#   tests/support/hosts/hosts-up.sh DIR N [--subnet 10.77.X]
#
# Without --subnet it takes the first free slot X (0..254) in
# /run/lockstep-hosts/, so that harnesses running at once never share a name
# or a subnet. Exit status: 0 when the hosts are up; 77 when hosts cannot be
# made here (not root, no namespaces or bridges), with the reason on stderr;
# 1 on another failure, after removing whatever it made; 2 on a usage error.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

usage() {
  echo "usage: $0 DIR N [--subnet 10.77.X]   (1 <= N <= $max_hosts, 0 <= X <= 254)" >&2
  exit 2
}
skip() {
  echo "hosts-up: skipped: $*" >&2
  exit 77
}
die() {
  echo "hosts-up: $*" >&2
  exit 1
}

[ $# -eq 2 ] || [ $# -eq 4 ] || usage
if ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt "$max_hosts" ]; then usage; fi
count=$2
wanted=""
if [ $# -eq 4 ]; then
  if [ "$3" != --subnet ] || ! [[ $4 =~ ^10\.77\.([0-9]{1,3})$ ]]; then usage; fi
  wanted=$((10#${BASH_REMATCH[1]}))
  [ "$wanted" -le 254 ] || usage
fi

[ "$(id -u)" -eq 0 ] || skip "making hosts needs root (network namespaces, a bridge, mounts)"
for tool in ip nsenter unshare flock mountpoint awk; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done

mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
readonly dir
case $dir in
  *[[:space:]\'\"\\]*)
    echo "hosts-up: DIR must not contain blanks, quotes or backslashes: $dir" >&2
    exit 2
    ;;
esac

# A run killed before its hosts-down left its hosts behind: remove them first.
if [ -e "$dir/slot" ] || grep -qxF "$dir" "$registry"/slot-* 2>/dev/null; then
  "$here/hosts-down.sh" "$dir" >&2 || die "cannot remove the hosts a previous run left in $dir"
fi
rm -f "$dir/env.sh" "$dir/hosts.tsv" "$dir/agent" "$dir/etc-hosts" "$dir/resolv.conf" \
  "$dir"/holder-*.log

# From here on, a failure or a signal removes whatever was made.
finish() {
  local status=$?
  trap - EXIT
  if [ "$status" -ne 0 ]; then "$here/hosts-down.sh" "$dir" >&2 || true; fi
  exit "$status"
}
trap finish EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Claims the first free slot (or the one --subnet names): a slot whose
# registry file is missing or stale and whose subnet no other interface of
# this machine has. Call with the registry lock.
claim_slot() {
  local x
  for x in ${wanted:-$(seq 0 254)}; do
    if slot_in_use "$x"; then
      [ -z "$wanted" ] || die "subnet 10.77.$x is in use by the hosts of $(cat "$registry/slot-$x")"
      continue
    fi
    if ip -4 -o addr show | awk -v b="$(bridge_name "$x")" '$2 != b' | grep -qF " 10.77.$x."; then
      [ -z "$wanted" ] || die "subnet 10.77.$x is already on an interface of this machine"
      continue
    fi
    # `ip netns add` makes /run/netns a mount point; the last slot's
    # hosts-down unmounts it again when this harness made it.
    if ! mountpoint -q "$netns_dir" && ! compgen -G "$registry/slot-*" >/dev/null; then
      touch "$netns_mark"
    fi
    echo "$dir" >"$registry/slot-$x"
    echo "$x" >"$dir/slot"
    return 0
  done
  die "no free slot: 255 sets of hosts are up (see $registry)"
}

# Runs a command that makes a kernel object. When the kernel or a sandbox
# forbids it, hosts cannot be made here: skip.
make_or_skip() { # make_or_skip WHAT COMMAND...
  local what=$1 err
  shift
  if err=$("$@" 2>&1); then return 0; fi
  case $err in
    *"Operation not permitted"* | *"Permission denied"* | *"not supported"* | *"Not supported"* | \
      *"Unknown device type"*)
      skip "cannot make $what: $err"
      ;;
  esac
  die "cannot make $what: $err"
}

# Starts the process that holds host I's namespaces: it enters the network
# namespace with nsenter (`ip netns exec` would remount /sys and hide
# /sys/fs/cgroup), makes UTS and mount namespaces, names the host, mounts a
# private /dev/shm, this harness's /etc/hosts and an empty resolv.conf (the
# hosts have no name server: a lookup of a name not in /etc/hosts fails at
# once on the host's own loopback instead of waiting for a server that
# nothing may reach), then sleeps.
start_holder() { # start_holder I
  local i=$1 name=node$1 pid comm start uts deadline
  local log=$dir/holder-node$1.log
  # shellcheck disable=SC2016 # $1 and $2 are the inner shell's
  nsenter --net="$netns_dir/$(netns_name "$slot" "$i")" \
    unshare --uts --mount --propagation private \
    /bin/sh -c 'hostname "$1" && mount -t tmpfs -o mode=1777 tmpfs /dev/shm &&
                mount --bind "$2" /etc/hosts &&
                { [ ! -e /etc/resolv.conf ] || mount --bind "$3" /etc/resolv.conf; } &&
                exec sleep infinity' \
    holder "$name" "$dir/etc-hosts" "$dir/resolv.conf" </dev/null >/dev/null 2>"$log" &
  pid=$!
  deadline=$((SECONDS + 10))
  while :; do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || comm=""
    [ "$comm" != sleep ] || break
    if [ -z "$(start_time_of "$pid")" ]; then
      case $(cat "$log") in
        *"Operation not permitted"* | *"Permission denied"*) skip "cannot make $name: $(cat "$log")" ;;
      esac
      die "the holder of $name ended: $(cat "$log")"
    fi
    [ $SECONDS -lt $deadline ] || die "the holder of $name did not start within 10 s: $(cat "$log")"
    sleep 0.02
  done
  start=$(start_time_of "$pid")
  uts=$(readlink "/proc/$pid/ns/uts")
  echo "$name $subnet.$((host_offset + i)) $(netns_name "$slot" "$i") $(veth_name "$slot" "$i")" \
    "$pid $start $uts" >>"$dir/hosts.tsv"
}

# Adds the hosts' block to /etc/hosts, after the last line. Call with the
# registry lock.
add_hosts_block() {
  local begin
  begin=$(hosts_begin "$slot")
  # A last line without a newline gets one here; removing the block takes
  # it away again.
  if [ -s "$hosts_file" ] && [ -n "$(tail -c1 "$hosts_file")" ]; then
    printf '\n' >>"$hosts_file"
    begin="$begin noeol"
  fi
  { echo "$begin"; block_lines; hosts_end "$slot"; } >>"$hosts_file"
}
block_lines() {
  local i
  echo "# hosts of $dir, made by tests/support/hosts/hosts-up.sh"
  for ((i = 1; i <= count; i++)); do echo "$subnet.$((host_offset + i)) node$i"; done
}

# The hosts' default route is the bridge; a root namespace that forwards
# would pass on what they send to any other address.
if [ "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)" = 1 ]; then
  echo "hosts-up: warning: net.ipv4.ip_forward is 1: packets the hosts send to addresses" \
    "outside $bridge's subnet leave through this machine's routes" >&2
fi

started=$SECONDS
with_registry_lock claim_slot
slot=$(cat "$dir/slot")
subnet=10.77.$slot
bridge=$(bridge_name "$slot")
readonly slot subnet bridge

# Leftovers of a run whose DIR is gone.
if [ -n "$(slot_survivors "$slot")" ]; then
  remove_slot_objects "$slot"
  survivors=$(slot_survivors "$slot")
  [ -z "$survivors" ] || die "slot $slot has leftovers that cannot be removed: $survivors"
fi

# The hosts' /etc/hosts: the machine's, without any harness's block, and this
# one's block. Inside the hosts, nodeI is always this harness's nodeI.
{
  without_any_hosts_block "$hosts_file"
  hosts_begin "$slot"
  block_lines
  hosts_end "$slot"
} >"$dir/etc-hosts"
: >"$dir/resolv.conf"

make_or_skip "bridge $bridge" ip link add "$bridge" type bridge
ip addr add "$subnet.1/24" dev "$bridge"
ip link set "$bridge" up

for ((i = 1; i <= count; i++)); do
  ns=$(netns_name "$slot" "$i")
  veth=$(veth_name "$slot" "$i")
  make_or_skip "network namespace $ns" ip netns add "$ns"
  make_or_skip "veth $veth" ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$bridge" up
  ip -n "$ns" addr add "$subnet.$((host_offset + i))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add default via "$subnet.1"
  start_holder "$i"
done

with_registry_lock add_hosts_block

cat >"$dir/agent" <<EOF
#!/bin/sh
# The rsh agent for the hosts of this directory: agent [ssh options] HOST COMMAND...
HOSTS_DIR='$dir'
export HOSTS_DIR
exec '$here/agent.sh' "\$@"
EOF
chmod +x "$dir/agent"

names=$(awk '{ printf "%s%s", sep, $1; sep = " " }' "$dir/hosts.tsv")
addrs=$(awk '{ printf "%s%s", sep, $2; sep = " " }' "$dir/hosts.tsv")
pids=$(awk '{ printf "%s%s", sep, $5; sep = " " }' "$dir/hosts.tsv")
cat >"$dir/env.sh" <<EOF
# The hosts that tests/support/hosts/hosts-up.sh made in $dir; source it.
# Remove them with tests/support/hosts/hosts-down.sh $dir.
HOSTS_DIR='$dir'
HOSTS_SLOT=$slot
HOSTS_SUBNET=$subnet.0/24
HOSTS_BRIDGE=$bridge
HOSTS_BRIDGE_ADDR=$subnet.1
HOSTS_NAMES='$names'
HOSTS_ADDRS='$addrs'
HOSTS_PIDS='$pids'
HOSTS_AGENT='$dir/agent'
export HOSTS_DIR
# Open MPI enters the hosts through the agent and talks over the bridge only.
export OMPI_MCA_plm_rsh_agent='$dir/agent'
export OMPI_MCA_btl=tcp,self
export OMPI_MCA_btl_tcp_if_include=$subnet.0/24
export OMPI_MCA_oob_tcp_if_include=$subnet.0/24
EOF

echo "hosts-up: $names on $bridge ($subnet.0/24) in $((SECONDS - started)) s; source $dir/env.sh"
