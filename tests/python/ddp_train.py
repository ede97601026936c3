"""A PyTorch DDP (gloo) training script that does not link lockstep: it
reports to `lockstep run` through python/lockstep_client.py, saves its own
checkpoints with torch.save (written aside, then renamed into place), and
resumes from the newest one after a restart.

Usage: ddp_train.py --steps N --every K --checkpoints DIR [--step-ms MS] [--weights-out FILE]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import lockstep_client as lockstep  # noqa: E402

run = lockstep.connect()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402


def newest_checkpoint(directory):
    steps = []
    for name in os.listdir(directory):
        if name.startswith("step-") and name.endswith(".pt") and name[5:-3].isdigit():
            steps.append(int(name[5:-3]))
    return max(steps) if steps else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--step-ms", type=float, default=0, help="sleep after each step")
    parser.add_argument("--weights-out")
    args = parser.parse_args()

    rank, world = lockstep.init_torch_distributed("gloo")
    torch.manual_seed(1234)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    os.makedirs(args.checkpoints, exist_ok=True)
    start = 0
    newest = newest_checkpoint(args.checkpoints)
    if newest is not None:
        saved = torch.load(os.path.join(args.checkpoints, f"step-{newest}.pt"))
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start = saved["next_step"]
    ddp = DistributedDataParallel(model)
    if rank == 0:
        print(f"ddp: {world} ranks, steps {start}..{args.steps}", flush=True)
    loss = torch.tensor(float("nan"))
    for step in range(start, args.steps):
        # Each rank's batch depends only on the step and the rank.
        generator = torch.Generator().manual_seed(step * 1000 + rank)
        inputs = torch.randn(8, 16, generator=generator)
        targets = inputs.sum(dim=1, keepdim=True).sin()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(inputs), targets)
        loss.backward()
        optimizer.step()
        time.sleep(args.step_ms / 1000)
        run.step(step, loss=loss.item())
        if run.should_checkpoint(step, every=args.every):
            if rank == 0:
                path = os.path.join(args.checkpoints, f"step-{step}.pt")
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "next_step": step + 1}, path + ".tmp")
                os.replace(path + ".tmp", path)
            dist.barrier()
            run.checkpoint(step)
        if run.should_stop():
            if rank == 0:
                print(f"ddp: stopped after step {step}", flush=True)
            break
    if rank == 0:
        if args.weights_out:
            torch.save(model.state_dict(), args.weights_out)
        print(f"ddp: finished {args.steps} steps, loss {loss.item():.4f}", flush=True)
    dist.destroy_process_group()
    run.close()


if __name__ == "__main__":
    main()
