#!/usr/bin/env bash
# `lockstep ckpt list|verify|inspect` on a real 3-rank checkpoint: it lists
# committed and torn steps, verifies a good step, names the step and file of
# a flipped byte, shows the tensors, and answers bad input with exit code 2.
# Usage: ckpt_command_test.sh <writer binary> <lockstep> <python3> <scratch dir> <mpiexec...>
set -uo pipefail
writer=$1 lockstep=$2 python=$3 scratch=$4
shift 4
rm -rf "$scratch"
mkdir -p "$scratch"
"$@" -n 3 "$writer" "$scratch" || { echo "FAIL: the writer failed"; exit 1; }
dir="$scratch/ckpt"
failures=0

# expect <exit code> <pattern or ""> -- <lockstep arguments...>
expect() {
  local code=$1 pattern=$2
  shift 3
  local output status
  output=$("$lockstep" "$@" 2>&1)
  status=$?
  if [[ $status -ne $code ]]; then
    echo "FAIL: lockstep $* exited $status, expected $code"
    echo "$output" | sed 's/^/    /'
    failures=$((failures + 1))
  elif [[ -n $pattern ]] && ! grep -qE -- "$pattern" <<<"$output"; then
    echo "FAIL: lockstep $* does not print /$pattern/"
    echo "$output" | sed 's/^/    /'
    failures=$((failures + 1))
  else
    echo "ok: lockstep $* (exit $status)"
  fi
}

# A save killed in the middle leaves a temporary directory.
mkdir "$dir/step-9.tmp-0123456789abcdef"
head -c 4096 /dev/zero >"$dir/step-9.tmp-0123456789abcdef/rank-00000.h5"

expect 0 "list" -- ckpt --help
expect 0 "ckpt" -- --help
expect 0 " 5  committed .* 3  .*step-5$" -- ckpt list "$dir"
expect 0 " 9  torn .*step-9.tmp-0123456789abcdef" -- ckpt list "$dir"
expect 0 "^step-5: ok" -- ckpt verify "$dir"
expect 0 "^step-5: ok" -- ckpt verify --step 5 "$dir"
expect 0 "model/f32/shape5 +f32 +\[129, 33\] +17028" -- ckpt inspect "$dir"
expect 0 "world size +3" -- ckpt inspect --step 5 "$dir"
# Sharded tensors: their global shape, and the ranks' chunks that hold them
# (i32/shape5 straddles the shares of ranks 1 and 2).
expect 0 "optim/i32/shape5 +i32 +\[129, 33\] +17028 +sharded, 2 chunks" -- ckpt inspect "$dir"
expect 0 "model/i32/shape5 +i32 +\[129, 33\] +17028 +whole, [0-9]+ pieces?" -- ckpt inspect "$dir"
expect 0 "data: .*\"sample\":12345" -- ckpt inspect "$dir"

# Bad input: exit code 2 and a message.
expect 2 "does not exist" -- ckpt list "$scratch/missing"
expect 2 "does not exist" -- ckpt verify "$scratch/missing"
expect 2 "not a checkpoint directory" -- ckpt inspect "$scratch/expected"
expect 2 "not a directory" -- ckpt list "$scratch/expected/manifest.json"
expect 2 "step 6 is not a committed checkpoint" -- ckpt inspect --step 6 "$dir"
expect 2 "step 6 is not a committed checkpoint" -- ckpt verify --step 6 "$dir"
expect 2 "" -- ckpt frobnicate "$dir"
expect 2 "" -- ckpt list

# Names in metadata.json are untrusted: a rank file named outside the step
# (the metadata's checksum recomputed, as anyone who edits it can) is a
# damaged step, even though the file it names is intact.
cp -r "$dir/step-5" "$scratch/step-5.saved"
mkdir -p "$scratch/outside"
mv "$dir/step-5/rank-00001.h5" "$scratch/outside/rank-00001.h5"
# reseal <step dir> <rank> [<name>]: names rank file <rank> <name> in the
# metadata (or keeps the name and takes the file's new size and CRC-32C),
# and recomputes the metadata's own checksum.
cat >"$scratch/reseal.py" <<'PYTHON'
import json, os, sys
TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ (0x82F63B78 & -(c & 1))
    TABLE.append(c)
