"""Compute a loss surface: resolve the spec, create or resume the HDF5 file, evaluate the missing points.

`compute_surface(SurfaceSpec(...), "out.h5")` is the Python API behind `landscape compute`, and
`compute_convexity("out.h5", CurvatureMapSpec(...))` the one behind `landscape convexity`: the convexity map, a second
kind of per-point work on the same file (`Work`), run by the same point loop (`run_work`) and, on many ranks, by
`landscape.distributed.run_distributed`.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from . import __version__
from .batchnorm import RECOMPUTE_MODE, random_in_training
from .checkpoints import (
    Checkpoint,
    build_model,
    check_dataset,
    check_same_model,
    file_sha256,
    input_normalization,
    load_checkpoint,
)
from .curvature import CurvatureEvaluator, eigenvector_file_sha256, hessian_direction
from .data import ImageSet, check_labels_fit, fingerprint, load_split, resolve_root
from .directions import (
    Direction,
    DirectionSpec,
    center_of,
    cosine,
    direction_names,
    normalize_direction,
    random_direction,
    target_direction,
)
from .errors import LandscapeError
from .evaluate import PointEvaluator, RunOptions, check_options
from .files import check_not_input
from .spec import (  # noqa: F401 (CheckpointSpec re-exported)
    CheckpointSpec,
    CurvatureMapSpec,
    SurfaceSpec,
    as_stored,
    comparable_fields,
    spec_differences,
    without_unused_settings,
)
from .storage import (
    CURVATURE_MASK,
    Surface,
    add_curvature,
    append_run,
    create_surface_file,
    is_surface_file,
    metric_names,
    read_computed,
    read_directions,
    read_fingerprints,
    read_indices,
    read_runs,
    read_spec,
    read_surface,
    write_points,
    writer_lock,
)
from .trajectory import CHECKPOINT_SUFFIXES, resolve_trajectory, trajectory_plane


def resolve_spec(spec: SurfaceSpec, checkpoint: Checkpoint) -> SurfaceSpec:
    """Fill in what the checkpoint knows: sha256, arch, classes, normalization; and the target's sha256."""
    meta = checkpoint.metadata
    check_dataset(checkpoint, spec.data.name)
    mean, std = input_normalization(checkpoint, spec.checkpoint.mean, spec.checkpoint.std, spec.data.name)
    ckpt = dataclasses.replace(
        spec.checkpoint,
        sha256=checkpoint.sha256,
        arch=spec.checkpoint.arch or meta.get("arch"),
        num_classes=spec.checkpoint.num_classes or meta.get("num_classes"),
        mean=mean,
        std=std,
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
        resolved = dataclasses.replace(resolved, trajectory=resolve_trajectory(spec.trajectory, checkpoint))
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
        "bn_recompute": RECOMPUTE_MODE,
    }


def build_direction(
    spec: DirectionSpec, model: torch.nn.Module, center: Direction, recorded: dict[str, Any] | None = None
) -> Direction:
    """The direction `spec` describes, around `center`. `recorded`: the model's settings (arch, num_classes,
    dataset), which a target checkpoint's metadata must not contradict."""
    if spec.kind == "random":
        return normalize_direction(random_direction(center, spec.seed), center, spec.norm, spec.ignore)
    if spec.kind == "target":
        assert spec.target is not None  # DirectionSpec.validate
        target = load_checkpoint(spec.target)
        check_same_model(target, model.state_dict(), recorded or {})
        return target_direction(center, target.state_dict)
    assert spec.source is not None  # DirectionSpec.validate
    if spec.kind == "hessian":
        assert spec.index is not None  # DirectionSpec.validate
        return hessian_direction(spec.source, spec.index, center)
    return read_directions(spec.source, spec.source_axis, like=center)


