"""Compute a loss surface: resolve the spec, create or resume the HDF5 file, evaluate the missing points.

`compute_surface(SurfaceSpec(...), "out.h5")` is the Python API behind `landscape compute`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .checkpoints import Checkpoint, build_model, file_sha256, load_checkpoint
from .curvature import eigenvector_file_sha256, hessian_direction
from .data import DEFAULT_NORMALIZATION, ImageSet, load_split, resolve_root
from .directions import (
    Direction,
    DirectionSpec,
    center_of,
    direction_names,
    normalize_direction,
    random_direction,
    target_direction,
)
from .errors import LandscapeError
from .evaluate import PointEvaluator, RunOptions
from .spec import CheckpointSpec, SurfaceSpec, comparable_fields, spec_differences  # noqa: F401 (re-exported)
from .storage import (
    Surface,
    append_run,
    create_surface_file,
    is_surface_file,
    metric_names,
    read_computed,
    read_directions,
    read_indices,
    read_spec,
    read_surface,
    write_points,
    writer_lock,
)
from .trajectory import resolve_trajectory, trajectory_plane


def resolve_spec(spec: SurfaceSpec, checkpoint: Checkpoint) -> SurfaceSpec:
    """Fill in what the checkpoint knows: sha256, arch, classes, normalization; and the target's sha256."""
    meta = checkpoint.metadata
    dataset = meta.get("dataset", spec.data.name)
    default_mean, default_std = DEFAULT_NORMALIZATION.get(spec.data.name, DEFAULT_NORMALIZATION["cifar10"])
    ckpt = dataclasses.replace(
        spec.checkpoint,
        sha256=checkpoint.sha256,
        arch=spec.checkpoint.arch or meta.get("arch"),
        num_classes=spec.checkpoint.num_classes or meta.get("num_classes"),
        mean=tuple(spec.checkpoint.mean or meta.get("mean") or default_mean),
        std=tuple(spec.checkpoint.std or meta.get("std") or default_std),
    )
    if dataset != spec.data.name:
        raise LandscapeError(
            f"{checkpoint.path} was trained on {str(dataset)[:40]!r}, but --dataset is {spec.data.name}"
        )
    resolved = dataclasses.replace(spec, checkpoint=ckpt)
    for axis in ("x", "y"):
        d = getattr(spec, axis)
        if d is not None and d.kind == "target":
            if not Path(d.target).is_file():
                raise LandscapeError(f"target checkpoint not found: {d.target}")
            resolved = dataclasses.replace(
                resolved, **{axis: dataclasses.replace(d, target_sha256=file_sha256(d.target))}
            )
        if d is not None and d.kind == "hessian":
            sha256 = eigenvector_file_sha256(d.source, checkpoint.sha256)
            resolved = dataclasses.replace(resolved, **{axis: dataclasses.replace(d, source_sha256=sha256)})
    if spec.trajectory is not None:
        resolved = dataclasses.replace(resolved, trajectory=resolve_trajectory(spec.trajectory))
    return resolved


def run_record(options: RunOptions, device: torch.device) -> dict[str, Any]:
    """The environment and options of one session working on a file."""
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "landscape": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "options": dataclasses.asdict(options),
    }


def build_direction(spec: DirectionSpec, model: torch.nn.Module, center: Direction) -> Direction:
    if spec.kind == "random":
        return normalize_direction(random_direction(center, spec.seed), center, spec.norm, spec.ignore)
    if spec.kind == "target":
        assert spec.target is not None  # DirectionSpec.validate
        target = load_checkpoint(spec.target)
        return target_direction(center, target.state_dict)
    assert spec.source is not None  # DirectionSpec.validate
    if spec.kind == "hessian":
        assert spec.index is not None  # DirectionSpec.validate
        return hessian_direction(spec.source, spec.index, center)
    return read_directions(spec.source, spec.source_axis, like=center)


Progress = Callable[[int, int], None]


@dataclass
class Job:
    """Everything needed to evaluate the missing points of one surface file, built once per process."""

    spec: SurfaceSpec  # resolved: checkpoint sha256, arch, normalization, absolute data root
    model: torch.nn.Module
    center: Direction
    directions: dict[str, Direction]  # by axis name: "x" and, for a 2D surface, "y"
    datasets: dict[str, ImageSet]
    bn_set: ImageSet | None
    todo: np.ndarray  # flat grid indices of the points still to compute, in grid order
    total: int  # points of the grid

    @property
    def coefficients(self) -> np.ndarray:
        """(points, axes) coefficients of every grid point, by flat index."""
        return self.spec.grid.coefficients()

    def evaluator(self, options: RunOptions) -> PointEvaluator:
        assert self.spec.checkpoint.mean is not None and self.spec.checkpoint.std is not None  # resolve_spec
        return PointEvaluator(
            self.model,
            self.center,
            [self.directions[axis] for axis in sorted(self.directions)],
            self.datasets,
            self.spec.checkpoint.mean,
            self.spec.checkpoint.std,
            spec=self.spec.evaluation,
            options=options,
            bn_set=self.bn_set,
        )


def load_model(spec: SurfaceSpec) -> tuple[SurfaceSpec, torch.nn.Module]:
    """Validate `spec`, load its checkpoint and build the model; returns the resolved spec (absolute data root)."""
    spec.validate()
    checkpoint = load_checkpoint(spec.checkpoint.path)
    spec = resolve_spec(spec, checkpoint)
    root = str(resolve_root(spec.data.root).resolve())  # recorded as an absolute path
    spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, root=root))
    return spec, build_model(checkpoint, spec.checkpoint.arch, spec.checkpoint.num_classes)


