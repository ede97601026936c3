# shellcheck shell=bash
# Sourced by the checkpoint benchmarks: mpiexec options that place N ranks
# as `lockstep run` places them, each bound to its share of the hardware
# threads, or unbound when there are more ranks than threads.
# Usage: mpiexec $(placement N) -n N ...
threads=$(getconf _NPROCESSORS_ONLN)
placement() {
  if (($1 > threads)); then
    echo "--oversubscribe --bind-to none"
  else
    echo "--use-hwthread-cpus --map-by slot:PE=$((threads / $1)) --bind-to hwthread"
  fi
}
