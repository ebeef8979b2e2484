"""Directions from a training trajectory (Li et al. 2018, §7): the PCA of {θ_i − θ*}, and the path on its plane.

The snapshots θ_i of a training run (a `snapshots.h5` of `landscape train`, a folder of checkpoints, or checkpoint
files) and the final model θ* (`--ckpt`) give the differences θ_i − θ*. Their two top principal components, unit
vectors and not filter-normalized (as in the paper), become the x and y directions of a surface. Each snapshot's
coordinates on that plane are found by least squares against the directions as stored (float32), with the
residual: how far the snapshot lies off the plane (zero when the plane holds the path). The surface file keeps
them in its `trajectory` group (docs/trajectory.md, docs/file-format.md).

Snapshot files are untrusted input: checkpoints are read with `torch.load(..., weights_only=True)`; in a snapshots
file every dataset is checked before it is read (a plain dataset of the file, floating point, the model's shape),
and no group or dataset may serve two snapshots (hard links); tensors are matched by name, and a snapshot naming
tensors the model does not have is refused. The differences must fit in half of the machine's memory.

The trajectory must be θ*'s own: a snapshots file whose recorded recipe is not the one θ*'s checkpoint records is
refused (`check_same_run`), and so is any trajectory whose nearest snapshot to θ* is farther from it than
`NEAREST_SHARE` of its farthest one (it does not lead to θ*).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .checkpoints import Checkpoint, build_model, file_sha256, load_checkpoint
from .directions import Direction, center_of, direction_names
from .errors import LandscapeError
from .grid import Axis, GridSpec
from .spec import SurfaceSpec, TrajectorySpec, as_stored
from .storage import MAX_SNAPSHOTS, Surface, TrajectoryPath, _attribute, _dataset, _group, _open, _read_trajectory

SNAPSHOTS_FORMAT = "landscape-trajectory"  # the `format` attribute of `landscape train`'s snapshots.h5
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
_EPOCH_GROUP = re.compile(r"epoch_(\d{1,9})")
# A trajectory whose snapshot nearest to θ* is farther from it than this share of the farthest one does not lead to
# θ* (another run's snapshots, or a θ* trained on after them) and is refused.
NEAREST_SHARE = 0.5


@dataclass(frozen=True)
class Components:
    """The top principal components of a set of vectors: orthonormal rows, their singular values and the share of
    the total variance each explains."""

    vectors: np.ndarray
    singular_values: np.ndarray
    explained_variance_ratio: np.ndarray


@dataclass(frozen=True)
class TrajectoryPlane:
    """PCA directions of a trajectory (float32 tensors keyed by name), the path on them, the trajectory's sha256."""

    x: Direction
    y: Direction
    path: TrajectoryPath
    sha256: str


