"""Figures of loss surfaces: pure functions from a `Surface` to a `plotly.graph_objects.Figure`.

No I/O and no `.show()`: the app shows the figures, `landscape.export` writes them. Points that are not computed
or not finite (a diverged loss) are gaps, and values beyond ±`HUGE` count as infinite; `clip` caps the values at a
maximum first (so an infinite loss shows at the cap), `log` shows log10 of the values with tick labels in the
metric's own units, and one `zrange` colours several surfaces on one scale. `compare_figure` puts surfaces side by
side on one shared colour axis, `difference_figure` draws A − B on a shared grid and `curve_figure` a 1D slice.

α and β are drawn to one scale (a unit of α is as long as a unit of β, in 2D and 3D) unless the two directions
are of different kinds or normalizations (`PlotOptions.aspect`). Automatic contour levels are log-spaced above the
best value (dense in the basin, as in the paper's figures) and the same levels are drawn as lines, filled bands,
and as lines projected under the 3D surface.

A surface on PCA directions of a training run carries its path (`Surface.trajectory`): contour maps, heat maps and
3D views draw it (`PlotOptions.path`) with a marker at each snapshot, the start and θ* labelled and a few epochs
written beside their markers, and its axes name the principal components with the share of variance of each.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from plotly.colors import named_colorscales, sample_colorscale
    from plotly.subplots import make_subplots
else:  # imported on first use: the data exports (`landscape export --csv`) need numpy only, not the [app] extra

    class _Lazy:
        def __init__(self, module: str) -> None:
            self._module = module

        def __getattr__(self, name: str) -> Any:
            import importlib

            return getattr(importlib.import_module(self._module), name)

    go = _Lazy("plotly.graph_objects")

    def named_colorscales() -> list[str]:
        return _Lazy("plotly.colors").named_colorscales()

    def sample_colorscale(*args: Any, **kwargs: Any) -> Any:
        return _Lazy("plotly.colors").sample_colorscale(*args, **kwargs)

    def make_subplots(*args: Any, **kwargs: Any) -> Any:
        return _Lazy("plotly.subplots").make_subplots(*args, **kwargs)


from .errors import LandscapeError
from .results import describe
from .storage import Surface, TrajectoryPath

KINDS = ("surface", "contour", "filled", "heatmap", "1d")
SPACINGS = ("log", "even")  # automatic contour levels: dense near the best value, or evenly spaced
ASPECTS = ("auto", "equal", "free")
ALONG = ("x", "y", "angle")  # a `Slice`: a row, a column, or a line through θ*
AUTO_LEVELS = 20
ZSCALE = 0.6  # height of the 3D box over the longer of its α and β sides
CENTER_NAME = "θ*"
PATH_NAME = "training path"
PATH_COLOR = "#d62728"
PATH_LABELS = 4  # epochs written beside their markers, besides the start's
_PATH_STEPS = 12  # points per path segment in 3D, so that the line follows the surface between snapshots
PAPER_WIDTHS = {"column": 3.25, "page": 6.75}  # inches: one column and the full text width of two-column papers
SERIF = "Times New Roman, Times, Liberation Serif, Nimbus Roman, serif"
PX_PER_INCH = 96  # CSS pixels, which is what the headless browser prints to PDF with
DEFAULT_COLORSCALE = "Viridis"
DIVERGING = "RdBu_r"  # colours of a difference: blue where A is below B, red where above
_SPLIT_COLORS = {"train": "#1f77b4", "test": "#d62728"}
_TAN_HALF_FOVY = 0.44  # plotly's 3D camera sees ±0.44 x distance up and down (measured: a 47.5° field of view)
_BOX_ROOM = 4  # lines of text (font sizes) that a paper's 3D box takes at least, inside the scene's labels
_FLOOR_GAP = 0.35  # the floor under the 3D surface, as a fraction of the z range below its minimum
HUGE = 1e150  # values beyond ±HUGE are drawn as infinite: ranges, squares and levels of larger ones overflow float64
MAX_LEVELS = 1000  # chosen contour levels (START:END:SIZE) at most
DISPLAY_POINTS = 201  # `thin`: grid points along α and β that a browser draws quickly (contours of 1001² take minutes)
DISPLAY_STRETCHES = 2000  # `thin` of a 1D surface: stretches of α, each drawn by its lowest and highest values
MIN_INCHES = 0.25  # a paper figure's smallest width and height: 0.42 of it is 10 px, plotly's smallest figure
MIN_FONT_PT = 1.0  # plotly's smallest font is 1 px (0.75 pt)


@dataclass(frozen=True)
class Levels:
    """Evenly spaced contour levels start, start + size, ... up to end.

    start and end are in the metric's units; size too on a linear scale, in decades on a log scale
    (Levels(0.01, 10, 0.25) gives four levels a decade there).
    """

    start: float
    end: float
    size: float

    def __post_init__(self) -> None:
        if not (self.size > 0 and self.end >= self.start):
            raise LandscapeError(
                f"contour levels need size > 0 and end >= start (got {self.start}:{self.end}:{self.size})"
            )


@dataclass(frozen=True)
class Camera:
    """A view of the 3D surface in matplotlib's angles: `elev` degrees above the α-β plane, `azim` degrees
    counter-clockwise from the α axis (Camera(30, -60) is matplotlib's default view); `zoom` > 1 comes closer
    than the distance at which the whole box fits."""

    elev: float = 30.0
    azim: float = -60.0
    zoom: float = 1.0

    def __post_init__(self) -> None:
        if not (-90 <= self.elev <= 90 and math.isfinite(self.azim) and self.zoom > 0):
            raise LandscapeError(
                f"a view needs -90 <= elev <= 90 and zoom > 0 (got elev {self.elev}, azim {self.azim})"
            )


CAMERAS = {
    "oblique": Camera(),
    "low": Camera(elev=15),
    "top": Camera(elev=90, azim=-90),
    "α profile": Camera(elev=0, azim=-90),
    "β profile": Camera(elev=0, azim=0),
}


@dataclass(frozen=True)
class Slice:
    """A line through a 2D surface: `along` 'x' is the grid row nearest β = `at`, 'y' the grid column nearest
    α = `at`, 'angle' the line through θ* at `at` degrees from the α axis (bilinear between grid points)."""

    along: str = "x"
    at: float = 0.0

    def __post_init__(self) -> None:
        if self.along not in ALONG or not math.isfinite(self.at):
            raise LandscapeError(f"a slice runs along {', '.join(ALONG)} at a finite value (got {self})")


@dataclass(frozen=True, kw_only=True)
class PlotOptions:
    """How a metric is drawn; the same options work for every kind of figure.

    levels: a `Levels` range or explicit values in the metric's units (one line each, named in the legend);
    None picks about `AUTO_LEVELS` round levels over the colour range, `spacing` 'log' (log-spaced above the best
    value: the minimum of a loss, the maximum of an accuracy) or 'even'. labels: write the values on the lines.
    zrange: the colour (and 3D z) range in the metric's units; None takes the data's range after clipping.
    aspect: 'equal' draws α and β to one scale, 'free' fills the plot, 'auto' is 'equal' unless the two
    directions differ in kind or normalization. zscale: 3D height over the longer of the α and β sides.
    floor: the contour lines projected under the 3D surface. line: the 1D slice of a 2D surface that kind '1d'
    draws (by default its row nearest β = 0). path: draw the training path of a surface on PCA directions.
    """

    metric: str = "train_loss"
    log: bool = False
    clip: float | None = None
    zrange: tuple[float, float] | None = None
    levels: Levels | tuple[float, ...] | None = None
    spacing: str = "log"
    labels: bool = False
    colorscale: str = DEFAULT_COLORSCALE
    mark_center: bool = True
    aspect: str = "auto"
    zscale: float = ZSCALE
    camera: Camera = Camera()
    floor: bool = True
    line: Slice = Slice()
    path: bool = True

    def __post_init__(self) -> None:
        if self.spacing not in SPACINGS:
            raise LandscapeError(f"unknown level spacing '{self.spacing}': use {', '.join(SPACINGS)}")
        if self.aspect not in ASPECTS:
            raise LandscapeError(f"unknown aspect '{self.aspect}': use {', '.join(ASPECTS)}")
        if not (self.zscale > 0 and math.isfinite(self.zscale)):
            raise LandscapeError(f"the 3D height must be a positive number (got {self.zscale})")
        if self.zrange is not None and not self.zrange[0] <= self.zrange[1]:
            lo, hi = self.zrange
            raise LandscapeError(f"colour range: the minimum {lo:g} is above the maximum {hi:g}")
        if self.zrange is not None and not all(abs(v) <= HUGE for v in self.zrange):
            raise LandscapeError(f"colour range: the ends must lie within ±{HUGE:g} (got {self.zrange})")
        if self.clip is not None and not abs(self.clip) <= HUGE:
            raise LandscapeError(f"clip must lie within ±{HUGE:g} (got {self.clip:g})")
        if self.clip is not None and self.log and not self.clip > 0:  # every value clipped to it: nothing drawn
            raise LandscapeError(f"a log scale needs a positive clip (got {self.clip:g})")
        if self.colorscale != DEFAULT_COLORSCALE and not is_colorscale(self.colorscale):  # no plotly for the default
            raise LandscapeError(
                f"unknown colour scale '{self.colorscale}': use a plotly scale such as Viridis, Cividis, Plasma, "
                "Inferno, Turbo or RdBu (add _r to reverse one)"
            )


def is_colorscale(name: str) -> bool:
    """Whether plotly knows the colour scale `name` (any case, with _r for the reversed scale)."""
    return isinstance(name, str) and name.lower().removesuffix("_r") in named_colorscales()


def parse_levels(text: str) -> Levels | tuple[float, ...]:
    """'START:END:SIZE' (a `Levels` range) or 'A, B, C' (explicit levels)."""
    levels: Levels | tuple[float, ...]
    ends: tuple[float, ...]
    try:
        if ":" in text:
            start, end, size = (float(v) for v in text.split(":"))
            levels, ends = Levels(start, end, size), (start, end)
        else:
            levels = ends = tuple(sorted(float(v) for v in text.replace(",", " ").split()))
    except ValueError:
        raise LandscapeError(f"contour levels '{text}': use START:END:SIZE or a list like 0.5,1,2") from None
    if not ends:
        raise LandscapeError("no contour levels given")
    if not all(abs(v) <= HUGE for v in ends):  # NaN too
        raise LandscapeError(f"contour levels '{text}': levels must lie within ±{HUGE:g}")
    return levels


def parse_slice(text: str) -> Slice:
    """'x=B' (the row nearest β = B), 'y=A' (the column nearest α = A) or 'angle=D' (through θ* at D degrees)."""
    along, sep, at = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return Slice(along.strip(), float(at))
    except (ValueError, LandscapeError):
        raise LandscapeError(f"slice '{text}': use x=BETA, y=ALPHA or angle=DEGREES, e.g. x=0 or angle=45") from None


def plain_text(text: str) -> str:
    """Text from a file (its name, the model it records) for a plotly title, legend entry or panel title, shown as it
    is: plotly reads a few HTML tags (`<a href=...>` makes a link) and entities there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def metric_label(metric: str) -> str:
    """'train_loss' -> 'train loss', 'test_acc' -> 'test accuracy (%)'."""
    split, _, kind = metric.rpartition("_")
    return f"{split} accuracy (%)" if kind == "acc" else f"{split} {kind}".strip()


def metric_order(names: Sequence[str]) -> list[str]:
    """train before test before other splits, loss before accuracy."""

    def key(name: str) -> tuple:
        split, _, kind = name.rpartition("_")
        return {"train": 0, "test": 1}.get(split, 2), split, kind != "loss"

    return sorted(names, key=key)


def default_metric(surfaces: Sequence[Surface], losses_only: bool = False) -> str:
    """The metric drawn when none is named: the first loss every surface holds (train before test), else (unless
    `losses_only`) their first common metric."""
    common = [m for m in metric_order(surfaces[0].metrics) if all(m in s.values for s in surfaces)]
    losses = [m for m in common if m.endswith("_loss")]
    if losses or (common and not losses_only):
        return (losses or common)[0]
    held = " and ".join(", ".join(metric_order(list(s.metrics))) or "nothing" for s in surfaces)
    kind = "loss" if losses_only else "metric"
    raise LandscapeError(f"{' and '.join(str(s.path) for s in surfaces)} hold no {kind} in common ({held})")


def higher_is_better(metric: str) -> bool:
    """Accuracies have their basin at the maximum, losses at the minimum."""
    return metric.endswith("_acc")


def metric_values(surface: Surface, metric: str) -> np.ndarray:
    """The metric with NaN wherever the point is not computed yet and ±inf for values beyond ±HUGE."""
    values = _stored_values(surface, metric)
    return np.where(np.abs(values) > HUGE, np.copysign(np.inf, values), values)


def extreme_count(surface: Surface, metric: str) -> int:
    """How many computed values of `metric` are finite but beyond ±HUGE, and so drawn as infinite."""
    values = _stored_values(surface, metric)
    return int((np.isfinite(values) & (np.abs(values) > HUGE)).sum())


def _stored_values(surface: Surface, metric: str) -> np.ndarray:
    """The metric as the file holds it, NaN where not computed (what the hover shows)."""
    if metric not in surface.values:
        raise LandscapeError(f"{surface.path} has no metric '{metric}' (it has {', '.join(surface.metrics)})")
    return np.where(surface.computed, np.asarray(surface.values[metric], dtype=np.float64), np.nan)


def require_points(surface: Surface, what: str = "draw") -> None:
    """Refuse a surface with no computed point: there is nothing to `what`."""
    if not np.asarray(surface.computed).any():
        raise LandscapeError(f"{surface.path} has no computed point yet: nothing to {what}")


def require_drawable(surface: Surface, options: PlotOptions) -> None:
    """Refuse a surface with no computed point, or (on a log scale) with no positive value of the metric: the
    figure would be empty."""
    require_points(surface)
    if options.log and not np.isfinite(_drawable(surface, options, options.metric)).any():
        raise LandscapeError(f"{surface.path} has no positive {options.metric} to draw on a log scale")


def displayed(surface: Surface, options: PlotOptions, metric: str | None = None) -> np.ndarray:
    """The values as drawn: clipped at `options.clip`, log10 if `options.log`, NaN where there is nothing to draw."""
    z = _drawable(surface, options, metric or options.metric)
    return np.log10(z) if options.log else z


def value_range(
    surfaces: Sequence[Surface], options: PlotOptions, metrics: Sequence[str] | None = None
) -> tuple[float, float] | None:
    """The common (min, max) of the drawn values of several surfaces, in the metric's units; None if none."""
    parts = [_drawable(s, options, m) for s in surfaces for m in (metrics or [options.metric])]
    finite = np.concatenate([p[np.isfinite(p)] for p in parts])
    return (float(finite.min()), float(finite.max())) if finite.size else None


def _drawable(surface: Surface, options: PlotOptions, metric: str) -> np.ndarray:
    """The metric clipped, NaN where it cannot be drawn (not computed, not finite, not positive on a log scale)."""
    z = metric_values(surface, metric)
    if options.clip is not None:
        z = np.minimum(z, options.clip)
    return np.where(np.isfinite(z) & ((z > 0) if options.log else True), z, np.nan)


def equal_axes(surface: Surface, options: PlotOptions) -> bool:
    """Whether α and β are drawn to one scale: `options.aspect`, where 'auto' means yes unless the two directions
    differ in kind or normalization (a unit of α is then not comparable to a unit of β)."""
    if options.aspect != "auto":
        return options.aspect == "equal"
    spec = surface.surface_spec
    if spec is None or spec.y is None:
        return True
    return spec.x.kind == spec.y.kind and spec.x.norm == spec.y.norm


# --- contour levels and lines ------------------------------------------------------------------------------------


def auto_levels(
    lo: float, hi: float, spacing: str = "log", count: int = AUTO_LEVELS, best: str = "min"
) -> tuple[float, ...]:
    """About `count` round contour levels strictly inside (lo, hi).

    'even': a 1-2-2.5-5 step. 'log': levels at distances from the best end (`best` 'min' or 'max') that grow
    geometrically from eps to the whole range, eps being the smaller of 1% of the range and the distance of lo
    from 0 (so that a loss falling to 1e-3 gets levels in every decade down to it); each is rounded to two
    significant digits of its distance from the best end.
    """
    span = hi - lo
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(span)) or hi <= lo:
        return ()
    if spacing == "even":
        raw = span / count
        exponent = 10.0 ** math.floor(math.log10(raw))
        size = next(m * exponent for m in (1, 2, 2.5, 5, 10) if m * exponent >= raw * (1 - 1e-9))
        first = math.floor(lo / size + 1e-9) + 1
        values = [_rounded(k * size) for k in range(first, math.ceil(hi / size - 1e-9))]
        return tuple(v for v in values if lo < v < hi)
    if spacing != "log":
        raise LandscapeError(f"unknown level spacing '{spacing}': use {', '.join(SPACINGS)}")
    edge = abs(hi) if best == "max" else abs(lo)
    eps = min(span / 100, edge) if edge > 0 else span / 100
    levels = []
    for g in np.geomspace(eps, span, count + 1)[:-1]:
        step = 10.0 ** (math.floor(math.log10(g)) - 1)
        if step == 0:  # g a subnormal number: no round level there
            continue
        distance = round(g / step) * step
        value = hi - distance if best == "max" else lo + distance
        levels.append(_rounded(round(value / step) * step))
    return tuple(sorted({v for v in levels if lo < v < hi}))


