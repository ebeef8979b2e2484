"""The landscape app: browse the surface files of one results folder in the browser (`landscape app`).

Started as `streamlit run app.py -- --results DIR`. It only reads, and only the HDF5 files listed under the
results folder; reads are cached by name, modification time and size, so a file that is still being computed is
read again when it grows. The `*_ui` functions draw widgets and return what was chosen; figures come from
`landscape.plots` and downloads from `landscape.export`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from landscape import export, plots, results
from landscape.errors import LandscapeError
from landscape.plots import Levels, PlotOptions
from landscape.storage import Surface

DEMO_PAIR = ("resnet56", "resnet56_noshort")
MODES = ("One surface", "Compare two")
VIEWS = {"surface": "3D surface", "contour": "Contour lines", "heatmap": "Heat map"}
COLORSCALES = ("Viridis", "Cividis", "Plasma", "Inferno", "Turbo", "RdBu_r")
CHART_HEIGHT = 460
MIME = {
    "html": "text/html",
    "pdf": "application/pdf",
    "svg": "image/svg+xml",
    "png": "image/png",
    "csv": "text/csv",
    "npz": "application/octet-stream",
}


def results_root(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--results", default="results")
    return Path(parser.parse_known_args(argv)[0].results)


@st.cache_data(max_entries=64, show_spinner=False)
def _read(root: str, name: str, stamp: tuple[int, int]) -> Surface:
    return results.load(root, name)


def load(root: Path, name: str) -> Surface:
    """A surface of the results folder, read again only when the file changed."""
    return _read(str(root), name, results.file_stamp(root, name))


@st.cache_data(max_entries=16, show_spinner="rendering PNG, SVG and PDF ...")
def _images(fig_json: str) -> dict[str, bytes]:
    return export.figure_images(go.Figure(json.loads(fig_json)), export.IMAGE_FORMATS)


def _chosen(value: str | None) -> str:
    """A selectbox's value: never None, as every selectbox here has options and a default."""
    assert value is not None
    return value


def selection_ui(root: Path, names: list[str]) -> list[str]:
    """The chosen file (or two, to compare); on the first load `?file=NAME&other=NAME` in the URL picks them."""
    if "file" not in st.session_state:
        _defaults_from_url(root, names)
    mode = st.sidebar.radio("View", MODES, key="mode", horizontal=True)
    chosen = [_chosen(st.sidebar.selectbox("Surface", names, key="file"))]
    if mode == MODES[1]:
        chosen.append(_chosen(st.sidebar.selectbox("Compare with", names, key="other")))
    st.query_params.from_dict(dict(zip(("file", "other"), chosen)))
    return chosen


def _defaults_from_url(root: Path, names: list[str]) -> None:
    stems = {Path(n).stem: n for n in names}
    st.session_state["file"] = stems.get(DEMO_PAIR[0], names[0])
    st.session_state["other"] = stems.get(DEMO_PAIR[1], names[1] if len(names) > 1 else names[0])
    for key in ("file", "other"):
        wanted = st.query_params.get(key)
        if wanted is None:
            continue
        if wanted in names:
            st.session_state[key] = wanted
            st.session_state["mode"] = MODES[1] if key == "other" else st.session_state.get("mode", MODES[0])
            continue
        try:
            results.resolve(root, wanted)
            st.error(f"'{wanted}' is not a surface file of the results folder")
        except LandscapeError as e:
            st.error(str(e))


def options_ui(metrics: list[str]) -> PlotOptions:
    """The plot settings in the sidebar; one set for every figure on the page."""
    sb = st.sidebar
    sb.subheader("Plot")
    metric = _chosen(
        sb.selectbox(
            "Metric",
            metrics,
            key="metric",
            format_func=plots.metric_label,
            index=metrics.index("train_loss") if "train_loss" in metrics else 0,
        )
    )
    log = sb.checkbox("Log scale", key="log")
    clip = sb.number_input("Clip at (max value)", value=None, min_value=0.0, key="clip", placeholder="no clipping")
    c1, c2 = sb.columns(2)
    zmin = c1.number_input("Colour min", value=None, key="zmin", placeholder="data", format="%g")
    zmax = c2.number_input("Colour max", value=None, key="zmax", placeholder="data", format="%g")
    levels = levels_ui()
    colorscale = _chosen(sb.selectbox("Colours", COLORSCALES, key="colorscale"))
    center = sb.checkbox("Mark θ* (the centre)", value=True, key="center")
    return PlotOptions(
        metric=metric,
        log=log,
        clip=clip,
        levels=levels,
        colorscale=colorscale,
        mark_center=center,
        zrange=(zmin, zmax) if zmin is not None and zmax is not None else None,
    )


