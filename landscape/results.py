"""A results folder: the surface files under one directory, addressed by their paths relative to it.

What the app browses. A name that leads outside the folder (`..`, an absolute path, a symbolic link pointing
elsewhere) is refused, and every failure to read a file, however foreign or broken, is one `LandscapeError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LandscapeError
from .storage import Surface, read_surface

SUFFIXES = (".h5", ".hdf5")


def list_files(root: str | Path) -> list[str]:
    """The relative paths (with '/') of the HDF5 files under `root`, sorted; links leading outside are left out."""
    root = _root(root)
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if name.lower().endswith(SUFFIXES) and not name.startswith(".") and _inside(path.resolve(), root):
                names.append(path.relative_to(root).as_posix())
    return sorted(names)


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
    if not path.is_file():
        raise LandscapeError(f"'{name}' is not a file in the results folder {root}")
    return path


def load(root: str | Path, name: str) -> Surface:
    """Read the surface file `name` of the results folder; any failure becomes one LandscapeError."""
    path = resolve(root, name)
    try:
        return read_surface(path)
    except LandscapeError as e:
        raise LandscapeError(str(e).replace(str(path), name)) from None
    except (OSError, KeyError, ValueError, TypeError) as e:  # HDF5 damage or a foreign layout found while reading
        raise LandscapeError(f"{name} is not a readable surface file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def summary(surface: Surface) -> dict[str, str]:
    """Model, grid, data and completion of a surface, as short strings for a table."""
    spec = surface.spec
    x, y = surface.xcoordinates, surface.ycoordinates
    grid = f"{x[0]:g}..{x[-1]:g} ({len(x)})" + ("" if y is None else f" × {y[0]:g}..{y[-1]:g} ({len(y)})")
    if surface.legacy:
        model, data = "(paper's code: not recorded)", "(not recorded)"
    else:
        ckpt, d = spec.get("checkpoint") or {}, spec.get("data") or {}
        model = str(ckpt.get("arch") or Path(str(ckpt.get("path", "?"))).name)
        data = " ".join(str(v) for v in (d.get("name"), d.get("split")) if v)
        data += f", {d['subset']} images" if d.get("subset") else ", all images"
    done = int(surface.computed.sum())
    return {"model": model, "grid": grid, "data": data,
            "completion": f"{surface.completion:.0%} ({done}/{surface.computed.size})"}


def file_stamp(root: str | Path, name: str) -> tuple[int, int]:
    """(mtime in ns, size) of a file of the folder: a cache key that changes when a computation writes to it."""
    stat = resolve(root, name).stat()
    return stat.st_mtime_ns, stat.st_size


def _root(root: str | Path) -> Path:
    path = Path(root).resolve()
    if not path.is_dir():
        raise LandscapeError(f"results folder {root} does not exist")
    return path


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
