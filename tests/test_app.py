"""The Streamlit app driven by `AppTest`: picking files, switching the metric, every plot setting reaching the
figures (levels, labels, camera, height, floor, aspect, slices), comparing two surfaces (difference, titles that
name the folder, linked 3D views), settings kept in the URL, download names, a file that is still being computed,
and broken files or paths outside the results folder shown as errors in the page; text from files and the URL
shown as text (never as Markdown: no image, link or HTML), hostile URL settings, symbolic link loops, extreme
values, unforeseen failures as one line, and a files table that does not read unchanged files again; settings that
outlive a failed file and widgets not drawn; the 1D slice's loss axis and kept zoom; the port `landscape app --open`
opens."""

import base64
import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from surface_fixtures import X, Y, bowl, write_legacy, write_surface
from typer.testing import CliRunner

from landscape import LandscapeError, read_surface
from landscape import app as landscape_app
from landscape import cli as landscape_cli
from landscape import plots as landscape_plots
from landscape import results as results_folder
from landscape.plots import CAMERAS, camera_angles

APP = Path(__file__).resolve().parents[1] / "apps" / "landscape_app.py"
escape = landscape_app.escape_markdown  # what the page's Markdown bodies hold of text from files and the URL


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
    assert text == escape(landscape_app.caption(read_surface(results / "resnet56.h5")))
    for fact in ("200 images (seed 0)", "evaluation fp32", "seeds 0 (α) and 1 (β)", "norm filter", "100.0% (15/15)"):
        assert escape(fact) in text  # images, precision, directions, completion
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
    assert at.caption[0].value.startswith(escape("surface file of the paper's original code"))
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
    assert escape("START:END:SIZE") in at.sidebar.error[0].value


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
    assert escape("one colour scale for both: train loss 0.1 .. 4.2") in [c.value for c in at.caption]
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
    assert escape("clip='nonsense'") in at.warning[0].value  # left out, and said so
    surface = charts(at)[0]
    assert surface["layout"]["scene"]["aspectratio"]["z"] == 1.5
    at.sidebar.checkbox(key="labels").check().run()
    params = dict(at.query_params)
    assert params["labels"] == ["1"] or params["labels"] == "1"
    assert {k for k in params} >= {"file", "log", "metric", "camera", "zscale", "levels_mode", "labels"}
    assert "center" not in params  # defaults are not written


def test_downloaded_maps_hold_no_slice_line(app, monkeypatch):
    """The dashed line of the 1D slice, drawn on the maps in the page, went into the downloaded figures too."""
    offered = {}
    real = landscape_app.downloads_ui
    monkeypatch.setattr(landscape_app, "downloads_ui", lambda figures, *a: offered.update(figures) or real(figures, *a))
    app.query_params["file"] = "resnet56.h5"
    at = app.run()
    assert not at.exception and not at.error
    shown = [[t.get("name") for t in c["data"]] for c in charts(at)]
    assert sum("1D slice" in names for names in shown) == 2  # on the contour lines and the heat map
    for title in ("Contour lines", "Heat map"):
        assert "1D slice" not in [t.name for t in offered[title].data], title


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
    assert escape("completion 33.3% (5/15)") in at.caption[0].value


def test_a_1d_surface_shows_its_curves(app):
    at = app.run()
    at.sidebar.selectbox(key="file").select("lines/line.h5").run()
    assert not at.exception and not at.error
    (curves,) = charts(at)
    assert [t["name"] for t in curves["data"]] == ["train loss", "train accuracy (%)", "test loss", "test accuracy (%)"]


def test_a_clip_of_zero_on_a_log_scale_is_a_sidebar_error_and_the_figures_stay(app):
    """`?log=1&clip=0` blanked the view with an error once a log scale refused a clip <= 0."""
    app.query_params["log"] = "1"
    app.query_params["clip"] = "0"
    at = app.run()
    assert not at.exception
    assert [e.value for e in at.sidebar.error] == [
        escape("a log scale needs a positive clip (got 0); nothing is clipped")
    ]
    assert len(charts(at)) == 4 and not at.main.error


