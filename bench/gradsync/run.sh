#!/usr/bin/env bash
# GradSync against (a) one MPI_Allreduce of the same bytes and (b) PyTorch
# DDP with the gloo backend, on GPT-2 small's gradients, ShardedGradSync
# (ZeRO-1) against GradSync, plus the overlap run; prints one table per part
# with the ratios that the targets ask for.
#
#   bench/gradsync/run.sh [--scale 1] [--steps 5] [--repeat 3] [--ranks "2 4"]
#
# Every (ranks, program) pair runs --repeat times; the tables show the median
# of those runs (each run's figure is itself the median over --steps steps).
# DDP's figure is the all-reduce of its buckets timed directly (see
# bench/peers/ddp_gloo.py); "DDP exposed" is the older, indirect one.
# Needs a build of gradsync_bench (BUILD, default build-bench, is configured
# and built when missing) and python3-torch for /usr/bin/python3 (installed
# with apt-get when missing).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build-bench}
scale=1
steps=5
repeat=3
ranks="2 4"
while [[ $# -gt 0 ]]; do
  case $1 in
    --scale) scale=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    *) echo "usage: $0 [--scale F] [--steps N] [--repeat R] [--ranks \"2 4\"]" >&2; exit 2 ;;
  esac
done

python=/usr/bin/python3
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "installing python3-torch for the DDP peer" >&2
  apt-get install -y python3-torch >&2
fi
bench=$build/bench/gradsync/gradsync_bench
if [[ ! -x $bench ]]; then
  [[ -f $build/CMakeCache.txt ]] || cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$build" -j2 --target gradsync_bench >&2
fi

export OMPI_MCA_mpi_yield_when_idle=1
mpiexec=(mpiexec --oversubscribe --bind-to none)
[[ $(id -u) == 0 ]] && mpiexec+=(--allow-run-as-root)
results=$(mktemp)
trap 'rm -f "$results"' EXIT

for n in $ranks; do
  for ((run = 1; run <= repeat; ++run)); do
    echo "ranks $n, run $run of $repeat" >&2
    "${mpiexec[@]}" -n "$n" "$bench" --scale "$scale" --steps "$steps" |
      sed "s/^/$n $run /" >>"$results"
    timeout 900 "${mpiexec[@]}" -n "$n" "$python" "$root/bench/peers/ddp_gloo.py" --scale "$scale" \
      --steps "$steps" --port $((20000 + RANDOM % 20000)) | sed "s/^/$n $run /" >>"$results"
  done
done

"$python" - "$results" "$repeat" "$steps" <<'PY'
import collections, statistics, sys

figures = collections.defaultdict(list)  # (ranks, key) -> one value per run
for line in open(sys.argv[1]):
    ranks, _run, key, value = line.split()
    try:
        figures[int(ranks), key].append(float(value))
    except ValueError:
        figures[int(ranks), key].append(value)
repeat, steps = sys.argv[2], sys.argv[3]
all_ranks = sorted({ranks for ranks, _ in figures})

def get(ranks, key):
    values = figures[ranks, key]
    return statistics.median(values) if values and not isinstance(values[0], str) else values[0]

first = all_ranks[0]
print(f"# GPT-2 small gradients: {get(first, 'tensors'):.0f} tensors, "
      f"{get(first, 'parameters') / 1e6:.1f}M parameters, {get(first, 'gradient_mib'):.1f} MiB f32, "
      f"{get(first, 'buckets'):.0f} GradSync buckets; torch {get(first, 'ddp_torch_version')}")
print(f"# median of {repeat} runs, each the median of {steps} steps on the slowest rank")
print()
print(f"{'ranks':>5} | {'GradSync ms':>11} | {'(a) MPI_Allreduce ms':>20} {'GS/(a)':>7} | "
      f"{'(b) DDP gloo ms':>15} {'(b)/GS':>7} | {'DDP exposed ms':>14} | {'1 buffer ms':>11} | "
      f"{'4 MiB pieces ms':>15} | {'extra mem/grads':>15}")
for n in all_ranks:
    gs = get(n, "gradsync_ms")
    a = get(n, "mpi_allreduce_ms")
    b = get(n, "ddp_allreduce_ms")
    print(f"{n:>5} | {gs:>11.1f} | {a:>20.1f} {gs / a:>7.2f} | {b:>15.1f} {b / gs:>7.2f} | "
          f"{get(n, 'ddp_exposed_ms'):>14.1f} | {get(n, 'lockstep_one_buffer_avg_ms'):>11.1f} | "
          f"{get(n, 'mpi_allreduce_4mib_pieces_ms'):>15.1f} | "
          f"{get(n, 'rss_growth_mib') / get(n, 'gradient_mib'):>15.2f}")
