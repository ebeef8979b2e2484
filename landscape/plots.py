"""Figures of loss surfaces: pure functions from a `Surface` to a `plotly.graph_objects.Figure`.

No I/O and no `.show()`: the app shows the figures, `landscape.export` writes them. Points that are not computed
or not finite (a diverged loss) are gaps; `clip` caps the values at a maximum first (so an infinite loss shows at
the cap), `log` shows log10 of the values with tick labels in the metric's own units, and one `zrange` colours
several surfaces on one scale. `compare_figure` puts surfaces side by side on one shared colour axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .errors import LandscapeError
from .results import describe
from .storage import Surface

KINDS = ("surface", "contour", "filled", "heatmap", "1d")
AUTO_LEVELS = 20
CENTER_NAME = "θ*"
PAPER_WIDTHS = {"column": 3.25, "page": 6.75}  # inches: one column and the full text width of two-column papers
SERIF = "Times New Roman, Times, Liberation Serif, Nimbus Roman, serif"
PX_PER_INCH = 96  # CSS pixels, which is what the headless browser prints to PDF with
_SPLIT_COLORS = {"train": "#1f77b4", "test": "#d62728"}
_PLANE_AXES = dict(xaxis=dict(title=dict(text="α")), yaxis=dict(title=dict(text="β")))


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


@dataclass(frozen=True, kw_only=True)
class PlotOptions:
    """How a metric is drawn; the same options work for every kind of figure.

    levels: a `Levels` range (one contour trace with a colour bar) or explicit values in the metric's units
    (one line each, named in the legend); None picks about `AUTO_LEVELS` round levels over the colour range.
    zrange: the colour (and 3D z) range in the metric's units; None takes the data's range after clipping.
    """

    metric: str = "train_loss"
    log: bool = False
    clip: float | None = None
    zrange: tuple[float, float] | None = None
    levels: Levels | tuple[float, ...] | None = None
    colorscale: str = "Viridis"
    mark_center: bool = True


def parse_levels(text: str) -> Levels | tuple[float, ...]:
    """'START:END:SIZE' (a `Levels` range) or 'A, B, C' (explicit levels)."""
    try:
        if ":" in text:
            start, end, size = (float(v) for v in text.split(":"))
            return Levels(start, end, size)
        values = tuple(sorted(float(v) for v in text.replace(",", " ").split()))
    except ValueError:
        raise LandscapeError(f"contour levels '{text}': use START:END:SIZE or a list like 0.5,1,2") from None
    if not values:
        raise LandscapeError("no contour levels given")
    return values


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


def metric_values(surface: Surface, metric: str) -> np.ndarray:
    """The metric with NaN wherever the point is not computed yet."""
    if metric not in surface.values:
        raise LandscapeError(f"{surface.path} has no metric '{metric}' (it has {', '.join(surface.metrics)})")
    return np.where(surface.computed, np.asarray(surface.values[metric], dtype=np.float64), np.nan)


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
    """The 3D surface, with θ* marked at (0, 0)."""
    x, y = _grid(surface)
    z = displayed(surface, options)
    crange = _display_range(surface, options)
    fig = go.Figure(
        go.Surface(
            x=x,
            y=y,
            z=z,
            coloraxis="coloraxis",
            name=describe(surface).title,
            customdata=metric_values(surface, options.metric),
            hovertemplate=_hover(options.metric),
        )
    )
    if options.mark_center and _contains_origin(x, y):
        z0 = _at_origin(x, y, z)
        if np.isfinite(z0):
            fig.add_trace(
                go.Scatter3d(
                    x=[0.0],
                    y=[0.0],
                    z=[z0],
                    mode="markers",
                    name=CENTER_NAME,
                    showlegend=False,
                    marker=dict(size=5, color="white", line=dict(color="black", width=2)),
                    hovertemplate=f"{CENTER_NAME}<extra></extra>",
                )
            )
    zaxis = dict(title=dict(text=metric_label(options.metric)), **_log_ticks(crange, options.log))
    if crange is not None:  # padded, so that a flat surface does not lie in the floor of the box
        pad = 0.02 * (crange[1] - crange[0]) or 0.05 * max(abs(crange[0]), 1.0)
        zaxis["range"] = [crange[0] - pad, crange[1] + pad]
    fig.update_layout(
        coloraxis=_coloraxis(options, crange),
        scene=dict(
            xaxis_title="α", yaxis_title="β", zaxis=zaxis, camera=dict(eye=dict(x=1.5, y=1.5, z=1.1))
        ),  # a little further out than plotly's
        margin=dict(l=0, r=0, t=30, b=0),
    )
    return fig


def contour_figure(surface: Surface, options: PlotOptions, filled: bool = False) -> go.Figure:
    """Contour lines (or filled bands) at the chosen levels, with θ* marked."""
    x, y = _grid(surface)
    z = displayed(surface, options)
    crange = _display_range(surface, options)
    common = dict(
        x=x, y=y, z=z, customdata=metric_values(surface, options.metric), hovertemplate=_hover(options.metric)
    )
    fig = go.Figure()
    if isinstance(options.levels, tuple):
        if filled:
            raise LandscapeError(
                "filled contours take evenly spaced levels (START:END:SIZE); a list of levels draws contour lines"
            )
        values = np.asarray(options.levels, dtype=np.float64)
        if options.log and np.any(values <= 0):
            raise LandscapeError("a log scale needs positive contour levels")
        for value, level in zip(values, np.log10(values) if options.log else values):
            fig.add_trace(
                go.Contour(
                    **common,
                    autocontour=False,
                    showscale=False,
                    name=f"{value:g}",
                    legendgroup=f"{value:g}",
                    showlegend=True,
                    contours=dict(start=level, end=level, size=1, coloring="none"),
                    line=dict(color=_color_at(options, crange, level), width=1.5),
                )
            )
    else:
        start, end, size = _levels(options, crange)
        fig.add_trace(
            go.Contour(
                **common,
                coloraxis="coloraxis",
                autocontour=False,
                name=describe(surface).title,
                contours=dict(start=start, end=end, size=size, coloring="fill" if filled else "lines"),
                line=dict(width=0.5 if filled else 1.5),
            )
        )
    _add_center(fig, x, y, options)
    fig.update_layout(coloraxis=_coloraxis(options, crange), **_PLANE_AXES)
    return fig


def heatmap_figure(surface: Surface, options: PlotOptions) -> go.Figure:
    """Each grid point as a cell coloured by its value, with θ* marked."""
    x, y = _grid(surface)
    crange = _display_range(surface, options)
    fig = go.Figure(
        go.Heatmap(
            x=x,
            y=y,
            z=displayed(surface, options),
            coloraxis="coloraxis",
            name=describe(surface).title,
            customdata=metric_values(surface, options.metric),
            hovertemplate=_hover(options.metric),
        )
    )
    _add_center(fig, x, y, options)
    fig.update_layout(coloraxis=_coloraxis(options, crange), **_PLANE_AXES)
    return fig


def curve_figure(surface: Surface, options: PlotOptions, metrics: Sequence[str] | None = None) -> go.Figure:
    """Losses on the left axis and accuracies (dashed) on the right along α; a 2D surface gives its row nearest
    β = 0. `options.log` and `options.clip` apply to the losses; `options.zrange` fixes the loss axis range."""
    metrics = list(metrics or metric_order(surface.metrics))
    ys = surface.ycoordinates
    row = None if ys is None else int(np.argmin(np.abs(ys)))
    title = describe(surface).title + ("" if ys is None or row is None else f" (β = {ys[row]:g})")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    losses = []
    for m in metrics:
        split, _, kind = m.rpartition("_")
        is_acc = kind == "acc"
        values = _drawable(surface, replace(options, log=False, clip=None) if is_acc else options, m)
        values = values if row is None else values[row]
        if not is_acc:
            losses.append(values)
        fig.add_trace(
            go.Scatter(
                x=surface.xcoordinates,
                y=values,
                name=metric_label(m),
                mode="lines",
                line=dict(color=_SPLIT_COLORS.get(split), dash="dash" if is_acc else "solid"),
            ),
            secondary_y=is_acc,
        )
    loss_range = options.zrange
    finite = np.concatenate([v[np.isfinite(v)] for v in losses] + [np.empty(0)])
    if loss_range is None and options.clip is not None and finite.size:
        loss_range = (float(finite.min()), options.clip)
    loss_axis: dict[str, Any] = dict(title_text="loss", type="log" if options.log else "linear")
    if loss_range is not None:
        loss_axis["range"] = [math.log10(v) for v in loss_range] if options.log else list(loss_range)
    fig.update_yaxes(secondary_y=False, **loss_axis)
    fig.update_yaxes(secondary_y=True, title_text="accuracy (%)", range=[0, 100], showgrid=False)
    fig.update_xaxes(title_text="α")
    if options.mark_center and surface.xcoordinates.min() <= 0 <= surface.xcoordinates.max():
        fig.add_vline(x=0, line=dict(color="grey", width=1, dash="dot"))
    fig.update_layout(title=dict(text=title), hovermode="x unified")
    return fig


def compare_figure(
    surfaces: Sequence[Surface], kind: str, options: PlotOptions, titles: Sequence[str] | None = None
) -> go.Figure:
    """Surfaces side by side in one figure on one colour axis (one colour bar) over their common range, with the
    same z (3D) or loss (1D) range, so that equal colours and heights mean equal values."""
    if kind not in KINDS:
        raise LandscapeError(f"unknown figure kind '{kind}': use {', '.join(KINDS)}")
    if options.zrange is None:
        metrics = (
            [m for m in surfaces[0].metrics if m.endswith("_loss") and all(m in s.values for s in surfaces)]
            if kind == "1d"
            else [options.metric]
        )
        if metrics:
            options = replace(options, zrange=value_range(surfaces, options, metrics))
    panels = [figure(s, kind, options) for s in surfaces]
    n = len(panels)
    spec = {"type": "scene"} if kind == "surface" else {"secondary_y": True} if kind == "1d" else {}
    fig = make_subplots(
        rows=1,
        cols=n,
        specs=[[spec] * n],
        horizontal_spacing=0.08,
        subplot_titles=list(titles or [describe(s).title for s in surfaces]),
        shared_yaxes=kind in ("contour", "filled", "heatmap"),
    )
    for col, panel in enumerate(panels, start=1):
        for trace in panel.data:
            trace.showlegend = trace.showlegend if col == 1 else False
            fig.add_trace(trace, row=1, col=col, **({"secondary_y": trace.yaxis == "y2"} if kind == "1d" else {}))
        for shape in panel.layout.shapes:
            fig.add_vline(x=shape.x0, line=shape.line, row=1, col=col)
        if kind == "surface":
            fig.update_layout({f"scene{'' if col == 1 else col}": panel.layout.scene.to_plotly_json()})
    first = panels[0].layout
    if kind == "1d":
        fig.update_yaxes(secondary_y=False, **_axis_json(first.yaxis))
        fig.update_yaxes(secondary_y=True, **_axis_json(first.yaxis2))
        fig.update_layout(hovermode="x unified")
    else:
        fig.update_layout(coloraxis=first.coloraxis)
    if kind != "surface":
        fig.update_xaxes(title_text="α")
        fig.update_yaxes(title_text="loss" if kind == "1d" else "β", col=1, secondary_y=False)
    return fig


def paper_layout(
    fig: go.Figure,
    width: str | float = "column",
    height: float | None = None,
    font_family: str = SERIF,
    font_size: float = 8,
) -> go.Figure:
    """A copy of `fig` sized for a paper: width 'column' (3.25 in), 'page' (6.75 in) or inches; height in inches
    (default 0.8 x width for one panel, 0.42 x width for more); fonts in points, serif like LaTeX's text."""
    inches = PAPER_WIDTHS.get(width) if isinstance(width, str) else float(width)
    if inches is None:
        raise LandscapeError(f"unknown width '{width}': use {', '.join(PAPER_WIDTHS)} or a number of inches")
    panels = _panel_count(fig)
    height = height or inches * (0.8 if panels == 1 else 0.42)
    px = font_size * PX_PER_INCH / 72
    out = go.Figure(fig)
    top = 2.5 if out.layout.title.text or panels > 1 else 1
    out.update_layout(
        template="simple_white",
        width=round(inches * PX_PER_INCH),
        height=round(height * PX_PER_INCH),
        font=dict(family=font_family, size=px, color="black"),
        margin=dict(l=round(4.5 * px), r=round(px), t=round(top * px), b=round(3.5 * px)),
    )
    out.update_annotations(font_size=px)
    out.update_coloraxes(colorbar_thickness=round(1.2 * px))
    return out


