"""The training path of a surface on PCA directions drawn over its figures (issue 10, item 2): on contour maps,
heat maps and the 3D view (lifted exactly onto a planar surface), labelled, as a layer that turns off, with the
principal components and their share of variance on the axes; in side-by-side figures, in the app, in the HTML
and SVG of `landscape plot`, and as a pgfplots table and NPZ arrays of `landscape export`."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from surface_fixtures import X, Y, write_legacy, write_surface
from typer.testing import CliRunner

from landscape import LandscapeError, read_surface
from landscape.cli import app as cli
from landscape.export import data_bytes, path_table_text
from landscape.plots import (
    CENTER_NAME,
    PATH_NAME,
    PlotOptions,
    axis_titles,
    compare_figure,
    contour_figure,
    heatmap_figure,
    path_labels,
    surface_figure,
    values_at,
)
from landscape.trajectory import read_trajectory

APP = Path(__file__).resolve().parents[1] / "apps" / "landscape_app.py"
COORDINATES = np.array([[0.75, 0.375], [0.5, -0.25], [0.25, 0.125], [0.0, 0.0]])
EPOCHS = np.array([5, 10, 15, 20])


def plane(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A loss that is a plane in (α, β): bilinear interpolation between grid points is exact on it."""
    return 1.0 + 0.5 * x + 2.0 * y


def plane_values() -> dict[str, np.ndarray]:
    gx, gy = np.meshgrid(X, Y)
    loss = plane(gx, gy)
    return {"train_loss": loss, "train_acc": 100 - 10 * loss, "test_loss": 2 * loss, "test_acc": 90 - 10 * loss}


def trajectory(coordinates: np.ndarray = COORDINATES, ratio: tuple[float, float] = (0.7, 0.2)) -> dict:
    n = len(coordinates)
    return {
        "coordinates": coordinates,
        "epochs": EPOCHS[:n],
        "residual": np.linspace(0.5, 0.0, n),
        "distance": np.linspace(2.0, 0.0, n),
        "explained_variance_ratio": np.array(ratio),
    }


@pytest.fixture
def pca(tmp_path) -> Path:
    return write_surface(tmp_path / "pca.h5", plane_values(), trajectory=trajectory())


def named(fig, name: str) -> list:
    return [t for t in fig.data if t.name == name]


def test_the_surface_file_carries_its_path(pca, tmp_path):
    surface = read_surface(pca)
    assert surface.trajectory is not None
    np.testing.assert_array_equal(surface.trajectory.coordinates, COORDINATES)
    np.testing.assert_array_equal(surface.trajectory.epochs, EPOCHS)
    np.testing.assert_array_equal(read_trajectory(pca).explained_variance_ratio, [0.7, 0.2])
    assert read_surface(write_surface(tmp_path / "random.h5")).trajectory is None


@pytest.mark.parametrize("make", [contour_figure, heatmap_figure])
def test_contour_and_heat_map_draw_the_path_labelled(pca, make):
    fig = make(read_surface(pca), PlotOptions())
    (path,) = named(fig, PATH_NAME)
    np.testing.assert_array_equal(path.x, COORDINATES[:, 0])
    np.testing.assert_array_equal(path.y, COORDINATES[:, 1])
    assert list(path.text) == ["start (epoch 5)", "10", "15", ""]  # θ* names the last point
    np.testing.assert_array_equal(np.asarray(path.customdata)[:, 0], EPOCHS)
    np.testing.assert_allclose(np.asarray(path.customdata)[:, 1], [25.0, 25.0, 25.0, 0.0])  # residual / distance
    (center,) = named(fig, CENTER_NAME)
    assert list(center.text) == [CENTER_NAME]
    assert fig.layout.xaxis.title.text == "α: PC1, 70.0% of variance"
    assert fig.layout.yaxis.title.text == "β: PC2, 20.0% of variance"


@pytest.mark.parametrize("make", [contour_figure, heatmap_figure, surface_figure])
def test_the_path_is_a_layer_that_turns_off(pca, make):
    fig = make(read_surface(pca), PlotOptions(path=False))
    assert not [t for t in fig.data if (t.name or "").startswith(PATH_NAME)]
    assert all(t.text is None for t in named(fig, CENTER_NAME))


def test_surfaces_without_a_path_keep_plain_axes(tmp_path):
    surface = read_surface(write_surface(tmp_path / "random.h5"))
    assert axis_titles(surface) == ("α", "β")
    fig = contour_figure(surface, PlotOptions())
    assert not named(fig, PATH_NAME) and fig.layout.xaxis.title.text == "α"


