"""Compute a loss surface: resolve the spec, create or resume the HDF5 file, evaluate the missing points.

`compute_surface(SurfaceSpec(...), "out.h5")` is the Python API behind `landscape compute`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import socket
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import __version__
from .checkpoints import Checkpoint, build_model, file_sha256, load_checkpoint
from .data import DEFAULT_NORMALIZATION, DataSpec, load_split, resolve_root
from .directions import (Direction, DirectionSpec, center_of, check_same_keys, direction_names,
                         normalize_direction, random_direction, target_direction)
from .errors import LandscapeError
from .evaluate import EvalSpec, PointEvaluator, RunOptions
from .grid import GridSpec
from .storage import (Surface, append_run, create_surface_file, is_surface_file, read_computed, read_directions,
                      read_indices, read_spec, read_surface, write_points)

# Spec fields that describe where things were, not what was computed: a resume may differ in them.
_NOT_IDENTITY = {("checkpoint", "path"), ("x", "target"), ("y", "target"), ("data", "root"), ("data", "download")}


@dataclass(frozen=True)
class CheckpointSpec:
    """The trained model θ*: a checkpoint file, and its arch / classes / normalization where it does not say."""

    path: str
    arch: str | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class SurfaceSpec:
    """Everything that defines a surface; stored as JSON in the file's `spec` attribute."""

    checkpoint: CheckpointSpec
    data: DataSpec
    grid: GridSpec
    x: DirectionSpec = DirectionSpec(seed=0)
    y: DirectionSpec | None = None
    evaluation: EvalSpec = EvalSpec()

    def validate(self) -> None:
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SurfaceSpec":
        return _from_dict(cls, d)


