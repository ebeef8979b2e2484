"""Files made from surfaces and figures: static images (PDF, SVG, PNG) and interactive HTML of a figure, and the
surface itself as a VTK PolyData file for ParaView (.vtp), a plain-text table for pgfplots or gnuplot, CSV or NPZ;
and the training path of a surface on PCA directions as a table for pgfplots.

Static images are rendered by kaleido in a headless Chromium (Debian's `chromium`, or the browser named by
BROWSER_PATH) with the plotly.js that ships with plotly and MathJax off, so nothing is fetched from the network.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import re
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go

from .errors import LandscapeError
from .files import check_writable, write_file
from .plots import (
    PX_PER_INCH,
    PlotOptions,
    default_metric,
    displayed,
    explained,
    metric_order,
    require_points,
    values_at,
)
from .storage import Surface

IMAGE_FORMATS = ("pdf", "svg", "png")
FIGURE_FORMATS = IMAGE_FORMATS + ("html",)
DATA_FORMATS = ("vtp", "table", "csv", "npz", "path")
DATA_SUFFIXES = {"vtp": ".vtp", "table": ".dat", "csv": ".csv", "npz": ".npz", "path": ".path.dat"}
PNG_DPI = 300
GL_SCALE = 2  # a figure with WebGL is drawn at twice its size, where kaleido gives WebGL 2 px per px of that
GL_PPI = 2 * GL_SCALE * PX_PER_INCH  # 384: the resolution of 3D scenes in PDF, SVG and PNG
# What the headless Chromium draws, measured (beyond: an empty PNG, a failed print, a distorted 3D scene)
PNG_MAX_SIDE = 65535  # px: a canvas's longest side
PNG_MAX_AREA = 16384**2  # px: a canvas's area
PDF_MAX_SIDE = 65535  # pt: a printed page's longest side (910.2 in)
GL_MAX_SIDE = 8192  # px: a WebGL image's longest side, 21.3 in of a 3D scene at GL_PPI
BROWSER_MAX_MESSAGE = (
    90 * 10**6
)  # bytes of figure JSON: kaleido's Chromium refused a 100 MB message (a review's reading)
_IMPORTING = threading.Lock()
_SIGNATURES = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF"}  # what an image starts with; an SVG holds `<svg`
_PLOTLY_MARGINS = (80, 80, 100, 80)  # px: plotly's default left, right, top, bottom margins
_SCREEN_SIZE = (900, 700)  # px, for a figure that sets no size of its own
_WEBGL_TRACES = {"surface", "scatter3d", "mesh3d", "cone", "streamtube", "isosurface", "volume"}
LINK_SCENES_JS = """
// landscape: the 3D scenes of this figure turn together
(function (gd) {
  var busy = false;
  gd.on('plotly_relayout', function (event) {
    if (busy) return;
    var moved = Object.keys(event).filter(function (k) { return /^scene\\d*\\.camera$/.test(k); })[0];
    if (!moved) return;
    var update = {};
    Object.keys(gd._fullLayout).filter(function (k) { return /^scene\\d*$/.test(k) && k + '.camera' !== moved; })
      .forEach(function (k) { update[k + '.camera'] = event[moved]; });
    if (!Object.keys(update).length) return;
    busy = true;
    Plotly.relayout(gd, update).then(function () { busy = false; }, function () { busy = false; });
  });
})(document.getElementById('{plot_id}'));
"""


def figure_bytes(fig: go.Figure, fmt: str, scale: float | None = None) -> bytes:
    """The figure as PDF, SVG, PNG (PNG_DPI unless `scale`) or self-contained interactive HTML (whose 3D scenes
    turn together when one is turned)."""
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True, post_script=LINK_SCENES_JS).encode()
    return figure_images(fig, [fmt], scale)[fmt]


def has_webgl(fig: go.Figure) -> bool:
    """Whether the figure draws with WebGL (a 3D scene): such parts come as images, even inside PDF and SVG."""
    return any(key.startswith("scene") for key in fig.layout.to_plotly_json()) or any(
        trace.type in _WEBGL_TRACES or trace.type.endswith("gl") for trace in fig.data
    )


def figure_images(fig: go.Figure, formats: Sequence[str], scale: float | None = None) -> dict[str, bytes]:
    """The figure as static images, rendered in one headless Chromium (two for a figure with 3D scenes).

    Vector PDF and SVG keep text as text. A WebGL part (a 3D scene, text and all) is an image at GL_PPI (384 ppi)
    in PDF, SVG and PNG: the SVG is drawn at twice the size and given back its size, and PDF and PNG are made
    from that SVG."""
    for fmt in formats:
        if fmt not in IMAGE_FORMATS:
            raise LandscapeError(f"unknown figure format '{fmt}': use {', '.join(FIGURE_FORMATS)}")
    check_image_size(fig, formats, scale)
    # kaleido's logging helper (logistro) parses sys.argv when imported and exits on an abbreviation it finds
    # ambiguous, such as the `--log` of `landscape plot`: import it with the arguments hidden, once (the app's
    # threads read sys.argv too)
    with _IMPORTING:
        argv = sys.argv
        if "logistro" not in sys.modules:
            sys.argv = argv[:1]
        try:
            import kaleido
            from choreographer.protocol import DevtoolsProtocolError
            from kaleido.errors import ChromeNotFoundError
        except ImportError:
            raise LandscapeError("static images need kaleido: pip install 'kaleido>=1'") from None
        finally:
            sys.argv = argv
    width, height = fig.layout.width or _SCREEN_SIZE[0], fig.layout.height or _SCREEN_SIZE[1]
    spec = fig.to_plotly_json()
    check_message_size(spec)
    webgl = has_webgl(fig)
    png_scale = scale or PNG_DPI / PX_PER_INCH

    async def render() -> dict[str, bytes]:
        async with kaleido.Kaleido(mathjax=False) as k:
            if webgl:
                svg = await k.calc_fig(spec, opts=dict(format="svg", width=width, height=height, scale=GL_SCALE))
                images = {"svg": _resized_svg(svg, width, height)}
            else:
                images = {
                    fmt: await k.calc_fig(
                        spec,
                        opts=dict(format=fmt, width=width, height=height, scale=png_scale if fmt == "png" else 1),
                    )
                    for fmt in formats
                }
        if webgl and ({"pdf", "png"} & set(formats)):
            images.update(await _from_svg(images["svg"], width, height, formats, png_scale))
        return {fmt: images[fmt] for fmt in formats}

    try:  # in a thread of its own, so that it also works where an event loop already runs (Jupyter)
        with ThreadPoolExecutor(1) as pool:
            images = pool.submit(asyncio.run, render()).result()
    except ChromeNotFoundError:
        raise LandscapeError(
            "static images need a headless Chromium: apt-get install chromium "
            "(or set BROWSER_PATH to a Chrome or Chromium binary)"
        ) from None
    except DevtoolsProtocolError as e:
        raise LandscapeError(f"the headless browser failed to draw the figure: {e.message}"[:300]) from None
    except Exception as e:  # kaleido's and choreographer's own (a timeout, a message too large): one line
        raise LandscapeError(f"the headless browser failed to draw the figure: {type(e).__name__}: {e}"[:300]) from None
    for fmt, data in images.items():
        if not (data.startswith(_SIGNATURES[fmt]) if fmt in _SIGNATURES else b"<svg" in data):
            raise LandscapeError(f"the headless browser returned no {fmt.upper()} image ({len(data)} bytes)")
    return images


def check_image_size(fig: go.Figure, formats: Sequence[str], scale: float | None = None) -> None:
    """Refuse a figure larger than the headless Chromium draws in `formats`: a PNG canvas (PNG_MAX_SIDE,
    PNG_MAX_AREA at `scale`, by default PNG_DPI), a PDF page (PDF_MAX_SIDE) or a 3D scene's WebGL image at GL_PPI
    (GL_MAX_SIDE); the message gives the largest size of this shape that it draws."""
    width, height = fig.layout.width or _SCREEN_SIZE[0], fig.layout.height or _SCREEN_SIZE[1]
    size = f"{width / PX_PER_INCH:g} x {height / PX_PER_INCH:g} in"

    def at_most(k: float) -> str:
        return f"at most {_floor(k * width / PX_PER_INCH)} x {_floor(k * height / PX_PER_INCH)} in"

    if "png" in formats:
        png_scale = scale or PNG_DPI / PX_PER_INCH
        w, h = int(width * png_scale), int(height * png_scale)  # the canvas's size: CSS px times scale, cut
        if max(w, h) > PNG_MAX_SIDE or w * h > PNG_MAX_AREA:
            k = min(PNG_MAX_SIDE / max(w, h), math.sqrt(PNG_MAX_AREA / (w * h)))
            raise LandscapeError(
                f"a {size} PNG at {png_scale * PX_PER_INCH:g} dpi is {w} x {h} px, more than Chromium draws "
                f"({PNG_MAX_SIDE} px a side, {PNG_MAX_AREA} px in all): {at_most(k)}"
            )
    if "pdf" in formats and max(width, height) * 72 / PX_PER_INCH > PDF_MAX_SIDE:
        raise LandscapeError(
            f"a {size} PDF page is larger than Chromium prints: at most {_floor(PDF_MAX_SIDE / 72)} in a side"
        )
    if has_webgl(fig):
        layout = fig.layout
        left, right, top, bottom = (
            default if value is None else value
            for value, default in zip(
                (layout.margin.l, layout.margin.r, layout.margin.t, layout.margin.b), _PLOTLY_MARGINS
            )
        )
        plot_w, plot_h = width - left - right, height - top - bottom
        for name in [k for k in layout.to_plotly_json() if k.startswith("scene")]:
            x0, x1 = layout[name].domain.x or (0, 1)
            y0, y1 = layout[name].domain.y or (0, 1)
            w, h = (int(v * GL_PPI / PX_PER_INCH) for v in ((x1 - x0) * plot_w, (y1 - y0) * plot_h))
            if max(w, h) > GL_MAX_SIDE:
                raise LandscapeError(
                    f"a {size} figure draws a 3D scene at {GL_PPI} ppi in {w} x {h} px, more than Chromium's WebGL "
                    f"draws ({GL_MAX_SIDE} px a side): {at_most(GL_MAX_SIDE / max(w, h))}"
                )


def check_message_size(spec: Any) -> None:
    """Refuse a figure whose JSON (`fig.to_plotly_json()`) the headless browser cannot take in one message: each
    contour level holds the whole grid, so a 1001 x 1001 contour figure of 20 levels is about 225 MB."""
    size = _text_size(spec)
    if size > BROWSER_MAX_MESSAGE:
        raise LandscapeError(
            f"the figure holds {size / 1e6:.0f} MB of data, more than the headless browser takes "
            f"({BROWSER_MAX_MESSAGE / 1e6:.0f} MB; every contour level holds the whole grid): draw fewer levels "
            "(--levels), a heatmap or a 3D surface, or write HTML (it draws a thinned grid)"
        )


def _text_size(value: Any) -> int:
    """About the bytes of `value` (plotly JSON, its arrays as base64 strings) as JSON text: its strings' lengths,
    numbers and keys counted at a few bytes each."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return sum(len(str(key)) + 4 + _text_size(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_text_size(item) + 1 for item in value) + 2
    if isinstance(value, np.ndarray):
        return 24 * value.size  # as JSON numbers: up to 24 characters each
    return 24