def test_a_long_1d_surface_is_drawn_by_its_envelope_with_a_note(app, monkeypatch):
    """A 1D surface of up to a million points went to the browser whole (104 MB)."""
    monkeypatch.setattr(landscape_plots, "DISPLAY_STRETCHES", 1)  # the 5-point line is then a long one
    at = app.run()
    at.sidebar.selectbox(key="file").select("lines/line.h5").run()
    assert not at.exception and not at.error
    note = "lines/line.h5: the curves draw 3 of its 5 points (in each of 1 stretches of α"
    assert any(escape(note) in c.value for c in at.caption)
    (curves,) = charts(at)
    np.testing.assert_allclose(array(curves["data"][0]["x"]), [-1, 0, 1])
    np.testing.assert_allclose(array(curves["data"][0]["y"]), [1.1, 0.1, 1.1])


def test_the_kept_views_are_those_of_the_file_by_its_path_in_the_folder(tmp_path, monkeypatch):
    """run1/model.h5 and run2/model.h5 shared their kept camera and zoom: the views were keyed by the file's stem."""
    root = tmp_path / "results"
    for run in ("run1", "run2"):
        (root / run).mkdir(parents=True)
        write_surface(root / run / "model.h5")
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(root)])
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    revisions = []
    for name in ("run1/model.h5", "run2/model.h5"):
        at.sidebar.selectbox(key="file").select(name).run()
        assert not at.exception and not at.error
        surface, contour, heat, curve = charts(at)
        assert surface["layout"]["scene"]["uirevision"].startswith(f"{name} | ")
        assert {c["layout"]["uirevision"].split(" | ")[0] for c in (contour, heat, curve)} == {name}
        revisions.append(surface["layout"]["scene"]["uirevision"])
    assert revisions[0] != revisions[1]


def test_an_error_while_drawing_names_the_file_not_the_servers_path(tmp_path, monkeypatch):
    """A file with no point computed yet: the page said `/srv/.../results/sub/empty.h5 has no computed point`."""
    root = tmp_path / "results"
    (root / "sub").mkdir(parents=True)
    write_surface(root / "sub" / "empty.h5", computed=np.zeros((3, 5), dtype=bool))
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(root)])
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    assert [e.value for e in at.error] == [escape("sub/empty.h5 has no computed point yet: nothing to draw")]


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


@pytest.mark.parametrize("value", [1234567.0, 100000.5, 0.1, 1.5, -2.0, 1e-7, 3e300, 2.0**60 + 1])
def test_a_number_in_the_url_reads_back_the_same(value):
    """':g' wrote 1234567.0 as 1.23457e+06 and 100000.5 as 100000: a bookmarked clip or slice moved."""
    text = landscape_app.format_setting(value)
    assert float(text) == value


def test_files_of_no_common_metric_are_one_line(tmp_path, monkeypatch):
    """A --split train file beside a --split test one: "IndexError: list index out of range" in the page."""
    write_surface(tmp_path / "a_train.h5", splits=("train",))
    write_surface(tmp_path / "b_test.h5", splits=("test",))
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(tmp_path)])
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["file"] = "a_train.h5"
    at.query_params["other"] = "b_test.h5"
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        escape(
            "a_train.h5 and b_test.h5 have no metric in common (train_loss, train_acc and test_loss, test_acc): "
            "compare surfaces of the same split"
        )
    ]


def test_results_folder_refuses_escapes(results):
    assert "link.h5" not in results_folder.list_files(results)
    for name in ("../elsewhere/secret.h5", str(results / "resnet56.h5"), "link.h5"):
        with pytest.raises(LandscapeError, match="outside the results folder"):
            results_folder.load(results, name)
    assert results_folder.load(results, "lines/line.h5").ndim == 1


