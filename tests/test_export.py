"""Files written from surfaces: CSV, pgfplots table, NPZ and VTP contents checked value by value; PDF, SVG and PNG
from a headless Chromium; and the `landscape plot` / `landscape export` commands, bad input included."""

import base64
import dataclasses
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import plotly.graph_objects as go
import pytest
from surface_fixtures import X, Y, bowl, write_legacy, write_surface
from typer.testing import CliRunner

from landscape import LandscapeError, read_surface
from landscape.cli import app
from landscape.export import (
    DATA_FORMATS,
    DATA_SUFFIXES,
    GL_PPI,
    LINK_SCENES_JS,
    csv_text,
    data_bytes,
    figure_bytes,
    figure_images,
    has_webgl,
    npz_bytes,
    table_text,
    vtp_text,
    write_data,
    write_figure,
)
from landscape.plots import (
    PX_PER_INCH,
    PlotOptions,
    compare_figure,
    contour_figure,
    paper_layout,
    surface_figure,
)

needs_browser = pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")),
    reason="static images need a headless Chromium: apt-get install chromium (CI installs it)",
)


@pytest.fixture(scope="module")
def gappy(tmp_path_factory) -> Path:
    """The bowl with (x=-1, y=-0.5) not computed yet and a diverged train loss at (x=1, y=0.5)."""
    values = bowl(X, Y)
    values["train_loss"][2, 4] = np.inf
    computed = np.ones((3, 5), dtype=bool)
    computed[0, 0] = False
    return write_surface(tmp_path_factory.mktemp("e") / "gappy.h5", values, computed=computed)


def test_csv_has_one_row_per_point_x_fastest(gappy):
    lines = csv_text(read_surface(gappy)).splitlines()
    assert lines[0] == "x,y,train_loss,train_acc,test_loss,test_acc,computed"
    assert len(lines) == 1 + 15
    assert lines[1] == "-1,-0.5,,,,,0"  # not computed: empty cells
    assert lines[2] == "-0.5,-0.5,1.35,50,2.7,40,1"
    assert lines[8] == "0,0,0.1,100,0.2,90,1"
    assert lines[15] == "1,0.5,inf,20,4.2,10,1"


def test_pgfplots_table_has_scanlines_and_nan(gappy):
    text = table_text(read_surface(gappy))
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body[0] == "x y train_loss train_acc test_loss test_acc"
    assert body[1] == "-1 -0.5 nan nan nan nan"
    assert body[6] == body[12] == ""  # an empty line closes each row of the grid (x varies fastest)
    table = np.genfromtxt(body, names=True)
    np.testing.assert_allclose(table["train_loss"][1:14], bowl(X, Y)["train_loss"].ravel()[1:14])
    assert np.isnan(table["train_loss"][0]) and np.isinf(table["train_loss"][14])
    assert "# pgfplots: \\addplot3[surf, unbounded coords=jump] table[z=train_loss] {this file};" in text


def test_the_pgfplots_hint_fits_the_file(tmp_path):
    """A line for a 1D file, and a metric the file holds (it named z=train_loss whatever the file held)."""
    line = table_text(read_surface(write_surface(tmp_path / "line.h5", bowl(X, np.zeros(1)), y=None)))
    assert "# pgfplots: \\addplot[unbounded coords=jump] table[x=x, y=train_loss] {this file};" in line
    surface = read_surface(write_surface(tmp_path / "test.h5"))
    test_only = dataclasses.replace(surface, values={k: v for k, v in surface.values.items() if k.startswith("test")})
    assert "table[z=test_loss] {this file};" in table_text(test_only)  # the first column it holds


def test_npz_holds_the_arrays_and_the_spec(gappy):
    surface = read_surface(gappy)
    with np.load(__import__("io").BytesIO(npz_bytes(surface))) as f:
        assert sorted(f.files) == [
            "computed",
            "spec",
            "test_acc",
            "test_loss",
            "train_acc",
            "train_loss",
            "xcoordinates",
            "ycoordinates",
        ]
        np.testing.assert_array_equal(f["xcoordinates"], X)
        expected = bowl(X, Y)["test_loss"]
        expected[0, 0] = np.nan
        np.testing.assert_allclose(f["test_loss"], expected)
        assert json.loads(str(f["spec"]))["checkpoint"]["arch"] == "resnet56"


def _vtp_arrays(text: str) -> tuple[ET.Element, dict[str, np.ndarray]]:
    """Parse a VTP file as ParaView does: base64 of (UInt64 byte count + little-endian data)."""
    piece = ET.fromstring(text).find("PolyData/Piece")
    arrays = {}
    for da in piece.iter("DataArray"):
        raw = base64.b64decode(da.text)
        (nbytes,) = struct.unpack("<Q", raw[:8])
        assert nbytes == len(raw) - 8 and da.get("format") == "binary"
        values = np.frombuffer(raw[8:], dtype="<f8" if da.get("type") == "Float64" else "<i8")
        arrays[da.get("Name")] = values.reshape(-1, int(da.get("NumberOfComponents")))
    return piece, arrays


