#!/usr/bin/env bash
# Loses a host that hosts-up.sh made in DIR, the way a machine dies: every
# process whose UTS namespace is the host's (the holder too) is SIGKILLed,
# with every process in its network namespace, and its link goes down. Its
# address and its /dev/shm go with it; TCP peers see silence, not resets.
# The agent then fails for it like ssh to a dead machine. hosts-down.sh
# removes what is left.
#
#   tests/support/hosts/hosts-lose.sh DIR HOST
#
# Exit status: 0 when the host is gone; 1 when some of its processes survive
# or its link cannot be taken down; 2 on a usage error or an unknown host.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR HOST   (DIR as given to hosts-up.sh)" >&2
  exit 2
fi
tsv=$1/hosts.tsv
if ! read -r name _ ns veth pid start uts < <(awk -v h="$2" '$1 == h' "$tsv" 2>/dev/null); then
  echo "hosts-lose: no host $2 in $1" >&2
  exit 2
fi

status=0
# The link goes first, as when a machine loses power: the processes killed
# next cannot say goodbye (no FIN, no RST reaches a peer).
ip link set "$veth" down || status=1
# A holder already gone left no UTS namespace to look in; a recorded id
# could by now name another namespace.
if holder_alive "$pid" "$start"; then kill_namespace uts "$uts" || status=1; fi
if net=$(namespace_id_of_file net "$netns_dir/$ns"); then kill_namespace net "$net" || status=1; fi
[ "$status" -eq 0 ] && echo "hosts-lose: $name is gone"
exit "$status"
