"""Writing output files (figures, tables, reports): never over an existing file unless asked, never a torn one.

A figure or table may have been edited by hand and a Hessian report took minutes to hours, so an existing file is
replaced only with `overwrite=True` (the CLI's `--overwrite`). The bytes go to a temporary file in the same
folder that is then renamed over the target, so a kill or a full disk leaves the old file or the new one whole.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import LandscapeError


def check_writable(path: str | Path, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """The path to write, once its folder exists and takes a new file (a probe is created and removed: a read-only
    folder is found before minutes of work, not after), it is none of `inputs`, and it is new (or `overwrite`)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise LandscapeError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise LandscapeError(f"cannot write {path}: it is a folder")
    check_not_input(path, inputs)
    if path.exists() and not overwrite:
        raise LandscapeError(f"{path} exists: pass --overwrite to replace it, or choose another file")
    probe = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))
        probe.unlink()
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def check_not_input(path: str | Path, inputs: Sequence[str | Path]) -> None:
    """Refuse to write `path` when it is one of `inputs` (by file identity: another spelling or a link is caught),
    with or without --overwrite: replacing an input destroys it."""
    path = Path(path)
    for source in inputs:
        if path.exists() and Path(source).exists() and path.samefile(source):
            raise LandscapeError(f"{path} is an input of this command: write the output elsewhere")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A new, empty temporary file next to `path` for the block to write; renamed over `path` when the block ends
    without an error, removed when it fails. Its name is random and it is created anew (`O_EXCL`, `O_NOFOLLOW`): a
    file or link planted in the folder is never written through."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))
    try:
        yield temporary
        os.replace(temporary, path)
    finally:  # after an error or an interrupt; once renamed it is gone already
        temporary.unlink(missing_ok=True)


def write_file(path: str | Path, data: bytes, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """Write `data` to `path` whole (temporary file, then rename), after `check_writable`.

    The temporary file is created anew under a random name (`O_EXCL`: a file or link planted in the folder is
    never opened, let alone followed) and synced to disk before the rename.
    """
    path = check_writable(path, overwrite, inputs)
    try:
        with replacing(path) as temporary, open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise LandscapeError(f"cannot write {path}: {e.strerror or e}") from None
    return path
