"""The demo: skips against no skips in a few minutes (`landscape demo`).

`run_demo(DemoSettings())` computes the surfaces of a shipped pair of models (`<pair>.pt` and `<pair>_noshort.pt`)
on one grid, directions and images, compares their shape numbers and draws them side by side on one colour scale.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from .analysis import Comparison, compare
from .data import DataSpec, find_cifar_folder
from .directions import DirectionSpec
from .errors import LandscapeError
from .evaluate import EvalSpec, RunOptions
from .grid import Axis, GridSpec
from .hardware import PRECISIONS, resolve_device
from .spec import CheckpointSpec, SurfaceSpec
from .storage import Surface
from .surface import Progress, compute_surface

METRIC = "train_loss"


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    """pair: resnet56 or resnet20, computed with and without skips (`<checkpoints>/<pair>[_noshort].pt`).
    data_root: None for $LANDSCAPE_DATA_ROOT, else ./data (`demo_data_root`); CIFAR-10 is downloaded there when
    missing. grid: points per axis over [-1, 1]. subset: training images evaluated."""

    checkpoints: Path = Path("checkpoints")
    pair: str = "resnet56"
    out: Path = Path("results/demo")
    data_root: str | None = None
    grid: int = 13
    subset: int = 256
    precision: str = "fp32"
    device: str = "auto"

    @property
    def archs(self) -> tuple[str, str]:
        return self.pair, f"{self.pair}_noshort"


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    """The surfaces computed, their comparison on `METRIC`, the figures written and why others were not."""

    surfaces: tuple[Surface, ...]
    comparison: Comparison
    figures: tuple[Path, ...]
    skipped: tuple[str, ...]


def demo_data_root(data_root: str | None) -> Path:
    """`data_root`, else $LANDSCAPE_DATA_ROOT, else ./data."""
    return Path(data_root or os.environ.get("LANDSCAPE_DATA_ROOT") or "data")


def run_demo(
    settings: DemoSettings,
    *,
    overwrite: bool = False,
    notify: Callable[[str], None] = lambda message: None,
    progress: Callable[[], AbstractContextManager[Progress | None]] = contextlib.nullcontext,
) -> DemoResult:
    """Compute the pair's surfaces into `settings.out` (resuming them, refusing ones of other settings; `overwrite`:
    computed again and replaced), compare them and write their figures (replacing the demo's own).

    `notify` gets a line before each step; `progress()` gives a context with the progress callback of one
    surface. Figures that cannot be made (plotly, kaleido or a browser missing) are left out and said why.
    """
    if settings.grid < 3 or settings.grid % 2 == 0:
        raise LandscapeError(
            f"--grid {settings.grid}: the demo compares surfaces of an odd number (at least 3) of points per axis, "
            "so that θ* is the centre point"
        )
    if settings.subset < 1:
        raise LandscapeError(f"--subset must be a positive number of images, got {settings.subset}")
    if settings.precision not in PRECISIONS:  # checked before any folder is made
        raise LandscapeError(f"--precision must be one of {', '.join(PRECISIONS)}, not {settings.precision!r}")
    resolve_device(settings.device)
    axis = Axis(start=-1.0, stop=1.0, num=settings.grid)
    GridSpec(x=axis, y=axis).validate()
    if settings.out.exists() and not settings.out.is_dir():
        raise LandscapeError(f"--out {settings.out} is a file: the demo writes a folder of surfaces and figures")
    paths = [settings.checkpoints / f"{arch}.pt" for arch in settings.archs]
    for arch, path in zip(settings.archs, paths):
        if not path.is_file():
            raise LandscapeError(
                f"no checkpoint {path}: run the demo from the repository root, pass --checkpoints, "
                f"or train one: landscape train --arch {arch} --out runs/{arch} "
                f"&& cp runs/{arch}/checkpoint.pt {path}"
            )
    root = demo_data_root(settings.data_root)
    root.mkdir(parents=True, exist_ok=True)
    download = find_cifar_folder(root, "cifar10") is None
    if download:
        notify(f"CIFAR-10 is not under {root}: downloading it there")
    settings.out.mkdir(parents=True, exist_ok=True)
    surfaces = []
    for arch, path in zip(settings.archs, paths):
        spec = SurfaceSpec(
            checkpoint=CheckpointSpec(path=str(path)),
            data=DataSpec(root=str(root), subset=settings.subset, download=download),
            grid=GridSpec(x=axis, y=axis),
            x=DirectionSpec(seed=0),
            y=DirectionSpec(seed=1),
            evaluation=EvalSpec(precision=settings.precision),
        )
        out = settings.out / f"{arch}.h5"
        notify(f"{arch}: {settings.grid}x{settings.grid} surface on {settings.subset} training images -> {out}")
        with progress() as callback:
            surfaces.append(
                compute_surface(spec, out, RunOptions(device=settings.device), overwrite=overwrite, progress=callback)
            )
    comparison = compare(surfaces, METRIC)
    figures, skipped = _write_figures(surfaces, settings.out, settings.pair)
    return DemoResult(surfaces=tuple(surfaces), comparison=comparison, figures=figures, skipped=skipped)


def _write_figures(surfaces: list[Surface], out: Path, pair: str) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """The pair side by side: interactive 3D (HTML), contours and 3D for a paper (PDF), named after the pair (the
    other pair's figures in the same folder stay); and what was skipped."""
    try:
        import plotly.graph_objects  # noqa: F401 (plots imports it on first use)

        from .export import write_figure
        from .plots import PlotOptions, compare_figure, paper_layout
    except ImportError:
        return (), ("figures skipped: pip install plotly kaleido (see docs/app.md)",)
    options = PlotOptions(metric=METRIC, log=True)
    written = [
        write_figure(compare_figure(surfaces, "surface", options), out / f"{pair}_surfaces.html", overwrite=True)
    ]
    try:
        for kind in ("contour", "surface"):
            fig = paper_layout(compare_figure(surfaces, kind, options), width="page")
            written.append(write_figure(fig, out / f"{pair}_{kind}s.pdf", overwrite=True))
    except LandscapeError as e:
        return tuple(written), (f"static figures skipped: {e}",)
    return tuple(written), ()
