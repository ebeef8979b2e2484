"""The landscape app: browse the surface files of one results folder in the browser (`landscape app`).

Started as `streamlit run app.py -- --results DIR`. It only reads, and only the HDF5 files listed under the
results folder; reads are cached by name and `results.file_stamp` (times, size, inode), so a file being computed is
read again when it grows, and the folder is looked at every few seconds for new and finished files. The `*_ui`
functions draw widgets and return what was chosen; figures come from `landscape.plots` and downloads from
`landscape.export`. Every setting but *Follow* is kept in the URL, so that a view can be bookmarked or sent.

Files and the URL are not trusted: their text reaches Streamlit's Markdown (headings, captions, alerts, tables)
only through `escape_markdown`, URL settings are range-checked before they reach a widget, and a file that fails
in any way is one line in the page, never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components
from streamlit.delta_generator import DeltaGenerator

from landscape import export, plots, results
from landscape.errors import LandscapeError
from landscape.plots import Levels, PlotOptions, Slice
from landscape.storage import Surface

DEMO_PAIR = ("resnet56", "resnet56_noshort")
MODES = ("One surface", "Compare two")
VIEWS = {"surface": "3D surface", "contour": "Contour lines", "heatmap": "Heat map"}
COLORSCALES = ("Viridis", "Cividis", "Plasma", "Inferno", "Turbo", "RdBu_r")
APP_MAX_LEVELS = 100  # chosen contour levels the app draws (a URL may ask for more)
LEVEL_MODES = ("log-spaced", "even", "start:end:size", "list")
ASPECT_LABELS = {"auto": "auto", "equal": "one scale", "free": "fill"}
SLICES = {"x": "a row (β fixed)", "y": "a column (α fixed)", "angle": "a line through θ*"}
SURFACE_HEIGHT = 620
PLANE_HEIGHT = 460
CURVE_HEIGHT = 380
WATCH_SECONDS = 5.0  # how often the folder is looked at for new files and finished runs
STACK_BELOW_PX = 1100  # side-by-side plots stack in a window narrower than this
MIME = {
    "html": "text/html",
    "pdf": "application/pdf",
    "svg": "image/svg+xml",
    "png": "image/png",
    "csv": "text/csv",
    "npz": "application/octet-stream",
}
# The settings kept in the URL: session key -> kind ('bool', 'float', 'text' or a tuple of the allowed values),
# the range of each float (as its widget allows; else ±plots.HUGE), and their defaults (not written to the URL).
URL_SETTINGS: dict[str, Any] = {
    "mode": MODES,
    "metric": "text",
    "log": "bool",
    "clip": "float",
    "zmin": "float",
    "zmax": "float",
    "levels_mode": LEVEL_MODES,
    "levels_start:end:size": "text",
    "levels_list": "text",
    "labels": "bool",
    "colorscale": COLORSCALES,
    "center": "bool",
    "path": "bool",
    "aspect": tuple(ASPECT_LABELS),
    "camera": tuple(plots.CAMERAS),
    "zscale": "float",
    "floor": "bool",
    "link": "bool",
    "slice": tuple(SLICES),
    "slice_at": "float",
    "slice_angle": "float",
}
FLOAT_RANGES = {"clip": (0.0, plots.HUGE), "zscale": (0.2, 2.0), "slice_angle": (0.0, 180.0)}
DEFAULTS: dict[str, Any] = {
    "mode": MODES[0],
    "metric": "train_loss",  # where the files have it (`options_ui` takes their first metric otherwise)
    "log": False,
    "clip": None,
    "zmin": None,
    "zmax": None,
    "levels_mode": LEVEL_MODES[0],
    "levels_start:end:size": "",
    "levels_list": "",
    "labels": False,
    "colorscale": COLORSCALES[0],
    "center": True,
    "path": True,
    "aspect": "auto",
    "camera": "oblique",
    "zscale": plots.ZSCALE,
    "floor": True,
    "link": True,
    "slice": "x",
    "slice_at": 0.0,
    "slice_angle": 45.0,
}
# Side-by-side plots in the keyed blocks below stack in a narrow window (Streamlit itself stacks columns only
# below 640 px, where a 3D plot and a contour map side by side are long too cramped).
STYLE = f"""<style>
.st-key-view_keeper {{ position: absolute; width: 1px; height: 1px; overflow: hidden; opacity: 0; }}
@media (max-width: {STACK_BELOW_PX}px) {{
  .st-key-plane_views [data-testid="stHorizontalBlock"],
  .st-key-linked_3d [data-testid="stHorizontalBlock"] {{ flex-direction: column; }}
  .st-key-plane_views [data-testid="stColumn"],
  .st-key-linked_3d [data-testid="stColumn"] {{ width: 100% !important; flex: 1 1 100% !important; }}
}}
</style>"""
# Keeps the view of each chart: Streamlit draws a chart anew whenever its figure changes (a setting, new points of
# a run), so plotly's own `uirevision` cannot keep a rotated camera or a zoom. This script runs in the page (the
# component's frame has the page's origin): it remembers each chart's 3D cameras and 2D axis ranges when the user
# changes them, and puts them back on the chart drawn in its place while the figure's `uirevision` (the file, for a
# 3D scene the camera preset, height and aspect, for the 1D curves the log scale) is the same. Cameras of the charts
# in the block `linked_3d` follow each other.
VIEW_JS = """<script>
(function () {
  const page = window.parent;
  const token = Math.random();
  page.__landscapeKeeper = token;
  const views = page.__landscapeViews = page.__landscapeViews || {};
  const mine = () => page.__landscapeKeeper === token;
  const plots = () => Array.from(page.document.querySelectorAll('.js-plotly-plot'));
  const keyOf = gd => {
    const box = gd.closest('[class*="st-key-"]');
    return box ? Array.from(box.classList).find(c => c.startsWith('st-key-')) : null;
  };
  const linked = gd => !!gd.closest('.st-key-linked_3d');
  const scenes = gd => Object.keys(gd._fullLayout || {}).filter(k => /^scene\\d*$/.test(k));
  const axes = gd => Object.keys(gd._fullLayout || {}).filter(k => /^[xy]axis\\d*$/.test(k));
  let applying = 0;
  function apply(gd, update) {
    applying += 1;
    return page.Plotly.relayout(gd, update).finally(() => { applying -= 1; });
  }
  function rememberCamera(gd, scene, camera) {
    const key = keyOf(gd);
    if (!key) return;
    const entry = views[key] = views[key] || {scenes: {}};
    entry.scenes[scene] = {rev: (gd.layout[scene] || {}).uirevision, camera: camera};
  }
  function changed(gd, event, live) {
    if (!mine() || applying || !event) return;
    Object.keys(event).forEach(k => {
      const m = k.match(/^(scene\\d*)\\.camera$/);
      if (!m) return;
      if (!live) rememberCamera(gd, m[1], event[k]);
      if (linked(gd)) {
        plots().filter(o => o !== gd && linked(o) && o._fullLayout && o._fullLayout.scene).forEach(o => {
          if (!live) rememberCamera(o, 'scene', event[k]);
          apply(o, {'scene.camera': event[k]});
        });
      }
    });
    if (!live && Object.keys(event).some(k => /^[xy]axis\\d*\\.(range|autorange)/.test(k))) {
      const key = keyOf(gd);
      if (!key) return;
      const entry = views[key] = views[key] || {scenes: {}};
      entry.axes = {rev: gd.layout.uirevision, ranges: {}};
      axes(gd).forEach(a => {
        const axis = gd._fullLayout[a];
        if (!axis.autorange) entry.axes.ranges[a] = axis.range.slice();
      });
    }
  }
  function restore(gd) {
    const entry = views[keyOf(gd)];
    if (!entry) return;
    const update = {};
    scenes(gd).forEach(s => {
      const saved = entry.scenes[s];
      if (saved && saved.rev === (gd.layout[s] || {}).uirevision) update[s + '.camera'] = saved.camera;
    });
    if (entry.axes && entry.axes.rev === gd.layout.uirevision) {
      Object.entries(entry.axes.ranges).forEach(([a, range]) => { update[a + '.range'] = range; });
    }
    if (Object.keys(update).length) apply(gd, update);
  }
  function attach() {
    if (!mine() || !page.Plotly) return;
    plots().forEach(gd => {
      if (gd.__landscapeToken === token || !gd.on || !gd._fullLayout) return;
      gd.__landscapeToken = token;
      gd.on('plotly_relayout', event => changed(gd, event, false));
      gd.on('plotly_relayouting', event => changed(gd, event, true));
      restore(gd);
    });
  }
  attach();
  const timer = setInterval(() => { if (mine()) attach(); else clearInterval(timer); }, 250);
})();
</script>"""


def results_root(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--results", default="results")
    return Path(parser.parse_known_args(argv)[0].results)


@st.cache_data(max_entries=8, show_spinner=False)  # the files shown (the table keeps its rows in `_summaries`)
def _read(root: str, name: str, stamp: results.Stamp) -> Surface:
    return results.load(root, name)


def load(root: Path, name: str) -> Surface:
    """A surface of the results folder, read again only when the file changed."""
    return _read(str(root), name, results.file_stamp(root, name))


@st.cache_resource
def _summaries() -> results.Summaries:
    """The rows of the files table, kept per file until it changes, for every session of this server."""
    return results.Summaries()


@st.cache_data(max_entries=16, show_spinner="rendering PNG, SVG and PDF ...")
def _images(fig_json: str) -> dict[str, bytes]:
    return export.figure_images(go.Figure(json.loads(fig_json)), export.IMAGE_FORMATS)


def _chosen(value: str | None) -> str:
    """A selectbox's value: never None, as every selectbox here has options and a default."""
    assert value is not None
    return value


