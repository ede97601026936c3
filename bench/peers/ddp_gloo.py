"""PyTorch DDP (gloo backend) averaging the gradients of GPT-2 small's
parameter shapes: the peer of bench/gradsync (see bench/gradsync/run.sh).

Launched by mpiexec, one process per rank; the ranks meet over TCP on
127.0.0.1 (rank and world size from Open MPI's environment):

    mpiexec -n 2 /usr/bin/python3 bench/peers/ddp_gloo.py [--scale 1] [--steps 5] [--port 29512]

The model is one nn.Parameter per GPT-2 tensor (same names, shapes and
order as gradsync_bench, every dimension divided by sqrt(scale)); its loss is
sum over parameters of (p * c).sum() with c = rank + 1, so that backward
produces every gradient and DDP's hooks all-reduce them in buckets (25 MiB,
first 1 MiB, its defaults). Two figures, each the median over --steps steps
of the slowest rank:

  ddp_allreduce_ms  DDP's communication itself: the buckets DDP formed
                    (recorded by a comm hook that does what DDP's default
                    does: divide by the world size, all-reduce) are
                    all-reduced again the same way, all launched at once
                    in bucket order, then waited for; the same conditions as
                    gradsync_bench's figure (every gradient ready, then wait).
  ddp_exposed_ms    loss.backward() with synchronisation minus
                    loss.backward() under no_sync(): the part of the
                    communication the backward pass did not hide. A
                    difference of two noisy times: it can come out negative.

Rank 0 prints "key value" lines.
"""

import argparse
import math
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch import nn


def gpt2_small_shapes(scale):
    divisor = math.sqrt(max(scale, 1.0))

    def dim(size):
        return max(1, int(size / divisor + 0.5))  # as llround in gradsync_bench

    embd = dim(768)
    shapes = [("wte.weight", (dim(50257), embd)), ("wpe.weight", (dim(1024), embd))]
    for block in range(12):
        prefix = f"h.{block}."
        shapes += [
            (prefix + "ln_1.weight", (embd,)),
            (prefix + "ln_1.bias", (embd,)),
            (prefix + "attn.c_attn.weight", (embd, dim(2304))),
            (prefix + "attn.c_attn.bias", (dim(2304),)),
            (prefix + "attn.c_proj.weight", (embd, embd)),
            (prefix + "attn.c_proj.bias", (embd,)),
            (prefix + "ln_2.weight", (embd,)),
            (prefix + "ln_2.bias", (embd,)),
            (prefix + "mlp.c_fc.weight", (embd, dim(3072))),
            (prefix + "mlp.c_fc.bias", (dim(3072),)),
            (prefix + "mlp.c_proj.weight", (dim(3072), embd)),
            (prefix + "mlp.c_proj.bias", (embd,)),
        ]
    shapes += [("ln_f.weight", (embd,)), ("ln_f.bias", (embd,))]
    return shapes


class ParameterShapes(nn.Module):
    """Parameters with the given shapes; forward(c) = sum of (p * c).sum()."""

    def __init__(self, shapes):
        super().__init__()
        self.params = nn.ParameterList(nn.Parameter(torch.zeros(shape)) for _, shape in shapes)

    def forward(self, factor):
        return sum((p * factor).sum() for p in self.params)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--port", type=int, default=29512)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    args = parser.parse_args()

    rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
    world = int(os.environ["OMPI_COMM_WORLD_SIZE"])
    torch.set_num_threads(1)  # one core's worth per rank, as the C++ ranks
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                            rank=rank, world_size=world)

    shapes = gpt2_small_shapes(args.scale)
    model = nn.parallel.DistributedDataParallel(ParameterShapes(shapes),
                                                bucket_cap_mb=args.bucket_mb)
    bucket_elements = {}  # bucket index -> elements, as DDP formed them

    def recording_hook(_state, bucket):
        tensor = bucket.buffer()
        bucket_elements[bucket.index()] = tensor.numel()
        tensor.div_(world)  # what DDP's default hook does
        return dist.all_reduce(tensor, async_op=True).get_future().then(
            lambda future: future.value()[0])

    model.register_comm_hook(None, recording_hook)
    factor = torch.tensor(float(rank + 1))

    def step(synchronise):
        model.zero_grad(set_to_none=True)
        if synchronise:
            loss = model(factor)
        else:
            with model.no_sync():
                loss = model(factor)
        dist.barrier()
        start = time.perf_counter()
        if synchronise:
            loss.backward()
        else:
            with model.no_sync():
                loss.backward()
        mine = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)
        return mine.item()

    step(True)  # warm-up; DDP rebuilds its buckets after the first step
    step(False)
    expected = (world + 1) / 2
    first = next(model.parameters()).grad  # from the no_sync step: c
    assert first is not None and abs(first.flatten()[0].item() - (rank + 1)) < 1e-6
    synced, local = [], []
    for _ in range(args.steps):
        synced.append(step(True))
        got = model.module.params[0].grad.flatten()[-1].item()
        assert abs(got - expected) < 1e-6, f"averaged gradient {got}, expected {expected}"
        local.append(step(False))

    # DDP's buckets (as rebuilt after the first step) all-reduced directly.
    buffers = [torch.ones(bucket_elements[index]) for index in sorted(bucket_elements)]

    def allreduce_buckets():
        dist.barrier()
        start = time.perf_counter()
        works = [dist.all_reduce(buffer.div_(world), async_op=True) for buffer in buffers]
        for work in works:
            work.wait()
        mine = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)
        return mine.item()

    allreduce_buckets()  # warm-up
    direct = [allreduce_buckets() for _ in range(args.steps)]

    if rank == 0:
        elements = sum(math.prod(shape) for _, shape in shapes)
        print(f"ddp_torch_version {torch.__version__}")
        print(f"ddp_parameters {elements}")
        print(f"ddp_buckets {len(buffers)}")
        print(f"ddp_backward_no_sync_ms {statistics.median(local) * 1e3:.6g}")
        print(f"ddp_backward_sync_ms {statistics.median(synced) * 1e3:.6g}")
        print(f"ddp_exposed_ms {(statistics.median(synced) - statistics.median(local)) * 1e3:.6g}")
        print(f"ddp_allreduce_ms {statistics.median(direct) * 1e3:.6g}", flush=True)
    dist.barrier()
    # Leave without tearing the gloo process group down: in torch 1.13 its
    # teardown sometimes waited forever for a peer that had already exited.
    os._exit(0)


if __name__ == "__main__":
    main()