def check_distinct_directions(directions: dict[str, Direction]) -> None:
    """Refuse x and y along one line (|cos| > 0.999: the surface would be a curve g(α ± β), e.g. a direction file's y
    drawn with the seed given to x); say so where a direction is zero (a target equal to θ*: the surface is flat
    along it)."""
    for axis, direction in directions.items():
        if not any(bool(t.any()) for t in direction.values()):
            notice(f"note: the {axis} direction is zero (a target equal to θ*?): the surface is constant along {axis}")
    if len(directions) == 2:
        cos = cosine(directions["x"], directions["y"])
        if abs(cos) > 0.999:
            raise LandscapeError(
                f"the x and y directions are parallel (cosine {cos:.6f}): the surface would be a curve; take another "
                "--seed, direction file or target"
            )


Progress = Callable[[int, int], None]


class Evaluator(Protocol):
    """What a job evaluates at grid points: `PointEvaluator` (loss, accuracy) or `CurvatureEvaluator` (λmin, λmax);
    one float64 array (K,) per array of the file, for K rows of coefficients."""

    def evaluate(self, coefficients: np.ndarray) -> dict[str, np.ndarray]: ...


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
    total: int  # points of the grid (of the convexity map: its selected points)
    curvature: CurvatureMapSpec | None = None  # None: loss and accuracy; else the convexity map's λmin and λmax

    @property
    def coefficients(self) -> np.ndarray:
        """(points, axes) coefficients of every grid point, by flat index."""
        return self.spec.grid.coefficients()

    @property
    def mask(self) -> str:
        """The file's mask of the points this work finishes (`write_points`)."""
        return "computed" if self.curvature is None else CURVATURE_MASK

    def evaluator(self, options: RunOptions) -> Evaluator:
        assert self.spec.checkpoint.mean is not None and self.spec.checkpoint.std is not None  # resolve_spec
        if self.curvature is not None:
            (images,) = self.datasets.values()
            assert options.batch_size is not None  # resolved
            return CurvatureEvaluator(
                self.model,
                self.center,
                [self.directions[axis] for axis in sorted(self.directions)],
                images,
                self.spec.checkpoint.mean,
                self.spec.checkpoint.std,
                steps=self.curvature.steps,
                tol=self.curvature.tol,
                seed=self.curvature.seed,
                batch_size=options.batch_size,
                device=options.resolved_device(),
                keep_graph=options.keep_graph,
            )
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
    """Validate `spec`, load its checkpoint and build the model; returns the resolved spec (absolute paths of the
    checkpoint and the data root: what a later `landscape convexity` run from another folder opens)."""
    spec.validate()
    checkpoint = load_checkpoint(spec.checkpoint.path)
    spec = resolve_spec(spec, checkpoint)
    root = str(resolve_root(spec.data.root).resolve())  # recorded as an absolute path
    path = str(Path(spec.checkpoint.path).resolve())
    spec = dataclasses.replace(
        spec, checkpoint=dataclasses.replace(spec.checkpoint, path=path), data=dataclasses.replace(spec.data, root=root)
    )
    return spec, build_model(checkpoint, spec.checkpoint.arch, spec.checkpoint.num_classes)


@dataclass(frozen=True)
class Work:
    """One kind of per-point work on a surface file, in the form both execution paths run (one process:
    `run_work`; the ranks of a torch.distributed job: `landscape.distributed.run_distributed`): the loss and
    accuracy of `landscape compute` (`surface_work`) or the convexity map of `landscape convexity`
    (`convexity_work`). Both are a `Job`: pending grid points, an evaluator, and the file's mask they fill.

    load: the spec and the model, before the file's writer lock is taken (in one process or rank 0);
    prepare: create or resume the file, holding the lock, and list the pending points;
    rank_model: the spec and model of every other rank, given rank 0's plan (and checked against it);
    description: JSON from which `work_from_description` rebuilds this work (for the ranks of `--workers`).
    """

    out: Path
    load: Callable[[], tuple[SurfaceSpec, torch.nn.Module]]
    prepare: Callable[[SurfaceSpec, torch.nn.Module, RunOptions], Job]
    rank_model: Callable[[dict[str, Any]], tuple[SurfaceSpec, torch.nn.Module]]
    description: dict[str, Any]


def written_path(out: str | Path) -> Path:
    """The file a run writes: a symbolic link's target, so that the writer lock is the one every spelling of the
    file takes and the link is not replaced by the new file (it was: the target then kept the old results)."""
    out = Path(out)
    return out.resolve() if out.is_symlink() else out