# --- pure helpers ---------------------------------------------------------------------------------------------

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LINKED = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)")  # where GFM's autolink literals begin
WORD_JOINER = "\u2060"


def escape_markdown(text: str) -> str:
    """Text from a file or the URL for a Streamlit call that renders Markdown (st.subheader, st.caption, st.error,
    an expander's label, st.table's cells ...), shown as it is: every ASCII punctuation character backslash-escaped
    (CommonMark allows it for each), so that no image, link, HTML, entity, heading, list, table, math (`$`) or
    Streamlit directive (`:red[...]`, `:material/icon:`) can form; control characters (line breaks) become spaces;
    and an invisible word joiner in `://`, after `www` and after `@` keeps URLs and e-mail addresses from becoming
    links (GFM looks for them in the text after the escapes are undone)."""
    # no leading blanks: four of them would make the text a code block where Markdown is not dedented (table cells)
    return _PUNCTUATION.sub(r"\\\1", _LINKED.sub(WORD_JOINER, _CONTROL.sub(" ", text).lstrip()))


def parse_setting(kind: Any, text: str, limits: tuple[float, float] = (-plots.HUGE, plots.HUGE)) -> Any:
    """A setting from the URL as its kind says (a float within `limits`); a ValueError for anything else."""
    if kind == "bool":
        if text not in ("0", "1"):
            raise ValueError(text)
        return text == "1"
    if kind == "float":
        value = float(text)
        if not limits[0] <= value <= limits[1]:  # NaN and inf too
            raise ValueError(text)
        return value
    if kind == "text":
        if len(text) > 200:
            raise ValueError(text)
        return text
    if text not in kind:
        raise ValueError(text)
    return text