def test_the_3d_path_lies_on_the_surface_between_and_at_snapshots(pca):
    fig = surface_figure(read_surface(pca), PlotOptions(floor=True))
    (line,) = named(fig, PATH_NAME)
    (markers,) = named(fig, f"{PATH_NAME} (snapshots)")
    (shadow,) = named(fig, f"{PATH_NAME} (floor)")
    lift = 0.02 * (plane_values()["train_loss"].max() - plane_values()["train_loss"].min())
    np.testing.assert_allclose(markers.z, plane(COORDINATES[:, 0], COORDINATES[:, 1]) + lift, rtol=0, atol=1e-12)
    x, y = np.asarray(line.x), np.asarray(line.y)
    assert len(x) == 3 * 12 + 1  # 12 points per segment, then θ*
    np.testing.assert_allclose(np.stack([x[::12], y[::12]], axis=1), COORDINATES, rtol=0, atol=1e-15)
    np.testing.assert_allclose(line.z, plane(x, y) + lift, rtol=0, atol=1e-12)  # follows the surface
    assert len(set(shadow.z)) == 1 and shadow.z[0] < min(markers.z)  # on the floor, under the surface
    assert list(markers.text) == ["start (epoch 5)", "", "", ""]  # epochs only in the hover: labels pile up in 3D
    assert fig.layout.scene.xaxis.title.text == "α: PC1 (70.0%)"  # short: 3D text does not shrink


def test_path_points_outside_the_grid_are_gaps(tmp_path):
    coordinates = np.array([[1.5, 0.0], [0.5, 0.0], [0.0, 0.0]])
    surface = read_surface(write_surface(tmp_path / "s.h5", plane_values(), trajectory=trajectory(coordinates)))
    (markers,) = named(surface_figure(surface, PlotOptions()), f"{PATH_NAME} (snapshots)")
    assert np.isnan(markers.z[0]) and np.isfinite(markers.z[1:]).all()
    contour = contour_figure(surface, PlotOptions())  # 2D: the axes stay on the grid, the path is cut at its edge
    assert list(contour.layout.xaxis.range) == [-1.0, 1.0] and list(contour.layout.yaxis.range) == [-0.5, 0.5]
    heat = heatmap_figure(surface, PlotOptions())  # a heat map's cells reach half a spacing beyond the grid
    assert list(heat.layout.xaxis.range) == [-1.25, 1.25] and list(heat.layout.yaxis.range) == [-0.75, 0.75]
    inside = read_surface(write_surface(tmp_path / "in.h5", plane_values(), trajectory=trajectory()))
    assert contour_figure(inside, PlotOptions()).layout.xaxis.range is None  # left to plotly when it fits
    both = compare_figure([surface, inside], "contour", PlotOptions())
    assert list(both.layout.xaxis.range) == [-1.0, 1.0] and both.layout.xaxis2.range is None
    np.testing.assert_allclose(values_at(surface, "train_loss", coordinates), [np.nan, 1.25, 1.0])
    far = np.array([[4.0, 3.0], [0.8, 0.5], [0.4, -0.2], [0.0, 0.0]])  # starts far outside, both axes
    surface = read_surface(write_surface(tmp_path / "far.h5", plane_values(), trajectory=trajectory(far)))
    for fig in (surface_figure(surface, PlotOptions(floor=True)), compare_figure([surface], "surface", PlotOptions())):
        scene = fig.layout.scene
        assert list(scene.xaxis.range) == [-1.0, 1.0] and list(scene.yaxis.range) == [-0.5, 0.5]  # not stretched
        drawn = [t for t in fig.data if (t.name or "").startswith(PATH_NAME)]
        assert len(drawn) == 3  # line, markers, floor shadow: none reaches beyond the grid
        for t in drawn:
            x, y = np.asarray(t.x, dtype=float), np.asarray(t.y, dtype=float)
            assert np.isnan(x[0]) and np.isnan(y[0]) and np.isfinite(x[-1])
            assert np.nanmax(np.abs(x)) <= 1.0 and np.nanmax(np.abs(y)) <= 0.5


def test_theta_star_sits_on_a_surface_whose_coordinates_decrease(tmp_path):
    """A paper-code file written with --x=1:-1:N: θ* used to be drawn at a corner's height (np.interp needs
    increasing coordinates)."""
    surface = read_surface(write_legacy(tmp_path / "down.h5", X[::-1], Y[::-1]))
    fig = surface_figure(surface, PlotOptions(floor=True))
    (center,) = named(fig, CENTER_NAME)
    (drop,) = named(fig, f"{CENTER_NAME} (floor)")
    assert drop.z[1] == pytest.approx(0.1)  # bowl: 0.1 at θ*
    assert center.z[0] == pytest.approx(0.1 + 0.03 * 2.0)  # lifted by 3% of the range (0.1 to 2.1)


def test_path_labels_are_spread_out_and_keep_clear_of_the_center():
    epochs = np.arange(1, 11)
    far = np.stack([np.arange(10, 0, -1), np.zeros(10)], axis=1).astype(float)  # 1 apart, from 10 to 1
    # evenly spaced candidates: indices 2, 4, 5, 7 of 0..9; 4 and 5 are 1 apart, closer than 10% of 20
    assert path_labels(far, epochs, spread=20.0) == ["start (epoch 1)", "", "3", "", "5", "", "", "8", "", ""]
    assert path_labels(far, epochs, spread=10.0) == ["start (epoch 1)", "", "3", "", "5", "6", "", "8", "", ""]
    near = far / 100  # everything within 10% of θ*: only the start is written
    assert path_labels(near, epochs, spread=1.0) == ["start (epoch 1)"] + [""] * 9
    assert path_labels(far[:2], epochs[:2], spread=1.0) == ["start (epoch 1)", ""]


