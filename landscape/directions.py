"""Directions in weight space: dicts of tensors keyed by parameter (or buffer) name, never by position.

Random Gaussian directions with the normalizations of Li et al. (2018), target directions between two
checkpoints, and directions read back from an earlier surface file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .data import MAX_SEED
from .errors import LandscapeError

Direction = dict[str, torch.Tensor]
NORMS = ("filter", "layer", "model", "none")
IGNORES = ("biasbn", "none")
DIR_TYPES = ("weights", "states")
KINDS = ("random", "target", "file", "pca", "hessian")
_EPS = 1e-10


@dataclass(frozen=True)
class DirectionSpec:
    """How one axis' direction is made.

    kind: `random` (Gaussian from `seed`, then normalized), `target` (the `target` checkpoint minus θ*,
    not normalized), `file` (axis `source_axis` of the surface file `source`, used as stored), `pca` (principal
    component `index` of the surface's trajectory, `landscape.trajectory`), or `hessian` (eigenvector `index` of
    the eigenvector file `source` of `landscape hessian`, identified by `source_sha256`; not normalized).
    dir_type: `weights` (parameters) or `states` (parameters and floating-point buffers such as BN statistics).
    """

    kind: str = "random"
    seed: int = 0
    norm: str = "filter"
    ignore: str = "biasbn"
    dir_type: str = "weights"
    target: str | None = None
    target_sha256: str | None = None
    source: str | None = None
    source_axis: str = "x"
    index: int | None = None
    source_sha256: str | None = None

    def validate(self) -> None:
        for value, allowed, what in (
            (self.kind, KINDS, "direction kind"),
            (self.norm, NORMS, "normalization"),
            (self.ignore, IGNORES, "ignore"),
            (self.dir_type, DIR_TYPES, "direction type"),
        ):
            if value not in allowed:
                raise LandscapeError(f"unknown {what} '{value}': use {', '.join(allowed)}")
        if self.kind == "random" and not 0 <= self.seed <= MAX_SEED:
            raise LandscapeError(f"--seed must be 0 to {MAX_SEED} (y takes seed + 1), got {self.seed}")
        if self.kind == "target" and not self.target:
            raise LandscapeError("a target direction needs a second checkpoint")
        if self.kind == "file" and not self.source:
            raise LandscapeError("a direction from a file needs the surface file to read it from")
        if self.kind == "pca" and self.index not in (1, 2):
            raise LandscapeError(f"a PCA direction is principal component 1 or 2, not {self.index}")
        if self.kind == "hessian":
            if not self.source:
                raise LandscapeError("a Hessian direction needs the eigenvector file of `landscape hessian`")
            if self.index is None or self.index < 1:
                raise LandscapeError(f"Hessian eigenvectors are numbered from 1 (the largest), not {self.index}")
            if self.dir_type != "weights":
                raise LandscapeError("Hessian eigenvectors move the parameters only: use --dir-type weights")


def direction_names(model: nn.Module, dir_type: str) -> list[str]:
    """Names of the tensors a direction moves: parameters, or parameters and floating-point buffers."""
    names = [n for n, _ in model.named_parameters()]
    if dir_type == "states":
        order = list(model.state_dict())  # a buffer registered as not persistent is not part of θ*
        names += [n for n, b in model.named_buffers() if b.is_floating_point() and n in order]
        names.sort(key=order.index)
    return names


def center_of(model: nn.Module, names: list[str]) -> Direction:
    """θ*: detached copies of the named tensors of `model` (float32). Refuses a model with NaN or inf in any tensor
    (a buffer such as a BatchNorm statistic is part of θ* too), and one in another precision: the directions, the
    evaluation and the Hessian are float32 (`model.float()` converts one)."""
    state = model.state_dict()
    check_finite(state, "the model")
    for n in names:
        if state[n].is_floating_point() and state[n].dtype != torch.float32:
            raise LandscapeError(
                f"the model's {n} is {str(state[n].dtype).removeprefix('torch.')}: landscape works on float32 "
                "models (convert it with model.float())"
            )
    return {n: state[n].detach().clone() for n in names}


def random_direction(center: Direction, seed: int) -> Direction:
    """A standard Gaussian direction with the shapes of `center`, reproducible from `seed` on any device."""
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.randn(t.shape, generator=generator, dtype=torch.float32) for n, t in center.items()}


def normalize_direction(direction: Direction, center: Direction, norm: str, ignore: str) -> Direction:
    """Rescale `direction` to the scale of `center` (Li et al. 2018); returns new tensors.

    Tensors of dim <= 1 (biases, BN parameters and statistics) get a zero direction with `ignore="biasbn"`,
    and the value of θ* itself with `ignore="none"` (as in the paper's code). Higher-dimensional tensors:
    `filter` rescales each output filter (row along dim 0) to the norm of the matching filter of θ*,
    `layer` each tensor to the norm of its θ* tensor, `model` all of them together to the norm of θ*.
    """
    check_same_keys(direction, center, "direction", "model")
    out: Direction = {}
    for name, d in direction.items():
        w = center[name].to(d.device, d.dtype)
        if d.dim() <= 1:
            out[name] = torch.zeros_like(d) if ignore == "biasbn" else w.clone()
        elif norm == "filter":
            d_norms = d.flatten(1).norm(dim=1).view(-1, *[1] * (d.dim() - 1))
            w_norms = w.flatten(1).norm(dim=1).view(-1, *[1] * (d.dim() - 1))
            out[name] = d * (w_norms / (d_norms + _EPS))
        elif norm == "layer":
            out[name] = d * (w.norm() / (d.norm() + _EPS))
        else:
            out[name] = d.clone()
    if norm == "model":
        big = [n for n, d in direction.items() if d.dim() > 1]
        if not big:
            raise LandscapeError("norm model (--xnorm/--ynorm) scales the tensors of dim > 1: this model has none")
        d_norm = torch.stack([out[n].double().pow(2).sum() for n in big]).sum().sqrt()
        w_norm = torch.stack([center[n].double().pow(2).sum() for n in big]).sum().sqrt()
        factor = float(w_norm / (d_norm + _EPS))
        for n in big:
            out[n] = out[n] * factor
    return out


def cosine(a: Direction, b: Direction) -> float:
    """The cosine of the angle between two directions over all their tensors (float64); 0 where one is zero."""
    dot = sum(float((a[n].double() * b[n].double()).sum()) for n in a)
    norm_a = math.sqrt(sum(float(a[n].double().pow(2).sum()) for n in a))
    norm_b = math.sqrt(sum(float(b[n].double().pow(2).sum()) for n in b))
    return dot / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else 0.0


def target_direction(center: Direction, target: Mapping[str, torch.Tensor]) -> Direction:
    """target − θ*, for interpolating from θ* (x=0) to the target checkpoint (x=1).

    Refuses NaN or inf anywhere in `target`. That `target` is a checkpoint of the same model (the same tensor names
    and shapes, the same recorded arch and normalization) is `checkpoints.check_same_model`'s to say: `center` holds
    only the tensors a direction moves, not all of the model's.
    """
    check_finite(target, "the target checkpoint")
    missing = [n for n in center if n not in target]
    if missing:
        raise LandscapeError(f"the target checkpoint lacks {len(missing)} tensors of the model, e.g. {missing[0]}")
    out = {}
    for n, w in center.items():
        t = target[n].to(w.dtype)
        if t.shape != w.shape:
            raise LandscapeError(
                f"the target checkpoint's {n} has shape {tuple(t.shape)}, the model's {tuple(w.shape)}"
            )
        out[n] = t - w
    return out


def check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse NaN or inf in any floating-point tensor of `tensors`, naming the first: "<what>'s <name> holds ..."."""
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise LandscapeError(f"{what}'s {name} holds NaN or inf")


def check_same_keys(a: Direction, b: Direction, a_name: str, b_name: str) -> None:
    """Refuse to pair two tensor dicts whose names differ, saying which names."""
    if a.keys() != b.keys():
        only_a = sorted(set(a) - set(b))
        only_b = sorted(set(b) - set(a))
        raise LandscapeError(
            f"the {a_name} and the {b_name} name different tensors: only in the {a_name}: "
            f"{', '.join(only_a[:3]) or 'none'}; only in the {b_name}: {', '.join(only_b[:3]) or 'none'}"
        )
    for n in a:
        if a[n].shape != b[n].shape:
            raise LandscapeError(
                f"{n} has shape {tuple(a[n].shape)} in the {a_name} but {tuple(b[n].shape)} in the {b_name}"
            )


def inner(a: Direction, b: Direction) -> float:
    """Sum of elementwise products over all named tensors."""
    check_same_keys(a, b, "first direction", "second direction")
    return float(sum((a[n].double() * b[n].double()).sum() for n in a))


def norm(a: Direction) -> float:
    return inner(a, a) ** 0.5