def format_setting(value: Any) -> str:
    """A setting as the URL keeps it."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):  # the shortest text that reads back as the same float (':g' kept 6 digits)
        return repr(value).removesuffix(".0") if value.is_integer() and abs(value) < 1e16 else repr(value)
    return str(value)


def panel_titles(names: list[str]) -> list[str]:
    """Titles of surfaces shown together: the file's stem, or its path in the results folder (without the suffix)
    where two stems are the same."""
    stems = [Path(n).stem for n in names]
    return [
        str(Path(n).with_suffix("")) if stems.count(s) > 1 and names.count(n) == 1 else s for n, s in zip(names, stems)
    ]


def figure_name(surfaces: list[Surface], names: list[str], view: str, metric: str) -> str:
    """The file name (without suffix) of a downloaded figure: the model(s), the file where it says more, the metric
    and the view, e.g. 'resnet56_train_loss_contour_lines' or 'resnet56_vs_resnet56_noshort_train_loss_3d_surface'."""
    parts = []
    for surface, title in zip(surfaces, panel_titles(names)):
        model = results.describe(surface).model
        known = surface.surface_spec is not None and model not in ("", "(paper's code: not recorded)")
        parts.append(model if known and title == model else f"{model}-{title}" if known else title)
    stem = "_vs_".join(parts) + f"_{metric}_{view}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.lower()).strip("_")


def caption(surface: Surface) -> str:
    """What the file records about the surface on one line: model, data and image count, precision, directions
    (seeds, normalization), grid, completion (`results.describe`)."""
    desc = results.describe(surface)
    spec = surface.surface_spec
    if spec is None:
        return f"{desc.kind} · grid {desc.grid} · completion {desc.completion}"
    x, y = spec.x, spec.y
    same = (
        y is not None
        and x.kind == y.kind == "random"
        and (x.norm, x.ignore, x.dir_type)
        == (
            y.norm,
            y.ignore,
            y.dir_type,
        )
    )
    if same and y is not None:
        directions = (
            f"directions random, seeds {x.seed} (α) and {y.seed} (β), norm {x.norm}, ignore {x.ignore} ({x.dir_type})"
        )
    else:
        directions = "; ".join(f"{axis} direction {text}" for axis, text in desc.directions.items())
    fields = [
        f"model {desc.model}",
        f"data {desc.data}",
        f"evaluation {desc.evaluation}",
        directions,
        f"grid {desc.grid}",
        f"completion {desc.completion}",
    ]
    return " · ".join(fields)


def colour_range(
    zmin: float | None, zmax: float | None, data: tuple[float, float] | None
) -> tuple[float, float] | None:
    """The colour range from the two inputs, an empty one taking the data's end; None for the data's own range.
    A LandscapeError when the minimum is above the maximum."""
    if zmin is None and zmax is None:
        return None
    lo = zmin if zmin is not None else data[0] if data else None
    hi = zmax if zmax is not None else data[1] if data else None
    if lo is None or hi is None:
        return None
    if lo > hi:
        raise LandscapeError(f"Colour min {lo:g} is above colour max {hi:g}")
    return lo, hi


# --- settings and the URL -------------------------------------------------------------------------------------


def settings_from_url() -> list[str]:
    """Put the settings named in the URL into the session (on the first run only); what could not be read."""
    problems = []
    for key, kind in URL_SETTINGS.items():
        text = st.query_params.get(key)
        if text is None:
            continue
        try:
            st.session_state[key] = parse_setting(kind, text, FLOAT_RANGES.get(key, (-plots.HUGE, plots.HUGE)))
        except ValueError:
            problems.append(f"{key}={text[:40]!r}")
    return problems


def settings_to_url(chosen: list[str]) -> None:
    """The chosen files and every setting that is not its default, in the URL."""
    params = dict(zip(("file", "other"), chosen))
    for key in URL_SETTINGS:
        value = st.session_state.get(key)
        if value is not None and value != DEFAULTS.get(key) and key != "mode":
            params[key] = format_setting(value)
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def keep_settings() -> None:
    """Keep every setting (and the file to compare with) through runs that do not draw its widget: Streamlit forgets
    the value of a widget not drawn in a run, so a file that failed, a visit to *One surface*, a 1D file or a file
    without a training path reset them, and the URL lost them. Set again as the session's own value (before any
    widget is drawn) each outlives its widget."""
    for key in (*URL_SETTINGS, "other"):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def _set_defaults() -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)


# --- widgets --------------------------------------------------------------------------------------------------


def selection_ui(root: Path, names: list[str]) -> list[str]:
    """The chosen file (or two, to compare); on the first load `?file=NAME&other=NAME` in the URL picks them."""
    if "file" not in st.session_state:
        _defaults_from_url(root, names)
    for key, default in zip(("file", "other"), default_pair(names)):
        if st.session_state.get(key) not in names:  # a file that went away, or a widget Streamlit forgot
            st.session_state[key] = default
    mode = st.sidebar.radio("View", MODES, key="mode", horizontal=True)
    chosen = [_chosen(st.sidebar.selectbox("Surface", names, key="file"))]
    if mode == MODES[1]:
        chosen.append(_chosen(st.sidebar.selectbox("Compare with", names, key="other")))
    return chosen


def default_pair(names: list[str]) -> tuple[str, str]:
    """The files shown first: the ResNet-56 pair of the demo where the folder has it, else the first two."""
    stems = {Path(n).stem: n for n in names}
    return stems.get(DEMO_PAIR[0], names[0]), stems.get(DEMO_PAIR[1], names[1] if len(names) > 1 else names[0])


def _defaults_from_url(root: Path, names: list[str]) -> None:
    st.session_state["file"], st.session_state["other"] = default_pair(names)
    for key in ("file", "other"):
        wanted = st.query_params.get(key)
        if wanted is None:
            continue
        if wanted in names:
            st.session_state[key] = wanted
            if key == "other":
                st.session_state["mode"] = MODES[1]
            continue
        try:
            results.resolve(root, wanted)
            st.error(escape_markdown(f"'{wanted}' is not a surface file of the results folder"))
        except LandscapeError as e:
            st.error(escape_markdown(str(e)))


def options_ui(metrics: list[str], surfaces: list[Surface]) -> PlotOptions:
    """The plot settings in the sidebar; one set for every figure on the page."""
    sb = st.sidebar
    sb.subheader("Plot")
    if st.session_state.get("metric") not in metrics:
        st.session_state["metric"] = "train_loss" if "train_loss" in metrics else metrics[0]
    metric = _chosen(sb.selectbox("Metric", metrics, key="metric", format_func=plots.metric_label))
    log = sb.checkbox("Log scale", key="log")
    huge = plots.HUGE  # beyond it nothing is drawn (and the URL may not go)
    clip = sb.number_input(
        "Clip at (max value)", value=None, min_value=0.0, max_value=huge, key="clip", placeholder="no clipping"
    )
    c1, c2 = sb.columns(2)
    zmin = c1.number_input("Colour min", -huge, huge, value=None, key="zmin", placeholder="data", format="%g")
    zmax = c2.number_input("Colour max", -huge, huge, value=None, key="zmax", placeholder="data", format="%g")
    levels, spacing = levels_ui()
    labels = sb.checkbox("Values on the contour lines", key="labels")
    colorscale = _chosen(sb.selectbox("Colours", COLORSCALES, key="colorscale"))
    center = sb.checkbox("Mark θ* (the centre)", key="center")
    path = True
    if any(s.trajectory is not None for s in surfaces):  # a layer only surfaces on PCA directions have
        path = sb.checkbox(
            "Training path", key="path", help="the snapshots of the trajectory on the plane of its principal components"
        )
    sb.subheader("3D view")
    camera = _chosen(sb.selectbox("Camera", list(plots.CAMERAS), key="camera", help="Angles as matplotlib's"))
    zscale = sb.slider("Height (z exaggeration)", 0.2, 2.0, step=0.1, key="zscale")
    floor = sb.checkbox("Contour lines under the surface", key="floor")
    aspect = _chosen(
        sb.radio(
            "α : β",
            list(ASPECT_LABELS),
            key="aspect",
            horizontal=True,
            format_func=ASPECT_LABELS.__getitem__,
            help="one scale: a unit of α is as long as a unit of β (auto: unless the directions are not alike)",
        )
    )
    if clip is not None and log and not clip > 0:  # every value clipped to it: nothing to draw on a log scale
        sb.error(escape_markdown(f"a log scale needs a positive clip (got {clip:g}); nothing is clipped"))
        clip = None
    options = PlotOptions(
        metric=metric,
        log=log,
        clip=clip,
        levels=levels,
        spacing=spacing,
        labels=labels,
        colorscale=colorscale,
        mark_center=center,
        path=path,
        aspect=aspect,
        zscale=float(zscale),
        camera=plots.CAMERAS[camera],
        floor=floor,
    )
    if options.levels is not None:  # checked here: from inside the figures an error blanked every one of them
        try:
            count = len(plots.contour_levels(None, options))
            if count > APP_MAX_LEVELS:  # each level is a trace holding the grid: 950 made 500 MB of figure
                raise LandscapeError(
                    f"{count} contour levels: the app draws at most {APP_MAX_LEVELS} (`landscape plot` takes more)"
                )
        except LandscapeError as e:
            sb.error(escape_markdown(f"{e}; automatic levels are drawn"))
            options = replace(options, levels=None)
    try:
        zrange = colour_range(zmin, zmax, plots.value_range(surfaces, options))
        if zrange is not None and log and zrange[0] <= 0:
            raise LandscapeError(f"a log scale needs a positive colour range (got {zrange[0]:g} .. {zrange[1]:g})")
        return replace(options, zrange=zrange)
    except LandscapeError as e:
        sb.error(escape_markdown(str(e)))
        return options


def levels_ui() -> tuple[Levels | tuple[float, ...] | None, str]:
    """The contour levels (None: automatic) and the spacing of automatic levels."""
    sb = st.sidebar
    how = sb.radio(
        "Contour levels",
        LEVEL_MODES,
        key="levels_mode",
        horizontal=True,
        help="log-spaced: dense near the minimum of a loss (the maximum of an accuracy), as in the paper",
    )
    if how in ("log-spaced", "even"):
        return None, "log" if how == "log-spaced" else "even"
    text = sb.text_input(
        "Levels" + (" (log scale: size in decades)" if how != "list" else ""),
        key=f"levels_{how}",
        placeholder="0.1:5:0.25" if how != "list" else "0.5, 1, 2, 5",
    )
    if not text.strip():
        return None, "log"
    try:
        return plots.parse_levels(text), "log"
    except LandscapeError as e:
        sb.error(escape_markdown(str(e)))
        return None, "log"


def follow_ui(surfaces: list[Surface]) -> float | None:
    """Seconds between refreshes while a shown file is still being computed, or None."""
    if all(s.completion >= 1 for s in surfaces):
        return None
    st.sidebar.subheader("Computation in progress")
    if not st.sidebar.toggle("Follow (refresh on its own)", value=True, key="follow"):
        return None
    return float(st.sidebar.slider("every (s)", 2, 60, 5, key="refresh"))


def slice_ui(surface: Surface) -> Slice:
    """Where the 1D slice of a 2D surface runs: a row, a column or a line through θ* (widgets above its plot)."""
    assert surface.ycoordinates is not None
    left, right = st.columns([2, 3])
    along = _chosen(left.radio("Slice along", list(SLICES), key="slice", format_func=SLICES.__getitem__))
    if along == "angle":
        angle = right.slider("angle from the α axis (°)", 0.0, 180.0, step=5.0, key="slice_angle")
        return Slice("angle", float(angle))
    values = surface.ycoordinates if along == "x" else surface.xcoordinates
    options = [float(v) for v in values]
    wanted = float(st.session_state.get("slice_at", 0.0))
    st.session_state["slice_at"] = options[int(np.argmin(np.abs(np.asarray(options) - wanted)))]
    at = right.select_slider(
        "β of the row" if along == "x" else "α of the column", options, key="slice_at", format_func=lambda v: f"{v:.4g}"
    )
    return Slice(along, float(at))


def downloads_ui(figures: dict[str, go.Figure], names: dict[str, str], surface: Surface | None, stem: str) -> None:
    """The shown figures as HTML, PNG, SVG and PDF (named after the model); the data of one surface as CSV, NPZ."""
    st.subheader("Downloads")
    label = _chosen(st.selectbox("Figure", list(figures), key="download_figure"))
    fig = figures[label]
    base = names[label]
    cols = st.columns(6)
    _download(cols[0], "HTML", lambda: export.figure_bytes(fig, "html"), f"{base}.html")
    fig_json = fig.to_json()
    rendered = hashlib.sha1(fig_json.encode()).hexdigest()  # forgotten when the figure changes
    if cols[1].button("PNG · SVG · PDF", key="render", help="Render static images (a few seconds)"):
        st.session_state["rendered"] = rendered
    if st.session_state.get("rendered") == rendered:
        try:
            images = _images(fig_json)
            for col, fmt in zip(cols[2:5], export.IMAGE_FORMATS):
                _download(col, fmt.upper(), images[fmt], f"{base}.{fmt}")
        except LandscapeError as e:
            st.error(escape_markdown(str(e)))
    if surface is not None:
        data = st.columns(6)
        _download(data[0], "CSV", lambda: export.csv_text(surface), f"{stem}.csv")
        _download(data[1], "NPZ", lambda: export.npz_bytes(surface), f"{stem}.npz")


def _download(where: DeltaGenerator, label: str, data: bytes | Callable[[], bytes | str], file_name: str) -> None:
    where.download_button(
        label,
        data,
        file_name=file_name,
        mime=MIME[file_name.rsplit(".", 1)[1]],
        on_click="ignore",
        key=f"dl_{file_name}",
    )


# --- views ------------------------------------------------------------------------------------------------------


def _chart(where: DeltaGenerator | None, fig: go.Figure, key: str, file_name: str, files: list[str]) -> None:
    """A plotly chart (in `where`, or in the page) whose camera button saves a PNG named after the model. Its views
    (`uirevision`, which VIEW_JS follows) are those of the `files` by their names in the results folder: a file's
    stem alone gave run1/model.h5 the camera of run2/model.h5."""
    shown = " | ".join(files)
    fig.update_layout(uirevision=f"{shown} | {fig.layout.uirevision}")
    fig.for_each_scene(lambda scene: scene.update(uirevision=f"{shown} | {scene.uirevision}"))
    config = {"displaylogo": False, "toImageButtonOptions": {"filename": file_name, "scale": 2}}
    if where is None:
        st.plotly_chart(fig, key=key, config=config)
    else:
        where.plotly_chart(fig, key=key, config=config)


def _header(names: list[str], surfaces: list[Surface], metric: str) -> None:
    """Each file's caption, all it records (folded), its progress, and a note on values too large to draw."""
    for name, surface in zip(names, surfaces):
        st.caption(escape_markdown(f"{name}: {caption(surface)}" if len(names) > 1 else caption(surface)))
        with st.expander(escape_markdown(f"Everything {name} records"), expanded=False):
            fields = results.describe(surface).fields().items()
            st.table({label: [escape_markdown(value)] for label, value in fields})
        _progress(surface)
        # every metric: the 1D views and slices draw them all, the maps the chosen one (first)
        counts = {m: plots.extreme_count(surface, m) for m in sorted(surface.values, key=lambda m: m != metric)}
        extreme = ", ".join(f"{plots.metric_label(m)} {n}" for m, n in counts.items() if n)
        if extreme:
            st.warning(
                escape_markdown(
                    f"{name}: values beyond ±{plots.HUGE:g} are drawn as infinite (gaps, or at the clip): {extreme}"
                )
            )


