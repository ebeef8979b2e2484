"""landscape compute vs. the reference algorithm vs. a bare model(x) loop, side by side in one process.

    LANDSCAPE_DATA_ROOT=../shared/data python benchmarks/compute_speed.py [--arch resnet56] [--grid 5]
        [--images 1000] [--device cpu] [--skip-reference] [--no-bf16] [--extra] [--compile] [--json results.json]

Reference (the algorithm of github.com/tomgoldstein/loss-landscape): per grid point, write θ* + αδ + βη into
the model, iterate a torchvision DataLoader (ToTensor + Normalize, 2 workers, batch 128) over the images,
eval mode, fp32. The paper's plot_surface.py builds its DataLoader once and iterates it again at every point; its
workers are not persistent, so they start anew for every pass, as here, where a DataLoader is built per point (the
object costs next to nothing). Its crunch() also rewrites the whole loss and accuracy arrays in its HDF5 file after
every point, which this reference leaves out: that favours the reference, so the speed-ups are conservative.
Bare loop: the images pre-normalized in memory, `model(x)` in eval mode, batch 128, same weight update per point.
landscape: `compute_surface` end to end, HDF5 file included. "total" is `compute_surface` end to end (setup
included) for the landscape rows, the loop over the points only for the reference and the bare loops.
All variants evaluate the same directions on the same images; results are compared point by point with landscape
fp32, loss and accuracy. Checked, and a FAIL line and exit status 1 where not met: every fp32 variant's loss within a
relative 1e-5 (`FP32_LOSS_RTOL`) and its accuracies identical; every bf16 variant's loss within a relative 5e-2
(`BF16_LOSS_RTOL`). bf16 accuracies are reported, not checked: bf16 rounding moves predictions near a tie.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from landscape import (
    Axis,
    CheckpointSpec,
    DataSpec,
    DirectionSpec,
    EvalSpec,
    GridSpec,
    RunOptions,
    SurfaceSpec,
    build_model,
    compute_surface,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from landscape.data import load_split
from landscape.hardware import autocast, cpu_name, describe
from landscape.storage import read_directions

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FP32_LOSS_RTOL = 1e-5  # fp32 variants differ from landscape fp32 by rounding only (measured: up to 7e-8)
BF16_LOSS_RTOL = 5e-2  # bf16 rounds (measured: up to 5.8e-3 with BN folding); this catches gross errors only


class PilCifar(torch.utils.data.Dataset):
    """CIFAR images as PIL images through a torchvision transform, as torchvision.datasets.CIFAR10 serves them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def set_weights(model: torch.nn.Module, center: dict, dx: dict, dy: dict, a: float, b: float) -> None:
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name in center:
            params[name].copy_(center[name] + a * dx[name] + b * dy[name])


def reference(model, center, dx, dy, points, images_hwc, labels, device) -> np.ndarray:
    import torchvision.transforms as T

    transform = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    dataset = PilCifar(images_hwc, labels, transform)
    out, times = [], []
    for a, b in points:
        started = time.perf_counter()
        set_weights(model, center, dx, dy, a, b)
        loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=False, num_workers=2)
        model.eval()
        total, loss_sum, correct = 0, 0.0, 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y).item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                total += len(y)
        out.append((loss_sum / total, 100.0 * correct / total))
        times.append(time.perf_counter() - started)
    return np.asarray(out), times


