"""The Streamlit app driven by `AppTest`: picking files, switching the metric, comparing two surfaces, a file that
is still being computed, and broken files or paths outside the results folder shown as errors in the page."""

import base64
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from surface_fixtures import X, Y, bowl, write_legacy, write_surface

from landscape import LandscapeError, read_surface
from landscape import results as results_folder

APP = Path(__file__).resolve().parents[1] / "apps" / "landscape_app.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    write_surface(root / "resnet56.h5")
    doubled = {k: 2 * v if k.endswith("_loss") else v for k, v in bowl(X, Y).items()}
    write_surface(root / "resnet56_noshort.h5", doubled, arch="resnet56_noshort")
    write_legacy(root / "paper.h5")
    computed = np.zeros((3, 5), dtype=bool)
    computed[1] = True
    write_surface(root / "running.h5", computed=computed)
    (root / "lines").mkdir()
    write_surface(root / "lines" / "line.h5", bowl(X, np.zeros(1)), y=None)
    (root / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with h5py.File(root / "foreign.h5", "w") as f:
        f["weights"] = np.zeros(3)
    outside = tmp_path_factory.mktemp("elsewhere")
    write_surface(outside / "secret.h5")
    os.symlink(outside / "secret.h5", root / "link.h5")
    return root


@pytest.fixture
def app(results, monkeypatch):
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(results)])
    return AppTest.from_file(str(APP), default_timeout=30)


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def array(value) -> np.ndarray:
    """A plotly array from the figure JSON (plain list or base64 typed array)."""
    if isinstance(value, dict):
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return data.reshape([int(n) for n in str(value.get("shape", len(data))).split(",")])
    return np.asarray(value, dtype=np.float64)


def test_opens_on_the_demo_surface_with_3d_contour_and_heat_map(app, results):
    at = app.run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="file").value == "resnet56.h5"
    fields = results_folder.describe(read_surface(results / "resnet56.h5")).fields()
    assert at.caption[0].value == " · ".join(f"{label} {value}" for label, value in fields.items())
    assert "y direction random seed 1" in at.caption[0].value and "evaluation fp32" in at.caption[0].value
    figures = charts(at)
    assert [[t["type"] for t in f["data"]] for f in figures] == [
        ["surface", "scatter3d"],
        ["contour", "scatter"],
        ["heatmap", "scatter"],
    ]
    np.testing.assert_allclose(array(figures[2]["data"][0]["z"]), bowl(X, Y)["train_loss"])
    table = at.dataframe[0].value
    assert table["file"].tolist() == [
        "broken.h5",
        "foreign.h5",
        "lines/line.h5",
        "paper.h5",
        "resnet56.h5",
        "resnet56_noshort.h5",
        "running.h5",
    ]  # the escaping link is not listed
    rows = table.set_index("file")
    assert rows.loc["resnet56.h5", "model"] == "resnet56"
    assert rows.loc["resnet56.h5", "completion"] == "100.0% (15/15)"  # as `landscape info` says it
    assert rows.loc["running.h5", "completion"] == "33.3% (5/15)"
    assert rows.loc["paper.h5", "model"] == "(paper's code: not recorded)"
    assert "cannot open" in rows.loc["broken.h5", "status"]
    assert "not a surface file" in rows.loc["foreign.h5", "status"]


def test_select_a_file_and_switch_the_metric(app):
    at = app.run()
    at.sidebar.selectbox(key="file").select("paper.h5").run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="metric").options == ["train loss", "train accuracy (%)"]
    at.sidebar.selectbox(key="metric").select("train_acc").run()
    heat = charts(at)[2]
    assert heat["layout"]["coloraxis"]["colorbar"]["title"]["text"] == "train accuracy (%)"
    assert (heat["layout"]["coloraxis"]["cmin"], heat["layout"]["coloraxis"]["cmax"]) == pytest.approx((20, 100))
    np.testing.assert_allclose(array(heat["data"][0]["z"]), bowl(X, Y)["train_acc"])


def test_plot_settings_reach_the_figures(app):
    at = app.run()
    at.sidebar.number_input(key="clip").set_value(1.0)
    at.sidebar.checkbox(key="log").check()
    at.sidebar.radio(key="levels_mode").set_value("start:end:size").run()
    at.sidebar.text_input(key="levels_start:end:size").input("0.1:1:0.5").run()
    assert not at.exception and not at.error
    surface, contour, heat = charts(at)
    assert np.nanmax(array(heat["data"][0]["z"])) == pytest.approx(0.0)  # log10 of the cap
    assert contour["data"][0]["contours"]["start"] == pytest.approx(-1.0)
    assert contour["data"][0]["contours"]["size"] == pytest.approx(0.5)
    at.sidebar.text_input(key="levels_start:end:size").input("1:2").run()
    assert "START:END:SIZE" in at.sidebar.error[0].value


