"""Curvature at θ*: Hessian-vector products of the mean loss, top eigenvalues by Lanczos, Hutchinson's trace.

The Hessian is that of the mean cross-entropy over a fixed set of images with respect to the model's parameters,
BatchNorm in eval mode. Parameters are flattened into one vector in the order of `model.named_parameters()`,
keyed by name (`HessianVectorProduct.names`). Products come from double backward, batch by batch; each batch's
loss is a sum divided by the number of all images, so the summed products are those of the mean over all images.
The top eigenvalues come from our Lanczos with full reorthogonalization (`lanczos_top`, the default) or ARPACK's
(`scipy.sparse.linalg.eigsh`, `which="LA"`, as Li et al.'s code does); the eigenvalue density from stochastic Lanczos
quadrature (Lanczos with full reorthogonalization from Rademacher vectors).

The eigenvector file (`.npz`, one array (k, *shape) per parameter name, and `#eigenvalues`, `#checkpoint_sha256`)
serves as directions of a surface (`hessian_direction`); it is untrusted input: every member's header is checked
(floating point, the model's shapes by name) before anything is read, and nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .batchnorm import check_running_statistics
from .data import MAX_SEED, DataSpec, ImageSet, check_labels_fit, normalizer
from .directions import Direction, check_finite
from .errors import LandscapeError
from .files import check_writable, write_file
from .hardware import autocast

MatVec = Callable[[np.ndarray], np.ndarray]
EIGENVALUES_KEY = "#eigenvalues"  # in the eigenvector file: the eigenvalues, descending
CHECKPOINT_KEY = "#checkpoint_sha256"  # in the eigenvector file: the sha256 of the checkpoint θ*
MAX_EIGENVECTORS = 1000
MAX_TRACE_SAMPLES = 1_000_000  # a product each: weeks of work at ResNet-56's speed
SOLVERS = ("auto", "lanczos", "arpack")  # the eigensolvers of `landscape hessian --solver`


class NonFiniteHessian(LandscapeError):
    """A Hessian-vector product holds NaN or inf: the loss overflows at that point."""


class EigenvectorsNotWritten(LandscapeError):
    """`hessian_report` computed everything but could not write its eigenvector file: the report is in `.report`."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


