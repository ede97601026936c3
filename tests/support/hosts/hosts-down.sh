#!/usr/bin/env bash
# Removes the hosts that hosts-up.sh made in DIR: every process in them (the
# holders too), the host-side veths, the network namespaces and their mounts,
# the bridge, the /etc/hosts block, and the slot in /run/lockstep-hosts/.
# Idempotent; works after a partial hosts-up, after hosts-lose, and on a DIR
# whose hosts were never made.
#
#   tests/support/hosts/hosts-down.sh DIR
#
# Exit status: 0 when nothing of the hosts is left; 1 when something
# survives (listed on stderr); 2 on a usage error.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  echo "usage: $0 DIR   (DIR as given to hosts-up.sh)" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "hosts-down: $1 does not exist; nothing to remove"
  exit 0
fi
dir=$(cd "$1" && pwd -P)
readonly dir

# The slots of DIR: the one it records, and any whose registry file names it
# (a hosts-up killed between claiming a slot and recording it).
slots=$(
  slot_of_dir "$dir"
  grep -lxF "$dir" "$registry"/slot-* 2>/dev/null | sed 's|.*/slot-||' || true
)
slots=$(sort -un <<<"$slots")

# Gives slot X back when DIR holds it, or when nobody does any more. Call
# with the registry lock.
# shellcheck disable=SC2317 # called through with_registry_lock
release_slot() { # release_slot X
  local owner
  owner=$(cat "$registry/slot-$1" 2>/dev/null) || owner=""
  if [ "$owner" = "$dir" ] || ! slot_in_use "$1"; then rm -f "$registry/slot-$1"; fi
  release_netns_dir
}

status=0
for x in $slots; do
  remove_slot_objects "$x" "$dir/hosts.tsv"
  with_registry_lock release_slot "$x"
  survivors=$(slot_survivors "$x" "$dir/hosts.tsv")
  if [ -n "$survivors" ]; then
    echo "hosts-down: still there after removing the hosts of $dir (slot $x):" >&2
    while IFS= read -r line; do echo "  $line"; done <<<"$survivors" >&2
    status=1
  fi
done
if [ "$status" -eq 0 ]; then
  # DIR/agent stays: Open MPI calling it now gets the agent's "cannot enter".
  rm -f "$dir/slot" "$dir/hosts.tsv" "$dir/env.sh" "$dir/etc-hosts" "$dir/resolv.conf"
fi
exit "$status"
