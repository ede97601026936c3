#!/usr/bin/env bash
# Installs the Debian packages lockstep builds, tests and runs with, if any
# are missing. Safe to run again: it does nothing when all are present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin            # MPI: launcher, CPU collectives
  libhdf5-openmpi-dev hdf5-tools        # parallel HDF5 checkpoints, h5dump/h5ls
  libcli11-dev                          # the lockstep command line
  libmicrohttpd-dev                     # lockstep run --metrics-port
  prometheus curl                       # promtool and curl check /metrics in the tests
  chromium python3-pil                  # the run report rendered and its screenshot checked
  googletest libgtest-dev               # tests
  libspdlog-dev libfmt-dev              # logging
  nlohmann-json3-dev                    # small metadata and reports
  libxxhash-dev                         # hashes of the replicas (header-only use)
  libopenblas-dev                       # the CPU example trainer
  clang-format                          # format check in the test suite
  clang libclang-rt-14-dev              # libFuzzer, ASan, UBSan for make test-fuzz
  python3 python3-h5py python3-numpy    # checks that checkpoints open in h5py
  python3-crc32c python3-torch          # python/lockstep_checkpoint.py: checksums, state_dict
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "deps: missing packages and not root; install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