def single_view(name: str, surface: Surface, options: PlotOptions) -> None:
    st.subheader(escape_markdown(name))
    _header([name], [surface], options.metric)
    model = results.describe(surface).model
    metric = plots.metric_label(options.metric)
    figures: dict[str, go.Figure] = {}
    if surface.ndim == 1:
        (drawn,) = _drawn([name], [surface])
        figures["curves"] = plots.curve_figure(drawn, options).update_layout(height=CURVE_HEIGHT)
        file_names = {"curves": figure_name([surface], [name], "curves", options.metric)}
        _chart(None, figures["curves"], "chart_curves", file_names["curves"], [name])
        downloads_ui(figures, file_names, surface, Path(name).stem)
        return
    (drawn,) = _drawn([name], [surface])
    drawing = options
    if drawn is not surface:  # a thinned grid: in the colours and levels of the whole one
        drawing = replace(options, zrange=options.zrange or plots.value_range([surface], options))
    for kind, title in VIEWS.items():
        fig = plots.figure(drawn, kind, drawing)
        height = SURFACE_HEIGHT if kind == "surface" else PLANE_HEIGHT
        figures[title] = fig.update_layout(
            height=height, title=dict(text=f"{title} · {plots.plain_text(model)} · {metric}")
        )
    file_names = {title: figure_name([surface], [name], title, options.metric) for title in figures}
    _chart(None, figures["3D surface"], "chart_3D surface", file_names["3D surface"], [name])
    planes = st.container(key="plane_views")  # filled below, once the slice to draw on them is chosen
    st.subheader("1D slice")
    line = slice_ui(surface)
    options = replace(options, line=line)
    path = plots.slice_path(surface, line)
    with planes:  # the slice's line is shown, not downloaded: the files are `landscape plot`'s figures
        for col, title in zip(st.columns(2), ("Contour lines", "Heat map")):
            shown = go.Figure(figures[title]).add_trace(_slice_trace(*path))
            _chart(col, shown, f"chart_{title}", file_names[title], [name])
    curve = plots.curve_figure(surface, options).update_layout(height=CURVE_HEIGHT)
    figures["1D slice"] = curve
    file_names["1D slice"] = figure_name([surface], [name], "1d_slice", options.metric)
    _chart(None, curve, "chart_slice", file_names["1D slice"], [name])
    downloads_ui(figures, file_names, surface, Path(name).stem)


