"""The surface file: one HDF5 file per surface, readable with plain h5py (see docs/file-format.md).

Results are written point by point into preallocated datasets; `computed` marks the finished points, so a NaN
loss is a result and never a marker. Every write opens, writes and closes the file, so a killed run loses at
most the points in flight and other processes can read the file between writes.

After creation, nothing in the file grows: results, `computed` and the provenance of each session (`runs`, a
ring of fixed-size slots) are all written in place into storage allocated when the file was made, so a full
disk can stop a run but never damage what the file holds. One process at a time may write a surface file
(`writer_lock`, a lock on a hidden lock file that dies with its process); readers take no lock and never block it.

Files are untrusted input: every dataset is checked before it is read (a plain dataset of this file, not a link,
an external or virtual dataset, of numbers of at most 8 bytes, and no larger than a surface can be), so a crafted
file can neither make a reader open other files nor allocate what it declares; and what it holds must agree with its
spec (the grid's coordinates, floating-point results, the image indices it draws), or it is damaged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import math
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .data import SPLITS
from .directions import Direction, check_finite
from .errors import LandscapeError
from .grid import MAX_POINTS, Axis
from .spec import CurvatureMapSpec, SurfaceSpec

FORMAT = "landscape-surface"
FORMAT_VERSION = 2  # 2: provenance in the preallocated `runs` dataset; 1: in a `runs` attribute (still read)
METRICS = ("loss", "acc")
RUN_SLOTS = 32  # slot 0: the session that created the file; 1..31: a ring of the latest resumes
RUN_BYTES = 2048  # one session's record, JSON
MAX_NUMBER_BYTES = 8  # a value of a numeric dataset: float64, int64 at most
MAX_CHUNKS = 4096  # pieces of one dataset (HDF5 chunks); the files landscape writes have one (contiguous)
MAX_CHUNK_BYTES = 1 << 20  # a chunk may exceed its dataset (a resizable one) by this much at most
MAX_SPEC_BYTES = 1 << 20
MAX_INDICES = 50_000_000  # images per split (ImageNet's training set is 1.28 million)
MAX_DIRECTION_VALUES = 2_000_000_000
# The convexity map (`landscape convexity`): its arrays, the mask of its finished points, and its settings.
CURVATURE_ARRAYS = ("hessian_min", "hessian_max", "hessian_products")
CURVATURE_MASK = "computed_hessian"
CURVATURE_ATTRIBUTE = "curvature"
CURVATURE_INDICES = "indices/hessian"
MAX_SNAPSHOTS = 10_000  # points of a stored training path
COORDINATE_TOLERANCE = 1e-12  # stored coordinates vs the spec's grid, relative to the larger of 1 and its ends
MAX_JSON_DEPTH = 32  # nesting of a stored JSON record (spec, settings, a session); the writer's are a few levels deep
RATIO_TOLERANCE = 1e-6  # a trajectory's explained-variance ratios may sum to 1 plus rounding


@dataclass
class Surface:
    """A surface read from a file: coordinates, metric arrays ([j, i] = f(x[i], y[j]); (nx,) in 1D) and the spec.

    `spec` is the stored JSON as a dict (what `landscape info --json` prints); `surface_spec` the same as typed
    settings, for everything that reads it.
    """

    path: str
    spec: dict[str, Any]
    xcoordinates: np.ndarray
    ycoordinates: np.ndarray | None
    values: dict[str, np.ndarray]
    computed: np.ndarray
    runs: list[dict[str, Any]] = field(default_factory=list)
    legacy: bool = False
    runs_error: str | None = None  # why the provenance could not be read (the results still were)
    curvature: CurvatureMap | None = None  # the convexity map, when the file holds one
    trajectory: TrajectoryPath | None = None  # the training path, on a surface of PCA directions
    images: dict[str, int] = field(default_factory=dict)  # images per set of `indices/` (train, test, bn, hessian)

    @property
    def surface_spec(self) -> SurfaceSpec | None:
        """The spec as a `SurfaceSpec`; None for a file of the paper's code, which records none."""
        return None if self.legacy else SurfaceSpec.from_dict(self.spec)

    @property
    def ndim(self) -> int:
        return 1 if self.ycoordinates is None else 2

    @property
    def completion(self) -> float:
        """Fraction of grid points computed."""
        return float(self.computed.mean()) if self.computed.size else 0.0

    @property
    def metrics(self) -> list[str]:
        return list(self.values)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]