def _rounded(value: float) -> float:
    """`value` to 12 significant digits: 0.30000000000000004 -> 0.3, and 7.5e-12 stays 7.5e-12."""
    return float(f"{value:.12g}")


def contour_levels(crange: tuple[float, float] | None, options: PlotOptions) -> tuple[float, ...]:
    """The contour levels in the metric's units for a colour range `crange` (in the metric's units)."""
    if isinstance(options.levels, tuple):
        values = options.levels
    elif isinstance(options.levels, Levels):
        lv = options.levels
        if options.log:
            if lv.start <= 0:
                raise LandscapeError("a log scale needs positive contour levels")
            steps = (math.log10(lv.end) - math.log10(lv.start)) / lv.size
        else:
            steps = (lv.end - lv.start) / lv.size
        if not steps < MAX_LEVELS:  # inf and NaN too
            raise LandscapeError(
                f"{lv.start:g}:{lv.end:g}:{lv.size:g} gives too many contour levels: take a larger size"
            )
        count = math.floor(steps + 1e-9) + 1
        if options.log:
            values = tuple(float(f"{lv.start * 10.0 ** (k * lv.size):.10g}") for k in range(count))
        else:
            values = tuple(_rounded(lv.start + k * lv.size) for k in range(count))
    elif crange is None:
        return ()
    else:
        best = "max" if higher_is_better(options.metric) else "min"
        values = auto_levels(crange[0], crange[1], options.spacing, AUTO_LEVELS, best)
    if options.log and any(v <= 0 for v in values):
        raise LandscapeError("a log scale needs positive contour levels")
    return tuple(values)