def _floor(inches: float) -> str:
    """Inches rounded down to a tenth, for a size that must not be exceeded."""
    return f"{math.floor(10 * inches) / 10:g}"


def _resized_svg(svg: bytes, width: float, height: float) -> bytes:
    """An SVG drawn at a scale given its size back: the root's width and height (its viewBox stays)."""
    text = svg.decode()
    root = re.search(r"<svg\b[^>]*>", text)
    if root is None:
        raise LandscapeError("kaleido returned no SVG")
    tag = re.sub(r'\swidth="[^"]*"', f' width="{width:g}"', root.group(0), count=1)
    tag = re.sub(r'\sheight="[^"]*"', f' height="{height:g}"', tag, count=1)
    return (text[: root.start()] + tag + text[root.end() :]).encode()


async def _from_svg(svg: bytes, width: float, height: float, formats: Sequence[str], png_scale: float) -> dict:
    """PDF (printed, so that the SVG's text stays text) and PNG (at `png_scale` px per CSS px) of an SVG, from a
    headless Chromium."""
    import choreographer

    source = "data:image/svg+xml;base64," + base64.b64encode(svg).decode()
    page = (
        f"<!DOCTYPE html><html><head><style>@page {{ size: {width}px {height}px; margin: 0 }} "
        f"html, body {{ margin: 0; padding: 0; background: white }} "
        f"img {{ display: block; width: {width}px; height: {height}px }}</style></head>"
        f"<body><img id='figure' src='{source}'></body></html>"
    )
    out = {}
    async with choreographer.Browser(headless=True) as browser:
        tab = browser.get_tab()
        assert tab is not None
        await _checked(tab.send_command("Page.navigate", params={"url": "about:blank"}))
        await _checked(
            tab.send_command(
                "Runtime.evaluate",
                params={
                    "expression": f"document.open(); document.write({json.dumps(page)}); document.close(); "
                    "document.getElementById('figure').decode().then(() => true)",
                    "awaitPromise": True,
                    "returnByValue": True,
                },
            )
        )
        if "pdf" in formats:
            reply = await _checked(
                tab.send_command(
                    "Page.printToPDF",
                    params={
                        "printBackground": True,
                        "preferCSSPageSize": True,
                        "marginTop": 0,
                        "marginBottom": 0,
                        "marginLeft": 0,
                        "marginRight": 0,
                        "pageRanges": "1",
                    },
                )
            )
            out["pdf"] = base64.b64decode(reply["result"]["data"])
        if "png" in formats:
            await _checked(
                tab.send_command(
                    "Emulation.setDeviceMetricsOverride",
                    params=dict(width=int(width), height=int(height), deviceScaleFactor=png_scale, mobile=False),
                )
            )
            reply = await _checked(
                tab.send_command(
                    "Page.captureScreenshot",
                    params={"format": "png", "clip": dict(x=0, y=0, width=width, height=height, scale=1)},
                )
            )
            out["png"] = base64.b64decode(reply["result"]["data"])
    return out


