"""What defines a surface: `SurfaceSpec` (checkpoint, data, grid, directions, evaluation), stored as JSON in the file.

`SurfaceSpec.from_dict` is the only way a stored spec is read back: it checks every field's type and the grid
(`SurfaceSpec.validate_layout`), so a damaged or crafted `spec` attribute is one clear error, never a KeyError or
TypeError later, nor an allocation of the size a crafted grid declares.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import DataSpec, check_normalization
from .directions import DirectionSpec
from .errors import LandscapeError
from .evaluate import EvalSpec
from .grid import GridSpec

# Spec fields that describe where things were, not what was computed: a resume may differ in them.
_NOT_COMPARED = {
    ("checkpoint", "path"),
    ("x", "target"),
    ("y", "target"),
    ("data", "root"),
    ("data", "download"),
    ("trajectory", "paths"),
}
# Direction fields written only when set, so that the spec of every other surface is stored as before.
_OPTIONAL_DIRECTION_FIELDS = ("index", "source_sha256")


@dataclass(frozen=True, kw_only=True)
class CheckpointSpec:
    """The trained model θ*: a checkpoint file, and its arch / classes / normalization where it does not say."""

    path: str
    arch: str | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    sha256: str | None = None

    def validate(self) -> None:
        """`mean` and `std` given together (else both come from the checkpoint or the dataset), and usable."""
        if (self.mean is None) != (self.std is None):
            raise LandscapeError(
                "--mean and --std go together: give both, or neither to use the checkpoint's (or the dataset's)"
            )
        if self.mean is not None and self.std is not None:
            check_normalization(self.mean, self.std)
        if self.num_classes is not None and self.num_classes < 1:  # 0 was replaced by the checkpoint's count
            raise LandscapeError(f"--num-classes must be a positive number of classes, got {self.num_classes}")


@dataclass(frozen=True, kw_only=True)
class TrajectorySpec:
    """PCA directions of a training trajectory (x: component 1, y: component 2 of {θ_i − θ*}).

    paths: what was given (a snapshots file of `landscape train`, a folder of checkpoints, or checkpoint files):
    recorded, never compared or opened by a reader. sha256: of the trajectory's file when there is one, else of
    its files' sha256s, one per line, in order; what identifies the trajectory. centered: subtract the mean of the
    θ_i − θ* before the PCA (as the paper's code, with scikit-learn's PCA), else an SVD of them as they are.
    """

    paths: tuple[str, ...]
    sha256: str | None = None
    centered: bool = True

    def validate(self) -> None:
        if not self.paths:
            raise LandscapeError("a trajectory needs a snapshots file, a folder or checkpoint files")
        if len(self.paths) > 64:
            raise LandscapeError(f"{len(self.paths)} trajectory files given: at most 64, or put them in one folder")


@dataclass(frozen=True, kw_only=True)
class SurfaceSpec:
    """Everything that defines a surface; stored as JSON in the file's `spec` attribute."""

    checkpoint: CheckpointSpec
    data: DataSpec
    grid: GridSpec
    x: DirectionSpec = DirectionSpec(seed=0)
    y: DirectionSpec | None = None
    evaluation: EvalSpec = EvalSpec()
    trajectory: TrajectorySpec | None = None

    def validate(self) -> None:
        self.checkpoint.validate()
        self.data.validate()
        self.grid.validate()
        self.x.validate()
        self.evaluation.validate()
        if (self.grid.y is None) != (self.y is None):
            raise LandscapeError("a 2D grid needs a y direction and a 1D grid none")
        if self.y is not None:
            self.y.validate()
            if self.x.kind == self.y.kind == "random" and self.x.seed == self.y.seed:
                raise LandscapeError(f"the x and y directions would be identical (both seed {self.x.seed})")
            if self.x.dir_type != self.y.dir_type:
                raise LandscapeError("the x and y directions must have the same direction type")
            same = (self.x.source, self.x.index) == (self.y.source, self.y.index)
            if self.x.kind == self.y.kind == "hessian" and same:
                raise LandscapeError(f"the x and y directions would be identical (both eigenvector {self.x.index})")
        self._validate_trajectory()

    def validate_layout(self) -> None:
        """The grid (`GridSpec.validate`: at most `MAX_POINTS` points) and a y direction exactly for a 2D grid: what
        a reader of a stored spec allocates and indexes by. Only this is checked on reading (`from_dict`): the other
        checks of `validate` may have changed since a file was written, and must not make it unreadable."""
        self.grid.validate()
        if (self.grid.y is None) != (self.y is None):
            raise LandscapeError("a 2D grid needs a y direction and a 1D grid none")

    def _validate_trajectory(self) -> None:
        pca = [d.kind == "pca" for d in (self.x, self.y) if d is not None]
        if self.trajectory is None:
            if any(pca):
                raise LandscapeError("a PCA direction needs a trajectory")
            return
        self.trajectory.validate()
        if self.y is None or not all(pca) or (self.x.index, self.y.index) != (1, 2):
            raise LandscapeError("the PCA of a trajectory gives a plane: x = component 1, y = component 2")
        if self.x.ignore != self.y.ignore:
            raise LandscapeError("the PCA directions share one ignore setting: the x and y values differ")

    def input_files(self) -> list[str]:
        """The files (and folders) this surface reads: the checkpoint, target checkpoints, direction and eigenvector
        files, the trajectory; none of them may be its output."""
        paths = [self.checkpoint.path]
        for d in (self.x, self.y):
            if d is not None:
                paths += [p for p in (d.target, d.source) if p]
        return paths + list(self.trajectory.paths if self.trajectory else ())

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able dicts; fields that only PCA and Hessian directions use are left out when unset."""
        d = dataclasses.asdict(self)
        if d["trajectory"] is None:
            del d["trajectory"]
        for axis in ("x", "y"):
            if d[axis] is not None:
                for name in _OPTIONAL_DIRECTION_FIELDS:
                    if d[axis][name] is None:
                        del d[axis][name]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> SurfaceSpec:
        """Rebuild a spec read back from JSON; a `LandscapeError` naming the field for anything mistyped, and for a
        grid that `validate_layout` refuses (so that no reader allocates what a crafted grid declares)."""
        spec = _from_dict(cls, d, "spec")
        assert isinstance(spec, SurfaceSpec)
        try:
            spec.validate_layout()
        except LandscapeError as e:
            raise LandscapeError(f"spec.grid: {e}") from None
        return spec


MAX_CURVATURE_STEPS = 1000


@dataclass(frozen=True, kw_only=True)
class CurvatureMapSpec:
    """A convexity map of a surface (Li et al. 2018, Fig. 7): λmin and λmax of the loss Hessian at grid points,
    stored in the surface file next to the loss (its `curvature` attribute; docs/file-format.md).

    stride: every stride-th grid point along each axis, counted from the middle one (5 on a 51-point axis: 11
    points, the ends included; 10: 5 points, -0.8..0.8 on -1:1). images: how many of the surface's evaluated
    images of `split` the Hessian averages over, drawn with `seed` (0: all of them). steps: Lanczos steps, one
    Hessian-vector product each, per point at most; tol: a point stops early once λmin and λmax are each accurate to
    tol relative to themselves (residual bound and last change; 0: always `steps`). seed: also the Lanczos start
    vector, the same at every point. The Hessian is that of the mean cross-entropy with respect to the trainable
    parameters, fp32, BatchNorm in eval mode, whatever precision the loss was computed in.
    """

    stride: int = 1
    images: int = 0
    split: str = "train"
    steps: int = 20
    tol: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        if self.stride < 1:
            raise LandscapeError(f"--stride must be at least 1, got {self.stride}")
        if self.images < 0:
            raise LandscapeError(f"--images must be 0 (all of the surface's) or positive, got {self.images}")
        if self.split not in ("train", "test"):
            raise LandscapeError(f"the Hessian's split must be train or test, not {self.split!r}")
        if not 2 <= self.steps <= MAX_CURVATURE_STEPS:
            raise LandscapeError(f"--steps must be in 2..{MAX_CURVATURE_STEPS}, got {self.steps}")
        if not (math.isfinite(self.tol) and 0 <= self.tol < 1):
            raise LandscapeError(f"--tol must be in [0, 1), got {self.tol}")
        if self.seed < 0:
            raise LandscapeError(f"--seed must be >= 0, got {self.seed}")

    def selected(self, shape: tuple[int, ...]) -> np.ndarray:
        """Boolean mask of the grid points of the map: every stride-th along each axis from the middle one."""
        axes = [(np.arange(n) - (n - 1) // 2) % self.stride == 0 for n in shape]
        return axes[0] if len(axes) == 1 else np.logical_and.outer(axes[0], axes[1])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> CurvatureMapSpec:
        """Settings read back from JSON, every field type-checked and validated; one LandscapeError otherwise."""
        spec = _from_dict(cls, d, "curvature")
        assert isinstance(spec, CurvatureMapSpec)
        spec.validate()
        return spec


def as_stored(settings: Any) -> dict[str, Any]:
    """Settings in the form a file stores and reads back (JSON types: tuples become lists), to compare with one."""
    plain = settings.to_dict() if hasattr(settings, "to_dict") else dataclasses.asdict(settings)
    stored: dict[str, Any] = json.loads(json.dumps(plain))
    return stored


def read_back(cls: Any, value: Any, where: str) -> Any:
    """A frozen dataclass rebuilt from its JSON form, fields added since it was written filled with their defaults."""
    return _from_dict(cls, value, where)


def _from_dict(cls: Any, value: Any, where: str) -> Any:
    """Nested frozen dataclasses (and tuples) from `dataclasses.asdict` output read back from JSON, type-checked."""
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(cls)
        if value is None and type(None) in options:
            return None
        inner = [a for a in options if a is not type(None)]
        return _from_dict(inner[0], value, where)
    if dataclasses.is_dataclass(cls):
        if not isinstance(value, dict):
            raise LandscapeError(f"{where} should be an object, not {_kind(value)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise LandscapeError(f"{where} has unknown fields: {', '.join(map(str, unknown[:5]))}")
        missing = [n for n, f in fields.items() if n not in value and f.default is dataclasses.MISSING]
        if missing:
            raise LandscapeError(f"{where} lacks {', '.join(missing)}")
        return typing.cast(Any, cls)(
            **{name: _from_dict(hints[name], value[name], f"{where}.{name}") for name in fields if name in value}
        )
    if origin is tuple:
        if not isinstance(value, list) or len(value) > 64:
            raise LandscapeError(f"{where} should be a short list, not {_kind(value)}")
        item = typing.get_args(cls)[0]
        return tuple(_from_dict(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if cls is bool:
        if not isinstance(value, bool):
            raise LandscapeError(f"{where} should be true or false, not {_kind(value)}")
    elif cls is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise LandscapeError(f"{where} should be an integer, not {_kind(value)}")
    elif cls is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise LandscapeError(f"{where} should be a finite number, not {_kind(value)}")
        return float(value)
    elif cls is str:
        if not isinstance(value, str) or len(value) > 4096:
            raise LandscapeError(f"{where} should be a string, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 30 else text[:27] + '...'}"


def without_unused_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec dict with the settings that have no effect at their defaults: `data.image_size` of CIFAR, and
    `evaluation.bn_images` and `bn_batch_size` with `bn: eval` (earlier versions accepted and recorded them)."""
    out = dict(spec)
    data, evaluation = out.get("data"), out.get("evaluation")
    if isinstance(data, dict) and data.get("name", "cifar10") != "imagefolder" and "image_size" in data:
        out["data"] = {**data, "image_size": None}
    if isinstance(evaluation, dict) and evaluation.get("bn", "eval") == "eval":
        defaults = {f.name: f.default for f in dataclasses.fields(EvalSpec) if f.name in ("bn_images", "bn_batch_size")}
        out["evaluation"] = {**evaluation, **{k: v for k, v in defaults.items() if k in evaluation}}
    return out


def comparable_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec dict without the fields a resume may change (paths may move, contents may not) and with those that
    have no effect at their defaults (`without_unused_settings`): the fields that decide the numbers, to compare
    with `spec_differences`."""
    out = {}
    for section, value in without_unused_settings(spec).items():
        if isinstance(value, dict):
            out[section] = {k: v for k, v in value.items() if (section, k) not in _NOT_COMPARED}
            if section in ("x", "y") and value.get("source_sha256"):  # an eigenvector file, known by its sha256
                out[section].pop("source", None)
        else:
            out[section] = value
    return out


def spec_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields where two spec dicts differ."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += spec_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} ({_short(va)} here, {_short(vb)} in the file)")
    return out


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) < 40 else s[:37] + "..."