def contour_segments(x: np.ndarray, y: np.ndarray, z: np.ndarray, level: float) -> np.ndarray:
    """The contour line z = level as segments, shape (n, 2, 2): [k, end, (x, y)], by marching squares with
    linear interpolation along the cell edges. Cells with a NaN corner have no segment; a saddle cell is split by
    the value at its centre."""
    z = np.asarray(z, dtype=np.float64)
    z00, z10, z11, z01 = z[:-1, :-1], z[:-1, 1:], z[1:, 1:], z[1:, :-1]
    valid = np.isfinite(z00) & np.isfinite(z10) & np.isfinite(z11) & np.isfinite(z01)
    gx0, gy0 = np.meshgrid(x[:-1], y[:-1])
    gx1, gy1 = np.meshgrid(x[1:], y[1:])

    def crossing(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit = valid & ((a < level) != (b < level))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(hit, (level - a) / (b - a), np.nan)
        return hit, t

    hb, tb = crossing(z00, z10)  # bottom edge, y = y[j]
    hr, tr = crossing(z10, z11)  # right edge, x = x[i + 1]
    ht, tt = crossing(z01, z11)  # top edge, y = y[j + 1]
    hl, tl = crossing(z00, z01)  # left edge, x = x[i]
    points = [
        (hb, np.stack([gx0 + tb * (gx1 - gx0), gy0], -1)),
        (hr, np.stack([gx1, gy0 + tr * (gy1 - gy0)], -1)),
        (ht, np.stack([gx0 + tt * (gx1 - gx0), gy1], -1)),
        (hl, np.stack([gx0, gy0 + tl * (gy1 - gy0)], -1)),
    ]
    hits = np.stack([h for h, _ in points])  # (4, ny-1, nx-1)
    coords = np.stack([p for _, p in points])  # (4, ny-1, nx-1, 2)
    count = hits.sum(axis=0)
    segments = []
    two = count == 2
    if two.any():
        order = np.argsort(~hits[:, two], axis=0, kind="stable")[:2]  # the two crossed edges, in edge order
        chosen = coords[:, two]  # (4, m, 2)
        m = np.arange(chosen.shape[1])
        segments.append(np.stack([chosen[order[0], m], chosen[order[1], m]], axis=1))
    four = count == 4
    if four.any():
        center_low = ((z00 + z10 + z11 + z01) / 4 < level)[four]
        corner_low = (z00 < level)[four]
        joined = center_low == corner_low  # z00 and z11 connect through the centre: cut off z10 and z01
        b, r, t, left = (coords[e][four] for e in range(4))
        first = np.where(joined[:, None], np.stack([b, r], 1).reshape(-1, 4), np.stack([left, b], 1).reshape(-1, 4))
        second = np.where(joined[:, None], np.stack([left, t], 1).reshape(-1, 4), np.stack([r, t], 1).reshape(-1, 4))
        segments += [first.reshape(-1, 2, 2), second.reshape(-1, 2, 2)]
    return np.concatenate(segments) if segments else np.empty((0, 2, 2))


def _contour_traces(
    x: np.ndarray,
    y: np.ndarray,
    values: np.ndarray,
    levels: Sequence[float],
    options: PlotOptions,
    crange: tuple[float, float] | None,
    filled: bool,
    named: bool,
    hover: dict[str, Any],
) -> list[go.Contour]:
    """One trace per level (lines) or per band (filled: each shades the region at or above its level over the
    band below), so that any levels are drawn exactly; `values` in the metric's units."""
    drawn = [math.log10(v) if options.log else v for v in levels]
    traces = []
    if filled:
        finite = values[np.isfinite(values)]
        bottom = float(finite.min()) - 1 if finite.size else 0.0
        edges = [bottom, *levels]
        shades = [*drawn, crange[1] if crange else drawn[-1] if drawn else 0.0]
        starts = [crange[0] if crange else shades[0], *drawn]
        for k, (edge, lo, hi) in enumerate(zip(edges, starts, shades)):
            traces.append(
                go.Contour(
                    x=x,
                    y=y,
                    z=values,
                    contours=dict(type="constraint", operation="<", value=edge),
                    fillcolor=_color_at(options, crange, (lo + hi) / 2),
                    line=dict(width=0.5 if k else 0, color="rgba(0,0,0,0.35)"),
                    showlegend=False,
                    name=f"≥ {edge:g}",
                    **(hover if k == 0 else dict(hoverinfo="skip")),
                )
            )
        return traces
    for k, (value, level) in enumerate(zip(levels, drawn)):
        traces.append(
            go.Contour(
                x=x,
                y=y,
                z=values,
                autocontour=False,
                showscale=False,
                name=f"{value:g}",
                legendgroup=f"{value:g}",
                showlegend=named,
                contours=dict(
                    start=value,
                    end=value,
                    size=1,
                    coloring="none",
                    showlabels=options.labels,
                    labelformat=".4~g",
                ),
                line=dict(color=_color_at(options, crange, level), width=1.5 if named else 1.2),
                **(hover if k == 0 else dict(hoverinfo="skip")),
            )
        )
    return traces


# --- figures ------------------------------------------------------------------------------------------------------


def figure(surface: Surface, kind: str, options: PlotOptions) -> go.Figure:
    """The figure of one surface: kind is one of KINDS."""
    makers = {
        "surface": surface_figure,
        "contour": contour_figure,
        "heatmap": heatmap_figure,
        "1d": curve_figure,
        "filled": lambda s, o: contour_figure(s, o, filled=True),
    }
    if kind not in makers:
        raise LandscapeError(f"unknown figure kind '{kind}': use {', '.join(KINDS)}")
    return makers[kind](surface, options)


def surface_figure(surface: Surface, options: PlotOptions) -> go.Figure:
    """The 3D surface with the contour lines projected under it and θ* marked on it (a dot joined to the floor)."""
    require_drawable(surface, options)
    x, y = _grid(surface)
    z = displayed(surface, options)
    crange = _display_range(surface, options)
    fig = go.Figure(
        go.Surface(
            x=x,
            y=y,
            z=z,
            coloraxis="coloraxis",
            name=plain_text(describe(surface).title),
            **_hover_data(surface, options.metric),
            contours=dict(z=dict(highlight=True, highlightcolor="white", highlightwidth=1)),
            lighting=dict(ambient=0.75, diffuse=0.6, specular=0.05, roughness=0.9),
        )
    )
    floor = zaxis_range = None
    if crange is not None:  # padded, so that a flat surface does not lie in the floor of the box
        pad = 0.02 * (crange[1] - crange[0]) or 0.05 * max(abs(crange[0]), 1.0)
        floor = crange[0] - (_FLOOR_GAP * (crange[1] - crange[0]) or pad) if options.floor else crange[0] - pad
        zaxis_range = [floor - pad if options.floor else floor, crange[1] + pad]  # lines above the box's bottom
    if options.floor and floor is not None:
        trace = _floor_contours(x, y, metric_values(surface, options.metric), floor, options, crange)
        if trace is not None:
            fig.add_trace(trace)
    for trace in _path_3d(surface, options, x, y, z, floor if options.floor else None):
        fig.add_trace(trace)
    if options.mark_center and _contains_origin(x, y):
        for trace in _center_3d(x, y, z, floor if options.floor else None):
            fig.add_trace(trace)
    ticks = _log_ticks(crange, options.log, most=5) if options.log else _linear_ticks(crange, count=4)
    zaxis = dict(title=dict(text=metric_label(options.metric)), **ticks)
    if zaxis_range is not None:
        zaxis["range"] = zaxis_range
    coloraxis = _coloraxis(options, crange)
    coloraxis["colorbar"].update(  # under the scene, which can spare height better than width
        orientation="h", x=0.5, xanchor="center", y=0, yanchor="top", len=0.6, thickness=12
    )
    coloraxis["colorbar"]["title"]["side"] = "top"
    fig.update_layout(
        coloraxis=coloraxis,
        scene=_scene(
            x,
            y,
            options,
            equal_axes(surface, options),
            zaxis,
            describe(surface).title,
            axis_titles(surface, short=True),
        ),
        margin=dict(l=0, r=0, t=30, b=0),
        uirevision=describe(surface).title,
    )
    return fig


def contour_figure(surface: Surface, options: PlotOptions, filled: bool = False) -> go.Figure:
    """Contour lines (or filled bands) at the chosen levels, with θ* marked."""
    require_drawable(surface, options)
    x, y = _grid(surface)
    values = _drawable(surface, options, options.metric)
    crange = _display_range(surface, options)
    levels = contour_levels(_metric_range(crange, options), options)
    named = isinstance(options.levels, tuple)
    if named and filled:
        raise LandscapeError(
            "filled contours take evenly spaced levels (START:END:SIZE); a list of levels draws contour lines"
        )
    hover = _hover_data(surface, options.metric)
    fig = go.Figure(_contour_traces(x, y, values, levels, options, crange, filled, named, hover))
    if not named:
        fig.add_trace(_colorbar_carrier(x, y, crange))
    fig.add_traces(_path_2d(surface, options))
    _clip_to_grid(fig, surface, options, cells=False)
    _add_center(fig, x, y, options, _drawn_path(surface, options))
    fig.update_layout(
        coloraxis=_coloraxis(options, crange),
        **_plane_axes(equal_axes(surface, options), axis_titles(surface)),
        uirevision=_title(surface),
    )
    return fig


def heatmap_figure(surface: Surface, options: PlotOptions) -> go.Figure:
    """Each grid point as a cell coloured by its value, with θ* marked."""
    require_drawable(surface, options)
    x, y = _grid(surface)
    crange = _display_range(surface, options)
    fig = go.Figure(
        go.Heatmap(
            x=x,
            y=y,
            z=displayed(surface, options),
            coloraxis="coloraxis",
            name=plain_text(describe(surface).title),
            **_hover_data(surface, options.metric),
        )
    )
    fig.add_traces(_path_2d(surface, options))
    _clip_to_grid(fig, surface, options, cells=True)
    _add_center(fig, x, y, options, _drawn_path(surface, options))
    fig.update_layout(
        coloraxis=_coloraxis(options, crange),
        **_plane_axes(equal_axes(surface, options), axis_titles(surface)),
        uirevision=_title(surface),
    )
    return fig


def slice_values(surface: Surface, line: Slice, metric: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(positions along the line, the metric there with NaN where not computed, the axis title, which names the
    row or column drawn) of a 1D slice; a 1D surface is its own slice."""
    values = metric_values(surface, metric)
    if surface.ycoordinates is None:
        return surface.xcoordinates, values, "α"
    x, y = surface.xcoordinates, surface.ycoordinates
    if line.along == "x":
        row = slice_index(surface, line)
        return x, values[row], f"α (β = {y[row]:.4g})"
    if line.along == "y":
        col = slice_index(surface, line)
        return y, values[:, col], f"β (α = {x[col]:.4g})"
    t, px, py = _angle_line(x, y, line.at)
    return t, _bilinear(x, y, values, px, py), f"distance from {CENTER_NAME} at {line.at:g}° from α"


def thin(surface: Surface, most: int | None = None) -> Surface:
    """The 2D surface on every k-th grid point along α and along β, k the smallest that leaves at most `most`
    (default `DISPLAY_POINTS`) on each axis, taken through the points nearest θ* (0, 0): a large grid for a browser
    to draw. A 1D surface longer than 2 x `DISPLAY_STRETCHES` keeps its envelope (`envelope_indices`). The surface
    itself where it is small enough; its convexity map is left out."""
    most = most or DISPLAY_POINTS
    x, y = surface.xcoordinates, surface.ycoordinates
    if y is None:
        if len(x) <= 2 * DISPLAY_STRETCHES:
            return surface
        kept = envelope_indices(surface, DISPLAY_STRETCHES)
        return replace(
            surface,
            xcoordinates=x[kept],
            values={name: np.asarray(v)[kept] for name, v in surface.values.items()},
            computed=surface.computed[kept],
            curvature=None,
        )
    if len(x) <= most and len(y) <= most:
        return surface
    ix, iy = (_thinned(c, most) for c in (x, y))
    cells = np.ix_(iy, ix)
    return replace(
        surface,
        xcoordinates=x[ix],
        ycoordinates=y[iy],
        values={name: np.asarray(v)[cells] for name, v in surface.values.items()},
        computed=surface.computed[cells],
        curvature=None,
    )


def envelope_indices(surface: Surface, stretches: int) -> np.ndarray:
    """Indices of the points of a 1D surface that draw its curves as the whole would at a screen's resolution: in
    each of `stretches` equal runs of points, for every metric, the lowest and the highest computed value and the
    first point that is not finite or not computed (so a gap stays a gap); the first and last points and θ*'s."""
    n = len(surface.xcoordinates)
    bounds = np.linspace(0, n, stretches + 1).astype(int)
    keep = [np.array([0, n - 1, int(np.argmin(np.abs(surface.xcoordinates)))])]
    for values in surface.values.values():
        v = np.asarray(values, dtype=np.float64)
        shown = surface.computed & np.isfinite(v)
        for start, end in itertools.pairwise(bounds):
            part, ok = v[start:end], shown[start:end]
            if ok.any():
                where = np.flatnonzero(ok)
                keep.append(start + where[[np.argmin(part[ok]), np.argmax(part[ok])]])
            if not ok.all():
                keep.append(np.array([start + int(np.argmin(ok))]))
    return np.unique(np.concatenate(keep))


def _thinned(coordinates: np.ndarray, most: int) -> np.ndarray:
    """Indices of at most `most` coordinates: every k-th, k the smallest that leaves few enough, through the one
    nearest 0, and the first and last (the drawn grid spans the whole one; its last steps may be shorter)."""
    if len(coordinates) <= most:
        return np.arange(len(coordinates))
    k = math.ceil(len(coordinates) / most)
    while True:
        chosen = _every(coordinates, k)
        if len(chosen) <= most:
            return chosen
        k += 1


def _every(coordinates: np.ndarray, k: int) -> np.ndarray:
    """Indices of every k-th coordinate, through the one nearest 0, and the first and last."""
    every = np.arange(int(np.argmin(np.abs(coordinates))) % k, len(coordinates), k)
    return np.unique(np.r_[0, every, len(coordinates) - 1])


def slice_path(surface: Surface, line: Slice) -> tuple[np.ndarray, np.ndarray]:
    """The (α, β) points of a slice of a 2D surface, to draw it on a contour map or heat map."""
    x, y = _grid(surface)
    if line.along == "x":
        return x, np.full_like(x, y[slice_index(surface, line)])
    if line.along == "y":
        return np.full_like(y, x[slice_index(surface, line)]), y
    _, px, py = _angle_line(x, y, line.at)
    return px, py


def slice_title(surface: Surface, line: Slice) -> str:
    """Where a slice lies, in words: 'β = 0', 'α = 0.5' or 'through θ* at 45°'."""
    if surface.ycoordinates is None:
        return ""
    x, y = surface.xcoordinates, surface.ycoordinates
    if line.along == "x":
        return f"β = {y[slice_index(surface, line)]:.4g}"
    if line.along == "y":
        return f"α = {x[slice_index(surface, line)]:.4g}"
    return f"through {CENTER_NAME} at {line.at:g}°"


def slice_index(surface: Surface, line: Slice) -> int:
    """The grid row (`along` 'x') or column ('y') nearest `line.at`, which must lie within the grid's range."""
    name, other = ("β", "y") if line.along == "x" else ("α", "x")
    coordinates = getattr(surface, f"{other}coordinates")
    if coordinates is None or line.along not in ("x", "y"):
        raise LandscapeError(f"{surface.path}: a slice along {line.along} needs a 2D surface")
    lo, hi = float(coordinates.min()), float(coordinates.max())
    slack = 1e-9 * max(hi - lo, 1.0)  # a value typed as the grid's end, which linspace may miss in the last digit
    if not lo - slack <= line.at <= hi + slack:
        raise LandscapeError(
            f"slice {line.along}={line.at:g} is outside {surface.path}: its {name} runs from {lo:g} to {hi:g}"
        )
    return int(np.argmin(np.abs(coordinates - line.at)))


def curve_figure(
    surface: Surface,
    options: PlotOptions,
    metrics: Sequence[str] | None = None,
    line: Slice | None = None,
    *,
    loss_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Losses on the left axis and accuracies (dashed) on the right along a 1D surface or a `Slice` of a 2D one
    (`line`, by default `options.line`). `options.log` and, where `options.metric` is a loss, `options.clip` apply
    to the losses; `loss_range`, else
    `options.zrange` where `options.metric` is a loss (the colour range of an accuracy is no loss range), fixes the
    loss axis range. The legend sits above the plot, clear of both axes' ticks."""
    require_points(surface)
    metrics = list(metrics or metric_order(surface.metrics))
    loss_names = [m for m in metrics if not higher_is_better(m)]
    if options.log and loss_names and not any((metric_values(surface, m) > 0).any() for m in loss_names):
        raise LandscapeError(f"{surface.path} has no positive loss to draw on a log scale")
    line = line or options.line
    where = slice_title(surface, line)
    title = plain_text(describe(surface).title) + (f" ({where})" if where else "")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    clip = None if higher_is_better(options.metric) else options.clip  # an accuracy's clip is in percent
    losses = []
    position = np.empty(0)
    axis_title = "α"
    for m in metrics:
        split, _, kind = m.rpartition("_")
        is_acc = kind == "acc"
        position, values, axis_title = slice_values(surface, line, m)
        values = np.where(np.isfinite(values), values, np.nan)
        if not is_acc:
            if clip is not None:
                values = np.minimum(values, clip)
            values = np.where(values > 0, values, np.nan) if options.log else values
            losses.append(values)
        fig.add_trace(
            go.Scatter(
                x=position,
                y=values,
                name=metric_label(m),
                mode="lines",
                line=dict(color=_SPLIT_COLORS.get(split), dash="dash" if is_acc else "solid"),
            ),
            secondary_y=is_acc,
        )
    loss_range = loss_range or _loss_range(options)
    finite = np.concatenate([v[np.isfinite(v)] for v in losses] + [np.empty(0)])
    if loss_range is None and clip is not None and finite.size:
        loss_range = (float(finite.min()), clip)
    loss_axis: dict[str, Any] = dict(title_text="loss", type="log" if options.log else "linear")
    if loss_range is not None:
        loss_axis["range"] = [math.log10(v) for v in loss_range] if options.log else list(loss_range)
    if options.log and finite.size:
        lo, hi = loss_range or (float(finite.min()), float(finite.max()))
        loss_axis.update(_log_axis_ticks(math.log10(lo), math.log10(hi)))
    fig.update_yaxes(secondary_y=False, **loss_axis)
    fig.update_yaxes(
        secondary_y=True, title_text="accuracy (%)", range=[0, 100], tickvals=[0, 25, 50, 75, 100], showgrid=False
    )
    fig.update_xaxes(title_text=axis_title)
    if options.mark_center and position.size and position.min() <= 0 <= position.max():
        fig.add_vline(x=0, line=dict(color="grey", width=1, dash="dot"))
    fig.update_layout(
        title=dict(text=title),
        hovermode="x unified",
        legend=dict(orientation="h", x=0, xanchor="left", y=1.05, yanchor="bottom"),
        uirevision=f"{_title(surface)} | {_loss_scale(options)}",
    )
    return fig


def _loss_range(options: PlotOptions) -> tuple[float, float] | None:
    """The range of the loss axis of a 1D figure: `options.zrange` where the metric is a loss, else None."""
    return None if higher_is_better(options.metric) else options.zrange


def _loss_scale(options: PlotOptions) -> str:
    """The units of the loss axis of a 1D figure, for its `uirevision`: a zoom on a linear axis is no zoom on a log
    one (the app's kept view blanked the curves)."""
    return "log loss" if options.log else "loss"


def shared_grid(a: Surface, b: Surface, options: PlotOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(α, β, drawn A − drawn B) on A's grid: B is taken as it is where the grids are the same, else linearly
    interpolated at A's points inside B's grid (NaN outside). Drawn values are clipped and, with `log`, log10, so
    that the difference is then log10(A / B)."""
    xa, ya = _grid(a)
    xb, yb = _grid(b)
    za, zb = displayed(a, options), displayed(b, options)
    if xa.shape == xb.shape and ya.shape == yb.shape and np.allclose(xa, xb) and np.allclose(ya, yb):
        return xa, ya, za - zb
    gx, gy = np.meshgrid(xa, ya)
    return xa, ya, za - _bilinear(xb, yb, zb, gx.ravel(), gy.ravel()).reshape(za.shape)


def difference_figure(a: Surface, b: Surface, options: PlotOptions, titles: Sequence[str] | None = None) -> go.Figure:
    """A − B as a heat map on A's grid (`shared_grid`), blue where A is lower, red where higher, on a colour scale
    symmetric about 0, with the line where they are equal; `options.zrange` is not used."""
    for surface in (a, b):
        require_points(surface)
    x, y, diff = shared_grid(a, b, options)
    names = [plain_text(n) for n in (titles or [describe(a).title, describe(b).title])]
    label = metric_label(options.metric)
    what = f"log10 {label} ratio (A / B)" if options.log else f"{label} difference (A − B)"
    finite = np.abs(diff[np.isfinite(diff)])
    reach = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig = go.Figure(
        go.Heatmap(
            x=x,
            y=y,
            z=diff,
            coloraxis="coloraxis",
            name=f"{names[0]} − {names[1]}",
            hovertemplate=f"α=%{{x:.3g}}<br>β=%{{y:.3g}}<br>{what}=%{{z:.4g}}<extra></extra>",
        )
    )
    if finite.size and np.nanmin(diff) < 0 < np.nanmax(diff):
        fig.add_trace(
            go.Contour(
                x=x,
                y=y,
                z=diff,
                autocontour=False,
                showscale=False,
                contours=dict(start=0, end=0, size=1, coloring="none"),
                line=dict(color="black", width=1.2, dash="dot"),
                name="A = B",
                showlegend=False,
                hoverinfo="skip",
            )
        )
    _add_center(fig, x, y, options)
    fig.update_layout(
        title=dict(text=f"{names[0]} − {names[1]} (dotted: equal)"),
        coloraxis=dict(
            colorscale=DIVERGING,
            cmin=-reach,
            cmax=reach,
            colorbar=dict(title=dict(text=what, side="right")),
        ),
        **_plane_axes(equal_axes(a, options)),
        uirevision=" − ".join(names),
    )
    return fig


def compare_figure(
    surfaces: Sequence[Surface], kind: str, options: PlotOptions, titles: Sequence[str] | None = None
) -> go.Figure:
    """Surfaces side by side in one figure on one colour axis (one colour bar) over their common range, with the
    same z (3D) or loss (1D) range, so that equal colours and heights mean equal values."""
    if kind not in KINDS:
        raise LandscapeError(f"unknown figure kind '{kind}': use {', '.join(KINDS)}")
    loss_range = None
    if kind == "1d":  # one loss range: the colour range of a loss, else the common losses' own
        losses = [m for m in surfaces[0].metrics if m.endswith("_loss") and all(m in s.values for s in surfaces)]
        loss_range = _loss_range(options) or (value_range(surfaces, options, losses) if losses else None)
    elif options.zrange is None:
        options = replace(options, zrange=value_range(surfaces, options))
    panels = [
        curve_figure(s, options, loss_range=loss_range) if kind == "1d" else figure(s, kind, options) for s in surfaces
    ]
    n = len(panels)
    equal = kind in ("contour", "filled", "heatmap") and all(equal_axes(s, options) for s in surfaces)
    spec = {"type": "scene"} if kind == "surface" else {"secondary_y": True} if kind == "1d" else {}
    names = [plain_text(n) for n in (titles or [describe(s).title for s in surfaces])]
    fig = make_subplots(
        rows=1,
        cols=n,
        specs=[[spec] * n],
        horizontal_spacing=0.06 if kind == "surface" else 0.1 if equal or kind == "1d" else 0.08,
        subplot_titles=names,
        shared_yaxes=kind in ("contour", "filled", "heatmap") and not equal,
    )
    for col, panel in enumerate(panels, start=1):
        for trace in panel.data:
            trace.showlegend = trace.showlegend if col == 1 else False
            fig.add_trace(trace, row=1, col=col, **({"secondary_y": trace.yaxis == "y2"} if kind == "1d" else {}))
        for shape in panel.layout.shapes:
            fig.add_vline(x=shape.x0, line=shape.line, row=1, col=col)
        if kind == "surface":
            scene = panel.layout.scene.to_plotly_json()
            scene.pop("domain", None)
            fig.update_layout({f"scene{'' if col == 1 else col}": scene})
    first = panels[0].layout
    if kind == "1d":
        fig.update_yaxes(secondary_y=False, **_axis_json(first.yaxis))
        fig.update_yaxes(secondary_y=True, **_axis_json(first.yaxis2))
        fig.update_layout(hovermode="x unified", legend=first.legend)
        fig.update_layout(legend_y=1.14, margin_t=110)  # above the panels' titles
        for col in range(1, n + 1):  # each axis title once: loss on the far left, accuracy on the far right
            fig.update_yaxes(title_text="loss" if col == 1 else None, secondary_y=False, row=1, col=col)
            fig.update_yaxes(title_text="accuracy (%)" if col == n else None, secondary_y=True, row=1, col=col)
    else:
        fig.update_layout(coloraxis=first.coloraxis)
    if kind != "surface":
        for col, panel in enumerate(panels, start=1):
            fig.update_xaxes(title_text=panel.layout.xaxis.title.text, row=1, col=col)
            if panel.layout.xaxis.range is not None:  # a panel kept on its grid (`_clip_to_grid`)
                fig.update_xaxes(range=panel.layout.xaxis.range, row=1, col=col)
                fig.update_yaxes(range=panel.layout.yaxis.range, row=1, col=col)
        if kind != "1d":
            same = len({panel.layout.yaxis.title.text for panel in panels}) == 1
            for col, panel in enumerate(panels, start=1):
                if col == 1 or not same:
                    fig.update_yaxes(title_text=panel.layout.yaxis.title.text, row=1, col=col)
    if equal:
        for col in range(1, n + 1):
            suffix = "" if col == 1 else str(col)
            fig.update_yaxes(scaleanchor=f"x{suffix}", scaleratio=1, constrain="domain", row=1, col=col)
            fig.update_xaxes(constrain="domain", row=1, col=col)
    fig.update_layout(uirevision=" vs ".join(names) + (f" | {_loss_scale(options)}" if kind == "1d" else ""))
    return fig


def paper_layout(
    fig: go.Figure,
    width: str | float = "column",
    height: float | None = None,
    font_family: str = SERIF,
    font_size: float = 8,
) -> go.Figure:
    """A copy of `fig` sized for a paper: width 'column' (3.25 in), 'page' (6.75 in) or inches; height in inches
    (default 0.8 x width for one panel, 0.42 x width for more); fonts in points, serif like LaTeX's text. 3D
    scenes get room for their axis titles and tick labels, and a legend above the plot its own margin."""
    if isinstance(width, str) and width not in PAPER_WIDTHS:
        raise LandscapeError(f"unknown width '{width}': use {', '.join(PAPER_WIDTHS)} or a number of inches")
    inches = PAPER_WIDTHS[width] if isinstance(width, str) else _paper_inches(width, "width")
    if not (math.isfinite(font_size) and font_size >= MIN_FONT_PT):
        raise LandscapeError(f"the font size must be a number of points, at least {MIN_FONT_PT:g} (got {font_size:g})")
    panels = _panel_count(fig)
    scenes = _scene_names(fig)
    height = inches * (0.8 if panels == 1 else 0.42) if height is None else _paper_inches(height, "height")
    px = font_size * PX_PER_INCH / 72
    out = go.Figure(fig)
    titled = bool(out.layout.title.text) or panels > 1
    legend_above = out.layout.legend.orientation == "h" and (out.layout.legend.y or 0) > 1
    titles_under_legend = legend_above and panels > 1  # the panels' titles sit between the legend and the plots
    top = (2.5 if titled else 1) + (2.3 if legend_above else 0) + (1.4 if titles_under_legend else 0)
    out.update_layout(
        template="simple_white",
        width=round(inches * PX_PER_INCH),
        height=round(height * PX_PER_INCH),
        font=dict(family=font_family, size=px, color="black"),
        margin=dict(
            l=round((1 if scenes else 4.5) * px),
            r=round(px),
            t=round(top * px),
            b=round((1 if scenes else 3.5) * px),
        ),
    )
    if out.layout.title.text:
        out.update_layout(title=dict(x=0.5, xanchor="center", y=1 - 0.3 * px / out.layout.height, yanchor="top"))
    if legend_above:  # clear of the top tick labels, which reach half a line above the plot
        plot_h = out.layout.height - out.layout.margin.t - out.layout.margin.b
        lift = (0.75 + (1.4 if titles_under_legend else 0)) * px / plot_h
        out.update_layout(legend=dict(y=1 + lift, yanchor="bottom", font_size=px, tracegroupgap=0))
    out.update_annotations(font_size=px)
    out.update_coloraxes(colorbar=dict(thickness=round(1.2 * px), len=0.9, ticklen=2, xpad=2))
    if scenes:
        _fit_scenes(out, scenes, px)
    return out


def _paper_inches(value: float, what: str) -> float:
    """A figure's width or height in inches: a finite number of at least MIN_INCHES."""
    inches = float(value)
    if not (math.isfinite(inches) and inches >= MIN_INCHES):
        raise LandscapeError(f"the {what} must be a number of inches, at least {MIN_INCHES:g} (got {inches:g})")
    return inches


def _fit_scenes(fig: go.Figure, scenes: list[str], px: float) -> None:
    """Lay out the 3D scenes of a paper figure in place: the colour bar lies under them (their boxes look wider
    than high, so that height is what they can spare) and each camera is refit to its scene's size in px, with
    room for the axis titles and tick labels, whose size in px is fixed (3D text does not scale with the scene)."""
    margin = fig.layout.margin
    plot_w = fig.layout.width - margin.l - margin.r
    plot_h = max(fig.layout.height - margin.t - margin.b, 1)  # a plot under its margins has no room: refused below
    bar = fig.layout.coloraxis
    strip = 0.0
    if bar.colorbar is not None and bar.showscale is not False and any(t.type == "surface" for t in fig.data):
        strip = 3.6 * px / plot_h
        fig.update_coloraxes(
            colorbar=dict(
                orientation="h",
                x=0.5,
                xanchor="center",
                y=0,
                yanchor="bottom",
                len=0.5,
                thickness=round(0.9 * px),
                ypad=0,
                title=dict(side="top"),
            )
        )
    for name in scenes:
        scene = fig.layout[name]
        x0, x1 = (float(v) for v in (scene.domain.x or (0, 1)))
        y0, y1 = (float(v) for v in (scene.domain.y or (0, 1)))
        y0, y1 = strip + y0 * (1 - strip), strip + y1 * (1 - strip)
        fonts = dict(title=dict(font=dict(size=px)), tickfont=dict(size=0.9 * px))
        update: dict[str, Any] = {"domain": dict(x=[x0, x1], y=[y0, y1])}
        update.update({axis: fonts for axis in ("xaxis", "yaxis", "zaxis")})
        margins = (8 * px, 7 * px, 4.2 * px, 0.6 * px)
        room = min((x1 - x0) * plot_w - margins[0] - margins[1], (y1 - y0) * plot_h - margins[2] - margins[3])
        if not room >= _BOX_ROOM * px:
            raise LandscapeError(
                f"a {fig.layout.width / PX_PER_INCH:.2f} x {fig.layout.height / PX_PER_INCH:.2f} in figure leaves a "
                f"3D box less than {_BOX_ROOM * px / PX_PER_INCH:.2f} in inside its "
                f"{px * 72 / PX_PER_INCH:g} pt axis titles and tick labels: make the figure larger or the font smaller"
            )
        camera = scene.camera.to_plotly_json()
        if camera.get("eye") and scene.aspectmode == "manual":
            aspect = (float(scene.aspectratio.x), float(scene.aspectratio.y), float(scene.aspectratio.z))
            angles = camera_angles(camera)
            zoom = _distance(camera_view(angles, aspect)) / _distance(camera)
            update["camera"] = camera_view(
                replace(angles, zoom=zoom),
                aspect,
                (x1 - x0) * plot_w,
                (y1 - y0) * plot_h,
                margins=margins,
            )
        fig.update_layout({name: update})


def _distance(camera: dict) -> float:
    eye, center = camera["eye"], camera.get("center") or dict(x=0, y=0, z=0)
    return math.dist([eye[k] for k in "xyz"], [center[k] for k in "xyz"])


# --- helpers ------------------------------------------------------------------------------------------------------


def camera_view(
    camera: Camera,
    aspectratio: tuple[float, float, float],
    width: float = 400,
    height: float = 460,
    margins: tuple[float, float, float, float] = (56, 48, 44, 8),
) -> dict[str, dict[str, float]]:
    """Plotly's `scene.camera` for a view in matplotlib's angles that fits the box: the box (plotly's normalized
    scene units, ±aspectratio / 2) is as large as fits in a viewport of width x height px with `margins` (left,
    right, bottom, top) px free for tick labels and axis titles; then `camera.zoom`. The defaults suit a scene
    with 12 px text at least 0.87 times as wide as it is high (plotly's field of view is vertical: how large the
    box looks in px follows the scene's height)."""
    ax, ay, az = aspectratio
    corners = np.array([[i * ax / 2, j * ay / 2, k * az / 2] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
    elev, azim = math.radians(camera.elev), math.radians(camera.azim)
    direction = np.array([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)])
    up = np.array([-math.cos(azim), -math.sin(azim), 0.0]) if abs(camera.elev) > 89 else np.array([0.0, 0.0, 1.0])
    forward = -direction
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    screen_up = np.cross(right, forward)
    wide = width / height
    left, right_px, bottom, top = margins
    target_x = (-1 + 2 * left / width, 1 - 2 * right_px / width)
    target_y = (-1 + 2 * bottom / height, 1 - 2 * top / height)
    center = np.zeros(3)
    distance = 0.5 * float(np.linalg.norm(aspectratio)) / math.sin(math.atan(_TAN_HALF_FOVY))
    for _ in range(60):  # perspective makes this a fixed point: centre the box's projection, then scale to fit
        rel = corners - (center + distance * direction)
        depth = rel @ forward
        sx = rel @ right / (depth * _TAN_HALF_FOVY * wide)
        sy = rel @ screen_up / (depth * _TAN_HALF_FOVY)
        scale = max(np.ptp(sx) / (target_x[1] - target_x[0]), np.ptp(sy) / (target_y[1] - target_y[0]))
        shift_x = (sx.max() + sx.min() - sum(target_x)) / 2
        shift_y = (sy.max() + sy.min() - sum(target_y)) / 2
        center = center + distance * _TAN_HALF_FOVY * (wide * shift_x * right + shift_y * screen_up)
        distance *= scale**0.7
    distance /= camera.zoom
    eye = center + distance * direction
    return dict(
        eye=dict(zip("xyz", (round(float(v), 6) for v in eye))),
        up=dict(zip("xyz", (float(v) for v in up))),
        center=dict(zip("xyz", (round(float(v), 6) for v in center))),
    )


def camera_angles(scene_camera: dict) -> Camera:
    """The `Camera` (elev, azim; zoom 1) that a plotly `scene.camera` dict looks from."""
    eye, center = scene_camera["eye"], scene_camera.get("center") or dict(x=0, y=0, z=0)
    d = np.array([eye[k] - center[k] for k in "xyz"], dtype=np.float64)
    d /= np.linalg.norm(d)
    return Camera(elev=math.degrees(math.asin(max(-1.0, min(1.0, d[2])))), azim=math.degrees(math.atan2(d[1], d[0])))


def _scene(
    x: np.ndarray,
    y: np.ndarray,
    options: PlotOptions,
    equal: bool,
    zaxis: dict,
    title: str,
    titles: tuple[str, str] = ("α", "β"),
) -> dict:
    sx, sy = float(np.ptp(x)) or 1.0, float(np.ptp(y)) or 1.0
    ax, ay = (sx / max(sx, sy), sy / max(sx, sy)) if equal else (1.0, 1.0)
    aspect = (ax, ay, options.zscale)
    plane = dict(showspikes=False, nticks=5)
    bounds = [float(np.min(x)), float(np.max(x))], [float(np.min(y)), float(np.max(y))]
    return dict(
        xaxis=dict(title=dict(text=titles[0]), range=bounds[0], **plane),  # the grid, whatever else is drawn
        yaxis=dict(title=dict(text=titles[1]), range=bounds[1], **plane),
        zaxis=dict(showspikes=False, nticks=5, **zaxis),
        aspectmode="manual",
        aspectratio=dict(x=ax, y=ay, z=options.zscale),
        camera=camera_view(options.camera, aspect),
        uirevision=f"{title}|{options.camera}|{options.zscale}|{equal}",  # a new view resets the camera
    )


def axis_titles(surface: Surface, short: bool = False) -> tuple[str, str]:
    """'α' and 'β'; on PCA directions of a training path with the share of its variance along each, as the paper
    does ('α: PC1, 60.7% of variance'; `short`, for 3D scenes, where text does not shrink: 'α: PC1 (60.7%)'); of
    its squared distances from θ* for a PCA not centred (`--no-pca-center`)."""
    path = surface.trajectory
    if path is None:
        return "α", "β"
    ratio = 100 * path.explained_variance_ratio
    if short:
        return f"α: PC1 ({ratio[0]:.1f}%)", f"β: PC2 ({ratio[1]:.1f}%)"
    share = explained(surface)
    return f"α: PC1, {ratio[0]:.1f}% of {share}", f"β: PC2, {ratio[1]:.1f}% of {share}"


def explained(surface: Surface) -> str:
    """What the PCA's shares are of: 'variance', or for a PCA not centred (`--no-pca-center`: about θ*, not the
    mean) 'Σ‖θᵢ − θ*‖²'."""
    spec = surface.surface_spec
    centered = spec is None or spec.trajectory is None or spec.trajectory.centered
    return "variance" if centered else "Σ‖θᵢ − θ*‖²"


def _plane_axes(equal: bool, titles: tuple[str, str] = ("α", "β")) -> dict:
    xaxis: dict[str, Any] = dict(title=dict(text=titles[0]))
    yaxis: dict[str, Any] = dict(title=dict(text=titles[1]))
    if equal:
        xaxis["constrain"] = "domain"
        yaxis.update(scaleanchor="x", scaleratio=1, constrain="domain")
    return dict(xaxis=xaxis, yaxis=yaxis)


def _floor_contours(
    x: np.ndarray,
    y: np.ndarray,
    values: np.ndarray,
    floor: float,
    options: PlotOptions,
    crange: tuple[float, float] | None,
) -> go.Scatter3d | None:
    """The contour lines of `values` (metric units) drawn flat at height `floor`, coloured by level."""
    if options.clip is not None:
        values = np.minimum(values, options.clip)
    values = np.where(np.isfinite(values), values, np.nan)
    try:
        levels = contour_levels(_metric_range(crange, options), options)
    except LandscapeError:
        return None
    xs: list[float | None] = []
    ys: list[float | None] = []
    colors: list[float] = []
    for level in levels:
        segments = contour_segments(x, y, values, level)
        if not len(segments):
            continue
        drawn = math.log10(level) if options.log else level
        for path in _polylines(segments):
            xs += [float(v) for v in path[:, 0]] + [None]
            ys += [float(v) for v in path[:, 1]] + [None]
            colors += [drawn] * (len(path) + 1)
    if not xs or crange is None:
        return None
    return go.Scatter3d(
        x=xs,
        y=ys,
        z=[floor] * len(xs),
        mode="lines",
        line=dict(color=colors, colorscale=options.colorscale, cmin=crange[0], cmax=crange[1], width=2),
        name="contours",
        showlegend=False,
        hoverinfo="skip",
    )


def _polylines(segments: np.ndarray) -> list[np.ndarray]:
    """Segments (n, 2, 2) joined end to end into polylines (marching squares gives neighbouring cells the very
    same point on their common edge), so that a line is drawn without breaks."""
    keys = [[tuple(np.round(p, 9)) for p in seg] for seg in segments]
    ends: dict[tuple, list[int]] = {}
    for k, (a, b) in enumerate(keys):
        ends.setdefault(a, []).append(k)
        ends.setdefault(b, []).append(k)
    used = np.zeros(len(segments), dtype=bool)

    def walk(k: int, point: tuple) -> list[int]:
        """Follow the chain from segment k out through its end `point`; the segments in order."""
        chain: list[int] = []
        while True:
            nxt = next((m for m in ends[point] if not used[m]), None)
            if nxt is None:
                return chain
            used[nxt] = True
            chain.append(nxt)
            a, b = keys[nxt]
            point = b if a == point else a

    paths = []
    for k in range(len(segments)):
        if used[k]:
            continue
        used[k] = True
        a, b = keys[k]
        forward, backward = walk(k, b), walk(k, a)
        points = [a, b]
        for m in forward:
            points.append(keys[m][1] if keys[m][0] == points[-1] else keys[m][0])
        for m in backward:
            points.insert(0, keys[m][1] if keys[m][0] == points[0] else keys[m][0])
        paths.append(np.array(points, dtype=np.float64))
    return paths


def _center_3d(x: np.ndarray, y: np.ndarray, z: np.ndarray, floor: float | None) -> list[go.Scatter3d]:
    """θ* on the surface (a dot a little above it, so that the surface does not hide it) and a drop line to the
    floor where the projected contours are."""
    z0 = _at_origin(x, y, z)
    if not np.isfinite(z0):
        return []
    finite = z[np.isfinite(z)]
    lift = 0.03 * (float(finite.max() - finite.min()) or 1.0)
    marker = dict(size=4, color="white", line=dict(color="black", width=1))
    traces = [
        go.Scatter3d(
            x=[0.0],
            y=[0.0],
            z=[z0 + lift],
            mode="markers",
            name=CENTER_NAME,
            showlegend=False,
            marker=marker,
            hovertemplate=f"{CENTER_NAME}<extra></extra>",
        )
    ]
    if floor is not None:
        traces.append(
            go.Scatter3d(
                x=[0.0, 0.0],
                y=[0.0, 0.0],
                z=[floor, z0],
                mode="lines",
                name=f"{CENTER_NAME} (floor)",
                showlegend=False,
                line=dict(color="black", width=2),
                hoverinfo="skip",
            )
        )
    return traces


def _angle_line(x: np.ndarray, y: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signed distances from (0, 0), α, β) of evenly spaced points on the line through (0, 0) at `degrees`
    from the α axis, inside the grid's rectangle; as many points as the longer side of the grid has."""
    dx, dy = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    reach = []
    for d, (lo, hi) in ((dx, (x.min(), x.max())), (dy, (y.min(), y.max()))):
        if abs(d) > 1e-12:
            a, b = lo / d, hi / d
            reach.append((min(a, b), max(a, b)))
    t0 = max(r[0] for r in reach)
    t1 = min(r[1] for r in reach)
    if not (x.min() <= 0 <= x.max() and y.min() <= 0 <= y.max()) or t1 <= t0:
        raise LandscapeError("a slice at an angle goes through θ*, which is not inside this grid")
    t = np.linspace(t0, t1, max(len(x), len(y)))
    return t, t * dx, t * dy


def _bilinear(x: np.ndarray, y: np.ndarray, z: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """z ([j, i] on the grid x, y) linearly interpolated at the points (px, py); NaN outside or next to a gap."""
    from scipy.interpolate import RegularGridInterpolator

    xo, yo = np.argsort(x), np.argsort(y)
    interpolate = RegularGridInterpolator(
        (y[yo], x[xo]), z[np.ix_(yo, xo)], method="linear", bounds_error=False, fill_value=np.nan
    )
    return interpolate(np.stack([np.asarray(py, float), np.asarray(px, float)], axis=-1))


def _colorbar_carrier(x: np.ndarray, y: np.ndarray, crange: tuple[float, float] | None) -> go.Scatter:
    """An invisible point on the colour axis, so that contour lines drawn in their own colours get a colour bar."""
    return go.Scatter(
        x=[float(x[0])],
        y=[float(y[0])],
        mode="markers",
        marker=dict(color=[crange[0] if crange else 0.0], coloraxis="coloraxis", opacity=0, size=1),
        hoverinfo="skip",
        showlegend=False,
        name="colour scale",
    )


def _title(surface: Surface) -> str:
    return describe(surface).title


def _metric_range(crange: tuple[float, float] | None, options: PlotOptions) -> tuple[float, float] | None:
    """A colour range in drawn units back in the metric's units."""
    if crange is None:
        return None
    return (10 ** crange[0], 10 ** crange[1]) if options.log else crange


def _panel_count(fig: go.Figure) -> int:
    keys = fig.layout.to_plotly_json()
    return max(1, sum(k.startswith("scene") for k in keys) or sum(k.startswith("xaxis") for k in keys))


def _scene_names(fig: go.Figure) -> list[str]:
    return sorted(k for k in fig.layout.to_plotly_json() if k.startswith("scene"))


def _axis_json(axis: go.layout.YAxis) -> dict:
    return {k: v for k, v in axis.to_plotly_json().items() if k not in ("anchor", "domain", "overlaying", "side")}


def _grid(surface: Surface) -> tuple[np.ndarray, np.ndarray]:
    if surface.ycoordinates is None:
        raise LandscapeError(f"{surface.path} is a 1D surface: draw it with kind '1d'")
    return surface.xcoordinates, surface.ycoordinates


def _display_range(surface: Surface, options: PlotOptions) -> tuple[float, float] | None:
    """The colour range in drawn units (log10 on a log scale)."""
    rng = options.zrange if options.zrange is not None else value_range([surface], options)
    if rng is None:
        return None
    lo, hi = rng
    if options.log:
        if lo <= 0:
            raise LandscapeError(f"a log scale needs a positive range (got {lo:g} .. {hi:g})")
        lo, hi = math.log10(lo), math.log10(hi)
    return lo, max(lo, hi)


def _coloraxis(options: PlotOptions, crange: tuple[float, float] | None) -> dict:
    axis: dict[str, Any] = dict(
        colorscale=options.colorscale,
        colorbar=dict(title=dict(text=metric_label(options.metric), side="right"), **_log_ticks(crange, options.log)),
    )
    if crange is not None:
        axis.update(cmin=crange[0], cmax=crange[1])
    return axis


def _log_ticks(crange: tuple[float, float] | None, log: bool, most: int = 7) -> dict:
    """Ticks labelled in the metric's units: every mantissa, 1-2-5 or decades, the densest that gives at most
    `most` ticks (decades beyond that); the two ends when not even two of those fall in the range."""
    if not log or crange is None:
        return {}
    values = _log_tick_values(*crange, most=most)
    return dict(tickvals=[math.log10(v) for v in values], ticktext=[f"{v:g}" for v in values])


def _linear_ticks(crange: tuple[float, float] | None, count: int = 5) -> dict:
    """At most `count` ticks on round values (a 1-2-2.5-5 step) inside the range, none on the floor below it."""
    if crange is None or not crange[1] > crange[0]:
        return {}
    lo, hi = crange
    raw = (hi - lo) / count
    exponent = 10.0 ** math.floor(math.log10(raw))
    step = next(m * exponent for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * exponent) <= count)
    values = [round(k * step, 12) for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]
    return dict(tickvals=values, ticktext=[f"{v:g}" for v in values])


def _log_tick_values(lo: float, hi: float, most: int = 7) -> list[float]:
    values: list[float] = []
    for mantissas in (range(1, 10), (1, 2, 5), (1, 3), (1,)):
        values = [m * 10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas]
        values = [float(f"{v:.6g}") for v in values if 0 < v < math.inf and lo - 1e-9 <= math.log10(v) <= hi + 1e-9]
        if 2 <= len(values) <= most:
            break
    if len(values) < 2:
        values = [float(f"{10**lo:.3g}"), float(f"{10**hi:.3g}")]
    return values


def _log_axis_ticks(lo: float, hi: float) -> dict:
    """The ticks of a plotly log axis (range in log10) on round values in the metric's units."""
    values = _log_tick_values(lo, hi)
    return dict(tickvals=values, ticktext=[f"{v:g}" for v in values])


def _color_at(options: PlotOptions, crange: tuple[float, float] | None, level: float) -> str:
    if crange is None or crange[1] <= crange[0]:
        return sample_colorscale(options.colorscale, [0.5])[0]
    t = min(max((level - crange[0]) / (crange[1] - crange[0]), 0.0), 1.0)
    return sample_colorscale(options.colorscale, [t])[0]


def _hover(metric: str, pending: bool = False) -> str:
    shown = f"α=%{{x:.3g}}<br>β=%{{y:.3g}}<br>{metric_label(metric)}=%{{customdata:.5g}}"
    return shown + ("%{text}" if pending else "") + "<extra></extra>"


def _hover_data(surface: Surface, metric: str) -> dict[str, Any]:
    """What a grid point's hover shows: its stored value, and for a surface not yet complete, which points are not
    computed yet (NaN both, else: a computed NaN is a result)."""
    hover: dict[str, Any] = dict(customdata=_stored_values(surface, metric), hovertemplate=_hover(metric))
    computed = np.asarray(surface.computed, dtype=bool)
    if not computed.all():
        hover.update(text=np.where(computed, "", " (not computed yet)"), hovertemplate=_hover(metric, pending=True))
    return hover


def _contains_origin(x: np.ndarray, y: np.ndarray) -> bool:
    return bool(x.min() <= 0 <= x.max() and y.min() <= 0 <= y.max())


def _add_center(
    fig: go.Figure, x: np.ndarray, y: np.ndarray, options: PlotOptions, path: TrajectoryPath | None = None
) -> None:
    """θ* at (0, 0); with a training `path` drawn, its name beside it, away from the path."""
    if options.mark_center and _contains_origin(x, y):
        fig.add_trace(
            go.Scatter(
                x=[0.0],
                y=[0.0],
                mode="markers" if path is None else "markers+text",
                text=None if path is None else [CENTER_NAME],
                textposition=None if path is None else _center_label_position(path),
                name=CENTER_NAME,
                showlegend=False,
                marker=dict(symbol="x", size=9, color="white", line=dict(color="black", width=1)),
                hovertemplate=f"{CENTER_NAME} (α = 0, β = 0)<extra></extra>",
            )
        )


# --- the training path ---------------------------------------------------------------------------------------------


def _spread(x: np.ndarray, y: np.ndarray) -> float:
    return max(float(np.ptp(x)), float(np.ptp(y))) or 1.0


def _drawn_path(surface: Surface, options: PlotOptions) -> TrajectoryPath | None:
    """The surface's training path when there is one to draw."""
    path = surface.trajectory
    if not options.path or path is None or surface.ndim != 2 or not len(path.epochs):
        return None
    return path


def path_labels(coordinates: np.ndarray, epochs: np.ndarray, spread: float, most: int = PATH_LABELS) -> list[str]:
    """The text beside each snapshot's marker: 'start (epoch E)' at the first; the epoch at up to `most` others
    evenly spaced along the path, each at least 10% of `spread` (the plot's longer side) away from θ* and from
    every other label, so that labels do not crowd; '' elsewhere."""
    n = len(epochs)
    labels = [""] * n
    if n == 0:
        return labels
    labels[0] = f"start (epoch {int(epochs[0])})"
    placed = [np.zeros(2), coordinates[0]]
    room = 0.1 * spread
    candidates = np.unique(np.linspace(0, n - 1, min(most, max(n - 2, 0)) + 2).round().astype(int))[1:-1]
    for k in candidates:
        if all(np.hypot(*(coordinates[k] - p)) >= room for p in placed):
            labels[int(k)] = f"{int(epochs[k])}"
            placed.append(coordinates[k])
    return labels


def _clip_to_grid(fig: go.Figure, surface: Surface, options: PlotOptions, cells: bool) -> None:
    """Where a drawn path leaves the grid, keep the axes on the grid (its cells' edges for a heat map): the plot
    stays the surface's, and the path is cut at its edge, as in 3D."""
    path = _drawn_path(surface, options)
    if path is None:
        return
    x, y = _grid(surface)
    c = path.coordinates
    inside = (x.min() <= c[:, 0]) & (c[:, 0] <= x.max()) & (y.min() <= c[:, 1]) & (c[:, 1] <= y.max())
    if bool(inside.all()):
        return
    ranges = []
    for axis in (x, y):
        half = (float(np.ptp(axis)) / (len(axis) - 1) / 2 if len(axis) > 1 else 0.5) if cells else 0.0
        ranges.append([float(axis.min()) - half, float(axis.max()) + half])
    fig.update_xaxes(range=ranges[0])
    fig.update_yaxes(range=ranges[1])


def _label_positions(coordinates: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[str]:
    """Above each point, leaning towards the middle of the plot near its left and right edges (so that a label is
    not cut off at the edge)."""
    middle, quarter = (float(x.min()) + float(x.max())) / 2, float(np.ptp(x)) / 4
    return [
        "top left" if a > middle + quarter else "top right" if a < middle - quarter else "top center"
        for a in coordinates[:, 0]
    ]


def _center_label_position(path: TrajectoryPath) -> str:
    """Where θ*'s name goes: on the side away from most of the path."""
    a, b = path.coordinates.mean(axis=0) if len(path.coordinates) else (0.0, 0.0)
    return ("top" if b <= 0 else "bottom") + (" left" if a >= 0 else " right")


def values_at(surface: Surface, metric: str, points: np.ndarray) -> np.ndarray:
    """The metric bilinearly interpolated on the grid at (α, β) `points` (n, 2): the surface of the plane there,
    NaN outside the grid or next to a point not computed."""
    x, y = _grid(surface)
    return _bilinear(x, y, metric_values(surface, metric), points[:, 0], points[:, 1])


def _path_hover(path: TrajectoryPath) -> tuple[np.ndarray, str]:
    """customdata and hover text of the path's markers: epoch, and the share of ‖θ_i − θ*‖ off the plane."""
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(path.distance > 0, 100 * path.residual / path.distance, 0.0)
    data = np.stack([path.epochs.astype(np.float64), off], axis=1)
    text = (
        "epoch %{customdata[0]:d}<br>α=%{x:.3g}<br>β=%{y:.3g}<br>"
        "off the plane: %{customdata[1]:.2g}% of ‖θ − θ*‖<extra>" + PATH_NAME + "</extra>"
    )
    return data, text


def _path_2d(surface: Surface, options: PlotOptions) -> list[go.Scatter]:
    """The path on a contour map or heat map: a line through the snapshots with a marker at each, labelled."""
    path = _drawn_path(surface, options)
    if path is None:
        return []
    c = path.coordinates
    data, hover = _path_hover(path)
    x, y = _grid(surface)
    return [
        go.Scatter(
            x=c[:, 0],
            y=c[:, 1],
            mode="lines+markers+text",
            text=path_labels(c, path.epochs, _spread(x, y)),
            textposition=_label_positions(c, x, y),
            textfont=dict(size=10, color="black"),
            name=PATH_NAME,
            showlegend=False,
            line=dict(color=PATH_COLOR, width=2),
            marker=dict(size=6, color=PATH_COLOR, line=dict(color="white", width=1)),
            customdata=data,
            hovertemplate=hover,
        )
    ]


def _path_3d(
    surface: Surface, options: PlotOptions, x: np.ndarray, y: np.ndarray, z: np.ndarray, floor: float | None
) -> list[go.Scatter3d]:
    """The path on the 3D surface, lifted onto it by bilinear interpolation (the line between two snapshots
    follows the surface, not a chord under it), with the markers of the 2D path and the start labelled (epochs are
    in the hover: written labels pile up in projection); and its shadow on the floor under the surface. Parts
    outside the grid or over a gap are not drawn."""
    path = _drawn_path(surface, options)
    if path is None:
        return []
    c = path.coordinates
    t = np.linspace(0.0, 1.0, _PATH_STEPS + 1)[:-1]
    steps = c[:-1, None, :] + t[None, :, None] * (c[1:, None, :] - c[:-1, None, :])  # (n - 1, steps, 2)
    dense = np.concatenate([steps.reshape(-1, 2), c[-1:]])
    finite = z[np.isfinite(z)]
    lift = 0.02 * (float(finite.max() - finite.min()) if finite.size else 0.0) or 0.02
    line_z = _bilinear(x, y, z, dense[:, 0], dense[:, 1]) + lift
    marker_z = _bilinear(x, y, z, c[:, 0], c[:, 1]) + lift
    dense, c = _within_grid(x, y, dense), _within_grid(x, y, c)  # outside: NaN, or plotly's axes stretch to it
    data, hover = _path_hover(path)
    traces = [
        go.Scatter3d(
            x=dense[:, 0],
            y=dense[:, 1],
            z=line_z,
            mode="lines",
            name=PATH_NAME,
            showlegend=False,
            line=dict(color=PATH_COLOR, width=5),
            hoverinfo="skip",
        ),
        go.Scatter3d(
            x=c[:, 0],
            y=c[:, 1],
            z=marker_z,
            mode="markers+text",
            text=path_labels(c, path.epochs, _spread(x, y), most=0),  # 3D: the start only, labels would pile up
            textposition=_label_positions(c, x, y),
            textfont=dict(size=10, color="black"),
            name=f"{PATH_NAME} (snapshots)",
            showlegend=False,
            marker=dict(size=3, color=PATH_COLOR, line=dict(color="white", width=1)),
            customdata=data,
            hovertemplate=hover,
        ),
    ]
    if floor is not None:
        traces.append(
            go.Scatter3d(
                x=c[:, 0],
                y=c[:, 1],
                z=np.full(len(c), floor),
                mode="lines",
                name=f"{PATH_NAME} (floor)",
                showlegend=False,
                line=dict(color=PATH_COLOR, width=2, dash="dot"),
                hoverinfo="skip",
            )
        )
    return traces


def _within_grid(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`points` ((n, 2) α, β) with those outside the grid's bounds set to NaN."""
    inside = (
        (points[:, 0] >= x.min()) & (points[:, 0] <= x.max()) & (points[:, 1] >= y.min()) & (points[:, 1] <= y.max())
    )
    return np.where(inside[:, None], points, np.nan)


def _at_origin(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """z bilinearly interpolated at (0, 0) (NaN outside the grid or next to a gap; coordinates in either order)."""
    return float(_bilinear(x, y, z, np.zeros(1), np.zeros(1))[0])


def convexity_figure(
    surfaces: Sequence[Surface], titles: Sequence[str] | None = None, zmax: float | None = None
) -> go.Figure:
    """The convexity maps of surfaces side by side, as the paper's Fig. 7: |λmin/λmax| of the loss Hessian at the
    points of each map (`Surface.curvature`), one colour scale from 0 (dark: no negative curvature within the
    Lanczos estimate) to `zmax` (default: the largest ratio; bright: strongly non-convex), each cell labelled
    with its ratio, θ*'s cell outlined. Points not computed are gaps."""
    maps = [s.curvature for s in surfaces]
    if not surfaces or any(m is None for m in maps):
        raise LandscapeError("a convexity figure needs surfaces with convexity maps (landscape convexity)")
    panels = []
    for surface, curvature in zip(surfaces, maps):
        assert curvature is not None
        selected = curvature.selected
        if selected.ndim != 2:
            raise LandscapeError(f"{describe(surface).title}: a convexity figure draws 2D surfaces")
        rows, cols = np.flatnonzero(selected.any(axis=1)), np.flatnonzero(selected.any(axis=0))
        x, y = _grid(surface)
        panels.append((x[cols], y[rows], curvature.ratio[np.ix_(rows, cols)]))
    finite = [r[np.isfinite(r)] for _, _, r in panels]
    top = zmax if zmax is not None else max((float(r.max()) for r in finite if r.size), default=1.0)
    names = [plain_text(n) for n in (titles or [describe(s).title for s in surfaces])]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=names, horizontal_spacing=0.08)
    for col, (x, y, ratio) in enumerate(panels, start=1):
        fig.add_trace(
            go.Heatmap(
                x=x,
                y=y,
                z=ratio,
                coloraxis="coloraxis",
                text=np.where(np.isfinite(ratio), np.char.mod("%.2f", np.nan_to_num(ratio)), ""),
                texttemplate="%{text}",
                hovertemplate="α=%{x:.3g}<br>β=%{y:.3g}<br>|λmin/λmax|=%{z:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        if _contains_origin(x, y):  # θ*: its cell outlined (the cells carry their values)
            dx = float(np.diff(x).min()) if len(x) > 1 else 1.0
            dy = float(np.diff(y).min()) if len(y) > 1 else 1.0
            fig.add_shape(
                type="rect",
                x0=-dx / 2,
                x1=dx / 2,
                y0=-dy / 2,
                y1=dy / 2,
                line=dict(color="white", width=2),
                fillcolor="rgba(0,0,0,0)",
                opacity=1,
                layer="above",
                row=1,
                col=col,
            )
        suffix = "" if col == 1 else str(col)
        fig.update_yaxes(scaleanchor=f"x{suffix}", scaleratio=1, constrain="domain", row=1, col=col)
        fig.update_xaxes(constrain="domain", title_text="α", row=1, col=col)
    fig.update_yaxes(title_text="β", col=1)
    fig.update_layout(
        coloraxis=dict(
            colorscale="Viridis", cmin=0.0, cmax=top if top > 0 else 1.0, colorbar=dict(title="|λmin/λmax|")
        ),
        uirevision=" vs ".join(names),
    )
    return fig