async def _checked(reply: Any) -> dict:
    """A DevTools reply, or a LandscapeError with the browser's message."""
    reply = await reply
    if "error" in reply or "exceptionDetails" in reply.get("result", {}):
        raise LandscapeError(f"the headless browser failed to draw the figure: {reply}"[:300])
    return reply


def write_figure(fig: go.Figure, path: str | Path, fmt: str | None = None, *, overwrite: bool = False) -> Path:
    """Write the figure; the format defaults to the file's suffix. An existing file only with `overwrite`."""
    path = check_writable(path, overwrite)  # before the seconds of rendering
    return write_file(path, figure_bytes(fig, fmt or path.suffix.lstrip(".").lower()), overwrite)


def columns(surface: Surface) -> dict[str, np.ndarray]:
    """The surface as flat columns, one row per grid point with x varying fastest: x, y, the metrics, computed."""
    if surface.ycoordinates is None:
        cols = {"x": surface.xcoordinates}
    else:
        gx, gy = np.meshgrid(surface.xcoordinates, surface.ycoordinates)
        cols = {"x": gx.ravel(), "y": gy.ravel()}
    cols.update(
        {name: np.asarray(surface.values[name], dtype=np.float64).ravel() for name in metric_order(surface.metrics)}
    )
    cols["computed"] = surface.computed.ravel().astype(np.int64)
    return cols


