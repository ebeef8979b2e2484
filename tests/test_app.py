"""The Streamlit app driven by `AppTest`: picking files, switching the metric, every plot setting reaching the
figures (levels, labels, camera, height, floor, aspect, slices), comparing two surfaces (difference, titles that
name the folder, linked 3D views), settings kept in the URL, download names, a file that is still being computed,
and broken files or paths outside the results folder shown as errors in the page."""

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
from landscape import app as landscape_app
from landscape import results as results_folder
from landscape.plots import CAMERAS, camera_angles

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


def test_opens_on_the_demo_surface_with_3d_contour_heat_map_and_slice(app, results):
    at = app.run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="file").value == "resnet56.h5"
    text = at.caption[0].value
    assert text == landscape_app.caption(read_surface(results / "resnet56.h5"))
    for fact in ("200 images (seed 0)", "evaluation fp32", "seeds 0 (α) and 1 (β)", "norm filter", "100.0% (15/15)"):
        assert fact in text  # images, precision, directions, completion
    figures = charts(at)
    assert [[t["type"] for t in f["data"]] for f in figures] == [
        ["surface", "scatter3d", "scatter3d", "scatter3d"],
        ["contour"] * 20 + ["scatter", "scatter", "scatter"],  # levels, colour bar, θ*, the slice's line
        ["heatmap", "scatter", "scatter"],
        ["scatter"] * 4,  # the 1D slice: two losses, two accuracies
    ]
    assert figures[0]["layout"]["title"]["text"] == "3D surface · resnet56 · train loss"  # names the model
    scene = figures[0]["layout"]["scene"]
    assert [scene[a]["title"]["text"] for a in ("xaxis", "yaxis", "zaxis")] == ["α", "β", "train loss"]
    assert scene["zaxis"]["tickvals"] and (scene["aspectratio"]["x"], scene["aspectratio"]["y"]) == (1, 0.5)
    np.testing.assert_allclose(array(figures[2]["data"][0]["z"]), bowl(X, Y)["train_loss"])
    np.testing.assert_allclose(array(figures[3]["data"][0]["y"]), bowl(X, Y)["train_loss"][1])  # the row β = 0
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
    assert at.caption[0].value.startswith("surface file of the paper's original code")
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
    surface, contour, heat, _ = charts(at)
    assert np.nanmax(array(heat["data"][0]["z"])) == pytest.approx(0.0)  # log10 of the cap
    levels = [t["contours"]["start"] for t in contour["data"] if t["type"] == "contour"]
    assert levels == pytest.approx([0.1, 10**-0.5, 1.0])  # 0.1 to 1, half a decade apart
    at.sidebar.text_input(key="levels_start:end:size").input("1:2").run()
    assert "START:END:SIZE" in at.sidebar.error[0].value


def test_new_controls_reach_the_figures(app):
    """Level spacing, values on the lines, camera preset, height, the floor's contours, the α : β aspect."""
    at = app.run()
    at.sidebar.radio(key="levels_mode").set_value("even")
    at.sidebar.checkbox(key="labels").check()
    at.sidebar.selectbox(key="camera").select("top")
    at.sidebar.slider(key="zscale").set_value(1.2)
    at.sidebar.checkbox(key="floor").uncheck()
    at.sidebar.radio(key="aspect").set_value("free").run()
    assert not at.exception and not at.error
    surface, contour, heat, _ = charts(at)
    lines = [t for t in contour["data"] if t["type"] == "contour"]
    assert [t["contours"]["start"] for t in lines] == pytest.approx([0.1 * k for k in range(2, 21)])  # even
    assert {t["contours"]["showlabels"] for t in lines} == {True}
    scene = surface["layout"]["scene"]
    assert camera_angles(scene["camera"]).elev == pytest.approx(CAMERAS["top"].elev)
    assert (scene["aspectratio"]["x"], scene["aspectratio"]["y"], scene["aspectratio"]["z"]) == (1, 1, 1.2)
    assert [t["name"] for t in surface["data"]] == ["resnet56", "θ*"]  # no projected contours, no drop line
    assert "scaleanchor" not in heat["layout"]["yaxis"]  # free: fills the plot


def test_a_slice_along_a_column_or_through_the_center(app):
    at = app.run()
    at.radio(key="slice").set_value("y").run()
    at.select_slider(key="slice_at").set_value(0.5).run()
    assert not at.exception and not at.error
    curve = charts(at)[3]
    np.testing.assert_allclose(array(curve["data"][0]["y"]), bowl(X, Y)["train_loss"][:, 3])  # α = 0.5
    assert curve["layout"]["title"]["text"] == "resnet56 (α = 0.5)"
    line = charts(at)[1]["data"][-1]  # the slice drawn on the contour map
    assert line["name"] == "1D slice" and set(array(line["x"])) == {0.5}
    at.radio(key="slice").set_value("angle").run()
    at.slider(key="slice_angle").set_value(90.0).run()
    curve = charts(at)[3]
    column = bowl(X, Y)["train_loss"][:, 2]  # α = 0: 1.1, 0.1, 1.1, and linear between the grid's rows
    np.testing.assert_allclose(array(curve["data"][0]["y"]), [column[0], 0.6, column[1], 0.6, column[2]])
    assert "90°" in curve["layout"]["title"]["text"]