def compute_surface(
    spec: SurfaceSpec,
    out: str | Path,
    options: RunOptions = RunOptions(),
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Surface:
    """Compute the surface into `out`, resuming a file of the same spec; returns the surface read back.

    `progress(done, total)` is called after each batch of points. An existing file with another spec is
    refused unless `overwrite`. Only one process at a time may work on `out` (a second one gets a
    LandscapeError at once). `landscape.distributed.compute_surface_distributed` spreads the same work over
    the ranks of a torch.distributed job.
    """
    options.validate()
    options = options.resolved()
    out = Path(out)
    check_out_folder(out)
    spec, model = load_model(spec)
    with writer_lock(out):
        job = prepare_job(spec, model, out, options, overwrite)
        if progress:
            progress(job.total - len(job.todo), job.total)
        if len(job.todo):
            evaluator = job.evaluator(options)
            done = job.total - len(job.todo)
            for chunk in chunks(job.todo, options.points_per_pass):
                write_points(out, chunk, evaluator.evaluate(job.coefficients[chunk]))
                done += len(chunk)
                if progress:
                    progress(done, job.total)
        return read_surface(out)


def chunks(todo: np.ndarray, size: int) -> list[np.ndarray]:
    """The pending points in the groups that are evaluated together (one vmapped pass each)."""
    return [todo[start : start + size] for start in range(0, len(todo), size)]


def check_out_folder(out: Path) -> None:
    if not out.parent.is_dir():
        raise LandscapeError(f"cannot write {out}: folder {out.parent} does not exist")


def prepare_job(
    spec: SurfaceSpec,
    model: torch.nn.Module,
    out: Path,
    options: RunOptions,
    overwrite: bool,
) -> Job:
    """Create `out` (or check that it holds this surface), load its data and list the points still to compute.

    Call it holding `writer_lock(out)`. A resumed file that has points left gets a record of this session.
    """
    device = torch.device(options.device)
    spec_dict = json.loads(json.dumps(spec.to_dict()))  # as stored: tuples become lists
    resume = out.exists() and not overwrite
    if resume:
        if not is_surface_file(out):
            raise LandscapeError(
                f"{out} exists and is not a landscape surface file: "
                "pass --overwrite to replace it, or choose another --out"
            )
        stored = read_spec(out)
        differences = spec_differences(comparable_fields(spec_dict), comparable_fields(stored))
        if differences:
            raise LandscapeError(
                f"{out} holds a different surface: {'; '.join(differences[:4])}. "
                "Pass --overwrite to replace it, or choose another --out"
            )
        _check_layout(read_surface(out), spec)

    names = direction_names(model, spec.x.dir_type)
    center = center_of(model, names)
    axes = ["x"] if spec.y is None else ["x", "y"]
    trajectory = None
    if resume:
        directions = {axis: read_directions(out, axis, like=center) for axis in axes}
        indices = read_indices(out)
    elif spec.trajectory is not None:  # PCA directions: both at once, and the path on their plane
        plane = trajectory_plane(spec.trajectory, center, model.state_dict().keys(), spec.x.ignore)
        directions, trajectory = {"x": plane.x, "y": plane.y}, plane.path.datasets()
        indices = {}
    else:
        directions = {axis: build_direction(getattr(spec, axis), model, center) for axis in axes}
        indices = {}
    datasets, bn_set = load_images(spec, indices)
    if not resume:
        stored_indices = {split: s.indices for split, s in datasets.items()}
        if bn_set is not None:
            stored_indices["bn"] = bn_set.indices
        coordinates = [spec.grid.x.coordinates()] + ([spec.grid.y.coordinates()] if spec.grid.y else [])
        create_surface_file(
            out,
            spec_dict,
            run_record(options, device),
            spec.grid.shape,
            coordinates,
            spec.data.splits,
            directions,
            stored_indices,
            trajectory,
        )
    todo = np.flatnonzero(~read_computed(out).ravel())
    if resume and len(todo):  # a session that computes points is recorded; one that finds nothing to do is not
        append_run(out, run_record(options, device))
    total = int(np.prod(spec.grid.shape))
    return Job(spec, model, center, directions, datasets, bn_set, todo, total)


def load_images(spec: SurfaceSpec, indices: dict[str, np.ndarray]) -> tuple[dict[str, ImageSet], ImageSet | None]:
    """The evaluated images of each split and, for `--bn recompute`, the BN images; `indices` as stored, if any."""
    datasets = {split: load_split(spec.data, split, indices.get(split)) for split in spec.data.splits}
    bn_set = None
    if spec.evaluation.bn == "recompute":  # a fixed draw of training images, apart from the evaluated subset
        bn_data = dataclasses.replace(spec.data, subset=spec.evaluation.bn_images, seed=spec.data.seed + 1)
        bn_set = load_split(bn_data, "train", indices.get("bn"))
    return datasets, bn_set


def _check_layout(surface: Surface, spec: SurfaceSpec) -> None:
    """A file resumed must hold the arrays of this grid and these splits, or points would land in wrong places."""
    coordinates = [spec.grid.x.coordinates()] + ([spec.grid.y.coordinates()] if spec.grid.y else [])
    stored = [surface.xcoordinates] + ([surface.ycoordinates] if surface.ycoordinates is not None else [])
    if len(stored) != len(coordinates) or any(
        a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(stored, coordinates)
    ):
        raise LandscapeError(f"{surface.path} is damaged: its coordinates are not those of its spec's grid")
    missing = [n for n in metric_names(spec.data.splits) if n not in surface.values]
    if missing:
        raise LandscapeError(f"{surface.path} is damaged: it lacks {', '.join(missing)}")