def test_side_by_side_panels_keep_their_own_components(tmp_path):
    a = read_surface(write_surface(tmp_path / "a.h5", plane_values(), trajectory=trajectory(ratio=(0.7, 0.2))))
    b = read_surface(write_surface(tmp_path / "b.h5", plane_values(), trajectory=trajectory(ratio=(0.5, 0.25))))
    fig = compare_figure([a, b], "contour", PlotOptions())
    assert [fig.layout.xaxis.title.text, fig.layout.xaxis2.title.text] == [
        "α: PC1, 70.0% of variance",
        "α: PC1, 50.0% of variance",
    ]
    assert fig.layout.yaxis2.title.text == "β: PC2, 25.0% of variance"
    assert len(named(fig, PATH_NAME)) == 2
    surfaces = compare_figure([a, b], "surface", PlotOptions())
    assert surfaces.layout.scene2.xaxis.title.text == "α: PC1 (50.0%)"


def test_pgfplots_table_and_npz_of_the_path(pca, tmp_path):
    text = path_table_text(read_surface(pca))
    rows = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert rows[0] == ["epoch", "x", "y", "residual", "distance", "train_loss", "train_acc", "test_loss", "test_acc"]
    hints = [line for line in text.splitlines() if "\\addplot3" in line]  # (epoch, x, loss) by pgfplots' default
    assert len(hints) == 1 and "\\addplot3 table[x=x, y=y, z=train_loss]" in hints[0]
    table = np.array(rows[1:], dtype=float)
    np.testing.assert_array_equal(table[:, 0], EPOCHS)
    np.testing.assert_array_equal(table[:, 1:3], COORDINATES)
    np.testing.assert_allclose(table[:, 5], plane(COORDINATES[:, 0], COORDINATES[:, 1]), rtol=1e-9)
    np.testing.assert_allclose(table[:, 7], 2 * plane(COORDINATES[:, 0], COORDINATES[:, 1]), rtol=1e-9)
    with np.load(io.BytesIO(data_bytes(read_surface(pca), "npz"))) as archive:
        np.testing.assert_array_equal(archive["trajectory_coordinates"], COORDINATES)
        np.testing.assert_array_equal(archive["trajectory_epochs"], EPOCHS)
    with pytest.raises(LandscapeError, match="holds no training path"):
        path_table_text(read_surface(write_surface(tmp_path / "random.h5")))


def test_cli_plot_and_export_draw_and_write_the_path(pca, tmp_path):
    runner = CliRunner()
    on, off = tmp_path / "on.html", tmp_path / "off.html"
    for out, flag in ((on, "--path"), (off, "--no-path")):
        result = runner.invoke(cli, ["plot", str(pca), "--out", str(out), flag])
        assert result.exit_code == 0, result.output
    assert PATH_NAME in on.read_text() and "start (epoch 5)" in on.read_text()
    assert PATH_NAME not in off.read_text()
    result = runner.invoke(cli, ["export", str(pca), "--path"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pca.path.dat").read_text() == path_table_text(read_surface(pca))
    random = write_surface(tmp_path / "random.h5")
    result = runner.invoke(cli, ["export", str(random), "--path"])
    assert result.exit_code == 2 and "holds no training path" in result.output and len(result.output.splitlines()) == 1


@pytest.mark.skipif(not shutil.which("chromium"), reason="static images need a headless Chromium (CI installs it)")
def test_svg_export_draws_the_path(pca, tmp_path):
    out = tmp_path / "c.svg"
    result = CliRunner().invoke(cli, ["plot", str(pca), "--out", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert "start (epoch 5)" in svg and CENTER_NAME in svg and "PC1, 70.0% of variance" in svg


def test_the_app_shows_the_path_as_a_layer(pca, tmp_path, monkeypatch):
    write_surface(tmp_path / "random.h5")
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(tmp_path)])
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception and not at.error

    def path_traces() -> list[int]:
        return [
            sum(t.get("name", "").startswith(PATH_NAME) for t in json.loads(c.proto.spec)["data"])
            for c in at.get("plotly_chart")
        ]

    assert at.sidebar.selectbox(key="file").value == "pca.h5"
    assert path_traces() == [3, 1, 1, 0]  # 3D (line, snapshots, floor), contours, heat map; not the 1D slice
    at.sidebar.checkbox(key="path").uncheck().run()
    assert path_traces() == [0, 0, 0, 0]
    at.sidebar.selectbox(key="file").select("random.h5").run()
    assert not at.exception and not [c for c in at.sidebar.checkbox if c.key == "path"]