def compare_view(names: list[str], surfaces: list[Surface], options: PlotOptions) -> None:
    st.subheader(escape_markdown(" vs ".join(names)))
    _header(names, surfaces, options.metric)
    if len({s.ndim for s in surfaces}) > 1:
        raise LandscapeError("a 1D and a 2D surface cannot be compared")
    titles = panel_titles(names)
    metric = plots.metric_label(options.metric)
    figures: dict[str, go.Figure] = {}
    if surfaces[0].ndim == 1:
        curves = plots.compare_figure(_drawn(names, surfaces), "1d", options, titles)
        figures["curves"] = curves.update_layout(height=CURVE_HEIGHT)
        file_names = {"curves": figure_name(surfaces, names, "curves", options.metric)}
        _chart(None, figures["curves"], "compare_curves", file_names["curves"], names)
        downloads_ui(figures, file_names, None, "_vs_".join(titles))
        return
    rng = plots.value_range(surfaces, options)
    shared = replace(options, zrange=options.zrange or rng)
    if rng and options.zrange is None:
        st.caption(escape_markdown(f"one colour scale for both: {metric} {rng[0]:.4g} .. {rng[1]:.4g}"))
    drawn = _drawn(names, surfaces)
    link = st.toggle("Turn the two 3D views together", key="link")
    with st.container(key="linked_3d" if link else "unlinked_3d"):
        for k, (col, surface, title) in enumerate(zip(st.columns(2), drawn, titles)):
            fig = plots.surface_figure(surface, shared).update_layout(
                height=SURFACE_HEIGHT, title=dict(text=f"{plots.plain_text(title)} · {metric}")
            )
            _chart(
                col,
                fig,
                f"compare_3d_{k}",
                figure_name([surface], [names[k]], "3d_surface", options.metric),
                [names[k]],
            )
    for kind, title in VIEWS.items():
        fig = plots.compare_figure(drawn, kind, shared, titles)
        figures[title] = fig.update_layout(
            height=SURFACE_HEIGHT if kind == "surface" else PLANE_HEIGHT, title=dict(text=f"{title} · {metric}")
        )
    for title in ("Contour lines", "Heat map"):
        _chart(None, figures[title], f"compare_{title}", figure_name(surfaces, names, title, options.metric), names)
    st.subheader("Difference")
    try:
        diff = plots.difference_figure(drawn[0], surfaces[1], options, titles).update_layout(height=PLANE_HEIGHT)
        figures["Difference"] = diff
        _chart(None, diff, "compare_difference", figure_name(surfaces, names, "difference", options.metric), names)
    except LandscapeError as e:
        st.info(escape_markdown(f"no difference view: {e}"))
    st.subheader("1D slice")
    line = slice_ui(surfaces[0])
    try:  # the slice is chosen on the first grid: it may lie outside the other's
        curves = plots.compare_figure(surfaces, "1d", replace(options, line=line), titles)
    except LandscapeError as e:
        st.info(escape_markdown(f"no 1D slice: {e}"))
    else:
        figures["1D slice"] = curves.update_layout(height=CURVE_HEIGHT)
        _chart(None, curves, "compare_slice", figure_name(surfaces, names, "1d_slice", options.metric), names)
    file_names = {title: figure_name(surfaces, names, title, options.metric) for title in figures}
    downloads_ui(figures, file_names, None, "_vs_".join(titles))