def surface_work(spec: SurfaceSpec, out: str | Path, *, overwrite: bool = False) -> Work:
    """The loss surface of `spec` into `out` (created, or resumed when it holds the same spec)."""
    spec.validate()
    out = written_path(out)

    def load() -> tuple[SurfaceSpec, torch.nn.Module]:
        check_out_folder(out)
        check_not_input(out, spec.input_files())  # --overwrite would replace the checkpoint with a surface
        _check_not_in_trajectory(out, spec)
        return load_model(spec)

    def prepare(resolved: SurfaceSpec, model: torch.nn.Module, options: RunOptions) -> Job:
        return prepare_job(resolved, model, out, options, overwrite)

    def rank_model(plan: dict[str, Any]) -> tuple[SurfaceSpec, torch.nn.Module]:
        own_spec, model = load_model(spec)
        own = as_stored(own_spec)
        differences = spec_differences(comparable_fields(own), comparable_fields(plan["spec"]))
        if differences:
            raise LandscapeError(f"this rank was given another surface than rank 0: {'; '.join(differences[:3])}")
        return own_spec, model

    description = {"kind": "surface", "spec": spec.to_dict(), "out": str(out), "overwrite": overwrite}
    return Work(out, load, prepare, rank_model, description)


def _check_not_in_trajectory(out: Path, spec: SurfaceSpec) -> None:
    """A trajectory folder's checkpoints are inputs too: `--out` must neither replace one (with --overwrite) nor
    join them (the next run would read the surface as a snapshot, and its trajectory would no longer be this one)."""
    if spec.trajectory is None or len(spec.trajectory.paths) != 1 or not Path(spec.trajectory.paths[0]).is_dir():
        return
    folder = Path(spec.trajectory.paths[0])
    if out.suffix in CHECKPOINT_SUFFIXES and out.resolve().parent == folder.resolve():
        raise LandscapeError(
            f"{out} would be one of the checkpoints of the trajectory folder {folder}: write the surface elsewhere"
        )


def convexity_work(
    surface: str | Path,
    curvature: CurvatureMapSpec,
    *,
    checkpoint: str | Path | None = None,
    data_root: str | Path | None = None,
    arch: str | None = None,
    overwrite: bool = False,
) -> Work:
    """The convexity map of the surface file `surface`, added to it (or resumed when it holds one of the same
    settings; `overwrite`: a map it holds is discarded and computed again with these settings). The model, data and
    directions are the surface's own: its recorded checkpoint (or `checkpoint`, which must be the same file by
    sha256), its images (under `data_root`, else the recorded root), its directions; `arch` only for an
    architecture that names code (`surface_model`)."""
    out = written_path(surface)
    curvature.validate()

    loaded: list[dict[str, Any]] = []  # the spec the model was built for, read before the writer lock

    def load() -> tuple[SurfaceSpec, torch.nn.Module]:
        loaded[:] = [read_spec(out)]
        spec = SurfaceSpec.from_dict(without_unused_settings(loaded[0]))
        try:  # a recorded image size is range-checked as a given one is, before anything is decoded
            spec.data.validate()
        except LandscapeError as e:
            raise LandscapeError(f"{out} records data settings that are refused: {e}") from None
        return surface_model(spec, checkpoint, data_root, arch)

    def prepare(spec: SurfaceSpec, model: torch.nn.Module, options: RunOptions) -> Job:
        if loaded and read_spec(out) != loaded[0]:  # a `compute --overwrite` replaced it meanwhile: another model
            raise LandscapeError(f"{out} was replaced by another surface while this run started: run it again")
        return prepare_curvature_job(spec, model, out, curvature, options, overwrite)

    def rank_model(plan: dict[str, Any]) -> tuple[SurfaceSpec, torch.nn.Module]:
        if plan["curvature"] != as_stored(curvature):
            raise LandscapeError("this rank was given other convexity-map settings than rank 0")
        return surface_model(SurfaceSpec.from_dict(plan["spec"]), checkpoint, data_root, arch)

    description = {
        "kind": "convexity",
        "out": str(out),
        "curvature": curvature.to_dict(),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "data_root": None if data_root is None else str(data_root),
        "arch": arch,
        "overwrite": overwrite,
    }
    return Work(out, load, prepare, rank_model, description)