def csv_text(surface: Surface) -> str:
    """Comma-separated table with a header; points not computed yet have empty metric cells."""
    cols = columns(surface)
    computed = cols["computed"].astype(bool)
    lines = [",".join(cols)]
    for k in range(len(computed)):
        lines.append(
            ",".join(_number(v[k]) if name in ("x", "y", "computed") or computed[k] else "" for name, v in cols.items())
        )
    return "\n".join(lines) + "\n"


def table_text(surface: Surface) -> str:
    """Whitespace-separated table for pgfplots (`\\addplot3[surf] table`) or gnuplot (`splot ... with pm3d`):
    '#' comment lines, a header row, an empty line after each row of the grid, `nan` where there is no value."""
    cols = columns(surface)
    computed = cols.pop("computed").astype(bool)
    nx = len(surface.xcoordinates)
    lines = [
        f"# {Path(surface.path).name}: landscape surface, x varies fastest, "
        f"{nx} x {1 if surface.ycoordinates is None else len(surface.ycoordinates)} points",
        _pgfplots_hint(surface),
        " ".join(cols),
    ]
    for k in range(len(computed)):
        lines.append(
            " ".join(_number(v[k]) if name in ("x", "y") or computed[k] else "nan" for name, v in cols.items())
        )
        if surface.ndim == 2 and (k + 1) % nx == 0:
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _pgfplots_hint(surface: Surface) -> str:
    """The comment line that says how pgfplots draws the table: a surface, or a line for a 1D file, of a metric it
    holds."""
    metric = default_metric([surface])
    if surface.ndim == 1:
        return f"# pgfplots: \\addplot[unbounded coords=jump] table[x=x, y={metric}] {{this file}};"
    return f"# pgfplots: \\addplot3[surf, unbounded coords=jump] table[z={metric}] {{this file}};"


