"""Opens a lockstep checkpoint with h5py and checks every dataset against the
raw bytes the writer saved beside it.

Usage: check_h5py.py <step directory> <expected directory> <world size>
"""
import json
import os
import sys

import h5py
import numpy as np

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
        if len(manifest) != sum(len(group) for group in f["model"].values()):
            failures.append("the file holds other datasets than the ones saved")
    failures += check_recorded_offsets(step_dir)
    for failure in failures:
        print("FAIL", failure)
    print(f"checked {len(manifest)} datasets: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