def work_from_description(description: dict[str, Any]) -> Work:
    """The work of a `Work.description` (read back from the job file of `--workers`)."""
    if description["kind"] == "convexity":
        return convexity_work(
            description["out"],
            CurvatureMapSpec.from_dict(description["curvature"]),
            checkpoint=description["checkpoint"],
            data_root=description["data_root"],
            arch=description["arch"],
            overwrite=bool(description.get("overwrite")),
        )
    return surface_work(
        SurfaceSpec.from_dict(description["spec"]), description["out"], overwrite=bool(description["overwrite"])
    )


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
    return run_work(surface_work(spec, out, overwrite=overwrite), options, progress)


def compute_convexity(
    surface: str | Path,
    curvature: CurvatureMapSpec = CurvatureMapSpec(),
    options: RunOptions = RunOptions(),
    *,
    checkpoint: str | Path | None = None,
    data_root: str | Path | None = None,
    arch: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Surface:
    """Compute the convexity map of the surface file `surface` into it (`convexity_work`), resuming a map of the
    same settings (`overwrite`: replacing the map it holds); returns the surface read back, its map in
    `.curvature`. Point by point, like the loss: `progress(done, total)` counts the map's points."""
    work = convexity_work(
        surface, curvature, checkpoint=checkpoint, data_root=data_root, arch=arch, overwrite=overwrite
    )
    return run_work(work, options, progress)


def run_work(work: Work, options: RunOptions, progress: Progress | None = None) -> Surface:
    """`work` in this process: load, take the writer lock, prepare, evaluate the pending points; the surface."""
    options.validate()
    options = options.resolved()
    spec, model = work.load()
    with writer_lock(work.out):
        job = work.prepare(spec, model, options)
        done = job.total - len(job.todo)
        if progress:
            progress(done, job.total)
        if len(job.todo):
            evaluator, coefficients = job.evaluator(options), job.coefficients  # the grid, built once
            for chunk in chunks(job.todo, options.points_per_pass):
                write_points(work.out, chunk, evaluator.evaluate(coefficients[chunk]), mask=job.mask)
                done += len(chunk)
                if progress:
                    progress(done, job.total)
        return read_surface(work.out)


def chunks(todo: np.ndarray, size: int) -> list[np.ndarray]:
    """The pending points in the groups that are evaluated together (one vmapped pass each)."""
    return [todo[start : start + size] for start in range(0, len(todo), size)]


def check_out_folder(out: Path) -> None:
    """Refuse an --out whose folder does not exist or that is a folder itself (before --overwrite says it replaces
    it)."""
    if not out.parent.is_dir():
        raise LandscapeError(f"cannot write {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise LandscapeError(f"cannot write {out}: it is a folder")


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
    check_options(spec.evaluation, options)  # before --overwrite replaces a file
    device = torch.device(options.device)
    spec_dict = as_stored(spec)
    resume = out.exists() and not overwrite
    if resume:
        if not is_surface_file(out):
            raise LandscapeError(
                f"{out} exists and is not a landscape surface file: "
                "pass --overwrite to replace it, or choose another --out"
            )
        # read back as settings and written out again, so that a field added since the file was written (with its
        # default, which is what that file was computed with) is no difference
        stored = as_stored(SurfaceSpec.from_dict(read_spec(out)))
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
    recorded: dict[str, str] = {}
    if resume:
        directions = {axis: read_directions(out, axis, like=center) for axis in axes}
        indices, recorded = read_indices(out), read_fingerprints(out)
    elif spec.trajectory is not None:  # PCA directions: both at once, and the path on their plane
        plane = trajectory_plane(spec.trajectory, center, model.state_dict().keys(), spec.x.ignore)
        directions, trajectory = {"x": plane.x, "y": plane.y}, plane.path.datasets()
        indices = {}
    else:
        # not the normalization: --mean/--std may replace the checkpoint's, and the target's weights are the point
        recorded_model = {
            "arch": spec.checkpoint.arch,
            "num_classes": spec.checkpoint.num_classes,
            "dataset": spec.data.name,
        }
        directions = {axis: build_direction(getattr(spec, axis), model, center, recorded_model) for axis in axes}
        check_distinct_directions(directions)
        for axis in axes:
            direction = getattr(spec, axis)
            if direction.kind == "file":
                around = read_spec(direction.source).get("checkpoint", {}).get("sha256")
                if around != spec.checkpoint.sha256:
                    notice(
                        f"note: the {axis} direction of {direction.source} was made around another checkpoint "
                        f"(sha256 {str(around)[:12]}..., this one {str(spec.checkpoint.sha256)[:12]}...): it is scaled "
                        "to that one's filters"
                    )
        indices = {}
    datasets, bn_set = load_images(spec, indices)
    check_labels_fit(model, datasets)  # before a file is made
    fingerprints = image_fingerprints(datasets, bn_set)
    if resume:
        check_images(out, fingerprints, recorded)
        if bn_set is not None and "bn" not in recorded:
            raise LandscapeError(  # the same change gave files their fingerprints: a recompute file without is older
                f"{out} was computed with an earlier --bn recompute (every batch weighing alike in the "
                "statistics, now every image does): its points and new ones would not agree. Pass --overwrite to "
                "recompute it"
            )
        stochastic = random_in_training(model) if bn_set is not None else []
        first = read_runs(out)[0][:1] if stochastic else []  # the session that created the file
        if first and first[0].get("bn_recompute") != RECOMPUTE_MODE:
            raise LandscapeError(
                f"{out} was computed with an earlier --bn recompute, which left {stochastic[0]} (dropout or "
                "stochastic depth) on while it re-estimated the statistics: its points are random and would not "
                "agree with new ones. Pass --overwrite to recompute it"
            )
    else:
        stored_indices = {split: s.indices for split, s in datasets.items()}
        if bn_set is not None:
            stored_indices["bn"] = bn_set.indices
        if out.exists():  # --overwrite: replaced only once the new file is complete (create_surface_file)
            notice(overwrite_note(out))
        for split, images in datasets.items():
            if spec.data.subset and len(images) < spec.data.subset:
                notice(f"--subset {spec.data.subset}: the {split} split has {len(images)} images, all are evaluated")
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
            fingerprints,
        )
    todo = np.flatnonzero(~read_computed(out).ravel())
    if resume and len(todo):  # a session that computes points is recorded; one that finds nothing to do is not
        unchecked = [name for name in fingerprints if name not in recorded]
        if unchecked:
            notice(unchecked_note(out, unchecked))
        append_run(out, run_record(options, device))
    total = int(np.prod(spec.grid.shape))
    return Job(spec, model, center, directions, datasets, bn_set, todo, total)


def load_images(spec: SurfaceSpec, indices: dict[str, np.ndarray]) -> tuple[dict[str, ImageSet], ImageSet | None]:
    """The evaluated images of each split and, for `--bn recompute`, the BN images; `indices` as stored, if any."""
    datasets = {split: load_split(spec.data, split, indices.get(split)) for split in spec.data.splits}
    bn_set = None
    if spec.evaluation.bn == "recompute":
        # a fixed draw of training images of its own seed, independent of the evaluated subset (it may overlap it) and
        # the same for every --data-part, so that the surfaces of the parts differ only in the evaluated images
        # (files of landscape before that drew it as part `part`: their stored indices are what they use)
        bn_data = dataclasses.replace(spec.data, subset=spec.evaluation.bn_images, seed=spec.data.seed + 1, part=0)
        bn_set = load_split(bn_data, "train", indices.get("bn"))
    return datasets, bn_set


def image_fingerprints(datasets: dict[str, ImageSet], bn_set: ImageSet | None = None) -> dict[str, str]:
    """`landscape.data.fingerprint` of each image set, by its name in the file's `indices` group (split, `bn`)."""
    sets = {**datasets, **({"bn": bn_set} if bn_set is not None else {})}
    return {name: fingerprint(images) for name, images in sets.items()}


def different_images(here: dict[str, str], there: dict[str, str]) -> tuple[str, str, str] | None:
    """The first image set whose fingerprint here differs from the one there, as (its words, here, there); sets
    without a fingerprint there are not compared."""
    for name, value in here.items():
        if name in there and there[name] != value:
            words = "BatchNorm images (--bn recompute)" if name == "bn" else f"{name} images"
            return words, value, there[name]
    return None


def check_images(
    out: Path, here: dict[str, str], recorded: dict[str, str], advice: str = ", or pass --overwrite"
) -> None:
    """Refuse to add points computed on other images than the file's (a copy of the data that differs)."""
    different = different_images(here, recorded)
    if different is not None:
        words, value, stored = different
        raise LandscapeError(
            f"{out}: the {words} here differ from the ones this surface was computed on (sha256 {value[:12]}... "
            f"here, {stored[:12]}... in the file): point --data-root at the same data{advice}"
        )


def unchecked_note(out: Path, names: list[str]) -> str:
    return (
        f"warning: {out} predates data fingerprints: cannot check that its images ({', '.join(names)}) here are "
        "the ones it was computed on"
    )


def overwrite_note(out: Path) -> str:
    """What --overwrite is about to replace."""
    if not is_surface_file(out):
        return f"--overwrite: replacing {out} (not a surface file)"
    try:
        computed = read_computed(out)
    except LandscapeError:
        return f"--overwrite: replacing {out} (a damaged surface file)"
    return f"--overwrite: replacing {out} ({int(computed.sum())} of {computed.size} points were computed)"


def notice(line: str) -> None:
    """One line on stderr about something the user should know that does not stop the run."""
    print(line, file=sys.stderr, flush=True)


def surface_model(
    spec: SurfaceSpec, checkpoint: str | Path | None, data_root: str | Path | None, arch: str | None = None
) -> tuple[SurfaceSpec, torch.nn.Module]:
    """The model of a stored surface spec, from its recorded checkpoint or `checkpoint` (the same file: its sha256
    is the recorded one), and the spec with these paths and the data root (`data_root`, else the recorded one,
    else $LANDSCAPE_DATA_ROOT when the recorded folder is not here). Nothing else the spec names is opened: the
    directions are in the file. The file is untrusted: a recorded arch that names code to import
    (`module:callable`) is refused unless the user's own `arch` names it."""
    recorded = spec.checkpoint.arch or ""
    if arch is None and ":" in recorded and not recorded.startswith("torchvision:"):
        raise LandscapeError(
            f"the surface records arch {recorded[:80]!r}, which names code to import: only your own --arch may do "
            "that (pass --arch with it if you trust the file)"
        )
    if arch is not None:
        spec = dataclasses.replace(spec, checkpoint=dataclasses.replace(spec.checkpoint, arch=arch))
    path = str(checkpoint) if checkpoint is not None else spec.checkpoint.path
    if checkpoint is None and not Path(path).is_file():
        raise LandscapeError(f"the surface's checkpoint is not at its recorded path {path}: pass it with --ckpt")
    digest = file_sha256(path)  # before anything is parsed: the recorded path comes from an untrusted file
    if digest != spec.checkpoint.sha256:
        raise LandscapeError(
            f"{path} is not the checkpoint of this surface (sha256 {digest[:12]}..., the surface records "
            f"{str(spec.checkpoint.sha256)[:12]}...): pass the right one with --ckpt"
        )
    loaded = load_checkpoint(path)
    if loaded.sha256 != digest:
        raise LandscapeError(f"{path} changed while it was read: run again")
    if data_root is not None:
        root = resolve_root(data_root)
    elif Path(spec.data.root).is_dir():
        root = Path(spec.data.root)
    else:
        root = resolve_root(None)  # $LANDSCAPE_DATA_ROOT, or a clear error
    spec = dataclasses.replace(
        spec,
        checkpoint=dataclasses.replace(spec.checkpoint, path=path),
        data=dataclasses.replace(spec.data, root=str(root.resolve())),
    )
    return spec, build_model(loaded, spec.checkpoint.arch, spec.checkpoint.num_classes)


def prepare_curvature_job(
    spec: SurfaceSpec,
    model: torch.nn.Module,
    out: Path,
    curvature: CurvatureMapSpec,
    options: RunOptions,
    overwrite: bool = False,
) -> Job:
    """Give the surface file `out` its convexity map (or check that the one it holds has these settings; with
    `overwrite`, replace it), load the Hessian's images and list the map's points still to compute. Call it holding
    `writer_lock(out)`."""
    surface = read_surface(out)  # everything checked, the map included
    _check_layout(surface, spec)
    if spec.evaluation.bn != "eval":
        raise LandscapeError(
            f"{out} was computed with --bn {spec.evaluation.bn}: a convexity map takes the Hessian with the stored "
            "BatchNorm statistics (eval mode), which this surface's loss does not use"
        )
    if curvature.split not in spec.data.splits:
        raise LandscapeError(f"{out} holds no {curvature.split} images (its split is {spec.data.split})")
    names = direction_names(model, spec.x.dir_type)
    center = center_of(model, names)
    directions = {axis: read_directions(out, axis, like=center) for axis in (["x"] if spec.y is None else ["x", "y"])}
    device = torch.device(options.device)
    record = {**run_record(options, device), "work": "convexity map"}
    resume = surface.curvature is not None and not overwrite
    stored = read_indices(out)
    if curvature.split not in stored:
        raise LandscapeError(f"{out} is damaged: it lacks the indices of its {curvature.split} images")
    recorded = read_fingerprints(out)
    if curvature.split in recorded:  # the map on the surface's images, not on another copy's
        evaluated = load_split(spec.data, curvature.split, stored[curvature.split])
        check_images(out, {curvature.split: fingerprint(evaluated)}, recorded, advice="")
    if resume:
        assert surface.curvature is not None
        differences = spec_differences(curvature.to_dict(), surface.curvature.spec)
        if differences:
            raise LandscapeError(
                f"{out} holds a convexity map of other settings: {'; '.join(differences[:4])}. Resume it with "
                "its settings, or pass --overwrite to replace it"
            )
        indices = surface.curvature.indices
    else:
        if surface.curvature is not None:
            done = int(surface.curvature.computed.sum())
            notice(f"--overwrite: replacing the convexity map of {out} ({done} of its points were computed)")
        indices = hessian_indices(stored[curvature.split], curvature)
        add_curvature(out, as_stored(curvature), indices, record, replace=surface.curvature is not None)
    datasets, _ = job_images(spec, curvature, {curvature.split: indices})
    selected = curvature.selected(spec.grid.shape).ravel()
    todo = np.flatnonzero(selected & ~read_computed(out, CURVATURE_MASK).ravel())
    if curvature.split not in recorded and len(todo):
        notice(unchecked_note(out, [curvature.split]))
    if resume and len(todo):
        append_run(out, record)
    return Job(spec, model, center, directions, datasets, None, todo, int(selected.sum()), curvature=curvature)


def hessian_indices(indices: np.ndarray, curvature: CurvatureMapSpec) -> np.ndarray:
    """The Hessian's images: `curvature.images` of the surface's `indices` drawn with its seed (sorted), or all."""
    if curvature.images > len(indices):
        raise LandscapeError(f"--images {curvature.images}: the surface evaluated {len(indices)} images")
    if curvature.images in (0, len(indices)):
        return np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng(curvature.seed)
    return np.sort(rng.choice(np.asarray(indices, dtype=np.int64), size=curvature.images, replace=False))


def job_images(
    spec: SurfaceSpec, curvature: CurvatureMapSpec | None, indices: dict[str, np.ndarray]
) -> tuple[dict[str, ImageSet], ImageSet | None]:
    """The images a job evaluates, by the indices rank 0 found (`load_images`; the convexity map: its own)."""
    if curvature is None:
        return load_images(spec, indices)
    return {curvature.split: load_split(spec.data, curvature.split, indices[curvature.split])}, None


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
