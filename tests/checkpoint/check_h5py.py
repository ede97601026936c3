"""Opens a lockstep checkpoint with h5py and checks every dataset (whole and
sharded tensors alike: each reads as one global tensor) against the raw
bytes the writer saved beside it, and runs the bf16 recipe of
docs/CHECKPOINTS.md (taken from the page) on every bf16 dataset.

Usage: check_h5py.py <step directory> <expected directory> <world size>
"""
import json
import os
import re
import sys

import h5py
import numpy as np

# The documentation whose bf16 recipe is checked, found before main() leaves
# the working directory.
CHECKPOINTS_DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                               "CHECKPOINTS.md")

NUMPY_TYPES = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "bf16": np.uint16,
               "i32": np.int32, "i64": np.int64, "u8": np.uint8}


def check_recorded_offsets(step_dir):
    """A restore reads each piece at the offset metadata.json records for it;
    h5py's HDF5 must find the piece's dataset data at that same offset."""
    failures = []
    metadata = json.load(open(os.path.join(step_dir, "metadata.json")))
    files = [entry["name"] for entry in metadata["rank_files"]]
    recorded = 0
    for tensor in metadata["tensors"]:
        for piece in tensor["pieces"]:
            if "offset" not in piece:
                failures.append(f"{tensor['path']}: a piece without a recorded offset")
                continue
            recorded += 1
            with h5py.File(os.path.join(step_dir, files[piece["file"]]), "r") as rank_file:
                actual = rank_file[tensor["path"]].id.get_offset()
            if actual != piece["offset"]:
                failures.append(f"{tensor['path']} in {files[piece['file']]}: offset "
                                f"{piece['offset']} recorded, {actual} in the file")
    if recorded == 0:
        failures.append("metadata.json records no piece offsets")
    return failures


def bf16_recipe():
    """The line of docs/CHECKPOINTS.md that turns bf16 bits into values, as
    written there (a fenced python block's `values = ...` line)."""
    doc = open(CHECKPOINTS_DOC).read()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()
             if line.strip().startswith("values =") and "np.float32" in line]
    if len(lines) != 1:
        raise SystemExit(f"FAIL: {CHECKPOINTS_DOC} has {len(lines)} bf16 recipes, expected 1")
    return lines[0]


def check_bf16_recipe(f, manifest, expected_dir):
    """Runs the documented recipe on every bf16 dataset (scalar, empty, 1-d and
    n-d) and compares with float32 values built from the saved bits by bytes."""
    failures = []
    recipe = bf16_recipe()
    code = compile(recipe, CHECKPOINTS_DOC, "exec")
    ranks = set()
    for path, entry in manifest.items():
        if entry["dtype"] != "bf16":
            continue
        raw = open(os.path.join(expected_dir, entry["file"]), "rb").read()
        # bf16 is the upper half of a float32: little-endian, two zero bytes first.
        widened = b"".join(b"\0\0" + raw[i:i + 2] for i in range(0, len(raw), 2))
        expected = np.frombuffer(widened, dtype="<f4").reshape(entry["shape"])
        scope = {"np": np, "bits": f[path][()]}
        try:
            exec(code, scope)
        except Exception as error:  # the recipe itself fails: report which shape
            failures.append(f"{path} {entry['shape']}: the bf16 recipe fails: {error!r}")
            continue
        values = scope["values"]
        if np.shape(values) != tuple(entry["shape"]):
            failures.append(f"{path}: the bf16 recipe gives shape {np.shape(values)}")
        elif np.asarray(values).dtype != np.float32:
            failures.append(f"{path}: the bf16 recipe gives dtype {np.asarray(values).dtype}")
        elif np.asarray(values).tobytes() != expected.tobytes():
            failures.append(f"{path}: the bf16 recipe gives other values")
        ranks.add(min(len(entry["shape"]), 2))
    if ranks != {0, 1, 2}:
        failures.append(f"the bf16 recipe ran on datasets of ranks {sorted(ranks)}, "
                        "expected scalar, 1-d and n-d")
    print(f"bf16 recipe from the documentation: {recipe}")
    return failures


def main():
    step_dir, expected_dir, world_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    manifest = json.load(open(os.path.join(expected_dir, "manifest.json")))
    failures = []
    # A directory other than the checkpoint's: virtual datasets must find
    # their rank files relative to checkpoint.h5, not the working directory.
    os.chdir("/")
    with h5py.File(os.path.join(step_dir, "checkpoint.h5"), "r") as f:
        if int(f.attrs["step"]) != 5 or int(f.attrs["world_size"]) != world_size:
            failures.append(f"attributes: step {f.attrs['step']}, world {f.attrs['world_size']}")
        metadata = json.loads(f.attrs["lockstep_metadata"])
        if metadata["values"]["data"] != {"epoch": 2, "sample": 12345}:
            failures.append(f"key/values: {metadata['values']}")
        for path, entry in manifest.items():
            dataset = f[path]
            expected = np.fromfile(os.path.join(expected_dir, entry["file"]),
                                   dtype=NUMPY_TYPES[entry["dtype"]]).reshape(entry["shape"])
            values = dataset[()]
            values = np.asarray(values)
            if tuple(dataset.shape) != tuple(entry["shape"]):
                failures.append(f"{path}: shape {dataset.shape}, expected {entry['shape']}")
            elif values.dtype != expected.dtype:
                failures.append(f"{path}: dtype {values.dtype}, expected {expected.dtype}")
            elif values.tobytes() != expected.tobytes() or not np.array_equal(values, expected):
                failures.append(f"{path}: values differ")
            tag = dataset.attrs["lockstep_dtype"]
            tag = tag.decode() if isinstance(tag, bytes) else tag
            if tag != entry["dtype"]:
                failures.append(f"{path}: lockstep_dtype {tag}, expected {entry['dtype']}")
        held = sum(len(group) for name in ("model", "optim") for group in f[name].values())
        if len(manifest) != held:
            failures.append("the file holds other datasets than the ones saved")
        # The sharded tensors read whole, as one dataset each (checked above),
        # and metadata.json says they were saved from chunks.
        sharded = {tensor["path"] for tensor in metadata["tensors"] if tensor.get("sharded")}
        expected_sharded = {path for path in manifest if path.startswith("optim/")}
        if sharded != expected_sharded:
            failures.append(f"sharded tensors in the metadata: {sorted(sharded)}, "
                            f"expected {sorted(expected_sharded)}")
        failures += check_bf16_recipe(f, manifest, expected_dir)
    failures += check_recorded_offsets(step_dir)
    for failure in failures:
        print("FAIL", failure)
    print(f"checked {len(manifest)} datasets: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
