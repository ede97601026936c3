# Shared by hosts-up.sh, hosts-lose.sh, hosts-down.sh and agent.sh: the names
# a slot's hosts get, the lock that guards the machine-wide state, and the
# process scans. Source it; it defines functions and constants only.
# shellcheck shell=bash

# Machine-wide state: one file per slot in use (slot-X, holding the owning
# DIR), the lock that guards those files and the /etc/hosts edits, and a mark
# saying that /run/netns was made by this harness.
readonly registry=/run/lockstep-hosts
readonly registry_lock=$registry/lock
readonly netns_mark=$registry/run-netns-made-here
readonly netns_dir=/run/netns
readonly hosts_file=/etc/hosts
# Host i of a slot has the address <subnet>.<host_offset + i>.
# shellcheck disable=SC2034 # used by the scripts that source this file
readonly host_offset=10 max_hosts=200

# Every kernel object of slot X carries X in its name, so that two slots never
# collide and a slot can be torn down by name even when its state is lost.
bridge_name() { echo "lshbr$1"; }              # bridge_name X
netns_name() { echo "lsh$1-node$2"; }          # netns_name X I
veth_name() { echo "lsh$1n$2"; }               # veth_name X I (host side)
netns_pattern() { echo "^lsh$1-node[0-9]+\$"; } # netns_pattern X
veth_pattern() { echo "^lsh$1n[0-9]+\$"; }      # veth_pattern X
hosts_begin() { echo "# BEGIN lockstep-hosts $1"; } # hosts_begin X
hosts_end() { echo "# END lockstep-hosts $1"; }     # hosts_end X

# Runs "$@" holding the registry lock (an flock on $registry_lock), in a
# subshell: the lock's descriptor never exists in the caller, so a trap or a
# child of the caller cannot deadlock on a lock the caller still holds.
with_registry_lock() {
  mkdir -p "$registry"
  (
    exec {fd}>>"$registry_lock"
    flock "$fd"
    "$@"
  )
}