EVIL_IMAGE = "![x](http://evil.example/x.png)"
EVIL = f"{EVIL_IMAGE} <img src=http://evil.example/y.png> [a](http://evil.example) :red[red] :material/home: $x^2$"
EVIL_NAME = "![z](http:evil.example/z.png).h5"  # 'http:host/x' is 'http://host/x' to a browser
MARKUP = ("![", "](", "<img", ":red[", ":material/", "$x", "://")


def unescaped(body: str) -> str:
    """A Markdown body without its escaped characters: what is left can still form markup."""
    return re.sub(r"\\[!-/:-@\[-`{-~]", "", body)


def markdown_bodies(at) -> list[str]:
    """Every text of the page that Streamlit renders as Markdown: headings, captions, alerts, expander labels,
    progress texts, the cells of st.table."""
    texts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption") for e in at.get(kind)]
    texts += [e.value for kind in ("error", "warning", "info", "success") for e in at.get(kind)]
    texts += [e.label for e in at.get("expander")] + [e.proto.text for e in at.get("progress")]
    texts += [str(v) for table in at.get("table") for v in table.value.to_numpy().ravel()]
    return texts


@pytest.mark.parametrize(
    "text",
    [
        EVIL,
        EVIL_NAME,
        "[ref]\n\n[ref]: http://evil.example/r.png\n![r][ref]",
        "<http://evil.example> www.evil.example a@evil.example &lt;img&gt; &#33;[x](y)",
        "# heading\n- item\n1. one\n> quote\n| a | b |\n|---|---|\n\n    code\n`code` *em* _em_ ~~del~~ \\*",
        "    four spaces: a code block in a table cell\tor\t\ttabs",
    ],
)
def test_escape_markdown_shows_text_as_it_is(text):
    """Rendered as CommonMark with tables and strikethrough (markdown-it, the parser of `rich`), the escaped text is
    one paragraph of the text itself (line breaks as spaces, invisible word joiners where a URL or an e-mail
    address would become a link): no image, link, HTML, heading, list or code."""
    markdown_it = pytest.importorskip("markdown_it")
    escaped = landscape_app.escape_markdown(text)
    rendered = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(escaped).strip()
    assert rendered.startswith("<p>") and rendered.endswith("</p>") and rendered.count("<") == 2
    shown = html.unescape(rendered[3:-4])
    assert shown.replace(landscape_app.WORD_JOINER, "") == re.sub(r"[\x00-\x1f]", " ", text).lstrip()
    assert not re.search(r"(?i)://|www\.|@\w", shown)  # what GFM's autolink literals start with
    for directive in (":red[", ":material/", "$x", "http:/"):  # Streamlit's own syntax, which markdown-it lacks
        assert directive not in unescaped(escaped)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A results folder of hostile text: a spec whose model is Markdown (an image, HTML, a link, a colour, an icon,
    math) in a file whose path is an image itself."""
    root = tmp_path_factory.mktemp("hostile")
    write_surface(root / "evil.h5", arch=EVIL)
    (root / EVIL_NAME.split("/")[0]).mkdir()
    write_surface(root / EVIL_NAME, arch=EVIL)
    return root


def test_text_from_files_and_the_url_is_shown_as_text(hostile, monkeypatch):
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(hostile)])
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["file"] = EVIL_IMAGE
    at.query_params["metric"] = EVIL * 2  # too long: left out, with a warning that quotes it
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="file").value == EVIL_NAME  # the first file
    assert escape(f"'{EVIL_IMAGE}' is not a file in the results folder") in at.error[0].value
    assert escape(f"metric={EVIL[:40]!r}") in at.warning[0].value
    assert at.subheader[0].value == escape(EVIL_NAME)
    assert escape(f"model {EVIL} ·") in at.caption[0].value
    assert at.expander[0].label == escape(f"Everything {EVIL_NAME} records")
    model = at.table[0].value.loc[0, "model"]
    assert model == escape(f"{EVIL} from /ckpt/{EVIL}.pt (sha256 0123456789ab)")
    assert at.dataframe[0].value.loc[0, "model"] == EVIL  # a data frame shows its cells as text
    for body in markdown_bodies(at):
        assert not any(markup in unescaped(body) for markup in MARKUP), body
    at.sidebar.radio(key="mode").set_value("Compare two").run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == escape(f"{EVIL_NAME} vs evil.h5")
    assert at.caption[0].value.startswith(escape(f"{EVIL_NAME}: model {EVIL} ·"))
    assert at.caption[1].value.startswith(escape(f"evil.h5: model {EVIL} ·"))
    for body in markdown_bodies(at):
        assert not any(markup in unescaped(body) for markup in MARKUP), body


def test_a_symbolic_link_loop_in_the_folder_is_left_out(tmp_path, monkeypatch):
    write_surface(tmp_path / "resnet56.h5")
    os.symlink(tmp_path / "b.h5", tmp_path / "a.h5")  # a.h5 -> b.h5 -> a.h5
    os.symlink(tmp_path / "a.h5", tmp_path / "b.h5")
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(tmp_path)])
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["file"] = "a.h5"
    at.run()
    assert not at.exception
    assert "is not a file name of the results folder" in at.error[0].value
    assert at.dataframe[0].value["file"].tolist() == ["resnet56.h5"] and len(charts(at)) == 4


@pytest.mark.parametrize("log", ["0", "1"])
def test_extreme_values_are_drawn_as_gaps_with_a_note(tmp_path, monkeypatch, log):
    values = bowl(X, Y)
    values["train_loss"][0, 0], values["train_loss"][2, 4] = 1e308, -1e308
    values["test_acc"][1, 1] = 1e300  # drawn by the 1D slice: counted too, after the chosen metric
    write_surface(tmp_path / "extreme.h5", values)
    write_surface(tmp_path / "bowl.h5")
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(tmp_path)])
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["file"] = "extreme.h5"
    at.query_params["log"] = log
    at.run()
    assert not at.exception and not at.error
    note = (
        "extreme.h5: values beyond ±1e+150 are drawn as infinite (gaps, or at the clip): train loss 2, "
        "test accuracy (%) 1"
    )
    assert at.warning[0].value == escape(note)
    z = array(charts(at)[2]["data"][0]["z"])
    assert np.isnan(z[0, 0]) and np.isnan(z[2, 4]) and np.isfinite(z).sum() == 13
    at.sidebar.radio(key="mode").set_value("Compare two").run()
    assert not at.exception and not at.error and len(charts(at)) == 6


def test_an_unforeseen_failure_while_drawing_is_one_line_naming_the_file(app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the grid is odd\nsecond line")

    monkeypatch.setattr(landscape_plots, "surface_figure", broken)
    at = app.run()
    assert not at.exception
    assert at.error[0].value == escape("resnet56.h5 cannot be shown (RuntimeError: the grid is odd)")


@pytest.mark.parametrize(
    "params",
    [
        {"zscale": "100"},
        {"slice": "angle", "slice_angle": "500"},
        {"clip": "1e300"},
        {"zmin": "-1e308", "zmax": "1e308"},
        {"levels_mode": "start:end:size", "levels_start:end:size": "-1e308:1e308:1e300"},
        {"log": "1", "levels_mode": "start:end:size", "levels_start:end:size": "1e-300:1e300:1e-9"},
        {"levels_mode": "list", "levels_list": "1e308, -1e308"},
        {"levels_mode": "start:end:size", "levels_start:end:size": "0.1:2:0.002"},  # 951: 500 MB on 201x201
        {"log": "1", "levels_mode": "list", "levels_list": "0, 1"},  # was an error in place of every figure
        {"log": "1", "zmin": "-1"},  # so was this
    ],
)
def test_hostile_url_settings_are_one_line_each(app, params):
    for key, value in params.items():
        app.query_params[key] = value
    at = app.run()
    assert not at.exception
    assert at.warning or at.sidebar.error
    assert len(charts(at)) == 4


def test_the_files_table_reads_no_unchanged_file_again(tmp_path, monkeypatch):
    """The table of a folder of 100 files, redrawn every few seconds, reads only the files that changed."""
    for k in range(100):
        write_surface(tmp_path / f"s{k:03d}.h5")
    reads = []
    real = results_folder.read_surface
    monkeypatch.setattr(results_folder, "read_surface", lambda path: reads.append(Path(path).name) or real(path))
    monkeypatch.setattr("sys.argv", ["landscape_app.py", "--results", str(tmp_path)])
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception and len(at.dataframe[0].value) == 100
    reads.clear()
    at.run()  # what the refresh of the table does, and any change of setting
    assert not at.exception and reads == []


def test_a_large_grid_is_drawn_thinned_with_a_note(app, monkeypatch):
    monkeypatch.setattr(landscape_plots, "DISPLAY_POINTS", 3)  # the 5 x 3 bowl is then a large grid
    at = app.run()
    assert not at.exception and not at.error
    note = "resnet56.h5: the 3D view and the maps draw 3 x 3 of its 5 x 3 points (evenly spaced, through θ*)"
    assert escape(note) in at.caption[1].value
    surface, contour, heat, curve = charts(at)
    np.testing.assert_allclose(array(heat["data"][0]["x"]), [-1, 0, 1])
    np.testing.assert_allclose(array(heat["data"][0]["z"]), bowl(X, Y)["train_loss"][:, ::2])
    assert (heat["layout"]["coloraxis"]["cmin"], heat["layout"]["coloraxis"]["cmax"]) == pytest.approx((0.1, 2.1))
    np.testing.assert_allclose(array(curve["data"][0]["y"]), bowl(X, Y)["train_loss"][1])  # the slice: every point
    at.sidebar.radio(key="mode").set_value("Compare two").run()
    assert not at.exception and not at.error
    assert len([c for c in at.caption if "3 x 3 of its 5 x 3 points" in c.value]) == 2
    difference = charts(at)[4]
    np.testing.assert_allclose(array(difference["data"][0]["z"]), -bowl(X, Y)["train_loss"][:, ::2])


def _files_table_of_a_removed_folder(root: str) -> None:
    """The files table's first draw after its folder was removed (the page was opened on it)."""
    import shutil
    from pathlib import Path

    from landscape import app

    names = ["a.h5"]
    shutil.rmtree(root)
    app.watch(Path(root), names)