def _panel_count(fig: go.Figure) -> int:
    keys = fig.layout.to_plotly_json()
    return max(1, sum(k.startswith("scene") for k in keys) or sum(k.startswith("xaxis") for k in keys))


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


def _log_ticks(crange: tuple[float, float] | None, log: bool) -> dict:
    """Ticks labelled in the metric's units: every mantissa, 1-2-5 or decades, the densest that gives at most 7
    ticks (decades beyond that); the two ends when not even two of those fall in the range."""
    if not log or crange is None:
        return {}
    lo, hi = crange
    values: list[float] = []
    for mantissas in (range(1, 10), (1, 2, 5), (1,)):
        values = [m * 10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas]
        values = [float(f"{v:.6g}") for v in values if lo - 1e-9 <= math.log10(v) <= hi + 1e-9]
        if 2 <= len(values) <= 7:
            break
    if len(values) < 2:
        values = [float(f"{10**lo:.3g}"), float(f"{10**hi:.3g}")]
    return dict(tickvals=[math.log10(v) for v in values], ticktext=[f"{v:g}" for v in values])


def _levels(options: PlotOptions, crange: tuple[float, float] | None) -> tuple[float, float, float]:
    """start, end, size of the contour levels in drawn units."""
    if isinstance(options.levels, Levels):
        lv = options.levels
        if not options.log:
            return lv.start, lv.end, lv.size
        if lv.start <= 0:
            raise LandscapeError("a log scale needs positive contour levels")
        return math.log10(lv.start), math.log10(lv.end), lv.size
    if crange is None:
        return 0.0, 1.0, 1.0
    lo, hi = crange
    if hi <= lo:
        return lo, lo, 1.0
    raw = (hi - lo) / AUTO_LEVELS
    exponent = 10.0 ** math.floor(math.log10(raw))
    size = next(m * exponent for m in (1, 2, 2.5, 5, 10) if m * exponent >= raw * (1 - 1e-9))
    return (
        round(math.ceil(lo / size - 1e-9) * size, 12),
        round(math.floor(hi / size + 1e-9) * size, 12),
        round(size, 12),
    )


