"""Training step speed of a CIFAR ResNet: device, precision, memory format, eager vs compiled.

    python benchmarks/train_speed.py --arch resnet56 --threads 1 --precision fp32 [--nchw] [--compile]
    python benchmarks/train_speed.py --arch resnet56 --device cuda --precision bf16 [--compile] [--loop]

One SGD step (batch 128 of random 32x32 images) is timed over `--steps` steps after `--warmup` warm-up steps (the
warm-up includes compiling, recording CUDA graphs and cuDNN's benchmarking); the line printed extrapolates to a
CIFAR-10 epoch of 390 steps. Without `--loop` there is no data: this is the model's share of `landscape train`'s
time. `--loop` adds the rest of its step (a batch of uint8 images indexed on the device, crop + flip augmentation
drawn on the CPU, normalization, the learning rate set, the device-side sums and nan/inf flag), where the host's
overhead shows on a GPU. To compare variants on the CPU fairly, run them side by side in one shell line
(`... & ...; wait`) and pause other CPU work (training runs: `kill -STOP`, then `kill -CONT`); on a GPU run them
one after the other.

On CUDA the step is the one `landscape train` runs there: cuDNN benchmark mode on, `--compile` in mode
"reduce-overhead" (CUDA graphs), fp32 with TF32 off in the forward and the backward pass, and the clocks are read
only after `torch.cuda.synchronize()`. This CUDA path has not run yet (session 8's GPU numbers came from the runs'
logs, before it was written).
"""

import argparse
import time

import torch

from landscape.data import DEFAULT_NORMALIZATION, normalizer
from landscape.evaluate import normalize
from landscape.hardware import describe, resolve_device
from landscape.models import create_model
from landscape.train import augment, cudnn_benchmark, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--nchw", action="store_true", help="NCHW instead of channels-last")
    parser.add_argument("--compile", action="store_true", help="as `landscape train --compile`")
    parser.add_argument("--loop", action="store_true", help="time landscape train's whole step, data included")
    parser.add_argument("--steps", type=int, help="timed steps (default: 8 on the CPU, 200 on CUDA)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: 2 on the CPU, 20 on CUDA)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (200 if cuda else 8)
    warmup = args.warmup if args.warmup is not None else (20 if cuda else 2)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    memory_format = torch.contiguous_format if args.nchw else torch.channels_last
    model = create_model(args.arch, num_classes=10).to(device).to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    forward = torch.compile(model, mode="reduce-overhead" if cuda else None) if args.compile else model
    x = torch.randn(128, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (128,), device=device)
    images = torch.randint(0, 256, (1024, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (1024,), device=device)
    scale, shift = normalizer(*DEFAULT_NORMALIZATION["cifar10"], device)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=generator).to(device)
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    calls = [0]

    def step() -> None:
        nonlocal x, y, loss_sum, correct, nonfinite
        if args.loop:  # as landscape.train's loop, less its occasional checks and saves
            for group in optimizer.param_groups:
                group["lr"] = 0.05
            k = calls[0] % (len(images) // 128)
            idx = order[k * 128 : (k + 1) * 128]
            x = normalize(augment(images[idx], generator), scale, shift, memory_format)
            y = labels[idx]
        calls[0] += 1
        loss, out = train_step(forward, optimizer, x, y, args.precision, device, cuda_graphs=args.compile)
        if args.loop:
            nonfinite |= ~torch.isfinite(loss)
            loss_sum += loss * len(y)
            correct += (out.argmax(1) == y).sum()

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize(device)  # the steps are queued: wait for the device before reading the clock
        return time.perf_counter()

    with cudnn_benchmark(device):
        started = clock()
        for _ in range(warmup):
            step()
        warm = clock() - started
        started = clock()
        for _ in range(steps):
            step()
        per_step = (clock() - started) / steps
    variant = ", ".join(
        [
            args.precision,
            "NCHW" if args.nchw else "channels-last",
            "compile" if args.compile else "eager",
            *(["whole step"] if args.loop else []),
        ]
    )
    threads = "" if cuda else f", {args.threads} thread(s)"
    print(
        f"{args.arch} ({variant}{threads}): {per_step * 1000:.1f} ms/step over {steps} steps -> "
        f"{per_step * 390 / 60:.2f} min/epoch (warm-up {warmup} steps, {warm:.1f} s) on {describe(device)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
