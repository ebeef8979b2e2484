"""Training step speed of a CIFAR ResNet on this machine: eager vs compiled, channels-last vs NCHW.

Usage: python benchmarks/train_speed.py ARCH THREADS COMPILE(0|1) CHANNELS_LAST(0|1)
One SGD step (batch 128 of random 32x32 images, bf16 autocast) is timed over 8 steps after 2 warm-up steps
(the warm-up includes compiling); the last line extrapolates to a CIFAR-10 epoch of 390 steps. No data loading:
this is the model's share of `landscape train`'s time.
"""

import sys
import time

import torch
import torch.nn.functional as F

from landscape.models import create_model

arch, threads, comp, cl = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
torch.set_num_threads(threads)
torch.manual_seed(0)
m = create_model(arch, num_classes=10)
mf = torch.channels_last if cl else torch.contiguous_format
m = m.to(memory_format=mf).train()
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
f = torch.compile(m) if comp else m
x = torch.randn(128, 3, 32, 32).contiguous(memory_format=mf)
y = torch.randint(0, 10, (128,))


def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = f(x)
    loss = F.cross_entropy(out.float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


t = time.perf_counter()
step()
step()
print("warm", time.perf_counter() - t, flush=True)
t = time.perf_counter()
n = 8
for _ in range(n):
    step()
dt = (time.perf_counter() - t) / n
print(
    arch,
    threads,
    "compile" if comp else "eager",
    "cl" if cl else "nchw",
    f"{dt:.3f} s/step -> {dt * 390 / 60:.1f} min/epoch",
    flush=True,
)
