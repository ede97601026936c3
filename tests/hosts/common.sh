# Shared by the tests that make hosts: the checks, a skip (exit 77) without
# root, an empty scratch directory (hosts a killed run left there taken down
# first), and the hosts taken down however the test ends. Source it after
# setting `harness` (tests/support/hosts) and `scratch`; a test with more to
# undo defines `cleanup_more`. `hosts_up N` then makes the hosts.
# shellcheck shell=bash
# shellcheck source=SCRIPTDIR/../support/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../support/checks.sh"

: "${harness:?set harness before sourcing}" "${scratch:?set scratch before sourcing}"
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: making hosts needs root"
  exit 77
fi
dir=$scratch/hosts
if [ -d "$dir" ]; then "$harness/hosts-down.sh" "$dir" || true; fi
rm -rf "$scratch"
mkdir -p "$scratch"

# shellcheck disable=SC2317 # the trap calls it
cleanup() {
  if declare -F cleanup_more >/dev/null; then cleanup_more; fi
  "$harness/hosts-down.sh" "$dir" >/dev/null 2>&1 || echo "FAIL: hosts-down reported survivors"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Makes N hosts and reads their env.sh; exits with hosts-up's status (77:
# skipped) when they cannot be made.
hosts_up() { # hosts_up N
  local status=0
  "$harness/hosts-up.sh" "$dir" "$1" >"$scratch/hosts-up.log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$scratch/hosts-up.log"
    exit "$status"
  fi
  # shellcheck source=/dev/null
  . "$dir/env.sh"
}

# The end of a test: the hosts are taken down, and nothing of them may be
# left; then PASS or the count of failed checks.
finish_hosts() {
  trap - EXIT
  if declare -F cleanup_more >/dev/null; then cleanup_more; fi
  if "$harness/hosts-down.sh" "$dir" >/dev/null 2>&1; then ok "nothing of the hosts is left"; else
    fail "hosts-down reported survivors"
  fi
  finish
}