class HessianVectorProduct:
    """v ↦ H v for the mean cross-entropy of `model` over `images`, on flat vectors of the model's dtype.

    The model is put in eval mode and is not otherwise changed. `count` is the number of products computed.
    Each product runs, batch by batch, a forward pass, the gradient with its graph (`create_graph`) and a backward
    pass through that graph. `keep_graph`: build the batches' gradient graphs once, at the first product, and keep
    them for the next ones, which then cost one backward pass each (PyHessian's single-batch mode); memory grows with
    the images. Call `reset()` after changing the model's tensors: until then the kept graphs are the old weights'.
    """

    def __init__(
        self,
        model: nn.Module,
        images: ImageSet,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        batch_size: int = 128,
        keep_graph: bool = False,
    ) -> None:
        if batch_size < 1:
            raise LandscapeError(f"the batch size must be positive, got {batch_size}")
        if len(images) == 0:
            raise LandscapeError("the Hessian needs at least one image")
        check_labels_fit(model, {"evaluated": images})
        check_running_statistics(model)
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
        self.keep_graph = keep_graph
        self.count = 0
        self._kept: list[tuple[torch.Tensor, ...]] | None = None

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of {self.dim} entries, got shape {tuple(vector.shape)}")
        pieces = self.unflatten(vector.to(self.device, self.dtype))
        tangent = [pieces[name] for name in self.names]
        total = [torch.zeros_like(p) for p in self.parameters]
        with autocast("fp32", self.device):  # on CUDA: TF32 off, or the products would not be fp32's
            for grads in self._gradients():
                # a parameter the loss does not reach, or reaches linearly, has a gradient with no graph: its rows
                # of the Hessian are 0 (autograd would refuse it)
                pairs = [(g, t) for g, t in zip(grads, tangent) if g is not None and g.requires_grad]
                if not pairs:
                    continue
                products = torch.autograd.grad(
                    [g for g, _ in pairs],
                    self.parameters,
                    grad_outputs=[t for _, t in pairs],
                    retain_graph=self.keep_graph,
                    allow_unused=True,
                    materialize_grads=True,
                )
                torch._foreach_add_(total, [p.detach() for p in products])
        self.count += 1
        product = torch.cat([t.reshape(-1) for t in total])
        if not bool(torch.isfinite(product).all()):
            raise NonFiniteHessian("the loss's Hessian-vector product is NaN or inf here (the loss overflows)")
        return product

    def reset(self) -> None:
        """Forget the kept gradient graphs (`keep_graph`): the model's tensors have changed."""
        self._kept = None

    def _gradients(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """Each batch's gradient of its share of the loss (sum / all images), with its graph."""
        if self._kept is not None:
            yield from self._kept
            return
        kept = []
        n = len(self.images)
        for start in range(0, n, self.batch_size):
            x = self.images.images[start : start + self.batch_size].to(self.dtype) * self.scale + self.shift
            y = self.images.labels[start : start + self.batch_size]
            loss = F.cross_entropy(self.model(x), y, reduction="sum") / n
            grads = torch.autograd.grad(loss, self.parameters, create_graph=True, allow_unused=True)
            if self.keep_graph:
                kept.append(grads)
            yield grads
        if self.keep_graph:
            self._kept = kept

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat vector as tensors keyed by parameter name, shaped like the parameters (views, not copies)."""
        return {n: vector[self.slices[n]].view(self.shapes[n]) for n in self.names}

    def numpy(self) -> MatVec:
        """The product on float64 numpy vectors, as scipy's `LinearOperator` wants."""

        def matvec(v: np.ndarray) -> np.ndarray:
            v_t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
            return self(v_t).detach().to("cpu", torch.float64).numpy()

        return matvec


def _check_top_k(k: int, dim: int) -> None:
    """Refuse a k that a solver of the top k eigenvalues of a dim x dim Hessian cannot find (both need k < dim)."""
    if dim < 2:
        raise LandscapeError("the model has one trainable parameter: its Hessian is one number, no top-k to find")
    if not 1 <= k < dim:
        raise LandscapeError(f"--top-k must be in 1..{dim - 1} (below the number of parameters), got {k}")


def top_eigenvalues(hvp: MatVec, dim: int, k: int, tol: float = 1e-3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The `k` largest (algebraic) eigenvalues, descending, and their eigenvectors as columns of a (dim, k) array.

    ARPACK's Lanczos on a `LinearOperator` wrapping `hvp`; the start vector is drawn from `seed`. `tol` is
    ARPACK's relative accuracy of the eigenvalues (0: machine precision).
    """
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

    _check_top_k(k, dim)
    if not (math.isfinite(tol) and tol >= 0):
        raise LandscapeError(f"the eigenvalue tolerance must be a number >= 0, got {tol}")
    operator = LinearOperator((dim, dim), matvec=hvp, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    try:
        values, vectors = eigsh(operator, k=k, which="LA", tol=tol, v0=v0)
    except ArpackNoConvergence as e:
        raise LandscapeError(f"Lanczos did not converge ({e}): raise the tolerance or lower --top-k") from None
    except ArpackError as e:  # e.g. a Hessian that is zero: "Starting vector is zero"
        raise LandscapeError(f"ARPACK failed ({e}): try --solver lanczos") from None
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


def lanczos(hvp: MatVec, dim: int, steps: int, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lanczos from `start` with full reorthogonalization: the diagonal (m,) and off-diagonal (m - 1,) of the
    tridiagonal matrix T, m = `steps`, or fewer when the Krylov space closes (an invariant subspace: T is exact)."""
    *_, (alphas, betas, _) = lanczos_steps(hvp, dim, steps, start)  # the state after the last step
    return np.array(alphas), np.array(betas)


def lanczos_steps(
    hvp: MatVec, dim: int, steps: int, start: np.ndarray
) -> Iterator[tuple[list[float], list[float], float]]:
    """`lanczos` one product at a time: after each step, the diagonal and off-diagonal of T so far and the norm of
    the next Lanczos vector before normalization (0 when the Krylov space closed), which bounds the residuals of the
    Ritz pairs (`ritz`). The lists grow in place: copy them to keep a step's state."""
    for alphas, betas, beta, _ in _lanczos_with_basis(hvp, dim, steps, start):
        yield alphas, betas, beta


def _lanczos_with_basis(
    hvp: MatVec, dim: int, steps: int, start: np.ndarray
) -> Iterator[tuple[list[float], list[float], float, np.ndarray]]:
    """`lanczos_steps`, also giving the orthonormal Lanczos vectors so far as rows (a view, valid until the next
    step), from which Ritz vectors are made. Memory: 8 x dim bytes per step taken (the array doubles as it fills)."""
    if not 1 <= steps <= dim:
        raise LandscapeError(f"the Lanczos steps must be in 1..{dim} (the number of parameters), got {steps}")
    basis = np.empty((min(steps, 32), dim))  # grown as needed: `steps` is a bound, most runs stop far short of it
    basis[0] = start / np.linalg.norm(start)
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = hvp(basis[j])
        alphas.append(float(basis[j] @ w))
        w = w - alphas[-1] * basis[j] - (betas[-1] * basis[j - 1] if j else 0.0)
        for _ in range(2):  # twice is enough (Parlett): the basis stays orthogonal to rounding
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        closed = beta <= 1e-10 * max(abs(a) for a in alphas + betas + [1e-300])
        yield alphas, betas, 0.0 if closed else beta, basis[: j + 1]
        if j == steps - 1 or closed:
            return
        betas.append(beta)
        if j + 1 == len(basis):
            grown = np.empty((min(2 * len(basis), steps), dim))
            grown[: j + 1] = basis
            basis = grown
        basis[j + 1] = w / beta


ARPACK_FIRST_CYCLE = 20  # scipy's eigsh: ncv = max(2k + 1, 20) Lanczos vectors before its first convergence test


def lanczos_top(
    hvp: MatVec, dim: int, k: int, tol: float = 1e-3, seed: int = 0, max_steps: int = 300
) -> tuple[np.ndarray, np.ndarray, int]:
    """The `k` largest eigenvalues (descending), their eigenvectors as columns of a (dim, k) array, and the
    products used: Lanczos with full reorthogonalization from a Gaussian start vector drawn from `seed`, stopped
    once each of the top k Ritz values' residual is below `tol` times its size (ARPACK's criterion; tol = 0: always
    `max_steps` products). For k = 1 as soon as that holds; for k >= 2 not before ARPACK's first cycle of
    max(2k + 1, 20) products: a small residual only says a Ritz value is near *some* eigenvalue, and two close top
    eigenvalues show as one until the Krylov space resolves them (one would be missed, and its eigenvector). An
    eigenvalue repeated exactly is found once (one start vector spans one vector of its eigenspace). Holds the
    Lanczos vectors: 8 x dim bytes per product."""
    _check_top_k(k, dim)
    if not (math.isfinite(tol) and tol >= 0):
        raise LandscapeError(f"the eigenvalue tolerance must be a number >= 0, got {tol}")
    start = np.random.default_rng(seed).standard_normal(dim)
    steps = min(max(max_steps, k), dim)
    least = 1 if k == 1 else min(max(2 * k + 1, ARPACK_FIRST_CYCLE), steps)
    for alphas, betas, beta, basis in _lanczos_with_basis(hvp, dim, steps, start):
        m = len(alphas)
        if m < k and beta > 0:
            continue
        tridiagonal = np.diag(alphas) + np.diag(betas[: m - 1], 1) + np.diag(betas[: m - 1], -1)
        theta, vectors = np.linalg.eigh(tridiagonal)
        top = np.argsort(theta)[::-1][:k]
        converged = bool(np.all(beta * np.abs(vectors[-1, top]) <= tol * np.abs(theta[top])))
        if (tol > 0 and converged and m >= least) or beta == 0 or m == steps:
            if len(top) < k:
                raise LandscapeError(f"the Krylov space closed after {m} products, below --top-k {k}")
            if tol > 0 and not converged and beta > 0:
                raise LandscapeError(
                    f"Lanczos did not reach the tolerance {tol:g} for the top {k} in {m} products: "
                    "raise the tolerance or lower --top-k"
                )
            return theta[top], basis.T @ vectors[:, top], m
    raise AssertionError("unreachable: the last Lanczos step returns")


def ritz(alphas: list[float], betas: list[float], beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values (ascending) of a Lanczos state and their residual norms ‖H y − θ y‖ = β |last entry of T's
    eigenvector|: each Ritz value lies within its residual of an eigenvalue of H (exact arithmetic)."""
    k = len(alphas)
    tridiagonal = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    theta, vectors = np.linalg.eigh(tridiagonal)
    return theta, beta * np.abs(vectors[-1])


@dataclass(frozen=True)
class LanczosEstimate:
    """Extreme Ritz values of a Lanczos run and their residual bounds; `products`: Hessian-vector products used."""

    smallest: float
    largest: float
    smallest_residual: float
    largest_residual: float
    products: int


def lanczos_extremes(
    hvp: MatVec, dim: int, steps: int, start: np.ndarray, *, tol: float = 0.0, ends: str = "both"
) -> LanczosEstimate:
    """Lanczos from `start` until the extreme Ritz values are accurate to `tol` relative to themselves, at most
    `steps` products, fewer when the Krylov space closes. tol = 0: always `steps` products (or closure).

    ends = "largest": stop once the top Ritz value's residual is below tol x it (ARPACK's criterion). ends = "both":
    once, at each end, the residual and the change since the previous step are below tol x that end's Ritz value, so
    that |λmin/λmax| is usually accurate to about 2 tol relative; not always: a Ritz value can settle for a few
    steps on the eigenvalue next to an end before the one beyond it shows (a synthetic spectrum with λmin and the
    next 1.4% apart stopped on the next one, 1.4% off). tol = 0 with enough steps is the way to be sure. The low end
    needs both tests and its own scale: in the first steps the smallest Ritz value sits in the dense bulk of
    eigenvalues near 0, close to some eigenvalue (a small residual on the scale of λmax) but not yet to λmin, towards
    which it keeps moving (by interlacing, the smallest Ritz value only decreases and the largest only increases,
    step by step)."""
    if not (math.isfinite(tol) and tol >= 0):
        raise LandscapeError(f"the eigenvalue tolerance must be a number >= 0, got {tol}")
    if ends not in ("both", "largest"):
        raise ValueError(f"ends must be 'both' or 'largest', not {ends!r}")
    theta, residual = np.zeros(1), np.zeros(1)
    previous: np.ndarray | None = None
    for alphas, betas, beta in lanczos_steps(hvp, dim, steps, start):
        theta, residual = ritz(alphas, betas, beta)
        extremes = theta[[0, -1]]
        bounds = tol * np.abs(extremes)
        if ends == "largest":
            done = residual[-1] <= bounds[1]
        else:
            moved = np.abs(extremes - previous) if previous is not None else np.full(2, np.inf)
            done = bool(np.all(residual[[0, -1]] <= bounds) and np.all(moved <= bounds))
        if tol > 0 and done:
            break
        previous = extremes
    return LanczosEstimate(
        float(theta[0]), float(theta[-1]), float(residual[0]), float(residual[-1]), products=len(theta)
    )


def top_eigenvalue(hvp: MatVec, dim: int, tol: float = 1e-3, seed: int = 0, max_steps: int = 100) -> LanczosEstimate:
    """The largest eigenvalue by Lanczos from a Gaussian start vector drawn from `seed`, stopped as soon as its Ritz
    value's residual is below `tol` times it (ARPACK's criterion, without ARPACK's minimum of 20 products per cycle);
    at most `max_steps` products. `.largest` is the estimate, `.products` what it cost."""
    start = np.random.default_rng(seed).standard_normal(dim)
    return lanczos_extremes(hvp, dim, min(max_steps, dim), start, tol=tol, ends="largest")


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the eigenvalue density φ(t) = (1/n) Σ δ(t − λ_i).

    For each Rademacher start vector v, a Gauss quadrature of vᵀ f(H) v / vᵀv: nodes (the Ritz values, eigenvalues of
    T) and weights (squared first components of T's eigenvectors, summing to 1); it is exact for polynomials f of
    degree < 2m, and for every f once the Krylov space closes. φ is their average over the start vectors.
    """

    nodes: list[np.ndarray]
    weights: list[np.ndarray]

    def smoothed(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """φ on `grid`, each node a Gaussian of standard deviation `sigma`: a density that integrates to ~1."""
        grid = np.asarray(grid, dtype=np.float64)[:, None]
        out = np.zeros(len(grid))
        for nodes, weights in zip(self.nodes, self.weights):
            out += (weights * np.exp(-0.5 * ((grid - nodes) / sigma) ** 2)).sum(axis=1)
        return out / (len(self.nodes) * sigma * np.sqrt(2 * np.pi))

    def negative_share(self, tol: float = 0.01) -> float:
        """The weight of the nodes below −`tol` times the largest |node|: the estimated share of clearly negative
        eigenvalues. A node near 0 stands for the bulk of eigenvalues around it, whose signs a quadrature of a few
        steps cannot resolve (`near_zero_share`)."""
        cut = tol * max(float(np.abs(n).max()) for n in self.nodes)
        return float(np.mean([w[n < -cut].sum() for n, w in zip(self.nodes, self.weights)]))

    def near_zero_share(self, tol: float = 0.01) -> float:
        """The weight of the nodes within `tol` times the largest |node| of 0."""
        cut = tol * max(float(np.abs(n).max()) for n in self.nodes)
        return float(np.mean([w[np.abs(n) <= cut].sum() for n, w in zip(self.nodes, self.weights)]))


def spectral_density(hvp: MatVec, dim: int, steps: int, samples: int = 1, seed: int = 0) -> SpectralDensity:
    """Stochastic Lanczos quadrature (`SpectralDensity`): `samples` Lanczos runs of `steps` steps from Rademacher
    vectors drawn from `seed` (the draws of `hutchinson_trace` with the same seed); `steps` products each."""
    if samples < 1:
        raise LandscapeError(f"--density-samples must be at least 1, got {samples}")
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    for _ in range(samples):
        v = rng.integers(0, 2, size=dim).astype(np.float64) * 2.0 - 1.0
        alphas, betas = lanczos(hvp, dim, steps, v)
        theta, vectors = np.linalg.eigh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
        nodes.append(theta)
        weights.append(vectors[0] ** 2)
    return SpectralDensity(nodes, weights)


def extreme_eigenvalues(hvp: MatVec, dim: int, steps: int, seed: int = 0, tol: float = 0.0) -> tuple[float, float]:
    """Estimates of λmin and λmax: the extreme Ritz values of at most `steps` Lanczos steps from a Gaussian start
    vector drawn from `seed` (fewer once both are accurate to `tol` relative to themselves, `lanczos_extremes`). They
    converge first and from inside the spectrum (exact once the Krylov space closes)."""
    start = np.random.default_rng(seed).standard_normal(dim)
    found = lanczos_extremes(hvp, dim, min(steps, dim), start, tol=tol)
    return found.smallest, found.largest


class CurvatureEvaluator:
    """λmin and λmax of the loss Hessian at points θ* + Σ_k c_k d_k, the convexity map's counterpart of
    `PointEvaluator`: `evaluate(coefficients)` returns float64 arrays (K,) keyed as in the surface file,
    `hessian_min`, `hessian_max` and `hessian_products` (the products each point took).

    At each point, one Lanczos run from the same start vector (drawn from `seed`) gives both ends of the spectrum
    (`lanczos_extremes`: at most `steps` products, fewer once both are accurate to `tol`). The directions may move
    parameters and floating-point buffers (BatchNorm statistics for `states` directions); the products are with
    respect to the trainable parameters, BatchNorm in eval mode. θ* is restored after each call, also on an exception.
    `keep_graph`: the products of a point share its gradient graphs (`HessianVectorProduct`), rebuilt at each point.
    """

    def __init__(
        self,
        model: nn.Module,
        center: Direction,
        directions: list[Direction],
        images: ImageSet,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        steps: int,
        tol: float = 0.0,
        seed: int = 0,
        batch_size: int = 128,
        device: torch.device | str | None = None,
        keep_graph: bool = False,
    ) -> None:
        if device is not None:
            model = model.to(device)
        state = model.state_dict()
        for d in directions:
            if d.keys() != center.keys() or not set(center) <= set(state):
                raise LandscapeError("a curvature map's directions must be keyed like θ*, by the model's tensor names")
        check_finite(center, "the center")  # 0 x NaN is NaN: a non-finite direction spoils even θ* itself
        for k, d in enumerate(directions):
            check_finite(d, f"direction {k + 1}")
        self.model = model
        self.names = list(center)
        self.targets = [state[n] for n in self.names]
        self.center = [center[n].to(torch.float64) for n in self.names]
        self.directions = [[d[n].to(torch.float64) for n in self.names] for d in directions]
        self.saved = [t.detach().clone() for t in self.targets]
        self.hvp = HessianVectorProduct(model, images, mean, std, batch_size=batch_size, keep_graph=keep_graph)
        self.steps, self.tol = min(steps, self.hvp.dim), tol
        self.start = np.random.default_rng(seed).standard_normal(self.hvp.dim)

    def evaluate(self, coefficients: np.ndarray) -> dict[str, np.ndarray]:
        coefficients = np.asarray(coefficients, dtype=np.float64).reshape(len(coefficients), -1)
        if coefficients.shape[1] != len(self.directions):
            raise ValueError(f"expected {len(self.directions)} coefficients per point, got {coefficients.shape[1]}")
        out = {name: np.empty(len(coefficients)) for name in ("hessian_min", "hessian_max", "hessian_products")}
        try:
            for row, c in enumerate(coefficients):
                with torch.no_grad():
                    for target, center, *dirs in zip(self.targets, self.center, *self.directions):
                        moved = center + sum(float(ck) * d for ck, d in zip(c, dirs))
                        target.copy_(moved.to(target.device, target.dtype))
                self.hvp.reset()
                before = self.hvp.count
                try:
                    found = lanczos_extremes(self.hvp.numpy(), self.hvp.dim, self.steps, self.start, tol=self.tol)
                except NonFiniteHessian:  # the loss overflows here: no curvature, as its loss is stored NaN
                    out["hessian_min"][row] = out["hessian_max"][row] = np.nan
                    out["hessian_products"][row] = self.hvp.count - before
                    continue
                out["hessian_min"][row], out["hessian_max"][row] = found.smallest, found.largest
                out["hessian_products"][row] = found.products
        finally:
            with torch.no_grad():
                for target, saved in zip(self.targets, self.saved):
                    target.copy_(saved)
            self.hvp.reset()
        return out


def curvature_map(
    model: nn.Module,
    images: ImageSet,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    center: Direction,
    directions: list[Direction],
    coefficients: np.ndarray,
    *,
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 128,
) -> np.ndarray:
    """(points, 2): λmin and λmax (`extreme_eigenvalues`, `steps` products) of the loss Hessian at θ* + Σ_k c_k d_k
    for each row c of `coefficients`, the paper's convexity map (Fig. 7: |λmin/λmax|) at those points; a
    `CurvatureEvaluator` without early stop. θ* is restored afterwards, also on an exception."""
    evaluator = CurvatureEvaluator(
        model, center, directions, images, mean, std, steps=steps, seed=seed, batch_size=batch_size
    )
    found = evaluator.evaluate(coefficients)
    return np.stack([found["hessian_min"], found["hessian_max"]], axis=1)


def eigenvector_file_sha256(path: str | Path, checkpoint_sha256: str | None) -> str:
    """The sha256 of an eigenvector file, refused when it says it belongs to another checkpoint than θ*."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"eigenvector file not found: {path}")
    with _open_npz(path) as archive:
        recorded = _npz_text(archive, path, CHECKPOINT_KEY)
    if recorded is not None and checkpoint_sha256 is not None and recorded != checkpoint_sha256:
        raise LandscapeError(
            f"{path} holds the eigenvectors of another checkpoint (sha256 {recorded[:12]}..., "
            f"θ* has {checkpoint_sha256[:12]}...)"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hessian_direction(path: str | Path, index: int, like: Direction) -> Direction:
    """Eigenvector `index` (1: of the largest eigenvalue) of an eigenvector file of `landscape hessian`, as float32
    tensors keyed like `like` (θ*'s parameters: the same names and shapes, checked before anything is read)."""
    path = Path(path)
    with _open_npz(path) as archive:
        members = _npz_members(archive, path)
        names = {n for n in members if not n.startswith("#")}
        if names != set(like):
            missing, extra = sorted(set(like) - names), sorted(names - set(like))
            raise LandscapeError(
                f"the eigenvectors in {path} do not fit the model: missing {', '.join(missing[:3]) or 'none'}; "
                f"unexpected {', '.join(n[:60] for n in extra[:3]) or 'none'}"
            )
        counts = set()
        for name, tensor in like.items():
            shape, dtype = _npy_header(archive, members[name], path)
            if dtype.kind != "f" or shape[1:] != tuple(tensor.shape) or not 1 <= shape[0] <= MAX_EIGENVECTORS:
                raise LandscapeError(
                    f"{path}: {name} is {dtype} {shape}, not (k, {', '.join(map(str, tensor.shape))}) floats "
                    f"with k at most {MAX_EIGENVECTORS}"
                )
            counts.add(shape[0])
        if len(counts) != 1:
            raise LandscapeError(f"{path} holds different numbers of eigenvectors for different parameters")
        count = counts.pop()
    if not 1 <= index <= count:
        raise LandscapeError(f"{path} holds eigenvectors 1..{count}, not {index}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            out = {n: torch.from_numpy(np.asarray(arrays[n][index - 1], dtype=np.float32)) for n in like}
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as e:  # a member cut short, a damaged archive
        raise LandscapeError(
            f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not all(torch.isfinite(t).all() for t in out.values()):
        raise LandscapeError(f"{path}: eigenvector {index} holds NaN or inf")
    return out


def _open_npz(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise LandscapeError(f"{path} is not an .npz file of `landscape hessian` ({e})") from None


def _npz_members(archive: zipfile.ZipFile, path: Path) -> dict[str, str]:
    """Array name -> member name of an .npz archive; anything but `NAME.npy` members, once each, is refused."""
    members: dict[str, str] = {}
    infos = archive.infolist()
    if len(infos) > 100_000:
        raise LandscapeError(f"{path} has {len(infos)} members, far more than a model has parameters")
    for info in infos:
        if not info.filename.endswith(".npy") or info.filename[:-4] in members:
            raise LandscapeError(f"{path} is not an .npz file of `landscape hessian` (member {info.filename[:60]!r})")
        members[info.filename[:-4]] = info.filename
    return members


def _npy_header(archive: zipfile.ZipFile, member: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and type an .npy member declares, read from its header alone."""
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy version {version}")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise LandscapeError(f"{path}: member {member[:60]!r} is not a readable array ({e})") from None
    if dtype.hasobject:
        raise LandscapeError(f"{path}: member {member[:60]!r} holds Python objects, which are never unpickled")
    return tuple(int(n) for n in shape), dtype


def _npz_text(archive: zipfile.ZipFile, path: Path, key: str) -> str | None:
    """A short string stored in an .npz archive under `key` (None when absent)."""
    members = _npz_members(archive, path)
    if key not in members:
        return None
    shape, dtype = _npy_header(archive, members[key], path)
    if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * 128:
        raise LandscapeError(f"{path}: {key} is not a short string")
    with archive.open(members[key]) as f:
        return str(np.lib.format.read_array(f, allow_pickle=False))


@dataclass(frozen=True, kw_only=True)
class HessianSpec:
    """What `hessian_report` computes: the top `top_k` eigenvalues (by `solver`: `lanczos_top` or ARPACK's
    `top_eigenvalues`), and the trace when `trace_samples` > 0.

    `seed` draws the Lanczos start vector and the trace's vectors; `data` says which images (recorded only:
    `hessian_report` is given them). The products are in fp32.
    """

    top_k: int = 5
    solver: str = "auto"  # auto: our Lanczos (measured: fewer products than ARPACK for k = 1, 2, 5)
    trace_samples: int = 0
    seed: int = 0
    tol: float = 1e-3
    data: DataSpec = DataSpec(subset=1000)
    precision: str = "fp32"
    density_steps: int = 0  # Lanczos steps of the eigenvalue density (0: no density)
    density_samples: int = 1

    @property
    def resolved_solver(self) -> str:
        """The eigensolver `solver` stands for: 'auto' is our Lanczos, which took fewer products than ARPACK to the
        same tolerance for the top 1, 2 and 5 (docs/benchmarks.md)."""
        return "lanczos" if self.solver == "auto" else self.solver

    def validate(self) -> None:
        if not 1 <= self.top_k <= MAX_EIGENVECTORS:  # more would write an eigenvector file that no run reads
            raise LandscapeError(f"--top-k must be at least 1 and at most {MAX_EIGENVECTORS}, got {self.top_k}")
        if self.solver not in SOLVERS:
            raise LandscapeError(f"unknown eigensolver '{self.solver}': use {', '.join(SOLVERS)}")
        if self.trace_samples < 0 or self.trace_samples == 1 or self.trace_samples > MAX_TRACE_SAMPLES:
            raise LandscapeError(
                f"--trace-samples must be 0 (no trace) or 2 to {MAX_TRACE_SAMPLES}, got {self.trace_samples}"
            )
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise LandscapeError(f"the eigenvalue tolerance must be a number >= 0, got {self.tol}")
        if not 0 <= self.seed <= MAX_SEED:
            raise LandscapeError(f"--seed must be 0 to {MAX_SEED}, got {self.seed}")
        if self.precision != "fp32":
            raise LandscapeError(f"the Hessian is computed in fp32 only, not {self.precision}")
        if self.density_steps < 0 or self.density_steps == 1:
            raise LandscapeError(f"--density-steps must be at least 2, got {self.density_steps}")
        if self.density_samples < 1:
            raise LandscapeError(f"--density-samples must be at least 1, got {self.density_samples}")
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
    checkpoint_sha256: str | None = None,
    keep_graph: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Top eigenvalues and (optionally) the trace and the eigenvalue density of the loss Hessian at the model's
    weights, as a JSON-able dict.

    The model is moved to `device` in fp32 and put in eval mode. `eigenvectors`: an .npz file to write the
    eigenvectors to, one array (top_k, *shape) per parameter name, in the order of the eigenvalues, with the
    eigenvalues (`#eigenvalues`) and `checkpoint_sha256` (`#checkpoint_sha256`, when given: the file is then refused
    as directions of another checkpoint's surface; an existing file is replaced only with `overwrite`).
    `keep_graph`: see `HessianVectorProduct`. When the eigenvector file cannot be written, `EigenvectorsNotWritten`
    carries the report.
    """
    spec.validate()
    if eigenvectors is not None:
        if Path(eigenvectors).suffix != ".npz":
            raise LandscapeError(f"the eigenvectors are written as .npz: name the file *.npz, not {eigenvectors}")
        check_writable(eigenvectors, overwrite)
    started = time.perf_counter()
    model = model.to(device=device, dtype=torch.float32)
    hvp = HessianVectorProduct(model, images, mean, std, batch_size=batch_size, keep_graph=keep_graph)
    matvec = hvp.numpy()
    solver = spec.resolved_solver
    if solver == "lanczos":
        values, vectors, _ = lanczos_top(matvec, hvp.dim, spec.top_k, spec.tol, spec.seed)
    else:
        values, vectors = top_eigenvalues(matvec, hvp.dim, spec.top_k, spec.tol, spec.seed)
    eigen_products = hvp.count
    trace = hutchinson_trace(matvec, hvp.dim, spec.trace_samples, spec.seed) if spec.trace_samples else None
    density = None
    if spec.density_steps:
        steps = min(spec.density_steps, hvp.dim)
        density = spectral_density(matvec, hvp.dim, steps, spec.density_samples, spec.seed)
    report = {
        "eigenvalues": [float(v) for v in values],
        "trace": trace.estimate if trace is not None else None,
        "trace_stderr": trace.stderr if trace is not None else None,
        "density": _density_report(density),
        "parameters": hvp.dim,
        "parameter_names": list(hvp.names),
        "images": len(images),
        "hvps": hvp.count,
        "eigen_hvps": eigen_products,
        "solver": solver,
        "seconds": time.perf_counter() - started,
        "spec": dataclasses.asdict(spec),
    }
    if eigenvectors is not None:
        arrays = {n: vectors[hvp.slices[n]].T.reshape(-1, *hvp.shapes[n]) for n in hvp.names}
        for name, parameter in model.named_parameters():  # a frozen parameter is not moved: its entries are 0
            if name not in arrays:
                arrays[name] = np.zeros((len(values), *parameter.shape))
        arrays[EIGENVALUES_KEY] = values
        if checkpoint_sha256 is not None:
            arrays[CHECKPOINT_KEY] = np.array(checkpoint_sha256)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            write_file(eigenvectors, buffer.getvalue(), overwrite)
        except LandscapeError as e:  # minutes of products: the numbers are not lost with the file
            raise EigenvectorsNotWritten(str(e), report) from None
    return report


def _density_report(density: SpectralDensity | None) -> dict[str, Any] | None:
    """The quadrature as JSON: nodes and weights of each start vector, the extreme nodes and the negative share."""
    if density is None:
        return None
    return {
        "nodes": [n.tolist() for n in density.nodes],
        "weights": [w.tolist() for w in density.weights],
        "smallest": float(min(n.min() for n in density.nodes)),
        "largest": float(max(n.max() for n in density.nodes)),
        "negative_share": density.negative_share(),
        "near_zero_share": density.near_zero_share(),
    }
