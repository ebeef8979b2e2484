"""Curvature at θ*: Hessian-vector products of the mean loss, top eigenvalues by Lanczos, Hutchinson's trace.

The Hessian is that of the mean cross-entropy over a fixed set of images with respect to the model's parameters,
BatchNorm in eval mode. Parameters are flattened into one vector in the order of `model.named_parameters()`,
keyed by name (`HessianVectorProduct.names`). Products come from double backward, batch by batch; each batch's
loss is a sum divided by the number of all images, so the summed products are those of the mean over all images.
The top eigenvalues use ARPACK's Lanczos (`scipy.sparse.linalg.eigsh`, `which="LA"`), as Li et al.'s code does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DataSpec, ImageSet, normalizer
from .errors import LandscapeError

MatVec = Callable[[np.ndarray], np.ndarray]


class HessianVectorProduct:
    """v ↦ H v for the mean cross-entropy of `model` over `images`, on flat vectors of the model's dtype.

    The model is put in eval mode and is not otherwise changed. `count` is the number of products computed.
    """

    def __init__(
        self,
        model: nn.Module,
        images: ImageSet,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        batch_size: int = 128,
    ) -> None:
        if batch_size < 1:
            raise LandscapeError(f"the batch size must be positive, got {batch_size}")
        if len(images) == 0:
            raise LandscapeError("the Hessian needs at least one image")
        self.model = model.eval()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise LandscapeError("the model has no trainable parameters")
        self.names = tuple(n for n, _ in named)
        self.parameters = [p for _, p in named]
        self.shapes = {n: tuple(p.shape) for n, p in named}
        ends = np.cumsum([p.numel() for p in self.parameters]).tolist()
        self.slices = {n: slice(end - p.numel(), end) for (n, p), end in zip(named, ends)}
        self.dim = int(ends[-1])
        self.dtype = self.parameters[0].dtype
        self.device = self.parameters[0].device
        self.images = images.to(self.device)
        self.scale, self.shift = normalizer(mean, std, self.device, self.dtype)
        self.batch_size = batch_size
        self.count = 0

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of {self.dim} entries, got shape {tuple(vector.shape)}")
        pieces = self.unflatten(vector.to(self.device, self.dtype))
        total = [torch.zeros_like(p) for p in self.parameters]
        n = len(self.images)
        for start in range(0, n, self.batch_size):
            x = self.images.images[start : start + self.batch_size].to(self.dtype) * self.scale + self.shift
            y = self.images.labels[start : start + self.batch_size]
            loss = F.cross_entropy(self.model(x), y, reduction="sum") / n
            grads = torch.autograd.grad(loss, self.parameters, create_graph=True)
            dot = torch.stack([(g * pieces[name]).sum() for g, name in zip(grads, self.names)]).sum()
            products = torch.autograd.grad(dot, self.parameters)
            torch._foreach_add_(total, [p.detach() for p in products])
        self.count += 1
        return torch.cat([t.reshape(-1) for t in total])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat vector as tensors keyed by parameter name, shaped like the parameters (views, not copies)."""
        return {n: vector[self.slices[n]].view(self.shapes[n]) for n in self.names}

    def numpy(self) -> MatVec:
        """The product on float64 numpy vectors, as scipy's `LinearOperator` wants."""

        def matvec(v: np.ndarray) -> np.ndarray:
            v_t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
            return self(v_t).detach().to("cpu", torch.float64).numpy()

        return matvec


