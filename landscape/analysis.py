"""Numbers that describe a surface's shape, so that surfaces can be compared with more than pictures.

Pure functions over a 2D array `values[j, i] = f(x[i], y[j])` and its coordinates, and `compare`, which applies
them to several surfaces. Non-finite or not-computed points are treated as missing (NaN) throughout.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import LandscapeError
from .results import describe
from .storage import Surface

TURN_TOLERANCE = 0.01  # relative: about the largest bf16 rounding measured on a trained surface (docs/results)


@dataclass(frozen=True, kw_only=True)
class ShapeSummary:
    """How the surface looks around θ*.

    center: f at the grid point nearest (0, 0). minimum: the lowest value on the grid.
    basin_area: area (in α·β units) of the connected region around the center where f < level
    (its share of the grid points times the grid's area).
    basin_fraction: that area over the grid's area.
    local_minima: grid points lower than all of their (up to 8) neighbours.
    roughness: mean |second difference| along x and y, divided by the grid spacing squared (a curvature scale).
    turns_per_line: turning points along a grid line, averaged over all rows and columns, counting only those
    where f moves back by more than `tolerance` (relative) (scale-free: 1 for a convex bowl whose minimum is
    inside the grid, 0 for a plane, more for a chaotic surface).
    nonconvex_fraction: share of interior points whose finite-difference Hessian has a negative eigenvalue.
    """

    level: float
    tolerance: float
    center: float
    minimum: float
    basin_area: float
    basin_fraction: float
    local_minima: int
    roughness: float
    turns_per_line: float
    nonconvex_fraction: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def center_index(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """[j, i] of the grid point nearest (0, 0), i.e. nearest θ*."""
    return int(np.argmin(np.abs(y))), int(np.argmin(np.abs(x)))


def check_center(path: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Refuse a grid on which θ* (0, 0) is not a point (an even number of points on [-1, 1]): the shape numbers
    start from the centre, and its nearest point would stand in for it silently."""
    j, i = center_index(x, y)
    for axis, coordinates, k in (("α", x, i), ("β", y, j)):
        spacing = float(np.max(np.abs(np.diff(coordinates)))) if len(coordinates) > 1 else 1.0
        if abs(float(coordinates[k])) > 1e-6 * spacing:
            raise LandscapeError(
                f"{path}: θ* is not a grid point (the {axis} value nearest 0 is {float(coordinates[k]):.4g}): "
                "compare starts from the centre; compute the surface with an odd number of points on a range "
                "symmetric about 0"
            )


def basin_mask(values: np.ndarray, x: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    """The 4-connected region of points with f < level that contains the center (empty if the center is above)."""
    below = np.isfinite(values) & (values < level)
    mask = np.zeros_like(below)
    start = center_index(x, y)
    if not below[start]:
        return mask
    queue = deque([start])
    mask[start] = True
    while queue:
        j, i = queue.popleft()
        for dj, di in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nj, ni = j + dj, i + di
            if 0 <= nj < below.shape[0] and 0 <= ni < below.shape[1] and below[nj, ni] and not mask[nj, ni]:
                mask[nj, ni] = True
                queue.append((nj, ni))
    return mask


def local_minima(values: np.ndarray) -> int:
    """Points strictly lower than every finite neighbour among their 8 neighbours."""
    v = np.where(np.isfinite(values), values, np.inf)
    padded = np.pad(v, 1, constant_values=np.inf)
    ny, nx = v.shape
    is_min = np.isfinite(v)
    for dj in (-1, 0, 1):
        for di in (-1, 0, 1):
            if dj or di:
                is_min &= v < padded[1 + dj : 1 + dj + ny, 1 + di : 1 + di + nx]
    return int(is_min.sum())


def roughness(values: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute second difference along both axes over the squared spacing (0 for a plane)."""
    hx, hy = x[1] - x[0], y[1] - y[0]
    dxx = (values[:, 2:] - 2 * values[:, 1:-1] + values[:, :-2]) / hx**2
    dyy = (values[2:, :] - 2 * values[1:-1, :] + values[:-2, :]) / hy**2
    both = np.concatenate([dxx[np.isfinite(dxx)], dyy[np.isfinite(dyy)]])
    return float(np.abs(both).mean()) if both.size else float("nan")


def turns_per_line(values: np.ndarray, tolerance: float = 0.0) -> float:
    """Turning points along each row and column, averaged over the lines.

    A turn counts when f moves back against its trend by more than `tolerance` times |f| at the turning point
    (a prominence, relative because evaluation errors such as bf16's are relative): 0 counts every sign change of
    the slope, 0.01 ignores wiggles under 1%. Flat steps never count; missing points are skipped. Unchanged by
    scaling f.
    """
    values = np.asarray(values, dtype=np.float64)
    turns = [_turns(line[np.isfinite(line)], tolerance) for lines in (values, values.T) for line in lines]
    counts = [c for c in turns if c is not None]
    return float(np.mean(counts)) if counts else float("nan")


def _turns(line: np.ndarray, tolerance: float) -> int | None:
    if line.size < 2:
        return None
    low = high = extreme = float(line[0])
    trend, turns = 0, 0  # trend: +1 rising, -1 falling, 0 not yet moved by more than the tolerance
    for v in map(float, line[1:]):
        if trend == 0:
            low, high = min(low, v), max(high, v)
            if v - low > tolerance * abs(low):
                trend, extreme = 1, v
            elif high - v > tolerance * abs(high):
                trend, extreme = -1, v
        elif (v - extreme) * trend > 0:
            extreme = v
        elif abs(v - extreme) > tolerance * abs(extreme):
            trend, extreme, turns = -trend, v, turns + 1
    return turns


def nonconvex_fraction(values: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Share of interior points where the central-difference Hessian [[fxx, fxy], [fxy, fyy]] is not PSD: its smaller
    eigenvalue below zero by more than float64 rounding of the differences can make (a valley or a plane, exactly
    convex, is none; a stored fp32 or bf16 surface's own rounding still counts)."""
    values = np.asarray(values, dtype=np.float64)
    hx, hy = abs(x[1] - x[0]), abs(y[1] - y[0])
    c = values[1:-1, 1:-1]
    fxx = (values[1:-1, 2:] - 2 * c + values[1:-1, :-2]) / hx**2
    fyy = (values[2:, 1:-1] - 2 * c + values[:-2, 1:-1]) / hy**2
    fxy = (values[2:, 2:] - values[2:, :-2] - values[:-2, 2:] + values[:-2, :-2]) / (4 * hx * hy)
    smallest = 0.5 * (fxx + fyy) - np.sqrt(0.25 * (fxx - fyy) ** 2 + fxy**2)
    ny, nx = values.shape
    stencil = np.stack([values[j : j + ny - 2, i : i + nx - 2] for j in range(3) for i in range(3)])
    largest = np.abs(stencil).max(axis=0)  # each difference's rounding is at most a few eps of it
    rounding = 16 * np.finfo(np.float64).eps * largest * (4 / hx**2 + 4 / hy**2 + 1 / (hx * hy))
    finite = np.isfinite(smallest) & np.isfinite(rounding)
    return float((smallest[finite] < -rounding[finite]).mean()) if finite.any() else float("nan")


def summarize(
    values: np.ndarray, x: np.ndarray, y: np.ndarray, level: float, tolerance: float = TURN_TOLERANCE
) -> ShapeSummary:
    """All of the above for one 2D surface; `tolerance` is that of `turns_per_line`."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(y), len(x)) or len(x) < 3 or len(y) < 3:
        raise ValueError("summarize needs a 2D surface of at least 3x3 points with matching coordinates")
    mask = basin_mask(values, x, y, level)
    grid_area = abs((x[-1] - x[0]) * (y[-1] - y[0]))  # the paper's files may run from +1 to -1
    finite = values[np.isfinite(values)]
    return ShapeSummary(
        level=level,
        tolerance=tolerance,
        center=float(values[center_index(x, y)]),
        minimum=float(finite.min()) if finite.size else float("nan"),
        basin_area=float(mask.mean() * grid_area),
        basin_fraction=float(mask.mean()),
        local_minima=local_minima(values),
        roughness=roughness(values, x, y),
        turns_per_line=turns_per_line(values, tolerance),
        nonconvex_fraction=nonconvex_fraction(values, x, y),
    )


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The shape numbers of several 2D surfaces, for one metric at one basin level and turn tolerance.

    rows: (name, numbers) per surface, in the order given; the name is `describe(surface).label`.
    """

    metric: str
    level: float
    tolerance: float
    rows: tuple[tuple[str, ShapeSummary], ...]


def comparison_record(comparison: Comparison, surfaces: Sequence[Surface]) -> dict[str, Any]:
    """The comparison as JSON-able data: its settings, and per surface its file, name, completion and numbers (a
    number that is not finite, such as the non-convex share of a surface with no inner point computed, is None)."""
    return {
        "metric": comparison.metric,
        "level": comparison.level,
        "tolerance": comparison.tolerance,
        "surfaces": [
            {
                "file": str(surface.path),
                "name": name,
                "completion": surface.completion,
                **{k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in asdict(numbers).items()},
            }
            for surface, (name, numbers) in zip(surfaces, comparison.rows, strict=True)
        ],
    }


def compare(
    surfaces: Sequence[Surface],
    metric: str = "train_loss",
    level: float | None = None,
    tolerance: float = TURN_TOLERANCE,
) -> Comparison:
    """`summarize` every surface at one level: `level`, by default twice the largest value at the center."""
    if metric.endswith("_acc"):
        raise LandscapeError(
            f"compare measures a loss (a basin below a level, minima, convexity): {metric} is an accuracy, use "
            f"{metric[: -len('acc')]}loss"
        )
    grids = []
    for surface in surfaces:
        if surface.ycoordinates is None:
            raise LandscapeError(f"{surface.path} is a 1D surface: compare takes 2D ones")
        if len(surface.xcoordinates) < 3 or len(surface.ycoordinates) < 3:
            raise LandscapeError(
                f"{surface.path} has {len(surface.xcoordinates)}x{len(surface.ycoordinates)} points: compare needs "
                "at least 3x3"
            )
        if metric not in surface.values:
            raise LandscapeError(f"{surface.path} has no '{metric}' (it has {', '.join(surface.values) or 'nothing'})")
        values = np.where(surface.computed, np.asarray(surface.values[metric], dtype=np.float64), np.nan)
        check_center(surface.path, surface.xcoordinates, surface.ycoordinates)
        grids.append((values, surface.xcoordinates, surface.ycoordinates))
    if level is not None and not math.isfinite(level):
        raise LandscapeError(f"--level must be a finite number, got {level}")
    if level is None:
        for surface, (values, x, y) in zip(surfaces, grids):
            center = values[center_index(x, y)]
            if not np.asarray(surface.computed)[center_index(x, y)]:
                raise LandscapeError(
                    f"{surface.path}: its point nearest θ* is not computed yet, and the default level is twice the "
                    "largest there: pass --level, or finish the surface"
                )
            if not np.isfinite(center):
                raise LandscapeError(
                    f"{surface.path}: its point nearest θ* has no finite {metric} ({center}), and the default level "
                    "is twice the largest there: pass --level"
                )
        level = 2 * float(max(values[center_index(x, y)] for values, x, y in grids))
        if not math.isfinite(level):  # a centre loss beyond 9e307
            raise LandscapeError(f"the default level, twice the largest centre {metric}, is {level}: pass --level")
    rows = tuple(
        (describe(surface).label, summarize(values, x, y, level, tolerance))
        for surface, (values, x, y) in zip(surfaces, grids)
    )
    return Comparison(metric=metric, level=level, tolerance=tolerance, rows=rows)