def levels_ui() -> Levels | tuple[float, ...] | None:
    sb = st.sidebar
    how = sb.radio("Contour levels", ("auto", "start:end:size", "list"), key="levels_mode", horizontal=True)
    if how == "auto":
        return None
    text = sb.text_input(
        "Levels" + (" (log scale: size in decades)" if how != "list" else ""),
        key=f"levels_{how}",
        placeholder="0.1:5:0.25" if how != "list" else "0.5, 1, 2, 5",
    )
    if not text.strip():
        return None
    try:
        return plots.parse_levels(text)
    except LandscapeError as e:
        sb.error(str(e))
        return None


def follow_ui(surfaces: list[Surface]) -> float | None:
    """Seconds between refreshes while a shown file is still being computed, or None."""
    if all(s.completion >= 1 for s in surfaces):
        return None
    st.sidebar.subheader("Computation in progress")
    if not st.sidebar.toggle("Follow (refresh on its own)", value=True, key="follow"):
        return None
    return float(st.sidebar.slider("every (s)", 2, 60, 5, key="refresh"))


def downloads_ui(figures: dict[str, go.Figure], stem: str, surface: Surface | None) -> None:
    """The shown figures as HTML, PNG, SVG and PDF; the data of one surface as CSV and NPZ."""
    st.subheader("Downloads")
    label = _chosen(st.selectbox("Figure", list(figures), key="download_figure"))
    fig = figures[label]
    base = f"{stem}_{label}".replace(" ", "_")
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
            st.error(str(e))
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


def caption(surface: Surface) -> str:
    """What the file records about the surface, on one line (`results.describe`)."""
    return " · ".join(f"{label} {value}" for label, value in results.describe(surface).fields().items())


def single_view(name: str, surface: Surface, options: PlotOptions) -> None:
    st.subheader(name)
    st.caption(caption(surface))
    _progress(surface)
    if surface.ndim == 1:
        figures = {"curves": plots.curve_figure(surface, options)}
        st.plotly_chart(figures["curves"].update_layout(height=CHART_HEIGHT), key="chart_curves")
    else:
        figures = {title: plots.figure(surface, kind, options) for kind, title in VIEWS.items()}
        for col, (title, fig) in zip(st.columns(len(figures)), figures.items()):
            fig.update_layout(height=CHART_HEIGHT, title=dict(text=title))
            col.plotly_chart(fig, key=f"chart_{title}")
    downloads_ui(figures, Path(name).stem, surface)


def compare_view(names: list[str], surfaces: list[Surface], options: PlotOptions) -> None:
    st.subheader(" vs ".join(names))
    for name, surface in zip(names, surfaces):
        st.caption(f"{name}: {caption(surface)}")
        _progress(surface)
    if len({s.ndim for s in surfaces}) > 1:
        raise LandscapeError("a 1D and a 2D surface cannot be compared")
    titles = [Path(n).stem for n in names]
    kinds = {"1d": "curves"} if surfaces[0].ndim == 1 else VIEWS
    figures = {title: plots.compare_figure(surfaces, kind, options, titles) for kind, title in kinds.items()}
    rng = plots.value_range(surfaces, options) if surfaces[0].ndim == 2 else None
    if rng and options.zrange is None:
        st.caption(f"one colour scale for both: {plots.metric_label(options.metric)} {rng[0]:.4g} .. {rng[1]:.4g}")
    for title, fig in figures.items():
        st.plotly_chart(fig.update_layout(height=CHART_HEIGHT, title=dict(text=title)), key=f"compare_{title}")
    downloads_ui(figures, "_vs_".join(titles), None)


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
    st.subheader(f"Surface files in {root}")
    rows = []
    for name in names:
        try:
            rows.append({"file": name, **results.describe(load(root, name)).columns(), "status": "ok"})
        except LandscapeError as e:
            rows.append({"file": name, **dict.fromkeys(results.COLUMNS, ""), "status": str(e)})
    st.dataframe(rows, hide_index=True)


def main() -> None:
    st.set_page_config(page_title="landscape", layout="wide")
    root = results_root(sys.argv[1:]).resolve()
    st.sidebar.title("landscape")
    try:
        names = results.list_files(root)
    except LandscapeError as e:
        st.error(str(e))
        return
    if not names:
        st.info(
            f"No surface files (*.h5) in {root} yet: compute one with "
            f"`landscape compute --ckpt MODEL.pt --out {root}/NAME.h5`."
        )
        return
    chosen = selection_ui(root, names)
    try:
        surfaces = [load(root, name) for name in chosen]
        metrics = plots.metric_order([m for m in surfaces[0].metrics if all(m in s.values for s in surfaces)])
        options = options_ui(metrics)
    except LandscapeError as e:
        st.error(str(e))
        files_ui(root, names)
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
        except LandscapeError as e:
            st.error(str(e))
            return
        if interval is not None and all(s.completion >= 1 for s in shown):
            st.rerun()

    view()
    files_ui(root, names)


if __name__ == "__main__":
    main()