def _drawn(names: list[str], surfaces: list[Surface]) -> list[Surface]:
    """The surfaces as the 3D views and maps (or a 1D surface's curves) draw them: a large grid thinned
    (`plots.thin`), with a note saying so."""
    drawn = [plots.thin(s) for s in surfaces]
    for name, surface, thinned in zip(names, surfaces, drawn):
        if thinned is not surface and thinned.ycoordinates is None:
            st.caption(
                escape_markdown(
                    f"{name}: the curves draw {len(thinned.xcoordinates)} of its {len(surface.xcoordinates)} points "
                    f"(in each of {plots.DISPLAY_STRETCHES} stretches of α, each metric's lowest and highest, and its "
                    "gaps) so that the browser keeps up; the CSV and NPZ downloads hold every point"
                )
            )
        elif thinned is not surface:
            assert surface.ycoordinates is not None and thinned.ycoordinates is not None
            full = f"{len(surface.xcoordinates)} x {len(surface.ycoordinates)}"
            shown = f"{len(thinned.xcoordinates)} x {len(thinned.ycoordinates)}"
            st.caption(
                escape_markdown(
                    f"{name}: the 3D view and the maps draw {shown} of its {full} points (evenly spaced, through θ*) "
                    "so that the browser keeps up; the 1D slice and the CSV and NPZ downloads hold every point"
                )
            )
    return drawn


