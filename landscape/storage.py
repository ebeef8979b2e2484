"""The surface file: one HDF5 file per surface, readable with plain h5py (see docs/file-format.md).

Results are written point by point into preallocated datasets; `computed` marks the finished points, so a NaN
loss is a result and never a marker. Every write opens, writes and closes the file, so a killed run loses at
most the points in flight and other processes can read the file between writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .directions import Direction
from .errors import LandscapeError

FORMAT = "landscape-surface"
FORMAT_VERSION = 1
METRICS = ("loss", "acc")


@dataclass
class Surface:
    """A surface read from a file: coordinates, metric arrays ([j, i] = f(x[i], y[j]); (nx,) in 1D) and the spec."""

    path: str
    spec: dict[str, Any]
    xcoordinates: np.ndarray
    ycoordinates: np.ndarray | None
    values: dict[str, np.ndarray]
    computed: np.ndarray
    runs: list[dict[str, Any]] = field(default_factory=list)
    legacy: bool = False

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


def metric_names(splits: list[str] | tuple[str, ...]) -> list[str]:
    return [f"{split}_{metric}" for split in splits for metric in METRICS]


def create_surface_file(path: str | Path, spec: dict[str, Any], run: dict[str, Any], shape: tuple[int, ...],
                        coordinates: list[np.ndarray], splits: list[str] | tuple[str, ...],
                        directions: dict[str, Direction], indices: dict[str, np.ndarray]) -> None:
    """Write a new, empty surface file atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["spec"] = json.dumps(spec, sort_keys=True)
            f.attrs["runs"] = json.dumps([run])
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
                f.create_dataset(f"indices/{split}", data=np.asarray(idx, dtype=np.int64))
        tmp.replace(path)
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def is_surface_file(path: str | Path) -> bool:
    try:
        with h5py.File(path, "r", locking=False) as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False


def read_spec(path: str | Path) -> dict[str, Any]:
    """The spec stored in a surface file; a clear error for a file that is not one."""
    with _open(path) as f:
        _check_format(f, path)
        return json.loads(f.attrs["spec"])


def append_run(path: str | Path, run: dict[str, Any]) -> None:
    """Record one more session (environment and options) that worked on this file."""
    with _open(path, "r+") as f:
        runs = json.loads(f.attrs.get("runs", "[]"))
        f.attrs["runs"] = json.dumps(runs + [run])


def write_points(path: str | Path, flat_indices: np.ndarray, results: np.ndarray,
                 splits: list[str] | tuple[str, ...]) -> None:
    """Store results[k, split, metric] at the flat grid indices, then mark them computed."""
    with _open(path, "r+") as f:
        shape = f["computed"].shape
        for k, flat in enumerate(flat_indices):
            where = np.unravel_index(int(flat), shape)
            for s, split in enumerate(splits):
                for m, metric in enumerate(METRICS):
                    f[f"{split}_{metric}"][where] = results[k, s, m]
        f.flush()
        for flat in flat_indices:
            f["computed"][np.unravel_index(int(flat), shape)] = 1


def read_computed(path: str | Path) -> np.ndarray:
    with _open(path) as f:
        return np.asarray(f["computed"][()], dtype=bool)


def read_directions(path: str | Path, axis: str) -> Direction:
    with _open(path) as f:
        _check_format(f, path)
        if f"directions/{axis}" not in f:
            raise LandscapeError(f"{path} has no '{axis}' direction")
        return {name: torch.from_numpy(np.asarray(ds[()])) for name, ds in f[f"directions/{axis}"].items()}


def read_indices(path: str | Path) -> dict[str, np.ndarray]:
    with _open(path) as f:
        return {name: np.asarray(ds[()]) for name, ds in f["indices"].items()} if "indices" in f else {}


def read_surface(path: str | Path) -> Surface:
    """Read a surface file of this project, or one written by the paper's original code."""
    with _open(path) as f:
        if f.attrs.get("format") != FORMAT:
            return _read_legacy(f, path)
        ycoords = np.asarray(f["ycoordinates"][()]) if "ycoordinates" in f else None
        names = [n for n in f if n.endswith(tuple(f"_{m}" for m in METRICS)) and isinstance(f[n], h5py.Dataset)]
        return Surface(str(path), json.loads(f.attrs["spec"]), np.asarray(f["xcoordinates"][()]), ycoords,
                       {n: np.asarray(f[n][()]) for n in names}, np.asarray(f["computed"][()], dtype=bool),
                       json.loads(f.attrs.get("runs", "[]")))


def _read_legacy(f: h5py.File, path: str | Path) -> Surface:
    """Files of github.com/tomgoldstein/loss-landscape: arrays declared (nx, ny) but filled with rows = y,
    -1 for points not computed."""
    if "xcoordinates" not in f or not any(n.endswith("_loss") for n in f):
        raise LandscapeError(f"{path} is not a surface file (no format attribute, no xcoordinates/*_loss datasets)")
    x = np.asarray(f["xcoordinates"][()], dtype=np.float64)
    y = np.asarray(f["ycoordinates"][()], dtype=np.float64) if "ycoordinates" in f else None
    shape = (len(x),) if y is None else (len(y), len(x))
    values = {n: np.asarray(f[n][()], dtype=np.float64).reshape(shape) for n in f
              if n.endswith(("_loss", "_acc")) and isinstance(f[n], h5py.Dataset)}
    computed = np.ones(shape, dtype=bool)
    for n in values:
        computed &= values[n] != -1
    for n in values:
        values[n] = np.where(computed, values[n], np.nan)
    return Surface(str(path), {"legacy": True}, x, y, values, computed, legacy=True)


def _open(path: str | Path, mode: str = "r") -> h5py.File:
    try:
        return h5py.File(path, mode, locking=False) if mode == "r" else h5py.File(path, mode)
    except FileNotFoundError:
        raise LandscapeError(f"no such file: {path}") from None
    except OSError as e:
        raise LandscapeError(f"cannot open {path} as HDF5 ({str(e).splitlines()[0][:200]})") from None


def _check_format(f: h5py.File, path: str | Path) -> None:
    if f.attrs.get("format") != FORMAT:
        raise LandscapeError(f"{path} is not a landscape surface file (format attribute missing)")
    version = int(f.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise LandscapeError(f"{path} has format version {version}; this landscape reads up to {FORMAT_VERSION}")
