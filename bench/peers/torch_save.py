#!/usr/bin/python3
"""Peer for bench/checkpoint: torch.save + fsync of the same tensors.

Reads the tensor list that `bench_checkpoint --shapes-only FILE` wrote
({"name": [dims...]}, all float32), saves them in one torch.save call to a
file in DIR, fsyncs it, and prints the median wall time of the save + fsync
as `RESULT torch_save_s=<s> bytes=<n>`. With DEVICE cuda the tensors live on
the GPU, and torch.save copies them to host memory as part of its time.

Usage: torch_save.py SHAPES_JSON DIR [REPEAT] [DEVICE]
"""
import json
import os
import statistics
import sys
import time

import torch


def main():
    shapes_path, directory = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    with open(shapes_path) as f:
        shapes = json.load(f)
    torch.set_num_threads(1)
    state = {
        name: torch.full(dims, 1.5, dtype=torch.float32, device=device)
        for name, dims in shapes.items()
    }
    total = sum(t.numel() * t.element_size() for t in state.values())
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "torch_save.pt")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        times.append(time.perf_counter() - start)
        os.remove(path)
    print(f"RESULT torch_save_s={statistics.median(times):.4f} bytes={total}", flush=True)


if __name__ == "__main__":
    main()
