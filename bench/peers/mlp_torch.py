"""The example trainer's MLP in PyTorch on one GPU: the peer of bench/mlp
(see bench/mlp/run.sh).

    python3 bench/peers/mlp_torch.py [--hidden 256,256] [--batch 256] [--steps 200] [--warmup 20]

The same layers as examples/mlp (64 inputs, ReLU between linear layers, 10
classes, softmax cross-entropy, Adam with learning rate 2e-3), written as a
user would: nn.Sequential, F.cross_entropy, torch.optim.Adam with its
defaults. Full float32 arithmetic (TF32 off), as the example's cuBLAS calls.
One batch in host memory, copied to the GPU in every step as the example
does; each step is timed to torch.cuda.synchronize() after the optimiser,
and reads the loss back as the example does. Prints "key value" lines:
parameters, median_ms, mean_ms, min_ms.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--input-dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(1234)
    widths = [args.input_dim] + [int(w) for w in args.hidden.split(",")] + [args.classes]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    inputs = torch.randn(args.batch, args.input_dim)
    labels = torch.randint(args.classes, (args.batch,))

    times = []
    for step in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        x = inputs.cuda()
        y = labels.cuda()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        loss.item()
        optimizer.step()
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append((time.perf_counter() - begin) * 1e3)

    print(f"device cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})")
    print(f"parameters {sum(p.numel() for p in model.parameters())}")
    print(f"batch {args.batch}")
    print(f"median_ms {statistics.median(times):.4f}")
    print(f"mean_ms {statistics.fmean(times):.4f}")
    print(f"min_ms {min(times):.4f}")


if __name__ == "__main__":
    main()