# The start time of a process (field 22 of /proc/PID/stat), or nothing when
# it is gone or a zombie. With the pid it names one process for ever: a pid
# can be reused, a pid and a start time cannot.
start_time_of() { # start_time_of PID
  local stat rest
  local -a fields
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
  rest=${stat##*) } # after the name, which may hold spaces: "S ppid ..."
  read -ra fields <<<"$rest"
  [ "${fields[0]}" != Z ] || return 0
  echo "${fields[19]}"
}

# True when the holder recorded as PID with START still runs.
holder_alive() { # holder_alive PID START
  [ -n "$1" ] && [ "$(start_time_of "$1")" = "$2" ]
}

# The pids of the live processes whose /proc/PID/ns/KIND is ID ("net:[4026...]").
# A zombie has no namespaces any more and is not listed. One stat for all
# processes, not a readlink each: forks are slow on some virtual machines.
pids_in_namespace() { # pids_in_namespace KIND ID
  QUOTING_STYLE=literal stat -c '%n %N' /proc/[0-9]*/ns/"$1" 2>/dev/null |
    awk -v want="$2" '$2 == $1 && $3 == "->" && $4 == want { split($1, part, "/"); print part[3] }'
  return 0
}

# The id of a namespace held by a file (/run/netns/NAME), as
# /proc/PID/ns/net shows it.
namespace_id_of_file() { # namespace_id_of_file KIND FILE
  local inode
  inode=$(stat -L -c %i "$2" 2>/dev/null) || return 1
  echo "$1:[$inode]"
}

# SIGKILLs every process in the namespace KIND ID until none is left (a
# process may fork while the scan runs). Fails if some survive 10 seconds.
kill_namespace() { # kill_namespace KIND ID
  local round pids
  for ((round = 0; round < 100; round++)); do
    pids=$(pids_in_namespace "$1" "$2")
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  echo "processes still in $1 namespace $2 after SIGKILL:" "${pids//$'\n'/ }" >&2
  return 1
}

# The lines of FILE outside slot X's marked block. A block added after a last
# line without a newline has a BEGIN mark ending in "noeol": removing it
# takes that newline away again, or, when another block follows, passes the
# mark on to that block.
without_hosts_block() { # without_hosts_block X FILE
  awk -v begin="$(hosts_begin "$1")" -v end="$(hosts_end "$1")" '
    $0 == begin || $0 == begin " noeol" { inside = 1; noeol = ($0 != begin); next }
    inside && $0 == end { inside = 0; after = 1; next }
    inside { next }
    after && noeol {
      if ($0 ~ /^# BEGIN lockstep-hosts [0-9]+$/) $0 = $0 " noeol"
      noeol = 0
    }
    { after = 0; lines[++n] = $0 }
    END {
      for (i = 1; i <= n; i++) printf "%s%s", lines[i], (i < n || !noeol) ? "\n" : ""
    }' "$2"
}

# The lines of FILE outside every lockstep-hosts block.
without_any_hosts_block() { # without_any_hosts_block FILE
  awk '/^# BEGIN lockstep-hosts / { inside = 1; next }
       inside && /^# END lockstep-hosts / { inside = 0; next }
       !inside' "$1"
}

has_hosts_block() { # has_hosts_block X
  grep -qE "^$(hosts_begin "$1")( noeol)?\$" "$hosts_file"
}

# Removes slot X's block from /etc/hosts, writing the file in place (it may be
# a bind mount, which a rename would fail on). Call with the registry lock.
remove_hosts_block() { # remove_hosts_block X
  local kept
  has_hosts_block "$1" || return 0
  kept=$(mktemp)
  without_hosts_block "$1" "$hosts_file" >"$kept"
  cat "$kept" >"$hosts_file"
  rm -f "$kept"
}

# The slot X recorded in a DIR, or nothing.
slot_of_dir() { # slot_of_dir DIR
  [ -f "$1/slot" ] && cat "$1/slot"
  return 0
}

# True when slot X is held by the DIR its registry file names (that DIR still
# records X as its slot). A slot whose DIR forgot it is stale.
slot_in_use() { # slot_in_use X
  local owner
  owner=$(cat "$registry/slot-$1" 2>/dev/null) || return 1
  [ "$(slot_of_dir "$owner")" = "$1" ]
}

# The network namespaces of slot X that exist, one a line.
slot_namespaces() { # slot_namespaces X
  [ -d "$netns_dir" ] || return 0
  find "$netns_dir" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -E "$(netns_pattern "$1")" || true
}

# The host-side veths of slot X that exist, one a line.
slot_veths() { # slot_veths X
  ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' |
    grep -E "$(veth_pattern "$1")" || true
}

# Everything of slot X that exists, one line each; nothing once it is gone.
# HOSTS_TSV, when given, names the holders to look for.
slot_survivors() { # slot_survivors X [HOSTS_TSV]
  local x=$1 tsv=${2:-} ns link name pid start
  for ns in $(slot_namespaces "$x"); do echo "network namespace $ns"; done
  for link in $(slot_veths "$x"); do echo "link $link"; done
  if ip link show dev "$(bridge_name "$x")" >/dev/null 2>&1; then
    echo "bridge $(bridge_name "$x")"
  fi
  grep -E " $netns_dir/lsh$x-node[0-9]+ " /proc/self/mountinfo | awk '{ print "mount " $5 }' || true
  if [ -n "$tsv" ] && [ -f "$tsv" ]; then
    while read -r name _ _ _ pid start _; do
      if holder_alive "$pid" "$start"; then echo "holder $pid of $name"; fi
    done <"$tsv"
  fi
  if has_hosts_block "$x"; then echo "block '$(hosts_begin "$x")' in $hosts_file"; fi
}

# Unmounts /run/netns when this harness made it and nothing uses it any more
# (`ip netns add` makes it a mount point and leaves it so). Call with the
# registry lock.
release_netns_dir() {
  [ -e "$netns_mark" ] || return 0
  compgen -G "$registry/slot-*" >/dev/null && return 0
  if [ -d "$netns_dir" ] && [ -n "$(ls -A "$netns_dir")" ]; then return 0; fi
  while mountpoint -q "$netns_dir"; do umount "$netns_dir" || return 1; done
  rmdir "$netns_dir" 2>/dev/null || true
  rm -f "$netns_mark"
}

# Removes every kernel object of slot X, by name, whatever state it is in:
# the processes in its hosts (and, from HOSTS_TSV, in the live holders' UTS
# namespaces), host-side veths, network namespaces, the bridge, and its
# /etc/hosts block. Leaves the slot's registry file to the caller.
remove_slot_objects() { # remove_slot_objects X [HOSTS_TSV]
  local x=$1 tsv=${2:-} ns id link pid start uts
  if [ -n "$tsv" ] && [ -f "$tsv" ]; then
    while read -r _ _ _ _ pid start uts; do
      if holder_alive "$pid" "$start"; then kill_namespace uts "$uts" || true; fi
    done <"$tsv"
  fi
  for ns in $(slot_namespaces "$x"); do
    if id=$(namespace_id_of_file net "$netns_dir/$ns"); then kill_namespace net "$id" || true; fi
  done
  # A host-side veth can outlive its namespace; removing it removes its peer.
  for link in $(slot_veths "$x"); do ip link del "$link" || true; done
  for ns in $(slot_namespaces "$x"); do ip netns del "$ns" || true; done
  if ip link show dev "$(bridge_name "$x")" >/dev/null 2>&1; then
    ip link del "$(bridge_name "$x")" || true
  fi
  with_registry_lock remove_hosts_block "$x" || true
}