def path_table_text(surface: Surface) -> str:
    """The training path of a surface on PCA directions as a whitespace table for pgfplots, one row per snapshot:
    epoch, x, y (its least-squares coordinates on the plane), residual and distance (‖θ_i − θ*‖ off the plane and
    in all), and each metric of the surface bilinearly interpolated at (x, y), to lift the path onto
    `\\addplot3[surf]` (the plane's loss there, not the snapshot's own: the snapshot lies `residual` off it)."""
    path = surface.trajectory
    if path is None:
        raise LandscapeError(f"{surface.path} holds no training path (only surfaces on PCA directions do)")
    names = metric_order(surface.metrics)
    cols: dict[str, np.ndarray] = {
        "epoch": path.epochs,
        "x": path.coordinates[:, 0],
        "y": path.coordinates[:, 1],
        "residual": path.residual,
        "distance": path.distance,
    }
    cols.update({name: values_at(surface, name, path.coordinates) for name in names})
    ratio = path.explained_variance_ratio
    lines = [
        f"# {Path(surface.path).name}: training path on the PCA plane (x: {100 * ratio[0]:.1f}%, "
        f"y: {100 * ratio[1]:.1f}% of {explained(surface)}), one row per snapshot",
        "# metric columns: the surface interpolated at (x, y), `nan` outside the grid",
        "# pgfplots: \\addplot[mark=*] table[x=x, y=y] {this file};  3D (the first column is the epoch): "
        f"\\addplot3 table[x=x, y=y, z={default_metric([surface])}] {{this file}};",
        " ".join(cols),
    ]
    lines += [" ".join(_number(v[k]) for v in cols.values()) for k in range(len(path.epochs))]
    return "\n".join(lines) + "\n"


