"""Loss and accuracy of a model at points θ* + Σ c_k d_k, with the data held on the compute device.

`loss_and_accuracy` is the one evaluation loop of the project (surfaces, training, tests): cross-entropy and
correct predictions summed on the device, the loss in float64. `PointEvaluator` moves the model to each point:
its own tensors are overwritten in place (no state_dict copy per point) and θ* is restored afterwards, even on
an exception. In `--bn eval` mode BatchNorm is folded into the preceding convolutions (`batchnorm.py`),
refolded at every point from the perturbed weights. Several points can share one forward pass through
`torch.func.functional_call` + `vmap` (`points_per_pass`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .batchnorm import (
    NotTraceable,
    batch_slices,
    check_running_statistics,
    constant_tensors,
    fold_batchnorm,
    recompute_batchnorm,
)
from .data import ImageSet, normalizer
from .directions import Direction, check_finite, check_same_keys
from .errors import LandscapeError
from .hardware import PRECISIONS, autocast, autocast_reaches_vmap, resolve_device

BN_MODES = ("eval", "recompute")


@dataclass(frozen=True)
class Metrics:
    """Mean cross-entropy and accuracy (%) over a set of images, one float64 value per point: shape (points,)."""

    loss: np.ndarray
    acc: np.ndarray


def moved_weights(
    center: list[torch.Tensor], directions: list[list[torch.Tensor]], coefficients: torch.Tensor
) -> list[torch.Tensor]:
    """θ* + Σ_k c_k d_k for each row c of `coefficients` (points, K): for each tensor of `center`, one tensor
    (points, *shape). `directions[k][i]` is direction k's tensor i (matched by name by the caller).

    c is rounded to the tensor's precision (float32 for float32, bfloat16 and float16 tensors), and the products and
    sums are done in the same order for one point as for many, c_k = 0 not skipped: a point's weights are the same
    bits whether it is evaluated alone or batched with others (with finite directions, 0·d = 0).
    """
    out = []
    for i, c in enumerate(center):
        shape = (len(coefficients),) + (1,) * c.dim()
        scale = coefficients.to(torch.promote_types(c.dtype, torch.float32))
        value = c.unsqueeze(0).expand(shape[:1] + c.shape)
        for k, direction in enumerate(directions):
            value = value + scale[:, k].view(shape) * direction[i].unsqueeze(0)
        out.append(value)
    return out


def normalize(
    images: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """uint8 images → float32 model input, `images * scale + shift` (see `data.normalizer`), in a new tensor."""
    x = images.to(torch.float32, copy=True)
    return x.mul_(scale).add_(shift).contiguous(memory_format=memory_format)


def loss_and_accuracy(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: ImageSet,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    batch_size: int,
    precision: str = "fp32",
    memory_format: torch.memory_format = torch.contiguous_format,
    points: int = 1,
) -> Metrics:
    """Loss and accuracy of `forward` over `images`, in batches of `batch_size`, without gradients.

    `forward` maps a normalized batch of B images to logits, (B, classes) for one point or (points, B, classes)
    for `points` stacked weights. Put a module in eval mode first: this loop does not change its mode.
    A point whose loss is not finite (NaN or inf logits) has NaN accuracy: argmax would pick a class all the same.
    """
    device = images.images.device
    loss_sum = torch.zeros(points, dtype=torch.float64, device=device)
    correct = torch.zeros(points, dtype=torch.int64, device=device)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = normalize(images.images[start : start + batch_size], scale, shift, memory_format)
            y = images.labels[start : start + batch_size]
            with autocast(precision, device):
                logits = forward(x)
            logits = logits.float().reshape(points, len(y), -1)
            losses = F.cross_entropy(logits.flatten(0, 1), y.repeat(points), reduction="none")
            loss_sum += losses.view(points, -1).sum(1, dtype=torch.float64)
            correct += (logits.argmax(-1) == y).sum(1)
    loss = loss_sum.cpu().numpy() / len(images)
    acc = np.where(np.isfinite(loss), 100.0 * correct.cpu().numpy() / len(images), np.nan)
    return Metrics(loss=loss, acc=acc)


@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    """What is computed at each point (part of a surface's identity).

    bn: `eval` uses the stored running statistics; `recompute` re-estimates them at each point from
    `bn_images` (>= 2) fixed training images in batches of `bn_batch_size`, as mode-connectivity work does, every
    image weighing alike, only the BatchNorms in train mode (`batchnorm.recompute_batchnorm`).
    """

    precision: str = "fp32"
    bn: str = "eval"
    bn_images: int = 1280
    bn_batch_size: int = 128

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise LandscapeError(f"unknown precision '{self.precision}': use {', '.join(PRECISIONS)}")
        if self.bn not in BN_MODES:
            raise LandscapeError(f"unknown BatchNorm mode '{self.bn}': use {', '.join(BN_MODES)}")
        if self.bn == "recompute" and self.bn_images < 2:
            raise LandscapeError(f"--bn-images must be >= 2 (a variance needs two images), not {self.bn_images}")
        if self.bn == "recompute" and self.bn_batch_size < 2:
            raise LandscapeError(
                f"EvalSpec.bn_batch_size must be >= 2 (a variance per batch), not {self.bn_batch_size}"
            )


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How the points are computed (not part of a surface's identity: results agree to rounding)."""

    device: str = "auto"
    batch_size: int | None = None  # None: 128 on the CPU (measured best, docs/benchmarks.md), 1000 on CUDA
    channels_last: bool = True
    fold_bn: bool = True
    compile: bool = False
    points_per_pass: int = 1
    keep_graph: bool = False  # convexity maps: the Hessian products of a point share its gradient graphs

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)

    def resolved(self) -> RunOptions:
        """These options with `device` and `batch_size` made concrete."""
        device = self.resolved_device()
        batch_size = self.batch_size or (1000 if device.type == "cuda" else 128)
        return dataclasses.replace(self, device=str(device), batch_size=batch_size)

    def validate(self) -> None:
        if (self.batch_size is not None and self.batch_size < 1) or self.points_per_pass < 1:
            raise LandscapeError("--batch-size and --points-per-pass must be positive")


