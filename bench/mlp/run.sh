#!/usr/bin/env bash
# The example trainer's step on a GPU (--device cuda) against the same MLP
# in PyTorch on the same GPU, in one run; prints one row per model size with
# the median step time of each and the ratio lockstep / PyTorch (target:
# at most 1.0, not slower).
#
# Usage: bench/mlp/run.sh [BUILD_DIR]
# Environment: MODELS ("hidden:batch ...", default: the example's default,
#   a 17M- and a 68M-parameter model), STEPS (200 timed, after 20 warm-up),
#   REPEAT (3: the two programs alternate; the table shows the median of
#   the repetitions' medians), PYTHON (python3 with torch built for CUDA).
set -euo pipefail
build=${1:-build}
models=${MODELS:-256,256:256 4096,4096:1024 8192,8192:4096}
steps=${STEPS:-200}
repeat=${REPEAT:-3}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
bench=$build/bench/mlp/mlp_step_bench
[[ -x $bench ]] || { echo "build $bench first: cmake --build $build --target mlp_step_bench"; exit 2; }
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no GPU for PyTorch ($python): this benchmark needs a CUDA GPU and torch built for it"
  exit 2
fi
export OMPI_MCA_mpi_yield_when_idle=0
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

value() { awk -v k="$1" '$1 == k { print $2 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "# examples/mlp step (forward, backward, GradSync, Adam) on $("$python" -c 'import torch; print(torch.cuda.get_device_name())')"
echo "# median of $repeat runs, each the median of $steps steps; lockstep-mlp under mpiexec -n 1"
printf "%-14s %6s %12s | %12s %12s | %7s\n" "hidden" "batch" "parameters" "lockstep ms" "PyTorch ms" "ratio"
for model in $models; do
  hidden=${model%%:*} batch=${model##*:}
  ours=() theirs=() parameters=""
  for _ in $(seq "$repeat"); do
    out=$(mpiexec -n 1 "$bench" --device cuda --hidden "$hidden" --batch "$batch" --steps "$steps")
    ours+=("$(value median_ms <<<"$out")")
    parameters=$(value parameters <<<"$out")
    out=$("$python" "$here/../peers/mlp_torch.py" --hidden "$hidden" --batch "$batch" --steps "$steps")
    theirs+=("$(value median_ms <<<"$out")")
    [[ $(value parameters <<<"$out") == "$parameters" ]] ||
      { echo "the two models differ in size: $parameters vs $(value parameters <<<"$out")"; exit 1; }
  done
  a=$(printf "%s\n" "${ours[@]}" | median)
  b=$(printf "%s\n" "${theirs[@]}" | median)
  printf "%-14s %6s %12s | %12.4f %12.4f | %7.2f\n" "$hidden" "$batch" "$parameters" "$a" "$b" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN { print a / b }')"
done