def _slice_trace(x: np.ndarray, y: np.ndarray) -> go.Scatter:
    return go.Scatter(
        x=x,
        y=y,
        mode="lines",
        line=dict(color="black", width=1.5, dash="dash"),
        name="1D slice",
        showlegend=False,
        hoverinfo="skip",
    )


def _progress(surface: Surface) -> None:
    if surface.completion < 1:
        done = int(surface.computed.sum())
        st.progress(
            surface.completion,
            text=f"computing: {done}/{surface.computed.size} points "
            f"({surface.completion:.0%}); the figures show the points done so far",
        )


def files_ui(root: Path, names: list[str]) -> None:
    """The table of all surface files of the folder with their spec summary (or why a file cannot be read)."""
    st.subheader(escape_markdown(f"Surface files in {root}"))
    st.dataframe(_summaries().rows(root, names), hide_index=True)  # a data frame shows its cells as text


def main() -> None:
    st.set_page_config(page_title="landscape", layout="wide")
    keep_settings()
    st.html(STYLE)
    root = results_root(sys.argv[1:]).resolve()
    st.sidebar.title("landscape")
    try:
        names = results.list_files(root)
    except LandscapeError as e:
        st.error(escape_markdown(str(e)))
        return
    if not names:
        st.info(
            f"No surface files (*.h5) in {root} yet: compute one with "
            f"`landscape compute --ckpt MODEL.pt --out {root}/NAME.h5`; this page looks again every "
            f"{WATCH_SECONDS:g} s."
        )
        watch(root, names)
        return
    if "settings_read" not in st.session_state:
        st.session_state["settings_read"] = True
        _set_defaults()
        problems = settings_from_url()
        if problems:
            st.warning(
                escape_markdown(f"settings in the URL that were not understood and are left out: {', '.join(problems)}")
            )
    _set_defaults()
    chosen = selection_ui(root, names)
    try:
        surfaces = [load(root, name) for name in chosen]
        metrics = plots.metric_order([m for m in surfaces[0].metrics if all(m in s.values for s in surfaces)])
        if not metrics:  # e.g. a --split train file and a --split test one
            held = " and ".join(", ".join(plots.metric_order(list(s.metrics))) for s in surfaces)
            raise LandscapeError(
                f"{' and '.join(chosen)} have no metric in common ({held}): compare surfaces of the same split"
            )
        options = options_ui(metrics, surfaces)
    except Exception as e:  # a LandscapeError, or a damaged file that no check foresaw
        st.error(escape_markdown(_failure(root, chosen, e)))
        settings_to_url(chosen)
        watch(root, names)
        return
    interval = follow_ui(surfaces)

    @st.fragment(run_every=interval)
    def view() -> None:
        try:
            shown = [load(root, name) for name in chosen]
            if len(shown) == 1:
                single_view(chosen[0], shown[0], options)
            else:
                compare_view(chosen, shown, options)
        except Exception as e:  # a LandscapeError, or a damaged file that no check foresaw: one line, no traceback
            st.error(escape_markdown(_failure(root, chosen, e)))
            return
        settings_to_url(chosen)  # the slice and link widgets live here: a change reruns only this fragment
        if interval is not None and all(s.completion >= 1 for s in shown):
            st.rerun()

    view()
    keep_views()
    settings_to_url(chosen)
    watch(root, names)