def trajectory_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files of a trajectory, in order: one snapshots file (HDF5), the checkpoints of one folder (`*.pt`, `*.pth`,
    `*.safetensors`, in the natural order of their names: `epoch_2` before `epoch_10`; names without a number last),
    or checkpoint files as given."""
    given = [Path(p) for p in paths]
    if not given:
        raise LandscapeError("a trajectory needs a snapshots file, a folder or checkpoint files")
    if len(given) == 1 and given[0].is_dir():
        found = [p for p in given[0].iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and p.name[0] != "."]
        numbers = dict(zip(found, _file_numbers(found)))
        # names without a number of their own (θ* as `final.pt`, or `resnet20.pt` beside `resnet20_epoch5.pt`) last
        files = sorted(found, key=lambda p: (numbers[p] is None, _natural(p.name)))
        if not files:
            raise LandscapeError(f"trajectory folder {given[0]} holds no checkpoints (*.pt, *.pth, *.safetensors)")
        return files
    for p in given:
        if not p.is_file():
            raise LandscapeError(f"trajectory file not found: {p}")
    if len(given) > 1 and any(h5py.is_hdf5(p) for p in given):
        raise LandscapeError("a snapshots file holds a whole trajectory: pass it alone to --trajectory")
    return given


def trajectory_sha256(digests: Sequence[str]) -> str:
    """What identifies a trajectory: its file's sha256 when it has one file, else the sha256 of its files' sha256s,
    one per line, in order."""
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(f"{d}\n" for d in digests).encode()).hexdigest()


def resolve_trajectory(spec: TrajectorySpec, checkpoint: Checkpoint | None = None) -> TrajectorySpec:
    """The spec with the trajectory's sha256 filled in; given θ*'s `checkpoint`, a snapshots file of another run is
    refused first (`check_same_run`)."""
    files = trajectory_files(spec.paths)
    if checkpoint is not None:
        check_same_run(files, checkpoint)
    return dataclasses.replace(spec, sha256=trajectory_sha256([file_sha256(f) for f in files]))


def load_differences(
    files: Sequence[Path], center: Direction, known: Collection[str], ignore: str = "biasbn"
) -> tuple[np.ndarray, np.ndarray, str]:
    """θ_i − θ* of every snapshot as the rows of an (n, D) float64 array, flattened in the order of `center` (θ*),
    with the epochs (n,) and the trajectory's sha256.

    Snapshots must hold every tensor of `center`, by name and shape, and nothing outside `known` (the model's
    state_dict names). `ignore="biasbn"` zeroes the tensors of dim <= 1 (biases, BN), as the paper's `--ignore biasbn`.
    """
    count, snapshots, digests = _snapshots(files, center, known)
    if count > MAX_SNAPSHOTS:
        raise LandscapeError(f"the trajectory has {count} snapshots, more than the {MAX_SNAPSHOTS} allowed")
    values = sum(t.numel() for t in center.values())
    budget = memory_budget()
    if count * values * 8 > budget:
        raise LandscapeError(
            f"{_describe(files)}: {count} snapshots of {values} values take {_size(count * values * 8)} in float64, "
            f"more than half of this machine's memory ({_size(budget)}): take fewer snapshots"
        )
    layout = _layout(center)
    theta = np.concatenate([center[n].detach().cpu().double().numpy().reshape(-1) for n in center])
    differences = np.empty((count, values))
    epochs = np.empty(count, dtype=np.int64)
    for row, (epoch, tensors) in enumerate(snapshots):
        epochs[row] = epoch
        for name, where in layout:
            differences[row, where] = tensors[name].reshape(-1)
        differences[row] -= theta
    if ignore == "biasbn":
        for name, where in layout:
            if center[name].dim() <= 1:
                differences[:, where] = 0.0
    return differences, epochs, trajectory_sha256(digests)


def principal_components(differences: np.ndarray, centered: bool = True, k: int = 2) -> Components:
    """The top `k` principal components of the rows of `differences` (n, D), unit vectors as rows of (k, D).

    `centered`: of the rows minus their mean (scikit-learn's PCA, as the paper's code), else of the rows as they
    are (the best plane through θ*). From the eigenvectors u of the n x n Gram matrix: component = Mᵀu / s. Signs:
    the largest entry of each u in absolute value is made positive (the convention of scikit-learn <= 1.4, the
    paper's code; 1.5 changed it), so the snapshot farthest from the mean (from θ* when not centered) along a
    component lies on its positive side.
    """
    n = len(differences)
    need = k + 1 if centered else k
    if n < need:
        raise LandscapeError(f"the trajectory has {n} snapshots: {k} principal components need at least {need}")
    mean = differences.mean(axis=0) if centered else None
    gram = np.zeros((n, n))
    for block in _column_blocks(differences, mean):  # centred block by block: no copy of all the rows
        gram += block @ block.T
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    values, vectors = values[::-1], vectors[:, ::-1]
    total = float(values.clip(min=0).sum())
    if not total > 0 or not values[k - 1] > 1e-12 * values[0]:
        raise LandscapeError(
            f"the trajectory does not span {k} dimensions (its {n} snapshots lie on a line or a point"
            f"{' around their mean' if centered else ' through θ*'}): there is no plane to take"
        )
    u = vectors[:, :k]
    if centered:
        u = u - u.mean(axis=0)  # orthogonal to the mean already; this makes it exact
    u = u * np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(k)])
    components = np.concatenate([u.T @ block for block in _column_blocks(differences, mean)], axis=1)
    components /= np.linalg.norm(components, axis=1, keepdims=True)
    return Components(components, np.sqrt(values[:k]), values[:k] / total)


def _column_blocks(rows: np.ndarray, mean: np.ndarray | None, width: int = 1 << 16) -> Iterator[np.ndarray]:
    """The columns of `rows` in blocks of `width`, less `mean` where given (centred before any product, so that a
    mean far larger than the spread costs no precision)."""
    for start in range(0, rows.shape[1], width):
        block = rows[:, start : start + width]
        yield block if mean is None else block - mean[start : start + width]


def project(differences: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coordinates (n, 2) of each row of `differences` on the plane spanned by the rows of
    `directions` (2, D), and the norm of what is left over (n,): zero when the plane holds the row."""
    gram = directions @ directions.T
    coordinates = np.linalg.solve(gram, directions @ differences.T).T
    residual = np.array([np.linalg.norm(d - c @ directions) for d, c in zip(differences, coordinates)])
    return coordinates, residual


def trajectory_plane(
    spec: TrajectorySpec,
    center: Direction,
    known: Collection[str],
    ignore: str = "biasbn",
    checkpoint: Checkpoint | None = None,
) -> TrajectoryPlane:
    """The PCA directions of the trajectory `spec` around θ* = `center` and the path on them (module docstring).

    `known`: the names of the model's state_dict. A `spec.sha256` that is not the files' is refused (they changed).
    `checkpoint`: θ*'s, whose recorded recipe a snapshots file's must be (`check_same_run`); a trajectory that does
    not lead to θ* is refused either way (`check_leads_to_center`).
    """
    files = trajectory_files(spec.paths)
    if checkpoint is not None:
        check_same_run(files, checkpoint)
    differences, epochs, sha256 = load_differences(files, center, known, ignore)
    if spec.sha256 is not None and sha256 != spec.sha256:
        raise LandscapeError(f"the trajectory's files changed while being read (sha256 {sha256[:12]}...)")
    distance = np.linalg.norm(differences, axis=1)
    check_leads_to_center(distance, epochs, _describe(files))
    components = principal_components(differences, spec.centered)
    x, y = (_unflatten(row, center) for row in components.vectors)
    stored = np.stack([_flatten(x), _flatten(y)])  # the float32 directions the surface is evaluated on
    coordinates, residual = project(differences, stored)
    path = TrajectoryPath(
        epochs=epochs,
        coordinates=coordinates,
        residual=residual,
        distance=distance,
        explained_variance_ratio=components.explained_variance_ratio,
    )
    return TrajectoryPlane(x, y, path, sha256)


def path_grid(coordinates: np.ndarray, x_num: int, y_num: int, margin: float = 0.2) -> GridSpec:
    """A grid that holds the path and θ* = (0, 0), widened on each side by `margin` times its extent along that
    axis; the spacing has two significant digits and θ* is a grid point (the centre that `landscape compare` reads)."""
    along = np.asarray(coordinates, dtype=np.float64).T
    return GridSpec(path_axis(along[0], x_num, margin), path_axis(along[1], y_num, margin))


def path_axis(values: np.ndarray, num: int, margin: float = 0.2) -> Axis:
    """One axis of `path_grid`: `num` points over the path's coordinates `values` along it."""
    if not 0 <= margin <= 10:
        raise LandscapeError(f"the trajectory margin must be in [0, 10], got {margin}")
    if num < 2:
        raise LandscapeError(f"a grid from the path needs at least 2 points per axis, got {num}")
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    extent = hi - lo
    if not (extent > 0 and math.isfinite(extent)):
        raise LandscapeError("the path has no extent along an axis: give the grid bounds as START:STOP:NUM")
    lo, hi = lo - margin * extent, hi + margin * extent
    if num < 3 and lo < 0 < hi:  # two points, one of them θ*, cannot reach both sides: the spacing grew forever
        raise LandscapeError(
            f"a grid from the path needs at least 3 points per axis here (θ* is a grid point, and the path and "
            f"its margin lie on both sides of it), got {num}"
        )
    exponent = math.floor(math.log10((hi - lo) / (num - 1))) - 1
    mantissa = math.ceil(round((hi - lo) / (num - 1) / 10.0**exponent, 6))  # spacing = mantissa 10^exponent
    while True:
        if mantissa >= 100:
            mantissa, exponent = mantissa // 10, exponent + 1
        spacing = mantissa * 10.0**exponent
        first = math.floor(round(lo / spacing, 6))  # θ* is grid point -first
        if (first + num - 1) * spacing >= hi - 1e-9 * spacing:
            break
        mantissa += 1
    digits = max(0, -exponent)
    axis = Axis(round(first * spacing, digits), round((first + num - 1) * spacing, digits), num)
    axis.validate()
    return axis


def trajectory_grid(spec: SurfaceSpec, x_num: int | None, y_num: int | None, margin: float = 0.2) -> GridSpec:
    """The default grid of a surface on the PCA directions of `spec.trajectory`: the path's extent plus a margin
    (`path_axis`), from the same directions `compute_surface` will store, for each axis given a count (`x_num`,
    `y_num`); an axis given None is `spec.grid`'s own."""
    if spec.trajectory is None:
        raise LandscapeError("the spec has no trajectory")
    checkpoint = load_checkpoint(spec.checkpoint.path)
    model = build_model(checkpoint, spec.checkpoint.arch, spec.checkpoint.num_classes)
    center = center_of(model, direction_names(model, spec.x.dir_type))
    plane = trajectory_plane(spec.trajectory, center, model.state_dict().keys(), spec.x.ignore, checkpoint)
    along = plane.path.coordinates.T
    x = spec.grid.x if x_num is None else path_axis(along[0], x_num, margin)
    assert spec.grid.y is not None  # PCA surfaces are 2D
    y = spec.grid.y if y_num is None else path_axis(along[1], y_num, margin)
    return GridSpec(x, y)


def check_same_run(files: Sequence[Path], checkpoint: Checkpoint) -> None:
    """Refuse a snapshots file of `landscape train` whose recorded recipe (its `spec` attribute) is not the recipe
    `checkpoint` records (its metadata's `recipe`): another run, or the run that a warm restart (`--init`) continued.

    Fields one run may change on resume (precision, the data's folder) are not compared; a field one record lacks
    (added since) counts as its default. Where either records no recipe (checkpoint files, other tools' files)
    nothing is compared here: `check_leads_to_center` still applies."""
    if len(files) != 1 or not h5py.is_hdf5(files[0]):
        return
    ours = _plain(checkpoint.metadata.get("recipe"))
    theirs = _recorded_recipe(files[0])
    if not isinstance(ours, dict) or theirs is None:
        return
    from .train import RESUMABLE_CHANGES, TrainSpec  # here: train imports the package, which imports this module

    defaults = as_stored(TrainSpec())
    may_change = (*RESUMABLE_CHANGES, "data.root")  # one run may resume with these changed (the data may move)
    differences = _recipe_differences(theirs, ours, defaults, may_change)
    if not differences:
        return
    init = _plain(checkpoint.metadata.get("init"))
    for _ in range(64):  # the chain of warm restarts θ*'s run continues
        if not isinstance(init, dict):
            break
        recipe = init.get("recipe")
        if isinstance(recipe, dict) and not _recipe_differences(theirs, recipe, defaults, may_change):
            sha256 = _printable(str(init.get("sha256"))[:12])
            raise LandscapeError(
                f"{files[0]} holds the snapshots of the run that {checkpoint.path} continues (--init, sha256 "
                f"{sha256}...): they lead to that run's checkpoint, not to θ*; pass that one as --ckpt"
            )
        init = init.get("init")
    shown = ", ".join(_printable(d[:60]) for d in differences[:4]) + (", ..." if len(differences) > 4 else "")
    raise LandscapeError(
        f"{files[0]} holds the snapshots of another run than {checkpoint.path}: their recorded recipes differ in "
        f"{shown}"
    )


def check_leads_to_center(distance: np.ndarray, epochs: np.ndarray, where: str) -> None:
    """Refuse a trajectory whose snapshot nearest to θ* is farther from it than `NEAREST_SHARE` of the farthest one
    (`distance`: each snapshot's ‖θ_i − θ*‖): it does not lead to θ*."""
    if not len(distance):
        return
    near, far = int(np.argmin(distance)), int(np.argmax(distance))
    if distance[near] > NEAREST_SHARE * distance[far]:
        raise LandscapeError(
            f"{where} does not lead to θ*: its nearest snapshot (epoch {epochs[near]}) is {distance[near]:.4g} from "
            f"it, {distance[near] / distance[far]:.0%} of its farthest's {distance[far]:.4g} (epoch {epochs[far]}): "
            "the snapshots of another run, or a θ* trained on after them?"
        )


def memory_budget() -> int:
    """Bytes the differences may take: half of this machine's memory (8 GB where it cannot be told)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):
        return 8 * 10**9


def read_trajectory(surface: Surface | str | Path) -> TrajectoryPath | None:
    """The path stored with a surface on PCA directions; None for a surface without a `trajectory` group."""
    if isinstance(surface, Surface):
        return surface.trajectory
    with _open(surface) as f:
        return _read_trajectory(f, surface)


def _snapshots(
    files: Sequence[Path], center: Direction, known: Collection[str]
) -> tuple[int, Iterator[tuple[int, dict[str, np.ndarray]]], list[str]]:
    """How many snapshots, an iterator over (epoch, tensors by name), and the files' sha256s (all read when the
    iterator is exhausted; a snapshots file's at once)."""
    if len(files) == 1 and h5py.is_hdf5(files[0]):
        groups = _snapshot_groups(files[0])
        return len(groups), _read_snapshots(files[0], groups, center, known), [file_sha256(files[0])]
    digests: list[str] = []
    epochs = _epoch_labels(files)

    def read() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for epoch, file in zip(epochs, files):
            checkpoint = load_checkpoint(file)
            digests.append(checkpoint.sha256)
            yield epoch, _checked(checkpoint.state_dict, center, known, str(file))

    return len(files), read(), digests


def _snapshot_groups(path: Path) -> list[tuple[int, str]]:
    """(epoch, group name) of the snapshots in a snapshots file of `landscape train`, by epoch; each group its own
    (hard links could make one group of a small file count as thousands of snapshots)."""
    with _open(path) as f:
        if "format" not in f.attrs or _attribute(f, "format", path) != SNAPSHOTS_FORMAT:
            raise LandscapeError(f"{path} is not a snapshots file of `landscape train` (format {SNAPSHOTS_FORMAT})")
        found = sorted((int(m.group(1)), name) for name in f if (m := _EPOCH_GROUP.fullmatch(name)))
        if not found:
            raise LandscapeError(f"{path} holds no snapshots (groups epoch_NNNN)")
        if len({epoch for epoch, _ in found}) != len(found):
            raise LandscapeError(f"{path} holds two snapshots of one epoch")
        if len(found) > MAX_SNAPSHOTS:
            raise LandscapeError(f"{path} holds {len(found)} snapshots, more than the {MAX_SNAPSHOTS} allowed")
        seen: dict[int, str] = {}
        for _, name in found:
            group = _group(f, name, path)
            assert group is not None  # listed just now
            first = seen.setdefault(_address(group), name)
            if first != name:
                raise LandscapeError(f"{path}: {name} is the group {first} (hard links): each snapshot must be its own")
    return found


def _read_snapshots(
    path: Path, epochs: list[tuple[int, str]], center: Direction, known: Collection[str]
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    seen: dict[int, str] = {}  # dataset address: where it was read
    with _open(path) as f:
        for epoch, name in epochs:
            group = _group(f, name, path)
            if group is None:
                raise LandscapeError(f"{path} lost its group {name} while being read")
            where = f"{path} ({name})"
            _check_names(set(group), center, known, where)
            tensors = {}
            for tensor_name, tensor in center.items():
                ds = _dataset(group, tensor_name, where, tensor.numel())
                first = seen.setdefault(_address(ds), f"{name}/{tensor_name}")
                if first != f"{name}/{tensor_name}":
                    raise LandscapeError(
                        f"{where}: {tensor_name} is the dataset {first} (hard links): each snapshot must hold its own"
                    )
                if ds.shape != tuple(tensor.shape) or ds.dtype.kind != "f":
                    raise LandscapeError(
                        f"{where}: {tensor_name} is {ds.dtype} {ds.shape}, the model's {tuple(tensor.shape)} floats"
                    )
                tensors[tensor_name] = _finite(np.asarray(ds[()], dtype=np.float64), tensor_name, where)
            yield epoch, tensors


def _address(node: h5py.HLObject) -> int:
    """Where an object lies in its file: the same for every hard link to it."""
    return int(h5py.h5o.get_info(node.id).addr)


def _recorded_recipe(path: Path) -> dict[str, Any] | None:
    """The training recipe a snapshots file of `landscape train` records (its `spec` attribute); None for another
    file or one without it."""
    with _open(path) as f:
        if "format" not in f.attrs or _attribute(f, "format", path) != SNAPSHOTS_FORMAT or "spec" not in f.attrs:
            return None
        text = _attribute(f, "spec", path)
    try:
        recipe = json.loads(text)
    except (ValueError, RecursionError):
        recipe = None
    if not isinstance(recipe, dict):
        raise LandscapeError(f"{path}: its spec attribute is not a training recipe (a JSON object)")
    return recipe


def _plain(value: Any) -> Any:
    """A metadata value as JSON has it (dicts, lists, strings, numbers), or None when it is not one."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        return None


def _recipe_differences(
    a: dict[str, Any], b: dict[str, Any], defaults: Any, skipped: Collection[str], prefix: str = ""
) -> list[str]:
    """Dotted names of the fields where two recorded recipes differ, but for `skipped`; a field one lacks counts as
    its default, one that only one records and this version does not know is left out."""
    out = []
    defaults = defaults if isinstance(defaults, dict) else {}
    for key in sorted(set(a) | set(b), key=str):
        name = f"{prefix}{key}"
        if name in skipped or (key not in defaults and (key not in a or key not in b)):
            continue
        va, vb = a.get(key, defaults.get(key)), b.get(key, defaults.get(key))
        if isinstance(va, dict) and isinstance(vb, dict) and isinstance(defaults.get(key), dict):  # a known section
            out += _recipe_differences(va, vb, defaults[key], skipped, f"{name}.")
        else:
            try:
                same = bool(va == vb)
            except RecursionError:  # values nested too deep to compare are no recipe's
                same = False
            if not same:
                out.append(name)
    return out


def _printable(text: str) -> str:
    """Text from a file as one line of a message: as it is when printable, else escaped."""
    return text if text.isprintable() else ascii(text)


def _size(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 10**8 else f"{size / 1e6:.1f} MB"


def _describe(files: Sequence[Path]) -> str:
    """The trajectory in a message: its file, or its first file and how many."""
    return str(files[0]) if len(files) == 1 else f"the trajectory {files[0]} ... ({len(files)} checkpoint files)"


def _checked(
    state: dict[str, torch.Tensor], center: Direction, known: Collection[str], where: str
) -> dict[str, np.ndarray]:
    """The tensors of `center`'s names from a loaded state_dict, checked by name, shape and type, in float64."""
    _check_names(set(state), center, known, where)
    out = {}
    for name, tensor in center.items():
        value = state[name]
        if tuple(value.shape) != tuple(tensor.shape) or not value.is_floating_point():
            raise LandscapeError(
                f"{where}: {name} is {value.dtype} {tuple(value.shape)}, the model's {tuple(tensor.shape)} floats"
            )
        out[name] = _finite(value.detach().cpu().double().numpy(), name, where)
    return out


def _check_names(names: set[str], center: Direction, known: Collection[str], where: str) -> None:
    missing = [n for n in center if n not in names]
    if missing:
        raise LandscapeError(f"{where} lacks {len(missing)} tensors of the model, e.g. {missing[0]}")
    unknown = sorted(names - set(known))
    if unknown:
        raise LandscapeError(f"{where} holds tensors the model does not have, e.g. {unknown[0][:80]}: another model?")


def _finite(values: np.ndarray, name: str, where: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise LandscapeError(f"{where}: {name} holds NaN or inf")
    return values


def _file_numbers(files: Sequence[Path]) -> list[int | None]:
    """In each file's name after the part all the names share, the number at the first place where the names'
    numbers differ (of at most 18 digits: an int64), or None: `resnet20.pt` beside `resnet20_epoch5.pt` has none of
    its own, `resnet20_epoch5.pt` beside `resnet20_epoch10.pt` is 5 (the 20 is the architecture's, in every name),
    `epoch_3_loss_0.25.pt` is 3 (not 25), `ckpt_e20_lr0.1.pt` 20."""
    stems = [f.stem for f in files]
    shared = stems[0] if len(stems) > 1 else ""
    for stem in stems[1:]:  # the characters every name begins with
        while not stem.startswith(shared):
            shared = shared[:-1]
    while shared and shared[-1].isdigit() and any(stem[len(shared) : len(shared) + 1].isdigit() for stem in stems):
        shared = shared[:-1]  # epoch_10, epoch_12 share "epoch_1": the number begins before it
    found = [re.findall(r"\d+", stem[len(shared) :]) for stem in stems]
    numbered = [f for f in found if f]
    width = min((len(f) for f in numbered), default=0)
    # the first place where the numbered names' numbers differ: resnet20_epoch5, resnet20_epoch10 share the 20
    position = next((k for k in range(width) if len({int(f[k]) for f in numbered}) > 1), 0)
    return [int(f[position]) if len(f) > position and len(f[position]) <= 18 else None for f in found]


_SAID: set[str] = set()  # the notes `_epoch_labels` printed in this process


def _epoch_labels(files: Sequence[Path]) -> list[int]:
    """The first number of each file name (`_file_numbers`); a name without one is the epoch after the one before
    it; 1..n where that leaves two files the same label. Each of these, and epochs that fall (files given out of
    order: they are taken as given), is said once on stderr."""
    labels: list[int] = []
    numbers = _file_numbers(files)
    for number in numbers:
        labels.append(number if number is not None else (labels[-1] + 1 if labels else 1))
    notes = []
    if len(set(labels)) < len(labels):
        labels = list(range(1, len(files) + 1))
        notes.append(f"the file names give no distinct epochs: the {len(files)} files are epochs 1 to {len(files)}")
    elif 0 < numbers.count(None) < len(files):
        unnumbered = [f"{f.name} as epoch {e}" for f, e, n in zip(files, labels, numbers) if n is None]
        notes.append(f"names without an epoch number: {', '.join(unnumbered[:3])}")
    falls = [k for k in range(1, len(labels)) if labels[k] < labels[k - 1]]
    if falls:
        k = falls[0]
        notes.append(
            f"epochs fall from {labels[k - 1]} ({files[k - 1].name}) to {labels[k]} ({files[k].name}): the files are "
            "taken in the order given"
        )
    note = "; ".join(f"trajectory: {n}" for n in notes)
    if note and note not in _SAID:  # once: the grid and the run read them
        _SAID.add(note)
        print(note, file=sys.stderr, flush=True)
    return labels


def _natural(name: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _layout(center: Direction) -> list[tuple[str, slice]]:
    """Where each tensor of `center` lies in a flat vector, in `center`'s order."""
    out, start = [], 0
    for name, tensor in center.items():
        out.append((name, slice(start, start + tensor.numel())))
        start += tensor.numel()
    return out


def _flatten(direction: Direction) -> np.ndarray:
    return np.concatenate([t.detach().cpu().double().numpy().reshape(-1) for t in direction.values()])


def _unflatten(vector: np.ndarray, center: Direction) -> Direction:
    """A flat vector as float32 tensors shaped and named like `center`."""
    return {
        name: torch.from_numpy(vector[where].reshape(center[name].shape).astype(np.float32))
        for name, where in _layout(center)
    }