def test_the_files_table_of_a_removed_folder_is_one_line(tmp_path):
    """The folder removed while the page is open: the table's fragment says so in one line (a traceback before)."""
    root = tmp_path / "results"
    root.mkdir()
    write_surface(root / "a.h5")
    at = AppTest.from_function(_files_table_of_a_removed_folder, args=(str(root),), default_timeout=30).run()
    assert not at.exception
    assert [e.value for e in at.error] == [escape(f"results folder {root} does not exist")]


def test_settings_outlive_a_file_that_fails_and_widgets_not_drawn(app):
    """Streamlit forgets a widget not drawn in a run: one unreadable file reset every plot setting (and the URL lost
    them), and so did a visit to One surface (the linked 3D views), a 1D file (the slice) or another levels mode."""
    settings = {"log": "1", "camera": "top", "zscale": "1.2", "colorscale": "Plasma"}
    app.query_params.update({"file": "resnet56.h5", **settings})
    at = app.run()
    at.sidebar.selectbox(key="file").select("broken.h5").run()
    assert "cannot open" in at.error[0].value and dict(at.query_params) == {"file": "broken.h5", **settings}
    at.sidebar.selectbox(key="file").select("resnet56.h5").run()
    assert not at.exception and not at.error
    assert dict(at.query_params) == {"file": "resnet56.h5", **settings}
    assert (at.sidebar.checkbox(key="log").value, at.sidebar.selectbox(key="camera").value) == (True, "top")
    assert charts(at)[0]["layout"]["scene"]["aspectratio"]["z"] == 1.2
    at.radio(key="slice").set_value("y").run()
    at.select_slider(key="slice_at").set_value(0.5).run()
    at.sidebar.selectbox(key="file").select("lines/line.h5").run()  # no slice to choose on a 1D file
    at.sidebar.selectbox(key="file").select("resnet56.h5").run()
    assert (at.radio(key="slice").value, at.select_slider(key="slice_at").value) == ("y", 0.5)
    assert charts(at)[3]["layout"]["title"]["text"] == "resnet56 (α = 0.5)"
    at.sidebar.radio(key="levels_mode").set_value("list").run()
    at.sidebar.text_input(key="levels_list").input("0.5, 1").run()
    at.sidebar.radio(key="levels_mode").set_value("even").run()
    at.sidebar.radio(key="levels_mode").set_value("list").run()
    assert at.sidebar.text_input(key="levels_list").value == "0.5, 1"
    at.sidebar.radio(key="mode").set_value("Compare two").run()
    at.sidebar.selectbox(key="other").select("paper.h5")
    at.toggle(key="link").set_value(False).run()
    at.sidebar.radio(key="mode").set_value("One surface").run()
    assert dict(at.query_params)["link"] == "0"
    at.sidebar.radio(key="mode").set_value("Compare two").run()
    assert not at.exception and not at.error
    assert (at.toggle(key="link").value, at.sidebar.selectbox(key="other").value) == (False, "paper.h5")
    assert dict(at.query_params) == {
        "file": "resnet56.h5",
        "other": "paper.h5",
        **settings,
        "levels_mode": "list",
        "levels_list": "0.5, 1",
        "link": "0",
        "slice": "y",
        "slice_at": "0.5",
    }


