"""python/lockstep_checkpoint.py against checkpoints lockstep wrote: every
tensor (whole, sharded, every dtype and shape) equals the bytes the writer
saved, in numpy and as a torch state_dict; the example's checkpoint equals
what h5py reads from checkpoint.h5; and damaged or hostile checkpoints are
refused with an error naming what is wrong.

Usage: check_reader.py <module dir> <writer's checkpoint dir> <expected dir>
       <scratch dir> [<example's checkpoint dir>]
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

failures = []


def check(what, condition):
    print(("ok   " if condition else "FAIL ") + what)
    if not condition:
        failures.append(what)


def expect_error(what, step_dir, needle, read_all=True):
    """Opening (and reading every tensor of) `step_dir` must raise
    CheckpointError holding `needle`."""
    try:
        step = lc.open(step_dir)
        if read_all:
            for path in step.tensors:
                step.read(path)
    except lc.CheckpointError as error:
        check(f"{what}: refused ({error})", needle in str(error))
        return
    check(f"{what}: refused, but it loaded", False)


def damaged_copy(source, name):
    target = os.path.join(scratch, name)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


def rewrite_metadata(step_dir, change):
    """Applies `change` to metadata.json and stores a matching checksum, as a
    hostile writer could."""
    path = os.path.join(step_dir, "metadata.json")
    document = json.load(open(path))
    del document["checksum"]
    change(document)
    body = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    document["checksum"] = lc.crc32c(body.encode())
    open(path, "w").write(json.dumps(document))


module_dir, writer_dir, expected_dir, scratch = sys.argv[1:5]
example_dir = sys.argv[5] if len(sys.argv) > 5 else None
sys.path.insert(0, module_dir)
import lockstep_checkpoint as lc  # noqa: E402

os.makedirs(scratch, exist_ok=True)
manifest = json.load(open(os.path.join(expected_dir, "manifest.json")))
step = lc.open(writer_dir)
check("the newest step of the writer's checkpoint is 5", step.step == 5)
check("saved by 3 ranks", step.world_size == 3)
check("the key/values", step.values["data"] == {"epoch": 2, "sample": 12345})
check("every saved tensor and no other", set(step.tensors) == set(manifest))
mismatched = []
for path, entry in manifest.items():
    raw = open(os.path.join(expected_dir, entry["file"]), "rb").read()
    bits = step.read(path, bf16="bits")
    if bits.shape != tuple(entry["shape"]) or bits.tobytes() != raw:
        mismatched.append(path)
    if entry["dtype"] == "bf16":
        values = step.read(path)
        widened = np.left_shift(np.frombuffer(raw, dtype="<u2").astype(np.uint32), np.uint32(16))
        if values.dtype != np.float32 or values.tobytes() != widened.tobytes():
            mismatched.append(path + " (as float32)")
check(f"{len(manifest)} tensors equal the saved bytes (numpy) {mismatched}", not mismatched)
sharded = {path for path, tensor in step.tensors.items() if tensor.sharded}
check("the optimizer's tensors are the sharded ones",
      sharded == {path for path in manifest if path.startswith("optim/")})

import torch  # noqa: E402

state = step.state_dict("model")
wrong = []
for name, tensor in state.items():
    entry = manifest["model/" + name]
    raw = open(os.path.join(expected_dir, entry["file"]), "rb").read()
    if entry["dtype"] == "bf16":
        ok = tensor.dtype == torch.bfloat16 and tensor.view(torch.int16).numpy().tobytes() == raw
    else:
        ok = tensor.numpy().tobytes() == raw
    if not ok or tuple(tensor.shape) != tuple(entry["shape"]):
        wrong.append(name)
check(f"state_dict('model'): {len(state)} torch tensors equal the saved bytes {wrong}",
      not wrong and len(state) == sum(p.startswith("model/") for p in manifest))

# Damage and hostile metadata, each on a copy of the step.
source = step.dir
metadata = json.load(open(os.path.join(source, "metadata.json")))
largest = max(((t["path"], p) for t in metadata["tensors"] for p in t["pieces"]),
              key=lambda item: item[1]["count"])
flipped = damaged_copy(source, "flipped")
name = metadata["rank_files"][largest[1]["file"]]["name"]
with open(os.path.join(flipped, name), "r+b") as handle:
    handle.seek(largest[1]["offset"] + 3)
    byte = handle.read(1)
    handle.seek(largest[1]["offset"] + 3)
    handle.write(bytes([byte[0] ^ 0x01]))
expect_error("a flipped bit in a piece", flipped, f"checksum mismatch in tensor '{largest[0]}'")

edited = damaged_copy(source, "edited")
text = open(os.path.join(edited, "metadata.json")).read().replace('"step": 5', '"step": 6')
open(os.path.join(edited, "metadata.json"), "w").write(text)
expect_error("metadata edited without its checksum", edited, "fails its checksum", False)

escape = damaged_copy(source, "escape")
rewrite_metadata(escape, lambda d: d["rank_files"][0].update(name="../../../etc/passwd"))
expect_error("a rank file outside the step", escape, "is not rank-NNNNN.h5", False)

truncated = damaged_copy(source, "truncated")
last = os.path.join(truncated, metadata["rank_files"][-1]["name"])
os.truncate(last, os.path.getsize(last) // 2)
expect_error("a truncated rank file", truncated, "truncated")

linked = damaged_copy(source, "linked")
first = os.path.join(linked, metadata["rank_files"][0]["name"])
os.replace(first, os.path.join(scratch, "elsewhere.h5"))
os.symlink(os.path.join(scratch, "elsewhere.h5"), first)
expect_error("a rank file that is a symbolic link", linked, "symbolic link")

outside = damaged_copy(source, "outside")
rewrite_metadata(outside, lambda d: d["tensors"][-1]["pieces"][0].update(offset=1 << 40))
expect_error("a piece beyond its file", outside, "lies outside")

overlap = damaged_copy(source, "overlap")


def overlap_pieces(document):
    for tensor in document["tensors"]:
        if len(tensor["pieces"]) > 1:
            tensor["pieces"][1]["begin"] -= 1
            return


rewrite_metadata(overlap, overlap_pieces)
expect_error("pieces that overlap", overlap, "hole or overlap", False)

huge = damaged_copy(source, "huge")


def claim_huge(document):
    # One piece said to hold 2^50 elements in a file said to be that large:
    # the files' real sizes refuse it before any memory is taken.
    tensor = document["tensors"][0]
    file = tensor["pieces"][0]["file"]
    sizes = {"f32": 4, "f64": 8, "f16": 2, "bf16": 2, "i32": 4, "i64": 8, "u8": 1}
    end = max(p["offset"] + p["count"] * sizes[t["dtype"]] for t in document["tensors"]
              for p in t["pieces"] if p["file"] == file)
    tensor["shape"] = [1 << 50]
    tensor["pieces"] = [dict(tensor["pieces"][0], begin=0, count=1 << 50, offset=end)]
    document["rank_files"][file]["size"] = 1 << 60


rewrite_metadata(huge, claim_huge)
expect_error("a tensor claimed larger than its file", huge, "the metadata says")

shared = damaged_copy(source, "shared")


def share_bytes(document):
    # Two tensors' pieces said to lie on the same bytes of one file: many
    # such pieces could claim far more elements than the files hold.
    pieces = [p for t in document["tensors"] for p in t["pieces"] if p["count"] > 1]
    first, second = pieces[0], next(p for p in pieces[1:] if p["file"] == pieces[0]["file"])
    second["offset"] = first["offset"]


rewrite_metadata(shared, share_bytes)
expect_error("pieces that share bytes of a file", shared, "overlap in", False)

wide = damaged_copy(source, "wide")
rewrite_metadata(wide, lambda d: d["tensors"][0].update(shape=[1 << 62, 4]))
expect_error("a shape whose element count overflows 64 bits", wide, "its shape", False)

fifo = damaged_copy(source, "fifo")
os.remove(os.path.join(fifo, metadata["rank_files"][0]["name"]))
os.mkfifo(os.path.join(fifo, metadata["rank_files"][0]["name"]))
expect_error("a rank file that is a FIFO (no hang)", fifo, "is not a regular file")

newer = damaged_copy(source, "newer")
rewrite_metadata(newer, lambda d: d.update(format_version=99))
expect_error("a newer format", newer, "use a newer lockstep", False)

garbage = damaged_copy(source, "garbage")
open(os.path.join(garbage, "metadata.json"), "w").write("{not json")
expect_error("metadata that is not JSON", garbage, "is not JSON", False)

if example_dir:
    import h5py  # an independent reader of the same checkpoint

    example = lc.open(example_dir)
    differ = []
    with h5py.File(os.path.join(example.dir, "checkpoint.h5"), "r") as f:
        for path in example.tensors:
            if example.read(path, bf16="bits").tobytes() != np.asarray(f[path][()]).tobytes():
                differ.append(path)
    check(f"the example's step {example.step}: {len(example.tensors)} tensors equal h5py's "
          f"{differ}", not differ and len(example.tensors) > 0)
    check("the example's moments are sharded",
          any(t.sharded for p, t in example.tensors.items() if p.startswith("optim.m/")))
    weights = example.state_dict("model")
    check("the example's weights as a state_dict", all(t.dtype == torch.float32
                                                       for t in weights.values()))
    listing = subprocess.run([sys.executable, os.path.join(module_dir, "lockstep_checkpoint.py"),
                              example_dir, "--verify"], capture_output=True, text=True)
    check("the script lists the example's tensors and verifies every piece",
          listing.returncode == 0 and "every piece passed its checksum" in listing.stdout
          and "optim.m/" in listing.stdout)

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
