"""Top-k eigenvalues of the loss Hessian: our Lanczos (`curvature.lanczos_top`) against ARPACK (`eigsh`), in
Hessian-vector products (HVPs) to the same tolerance, one process, one model, one set of images.

    LANDSCAPE_DATA_ROOT=../shared/data OMP_NUM_THREADS=1 python benchmarks/topk_solvers.py \\
        --ckpt checkpoints/resnet20.pt --images 256 --ks 1,2,5 --tol 1e-3 --json topk.json

CIFAR-10 training images (subset seed 0), BatchNorm in eval mode, fp32, batches of 128. The stopping test of both
is ARPACK's: each of the top k Ritz values' residual below tol x its size.

- Ours: one Lanczos run from the start vector of `--seed` (full reorthogonalization), continued until the top
  max(ks) Ritz values reach `--ref-tol` (at most `--ref-steps` products); for each k, the row at `--tol` is that
  run's state at the first step where the top k met `--tol` (for k >= 2 not before max(2k + 1, 20) products, as
  `lanczos_top` since session 11). `lanczos_top(k, tol)` from the same seed runs exactly
  these steps and stops there (the Krylov sequence does not depend on k or tol), so this is what it would cost and
  return. The reference eigenvalues are the run's last state. `--verify` checks that claim: it calls the library's
  `lanczos_top(k, tol, seed)` once per k and compares its product count (returned, and counted on the product) with
  the number read off the run, with a FAIL line and exit status 1 where they differ (PASS where all agree).
- ARPACK: `curvature.top_eigenvalues(k, tol)` (`eigsh(which="LA")`, `ncv = max(2k + 1, 20)`), from the same start
  vector, one run per k; each of its products is counted.

Errors are relative to the reference. Products are deterministic for a given machine and seed; the seconds are
the products' (about the same per product for both) and are printed only as a check.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from landscape.checkpoints import build_model, load_checkpoint
from landscape.curvature import (
    ARPACK_FIRST_CYCLE,
    HessianVectorProduct,
    _lanczos_with_basis,
    lanczos_top,
    top_eigenvalues,
)
from landscape.data import DataSpec, load_split
from landscape.hardware import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="checkpoints/resnet20.pt")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ks", default="1,2,5")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--ref-tol", type=float, default=1e-6)
    parser.add_argument("--ref-steps", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also call lanczos_top once per k and check that its products equal those read off the run",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ks = sorted({int(k) for k in args.ks.split(",")})

    checkpoint = load_checkpoint(args.ckpt)
    model = build_model(checkpoint, None, None).float().eval()
    mean, std = tuple(checkpoint.metadata["mean"]), tuple(checkpoint.metadata["std"])
    images = load_split(DataSpec(root=os.environ.get("LANDSCAPE_DATA_ROOT", ""), subset=args.images, seed=0), "train")
    hvp = HessianVectorProduct(model, images, mean, std, batch_size=args.batch_size)
    matvec = hvp.numpy()
    report: dict[str, Any] = {
        "checkpoint": args.ckpt,
        "arch": checkpoint.metadata.get("arch"),
        "parameters": hvp.dim,
        "images": len(images),
        "tol": args.tol,
        "cpu": describe(torch.device("cpu")),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    print(f"{report['arch']}: {hvp.dim} parameters, {len(images)} images, {report['cpu']}", flush=True)

    # Ours: one run, read at every step.
    start = np.random.default_rng(args.seed).standard_normal(hvp.dim)
    first: dict[int, tuple[int, np.ndarray, float]] = {}
    kmax = max(ks)
    theta_top = np.empty(0)
    t0 = time.perf_counter()
    for alphas, betas, beta, _ in _lanczos_with_basis(matvec, hvp.dim, args.ref_steps, start):
        m = len(alphas)
        tridiagonal = np.diag(alphas) + np.diag(betas[: m - 1], 1) + np.diag(betas[: m - 1], -1)
        theta, vectors = np.linalg.eigh(tridiagonal)
        order = np.argsort(theta)[::-1]
        residual = beta * np.abs(vectors[-1, order])
        theta_top = theta[order]
        for k in ks:
            least = 1 if k == 1 else max(2 * k + 1, ARPACK_FIRST_CYCLE)  # lanczos_top's floor for k >= 2
            converged = np.all(residual[:k] <= args.tol * np.abs(theta_top[:k]))
            if k <= m and k not in first and m >= least and converged:
                first[k] = (m, theta_top[:k].copy(), time.perf_counter() - t0)
        if m >= kmax and len(first) == len(ks) and np.all(residual[:kmax] <= args.ref_tol * np.abs(theta_top[:kmax])):
            break
    reference = theta_top[:kmax]
    report["reference"] = {"eigenvalues": reference.tolist(), "products": m, "seconds": time.perf_counter() - t0}
    print(f"reference (ours to {args.ref_tol:g}): {m} products, λ = {np.round(reference, 4).tolist()}", flush=True)

    rows = []
    for k in ks:
        ours = first.get(k)
        before = hvp.count
        t1 = time.perf_counter()
        arpack, _ = top_eigenvalues(matvec, hvp.dim, k, args.tol, args.seed)
        arpack_seconds, arpack_products = time.perf_counter() - t1, hvp.count - before
        row = {
            "k": k,
            "lanczos_products": ours[0] if ours else None,
            "lanczos_error": float(np.max(np.abs(ours[1] - reference[:k]) / np.abs(reference[:k]))) if ours else None,
            "lanczos_seconds": ours[2] if ours else None,
            "arpack_products": arpack_products,
            "arpack_error": float(np.max(np.abs(arpack - reference[:k]) / np.abs(reference[:k]))),
            "arpack_seconds": arpack_seconds,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    failures: list[str] = []
    if args.verify:
        for row in rows:
            k, reported = row["k"], row["lanczos_products"]
            before = hvp.count
            values, _, products = lanczos_top(matvec, hvp.dim, k, args.tol, args.seed)
            counted = hvp.count - before
            error = float(np.max(np.abs(values - reference[:k]) / np.abs(reference[:k])))
            row.update(lanczos_top_products=products, lanczos_top_counted=counted, lanczos_top_error=error)
            print(
                f"verify k={k}: lanczos_top took {products} products ({counted} counted), "
                f"reported {reported}; largest relative error {error:.1e}",
                flush=True,
            )
            if not products == counted == reported:
                failures.append(
                    f"k={k}: lanczos_top took {products} products ({counted} counted), the run reported {reported}"
                )
        for failure in failures:
            print(f"FAIL: {failure}")
        if not failures:
            print(f"PASS: lanczos_top's products equal those reported for k = {', '.join(str(k) for k in ks)}")
    report["rows"] = rows
    report["failures"] = failures
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