@pytest.mark.parametrize(
    "metric, zmin, loss_axis, compared_axis",
    [  # was [50, 100] for an accuracy: its colour range on the loss axis
        ("train_acc", "50", None, [0.1, 8.4]),  # compared: the range of both files' train and test losses
        ("train_loss", "0.5", [0.5, 2.1], [0.5, 4.2]),  # the colour range of a loss, to the maximum of both
    ],
)
def test_the_1d_slice_takes_a_colour_range_only_of_a_loss(app, metric, zmin, loss_axis, compared_axis):
    app.query_params.update({"file": "resnet56.h5", "metric": metric, "zmin": zmin})
    at = app.run()
    assert not at.exception and not at.error
    curve = charts(at)[3]
    assert curve["layout"]["yaxis"].get("range") == pytest.approx(loss_axis)
    assert curve["layout"]["yaxis2"]["range"] == [0, 100]  # the accuracies' axis
    at.sidebar.radio(key="mode").set_value("Compare two").run()  # resnet56_noshort: losses twice as high
    assert not at.exception and not at.error
    compared = charts(at)[5]["layout"]
    assert compared["yaxis"]["range"] == compared["yaxis3"]["range"] == pytest.approx(compared_axis)


def test_a_1d_file_takes_no_colour_range_of_an_accuracy_on_its_loss_axis(app):
    app.query_params.update({"file": "lines/line.h5", "metric": "train_acc", "zmin": "50"})
    at = app.run()
    assert not at.exception and not at.error
    (curves,) = charts(at)
    assert "range" not in curves["layout"]["yaxis"] and curves["layout"]["yaxis2"]["range"] == [0, 100]