def test_vtp_points_quads_and_point_data(gappy):
    piece, arrays = _vtp_arrays(vtp_text(read_surface(gappy), PlotOptions()))
    # 15 points less the one not computed and the diverged one; 8 cells less the two touching them
    assert (piece.get("NumberOfPoints"), piece.get("NumberOfPolys")) == ("13", "6")
    points = arrays["Points"]
    assert points.shape == (13, 3)
    np.testing.assert_allclose(points[5], [-0.5, 0.0, 0.35])
    np.testing.assert_allclose(points[:, 2], 0.1 + points[:, 0] ** 2 + 4 * points[:, 1] ** 2)
    assert arrays["connectivity"].ravel().tolist()[:8] == [0, 1, 6, 5, 1, 2, 7, 6]
    assert arrays["offsets"].ravel().tolist() == [4, 8, 12, 16, 20, 24]
    np.testing.assert_allclose(arrays["train_acc"].ravel(), 100 - 40 * (points[:, 2] - 0.1))
    assert piece.find("PointData").get("Scalars") == "train_loss"


def test_vtp_height_follows_clip_and_log(gappy):
    _, arrays = _vtp_arrays(vtp_text(read_surface(gappy), PlotOptions(log=True, clip=1.0)))
    assert len(arrays["Points"]) == 14  # the diverged point is capped at 1 and kept
    np.testing.assert_allclose(arrays["Points"][:, 2].max(), 0.0)
    np.testing.assert_allclose(arrays["Points"][:, 2].min(), -1.0)


@needs_browser
def test_static_images_are_valid_vector_pdf_svg_and_png(tmp_path):
    fig = paper_layout(contour_figure(read_surface(write_surface(tmp_path / "s.h5")), PlotOptions()))
    images = figure_images(fig, ["pdf", "svg", "png"])
    pdf = images["pdf"]
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-32:]
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", pdf).group(1).split()]
    assert box[2] == pytest.approx(3.25 * 72, abs=1)  # one column, in points
    assert b"/Subtype /Image" not in pdf  # no raster image: the contours stay vector
    svg = ET.fromstring(images["svg"])
    assert svg.tag.endswith("svg") and float(svg.get("width")) == 312
    assert "Times New Roman" in images["svg"].decode()
    png = images["png"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (975, 781)  # 312 x 250 px at 300 dpi: 3.25 x 2.6 in


runner = CliRunner()


@needs_browser
def test_plot_command_writes_a_pdf_for_a_paper(tmp_path):
    """The real command line (kaleido's logging reads sys.argv on import: `--log` must get through)."""
    a = write_surface(tmp_path / "a.h5")
    b = write_legacy(tmp_path / "paper.h5")
    out = tmp_path / "fig.pdf"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "landscape.cli",
            "plot",
            str(a),
            str(b),
            "--kind",
            "heatmap",
            "--width",
            "page",
            "--log",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out} (6.75 x 2.83 in)"
    assert out.read_bytes().startswith(b"%PDF-")


def test_export_command_writes_vtp_table_csv_npz(tmp_path):
    source = write_surface(tmp_path / "s.h5")
    for flag, suffix in (("--vtp", ".vtp"), ("--table", ".dat"), ("--csv", ".csv"), ("--npz", ".npz")):
        result = runner.invoke(app, ["export", str(source), flag])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"wrote {source.with_suffix(suffix)}"
    _, arrays = _vtp_arrays(source.with_suffix(".vtp").read_text())
    assert len(arrays["Points"]) == 15
    legacy = write_legacy(tmp_path / "paper.h5")
    result = runner.invoke(app, ["export", str(legacy), "--csv", "--out", str(tmp_path / "legacy.csv")])
    assert result.exit_code == 0
    assert (tmp_path / "legacy.csv").read_text().splitlines()[0] == "x,y,train_loss,train_acc,computed"


