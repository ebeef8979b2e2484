"""Files written from surfaces: CSV, pgfplots table, NPZ and VTP contents checked value by value; PDF, SVG and PNG
from a headless Chromium; and the `landscape plot` / `landscape export` commands, bad input included."""

import base64
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
import pytest
from surface_fixtures import X, Y, bowl, write_legacy, write_surface
from typer.testing import CliRunner

from landscape import read_surface
from landscape.cli import app
from landscape.export import csv_text, figure_images, npz_bytes, table_text, vtp_text
from landscape.plots import PlotOptions, contour_figure, paper_layout

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
        (["plot", "{good}", "--format", "pdf", "--out", "{out}.png"], "does not end in .pdf"),
        (["plot", "{good}", "--levels", "1:2", "--out", "{out}.pdf"], "contour levels '1:2'"),
        (["plot", "{good}", "--zrange", "5:1", "--out", "{out}.pdf"], "MIN must be below MAX"),
        (["plot", "{good}", "--metric", "valid_loss", "--out", "{out}.pdf"], "no metric 'valid_loss'"),
        (["plot", "{good}", "--out", "{tmp}/missing/fig.pdf"], "does not exist"),
        (["export", "{good}"], "choose one of --vtp, --table, --csv, --npz"),
        (["export", "{good}", "--vtp", "--csv"], "choose one of"),
        (["export", "{corrupt}", "--vtp"], "cannot open"),
        (["export", "{line}", "--vtp"], "1D surface"),
        (["app", "--results", "{tmp}/nowhere"], "does not exist"),
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
        "out": tmp_path / "fig",
        "tmp": tmp_path,
    }
    result = runner.invoke(app, [a.format(**paths) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