def test_a_zoom_of_the_1d_curves_is_not_kept_across_the_log_scale(app):
    """A zoomed slice went blank after Log scale: its kept view (VIEW_JS, by `uirevision`) put a range of the linear
    loss axis on the log one."""
    app.query_params["file"] = "resnet56.h5"
    at = app.run()
    revisions = [charts(at)[3]["layout"]["uirevision"]]
    at.sidebar.checkbox(key="log").check().run()
    revisions.append(charts(at)[3]["layout"]["uirevision"])
    at.sidebar.radio(key="mode").set_value("Compare two").run()
    revisions.append(charts(at)[5]["layout"]["uirevision"])
    at.sidebar.checkbox(key="log").uncheck().run()
    revisions.append(charts(at)[5]["layout"]["uirevision"])
    at.sidebar.radio(key="mode").set_value("One surface")
    at.sidebar.selectbox(key="file").select("lines/line.h5").run()
    revisions.append(charts(at)[0]["layout"]["uirevision"])
    at.sidebar.checkbox(key="log").check().run()
    assert not at.exception and not at.error
    revisions.append(charts(at)[0]["layout"]["uirevision"])
    both = "resnet56.h5 | resnet56_noshort.h5 | resnet56 vs resnet56_noshort"
    assert revisions == [
        "resnet56.h5 | resnet56 | loss",
        "resnet56.h5 | resnet56 | log loss",
        f"{both} | log loss",
        f"{both} | loss",
        "lines/line.h5 | line | loss",
        "lines/line.h5 | line | log loss",
    ]


