#!/usr/bin/env bash
# An rsh agent for the hosts that hosts-up.sh made: called the way Open MPI
# calls ssh, it runs COMMAND in HOST's namespaces (network, UTS, mount), with
# /bin/sh interpreting the words joined by blanks, as sshd's shell would.
# Unlike ssh it keeps the caller's environment and working directory (the
# hosts share the file system).
#
#   agent.sh [ssh options] [USER@]HOST COMMAND...
#
# The hosts are those of $HOSTS_DIR (DIR/agent, the agent that
# hosts-up.sh writes, sets it). ssh options are accepted and ignored. When
# the host does not exist or is gone (lost, or down), it fails like ssh to a
# dead machine: "agent: cannot enter host HOST: ..." on stderr, exit 255;
# so does a host whose link is down (cut off from the network).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

unreachable() { # unreachable HOST REASON
  echo "agent: cannot enter host $1: $2" >&2
  exit 255
}

# ssh's options: those after which the next word (or the rest of the word)
# is the option's value, and those without a value.
readonly with_value=BbcDEeFIiJLlmOopQRSWw
while [ $# -gt 0 ]; do
  case $1 in
    --)
      shift
      break
      ;;
    -?*)
      option=${1#-}
      shift
      while [ -n "$option" ]; do
        letter=${option:0:1}
        option=${option:1}
        if [[ $with_value == *"$letter"* ]]; then
          # "-p22" carries its value; "-p 22" takes the next word.
          if [ -z "$option" ]; then
            [ $# -gt 0 ] || unreachable "?" "ssh option -$letter needs a value"
            shift
          fi
          break
        fi
      done
      ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || unreachable "?" "no host given (usage: agent [ssh options] HOST COMMAND...)"
host=${1#*@}
shift
[ $# -ge 1 ] || unreachable "$host" "no command given; this agent runs commands, not login shells"

dir=${HOSTS_DIR:-}
[ -n "$dir" ] || unreachable "$host" "HOSTS_DIR is not set (use the agent in the hosts' DIR, or source DIR/env.sh)"
tsv=$dir/hosts.tsv
[ -f "$tsv" ] || unreachable "$host" "no hosts are up in $dir"
read -r _ _ _ veth pid start _ < <(awk -v h="$host" '$1 == h' "$tsv") ||
  unreachable "$host" "no such host in $dir"
# A host whose link is down is cut off: ssh would not reach it either.
[ "$(cat "/sys/class/net/$veth/operstate" 2>/dev/null)" != down ] ||
  unreachable "$host" "no route to host (its link $veth is down)"
# The recorded pid with its start time names the holder; a new process with
# the same pid is not it.
holder_alive "$pid" "$start" ||
  unreachable "$host" "cannot open /proc/$pid/ns/uts: its holder process is gone (host lost or down)"
exec nsenter -t "$pid" -n -u -m -- /bin/sh -c "$*"