def _failure(root: Path, names: list[str], error: Exception) -> str:
    """Why the files `names` cannot be shown, in one line: a LandscapeError says it (naming the file by its name in
    the results folder, not the server's path); anything else is named with its type and the first line of its
    message."""
    if isinstance(error, LandscapeError):
        return str(error).replace(f"{root}{os.sep}", "")
    return f"{' and '.join(names)} cannot be shown ({results.failure(error)})"


def keep_views() -> None:
    """The script that keeps each chart's camera and zoom (VIEW_JS), in an invisible frame of the page's origin."""
    with st.container(key="view_keeper"):
        if hasattr(st, "iframe"):  # Streamlit >= 1.52
            st.iframe(VIEW_JS, height=1)
        else:
            components.html(VIEW_JS, height=0)


def watch(root: Path, names: list[str]) -> None:
    """The table of the folder's files, redrawn every WATCH_SECONDS (a finished run shows as complete); a new or
    removed file reruns the whole page, so that it can be chosen."""

    @st.fragment(run_every=WATCH_SECONDS)
    def table() -> None:
        try:
            now = results.list_files(root)
        except LandscapeError as e:  # the folder removed or renamed while the page is open
            st.error(escape_markdown(str(e)))
            return
        if now != names:
            st.rerun()
        if now:
            files_ui(root, now)

    table()


if __name__ == "__main__":
    main()