@dataclass(frozen=True)
class TrajectoryPath:
    """The training path on the plane of a surface.

    epochs: (n,) the epoch of each snapshot (for checkpoint files: the first number in the file name, else 1..n).
    coordinates: (n, 2) least-squares (α, β) with θ_i − θ* ≈ α x + β y, x and y the stored directions.
    residual: (n,) ‖θ_i − θ* − (α x + β y)‖, the part of each snapshot off the plane; distance: (n,) ‖θ_i − θ*‖.
    explained_variance_ratio: (2,) the share of the differences' variance along x and along y (not centered:
    of their squared norms).
    Norms are over the tensors the PCA saw: with ignore `biasbn` those of dim <= 1 are left out.
    """

    epochs: np.ndarray
    coordinates: np.ndarray
    residual: np.ndarray
    distance: np.ndarray
    explained_variance_ratio: np.ndarray

    def datasets(self) -> dict[str, np.ndarray]:
        """The arrays of the surface file's `trajectory` group."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class CurvatureMap:
    """The convexity map of a surface: λmin (`smallest`) and λmax (`largest`) of the loss Hessian at the grid points
    `spec.selected(shape)` ([j, i] as the loss), the Hessian-vector products each took, which are `computed`, and the
    indices of the images the Hessian averages over. Points not (yet) computed hold NaN."""

    spec: dict[str, Any]
    smallest: np.ndarray
    largest: np.ndarray
    products: np.ndarray
    computed: np.ndarray
    indices: np.ndarray

    @property
    def curvature_spec(self) -> CurvatureMapSpec:
        return CurvatureMapSpec.from_dict(self.spec)

    @property
    def selected(self) -> np.ndarray:
        """The grid points the map covers (every stride-th), as a boolean mask of the grid."""
        return self.curvature_spec.selected(self.computed.shape)

    @property
    def ratio(self) -> np.ndarray:
        """|λmin / λmax| (the paper's Fig. 7) where computed, NaN elsewhere."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.computed, np.abs(self.smallest / self.largest), np.nan)

    @property
    def completion(self) -> float:
        """Fraction of the map's points computed."""
        selected = self.selected
        return float(self.computed[selected].mean()) if selected.any() else 0.0


def metric_names(splits: list[str] | tuple[str, ...]) -> list[str]:
    return [f"{split}_{metric}" for split in splits for metric in METRICS]


def create_surface_file(
    path: str | Path,
    spec: dict[str, Any],
    run: dict[str, Any],
    shape: tuple[int, ...],
    coordinates: list[np.ndarray],
    splits: list[str] | tuple[str, ...],
    directions: dict[str, Direction],
    indices: dict[str, np.ndarray],
    trajectory: dict[str, np.ndarray] | None = None,
    fingerprints: dict[str, str] | None = None,
) -> None:
    """Write a new, empty surface file atomically (a temporary file renamed into place; a file it replaces stays as
    it was until then).

    Call it holding `writer_lock(path)`: temporary files of earlier runs killed while creating it are removed.
    `trajectory`: the arrays of the `trajectory` group of a surface on PCA directions (`landscape.trajectory`).
    `fingerprints`: `landscape.data.fingerprint` of the images of `indices`, by the same names (`read_fingerprints`).
    """
    path = Path(path)
    for orphan in _orphans(path):
        orphan.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["spec"] = json.dumps(spec, sort_keys=True)
            _create_runs(f, run)
            for name, values in zip(("xcoordinates", "ycoordinates"), coordinates):
                f.create_dataset(name, data=values)
            for name in metric_names(splits):
                f.create_dataset(name, data=np.full(shape, np.nan))
            f.create_dataset("computed", data=np.zeros(shape, dtype=np.uint8))
            for axis, direction in directions.items():
                group = f.create_group(f"directions/{axis}")
                for tensor_name, tensor in direction.items():
                    group.create_dataset(tensor_name, data=tensor.detach().cpu().numpy())
            for split, idx in indices.items():
                stored = f.create_dataset(f"indices/{split}", data=np.asarray(idx, dtype=np.int64))
                if fingerprints and split in fingerprints:
                    stored.attrs[FINGERPRINT] = fingerprints[split]
            for name, values in (trajectory or {}).items():
                f.create_dataset(f"trajectory/{name}", data=values)
        _sync(tmp)
        tmp.replace(path)
        _sync_folder(path.parent)
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {_os_reason(e)}") from None
    finally:
        with contextlib.suppress(OSError):  # e.g. EROFS: the clean error above is what the user sees
            tmp.unlink(missing_ok=True)


def add_curvature(
    path: str | Path, curvature: dict[str, Any], indices: np.ndarray, run: dict[str, Any], replace: bool = False
) -> None:
    """Give a surface file its convexity map: the preallocated (NaN) `hessian_min`, `hessian_max`, the products per
    point, their own mask `computed_hessian`, the Hessian's image indices and the settings (`curvature` attribute),
    and record the session. Atomic: a copy of the file gets them and is renamed into place, so a kill or a full disk
    leaves the file as it was. Afterwards, as for the loss, points are written in place and nothing grows.

    `replace`: the map the file holds is discarded (the copy is made without it, so the file does not grow).
    Call it holding `writer_lock(path)`; temporary files of earlier runs killed while doing it are removed.
    """
    path = Path(path)
    for orphan in _orphans(path):
        orphan.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if replace:
            _copy_without_curvature(path, tmp)
        else:
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+", locking=False) as f:
            _check_format(f, path)
            if CURVATURE_ATTRIBUTE in f.attrs or any(n in f for n in (*CURVATURE_ARRAYS, CURVATURE_MASK)):
                raise LandscapeError(f"{path} already holds a convexity map (--overwrite replaces it)")
            shape = _dataset(f, "computed", path, MAX_POINTS).shape
            for name in CURVATURE_ARRAYS[:2]:
                f.create_dataset(name, data=np.full(shape, np.nan))
            f.create_dataset(CURVATURE_ARRAYS[2], data=np.zeros(shape, dtype=np.int32))
            f.create_dataset(CURVATURE_MASK, data=np.zeros(shape, dtype=np.uint8))
            f.create_dataset(CURVATURE_INDICES, data=np.asarray(indices, dtype=np.int64))
            f.attrs[CURVATURE_ATTRIBUTE] = json.dumps(curvature, sort_keys=True)
        append_run(tmp, run)
        shutil.copymode(path, tmp)  # a private surface stays private
        _sync(tmp)
        tmp.replace(path)
        _sync_folder(path.parent)
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {_os_reason(e)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _copy_without_curvature(path: Path, tmp: Path) -> None:
    """Write to `tmp` the surface file `path` less its convexity map: its groups, datasets and attributes copied
    object by object (a file of plain objects: a link anywhere is refused, never followed)."""
    skipped = {*CURVATURE_ARRAYS, CURVATURE_MASK, CURVATURE_INDICES}

    def copy_group(source: h5py.Group, target: h5py.Group, prefix: str) -> None:
        for key, value in source.attrs.items():
            if not (prefix == "" and key == CURVATURE_ATTRIBUTE):
                target.attrs[key] = value
        for name in source:
            full = f"{prefix}{name}"
            if full in skipped:
                continue
            if not isinstance(source.get(name, getlink=True), h5py.HardLink):
                raise LandscapeError(f"{path} is damaged: {full} is a link, not part of a surface file")
            item = source[name]
            if isinstance(item, h5py.Group):
                copy_group(item, target.create_group(name), f"{full}/")
            elif isinstance(item, h5py.Dataset) and not (item.is_virtual or item.external):
                source.copy(item, target, name=name)
            else:
                raise LandscapeError(f"{path} is damaged: {full} is not a plain dataset of this file")

    with _open(path) as source, h5py.File(tmp, "w", locking=False) as target:
        _check_format(source, path)
        copy_group(source, target, "")


def _orphans(path: Path) -> list[Path]:
    """Temporary files `.NAME.PID.tmp` of earlier runs on `path` killed while writing it (not those of another
    output whose name starts with NAME, as `.a.h5.b.h5.PID.tmp` of `a.h5.b.h5`)."""
    own = re.compile(rf"\.{re.escape(path.name)}\.\d+\.tmp")
    return [p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp") if own.fullmatch(p.name)]


def _sync(path: Path) -> None:
    """Put a written file's bytes on the disk, so that a power loss after a rename cannot leave an empty file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Put a rename in `folder` on the disk, where the OS allows it (some file systems cannot sync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def writer_lock_file(path: str | Path) -> Path:
    """The hidden file next to `path` that `writer_lock(path)` locks."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def writer_lock(
    path: str | Path,
    advice: str = "wait for it to finish (or, computing a surface, choose another --out)",
    shown: str | Path | None = None,
) -> Iterator[None]:
    """Hold the right to write the surface file `path` (and to create it) for the duration of the block.

    A second writer gets a LandscapeError at once. The lock is an `flock` on the hidden file `.NAME.lock` next to
    it, released by the kernel when the process ends however it ends, so a killed run never leaves it stuck.
    """
    path = Path(path)
    lock_path = writer_lock_file(path)
    try:  # a planted link is never followed (its target would be truncated to our pid)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        reason = f"{lock_path} is a link" if e.errno == errno.ELOOP else _os_reason(e)
        raise LandscapeError(f"cannot write {path}: {reason}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device planted under the lock's name
            raise LandscapeError(f"cannot write {path}: {lock_path} is not a plain file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LandscapeError(
                f"{shown or path} is being written by another process (pid {owner}): {advice}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _refuse_hard_links(path, shown)
        yield
    finally:
        os.close(fd)  # releases the lock


def _refuse_hard_links(path: Path, shown: str | Path | None) -> None:
    """The lock is per name: a file with a second name (a hard link) could be written under it at the same time."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        raise LandscapeError(
            f"cannot write {shown or path}: the file has {info.st_nlink} names (hard links), and a run on another "
            "name could write it at the same time: copy it (cp) and write the copy"
        )


def _os_reason(error: OSError) -> str:
    """One line for an OS error, also for the multi-line ones of HDF5."""
    if error.errno == errno.ENOSPC or "No space left" in str(error) or "errno = 28" in str(error):
        return "no space left on the device"
    if error.errno == errno.EROFS:
        return "read-only file system"
    if error.strerror:
        return error.strerror
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _create_runs(f: h5py.File, first: dict[str, Any]) -> None:
    """The provenance ring, allocated in full now, so that recording a session later writes in place."""
    slots = np.zeros(RUN_SLOTS, dtype=f"S{RUN_BYTES}")
    slots[0] = _encode_run(first, 0)
    f.create_dataset("runs", data=slots)


def _encode_run(run: dict[str, Any], number: int) -> bytes:
    record = {"n": number, **run}
    text = json.dumps(record)
    if len(text.encode()) > RUN_BYTES:  # keep what identifies the session, drop the rest
        text = json.dumps({k: record[k] for k in ("n", "started", "landscape", "torch", "device") if k in record})
    return text.encode()[:RUN_BYTES]


def is_surface_file(path: str | Path) -> bool:
    """Whether `path` is an HDF5 file whose `format` attribute names this format (False for a damaged one)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return _format(f, path) == FORMAT
    except (OSError, ValueError, TypeError, LandscapeError):
        return False


def read_spec(path: str | Path) -> dict[str, Any]:
    """The spec stored in a surface file, checked field by field; a clear error for a file that is not one."""
    with _open(path) as f:
        _check_format(f, path)
        return _read_spec(f, path)


def append_run(path: str | Path, run: dict[str, Any]) -> None:
    """Record one more session (environment and options) that worked on this file, written in place.

    Slot 0 keeps the session that created the file, the others the latest resumes. A file of format 1 (runs in an
    attribute, which grows on every rewrite) gets the ring once, and only with room to spare on the disk.
    """
    path = Path(path)
    try:
        with _open(path, "r+") as f:
            if "runs" not in f:
                needed = RUN_SLOTS * RUN_BYTES + (16 << 20)
                if shutil.disk_usage(path.parent).free < needed:
                    raise LandscapeError(
                        f"cannot record this run in {path}: less than {needed >> 20} MB free on "
                        "its disk (the results are untouched)"
                    )
                _create_runs(f, {"n": 0, "note": "file of format 1: earlier sessions are in the runs attribute"})
            slots = _dataset(f, "runs", path, RUN_SLOTS, max_string_bytes=RUN_BYTES)
            if slots.shape != (RUN_SLOTS,) or slots.dtype != np.dtype(f"S{RUN_BYTES}"):
                raise LandscapeError(f"{path} has a damaged runs dataset: shape {slots.shape}, type {slots.dtype}")
            numbers = [_run_number(raw) for raw in slots[()]]
            number = max(numbers) + 1
            slots[1 + (number - 1) % (RUN_SLOTS - 1)] = _encode_run(run, number)
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {_os_reason(e)}") from None


def read_runs(path: str | Path) -> tuple[list[dict[str, Any]], str | None]:
    """The sessions recorded in a surface file, oldest first, and why they could not be read (None when they could)."""
    with _open(path) as f:
        return _read_runs(f, path)


def _run_number(raw: bytes) -> int:
    """The number `n` of a stored session record; -1 for an empty slot or one that cannot be read."""
    try:
        return int(_json(raw.decode())["n"]) if raw else -1
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError):  # OverflowError: "n": 1e400
        return -1


def _json(text: str) -> Any:
    """`json.loads`, a ValueError also for JSON nested too deeply to parse or more than `MAX_JSON_DEPTH` levels
    deep (a RecursionError of the parser, or of whatever walks it later, must not hide the results)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    level, depth = [value], 0
    while True:  # level by level, without recursion
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            return value
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        level = [v for c in containers for v in (c.values() if isinstance(c, dict) else c)]


def _read_runs(f: h5py.File, path: str | Path) -> tuple[list[dict[str, Any]], str | None]:
    """The sessions recorded in a file, oldest first, and why they could not be read (None when they could)."""
    runs: list[dict[str, Any]] = []
    try:
        if "runs" in f.attrs:  # format 1
            runs += _json(_attribute(f, "runs", path))
        if "runs" in f:
            slots = _dataset(f, "runs", path, RUN_SLOTS, max_string_bytes=RUN_BYTES)[()]
            records = [_json(raw.decode()) for raw in slots if raw]
            runs += sorted((r for r in records if "note" not in r), key=lambda r: r["n"])
        if not all(isinstance(r, dict) for r in runs):
            raise ValueError("a record is not an object")
        return runs, None
    except (LandscapeError, ValueError, KeyError, TypeError, AttributeError, OSError) as e:  # numbers: no .decode
        return [], f"unreadable runs ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"


def write_points(
    path: str | Path, flat_indices: np.ndarray, values: dict[str, np.ndarray], *, mask: str = "computed"
) -> None:
    """Store values[name][k] in the file's array `name` at flat grid index flat_indices[k] for every k, then mark
    those points in `mask` (all in place). `values` must name exactly the arrays that `mask` marks: the metric
    arrays for `computed` (`metric_names`), `CURVATURE_ARRAYS` for the convexity map's `computed_hessian`."""
    flat_indices = np.asarray(flat_indices).reshape(-1)
    try:
        with _open(path, "r+") as f:
            if mask not in f:
                raise LandscapeError(f"cannot write {path}: it has no {mask} mask (no convexity map was started)")
            shape = _dataset(f, mask, path, MAX_POINTS).shape
            stored = _marked_arrays(f, mask)
            unknown = sorted(set(values) - set(stored))
            if unknown:
                raise LandscapeError(
                    f"cannot write {path}: it has no metric '{unknown[0]}' (it holds {', '.join(stored)})"
                )
            missing = sorted(set(stored) - set(values))
            if missing:
                raise LandscapeError(f"cannot write {path}: no values given for {', '.join(missing)}")
            for name, array in values.items():
                if np.shape(array) != flat_indices.shape:
                    raise LandscapeError(
                        f"cannot write {path}: {name} holds {np.shape(array)} values for {len(flat_indices)} points"
                    )
            for name in values:
                _writable(f, name, path, shape)
            for name, array in values.items():
                _write_at(f[name], shape, flat_indices, np.asarray(array, dtype=np.float64))
            f.flush()
            os.fsync(f.id.get_vfd_handle())  # the values reach the disk before the mask marks them
            _write_at(f[mask], shape, flat_indices, np.ones(len(flat_indices), dtype=f[mask].dtype))
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {_os_reason(e)}") from None


def _writable(f: h5py.File, name: str, path: str | Path, shape: tuple[int, ...]) -> None:
    """The array `name` is one that values may be written into: a plain dataset of this file (`_dataset`) of the
    mask's shape, of floating point (`hessian_products`: integers), so that no value is stored truncated."""
    ds = _dataset(f, name, path, MAX_POINTS)
    kinds, expected = ("iu", "integers") if name == CURVATURE_ARRAYS[2] else ("f", "floating point")
    if ds.dtype.kind not in kinds:
        raise LandscapeError(f"{path} is damaged: {name} is {ds.dtype}, not {expected}")
    if ds.shape != shape:
        raise LandscapeError(f"{path} is damaged: {name} has shape {ds.shape}, the grid {shape}")


WHOLE_ARRAY_FROM = 32  # points per write from which a dataset is read, changed and written back whole


def _write_at(dataset: h5py.Dataset, shape: tuple[int, ...], flat_indices: np.ndarray, values: np.ndarray) -> None:
    """dataset[flat_indices[k]] = values[k] (flat grid indices of `shape`): point by point for a few points, else
    the whole array at once (at most `MAX_POINTS` values; a point by point write of a whole 1001x1001 grid took
    minutes). The points not given are written back as they were, so a torn write changes none of them."""
    if len(flat_indices) < WHOLE_ARRAY_FROM:
        for flat, value in zip(flat_indices, values, strict=True):
            dataset[np.unravel_index(int(flat), shape)] = value
        return
    whole = dataset[()]
    whole.reshape(-1)[flat_indices] = values
    dataset[...] = whole


def _marked_arrays(f: h5py.File, mask: str) -> list[str]:
    """The arrays whose points `mask` marks as finished."""
    if mask == CURVATURE_MASK:
        return list(CURVATURE_ARRAYS)
    return _metric_arrays(f)


def _metric_arrays(f: h5py.File) -> list[str]:
    """The metric arrays of a file: of the format's own names, (train|test)_(loss|acc), those it holds, in HDF5's
    (alphabetical) order. Other datasets, whatever their names, are never read."""
    return sorted(name for name in metric_names(SPLITS) if f.get(name, getlink=True) is not None)


def _metric_dataset(f: h5py.File, name: str, path: str | Path) -> h5py.Dataset:
    """A metric array (`_dataset`), refused unless of floating point: integers would store results truncated."""
    ds = _dataset(f, name, path, MAX_POINTS)
    if ds.dtype.kind != "f":
        raise LandscapeError(f"{path} is damaged: {name} is {ds.dtype}, not floating point")
    return ds


def read_computed(path: str | Path, mask: str = "computed") -> np.ndarray:
    with _open(path) as f:
        return np.asarray(_dataset(f, mask, path, MAX_POINTS)[()], dtype=bool)


def read_directions(path: str | Path, axis: str, like: Direction) -> Direction:
    """The stored direction of `axis`; its tensor names and shapes must be those of `like` (checked before reading)."""
    with _open(path) as f:
        _check_format(f, path)
        group = _group(f, f"directions/{axis}", path)
        if group is None:
            raise LandscapeError(f"{path} has no '{axis}' direction")
        names = sorted(group)
        if names != sorted(like):
            missing, extra = sorted(set(like) - set(names)), sorted(set(names) - set(like))
            raise LandscapeError(
                f"the {axis} direction in {path} does not fit the model: missing "
                f"{', '.join(missing[:3]) or 'none'}; unexpected {', '.join(extra[:3]) or 'none'}"
            )
        out = {}
        for name in names:
            ds = _dataset(group, name, path, MAX_DIRECTION_VALUES)
            if ds.shape != tuple(like[name].shape):
                raise LandscapeError(
                    f"the {axis} direction in {path} has shape {ds.shape} for {name}, the model "
                    f"{tuple(like[name].shape)}"
                )
            if ds.dtype.kind != "f":  # integers or booleans: not a direction any writer stores
                raise LandscapeError(f"the {axis} direction in {path} is {ds.dtype} for {name}, not floating point")
            out[name] = torch.from_numpy(np.asarray(ds[()]))
        check_finite(out, f"the {axis} direction in {path}")
        return out


INDEX_SETS = ("train", "test", "bn", "hessian")  # the datasets of `indices/`: splits, BN images, a map's Hessian


def _index_sets(f: h5py.File, path: str | Path, spec: SurfaceSpec | None = None) -> list[tuple[str, h5py.Dataset]]:
    """The datasets of `indices/` named in `INDEX_SETS` that the file has, checked (`_dataset`, lists of integers,
    no more images than the spec draws: `--subset` of a split, `bn_images`), not yet read. `spec`: the file's
    own, read here when not given (none for a file that is not of this format)."""
    group = _group(f, "indices", path)
    if group is None:
        return []
    sets = [(name, _dataset(group, name, path, MAX_INDICES)) for name in INDEX_SETS if name in group]
    for name, ds in sets:
        if ds.ndim != 1 or ds.dtype.kind not in "iu":
            raise LandscapeError(f"{path} is damaged: indices/{name} is {ds.dtype} {ds.shape}, not a list of integers")
    if spec is None and _format(f, path) == FORMAT:
        spec = SurfaceSpec.from_dict(_read_spec(f, path))
    if spec is not None:
        # the subset's images, or all of a smaller split: never more (counting them needs the split's size)
        subset = spec.data.subset if spec.data.subset is not None else MAX_INDICES
        limits = {
            "train": (subset, "--subset"),
            "test": (subset, "--subset"),
            "bn": (spec.evaluation.bn_images, "--bn-images"),
        }
        for name, ds in sets:
            if name in limits and ds.size > limits[name][0]:
                limit, option = limits[name]
                raise LandscapeError(
                    f"{path} is damaged: indices/{name} holds {ds.size} images, more than its spec's {option} {limit}"
                )
    return sets


def _index_values(ds: h5py.Dataset, name: str, path: str | Path) -> np.ndarray:
    """A checked set of `indices/` read as int64, refused unless strictly increasing and >= 0: every writer stores
    them sorted and unique (`landscape.data.subset_indices`, `surface.hessian_indices`), so a repeated, unsorted
    or negative index is damage (and would evaluate an image twice, or another than recorded)."""
    values = np.asarray(ds[()], dtype=np.int64)  # uint64 beyond int64 wraps to negative: refused below
    if values.size and (values[0] < 0 or np.any(np.diff(values) <= 0)):
        raise LandscapeError(
            f"{path} is damaged: indices/{name} are not distinct image indices >= 0 in increasing order"
        )
    return values


def read_indices(path: str | Path) -> dict[str, np.ndarray]:
    """The stored image indices of each set of `INDEX_SETS` the file has (other names are never read). Each must be
    stored whole and uncompressed, as the writer stores it, so that reading it allocates no more than the file holds
    (a declared dataset whose chunks were never written, or compressed, costs nothing in the file), hold no more
    images than the spec draws (`_index_sets`), and be distinct indices >= 0 in increasing order (`_index_values`)."""
    out = {}
    with _open(path) as f:
        for name, ds in _index_sets(f, path):
            _check_stored_whole(ds, f"indices/{name}", path)
            out[name] = _index_values(ds, name, path)
    return out


def _check_stored_whole(ds: h5py.Dataset, name: str, path: str | Path) -> None:
    """A dataset that may be large (image indices) holds the bytes it declares: one whose chunks were never
    written, or that is compressed, costs nothing in the file and gigabytes to read."""
    if ds.id.get_storage_size() < ds.size * ds.dtype.itemsize:
        raise LandscapeError(
            f"{path} is damaged: {name} declares {ds.size} values but stores {ds.id.get_storage_size()} bytes"
        )


FINGERPRINT = "sha256"  # attribute of `indices/<name>`: the sha256 of those images and their labels


def read_fingerprints(path: str | Path) -> dict[str, str]:
    """The recorded `landscape.data.fingerprint` of each stored image set, by its name in `indices` (`train`,
    `test`, `bn`); sets of files written before fingerprints existed are left out."""
    out = {}
    with _open(path) as f:
        for name, stored in _index_sets(f, path):
            if FINGERPRINT not in stored.attrs:
                continue
            damaged = LandscapeError(f"{path} is damaged: the {FINGERPRINT} of indices/{name} is not a sha256")
            if stored.attrs.get_id(FINGERPRINT).get_storage_size() > 256:
                raise damaged
            value = stored.attrs[FINGERPRINT]
            value = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
                raise damaged
            out[name] = value
    return out


def read_surface(path: str | Path) -> Surface:
    """Read a surface file of this project, or one written by the paper's original code.

    Everything is checked before it is allocated; a damaged or crafted file is one LandscapeError naming it.
    """
    with _open(path) as f:
        if _format(f, path) != FORMAT:
            return _read_legacy(f, path)
        _check_format(f, path)
        spec = _read_spec(f, path)
        surface_spec = SurfaceSpec.from_dict(spec)  # its grid checked (`validate_layout`): at most MAX_POINTS points
        grid = surface_spec.grid
        if grid.y is None and f.get("ycoordinates", getlink=True) is not None:
            raise LandscapeError(f"{path} is damaged: it holds ycoordinates, and its spec's grid is 1D")
        x = _coordinates(f, "xcoordinates", path, grid.x)
        y = _coordinates(f, "ycoordinates", path, grid.y) if grid.y is not None else None
        shape = (len(x),) if y is None else (len(y), len(x))
        if len(x) * (1 if y is None else len(y)) > MAX_POINTS:
            raise LandscapeError(f"{path} declares a grid of {shape}, more than {MAX_POINTS} points")
        computed = _dataset(f, "computed", path, MAX_POINTS)
        names = _metric_arrays(f)
        if not names:
            raise LandscapeError(f"{path} holds none of the datasets {', '.join(metric_names(SPLITS))}")
        values = {}
        for name in names:
            ds = _metric_dataset(f, name, path)
            if ds.shape != shape:
                raise LandscapeError(f"{path} is damaged: {name} has shape {ds.shape}, the grid {shape}")
            values[name] = np.asarray(ds[()], dtype=np.float64)
        if computed.shape != shape:
            raise LandscapeError(f"{path} is damaged: computed has shape {computed.shape}, the grid {shape}")
        runs, runs_error = _read_runs(f, path)
        curvature = _read_curvature(f, path, shape)
        return Surface(
            str(path),
            spec,
            x,
            y,
            values,
            np.asarray(computed[()], dtype=bool),
            runs,
            runs_error=runs_error,
            curvature=curvature,
            trajectory=_read_trajectory(f, path),
            images={name: int(ds.size) for name, ds in _index_sets(f, path, surface_spec)},  # shapes only: none read
        )


def _read_trajectory(f: h5py.File, path: str | Path) -> TrajectoryPath | None:
    """The `trajectory` group, every dataset checked before it is read (no links, no external or virtual data,
    bounded, shapes consistent) and after (`_check_trajectory`); None when the file has none."""
    group = _group(f, "trajectory", path)
    if group is None:
        return None
    coordinates = _dataset(group, "coordinates", path, 2 * MAX_SNAPSHOTS)
    if coordinates.ndim != 2 or coordinates.shape[1] != 2:
        raise LandscapeError(f"{path} is damaged: trajectory/coordinates has shape {coordinates.shape}")
    n = coordinates.shape[0]
    arrays = {"coordinates": np.asarray(coordinates[()], dtype=np.float64)}
    shapes = {"epochs": (n,), "residual": (n,), "distance": (n,), "explained_variance_ratio": (2,)}
    for name, shape in shapes.items():
        ds = _dataset(group, name, path, MAX_SNAPSHOTS)
        if ds.shape != shape:
            raise LandscapeError(f"{path} is damaged: trajectory/{name} has shape {ds.shape}, not {shape}")
        arrays[name] = np.asarray(ds[()], dtype=np.float64) if name != "epochs" else _epochs(ds, path)
    _check_trajectory(arrays, path)
    return TrajectoryPath(**arrays)


def _epochs(ds: h5py.Dataset, path: str | Path) -> np.ndarray:
    """`trajectory/epochs` as int64: integers, or floats that are whole numbers within int64; nothing is rounded."""
    damaged = LandscapeError(f"{path} is damaged: trajectory/epochs are not whole numbers of int64")
    if ds.dtype.kind not in "iuf":
        raise damaged
    raw = ds[()]
    if ds.dtype.kind == "u" and raw.size and raw.max() > np.iinfo(np.int64).max:
        raise damaged
    if ds.dtype.kind == "f":
        values = np.asarray(raw, dtype=np.float64)
        # -2**63 and 2**63 are exact floats: the whole numbers of int64 are those in [-2**63, 2**63)
        if not (np.all(np.isfinite(values)) and np.all(values == np.floor(values))):
            raise damaged
        if values.size and (values.min() < -(2.0**63) or values.max() >= 2.0**63):
            raise damaged
    return np.asarray(raw, dtype=np.int64)


def _check_trajectory(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """A stored path as the writer makes it: finite coordinates, residuals and distances (>= 0), and
    explained-variance ratios in [0, 1] summing to at most 1 (plus `RATIO_TOLERANCE`)."""
    for name in ("coordinates", "residual", "distance"):
        if not np.all(np.isfinite(arrays[name])):
            raise LandscapeError(f"{path} is damaged: trajectory/{name} holds non-finite values")
    for name in ("residual", "distance"):
        if np.any(arrays[name] < 0):
            raise LandscapeError(f"{path} is damaged: trajectory/{name} holds negative norms")
    ratio = arrays["explained_variance_ratio"]
    if not (np.all((ratio >= 0) & (ratio <= 1)) and ratio.sum() <= 1 + RATIO_TOLERANCE):
        raise LandscapeError(
            f"{path} is damaged: trajectory/explained_variance_ratio {ratio.tolist()} are not shares of a variance "
            "(each in [0, 1], at most 1 together)"
        )


def _read_curvature(f: h5py.File, path: str | Path, shape: tuple[int, ...]) -> CurvatureMap | None:
    """The convexity map, each part checked like the loss (plain datasets of this file, the grid's shape, numbers
    of the right kind, settings that pass `CurvatureMapSpec.from_dict`); None when the file has none."""
    parts = (CURVATURE_ATTRIBUTE in f.attrs, *(name in f for name in (*CURVATURE_ARRAYS, CURVATURE_MASK)))
    if not any(parts):
        return None
    if not all(parts):
        raise LandscapeError(f"{path} is damaged: its convexity map lacks some of its parts")
    settings = _settings(f, CURVATURE_ATTRIBUTE, path, CurvatureMapSpec.from_dict, "damaged convexity-map settings")
    arrays = {}
    for name, kinds in zip((*CURVATURE_ARRAYS, CURVATURE_MASK), ("f", "f", "iu", "biu")):
        ds = _dataset(f, name, path, MAX_POINTS)
        if ds.shape != shape or ds.dtype.kind not in kinds:
            raise LandscapeError(f"{path} is damaged: {name} is {ds.dtype} {ds.shape}, the grid {shape}")
        arrays[name] = ds[()]
    group = _group(f, "indices", path)
    indices = _dataset(group, "hessian", path, MAX_INDICES) if group is not None else None
    if indices is None or indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise LandscapeError(f"{path} is damaged: the convexity map's image indices are not a list of integers")
    split = CurvatureMapSpec.from_dict(settings).split
    assert group is not None  # else `indices` is None
    if split not in group:
        raise LandscapeError(f"{path} is damaged: its convexity map is on {split} images, and it holds none")
    evaluated = _dataset(group, split, path, MAX_INDICES)
    if indices.size > evaluated.size:  # a subset of the split's evaluated images
        raise LandscapeError(
            f"{path} is damaged: indices/hessian holds {indices.size} images, indices/{split} {evaluated.size}"
        )
    _check_stored_whole(indices, "indices/hessian", path)
    _check_stored_whole(evaluated, f"indices/{split}", path)
    hessian = _index_values(indices, "hessian", path)
    if not np.isin(hessian, _index_values(evaluated, split, path)).all():
        raise LandscapeError(f"{path} is damaged: indices/hessian holds images that indices/{split} does not")
    return CurvatureMap(
        spec=settings,
        smallest=np.asarray(arrays["hessian_min"], dtype=np.float64),
        largest=np.asarray(arrays["hessian_max"], dtype=np.float64),
        products=np.asarray(arrays["hessian_products"], dtype=np.int64),
        computed=np.asarray(arrays[CURVATURE_MASK], dtype=bool),
        indices=hessian,
    )


def _read_spec(f: h5py.File, path: str | Path) -> dict[str, Any]:
    return _settings(f, "spec", path, SurfaceSpec.from_dict, "a damaged spec")


def _settings(
    f: h5py.File, name: str, path: str | Path, check: Callable[[dict[str, Any]], Any], damaged: str
) -> dict[str, Any]:
    """The JSON attribute `name` as a dict, refused unless `check` (a settings class's `from_dict`) accepts it:
    '{path} has a damaged {name} attribute (not JSON)' (or nested more than `MAX_JSON_DEPTH` deep), or
    '{path} has {damaged}: {why}'."""
    text = _attribute(f, name, path)
    try:
        settings = _json(text)
    except json.JSONDecodeError:
        raise LandscapeError(f"{path} has a damaged {name} attribute (not JSON)") from None
    except ValueError as e:  # nested too deeply
        raise LandscapeError(f"{path} has a damaged {name} attribute ({e})") from None
    try:
        check(settings)
    except LandscapeError as e:
        raise LandscapeError(f"{path} has {damaged}: {e}") from None
    return settings


def _attribute(f: h5py.File, name: str, path: str | Path) -> str:
    """A string attribute, its size checked before it is read."""
    value = _attribute_value(f, name, path)
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise LandscapeError(f"{path}: its {name} attribute is not UTF-8 text") from None
    if not isinstance(value, str):
        raise LandscapeError(f"{path}: its {name} attribute is not a string")
    return value


def _attribute_value(f: h5py.File, name: str, path: str | Path) -> Any:
    """An attribute as h5py reads it, its size checked before it is read (a variable-length string's, whose
    storage is a reference to the file's heap, after: its text is in the file, no larger than it)."""
    if name not in f.attrs:
        raise LandscapeError(f"{path} has no {name} attribute")
    size = f.attrs.get_id(name).get_storage_size()
    if size > MAX_SPEC_BYTES:
        raise LandscapeError(f"{path}: its {name} attribute declares {size} bytes, more than {MAX_SPEC_BYTES}")
    value = f.attrs[name]
    if isinstance(value, (str, bytes)) and len(value) > MAX_SPEC_BYTES:
        raise LandscapeError(f"{path}: its {name} attribute holds {len(value)} bytes, more than {MAX_SPEC_BYTES}")
    return value


def _coordinates(f: h5py.File, name: str, path: str | Path, axis: Axis | None = None) -> np.ndarray:
    """A coordinate array, finite, and those of the spec's `axis` (as many, checked before reading, and its values
    to `COORDINATE_TOLERANCE`); without a spec (a file of the paper's code) strictly increasing or decreasing."""
    ds = _dataset(f, name, path, MAX_POINTS)
    if ds.ndim != 1 or ds.shape[0] < 1:
        raise LandscapeError(f"{path} is damaged: {name} has shape {ds.shape}")
    if axis is not None and ds.shape[0] != axis.num:
        raise LandscapeError(f"{path} is damaged: {name} has {ds.shape[0]} values, its spec's grid axis {axis}")
    values = np.asarray(ds[()], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise LandscapeError(f"{path} is damaged: {name} holds non-finite values")
    if axis is not None:
        scale = max(1.0, abs(axis.start), abs(axis.stop))
        if np.max(np.abs(values - axis.coordinates())) > COORDINATE_TOLERANCE * scale:
            raise LandscapeError(f"{path} is damaged: {name} are not the coordinates {axis} of its spec's grid")
    elif len(values) > 1:
        steps = np.diff(values)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise LandscapeError(
                f"{path} is damaged: {name} neither increase nor decrease (repeated or zig-zag values)"
            )
    return values


def _group(parent: h5py.Group, name: str, path: str | Path) -> h5py.Group | None:
    """A group reached through hard links only (None when absent)."""
    node = parent
    for part in name.split("/"):
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise LandscapeError(f"{path}: '{name}' is a {type(link).__name__}, and links are never followed")
        node = node[part]
        if isinstance(node, h5py.Group) and h5py.h5o.get_info(node.id).rc != 1:  # directions/y as directions/x
            raise LandscapeError(f"{path} is damaged: '{name}' is stored under more than one name (hard links)")
        if not isinstance(node, h5py.Group):
            raise LandscapeError(f"{path}: '{name}' is not a group")
    return node


def _dataset(
    parent: h5py.Group, name: str, path: str | Path, max_values: int, *, max_string_bytes: int = 0
) -> h5py.Dataset:
    """A dataset of this very file, checked before anything is read from it.

    Refused: links (soft, external), virtual datasets and external raw storage (they read other files), types
    other than numbers (bool, integers, floats) of at most 8 bytes, and more values than `max_values`. Fixed-size
    strings only where the format has them (`runs`), up to `max_string_bytes` each. So reading it allocates at most
    `max_values` times 8 bytes (or `max_string_bytes`), whatever the file declares.
    """
    link = parent.get(name, getlink=True)
    if link is None:
        raise LandscapeError(f"{path} has no '{name}' dataset")
    if not isinstance(link, h5py.HardLink):
        raise LandscapeError(f"{path}: '{name}' is a {type(link).__name__}, and links are never followed")
    ds = parent[name]
    if not isinstance(ds, h5py.Dataset):
        raise LandscapeError(f"{path}: '{name}' is not a dataset")
    if h5py.h5o.get_info(ds.id).rc != 1:  # e.g. train_acc the same dataset as train_loss: the accuracy overwrote it
        raise LandscapeError(f"{path} is damaged: '{name}' is stored under more than one name (hard links)")
    if ds.is_virtual:
        raise LandscapeError(f"{path}: '{name}' is a virtual dataset (its data would come from other files)")
    if ds.external:
        raise LandscapeError(f"{path}: '{name}' keeps its data in an external file, which is never read")
    strings = ds.dtype.kind == "S" and ds.dtype.itemsize <= max_string_bytes
    if not strings and (ds.dtype.kind not in "biuf" or ds.dtype.itemsize > MAX_NUMBER_BYTES):
        expected = f"strings of at most {max_string_bytes} bytes" if max_string_bytes else "numbers"
        raise LandscapeError(f"{path} is damaged: {name} is {ds.dtype}, not {expected}")
    if ds.size > max_values:
        raise LandscapeError(f"{path}: '{name}' declares {ds.size} values, more than the {max_values} allowed")
    if ds.chunks is not None:  # every piece costs a lookup: a 23 KB file of 1x1 pieces took minutes to read
        piece_bytes = math.prod(ds.chunks) * ds.dtype.itemsize
        if piece_bytes > max(ds.size * ds.dtype.itemsize, MAX_CHUNK_BYTES):  # each is inflated whole when read
            raise LandscapeError(
                f"{path}: '{name}' is stored in HDF5 chunks of {ds.chunks} ({piece_bytes} bytes), larger than its "
                f"{ds.size} values: landscape writes whole arrays (h5repack -l CONTI makes it so)"
            )
        pieces = math.prod(-(-size // chunk) for size, chunk in zip(ds.shape, ds.chunks))
        if pieces > MAX_CHUNKS:
            raise LandscapeError(
                f"{path}: '{name}' is stored in {pieces} pieces (HDF5 chunks of {ds.chunks}), more than the "
                f"{MAX_CHUNKS} allowed: landscape writes whole arrays (h5repack -l CONTI makes it so)"
            )
    return ds


def _read_legacy(f: h5py.File, path: str | Path) -> Surface:
    """Files of github.com/tomgoldstein/loss-landscape: arrays declared (nx, ny) but filled with rows = y,
    -1 for points not computed."""
    names = _metric_arrays(f)
    if "xcoordinates" not in f or not any(n.endswith("_loss") for n in names):
        raise LandscapeError(
            f"{path} is not a surface file (no format attribute, no xcoordinates/train_loss/test_loss datasets)"
        )
    x = _coordinates(f, "xcoordinates", path)
    y = _coordinates(f, "ycoordinates", path) if "ycoordinates" in f else None
    shape = (len(x),) if y is None else (len(y), len(x))
    if int(np.prod(shape)) > MAX_POINTS:
        raise LandscapeError(f"{path} declares a grid of {shape}, more than {MAX_POINTS} points")
    values = {}
    for n in names:
        ds = _metric_dataset(f, n, path)
        if ds.size != int(np.prod(shape)):
            raise LandscapeError(f"{path} is damaged: {n} has {ds.size} values, the grid {shape}")
        values[n] = np.asarray(ds[()], dtype=np.float64).reshape(shape)
    computed = np.ones(shape, dtype=bool)
    for n in values:
        computed &= values[n] != -1
    for n in values:
        values[n] = np.where(computed, values[n], np.nan)
    return Surface(str(path), {"legacy": True}, x, y, values, computed, legacy=True)


@contextlib.contextmanager
def _open(path: str | Path, mode: str = "r") -> Iterator[h5py.File]:
    """The file, open for the block, without HDF5's file locks: the writer is guarded by `writer_lock`, and a reader
    that holds HDF5's lock (h5py's default) must not make the writer fail.

    Reading (mode "r"), whatever else a damaged or crafted file makes HDF5 or numpy raise in the block (data that
    does not convert, an array where a string belongs, a chunk that does not inflate) is one LandscapeError naming it.
    """
    if Path(path).is_dir():  # HDF5 says so in a message of several lines
        raise LandscapeError(f"{path} is a folder, not a surface file")
    try:
        f = h5py.File(path, mode, locking=False)
    except FileNotFoundError:
        raise LandscapeError(f"no such file: {path}") from None
    except OSError as e:
        raise LandscapeError(f"cannot open {path} as HDF5 ({_os_reason(e)})") from None
    with f:
        if mode != "r":
            yield f
            return
        try:
            yield f
        except OSError as e:
            raise LandscapeError(f"cannot read {path}: {_os_reason(e)}") from None
        except (ValueError, TypeError) as e:
            reason = (str(e).splitlines() or [""])[0][:200]
            raise LandscapeError(f"cannot read {path}: {type(e).__name__}: {reason}") from None


def _format(f: h5py.File, path: str | Path) -> str | None:
    """The `format` attribute (None without one); a LandscapeError naming the file when it is not a string."""
    return _attribute(f, "format", path) if "format" in f.attrs else None


def _check_format(f: h5py.File, path: str | Path) -> None:
    if _format(f, path) != FORMAT:
        raise LandscapeError(f"{path} is not a landscape surface file (format attribute missing)")
    raw = _attribute_value(f, "format_version", path) if "format_version" in f.attrs else 0
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise LandscapeError(f"{path} has a damaged format_version ({str(raw)[:20]!r})") from None
    if not 1 <= version <= FORMAT_VERSION:
        raise LandscapeError(f"{path} has format version {version}; this landscape reads 1 to {FORMAT_VERSION}")