def bare_loop(model, center, dx, dy, points, x_all, y_all, precision) -> np.ndarray:
    out, times = [], []
    model.eval()
    for a, b in points:
        started = time.perf_counter()
        set_weights(model, center, dx, dy, a, b)
        loss_sum = torch.zeros((), dtype=torch.float64, device=x_all.device)
        correct = torch.zeros((), dtype=torch.int64, device=x_all.device)
        with torch.no_grad(), autocast(precision, x_all.device):
            for s in range(0, len(y_all), 128):
                logits = model(x_all[s : s + 128]).float()
                loss_sum += F.cross_entropy(logits, y_all[s : s + 128], reduction="sum").double()
                correct += (logits.argmax(1) == y_all[s : s + 128]).sum()
        out.append((loss_sum.item() / len(y_all), 100.0 * correct.item() / len(y_all)))
        times.append(time.perf_counter() - started)
    return np.asarray(out), times


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--grid", type=int, default=5, help="points per axis")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--extra", action="store_true", help="also: BN folding switched, vmap over 5 points, other batch sizes"
    )
    parser.add_argument("--compile", action="store_true", help="also: torch.compile (compilation time included)")
    parser.add_argument(
        "--no-bf16",
        action="store_true",
        help="skip the bf16 variants (on a CPU without native bf16 they run ~10x slower than fp32, unused there)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)

    workdir = Path(tempfile.mkdtemp(prefix="landscape-bench-"))
    torch.manual_seed(0)
    model = create_model(args.arch)
    with torch.no_grad():  # stand-in for trained BN statistics, so that folding does real work
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ckpt = workdir / "model.pt"
    save_checkpoint(
        ckpt, model, {"arch": args.arch, "num_classes": 10, "dataset": "cifar10", "mean": list(MEAN), "std": list(STD)}
    )
    axis = Axis(-1.0, 1.0, args.grid)
    spec = SurfaceSpec(
        checkpoint=CheckpointSpec(path=str(ckpt)),
        data=DataSpec(root=os.environ.get("LANDSCAPE_DATA_ROOT", ""), subset=args.images),
        grid=GridSpec(axis, axis),
        x=DirectionSpec(seed=0),
        y=DirectionSpec(seed=1),
    )

    rows: list[dict] = []
    results: dict[str, np.ndarray] = {}

    def record(name: str, output: tuple[np.ndarray, list[float]], seconds: float) -> None:
        values, point_times = output
        results[name] = values
        median = float(np.median(point_times))
        rows.append(
            {
                "variant": name,
                "seconds": seconds,
                "median_point_s": median,
                "images_per_s": args.images / median,
                "point_times": point_times,
            }
        )
        print(
            f"{name:<36} total {seconds:7.1f} s, median {median:6.3f} s/point, {args.images / median:7.1f} images/s",
            flush=True,
        )

    def landscape_run(name: str, evaluation: EvalSpec, options: RunOptions) -> None:
        out = workdir / f"{name.replace(' ', '_').replace('/', '_')}.h5"
        run_spec = dataclasses.replace(spec, evaluation=evaluation)
        stamps: list[tuple[float, int]] = []
        surface, seconds = timed(
            lambda: compute_surface(
                run_spec, out, options, progress=lambda done, total: stamps.append((time.perf_counter(), done))
            )
        )
        values = np.stack([surface["train_loss"].ravel(), surface["train_acc"].ravel()], axis=1)
        times, done = np.array(stamps).T
        record(name, (values, list(np.diff(times) / np.diff(done))), seconds)  # per point, also with vmap

    base = RunOptions(device=args.device)  # the defaults of `landscape compute`
    # Warm-up outside the timings: the first read of the CIFAR pickles and the first oneDNN kernels.
    warm = dataclasses.replace(spec, grid=GridSpec(Axis(0.0, 0.0, 1), Axis(0.0, 0.0, 1)))
    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16")
    for precision in precisions:
        compute_surface(
            dataclasses.replace(warm, evaluation=EvalSpec(precision=precision)),
            workdir / f"warmup_{precision}.h5",
            base,
        )
    landscape_run("landscape fp32", EvalSpec(), base)
    points = [(a, b) for b in axis.coordinates() for a in axis.coordinates()]  # storage order: y rows, x columns
    plain = build_model(load_checkpoint(ckpt)).to(device)
    center = {n: p.detach().clone() for n, p in plain.named_parameters()}
    directions = {a: read_directions(workdir / "landscape_fp32.h5", a, like=center) for a in ("x", "y")}
    dx = {n: directions["x"][n].to(device) for n in center}
    dy = {n: directions["y"][n].to(device) for n in center}
    train = load_split(spec.data, "train")
    x_all = (
        (train.images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    ).to(device)
    y_all = train.labels.to(device)

    if not args.skip_reference:
        images_hwc = train.images.permute(0, 2, 3, 1).numpy()
        output, seconds = timed(
            lambda: reference(copy.deepcopy(plain), center, dx, dy, points, images_hwc, train.labels.numpy(), device)
        )
        record("reference (DataLoader per point)", output, seconds)
    output, seconds = timed(lambda: bare_loop(copy.deepcopy(plain), center, dx, dy, points, x_all, y_all, "fp32"))
    record("bare model(x) loop fp32", output, seconds)
    if not args.no_bf16:
        output, seconds = timed(lambda: bare_loop(copy.deepcopy(plain), center, dx, dy, points, x_all, y_all, "bf16"))
        record("bare model(x) loop bf16", output, seconds)
        landscape_run("landscape bf16", EvalSpec(precision="bf16"), base)
    if args.extra:
        landscape_run("landscape fp32 no BN folding", EvalSpec(), dataclasses.replace(base, fold_bn=False))
        landscape_run("landscape fp32 vmap 5 points/pass", EvalSpec(), dataclasses.replace(base, points_per_pass=5))
        landscape_run("landscape fp32 batch 512", EvalSpec(), dataclasses.replace(base, batch_size=512))
        if not args.no_bf16:
            landscape_run(
                "landscape bf16 no BN folding", EvalSpec(precision="bf16"), dataclasses.replace(base, fold_bn=False)
            )
            landscape_run(
                "landscape bf16 batch 512", EvalSpec(precision="bf16"), dataclasses.replace(base, batch_size=512)
            )
    if args.compile:
        landscape_run("landscape fp32 torch.compile", EvalSpec(), dataclasses.replace(base, compile=True))
        landscape_run(
            "landscape fp32 no BN folding, torch.compile",
            EvalSpec(),
            dataclasses.replace(base, compile=True, fold_bn=False),
        )
    if args.extra or args.compile:  # the first variant once more, last: how much order and drift move the numbers
        landscape_run("landscape fp32 (again, last)", EvalSpec(), base)

    by_name = {r["variant"]: r for r in rows}
    ref_name = "reference (DataLoader per point)"
    fp32_loss, fp32_acc = results["landscape fp32"][:, 0], results["landscape fp32"][:, 1]
    hardware = describe(device) + (f"; host CPU {cpu_name()}" if device.type == "cuda" else "")
    command = shlex.join(sys.argv)
    print()
    print(
        f"{args.arch}, {args.grid}x{args.grid} grid, {args.images} CIFAR-10 training images, device {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"hardware: {hardware}")
    print(f"command: {command}")
    print(
        "Speed from the median time per grid point (robust to other load); total: end to end with setup for the "
        "landscape rows, the loop over the points only for the reference and the bare loops."
    )
    print(
        "| variant | total (s) | median s/point | images/s | vs reference | vs bare loop, same precision "
        "| max abs loss diff vs landscape fp32 | max rel loss diff | max accuracy diff (points) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    failures: list[str] = []
    for r in rows:
        name = r["variant"]
        speed = r["images_per_s"]
        vs_ref = f"{speed / by_name[ref_name]['images_per_s']:.2f}x" if ref_name in by_name else "-"
        bare = "bare model(x) loop bf16" if "bf16" in name else "bare model(x) loop fp32"
        vs_bare = f"{speed / by_name[bare]['images_per_s']:.2f}x" if name.startswith("landscape") else "-"
        diff = np.abs(results[name][:, 0] - fp32_loss)
        rel = float((diff / np.abs(fp32_loss)).max())
        acc_diff = float(np.abs(results[name][:, 1] - fp32_acc).max())
        r.update(
            vs_reference=vs_ref,
            vs_bare=vs_bare,
            max_abs_loss_diff=float(diff.max()),
            max_rel_loss_diff=rel,
            max_acc_diff=acc_diff,
        )
        print(
            f"| {name} | {r['seconds']:.1f} | {r['median_point_s']:.3f} | {speed:.0f} | {vs_ref} | {vs_bare} "
            f"| {diff.max():.2e} | {rel:.2e} | {acc_diff:.2f} |"
        )
        if "bf16" in name:
            if not rel <= BF16_LOSS_RTOL:
                failures.append(f"{name}: loss differs by {rel:.2e} relative (bf16 tolerance {BF16_LOSS_RTOL:.0e})")
        else:
            if not rel <= FP32_LOSS_RTOL:
                failures.append(f"{name}: loss differs by {rel:.2e} relative (fp32 tolerance {FP32_LOSS_RTOL:.0e})")
            if acc_diff * args.images / 100 >= 0.5:  # identical: no image classified differently (not float noise)
                failures.append(f"{name}: accuracy differs by up to {acc_diff:.2f} points (fp32: must be identical)")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print(
            f"PASS: fp32 variants within {FP32_LOSS_RTOL:.0e} relative in the loss with identical accuracies, "
            f"bf16 variants within {BF16_LOSS_RTOL:.0e} in the loss (their accuracies not checked)"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "argv": sys.argv,
                    "hardware": hardware,
                    "rows": rows,
                    "torch": torch.__version__,
                    "failures": failures,
                },
                indent=2,
            )
        )
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
