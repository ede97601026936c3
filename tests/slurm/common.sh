# Shared by the tests that run lockstep on the local Slurm cluster
# (slurm/local-cluster/). Source it after setting `scripts` (the local-cluster
# directory) and `scratch` (the test's own directory, emptied here). Skips
# the test (exit 77) when not root: the cluster's daemons need root.
# shellcheck shell=bash
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the local Slurm cluster needs root"
  exit 77
fi
# A run that was killed (a timeout's SIGKILL) may have left its cluster.
if [ -d "$scratch/cluster" ]; then "$scripts/stop.sh" "$scratch/cluster" || true; fi
rm -rf "$scratch"
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd -P)
cluster=$scratch/cluster
failures=0
export OMPI_MCA_mpi_yield_when_idle=1

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
ok() { echo "ok:   $*"; }
check() { # check <what> <shell condition>
  if eval "$2"; then ok "$1"; else fail "$1"; fi
}
expect_grep() { # expect_grep <extended regex> <file> <what>
  if grep -qE -- "$1" "$2"; then ok "$3"; else
    fail "$3: /$1/ not in $2"
    sed 's/^/    | /' "$2" | tail -40
  fi
}

# Starts the cluster and points sbatch, srun and scontrol at it; stops it
# when the test exits, however it exits.
cluster_stopped=0
start_cluster() {
  trap 'if [ "$cluster_stopped" -eq 0 ]; then "$scripts/stop.sh" "$cluster" >/dev/null 2>&1 || true; fi' EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if ! "$scripts/start.sh" "$cluster" >"$scratch/start.log" 2>&1; then
    sed 's/^/    | /' "$scratch/start.log"
    echo "FAIL: start.sh failed"
    exit 1
  fi
  # Variables of an enclosing Slurm job would point srun and sbatch at it.
  while read -r v; do unset "$v"; done < <(compgen -e | grep '^SLURM_' || true)
  # shellcheck source=/dev/null
  . "$cluster/env.sh"
}

# The id of the job that `sbatch --parsable` printed into a file.
job_id_in() { cut -d';' -f1 <"$1"; }

# A field of `scontrol show job` ("JobState", "Restarts"), or "" once the
# controller has forgotten the job.
job_field() { # job_field <job> <field>
  scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# Waits until the job is done (COMPLETED, FAILED, ...); prints its last state.
wait_for_job() { # wait_for_job <job> <seconds>
  local job=$1 deadline=$((SECONDS + $2)) state=""
  while [ $SECONDS -lt $deadline ]; do
    state=$(job_field "$job" JobState)
    case $state in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
        echo "$state"
        return 0
        ;;
    esac
    sleep 1
  done
  echo "${state:-UNKNOWN}-after-$2s"
}

# Stops the cluster and checks that neither a daemon nor a process started
# for this test's run directories survives.
stop_cluster_and_check() {
  cluster_stopped=1
  "$scripts/stop.sh" "$cluster" >"$scratch/stop.log" 2>&1 || fail "stop.sh reported survivors"
  trap - EXIT
  if pgrep -af -- "$cluster/slurm.conf"; then fail "a daemon of $cluster survives"; fi
  local left="" f tries
  for tries in 1 2 3 4 5; do
    left=""
    for f in $(grep -l "$scratch" /proc/[0-9]*/environ 2>/dev/null || true); do
      f=${f%/environ}
      [ "${f#/proc/}" != "$$" ] || continue
      left+=" ${f#/proc/}:$(tr '\0' ' ' <"$f/cmdline" 2>/dev/null | cut -c1-80)"
    done
    [ -n "$left" ] || break
    sleep 1
  done
  check "no process of the test's jobs survives${left:+:$left}" "[ -z '$left' ]"
}

# Ends the test: PASS, or the number of failed checks and where to look.
finish() {
  if [ "$failures" -eq 0 ]; then
    echo "PASS"
  else
    echo "$failures check(s) failed; daemon logs in $cluster/log"
    exit 1
  fi
}
