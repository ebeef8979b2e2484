"""Hessian speed: landscape's Hessian-vector products, top eigenvalue and trace against PyHessian, side by side.

    LANDSCAPE_DATA_ROOT=../shared/data OMP_NUM_THREADS=1 python benchmarks/hessian_speed.py \\
        --ckpt checkpoints/resnet20.pt --images 256 --tol 1e-3 --probes 10 --json r20_256.json

One process, one model, one set of images (CIFAR-10 training images, subset seed 0), BatchNorm in eval mode, fp32,
the same batch size (128) for both libraries; PyHessian (`pip install pyhessian`, 0.1) is imported only here.

1. Seconds per Hessian-vector product (HVP), the variants interleaved `--reps` times in rotating order (median;
   `--only-hvp`: this part alone): landscape's `HessianVectorProduct`; PyHessian's dataloader mode (forward,
   backward and double backward per batch, as landscape); PyHessian's one-batch mode (`data=(x, y)`: the gradient
   graph of all images built once and kept, each product one backward pass through it; only up to
   `--one-batch-max` images, its memory grows with them); landscape with `keep_graph=True` (the same idea, batch by
   batch: each product one backward pass per batch). The products of the same vector are compared; the first,
   untimed product of each variant builds the kept graphs, which then stay in memory while the other variants run
   and slow them (measured, session 5: ResNet-20 on 1000 images 19.55 s per product beside them, 12.85 s without):
   `--no-kept-graphs` compares the first two alone. Checked, with a FAIL line and exit status 1 where not met: every
   product over the same batches (PyHessian's dataloader mode, landscape `keep_graph`) within a relative
   `HVP_RTOL` of landscape's (1e-5 on the CPU, `HVP_RTOL_CUDA` = 1e-4 on CUDA, whose kernels may sum in another
   order: 1.1e-5 logged on an H100); PyHessian's one-batch product sums the whole batch at once, so it is reported,
   not checked.
2. The top eigenvalue at relative tolerance `--tol`: landscape's Lanczos (`curvature.top_eigenvalue`: stops when the
   Ritz value's residual is below tol x the value), ARPACK (`curvature.top_eigenvalues`, what `landscape hessian`
   runs; `--arpack`), PyHessian's power iteration (`hessian.eigenvalues(maxIter=100, tol)`: stops when two
   successive estimates differ by less than tol, relatively), dataloader mode. The reference value is the same
   Lanczos run continued to a residual of `--ref-tol` (at most `--ref-steps` products); the landscape row at `--tol`
   is that run's state at the first step whose residual met `--tol` (a run stopped there makes exactly these
   steps), its seconds the time up to that step. Also reported: the products Lanczos needed to be as accurate as
   PyHessian's answer.
3. The trace: Hutchinson with `--probes` Rademacher vectors in each library (PyHessian `trace(maxIter=probes,
   tol=0)`, which then runs exactly `probes` products), estimates and standard errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from landscape.checkpoints import build_model, load_checkpoint
from landscape.curvature import (
    HessianVectorProduct,
    hutchinson_trace,
    lanczos_steps,
    ritz,
    top_eigenvalues,
)
from landscape.data import DataSpec, load_split, normalizer
from landscape.hardware import describe

HVP_RTOL = 1e-5  # same batches, CPU: rounding only (logged: 0 to 1.1e-6)
HVP_RTOL_CUDA = 1e-4  # same batches, CUDA: cuDNN may pick other kernels (logged: up to 1.1e-5 on an H100)
UNCHECKED = ("pyhessian (one batch, graph kept)",)  # all images in one batch: another order (logged 2-4e-6, CPU)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="checkpoints/resnet20.pt")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--ref-tol", type=float, default=1e-6)
    parser.add_argument("--ref-steps", type=int, default=30)
    parser.add_argument("--probes", type=int, default=10, help="Hutchinson probes in each library (0: no trace)")
    parser.add_argument("--reps", type=int, default=3, help="timed products of each variant")
    parser.add_argument("--one-batch-max", type=int, default=1000)
    parser.add_argument("--arpack", action="store_true", help="also time ARPACK (landscape hessian's top-k path)")
    parser.add_argument("--only-hvp", action="store_true", help="measure the seconds per product only (part 1)")
    parser.add_argument(
        "--no-kept-graphs",
        action="store_true",
        help="part 1 without the two variants that keep gradient graphs (GBs of memory held while the others run)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (PyHessian's cuda=True)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pyhessian import hessian as PyHessian  # the benchmark's own dependency, not landscape's

    started = time.perf_counter()
    checkpoint = load_checkpoint(args.ckpt)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model = build_model(checkpoint, None, None).float().eval().to(device)
    mean, std = tuple(checkpoint.metadata["mean"]), tuple(checkpoint.metadata["std"])
    images = load_split(DataSpec(root=os.environ.get("LANDSCAPE_DATA_ROOT", ""), subset=args.images, seed=0), "train")
    scale, shift = normalizer(mean, std, device)
    x, y = images.images.to(device).float() * scale + shift, images.labels.to(device)
    batches = [(x[i : i + args.batch_size], y[i : i + args.batch_size]) for i in range(0, len(y), args.batch_size)]
    ours = HessianVectorProduct(model, images, mean, std, batch_size=args.batch_size)
    theirs = PyHessian(model, F.cross_entropy, dataloader=batches, cuda=cuda)
    report: dict[str, Any] = {
        "checkpoint": args.ckpt,
        "arch": checkpoint.metadata.get("arch"),
        "parameters": ours.dim,
        "images": len(y),
        "batch_size": args.batch_size,
        "tol": args.tol,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": describe(device),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"{report['arch']}: {ours.dim} parameters, {len(y)} images, batch {args.batch_size}, {report['cpu']}")

    def as_list(flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.contiguous() for t in ours.unflatten(flat).values()]

    def flat(tensors: Any) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    # 1. seconds per product, interleaved
    v = torch.randn(ours.dim, generator=torch.Generator().manual_seed(args.seed)).to(device)
    kept = HessianVectorProduct(model, images, mean, std, batch_size=args.batch_size, keep_graph=True)
    variants = {
        "landscape": lambda: ours(v),
        "pyhessian (dataloader)": lambda: flat(theirs.dataloader_hv_product(as_list(v))[1]),
    }
    if not args.no_kept_graphs:
        variants["landscape (keep_graph)"] = lambda: kept(v)
    one_batch = None
    if len(y) <= args.one_batch_max and not args.no_kept_graphs:
        t0 = time.perf_counter()
        one_batch = PyHessian(model, F.cross_entropy, data=(x, y), cuda=cuda)
        report["pyhessian_one_batch_setup_s"] = time.perf_counter() - t0
        from pyhessian.utils import hessian_vector_product

        variants["pyhessian (one batch, graph kept)"] = lambda: flat(
            hessian_vector_product(one_batch.gradsH, one_batch.params, as_list(v))
        )
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    products: dict[str, torch.Tensor] = {}
    for name, run in variants.items():  # warm-up
        products[name] = run().detach()
    names = list(variants)
    for rep in range(args.reps):  # the order rotates, so that no variant always runs first after another
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            run = variants[name]
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - t0)
    reference = products["landscape"]
    report["per_hvp"] = {
        name: {
            "median_s": statistics.median(times),
            "all_s": times,
            "rel_diff_vs_landscape": float((products[name] - reference).norm() / reference.norm()),
        }
        for name, times in seconds.items()
    }
    for name, row in report["per_hvp"].items():
        print(
            f"  HVP {name:<36} {row['median_s']:7.2f} s (median of {args.reps}), "
            f"|Hv - Hv_landscape| / |Hv| = {row['rel_diff_vs_landscape']:.1e}",
            flush=True,
        )
    rtol = HVP_RTOL_CUDA if cuda else HVP_RTOL
    failures = [
        f"HVP {name}: differs from landscape's by {row['rel_diff_vs_landscape']:.2e} relative "
        f"(same batches, tolerance {rtol:.0e})"
        for name, row in report["per_hvp"].items()
        if name not in UNCHECKED and not row["rel_diff_vs_landscape"] <= rtol
    ]
    report["failures"] = failures
    one_batch = kept = None  # frees their graphs

    def finish() -> None:
        report["total_s"] = time.perf_counter() - started
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        for failure in failures:
            print(f"FAIL: {failure}")
        if failures:
            raise SystemExit(1)
        checked = [name for name in report["per_hvp"] if name != "landscape" and name not in UNCHECKED]
        print(
            f"PASS: same-batch products ({', '.join(checked) or 'none besides landscape'}) within {rtol:.0e} "
            f"relative of landscape's (PyHessian's one-batch product reported, not checked)"
        )

    if args.only_hvp:
        finish()
        return

    # 2. top eigenvalue
    matvec = ours.numpy()
    start = np.random.default_rng(args.seed).standard_normal(ours.dim)
    history = []
    t0 = time.perf_counter()
    for alphas, betas, beta in lanczos_steps(matvec, ours.dim, args.ref_steps, start):
        theta, residual = ritz(alphas, betas, beta)
        history.append((float(theta[-1]), float(residual[-1]), time.perf_counter() - t0))
        if residual[-1] <= args.ref_tol * abs(theta[-1]):
            break
    ref_value, ref_residual, _ = history[-1]
    at_tol = next((k for k, (t, r, _) in enumerate(history) if r <= args.tol * abs(t)), len(history) - 1)
    value, residual, secs = history[at_tol]
    converged = residual <= args.tol * abs(value)  # else: --ref-steps ran out first
    rows = {
        "landscape lanczos": {
            "value": value,
            "hvps": at_tol + 1,
            "seconds": secs,
            "residual": residual,
            "converged": converged,
        },
    }
    if args.arpack:
        count = ours.count
        t0 = time.perf_counter()
        values, _ = top_eigenvalues(matvec, ours.dim, 1, args.tol, args.seed)
        rows["landscape arpack"] = {
            "value": float(values[0]),
            "hvps": ours.count - count,
            "seconds": time.perf_counter() - t0,
        }
    calls = []
    original = theirs.dataloader_hv_product

    def counted(vector: Any) -> Any:
        calls.append(1)
        return original(vector)

    theirs.dataloader_hv_product = counted
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    eigenvalues, _ = theirs.eigenvalues(maxIter=100, tol=args.tol, top_n=1)
    rows["pyhessian power iteration"] = {
        "value": float(eigenvalues[0]),
        "hvps": len(calls),
        "seconds": time.perf_counter() - t0,
    }
    for row in rows.values():
        row["rel_error"] = abs(row["value"] - ref_value) / abs(ref_value)
    pyhessian_error = rows["pyhessian power iteration"]["rel_error"]
    same = next(
        (k + 1 for k, (t, _, _) in enumerate(history) if abs(t - ref_value) <= pyhessian_error * abs(ref_value)), None
    )
    report["top_eigenvalue"] = {
        "reference": ref_value,
        "reference_residual": ref_residual,
        "reference_hvps": len(history),
        "lanczos_hvps_to_pyhessian_accuracy": same,
        "lanczos_history": history,
        "rows": rows,
    }
    print(f"  λ1 reference {ref_value:.6g} (Lanczos, {len(history)} HVPs, residual {ref_residual:.1e})")
    for name, row in rows.items():
        print(
            f"  λ1 {name:<28} {row['value']:.6g}  rel. error {row['rel_error']:.1e}  "
            f"{row['hvps']} HVPs  {row['seconds']:.1f} s",
            flush=True,
        )
    print(f"  Lanczos needs {same} HVPs for PyHessian's accuracy ({pyhessian_error:.1e})")

    # 3. trace
    if args.probes:
        t0 = time.perf_counter()
        trace = hutchinson_trace(matvec, ours.dim, args.probes, args.seed)
        ours_s = time.perf_counter() - t0
        calls.clear()
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        samples = np.array(theirs.trace(maxIter=args.probes, tol=0.0))
        theirs_s = time.perf_counter() - t0
        report["trace"] = {
            "landscape": {"estimate": trace.estimate, "stderr": trace.stderr, "hvps": args.probes, "seconds": ours_s},
            "pyhessian": {
                "estimate": float(samples.mean()),
                "stderr": float(samples.std(ddof=1) / np.sqrt(len(samples))),
                "hvps": len(calls),
                "seconds": theirs_s,
            },
        }
        for name, row in report["trace"].items():
            print(
                f"  trace {name:<10} {row['estimate']:.6g} ± {row['stderr']:.2g}  {row['hvps']} HVPs  "
                f"{row['seconds']:.1f} s",
                flush=True,
            )
    finish()


if __name__ == "__main__":
    main()
