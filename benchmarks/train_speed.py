"""Training step speed of a CIFAR ResNet on this machine: precision, memory format, eager vs compiled.

    python benchmarks/train_speed.py --arch resnet56 --threads 1 --precision fp32 [--nchw] [--compile]

One SGD step (batch 128 of random 32x32 images) is timed over `--steps` steps after 2 warm-up steps (the warm-up
includes compiling); the line printed extrapolates to a CIFAR-10 epoch of 390 steps. No data loading: this is the
model's share of `landscape train`'s time. To compare variants fairly, run them side by side in one shell line
(`... & ...; wait`) and pause other CPU work (training runs: `kill -STOP`, then `kill -CONT`).
"""

import argparse
import time

import torch
import torch.nn.functional as F

from landscape.hardware import autocast, describe
from landscape.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--nchw", action="store_true", help="NCHW instead of channels-last")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    memory_format = torch.contiguous_format if args.nchw else torch.channels_last
    model = create_model(args.arch, num_classes=10).to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    forward = torch.compile(model) if args.compile else model
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (128,))

    def step() -> None:
        with autocast(args.precision, device):
            out = forward(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    step()
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    per_step = (time.perf_counter() - started) / args.steps
    variant = f"{args.precision}, {'NCHW' if args.nchw else 'channels-last'}, {'compile' if args.compile else 'eager'}"
    print(
        f"{args.arch} ({variant}, {args.threads} thread(s)): {per_step:.3f} s/step -> "
        f"{per_step * 390 / 60:.1f} min/epoch (warm-up {warm:.1f} s) on {describe(device)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