@pytest.fixture
def no_server(monkeypatch) -> list[list[str]]:
    """`landscape app` with no server started (a stand-in records the command and ends at once), no signal handler
    installed and no display: the commands it would have run."""
    commands: list[list[str]] = []

    class Server:
        def __init__(self, command: list[str], **kwargs) -> None:
            commands.append(command)

        def poll(self) -> int:
            return 0

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Server)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    monkeypatch.setattr(landscape_cli, "_display_present", lambda: False)
    monkeypatch.delenv("STREAMLIT_SERVER_PORT", raising=False)
    return commands


def _app_command(commands: list[list[str]], folder: Path, *extra: str, env: dict | None = None) -> tuple:
    """The port `landscape app` gives Streamlit (None: none) and what it says."""
    result = CliRunner().invoke(landscape_cli.app, ["app", "--results", str(folder), *extra], env=env)
    assert result.exit_code == 0, result.output
    command = commands.pop()
    port = command[command.index("--server.port") + 1] if "--server.port" in command else None
    return port, result.stderr


def test_open_opens_the_port_the_app_serves_on(tmp_path, no_server):
    """--open without --port polled and opened 8501 while Streamlit served on 8502 (8501 taken) or on the port of
    STREAMLIT_SERVER_PORT."""
    with socket.socket() as taken:  # 8501 in use (by this, or by something else already)
        with contextlib.suppress(OSError):
            taken.bind(("127.0.0.1", 8501))
            taken.listen()
        port, said = _app_command(no_server, tmp_path, "--address", "127.0.0.1", "--open")
    assert port is not None and port != "8501"
    assert said == f"no display to open a browser on: open http://127.0.0.1:{port} yourself\n"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", int(port)))  # a free port
    assert _app_command(no_server, tmp_path, "--open", env={"STREAMLIT_SERVER_PORT": "8765"}) == (
        "8765",
        "no display to open a browser on: open http://localhost:8765 yourself\n",
    )
    assert _app_command(no_server, tmp_path, "--open", "--port", "8600")[0] == "8600"
    assert _app_command(no_server, tmp_path, "--headless") == (None, "")  # Streamlit's own choice: nothing to open
    result = CliRunner().invoke(
        landscape_cli.app, ["app", "--results", str(tmp_path), "--open"], env={"STREAMLIT_SERVER_PORT": "http"}
    )
    assert result.exit_code == 2 and result.stderr == "error: STREAMLIT_SERVER_PORT must be 1 to 65535, got 'http'\n"


def test_open_takes_the_port_of_streamlits_config(tmp_path):
    """A `server.port` in the config file of the folder `landscape app` runs in, as Streamlit reads it."""
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "config.toml").write_text("[server]\nport = 8777\n")
    env = {k: v for k, v in os.environ.items() if k != "STREAMLIT_SERVER_PORT"}
    code = (
        "from landscape.cli import _check_serving_address as c; print(c('localhost', None, True), c('localhost', None))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "8777 None\n", done.stderr


def test_open_writes_an_ipv6_address_in_brackets(tmp_path, no_server):
    """`--address ::1 --open` polled and opened http://::1:8501, which is no URL."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port, said = _app_command(no_server, tmp_path, "--address", "::1", "--open", "--port", "8600")
    assert (port, said) == ("8600", "no display to open a browser on: open http://[::1]:8600 yourself\n")