def _color_at(options: PlotOptions, crange: tuple[float, float] | None, level: float) -> str:
    if crange is None or crange[1] <= crange[0]:
        return sample_colorscale(options.colorscale, [0.5])[0]
    t = min(max((level - crange[0]) / (crange[1] - crange[0]), 0.0), 1.0)
    return sample_colorscale(options.colorscale, [t])[0]


def _hover(metric: str) -> str:
    return f"α=%{{x:.3g}}<br>β=%{{y:.3g}}<br>{metric_label(metric)}=%{{customdata:.5g}}<extra></extra>"


def _contains_origin(x: np.ndarray, y: np.ndarray) -> bool:
    return bool(x.min() <= 0 <= x.max() and y.min() <= 0 <= y.max())


def _add_center(fig: go.Figure, x: np.ndarray, y: np.ndarray, options: PlotOptions) -> None:
    if options.mark_center and _contains_origin(x, y):
        fig.add_trace(
            go.Scatter(
                x=[0.0],
                y=[0.0],
                mode="markers",
                name=CENTER_NAME,
                showlegend=False,
                marker=dict(symbol="x", size=9, color="white", line=dict(color="black", width=1)),
                hovertemplate=f"{CENTER_NAME} (α = 0, β = 0)<extra></extra>",
            )
        )


def _at_origin(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """z bilinearly interpolated at (0, 0) (NaN next to a gap)."""
    return float(np.interp(0.0, y, [np.interp(0.0, x, row) for row in z]))