def check_options(spec: EvalSpec, options: RunOptions) -> None:
    """Refuse run options that `spec` cannot be computed with (before any file is created or replaced)."""
    if spec.bn == "recompute" and options.points_per_pass > 1:
        raise LandscapeError("--bn recompute evaluates one point per pass: use --points-per-pass 1")
    device = options.resolved_device()
    if spec.precision == "bf16" and options.points_per_pass > 1 and not autocast_reaches_vmap(device.type):
        raise LandscapeError(
            f"bf16 autocast does not reach a vmapped pass on the {device.type.upper()} (PyTorch): its points would "
            "be fp32, the others bf16; use --points-per-pass 1 with --precision bf16"
        )


class PointEvaluator:
    """Evaluates loss and accuracy at grid points.

    `evaluate(coefficients)` returns float64 arrays of shape (K,) keyed as in the surface file:
    `<split>_loss` (mean cross-entropy) and `<split>_acc` (accuracy in %) for each split of `datasets`.
    """

    def __init__(
        self,
        model: nn.Module,
        center: Direction,
        directions: list[Direction],
        datasets: dict[str, ImageSet],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        spec: EvalSpec = EvalSpec(),
        options: RunOptions = RunOptions(),
        bn_set: ImageSet | None = None,
    ) -> None:
        spec.validate()
        options.validate()
        options = options.resolved()
        for d in directions:
            check_same_keys(d, center, "direction", "model")
        check_finite(model.state_dict(), "the model")  # θ*: its parameters and buffers
        check_finite(center, "the center")
        for k, d in enumerate(directions):
            check_finite(d, f"direction {k + 1}")
        check_running_statistics(model)
        if spec.bn == "recompute" and bn_set is None:
            raise LandscapeError("--bn recompute needs a set of training images")
        if spec.bn == "recompute" and bn_set is not None and len(bn_set) < 2:
            raise LandscapeError(f"--bn recompute needs at least 2 images (got {len(bn_set)}): a variance needs two")
        check_options(spec, options)
        self.spec, self.options = spec, options
        self.device = options.resolved_device()
        assert options.batch_size is not None  # made concrete by resolved()
        self.batch_size: int = options.batch_size
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self.model = model.to(self.device).eval()
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        state = self.model.state_dict()
        self._saved_state = {k: v.clone() for k, v in state.items()}  # θ*, restored after each evaluate()
        missing = [n for n in center if n not in state]
        if missing:
            raise LandscapeError(f"the directions name tensors the model lacks, e.g. {missing[0]}")
        # Only tensors that some direction moves are rewritten at each point.
        self.moving = [n for n in center if any(bool(d[n].any()) for d in directions)]
        self.targets = [state[n] for n in self.moving]
        self.center = [center[n].to(self.device, state[n].dtype) for n in self.moving]
        self.directions = [[d[n].to(self.device, state[n].dtype) for n in self.moving] for d in directions]
        self.datasets = {split: s.to(self.device) for split, s in datasets.items()}
        self.bn_set = bn_set.to(self.device) if bn_set is not None else None
        self.scale, self.shift = normalizer(mean, std, self.device)
        self.folded = None
        if options.fold_bn:
            try:
                self.folded = fold_batchnorm(self.model)
            except NotTraceable as e:
                warnings.warn(f"BatchNorm not folded: {e}; evaluating unfolded (same numbers, slower)", stacklevel=2)
        forward_module = self.folded.module if self.folded is not None else self.model
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(forward_module) if options.compile else forward_module
        )

    def evaluate(self, coefficients: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics at each row of `coefficients` (K, number of directions): {"train_loss": (K,), ...}."""
        coefficients = np.asarray(coefficients, dtype=np.float64).reshape(len(coefficients), -1)
        if coefficients.shape[1] != len(self.directions):
            raise ValueError(f"expected {len(self.directions)} coefficients per point, got {coefficients.shape[1]}")
        names = [f"{split}_{metric}" for split in self.datasets for metric in ("loss", "acc")]
        if len(coefficients) == 0:
            return {name: np.zeros(0) for name in names}
        with self._restoring_center(), torch.no_grad():
            if len(coefficients) > 1 and self.options.points_per_pass > 1 and self.moving:  # none: vmap has no input
                parts = [
                    self._evaluate_batched(coefficients[s : s + self.options.points_per_pass])
                    for s in range(0, len(coefficients), self.options.points_per_pass)
                ]
            else:
                parts = [self._evaluate_one(c) for c in coefficients]
        return {name: np.concatenate([part[name] for part in parts]) for name in names}

    @contextlib.contextmanager
    def _restoring_center(self) -> Iterator[None]:
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in self.model.state_dict().items():
                    v.copy_(self._saved_state[k])
                if self.folded is not None:
                    self.folded.refold()

    def _evaluate_one(self, coefficients: np.ndarray) -> dict[str, np.ndarray]:
        self._write_point(coefficients)
        if self.spec.bn == "recompute":
            self._recompute_batchnorm()
        if self.folded is not None:
            self.folded.refold()
        return self._measure(self.forward, points=1)

    def _measure(self, forward: Callable[[torch.Tensor], torch.Tensor], points: int) -> dict[str, np.ndarray]:
        """The shared loop over every split: {"<split>_loss": (points,), "<split>_acc": (points,)}."""
        results = {}
        for split, images in self.datasets.items():
            metrics = loss_and_accuracy(
                forward,
                images,
                self.scale,
                self.shift,
                batch_size=self.batch_size,
                precision=self.spec.precision,
                memory_format=self.memory_format,
                points=points,
            )
            results[f"{split}_loss"], results[f"{split}_acc"] = metrics.loss, metrics.acc
        return results

    def _coefficients(self, coefficients: np.ndarray) -> torch.Tensor:
        """(points, directions) coefficients as a float64 tensor on the device."""
        return torch.as_tensor(coefficients, dtype=torch.float64, device=self.device).reshape(-1, len(self.directions))

    def _write_point(self, coefficients: np.ndarray) -> None:
        """targets ← θ* + Σ c_k d_k, written into the model's own tensors (the sums of the batched path)."""
        if not self.targets:
            return
        values = moved_weights(self.center, self.directions, self._coefficients(coefficients))
        torch._foreach_copy_(self.targets, [v[0] for v in values])

    def _recompute_batchnorm(self) -> None:
        assert self.bn_set is not None
        bn_set = self.bn_set
        batches = (
            normalize(bn_set.images[s], self.scale, self.shift, self.memory_format)
            for s in batch_slices(len(bn_set), self.spec.bn_batch_size)
        )
        with autocast(self.spec.precision, self.device):
            recompute_batchnorm(self.model, batches)

    def _evaluate_batched(self, coefficients: np.ndarray) -> dict[str, np.ndarray]:
        """Several points in one vmapped forward pass over stacked weights."""
        points = len(coefficients)
        values = moved_weights(self.center, self.directions, self._coefficients(coefficients))
        stacked = dict(zip(self.moving, values))
        module: nn.Module
        if self.folded is not None:
            batched, constant = self.folded.functional_state(stacked)
            module = self.folded.module
        else:
            module = self.model
            constant = constant_tensors(module, stacked)
            batched = stacked

        def forward_one(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(module, {**constant, **weights}, (x,))

        forward = torch.func.vmap(forward_one, in_dims=(0, None))
        return self._measure(lambda x: forward(batched, x), points)