def _from_dict(cls: Any, value: Any) -> Any:
    """Rebuild nested frozen dataclasses (and tuples) from `dataclasses.asdict` output read back from JSON."""
    if value is None:
        return None
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _from_dict(hints[f.name], value[f.name]) for f in dataclasses.fields(cls)
                      if f.name in value})
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(cls) if a is not type(None)]
        return _from_dict(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        return tuple(value)
    return value


def resolve_spec(spec: SurfaceSpec, checkpoint: Checkpoint) -> SurfaceSpec:
    """Fill in what the checkpoint knows: sha256, arch, classes, normalization; and the target's sha256."""
    meta = checkpoint.metadata
    dataset = meta.get("dataset", spec.data.name)
    default_mean, default_std = DEFAULT_NORMALIZATION.get(spec.data.name, DEFAULT_NORMALIZATION["cifar10"])
    ckpt = dataclasses.replace(
        spec.checkpoint, sha256=checkpoint.sha256, arch=spec.checkpoint.arch or meta.get("arch"),
        num_classes=spec.checkpoint.num_classes or meta.get("num_classes"),
        mean=tuple(spec.checkpoint.mean or meta.get("mean") or default_mean),
        std=tuple(spec.checkpoint.std or meta.get("std") or default_std))
    if dataset != spec.data.name:
        raise LandscapeError(f"{checkpoint.path} was trained on {dataset}, but --dataset is {spec.data.name}")
    resolved = dataclasses.replace(spec, checkpoint=ckpt)
    for axis in ("x", "y"):
        d = getattr(spec, axis)
        if d is not None and d.kind == "target":
            if not Path(d.target).is_file():
                raise LandscapeError(f"target checkpoint not found: {d.target}")
            resolved = dataclasses.replace(resolved, **{axis: dataclasses.replace(d, target_sha256=file_sha256(d.target))})
    return resolved


def identity(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a spec that decide the numbers (paths may move, contents may not)."""
    out = {}
    for section, value in spec.items():
        if isinstance(value, dict):
            out[section] = {k: v for k, v in value.items() if (section, k) not in _NOT_IDENTITY}
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


def run_record(options: RunOptions, device: torch.device) -> dict[str, Any]:
    """The environment and options of one session working on a file."""
    return {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "landscape": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "host": socket.gethostname(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "options": dataclasses.asdict(options)}


def build_direction(spec: DirectionSpec, model: torch.nn.Module, center: Direction) -> Direction:
    if spec.kind == "random":
        return normalize_direction(random_direction(center, spec.seed), center, spec.norm, spec.ignore)
    if spec.kind == "target":
        target = load_checkpoint(spec.target)
        return target_direction(center, target.state_dict)
    direction = read_directions(spec.source, spec.source_axis)
    check_same_keys(direction, center, f"direction in {spec.source}", "model")
    return direction


Progress = Callable[[int, int], None]


def compute_surface(spec: SurfaceSpec, out: str | Path, options: RunOptions = RunOptions(), *,
                    overwrite: bool = False, progress: Progress | None = None) -> Surface:
    """Compute the surface into `out`, resuming a file of the same spec; returns the surface read back.

    `progress(done, total)` is called after each batch of points. An existing file with another spec is
    refused unless `overwrite`.
    """
    spec.validate()
    options.validate()
    options = options.resolved()
    device = torch.device(options.device)
    out = Path(out)
    checkpoint = load_checkpoint(spec.checkpoint.path)
    spec = resolve_spec(spec, checkpoint)
    root = str(resolve_root(spec.data.root).resolve())  # recorded as an absolute path
    spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, root=root))
    spec_dict = json.loads(json.dumps(spec.to_dict()))  # as stored: tuples become lists
    model = build_model(checkpoint, spec.checkpoint.arch, spec.checkpoint.num_classes)
    resume = out.exists() and not overwrite
    if resume:
        if not is_surface_file(out):
            raise LandscapeError(f"{out} exists and is not a landscape surface file: "
                                 "pass --overwrite to replace it, or choose another --out")
        stored = read_spec(out)
        differences = spec_differences(identity(spec_dict), identity(stored))
        if differences:
            raise LandscapeError(f"{out} holds a different surface: {'; '.join(differences[:4])}. "
                                 "Pass --overwrite to replace it, or choose another --out")
    elif not out.parent.is_dir():
        raise LandscapeError(f"cannot write {out}: folder {out.parent} does not exist")

    names = direction_names(model, spec.x.dir_type)
    center = center_of(model, names)
    axes = ["x"] if spec.y is None else ["x", "y"]
    if resume:
        directions = {axis: read_directions(out, axis) for axis in axes}
        for axis in axes:
            check_same_keys(directions[axis], center, f"stored {axis} direction", "model")
        indices = read_indices(out)
    else:
        directions = {axis: build_direction(getattr(spec, axis), model, center) for axis in axes}
        indices = {}
    datasets = {split: load_split(spec.data, split, indices.get(split)) for split in spec.data.splits}
    bn_set = None
    if spec.evaluation.bn == "recompute":  # a fixed draw of training images, apart from the evaluated subset
        bn_data = dataclasses.replace(spec.data, subset=spec.evaluation.bn_images, seed=spec.data.seed + 1)
        bn_set = load_split(bn_data, "train", indices.get("bn"))
    if resume:
        append_run(out, run_record(options, device))
    else:
        stored_indices = {split: s.indices for split, s in datasets.items()}
        if bn_set is not None:
            stored_indices["bn"] = bn_set.indices
        coordinates = [spec.grid.x.coordinates()] + ([spec.grid.y.coordinates()] if spec.grid.y else [])
        create_surface_file(out, spec_dict, run_record(options, device), spec.grid.shape, coordinates,
                            spec.data.splits, directions, stored_indices)

    evaluator = PointEvaluator(model, center, [directions[a] for a in axes], datasets, spec.checkpoint.mean,
                               spec.checkpoint.std, spec.evaluation, options, bn_set)
    coefficients = spec.grid.coefficients()
    todo = np.flatnonzero(~read_computed(out).ravel())
    total = len(coefficients)
    done = total - len(todo)
    if progress:
        progress(done, total)
    for start in range(0, len(todo), options.points_per_pass):
        chunk = todo[start:start + options.points_per_pass]
        results = evaluator.evaluate(coefficients[chunk])
        write_points(out, chunk, results, spec.data.splits)
        done += len(chunk)
        if progress:
            progress(done, total)
    return read_surface(out)