def test_an_inverted_colour_range_is_an_inline_error(app):
    at = app.run()
    at.sidebar.number_input(key="zmin").set_value(2.0)
    at.sidebar.number_input(key="zmax").set_value(1.0).run()
    assert not at.exception
    assert "Colour min 2 is above colour max 1" in at.sidebar.error[0].value
    assert charts(at)[2]["layout"]["coloraxis"]["cmax"] == pytest.approx(2.1)  # the data's range meanwhile
    at.sidebar.number_input(key="zmax").set_value(None).run()  # one end given: the other is the data's
    assert not at.sidebar.error
    axis = charts(at)[2]["layout"]["coloraxis"]
    assert (axis["cmin"], axis["cmax"]) == pytest.approx((2.0, 2.1))


def test_compare_two_on_one_colour_scale(app):
    at = app.run()
    at.sidebar.radio(key="mode").set_value("Compare two").run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="other").value == "resnet56_noshort.h5"
    surface_a, surface_b, contour, heat, difference, curves = charts(at)
    for figure in (surface_a, surface_b, contour, heat):
        axis = figure["layout"]["coloraxis"]
        assert (axis["cmin"], axis["cmax"]) == pytest.approx((0.1, 4.2))
    assert surface_a["layout"]["scene"]["zaxis"]["range"] == surface_b["layout"]["scene"]["zaxis"]["range"]
    assert at.toggle(key="link").value is True  # the two 3D views turn together
    assert any("one colour scale for both: train loss 0.1 .. 4.2" in c.value for c in at.caption)
    np.testing.assert_allclose(array(difference["data"][0]["z"]), -bowl(X, Y)["train_loss"])  # A - 2A
    assert difference["layout"]["title"]["text"].startswith("resnet56 − resnet56_noshort")
    assert [a["text"] for a in contour["layout"]["annotations"]] == ["resnet56", "resnet56_noshort"]
    assert len(curves["data"]) == 8
    at.sidebar.selectbox(key="metric").select("test_loss").run()
    assert charts(at)[3]["layout"]["coloraxis"]["cmax"] == pytest.approx(8.4)  # linked settings


def test_compare_titles_name_the_folder_when_names_clash(tmp_path, monkeypatch):
    for folder in ("run1", "run2"):
        (tmp_path / folder).mkdir()
        write_surface(tmp_path / folder / "model.h5")
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(tmp_path)])
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["file"] = "run1/model.h5"
    at.query_params["other"] = "run2/model.h5"
    at.run()
    assert not at.exception and not at.error
    contour = charts(at)[2]
    assert [a["text"] for a in contour["layout"]["annotations"]] == ["run1/model", "run2/model"]
    assert landscape_app.panel_titles(["a/x.h5", "b/x.h5", "c/y.h5"]) == ["a/x", "b/x", "y"]


def test_settings_are_kept_in_the_url(app):
    app.query_params["file"] = "resnet56.h5"
    for key, value in {
        "log": "1",
        "metric": "test_loss",
        "camera": "low",
        "zscale": "1.5",
        "levels_mode": "even",
    }.items():
        app.query_params[key] = value
    app.query_params["clip"] = "nonsense"
    at = app.run()
    assert not at.exception and not at.error
    assert at.sidebar.checkbox(key="log").value is True
    assert at.sidebar.selectbox(key="metric").value == "test_loss"
    assert at.sidebar.selectbox(key="camera").value == "low"
    assert at.sidebar.slider(key="zscale").value == 1.5
    assert at.sidebar.radio(key="levels_mode").value == "even"
    assert "clip='nonsense'" in at.warning[0].value  # left out, and said so
    surface = charts(at)[0]
    assert surface["layout"]["scene"]["aspectratio"]["z"] == 1.5
    at.sidebar.checkbox(key="labels").check().run()
    params = dict(at.query_params)
    assert params["labels"] == ["1"] or params["labels"] == "1"
    assert {k for k in params} >= {"file", "log", "metric", "camera", "zscale", "levels_mode", "labels"}
    assert "center" not in params  # defaults are not written


def test_download_names_name_the_model(results):
    surfaces = [read_surface(results / n) for n in ("resnet56.h5", "resnet56_noshort.h5", "paper.h5")]
    name = landscape_app.figure_name
    assert name(surfaces[:1], ["resnet56.h5"], "Contour lines", "train_loss") == "resnet56_train_loss_contour_lines"
    assert (
        name(surfaces[:2], ["resnet56.h5", "resnet56_noshort.h5"], "3D surface", "test_acc")
        == "resnet56_vs_resnet56_noshort_test_acc_3d_surface"
    )
    assert name(surfaces[2:], ["paper.h5"], "Heat map", "train_loss") == "paper_train_loss_heat_map"
    renamed = read_surface(results / "running.h5")  # a resnet56 in a file named otherwise
    assert name([renamed], ["running.h5"], "Heat map", "train_loss") == "resnet56-running_train_loss_heat_map"


def test_downloads_of_figures_and_data(app):
    at = app.run()
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["HTML", "CSV", "NPZ"]
    assert at.get("download_button")[0].proto.id.endswith("dl_resnet56_train_loss_3d_surface.html")  # the model
    assert at.selectbox(key="download_figure").options == ["3D surface", "Contour lines", "Heat map", "1D slice"]
    if shutil.which("chromium") is None:
        pytest.skip("static images need Debian's chromium (CI installs it)")
    at.selectbox(key="download_figure").select("Contour lines").run()
    at.button(key="render").click().run(timeout=60)
    assert not at.exception and not at.error
    buttons = at.get("download_button")
    assert [b.label for b in buttons] == ["HTML", "PDF", "SVG", "PNG", "CSV", "NPZ"]
    assert buttons[1].proto.id.endswith("dl_resnet56_train_loss_contour_lines.pdf")
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
    assert "completion 33.3% (5/15)" in at.caption[0].value


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