print()
print(f"{'ranks':>5} | {'GradSync ms':>11} | {'ZeRO-1 ms':>9} {'ZeRO/GS':>7} | {'GS packed ms':>12} | "
      f"{'flat allreduce ms':>17} {'flat RS + AG ms':>15} {'Open MPI RS + AG ms':>19} | "
      f"{'owned share':>11} {'x N':>5}")
for n in all_ranks:
    if (n, "zero_sharded_ms") not in figures:
        continue
    gs = get(n, "zero_allreduce_default_ms")
    zero = get(n, "zero_sharded_ms")
    owned = get(n, "zero_most_owned_share")
    print(f"{n:>5} | {gs:>11.1f} | {zero:>9.1f} {zero / gs:>7.2f} | "
          f"{get(n, 'zero_allreduce_packed_ms'):>12.1f} | {get(n, 'zero_flat_allreduce_ms'):>17.1f} "
          f"{get(n, 'zero_flat_reduce_scatter_ms') + get(n, 'zero_flat_allgather_ms'):>15.1f} "
          f"{get(n, 'zero_flat_mpi_reduce_scatter_allgather_ms'):>19.1f} | "
          f"{owned:>11.4f} {owned * n:>5.3f}")
print("# ZeRO-1 = ShardedGradSync: reduce-scatter, then all-gather of the parameters; "
      "owned share = the largest share of the elements (and of Adam's state) a rank holds")
print()
print(f"{'ranks':>5} {'work':>6} | {'all-gather ms':>13} {'forward ms':>10} | "
      f"{'gather first ms':>15} {'per bucket ms':>13} | {'hidden %':>8} | {'first bucket %':>14}")
for n in all_ranks:
    for kind in ("cpu", "sleep"):
        key = f"zero_forward_{kind}_"
        if (n, key + "hidden_pct") not in figures:
            continue
        print(f"{n:>5} {kind:>6} | {get(n, 'zero_gather_ms'):>13.1f} {get(n, key + 'alone_ms'):>10.1f} | "
              f"{get(n, key + 'gather_first_ms'):>15.1f} {get(n, key + 'gather_per_bucket_ms'):>13.1f} | "
              f"{get(n, key + 'hidden_pct'):>8.1f} | {get(n, 'zero_first_gathered_share_pct'):>14.1f}")
print("# ZeRO-1's all-gather against the next forward: every bucket waited for before the "
      "forward (gather first) or each just before its first layer (per bucket); hidden % = "
      "1 - (per bucket - forward) / all-gather alone; first bucket % = the share of the elements "
      "that the first layer waits for, which no overlap can hide")
print()
print(f"{'ranks':>5} {'work':>6} | {'comm alone ms':>13} {'backward ms':>11} {'serial ms':>10} "
      f"{'overlap ms':>10} | {'hidden %':>8} | {'nonblocking: serial ms':>22} {'overlap ms':>10} "
      f"{'hidden %':>8}")
for n in all_ranks:
    for kind in ("cpu", "sleep"):
        if (n, f"overlap_{kind}_hidden_pct") not in figures:
            continue
        key = f"overlap_{kind}_"
        print(f"{n:>5} {kind:>6} | {get(n, key + 'comm_ms'):>13.1f} {get(n, key + 'backward_ms'):>11.1f} "
              f"{get(n, key + 'serial_ms'):>10.1f} {get(n, key + 'overlap_ms'):>10.1f} | "
              f"{get(n, key + 'hidden_pct'):>8.1f} | {get(n, key + 'nonblocking_serial_ms'):>22.1f} "
              f"{get(n, key + 'nonblocking_overlap_ms'):>10.1f} {get(n, key + 'nonblocking_hidden_pct'):>8.1f}")
print(f"# hidden % = (serial - overlap) / comm alone, the median of the runs' values; the last bucket (wte, produced last) "
      f"holds {get(first, 'last_bucket_share_pct'):.0f}% of the bytes and cannot overlap")
print()
print("# per run:")
for (n, key), values in sorted(figures.items()):
    if key.endswith(("_ms", "_pct")):
        print(f"# {n} ranks {key}: " + " ".join(f"{v:.1f}" for v in values))
PY
