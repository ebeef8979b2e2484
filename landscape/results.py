"""A results folder: the surface files under one directory, addressed by their paths relative to it, and
`describe`, how a surface is named wherever it is shown.

What the app browses. A name that leads outside the folder (`..`, an absolute path, a symbolic link pointing
elsewhere) is refused, and every failure to read a file, however foreign or broken, is one `LandscapeError`.
`Summaries` keeps the row of each file of the folder's table until the file changes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .directions import DirectionSpec
from .errors import LandscapeError
from .storage import Surface, read_surface

SUFFIXES = (".h5", ".hdf5")
COLUMNS = ("model", "grid", "data", "completion")  # of a table of surfaces: `Description.columns`


def list_files(root: str | Path) -> list[str]:
    """The relative paths (with '/') of the HDF5 files under `root`, sorted; links leading outside or in a loop, and
    names that `resolve` would refuse (control characters, bytes that are not UTF-8), are left out."""
    root = _root(root)
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if name.lower().endswith(SUFFIXES) and not name.startswith(".") and _listable(path, root):
                names.append(path.relative_to(root).as_posix())
    return sorted(names)


def _listable(path: Path, root: Path) -> bool:
    try:
        name = path.relative_to(root).as_posix()
        name.encode()  # a name of bytes that are not UTF-8 could not be sent to the page
        return not any(ord(c) < 32 for c in name) and _inside(path.resolve(), root)
    except (OSError, RuntimeError, ValueError):  # a symbolic link loop (RuntimeError before Python 3.13)
        return False


def resolve(root: str | Path, name: str) -> Path:
    """The file `name` inside `root`, resolved; a LandscapeError for a name leading outside it or missing."""
    root = _root(root)
    if not name or len(name) > 4096 or any(ord(c) < 32 for c in name):
        raise LandscapeError(f"{name[:80]!r} is not a file name of the results folder")
    try:
        path = (root / name).resolve()
    except (OSError, ValueError, RuntimeError):  # e.g. a symbolic link loop
        raise LandscapeError(f"{name[:80]!r} is not a file name of the results folder") from None
    if Path(name).is_absolute() or not _inside(path, root):
        raise LandscapeError(f"'{name}' is outside the results folder {root}")
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a name part longer than the file system allows (is_file passes that error on)
        is_file = False
    if not is_file:
        raise LandscapeError(f"{name[:80]!r} is not a file in the results folder {root}")
    return path


def load(root: str | Path, name: str) -> Surface:
    """Read the surface file `name` of the results folder; any failure becomes one LandscapeError."""
    path = resolve(root, name)
    try:
        return read_surface(path)
    except LandscapeError as e:
        raise LandscapeError(str(e).replace(str(path), name)) from None
    except Exception as e:  # HDF5 damage or a foreign layout found while reading, or anything nobody foresaw
        raise LandscapeError(f"{name} is not a readable surface file ({failure(e)})") from None


def failure(error: BaseException) -> str:
    """An exception in one short line: its type and the first line of its message."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