def npz_bytes(surface: Surface) -> bytes:
    """NumPy archive: xcoordinates, ycoordinates (2D), each metric as [j, i] = f(x[i], y[j]) with NaN where not
    computed, computed, and the spec as a JSON string; with a training path also its arrays, prefixed
    `trajectory_` (trajectory_coordinates, trajectory_epochs, ...)."""
    arrays = {
        "xcoordinates": surface.xcoordinates,
        "computed": surface.computed,
        "spec": np.array(json.dumps(surface.spec, sort_keys=True)),
    }
    if surface.ycoordinates is not None:
        arrays["ycoordinates"] = surface.ycoordinates
    arrays.update({name: np.where(surface.computed, surface.values[name], np.nan) for name in surface.metrics})
    if surface.trajectory is not None:
        arrays.update({f"trajectory_{name}": v for name, v in surface.trajectory.datasets().items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle
    return buffer.getvalue()


def vtp_text(surface: Surface, options: PlotOptions, zscale: float = 1.0) -> str:
    """A VTK XML PolyData surface for ParaView: points (x, y, zscale * drawn value of `options.metric`, clipped
    and log10 as in the figures), one quad per grid cell whose four corners have a value, and every metric as
    point data. Points without a drawn value are left out; arrays are base64 (NaN survives)."""
    if surface.ndim != 2:
        raise LandscapeError(f"{surface.path} is a 1D surface: VTP export needs a 2D surface")
    require_points(surface, "export")
    z = displayed(surface, options)
    ny, nx = z.shape
    valid = np.isfinite(z)
    index = np.full(z.shape, -1, dtype=np.int64)
    index[valid] = np.arange(int(valid.sum()))
    assert surface.ycoordinates is not None
    gx, gy = np.meshgrid(surface.xcoordinates, surface.ycoordinates)
    points = np.stack([gx[valid], gy[valid], zscale * z[valid]], axis=1)
    corners = np.stack([index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]], axis=-1).reshape(-1, 4)
    quads = corners[(corners >= 0).all(axis=1)]
    point_data = "".join(
        _data_array(name, np.where(surface.computed, surface.values[name], np.nan)[valid])
        for name in metric_order(surface.metrics)
    )
    return (
        f'<?xml version="1.0"?>\n'
        f'<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n'
        f"<PolyData>\n"
        f'<Piece NumberOfPoints="{len(points)}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" '
        f'NumberOfPolys="{len(quads)}">\n'
        f"<PointData Scalars={quoteattr(options.metric)}>\n{point_data}</PointData>\n"
        f"<Points>\n{_data_array('Points', points, components=3)}</Points>\n"
        f"<Polys>\n{_data_array('connectivity', quads.ravel())}"
        f"{_data_array('offsets', 4 * np.arange(1, len(quads) + 1, dtype=np.int64))}</Polys>\n"
        f"</Piece>\n</PolyData>\n</VTKFile>\n"
    )


def data_bytes(surface: Surface, fmt: str, options: PlotOptions = PlotOptions()) -> bytes:
    """The surface in one of DATA_FORMATS (`options` only matters for vtp); one with a computed point."""
    if fmt in DATA_FORMATS:
        require_points(surface, "export")
    if fmt == "vtp":
        return vtp_text(surface, options).encode()
    if fmt == "table":
        return table_text(surface).encode()
    if fmt == "csv":
        return csv_text(surface).encode()
    if fmt == "npz":
        return npz_bytes(surface)
    if fmt == "path":
        return path_table_text(surface).encode()
    raise LandscapeError(f"unknown data format '{fmt}': use {', '.join(DATA_FORMATS)}")


def write_data(
    surface: Surface,
    path: str | Path,
    fmt: str,
    options: PlotOptions = PlotOptions(),
    *,
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write the surface as data in `fmt` to a file with its suffix (`check_data_suffix`); an existing file only
    with `overwrite`, never one of `inputs`."""
    check_data_suffix(path, fmt)
    return write_file(path, data_bytes(surface, fmt, options), overwrite, inputs)


def check_data_suffix(path: str | Path, fmt: str) -> Path:
    """`path`, refused unless it ends in the suffix of data format `fmt`: .vtp, .dat (a table or a path), .csv
    or .npz."""
    if fmt not in DATA_FORMATS:
        raise LandscapeError(f"unknown data format '{fmt}': use {', '.join(DATA_FORMATS)}")
    suffix = "." + DATA_SUFFIXES[fmt].rsplit(".", 1)[1]  # .path.dat is a table, like any .dat
    if Path(path).suffix.lower() != suffix:
        raise LandscapeError(f"{path} does not end in {suffix}, the suffix of {fmt} data")
    return Path(path)


def _data_array(name: str, values: np.ndarray, components: int = 1) -> str:
    values = np.ascontiguousarray(values, dtype=np.int64 if values.dtype.kind in "iu" else np.float64)
    kind = "Int64" if values.dtype == np.int64 else "Float64"
    raw = values.astype(values.dtype.newbyteorder("<")).tobytes()
    encoded = base64.b64encode(np.uint64(len(raw)).tobytes() + raw).decode()
    return (
        f'<DataArray type="{kind}" Name={quoteattr(name)} NumberOfComponents="{components}" '
        f'format="binary">{encoded}</DataArray>\n'
    )


def _number(v: float | int) -> str:
    """The shortest text that reads back as the same float64 (`nan`, `inf` as such; 2 for 2.0)."""
    return str(int(v)) if isinstance(v, (int, np.integer)) else repr(float(v)).removesuffix(".0")
