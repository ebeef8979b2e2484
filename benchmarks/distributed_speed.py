"""Ranks x threads for `landscape compute` on one machine, against the reference algorithm, in one run.

    LANDSCAPE_DATA_ROOT=../shared/data python benchmarks/distributed_speed.py [--arch resnet56] [--grid 5]
        [--images 1000] [--layouts 1x2,2x1] [--overhead] [--json results.json]

Every variant is a fresh process tree timed end to end by this script (start-up, data loading and the HDF5
file included), with the surface file polled every 0.1 s to separate start-up from the steady rate:

- `landscape compute` with R ranks x T threads: R = 1 is the plain single process (OMP_NUM_THREADS=T),
  R > 1 is `--workers R` (torch.distributed, gloo, T = cores / R threads each);
- the reference algorithm of github.com/tomgoldstein/loss-landscape (as in compute_speed.py: a DataLoader
  with 2 workers per grid point, batch 128, fp32), in its own process with all cores, on the same directions
  and images.

`--components` times the parts of the scaling model in docs/benchmarks.md: one c10d store round trip (TCP on
localhost), the claim + post of one group, and rank 0's write of one point into a 51x51 file.
`--overhead` adds the cost of coordination end to end: a 41x41 grid of ResNet-20 on 1 image (a point is ~5-10 ms:
one process on 2 cores logged 109 points/s, ~9 ms a point, writes included) with 1, 2, 4 and 8 ranks, so that
claiming, posting and writing weigh most.
Checked, with a FAIL line and exit status 1 where not met: every landscape layout's train loss within a relative
1e-5 (`LOSS_RTOL`) of the reference's, point by point, and its train accuracies identical (of the first layout's
where `--skip-reference`); the overhead rows (another model) are not compared.
Pause other jobs on the machine while it runs (the training campaign: kill -STOP / -CONT).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from compute_speed import MEAN, STD, reference

from landscape import build_model, create_model, load_checkpoint, read_surface, save_checkpoint
from landscape.data import DataSpec, load_split
from landscape.storage import read_directions

LOSS_RTOL = 1e-5  # fp32 on the same images and directions: rounding only (logged: 8.6e-8 against the reference)


def cores() -> int:
    return len(os.sched_getaffinity(0))


def run_landscape(
    args: argparse.Namespace,
    ckpt: Path,
    out: Path,
    ranks: int,
    threads: int,
    grid: int,
    images: int,
    arch_note: str = "",
) -> dict:
    command = [sys.executable, "-m", "landscape", "compute", "--ckpt", str(ckpt), "--out", str(out)]
    command += ["--x", f"-1:1:{grid}", "--y", f"-1:1:{grid}", "--subset", str(images), "--device", "cpu"]
    if ranks > 1:
        command += ["--workers", str(ranks)]
    environ = dict(os.environ, OMP_NUM_THREADS=str(threads))
    started = time.perf_counter()
    process = subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stamps: list[tuple[float, int]] = []
    while process.poll() is None:
        time.sleep(0.1)
        try:
            done = int(read_surface(out).computed.sum()) if out.exists() else 0
        except Exception:  # the file is being created
            continue
        if not stamps or stamps[-1][1] != done:
            stamps.append((time.perf_counter() - started, done))
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{command} failed: {process.stderr[-2000:]}")
    total = grid * grid
    stamps.append((seconds, total))
    first = next(t for t, n in stamps if n > 0)
    steady = [(t, n) for t, n in stamps if n > 0]
    rate = (steady[-1][1] - steady[0][1]) / max(steady[-1][0] - steady[0][0], 1e-9) if len(steady) > 1 else 0.0
    return {
        "variant": f"landscape {ranks} rank{'s' if ranks > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
        + arch_note,
        "ranks": ranks,
        "threads": threads,
        "seconds": seconds,
        "first_point_s": first,
        "points_per_s_steady": rate,
        "seconds_per_point": seconds / total,
    }


def reference_child(args: argparse.Namespace) -> None:
    """Run the reference on the directions of a landscape file; print per-point values and times as JSON."""
    torch.set_num_threads(cores())
    started = time.perf_counter()
    ckpt = load_checkpoint(args.ckpt)
    model = build_model(ckpt)
    center = {n: p.detach().clone() for n, p in model.named_parameters()}
    dx = read_directions(args.directions, "x", like=center)
    dy = read_directions(args.directions, "y", like=center)
    train = load_split(DataSpec(root=os.environ.get("LANDSCAPE_DATA_ROOT", ""), subset=args.images), "train")
    axis = np.linspace(-1, 1, args.grid)
    points = [(a, b) for b in axis for a in axis]  # storage order: y rows, x columns
    images_hwc = train.images.permute(0, 2, 3, 1).numpy()
    setup = time.perf_counter() - started
    values, times = reference(model, center, dx, dy, points, images_hwc, train.labels.numpy(), torch.device("cpu"))
    result = {"loss": values[:, 0].tolist(), "acc": values[:, 1].tolist(), "point_times": times, "setup_s": setup}
    print(json.dumps(result))


def components() -> list[dict]:
    """Per-operation costs of the coordination: store round trips and HDF5 writes (medians)."""
    import torch.distributed as dist

    from landscape.storage import create_surface_file, write_points

    store = dist.TCPStore("127.0.0.1", 0, 1, True, wait_for_workers=False)
    client = dist.TCPStore("127.0.0.1", store.port, 1, False)
    payload = json.dumps({"group": 123, "rank": 1, "values": {f"m{i}": [2.3025850929940455] for i in range(4)}})

    def median(fn, repeat: int) -> float:
        times = []
        for i in range(repeat):
            started = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    rows = [
        {"operation": "store round trip (add)", "seconds": median(lambda i: client.add("n", 1), 2000)},
        {
            "operation": "claim + post one group (add, add, set 4 metrics)",
            "seconds": median(lambda i: (client.add("c", 1), client.add("p", 1), client.set(f"r/{i}", payload)), 2000),
        },
        {
            "operation": "rank 0 reads a result (check, get, delete)",
            "seconds": median(
                lambda i: (client.check([f"r/{i}"]), client.get(f"r/{i}"), client.delete_key(f"r/{i}")), 2000
            ),
        },
    ]
    folder = Path(tempfile.mkdtemp(prefix="landscape-write-"))
    axis = np.linspace(-1, 1, 51)
    center = {"w": torch.zeros(3)}
    create_surface_file(
        folder / "s.h5",
        {"kind": "bench"},
        {"started": "now"},
        (51, 51),
        [axis, axis],
        ["train", "test"],
        {"x": center, "y": center},
        {},
    )
    values = {name: np.array([1.0]) for name in ("train_loss", "train_acc", "test_loss", "test_acc")}
    rows.append(
        {
            "operation": "write one point (train + test metrics) into a 51x51 file",
            "seconds": median(lambda i: write_points(folder / "s.h5", np.array([i]), values), 500),
        }
    )
    values10 = {name: np.ones(10) for name in values}
    rows.append(
        {
            "operation": "write 10 points in one call (per point)",
            "seconds": median(lambda i: write_points(folder / "s.h5", np.arange(10) + 10 * (i % 200), values10), 200)
            / 10,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--layouts", default="1x2,2x1", help="ranks x threads, comma-separated")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument("--components", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reference-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--directions", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_child:
        reference_child(args)
        return
    if args.components:
        for row in components():
            print(f"{row['operation']:<60} {row['seconds'] * 1e3:8.3f} ms", flush=True)
        if args.layouts == "none":
            return

    workdir = Path(tempfile.mkdtemp(prefix="landscape-dist-bench-"))
    ckpt = workdir / "model.pt"
    torch.manual_seed(0)
    model = create_model(args.arch)
    with torch.no_grad():  # stand-in for trained BN statistics, so that folding does real work
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    meta = {"arch": args.arch, "num_classes": 10, "dataset": "cifar10", "mean": list(MEAN), "std": list(STD)}
    save_checkpoint(ckpt, model, meta)

    rows: list[dict] = []
    losses: dict[str, np.ndarray] = {}
    accuracies: dict[str, np.ndarray] = {}
    for layout in args.layouts.split(","):
        ranks, threads = (int(v) for v in layout.split("x"))
        out = workdir / f"{ranks}x{threads}.h5"
        row = run_landscape(args, ckpt, out, ranks, threads, args.grid, args.images)
        surface = read_surface(out)
        losses[row["variant"]] = surface["train_loss"].ravel()
        accuracies[row["variant"]] = surface["train_acc"].ravel()
        rows.append(row)
        print(json.dumps(row), flush=True)
    first_file = workdir / f"{args.layouts.split(',')[0]}.h5"
    if not args.skip_reference:
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--reference-child", "--ckpt", str(ckpt), "--directions", str(first_file)]
            + ["--grid", str(args.grid), "--images", str(args.images)],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.perf_counter() - started
        result = json.loads(child.stdout.strip().splitlines()[-1])
        losses["reference"] = np.asarray(result["loss"])
        accuracies["reference"] = np.asarray(result["acc"])
        row = {
            "variant": f"reference (DataLoader per point, {cores()} threads)",
            "ranks": 1,
            "threads": cores(),
            "seconds": seconds,
            "first_point_s": result["setup_s"] + result["point_times"][0],
            "points_per_s_steady": 1 / float(np.median(result["point_times"])),
            "seconds_per_point": seconds / args.grid**2,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.overhead:
        tiny = workdir / "tiny.pt"
        torch.manual_seed(0)
        save_checkpoint(tiny, create_model("resnet20"), {**meta, "arch": "resnet20"})
        for ranks in (1, 2, 4, 8):
            threads = max(1, cores() // ranks)
            row = run_landscape(
                args, tiny, workdir / f"tiny{ranks}.h5", ranks, threads, 41, 1, " (overhead: resnet20, 1 image, 41x41)"
            )
            rows.append(row)
            print(json.dumps(row), flush=True)

    base_name = "reference" if "reference" in losses else rows[0]["variant"]
    base, base_acc = losses[base_name], accuracies[base_name]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print()
    print(
        f"{args.arch}, {args.grid}x{args.grid} grid, {args.images} CIFAR-10 training images, CPU {cpu}, "
        f"{cores()} cores, torch {torch.__version__}"
    )
    print(
        "| variant | total (s) | first point at (s) | steady points/s | vs reference (total) | vs reference (steady) "
        f"| max rel loss diff vs {'reference' if base_name == 'reference' else 'first row'} "
        "| max accuracy diff (points) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    failures: list[str] = []
    ref = next((r for r in rows if r["variant"].startswith("reference")), None)
    for r in rows:
        name = r["variant"]
        vs_total = f"{ref['seconds'] / r['seconds']:.2f}x" if ref and "overhead" not in name else "-"
        vs_steady = (
            f"{r['points_per_s_steady'] / ref['points_per_s_steady']:.2f}x" if ref and "overhead" not in name else "-"
        )
        key = name if name in losses else ("reference" if name.startswith("reference") else None)
        diff, acc_diff = "-", "-"
        if key:
            rel = float(np.max(np.abs(losses[key] - base) / np.abs(base)))
            acc = float(np.max(np.abs(accuracies[key] - base_acc)))
            diff, acc_diff = f"{rel:.1e}", f"{acc:.2f}"
            if key != base_name:
                if not rel <= LOSS_RTOL:
                    failures.append(f"{name}: loss differs by {rel:.2e} relative (tolerance {LOSS_RTOL:.0e})")
                if acc * args.images / 100 >= 0.5:  # identical: no image classified differently (not float noise)
                    failures.append(f"{name}: accuracy differs by up to {acc:.2f} points (must be identical)")
        r.update(
            vs_reference_total=vs_total, vs_reference_steady=vs_steady, max_rel_loss_diff=diff, max_acc_diff=acc_diff
        )
        print(
            f"| {name} | {r['seconds']:.1f} | {r['first_point_s']:.1f} | {r['points_per_s_steady']:.3f} "
            f"| {vs_total} | {vs_steady} | {diff} | {acc_diff} |"
        )
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        compared = sum(1 for name in losses if name != base_name)
        print(
            f"PASS: {compared} landscape layout(s) within {LOSS_RTOL:.0e} relative in the loss with identical "
            f"accuracies, against the {'reference' if base_name == 'reference' else 'first layout'}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rows": rows,
                    "torch": torch.__version__,
                    "cpu": cpu,
                    "failures": failures,
                },
                indent=2,
            )
        )
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