class Summaries:
    """The rows of a results folder's table (`summary`), read again only when its file's `file_stamp` changed,
    so that redrawing the table of a large folder reads nothing unchanged. Rows of files no longer listed are
    forgotten: what is kept follows the listing, however many files it has. Safe to share between threads."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[Stamp, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, root: str | Path, names: list[str]) -> list[dict[str, str]]:
        """One row per name: 'file', the `COLUMNS` and 'status' ('ok', or why the file cannot be read)."""
        folder = str(_root(root))
        out = []
        for name in names:
            try:
                stamp = file_stamp(folder, name)
            except LandscapeError as e:
                out.append(_failed(name, str(e)))
                continue
            with self._lock:
                kept = self._rows.get((folder, name))
            if kept is None or kept[0] != stamp:
                kept = (stamp, summary(folder, name))
                with self._lock:
                    self._rows[(folder, name)] = kept
            out.append(kept[1])
        listed = {(folder, name) for name in names}
        with self._lock:
            for key in [k for k in self._rows if k not in listed]:
                del self._rows[key]
        return out


def summary(root: str | Path, name: str) -> dict[str, str]:
    """The row of the file `name` in the table of its folder: 'file', the `COLUMNS` and 'status'."""
    try:
        return {"file": name, **describe(load(root, name)).columns(), "status": "ok"}
    except LandscapeError as e:
        return _failed(name, str(e))
    except Exception as e:  # a spec that reads but cannot be described
        return _failed(name, f"{name} cannot be described ({failure(e)})")


def _failed(name: str, why: str) -> dict[str, str]:
    return {"file": name, **dict.fromkeys(COLUMNS, ""), "status": why}


@dataclass(frozen=True, kw_only=True)
class Description:
    """A surface named in short strings: the one naming of `landscape info`, the app and the figure titles.

    title: the file's stem (figure and panel titles). label: the model and the file (a row of `landscape compare`).
    kind: what the file is. model: the architecture, else the checkpoint's file name. checkpoint: its path and
    sha256. directions: one line per axis. sessions: the recorded sessions, or why they cannot be read. A file
    of the paper's code records no spec: its fields say so, and checkpoint, evaluation and directions are empty.
    """

    title: str
    label: str
    kind: str
    model: str
    checkpoint: str | None
    data: str
    directions: dict[str, str]
    evaluation: str | None
    grid: str
    completion: str
    sessions: str | None

    def columns(self) -> dict[str, str]:
        """The columns of a table of surfaces (`COLUMNS`)."""
        return {"model": self.model, "grid": self.grid, "data": self.data, "completion": self.completion}

    def fields(self) -> dict[str, str]:
        """Every field the file records, labelled, in the order `landscape info` prints them."""
        model = self.model if self.checkpoint is None else f"{self.model} from {self.checkpoint}"
        out = {"model": model, "data": self.data}
        out.update({f"{axis} direction": text for axis, text in self.directions.items()})
        if self.evaluation is not None:
            out["evaluation"] = self.evaluation
        return {**out, "grid": self.grid, "completion": self.completion}


def describe(surface: Surface) -> Description:
    """Name a surface: model, data, directions, evaluation, grid, completion (see `Description`)."""
    spec = surface.surface_spec
    x, y = surface.xcoordinates, surface.ycoordinates
    if spec is None:
        return Description(
            title=Path(surface.path).stem,
            label=Path(surface.path).name,
            kind="surface file of the paper's original code (no spec recorded)",
            model="(paper's code: not recorded)",
            checkpoint=None,
            data="(not recorded)",
            directions={},
            evaluation=None,
            grid=_grid(x, y),
            completion=_completion(surface),
            sessions=_sessions(surface),
        )
    ckpt, data = spec.checkpoint, spec.data
    model = ckpt.arch or Path(ckpt.path).name
    images = f"{data.subset} images (seed {data.seed})" if data.subset else "all images"
    evaluated = {split: surface.images[split] for split in ("train", "test") if split in surface.images}
    if data.subset and any(n != data.subset for n in evaluated.values()):  # --subset above a split's size: all
        counts = ", ".join(f"{split} {n}" for split, n in evaluated.items())
        images = f"{counts} images (--subset {data.subset} asked; seed {data.seed})"
    return Description(
        title=Path(surface.path).stem,
        label=f"{model} ({Path(surface.path).name})",
        kind="landscape surface",
        model=model,
        checkpoint=ckpt.path + (f" (sha256 {ckpt.sha256[:12]})" if ckpt.sha256 else ""),
        data=f"{data.name} {data.split}, {images}",
        directions={axis: _direction(d) for axis, d in (("x", spec.x), ("y", spec.y)) if d},
        evaluation=f"{spec.evaluation.precision}, BatchNorm {spec.evaluation.bn}",
        grid=_grid(x, y),
        completion=_completion(surface),
        sessions=_sessions(surface),
    )


def _grid(x: np.ndarray, y: np.ndarray | None) -> str:
    return f"x {x[0]:g}..{x[-1]:g} ({len(x)})" + ("" if y is None else f", y {y[0]:g}..{y[-1]:g} ({len(y)})")


def _completion(surface: Surface) -> str:
    return f"{surface.completion:.1%} ({int(surface.computed.sum())}/{surface.computed.size})"


def _direction(d: DirectionSpec) -> str:
    if d.kind == "random":
        what = f"random seed {d.seed}, norm {d.norm}, ignore {d.ignore}"
    elif d.kind == "pca":
        what = f"principal component {d.index} of the trajectory, ignore {d.ignore}"
    elif d.kind == "hessian":
        what = f"Hessian eigenvector {d.index} of {d.source}"
    else:
        what = f"target {d.target}" if d.kind == "target" else f"from {d.source}"
    return f"{what} ({d.dir_type})"


def _sessions(surface: Surface) -> str | None:
    if surface.runs_error:
        return surface.runs_error
    if not surface.runs:
        return None
    last = surface.runs[-1]
    return f"{len(surface.runs)} recorded, the last started {last.get('started', '?')} on {last.get('device', '?')}"


Stamp = tuple[int, int, int, int, int]


def file_stamp(root: str | Path, name: str) -> Stamp:
    """(mtime and ctime in ns, size, inode, device) of a file of the folder: a cache key that changes when a
    computation writes to it, and when it is replaced by another file (whose mtime `cp -p` or `rsync -t` may have
    set back; no one sets the ctime)."""
    try:
        stat = resolve(root, name).stat()
    except OSError as e:  # removed since it was listed
        raise LandscapeError(f"{name} cannot be read ({failure(e)})") from None
    return stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino, stat.st_dev


def _root(root: str | Path) -> Path:
    try:
        path = Path(root).resolve()
    except (OSError, RuntimeError, ValueError):  # a symbolic link loop
        raise LandscapeError(f"results folder {root} cannot be resolved") from None
    if not path.is_dir():
        raise LandscapeError(f"results folder {root} does not exist")
    return path


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