def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
step_dir, rank = sys.argv[1], int(sys.argv[2])
path = os.path.join(step_dir, "metadata.json")
document = json.load(open(path))
del document["checksum"]
entry = document["rank_files"][rank]
if len(sys.argv) > 3:
    entry["name"] = sys.argv[3]
else:
    data = open(os.path.join(step_dir, entry["name"]), "rb").read()
    entry["size"], entry["crc32c"] = len(data), crc32c(data)
# nlohmann::json's compact dump: sorted keys, no spaces, UTF-8 as is.
body = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
document["checksum"] = crc32c(body.encode())
json.dump(document, open(path, "w"), indent=1)
PYTHON
"$python" "$scratch/reseal.py" "$dir/step-5" 1 "../../outside/rank-00001.h5" || exit 1
expect 1 "step-5: .*rank file 1 is named '../../outside/rank-00001.h5', expected 'rank-00001.h5'" \
  -- ckpt verify "$dir"
expect 0 " 5  damaged .*step-5$" -- ckpt list "$dir"
rm -rf "$dir/step-5"
cp -r "$scratch/step-5.saved" "$dir/step-5"
expect 0 "^step-5: ok" -- ckpt verify "$dir"

# A dataset of a rank file that is an external link to a file elsewhere
# (holding the same bytes; the file's size and checksum resealed) is refused:
# HDF5 would read the other file.
"$python" - "$dir/step-5/rank-00001.h5" "$scratch/outside/external.h5" <<'PYTHON' || exit 1
import sys, h5py
rank_file, outside = sys.argv[1], sys.argv[2]
with h5py.File(rank_file, "r+") as f:
    names = []
    f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    name = names[0]
    with h5py.File(outside, "w") as g:
        g.create_dataset(name, data=f[name][()])
    del f[name]
    f[name] = h5py.ExternalLink(outside, name)
print("linked", name, "to", outside)
PYTHON
"$python" "$scratch/reseal.py" "$dir/step-5" 1 || exit 1
expect 1 "step-5: .*rank-00001.h5: dataset .* is reached through a link" -- ckpt verify "$dir"
rm -rf "$dir/step-5"
cp -r "$scratch/step-5.saved" "$dir/step-5"

# A step directory that is a symbolic link (here to the step moved out of
# the checkpoint directory) is refused, not followed.
mv "$dir/step-5" "$scratch/outside/step-5"
ln -s "$scratch/outside/step-5" "$dir/step-5"
expect 1 "step-5: .*step-5 is a symbolic link" -- ckpt verify "$dir"
rm "$dir/step-5"
mv "$scratch/outside/step-5" "$dir/step-5"

# Flip one byte of tensor data inside rank 1's file.
"$python" - "$dir/step-5/rank-00001.h5" "$scratch/expected" <<'PYTHON' || exit 1
import pathlib, sys
rank_file = pathlib.Path(sys.argv[1])
data = bytearray(rank_file.read_bytes())
for expected in sorted(pathlib.Path(sys.argv[2]).glob("*.bin"), key=lambda p: -p.stat().st_size):
    raw = expected.read_bytes()
    for start in range(0, max(len(raw) - 64, 0), 64):
        at = data.find(raw[start:start + 64])
        if at >= 0:
            data[at + 17] ^= 0x01
            rank_file.write_bytes(data)
            print(f"flipped byte {at + 17} of {rank_file.name}")
            sys.exit(0)
sys.exit("no tensor bytes found in " + str(rank_file))
PYTHON
expect 1 "step-5: FAILED" -- ckpt verify "$dir"
expect 1 "step-5: .*rank-00001.h5: checksum mismatch in tensor '" -- ckpt verify "$dir"
expect 1 "step-5: .*rank-00001.h5: file checksum mismatch" -- ckpt verify --step 5 "$dir"

if [[ $failures -ne 0 ]]; then
  echo "$failures checks failed"
  exit 1
fi
echo "all lockstep ckpt checks passed"