def top_eigenvalues(hvp: MatVec, dim: int, k: int, tol: float = 1e-3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The `k` largest (algebraic) eigenvalues, descending, and their eigenvectors as columns of a (dim, k) array.

    ARPACK's Lanczos on a `LinearOperator` wrapping `hvp`; the start vector is drawn from `seed`. `tol` is
    ARPACK's relative accuracy of the eigenvalues (0: machine precision).
    """
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    if k < 1:
        raise LandscapeError(f"--top-k must be at least 1, got {k}")
    if k >= dim:
        raise LandscapeError(f"--top-k must be below the number of parameters ({dim}), got {k}")
    if tol < 0:
        raise LandscapeError(f"the eigenvalue tolerance must be >= 0, got {tol}")
    operator = LinearOperator((dim, dim), matvec=hvp, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    try:
        values, vectors = eigsh(operator, k=k, which="LA", tol=tol, v0=v0)
    except ArpackNoConvergence as e:
        raise LandscapeError(f"Lanczos did not converge ({e}): raise the tolerance or lower --top-k") from None
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of tr(H): the mean of vᵀHv over Rademacher v, its standard error, each sample."""

    estimate: float
    stderr: float
    samples: np.ndarray


def hutchinson_trace(hvp: MatVec, dim: int, samples: int, seed: int = 0) -> TraceEstimate:
    """tr(H) ≈ mean of vᵀHv over `samples` Rademacher vectors v drawn from `seed`; stderr = std / √samples."""
    if samples < 2:
        raise LandscapeError(f"the trace needs at least 2 samples for its standard error, got {samples}")
    rng = np.random.default_rng(seed)
    values = np.empty(samples)
    for i in range(samples):
        v = rng.integers(0, 2, size=dim).astype(np.float64) * 2.0 - 1.0
        values[i] = float(v @ hvp(v))
    return TraceEstimate(
        estimate=float(values.mean()), stderr=float(values.std(ddof=1) / np.sqrt(samples)), samples=values
    )


@dataclass(frozen=True, kw_only=True)
class HessianSpec:
    """What `hessian_report` computes: the top `top_k` eigenvalues, and the trace when `trace_samples` > 0.

    `seed` draws the Lanczos start vector and the trace's vectors; `data` says which images (recorded only:
    `hessian_report` is given them). The products are in fp32.
    """

    top_k: int = 5
    trace_samples: int = 0
    seed: int = 0
    tol: float = 1e-3
    data: DataSpec = DataSpec(subset=1000)
    precision: str = "fp32"

    def validate(self) -> None:
        if self.top_k < 1:
            raise LandscapeError(f"--top-k must be at least 1, got {self.top_k}")
        if self.trace_samples < 0 or self.trace_samples == 1:
            raise LandscapeError(f"--trace-samples must be 0 (no trace) or at least 2, got {self.trace_samples}")
        if self.tol < 0:
            raise LandscapeError(f"the eigenvalue tolerance must be >= 0, got {self.tol}")
        if self.precision != "fp32":
            raise LandscapeError(f"the Hessian is computed in fp32 only, not {self.precision}")
        self.data.validate()


def hessian_report(
    model: nn.Module,
    images: ImageSet,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    spec: HessianSpec,
    device: torch.device | str,
    *,
    batch_size: int = 128,
    eigenvectors: str | Path | None = None,
) -> dict[str, Any]:
    """Top eigenvalues and (optionally) the trace of the loss Hessian at the model's weights, as a JSON-able dict.

    The model is moved to `device` in fp32 and put in eval mode. `eigenvectors`: an .npz file to write the
    eigenvectors to, one array (top_k, *shape) per parameter name, in the order of the eigenvalues.
    """
    spec.validate()
    if eigenvectors is not None and Path(eigenvectors).suffix != ".npz":
        raise LandscapeError(f"the eigenvectors are written as .npz: name the file *.npz, not {eigenvectors}")
    started = time.perf_counter()
    model = model.to(device=device, dtype=torch.float32)
    hvp = HessianVectorProduct(model, images, mean, std, batch_size=batch_size)
    matvec = hvp.numpy()
    values, vectors = top_eigenvalues(matvec, hvp.dim, spec.top_k, spec.tol, spec.seed)
    trace = hutchinson_trace(matvec, hvp.dim, spec.trace_samples, spec.seed) if spec.trace_samples else None
    if eigenvectors is not None:
        arrays = {n: vectors[hvp.slices[n]].T.reshape(-1, *hvp.shapes[n]) for n in hvp.names}
        np.savez(Path(eigenvectors), **arrays)
    return {
        "eigenvalues": [float(v) for v in values],
        "trace": trace.estimate if trace is not None else None,
        "trace_stderr": trace.stderr if trace is not None else None,
        "parameters": hvp.dim,
        "parameter_names": list(hvp.names),
        "images": len(images),
        "hvps": hvp.count,
        "seconds": time.perf_counter() - started,
        "spec": dataclasses.asdict(spec),
    }