@pytest.mark.parametrize(
    "args, message",
    [
        (["plot", "{corrupt}", "--out", "{out}.pdf"], "cannot open"),
        (["plot", "{foreign}", "--out", "{out}.pdf"], "is not a surface file"),
        (["plot", "{good}", "--kind", "pie", "--out", "{out}.pdf"], "unknown figure kind 'pie'"),
        (["plot", "{good}", "--format", "eps", "--out", "{out}.eps"], "unknown figure format 'eps'"),
        (["plot", "{good}", "--out", "{out}"], "fig has no suffix: end it in .pdf | .svg | .png | .html, or give"),
        (["plot", "{good}", "--format", "pdf", "--out", "{out}.png"], "does not end in .pdf"),
        (["plot", "{good}", "--levels", "1:2", "--out", "{out}.pdf"], "contour levels '1:2'"),
        (["plot", "{good}", "--zrange", "5:1", "--out", "{out}.pdf"], "MIN must be below MAX"),
        (["plot", "{good}", "--log", "--clip", "-1", "--out", "{out}.pdf"], "a log scale needs a positive clip"),
        (["export", "{good}", "--vtp", "--log", "--clip", "0"], "a log scale needs a positive clip (got 0)"),
        (["plot", "{good}", "--metric", "valid_loss", "--out", "{out}.pdf"], "no metric 'valid_loss'"),
        (["plot", "{good}", "--kind", "1d", "--slice", "z=1", "--out", "{out}.pdf"], "slice 'z=1'"),
        (["plot", "{good}", "--spacing", "quadratic", "--out", "{out}.pdf"], "unknown level spacing"),
        (["plot", "{good}", "--aspect", "square", "--out", "{out}.pdf"], "unknown aspect"),
        (["plot", "{good}", "--kind", "surface", "--elev", "100", "--out", "{out}.pdf"], "-90 <= elev <= 90"),
        (["plot", "{good}", "--out", "{tmp}/missing/fig.pdf"], "does not exist"),
        (["export", "{good}"], "choose one of --vtp, --table, --csv, --npz"),
        (["export", "{good}", "--vtp", "--csv"], "choose one of"),
        # options without effect were accepted in silence
        (["export", "{good}", "--csv", "--metric", "bogus"], "--metric, --log and --clip go with --vtp"),
        (["export", "{good}", "--table", "--log"], "--metric, --log and --clip go with --vtp"),
        (
            ["plot", "{good}", "--kind", "contour", "--slice", "x=0.5", "--out", "{out}.pdf"],
            "--slice goes with --kind 1d",
        ),
        (["export", "{corrupt}", "--vtp"], "cannot open"),
        (["export", "{line}", "--vtp"], "1D surface"),
        (["app", "--results", "{tmp}/nowhere"], "does not exist"),
        (["plot", "{good}", "--width", "100", "--out", "{out}.png"], "100 x 80 in PNG at 300 dpi is 30000 x 24000 px"),
        (["plot", "{good}", "--width", "800", "--out", "{out}.png"], "at most 61 x 48.8 in"),
        (["plot", "{good}", "--width", "1000", "--height", "2", "--out", "{out}.pdf"], "at most 910.2 in a side"),
        (["plot", "{good}", "--kind", "surface", "--width", "30", "--out", "{out}.svg"], "Chromium's WebGL draws"),
        (["plot", "{good}", "--width", "0.1", "--out", "{out}.pdf"], "the width must be a number of inches"),
        (["plot", "{good}", "--width", "inf", "--out", "{out}.pdf"], "the width must be a number of inches"),
        (["plot", "{good}", "--height", "-5", "--out", "{out}.pdf"], "the height must be a number of inches"),
        (["plot", "{good}", "--height", "0", "--out", "{out}.pdf"], "the height must be a number of inches"),
        (["plot", "{good}", "--font-size", "-1", "--out", "{out}.pdf"], "the font size must be a number of points"),
        (["plot", "{good}", "--font-size", "0", "--out", "{out}.pdf"], "the font size must be a number of points"),
        (["plot", "{good}", "--colorscale", "NotAScale", "--out", "{out}.pdf"], "unknown colour scale 'NotAScale'"),
        (["plot", "{good}", "--kind", "1d", "--slice", "x=50", "--out", "{out}.pdf"], "β runs from -0.5 to 0.5"),
        (["plot", "{good}", "{good}", "--kind", "surface", "--out", "{out}.pdf"], "leaves a 3D box less than"),
        (["plot", "{empty}", "--out", "{out}.pdf"], "empty.h5 has no computed point yet: nothing to draw"),
        (["export", "{empty}", "--vtp"], "empty.h5 has no computed point yet: nothing to export"),
        (["export", "{good}", "--npz", "--out", "{out}.csv"], "fig.csv does not end in .npz"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["weights"] = np.zeros(3)
    paths = {
        "corrupt": corrupt,
        "foreign": foreign,
        "good": write_surface(tmp_path / "good.h5"),
        "line": write_surface(tmp_path / "line.h5", bowl(X, np.zeros(1)), y=None),
        "empty": write_surface(tmp_path / "empty.h5", computed=np.zeros((3, 5), dtype=bool)),
        "out": tmp_path / "fig",
        "tmp": tmp_path,
    }
    before = sorted(tmp_path.iterdir())
    result = runner.invoke(app, [a.format(**paths) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def _scene_pngs(svg: bytes) -> list[np.ndarray]:
    """The 3D scenes of an SVG from kaleido: the PNG images embedded in it, as RGB arrays."""
    from PIL import Image

    out = []
    for data in re.findall(rb'href="data:image/png;base64,([^"]+)"', svg):
        image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGBA")
        white = Image.new("RGBA", image.size, "white")
        out.append(np.asarray(Image.alpha_composite(white, image).convert("RGB")).astype(int))  # text on white
    return out


def _render_svgs(figs) -> list[bytes]:
    """SVGs of several figures at export's 3D scale, in one kaleido session."""
    import asyncio

    import kaleido

    from landscape.export import GL_SCALE

    async def render():
        async with kaleido.Kaleido(mathjax=False) as k:
            return [
                await k.calc_fig(
                    f.to_plotly_json(),
                    opts=dict(format="svg", width=f.layout.width, height=f.layout.height, scale=GL_SCALE),
                )
                for f in figs
            ]

    return asyncio.run(render())


@needs_browser
@pytest.mark.parametrize("width", ["column", "page"])
def test_exported_3d_figures_carry_axis_titles_and_z_ticks_unclipped(tmp_path, width):
    """Each axis title and the z tick labels of every 3D scene are drawn, and inside the scene's image (3D text is
    part of the WebGL image, so this compares the figure with one without that text, pixel by pixel)."""
    a = read_surface(write_surface(tmp_path / "a.h5"))
    doubled = {k: 2 * v if k.endswith("_loss") else v for k, v in bowl(X, Y).items()}
    b = read_surface(write_surface(tmp_path / "b.h5", doubled))
    fig = surface_figure(a, PlotOptions()) if width == "column" else compare_figure([a, b], "surface", PlotOptions())
    fig = paper_layout(fig, width)
    scenes = [k for k in fig.layout.to_plotly_json() if k.startswith("scene")]
    variants = {
        "α title": {"xaxis.title.text": ""},
        "β title": {"yaxis.title.text": ""},
        "z title": {"zaxis.title.text": ""},
        "z ticks": {"zaxis.showticklabels": False},
    }
    figs = [fig]
    for change in variants.values():
        figs.append(go.Figure(fig).update_layout({f"{s}.{k}": v for s in scenes for k, v in change.items()}))
    svgs = _render_svgs(figs)
    full = _scene_pngs(svgs[0])
    assert len(full) == len(scenes)
    for what, svg in zip(variants, svgs[1:]):
        for scene, with_it, without in zip(scenes, full, _scene_pngs(svg)):
            drawn = np.abs(with_it - without).max(axis=2) > 40
            assert drawn.sum() > 30, f"{width}: {what} of {scene} is not drawn"
            rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
            h, w = drawn.shape
            assert rows.min() > 0 and cols.min() > 0 and rows.max() < h - 1 and cols.max() < w - 1, (
                f"{width}: {what} of {scene} touches the scene's edge (clipped)"
            )


@needs_browser
def test_3d_figures_are_vector_with_the_scene_at_384_ppi(tmp_path):
    fig = paper_layout(surface_figure(read_surface(write_surface(tmp_path / "s.h5")), PlotOptions()))
    assert has_webgl(fig) and not has_webgl(contour_figure(read_surface(tmp_path / "s.h5"), PlotOptions()))
    images = figure_images(fig, ["pdf", "svg", "png"])
    pdf = images["pdf"]
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", pdf).group(1).split()]
    assert box[2:] == pytest.approx([3.25 * 72, 250 * 0.75], abs=0.5)  # the figure's size, not the render's
    (image_width,) = {int(w) for w in re.findall(rb"/Subtype\s*/Image\s*/Width\s+(\d+)", pdf)}
    scene = fig.layout.scene.domain.x
    plot_w = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    inches = (scene[1] - scene[0]) * plot_w / PX_PER_INCH
    assert image_width / inches == pytest.approx(GL_PPI, rel=0.02) and GL_PPI >= 300
    assert b"/Font" in pdf  # the colour bar's text stays text
    svg = ET.fromstring(images["svg"])
    assert (svg.get("width"), svg.get("height"), svg.get("viewBox")) == ("312", "250", "0 0 312 250")
    (scene_png,) = _scene_pngs(images["svg"])
    assert scene_png.shape[1] / inches == pytest.approx(GL_PPI, rel=0.02)
    assert struct.unpack(">II", images["png"][16:24]) == (975, 781)  # 300 dpi


def test_html_turns_the_3d_scenes_together(tmp_path):
    a = read_surface(write_surface(tmp_path / "a.h5"))
    html = figure_bytes(compare_figure([a, a], "surface", PlotOptions()), "html").decode()
    assert "landscape: the 3D scenes of this figure turn together" in html and "{plot_id}" not in html
    assert LINK_SCENES_JS.split("{plot_id}")[0].strip()[:40] in html


@needs_browser
def test_plot_command_draws_a_3d_figure_from_a_chosen_angle(tmp_path):
    source = write_surface(tmp_path / "s.h5")
    out = tmp_path / "s.pdf"
    args = [
        "plot",
        str(source),
        "--kind",
        "surface",
        "--elev",
        "45",
        "--azim",
        "30",
        "--zscale",
        "0.8",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF-") and result.output.strip() == f"wrote {out} (3.25 x 2.60 in)"


def test_plot_view_options_reach_the_figure(tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr("landscape.export.write_figure", lambda fig, out, fmt=None, **_: written.update(fig=fig))
    source = write_surface(tmp_path / "s.h5")
    result = runner.invoke(
        app,
        ["plot", str(source), "--kind", "surface", "--elev", "45", "--azim", "30", "--zscale", "0.8"]
        + ["--aspect", "free", "--no-floor", "--out", str(tmp_path / "s.pdf")],
    )
    assert result.exit_code == 0, result.output
    scene = written["fig"].layout.scene
    from landscape.plots import camera_angles

    angles = camera_angles(scene.camera.to_plotly_json())
    assert (angles.elev, angles.azim) == pytest.approx((45, 30), abs=1e-3)
    assert (scene.aspectratio.x, scene.aspectratio.y, scene.aspectratio.z) == (1, 1, 0.8)
    assert "contours" not in [t.name for t in written["fig"].data]
    result = runner.invoke(
        app, ["plot", str(source), "--kind", "1d", "--slice", "y=0.5", "--out", str(tmp_path / "c.pdf")]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(written["fig"].data[0].y, 0.1 + 0.25 + 4 * Y**2)  # the column at α = 0.5


@pytest.mark.parametrize("command", ["plot", "export", "app", "compute"])
def test_help_prints_its_texts_literally(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "🔚" not in result.output and "\ufe0f" not in result.output
    if command == "plot":
        assert "START:END:SIZE" in result.output and "--elev" in result.output and "--azim" in result.output
    if command == "app":
        assert "--open / --headless" in result.output


@needs_browser
def test_html_3d_scenes_turn_together_in_a_browser(tmp_path):
    """The exported HTML of a comparison: turning one 3D scene turns the other (its own script, no app)."""
    import asyncio
    import time

    import choreographer

    a = read_surface(write_surface(tmp_path / "a.h5"))
    page = tmp_path / "pair.html"
    page.write_bytes(figure_bytes(compare_figure([a, a], "surface", PlotOptions()).update_layout(width=900), "html"))
    cameras = (
        "JSON.stringify(['scene', 'scene2']"
        ".map(s => document.querySelector('.js-plotly-plot')._fullLayout[s].camera.eye))"
    )

    async def turn():
        async with choreographer.Browser(headless=True) as browser:
            tab = browser.get_tab()
            await tab.send_command("Page.navigate", params={"url": page.as_uri()})

            async def js(expression):
                reply = await tab.send_command(
                    "Runtime.evaluate", params={"expression": expression, "returnByValue": True}
                )
                return reply["result"].get("result", {}).get("value")

            deadline = time.monotonic() + 60
            while not await js("!!document.querySelector('.js-plotly-plot canvas')") and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            await asyncio.sleep(1)
            before = json.loads(await js(cameras))
            box = json.loads(
                await js("JSON.stringify(document.querySelector('.js-plotly-plot').getBoundingClientRect())")
            )
            x, y = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5
            await tab.send_command("Input.dispatchMouseEvent", params={"type": "mouseMoved", "x": x, "y": y})
            await tab.send_command(
                "Input.dispatchMouseEvent",
                params={"type": "mousePressed", "x": x, "y": y, "button": "left", "clickCount": 1},
            )
            for k in range(1, 11):
                await tab.send_command(
                    "Input.dispatchMouseEvent",
                    params={"type": "mouseMoved", "x": x + 12 * k, "y": y, "button": "left", "buttons": 1},
                )
            await tab.send_command(
                "Input.dispatchMouseEvent",
                params={"type": "mouseReleased", "x": x + 120, "y": y, "button": "left", "clickCount": 1},
            )
            await asyncio.sleep(1)
            return before, json.loads(await js(cameras))

    before, after = asyncio.run(turn())
    assert after[0] != pytest.approx(before[0], abs=1e-3)  # the drag turned the first scene
    assert after[1] == pytest.approx(after[0], abs=1e-6)  # and the second followed


def test_plot_format_names_the_suffix_of_an_out_without_one(tmp_path):
    """`--format html --out figs/bowl` was refused ("does not end in .html"): --format could never matter."""
    source = write_surface(tmp_path / "s.h5")
    result = runner.invoke(app, ["plot", str(source), "--format", "html", "--out", str(tmp_path / "bowl")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bowl.html").read_text().startswith("<!doctype html>") and not (tmp_path / "bowl").exists()


@pytest.fixture(scope="module")
def bowl_surface(tmp_path_factory):
    return read_surface(write_surface(tmp_path_factory.mktemp("b") / "bowl.h5"))


def _sized(surface, width: float, height: float, kind: str = "contour") -> go.Figure:
    """A paper figure of `surface` of `width` x `height` in."""
    make = surface_figure if kind == "surface" else contour_figure
    return paper_layout(make(surface, PlotOptions()), width, height)


@pytest.mark.parametrize(
    "width, height, fmt, message",
    [
        (218.5, 1, "png", "a 218.5 x 1 in PNG at 300 dpi is 65550 x 300 px, more than Chromium draws"),
        (54.7, 54.7, "png", "is 16409 x 16409 px, more than Chromium draws (65535 px a side, 268435456 px in all)"),
        (100, 80, "png", "at most 61 x 48.8 in"),  # the largest of this shape: 18300 x 14640 px
        (87381 / PX_PER_INCH, 2, "pdf", "PDF page is larger than Chromium prints: at most 910.2 in a side"),
        (2, 87381 / PX_PER_INCH, "pdf", "PDF page is larger than Chromium prints: at most 910.2 in a side"),
    ],
)
def test_images_larger_than_chromium_draws_are_refused_before_rendering(
    bowl_surface, monkeypatch, width, height, fmt, message
):
    """A PNG over Chromium's canvas limits came back as 3 bytes, written as `w100.png` with exit 0; a PDF page over
    its limit failed in the browser. The limits were measured: 218.4 in at 300 dpi (65518 px) is drawn, 218.5 is
    not; 54.6 in square (16381² px) is drawn, 54.7 is not; a page of 87380 CSS px (65535 pt) is printed, 87381 not."""
    import kaleido

    monkeypatch.setattr(kaleido, "Kaleido", None)  # never started
    fig = _sized(bowl_surface, width, height)
    with pytest.raises(LandscapeError, match=re.escape(message)):
        figure_images(fig, [fmt])
    from landscape.export import check_image_size

    smaller = {"png": (218.4, 1, 54.6, 54.6), "pdf": (87380 / PX_PER_INCH, 2, 2, 87380 / PX_PER_INCH)}[fmt]
    check_image_size(_sized(bowl_surface, *smaller[:2]), [fmt])
    check_image_size(_sized(bowl_surface, *smaller[2:]), [fmt])
    check_image_size(fig, ["svg"])  # a 2D SVG has no such limit


def test_3d_scenes_larger_than_webgl_draws_are_refused(bowl_surface, monkeypatch):
    """A 3D scene is drawn with WebGL at GL_PPI; headless Chromium draws a WebGL image of at most 8192 px a side
    (beyond, the scene came out stretched and cropped, in PDF and SVG too): 21.3 in of scene."""
    import kaleido

    monkeypatch.setattr(kaleido, "Kaleido", None)  # never started
    with pytest.raises(LandscapeError, match=re.escape("a 30 x 24 in figure draws a 3D scene at 384 ppi in 11432 x")):
        figure_images(_sized(bowl_surface, 30, 24, "surface"), ["svg"])
    with pytest.raises(LandscapeError, match=re.escape("(8192 px a side): at most 21.4 x 17.1 in")):
        figure_images(_sized(bowl_surface, 30, 24, "surface"), ["pdf"])
    from landscape.export import check_image_size

    check_image_size(_sized(bowl_surface, 21.4, 17.1, "surface"), ["svg", "pdf", "png"])
    check_image_size(_sized(bowl_surface, 30, 24), ["svg", "pdf"])  # no WebGL: no such limit


@needs_browser
def test_the_largest_images_allowed_are_drawn(bowl_surface):
    """At the limits measured: a PNG 65518 px wide, and a 3D scene 7938 px high, undistorted."""
    png = figure_images(_sized(bowl_surface, 218.4, 0.25), ["png"])["png"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and struct.unpack(">II", png[16:24]) == (65518, 75)
    fig = _sized(bowl_surface, 3, 21.3, "surface")
    layout, (x0, x1), (y0, y1) = fig.layout, fig.layout.scene.domain.x, fig.layout.scene.domain.y
    scene_w = (layout.width - layout.margin.l - layout.margin.r) * (x1 - x0)
    scene_h = (layout.height - layout.margin.t - layout.margin.b) * (y1 - y0)
    assert 4 * scene_h > 7900
    (image,) = _scene_pngs(figure_images(fig, ["svg"])["svg"])
    assert image.shape[:2] == (pytest.approx(4 * scene_h, abs=3), pytest.approx(4 * scene_w, abs=3))


class _FakeKaleido:
    """kaleido giving back what Chromium gave for a PNG over its canvas limits (and nothing like a PDF or SVG)."""

    def __init__(self, **options):
        self.replies = {"png": b"u\xabZ", "pdf": b"", "svg": b"<html></html>"}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def calc_fig(self, spec, opts):
        return self.replies[opts["format"]]


@pytest.mark.parametrize("fmt, message", [("png", "no PNG image (3 bytes)"), ("pdf", "no PDF"), ("svg", "no SVG")])
def test_an_image_that_is_not_one_is_never_written(tmp_path, monkeypatch, fmt, message):
    """kaleido's reply was written as it came: a 3-byte `w100.png`."""
    import kaleido

    monkeypatch.setattr(kaleido, "Kaleido", _FakeKaleido)
    fig = contour_figure(read_surface(write_surface(tmp_path / "s.h5")), PlotOptions())
    with pytest.raises(LandscapeError, match=re.escape(f"the headless browser returned {message}")):
        write_figure(fig, tmp_path / f"fig.{fmt}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_a_browser_failure_is_one_line(tmp_path, monkeypatch):
    """A page the browser would not print (over 910.2 in, before that limit was checked) ended in a
    DevtoolsProtocolError and its traceback's type name (exit 1)."""
    import kaleido
    from choreographer.protocol import DevtoolsProtocolError

    class Failing(_FakeKaleido):
        async def calc_fig(self, spec, opts):
            raise DevtoolsProtocolError({"id": 4, "error": {"code": -32000, "message": "Printing failed"}})

    monkeypatch.setattr(kaleido, "Kaleido", Failing)
    fig = contour_figure(read_surface(write_surface(tmp_path / "s.h5")), PlotOptions())
    with pytest.raises(LandscapeError, match="^the headless browser failed to draw the figure: Printing failed$"):
        write_figure(fig, tmp_path / "fig.pdf")
    assert not (tmp_path / "fig.pdf").exists()


def test_data_goes_only_to_a_file_with_its_suffix(tmp_path):
    """`export --npz --out figures/r.csv` wrote a zip archive into a .csv."""
    surface = read_surface(write_surface(tmp_path / "s.h5"))
    for fmt, name in (("npz", "r.csv"), ("csv", "r.npz"), ("vtp", "r.dat"), ("table", "r.txt"), ("path", "r.csv")):
        with pytest.raises(LandscapeError, match=re.escape(f"{tmp_path / name} does not end in .")):
            write_data(surface, tmp_path / name, fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
    from landscape.export import check_data_suffix

    for fmt, name in (("path", "p.path.dat"), ("path", "p.dat"), ("table", "t.DAT"), ("npz", "a.b.npz")):
        assert check_data_suffix(name, fmt) == Path(name)
    with pytest.raises(LandscapeError, match="unknown data format 'xls'"):
        check_data_suffix("r.xls", "xls")
    result = runner.invoke(app, ["export", str(tmp_path / "s.h5"), "--csv", "--out", str(tmp_path / "r.CSV")])
    assert result.exit_code == 0, result.output


def test_a_surface_with_no_computed_point_is_not_exported(tmp_path):
    """`export --vtp` of a surface just started wrote NumberOfPoints="0"."""
    empty = read_surface(write_surface(tmp_path / "empty.h5", computed=np.zeros((3, 5), dtype=bool)))
    message = re.escape(f"{empty.path} has no computed point yet: nothing to export")
    for fmt in DATA_FORMATS:
        with pytest.raises(LandscapeError, match=message):
            data_bytes(empty, fmt)
    with pytest.raises(LandscapeError, match=message):
        vtp_text(empty, PlotOptions())
    computed = np.zeros((3, 5), dtype=bool)
    computed[1, 1:3] = True  # one point is enough
    assert b"<VTKFile" in data_bytes(read_surface(write_surface(tmp_path / "two.h5", computed=computed)), "vtp")


def test_plot_html_of_a_large_grid_is_thinned_with_a_note(tmp_path, monkeypatch):
    """Every contour level of an HTML figure holds the whole grid: 601x601 made 103 MB and 1.5 GB of memory."""
    import landscape.plots

    monkeypatch.setattr(landscape.plots, "DISPLAY_POINTS", 3)  # the 5 x 3 bowl is then a large grid
    import landscape.export

    drawn = []
    monkeypatch.setattr(landscape.export, "write_figure", lambda fig, out, *a, **k: drawn.append(fig) or Path(out))
    surface = write_surface(tmp_path / "s.h5")
    result = runner.invoke(app, ["plot", str(surface), "--out", str(tmp_path / "s.html")])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"note: the HTML draws 3 x 3 of the 5 x 3 points of {surface} (at most 3 a side, through θ*); PDF, SVG and "
        "PNG draw every point\n"
    )
    contours = [t for t in drawn[0].data if t.type == "contour"]
    assert contours and all(list(t.x) == [-1.0, 0.0, 1.0] for t in contours)
    assert runner.invoke(app, ["plot", str(surface), "--out", str(tmp_path / "s.pdf")]).stderr == ""  # every point
    assert list(next(t for t in drawn[1].data if t.type == "contour").x) == list(X)


def test_plot_export_compare_default_to_the_first_loss_the_files_hold(tmp_path):
    """A `--split test` surface holds no train_loss: plot, export --vtp and compare refused it without --metric
    (default train_loss); they now take its first loss, and a file of both splits still gets train_loss."""
    test_only = write_surface(tmp_path / "test.h5", splits=("test",))
    both = write_surface(tmp_path / "both.h5")
    for source, expected in ((test_only, "test_loss"), (both, "train_loss")):
        vtp = tmp_path / f"{source.stem}.vtp"
        result = runner.invoke(app, ["export", str(source), "--vtp", "--out", str(vtp)])
        assert result.exit_code == 0, result.output
        piece, arrays = _vtp_arrays(vtp.read_text())
        assert piece.find("PointData").get("Scalars") == expected
        np.testing.assert_allclose(arrays["Points"][:, 2], arrays[expected].ravel())
        result = runner.invoke(app, ["compare", str(source), str(source)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"{expected}, basin")
        html = tmp_path / f"{source.stem}.html"
        result = runner.invoke(app, ["plot", str(source), "--out", str(html)])
        assert result.exit_code == 0, result.output
        assert f"{expected.replace('_', ' ')}" in html.read_text()
    result = runner.invoke(app, ["compare", str(test_only), str(both), "--metric", "train_loss"])
    assert result.exit_code == 2 and "has no 'train_loss'" in result.output
    train_only = write_surface(tmp_path / "train.h5", splits=("train",))
    result = runner.invoke(app, ["compare", str(test_only), str(train_only)])
    assert result.exit_code == 2 and "hold no loss in common" in result.output


def test_data_exports_need_no_plotly(tmp_path):
    """`export --csv/--npz/--table/--vtp` need numpy only: without the [app] extra they write the same files, and
    `plot` says in one line what to install."""
    source = write_surface(tmp_path / "s.h5")
    script = f"""
import sys
sys.modules["plotly"] = sys.modules["kaleido"] = sys.modules["streamlit"] = None  # not installed
from typer.testing import CliRunner
from landscape.cli import app
runner = CliRunner()
for flag in ("--csv", "--npz", "--table", "--vtp"):
    result = runner.invoke(app, ["export", {str(source)!r}, flag])
    assert result.exit_code == 0, result.output
result = runner.invoke(app, ["plot", {str(source)!r}, "--out", {str(tmp_path / "f.html")!r}])
print(result.exit_code, result.output.strip())
assert "plotly" not in sys.modules or sys.modules["plotly"] is None
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("2 error: this command needs plotly: pip install -e '.[app]'"), run.stdout
    assert run.stdout.count("\n") == 1
    surface = read_surface(source)
    for fmt in ("csv", "table", "vtp"):
        assert source.with_suffix(DATA_SUFFIXES[fmt]).read_bytes() == data_bytes(surface, fmt, PlotOptions())
    with np.load(source.with_suffix(".npz")) as arrays:
        np.testing.assert_array_equal(arrays["train_loss"], surface.values["train_loss"])


def test_csv_and_table_hold_the_stored_numbers_exactly(tmp_path):
    """Numbers were written to 10 significant digits: no loss read back as stored, and θ*'s coordinate of a PCA
    grid came out as -4.440892099e-16."""
    rng = np.random.default_rng(0)
    x = np.linspace(-1.0, 1.0, 5) + 1e-16
    values = {name: rng.random((len(Y), len(x))) * 10 ** rng.uniform(-8, 3) for name in bowl(X, Y)}
    surface = read_surface(write_surface(tmp_path / "r.h5", values, x=x))
    rows = [line.split(",") for line in csv_text(surface).splitlines()[1:]]
    np.testing.assert_array_equal([float(r[0]) for r in rows], np.tile(surface.xcoordinates, len(Y)))
    np.testing.assert_array_equal([float(r[2]) for r in rows], surface.values["train_loss"].ravel())
    table = [line.split() for line in table_text(surface).splitlines() if line and not line.startswith("#")][1:]
    np.testing.assert_array_equal([float(r[5]) for r in table], surface.values["test_acc"].ravel())


def test_a_figure_too_large_for_the_browser_is_refused_before_it_starts(tmp_path, monkeypatch):
    """Every contour level holds the whole grid: a 1001 x 1001 contour figure (225 MB of JSON) failed in kaleido
    with a MessageTooLargeError and then a TimeoutError, a traceback after a wait."""
    import kaleido

    def no_browser(*args, **kwargs):
        raise AssertionError("the browser was started")

    monkeypatch.setattr(kaleido, "Kaleido", no_browser)
    n = 701
    x = np.linspace(-1.0, 1.0, n)
    surface = read_surface(write_surface(tmp_path / "big.h5", bowl(x, x), x=x, y=x))
    fig = paper_layout(contour_figure(surface, PlotOptions()))
    with pytest.raises(LandscapeError, match=r"the figure holds 1\d\d MB of data, more than the headless browser"):
        figure_images(fig, ["pdf"])
    with pytest.raises(LandscapeError, match="the browser was started"):  # a 3D view of it is small: it is drawn
        figure_images(paper_layout(surface_figure(surface, PlotOptions())), ["pdf"])


def test_a_failure_inside_kaleido_is_one_line(tmp_path, monkeypatch):
    import kaleido

    class Failing:
        def __init__(self, *args, **kwargs):
            pass

        async def __aenter__(self):
            raise TimeoutError("no answer from the browser")

        async def __aexit__(self, *exc):
            return False

    monkeypatch.setattr(kaleido, "Kaleido", Failing)
    fig = paper_layout(contour_figure(read_surface(write_surface(tmp_path / "s.h5")), PlotOptions()))
    with pytest.raises(LandscapeError, match="failed to draw the figure: TimeoutError: no answer from the browser"):
        figure_images(fig, ["pdf"])