def test_compare_two_on_one_colour_scale(app):
    at = app.run()
    at.sidebar.radio(key="mode").set_value("Compare two").run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="other").value == "resnet56_noshort.h5"
    surface, contour, heat = charts(at)
    assert [t["type"] for t in surface["data"]] == ["surface", "scatter3d", "surface", "scatter3d"]
    for figure in (surface, contour, heat):
        axis = figure["layout"]["coloraxis"]
        assert (axis["cmin"], axis["cmax"]) == pytest.approx((0.1, 4.2))
        assert {t.get("coloraxis") for t in figure["data"] if t["type"] != "scatter" and t["type"] != "scatter3d"} == {
            "coloraxis"
        }
    assert any("one colour scale for both: train loss 0.1 .. 4.2" in c.value for c in at.caption)
    at.sidebar.selectbox(key="metric").select("test_loss").run()
    assert charts(at)[2]["layout"]["coloraxis"]["cmax"] == pytest.approx(8.4)  # linked settings


def test_downloads_of_figures_and_data(app):
    at = app.run()
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["HTML", "CSV", "NPZ"]
    if shutil.which("chromium") is None:
        pytest.skip("static images need Debian's chromium (CI installs it)")
    at.selectbox(key="download_figure").select("Contour lines").run()
    at.button(key="render").click().run(timeout=60)
    assert not at.exception and not at.error
    assert [b.label for b in at.get("download_button")] == ["HTML", "PDF", "SVG", "PNG", "CSV", "NPZ"]
    at.sidebar.checkbox(key="log").check().run()
    assert [b.label for b in at.get("download_button")] == ["HTML", "CSV", "NPZ"]  # another figure: render again


def test_a_file_being_computed_shows_progress_and_follows(app):
    at = app.run()
    at.sidebar.selectbox(key="file").select("running.h5").run()
    assert not at.exception and not at.error
    assert "5/15 points (33%)" in at.get("progress")[0].proto.text
    assert at.sidebar.toggle(key="follow").value is True
    z = array(charts(at)[2]["data"][0]["z"])
    assert np.isfinite(z).sum() == 5 and np.isfinite(z[1]).all()


def test_a_1d_surface_shows_its_curves(app):
    at = app.run()
    at.sidebar.selectbox(key="file").select("lines/line.h5").run()
    assert not at.exception and not at.error
    (curves,) = charts(at)
    assert [t["name"] for t in curves["data"]] == ["train loss", "train accuracy (%)", "test loss", "test accuracy (%)"]


@pytest.mark.parametrize("name, message", [("broken.h5", "cannot open"), ("foreign.h5", "not a surface file")])
def test_a_broken_or_foreign_file_is_an_error_in_the_page(app, name, message):
    at = app.run()
    at.sidebar.selectbox(key="file").select(name).run()
    assert not at.exception
    assert message in at.error[0].value and not charts(at)


@pytest.mark.parametrize(
    "wanted, message",
    [
        ("../elsewhere/secret.h5", "outside the results folder"),
        ("/etc/passwd", "outside the results folder"),
        ("link.h5", "outside the results folder"),
        ("nothing.h5", "not a file in the results folder"),
        ("\x00", "is not a file name of the results folder"),
        ("a\x00b.h5", "is not a file name of the results folder"),
    ],
)
def test_a_url_naming_a_path_outside_the_folder_is_refused(app, wanted, message):
    app.query_params["file"] = wanted
    at = app.run()
    assert not at.exception
    assert message in at.error[0].value
    assert at.sidebar.selectbox(key="file").value == "resnet56.h5"


def test_a_url_picks_the_files_to_compare(app):
    app.query_params["file"] = "paper.h5"
    app.query_params["other"] = "resnet56.h5"
    at = app.run()
    assert not at.exception and not at.error
    assert at.sidebar.radio(key="mode").value == "Compare two"
    assert (at.sidebar.selectbox(key="file").value, at.sidebar.selectbox(key="other").value) == (
        "paper.h5",
        "resnet56.h5",
    )


def test_results_folder_refuses_escapes(results):
    assert "link.h5" not in results_folder.list_files(results)
    for name in ("../elsewhere/secret.h5", str(results / "resnet56.h5"), "link.h5"):
        with pytest.raises(LandscapeError, match="outside the results folder"):
            results_folder.load(results, name)
    assert results_folder.load(results, "lines/line.h5").ndim == 1
