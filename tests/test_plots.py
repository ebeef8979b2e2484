"""Figures of known analytic surfaces: trace types, z values and ranges after clipping and log, contour levels
(log-spaced, even, chosen) and the lines they give (marching squares exact on a plane), one scale for α and β,
the camera that fits the box, slices and differences, a shared colour axis, the centre mark, paper sizes, values
and settings too large to draw, the thinning of large grids; and the reading of the paper's legacy files."""

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from surface_fixtures import X, Y, bowl, write_legacy, write_surface

from landscape import LandscapeError, read_surface
from landscape.plots import (
    CAMERAS,
    HUGE,
    KINDS,
    PX_PER_INCH,
    Camera,
    Levels,
    PlotOptions,
    Slice,
    auto_levels,
    camera_angles,
    camera_view,
    compare_figure,
    contour_figure,
    contour_levels,
    contour_segments,
    curve_figure,
    difference_figure,
    equal_axes,
    figure,
    heatmap_figure,
    metric_order,
    paper_layout,
    parse_levels,
    parse_slice,
    shared_grid,
    slice_path,
    slice_title,
    slice_values,
    surface_figure,
    thin,
    value_range,
)

LOSS = bowl(X, Y)["train_loss"]  # 0.1 at (0, 0) .. 2.1 at the corners, shape (3, 5)


@pytest.fixture(scope="module")
def surface(tmp_path_factory):
    return read_surface(write_surface(tmp_path_factory.mktemp("s") / "bowl.h5"))


@pytest.fixture(scope="module")
def double(tmp_path_factory):
    """The bowl with every loss doubled: 0.2 .. 4.2."""
    values = {k: 2 * v if k.endswith("_loss") else v for k, v in bowl(X, Y).items()}
    return read_surface(write_surface(tmp_path_factory.mktemp("s") / "double.h5", values))


def _trace_types(fig):
    return [t.type for t in fig.data]


def _by_name(fig, name):
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


def test_surface_figure_draws_the_values_on_the_grid_with_the_center_marked(surface):
    fig = surface_figure(surface, PlotOptions())
    assert [(t.type, t.name) for t in fig.data] == [
        ("surface", "bowl"),
        ("scatter3d", "contours"),
        ("scatter3d", "θ*"),
        ("scatter3d", "θ* (floor)"),
    ]
    s = fig.data[0]
    np.testing.assert_allclose(s.z, LOSS)
    np.testing.assert_allclose(s.x, X)
    np.testing.assert_allclose(s.y, Y)
    assert s.coloraxis == "coloraxis"
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx((0.1, 2.1))
    floor = 0.1 - 0.35 * 2.0  # the projected contours lie this far under the minimum
    assert tuple(fig.layout.scene.zaxis.range) == pytest.approx((floor - 0.04, 2.14))  # padded by 2 %
    assert fig.layout.scene.zaxis.tickvals == (0.5, 1.0, 1.5, 2.0)  # round, and none on the floor under the data
    assert fig.layout.scene.xaxis.title.text == "α" and fig.layout.scene.yaxis.title.text == "β"
    assert fig.layout.scene.zaxis.title.text == "train loss"
    center = _by_name(fig, "θ*")  # a little above the surface, so that the surface cannot hide it
    assert (center.x[0], center.y[0]) == (0.0, 0.0) and center.z[0] == pytest.approx(0.1 + 0.03 * 2.0)
    assert tuple(_by_name(fig, "θ* (floor)").z) == pytest.approx((floor, 0.1))


def test_contours_are_projected_under_the_3d_surface(surface):
    fig = surface_figure(surface, PlotOptions(levels=(0.5, 1.0)))
    lines = _by_name(fig, "contours")
    points = np.array([(x, y) for x, y in zip(lines.x, lines.y) if x is not None])
    np.testing.assert_allclose(lines.z, 0.1 - 0.35 * 2.0)  # flat, on the floor
    loss = 0.1 + points[:, 0] ** 2 + 4 * points[:, 1] ** 2
    near = np.minimum(np.abs(loss - 0.5), np.abs(loss - 1.0))  # on one of the two levels, up to the grid's
    assert near.max() < 0.3 and len(points) > 10  # linear interpolation of a parabola between grid points
    assert [t.name for t in surface_figure(surface, PlotOptions(floor=False)).data] == ["bowl", "θ*"]


def test_clipping_caps_values_and_the_colour_range(surface):
    fig = surface_figure(surface, PlotOptions(clip=1.0))
    z = np.asarray(fig.data[0].z)
    np.testing.assert_allclose(z, np.minimum(LOSS, 1.0))
    assert (z == 1.0).sum() == 12  # the corners (2.1) and the edges (1.35 and 1.1)
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx((0.1, 1.0))
    assert fig.data[0].customdata.max() == pytest.approx(2.1)  # the hover shows the true value


def test_log_scale_draws_log10_with_ticks_in_the_metric_units(surface):
    fig = heatmap_figure(surface, PlotOptions(log=True))
    np.testing.assert_allclose(fig.data[0].z, np.log10(LOSS))
    bar = fig.layout.coloraxis
    assert (bar.cmin, bar.cmax) == pytest.approx((-1.0, math.log10(2.1)))
    assert bar.colorbar.ticktext == ("0.1", "0.2", "0.5", "1", "2")
    np.testing.assert_allclose(bar.colorbar.tickvals, np.log10([0.1, 0.2, 0.5, 1, 2]))


def test_points_not_computed_and_diverged_points_are_gaps(tmp_path):
    values = bowl(X, Y)
    values["train_loss"][0, 0] = np.inf  # a computed, diverged point
    values["train_loss"][0, 1] = np.nan
    computed = np.ones((3, 5), dtype=bool)
    computed[2, 4] = False
    s = read_surface(write_surface(tmp_path / "gaps.h5", values, computed=computed))
    z = np.asarray(heatmap_figure(s, PlotOptions()).data[0].z)
    assert np.isnan(z[[0, 0, 2], [0, 1, 4]]).all() and np.isfinite(z).sum() == 12
    clipped = np.asarray(heatmap_figure(s, PlotOptions(clip=2.0)).data[0].z)
    assert clipped[0, 0] == 2.0 and np.isnan(clipped[0, 1])  # an infinite loss is above any cap; NaN stays a gap
    for fig in (
        heatmap_figure(s, PlotOptions()),
        figure(s, "surface", PlotOptions()),
        figure(s, "contour", PlotOptions()),
    ):
        trace = fig.data[0]  # the hover tells a point not computed yet from a computed NaN (both were "NaN")
        text = np.asarray(trace.text)
        assert text[2, 4] == " (not computed yet)" and text[0, 1] == "" and (text == "").sum() == 14
        assert "%{text}" in trace.hovertemplate
    whole = read_surface(write_surface(tmp_path / "whole.h5"))
    assert heatmap_figure(whole, PlotOptions()).data[0].text is None


def _levels_of(fig):
    return [t.contours.start for t in fig.data if t.type == "contour"]


def test_automatic_contour_levels_are_log_spaced_into_the_basin(surface):
    levels = auto_levels(0.1, 2.1)
    assert levels == (0.12, 0.125, 0.132, 0.14, 0.15, 0.163, 0.18, 0.2, 0.23, 0.26, 0.3, 0.35, 0.42, 0.5, 0.6, 0.73)[
        :16
    ] + (0.9, 1.1, 1.4, 1.7)
    assert sum(v < 0.6 for v in levels) > len(levels) / 2  # most lines where the loss is within 0.5 of its minimum
    assert auto_levels(0.1, 2.1, "even") == tuple(round(0.1 * k, 12) for k in range(2, 21))
    accuracy = auto_levels(20, 100, best="max")  # an accuracy's basin is at its maximum
    assert sum(v > 90 for v in accuracy) > len(accuracy) / 2 and max(accuracy) < 100
    small = auto_levels(0.001, 30)  # a loss that falls to 1e-3 gets lines in every decade down to it
    assert min(small) < 0.003 and all(any(10**-e <= v < 10 ** (1 - e) for v in small) for e in range(3))
    assert auto_levels(1.0, 1.0) == ()
    fig = contour_figure(surface, PlotOptions())
    assert [t.type for t in fig.data] == ["contour"] * 20 + ["scatter", "scatter"]  # lines, colour bar, θ*
    assert _levels_of(fig) == list(levels)
    assert all(t.contours.coloring == "none" and t.autocontour is False for t in fig.data[:20])
    assert fig.data[20].marker.coloraxis == "coloraxis"  # carries the colour bar of the lines' colours
    assert _levels_of(contour_figure(surface, PlotOptions(spacing="even"))) == list(auto_levels(0.1, 2.1, "even"))


def test_chosen_levels_lines_and_filled(surface):
    assert _levels_of(contour_figure(surface, PlotOptions(levels=Levels(0.5, 2.0, 0.5)))) == [0.5, 1.0, 1.5, 2.0]
    logged = contour_figure(surface, PlotOptions(log=True, levels=Levels(0.1, 10, 0.25)))
    assert _levels_of(logged) == pytest.approx([10 ** (k / 4) for k in range(-4, 5)])  # in the metric's units
    filled = figure(surface, "filled", PlotOptions(levels=Levels(0.5, 2.0, 0.5)))
    bands = [t for t in filled.data if t.type == "contour"]
    assert [t.contours.type for t in bands] == ["constraint"] * 5
    assert [t.contours.value for t in bands] == [pytest.approx(-0.9), 0.5, 1.0, 1.5, 2.0]  # each shades z >= value
    assert {t.contours.operation for t in bands} == {"<"}
    assert len({t.fillcolor for t in bands}) == 5


def test_values_on_the_lines(surface):
    assert {t.contours.showlabels for t in contour_figure(surface, PlotOptions()).data[:20]} == {False}
    labelled = contour_figure(surface, PlotOptions(labels=True))
    assert {t.contours.showlabels for t in labelled.data[:20]} == {True}


def test_a_list_of_levels_gives_one_named_line_each(surface):
    fig = contour_figure(surface, PlotOptions(levels=(0.5, 1.0, 2.0)))
    lines = [t for t in fig.data if t.type == "contour"]
    assert [t.name for t in lines] == ["0.5", "1", "2"]
    assert [(t.contours.start, t.contours.end) for t in lines] == [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)]
    assert len({t.line.color for t in lines}) == 3 and all(t.contours.coloring == "none" for t in lines)
    assert all(t.showlegend for t in lines) and "scatter" not in [t.type for t in fig.data[:-1]]  # legend, no bar
    logged = contour_figure(surface, PlotOptions(log=True, levels=(0.5, 1.0, 2.0)))
    assert [t.contours.start for t in logged.data[:3]] == [0.5, 1.0, 2.0]  # lines of the values, labelled in units
    with pytest.raises(LandscapeError, match="filled contours"):
        contour_figure(surface, PlotOptions(levels=(0.5, 1.0)), filled=True)
    with pytest.raises(LandscapeError, match="positive contour levels"):
        contour_levels((0.1, 2.0), PlotOptions(log=True, levels=(0.0, 1.0)))


def test_marching_squares_is_exact_on_a_plane_and_leaves_gaps_out():
    x, y = np.linspace(-1, 1, 7), np.linspace(-0.5, 0.5, 4)
    gx, gy = np.meshgrid(x, y)
    plane = 1 + gx + 2 * gy
    segments = contour_segments(x, y, plane, 1.3)
    assert segments.shape[1:] == (2, 2) and len(segments) >= 5
    np.testing.assert_allclose(1 + segments[..., 0] + 2 * segments[..., 1], 1.3)  # every end on the line
    gappy = plane.copy()
    gappy[1, 3] = np.nan
    assert len(contour_segments(x, y, gappy, 1.3)) < len(segments)
    assert len(contour_segments(x, y, plane, 99.0)) == 0
    saddle = np.array([[1.0, 0.0], [0.0, 1.0]])  # one cell, corners alternately above and below 0.5
    assert len(contour_segments(np.array([0.0, 1.0]), np.array([0.0, 1.0]), saddle, 0.5)) == 2


def test_center_mark_is_optional(surface):
    assert _trace_types(heatmap_figure(surface, PlotOptions(mark_center=False))) == ["heatmap"]
    marked = heatmap_figure(surface, PlotOptions()).data[1]
    assert (marked.x, marked.y) == ((0.0,), (0.0,))


def test_accuracy_and_test_metrics(surface):
    fig = heatmap_figure(surface, PlotOptions(metric="test_acc"))
    np.testing.assert_allclose(fig.data[0].z, bowl(X, Y)["test_acc"])
    assert fig.layout.coloraxis.colorbar.title.text == "test accuracy (%)"
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx((10.0, 90.0))
    with pytest.raises(LandscapeError, match="no metric 'valid_loss'"):
        heatmap_figure(surface, PlotOptions(metric="valid_loss"))


def test_compare_shares_one_colour_axis_and_z_range(surface, double):
    fig = compare_figure([surface, double], "surface", PlotOptions(floor=False))
    assert _trace_types(fig) == ["surface", "scatter3d", "surface", "scatter3d"]
    assert [t.coloraxis for t in fig.data if t.type == "surface"] == ["coloraxis", "coloraxis"]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx((0.1, 4.2))
    assert tuple(fig.layout.scene.zaxis.range) == tuple(fig.layout.scene2.zaxis.range) == pytest.approx((0.018, 4.282))
    assert [a.text for a in fig.layout.annotations] == ["bowl", "double"]
    contours = compare_figure([surface, double], "contour", PlotOptions())
    panels = [
        [t.contours.start for t in contours.data if t.type == "contour" and t.xaxis == axis] for axis in ("x", "x2")
    ]
    assert panels[0] == panels[1] == list(auto_levels(0.1, 4.2))  # one set of levels over the shared range
    assert value_range([surface, double], PlotOptions(clip=3.0)) == pytest.approx((0.1, 3.0))


def test_compare_with_a_fixed_range_and_log(surface, double):
    fig = compare_figure([surface, double], "heatmap", PlotOptions(log=True, zrange=(0.1, 10.0)))
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx((-1.0, 1.0))
    assert fig.layout.coloraxis.colorbar.ticktext == ("0.1", "0.2", "0.5", "1", "2", "5", "10")


def test_curves_put_losses_left_and_accuracies_right(tmp_path):
    x = np.linspace(-1, 1, 9)
    s = read_surface(write_surface(tmp_path / "line.h5", bowl(x, np.zeros(1)), x=x, y=None))
    fig = curve_figure(s, PlotOptions())
    assert [t.name for t in fig.data] == ["train loss", "train accuracy (%)", "test loss", "test accuracy (%)"]
    assert [t.yaxis for t in fig.data] == ["y", "y2", "y", "y2"]
    np.testing.assert_allclose(fig.data[0].y, 0.1 + x**2)
    assert tuple(fig.layout.yaxis2.range) == (0, 100)
    assert fig.layout.shapes[0].x0 == 0  # θ*
    clipped = curve_figure(s, PlotOptions(log=True, clip=1.0))
    assert clipped.layout.yaxis.type == "log"
    assert tuple(clipped.layout.yaxis.range) == pytest.approx((-1.0, 0.0))  # log10 of 0.1 .. the cap 1
    assert max(clipped.data[2].y) == 1.0 and max(clipped.data[1].y) == 100  # accuracies are not clipped
    # a clip chosen for an accuracy is in percent: it clipped the losses (and fixed the loss axis to end there)
    of_accuracy = curve_figure(s, PlotOptions(metric="train_acc", clip=0.5))
    np.testing.assert_allclose(of_accuracy.data[0].y, 0.1 + x**2)
    assert of_accuracy.layout.yaxis.range is None


def test_curve_of_a_2d_surface_is_its_row_at_beta_zero(surface):
    fig = figure(surface, "1d", PlotOptions())
    np.testing.assert_allclose(fig.data[0].y, 0.1 + X**2)
    assert fig.layout.title.text == "bowl (β = 0)"


def test_bad_kinds_and_dimensions(surface, tmp_path):
    with pytest.raises(LandscapeError, match="unknown figure kind 'pie'"):
        figure(surface, "pie", PlotOptions())
    line = read_surface(write_surface(tmp_path / "line.h5", bowl(X, np.zeros(1)), y=None))
    with pytest.raises(LandscapeError, match="1D surface"):
        figure(line, "contour", PlotOptions())


def test_legacy_files_draw_like_our_own(surface, tmp_path):
    computed = np.ones((3, 5), dtype=bool)
    computed[1, 3] = False
    legacy = read_surface(write_legacy(tmp_path / "paper.h5", computed=computed))
    assert legacy.legacy and legacy.values["train_loss"].shape == (3, 5)
    z = np.asarray(heatmap_figure(legacy, PlotOptions()).data[0].z)
    expected = LOSS.copy()
    expected[1, 3] = np.nan
    np.testing.assert_allclose(z, expected)
    assert metric_order(legacy.metrics) == ["train_loss", "train_acc"]


def test_paper_layout_sizes_and_fonts(surface, double):
    column = paper_layout(contour_figure(surface, PlotOptions()))
    assert (column.layout.width, column.layout.height) == (round(3.25 * PX_PER_INCH), round(2.6 * PX_PER_INCH))
    assert column.layout.font.size == pytest.approx(8 * PX_PER_INCH / 72)
    assert "Times" in column.layout.font.family and column.layout.font.family.endswith("serif")
    page = paper_layout(compare_figure([surface, double], "contour", PlotOptions()), "page", font_size=9)
    assert page.layout.width == round(6.75 * PX_PER_INCH) and page.layout.height == round(6.75 * 0.42 * PX_PER_INCH)
    assert page.layout.annotations[0].font.size == pytest.approx(12)
    with pytest.raises(LandscapeError, match="unknown width"):
        paper_layout(column, "poster")


def test_parse_levels():
    assert parse_levels("0.1:2:0.1") == Levels(0.1, 2.0, 0.1)
    assert parse_levels("2, 0.5 1") == (0.5, 1.0, 2.0)
    for bad in ("1:2", "a,b", "1:0:0.1", " "):
        with pytest.raises(LandscapeError):
            parse_levels(bad)


def test_figures_are_pure(surface):
    before = Path(surface.path).stat().st_mtime_ns
    for kind in ("surface", "contour", "filled", "heatmap", "1d"):
        assert figure(surface, kind, PlotOptions()).to_json()
    assert Path(surface.path).stat().st_mtime_ns == before


def test_compare_curves_share_the_loss_axis(tmp_path):
    x = np.linspace(-1, 1, 9)
    a = read_surface(write_surface(tmp_path / "a.h5", bowl(x, np.zeros(1)), x=x, y=None))
    doubled = {k: 2 * v if k.endswith("_loss") else v for k, v in bowl(x, np.zeros(1)).items()}
    b = read_surface(write_surface(tmp_path / "b.h5", doubled, x=x, y=None))
    fig = compare_figure([a, b], "1d", PlotOptions())
    assert len(fig.data) == 8 and sum(t.showlegend is not False for t in fig.data) == 4
    assert tuple(fig.layout.yaxis.range) == tuple(fig.layout.yaxis3.range) == pytest.approx((0.1, 4.4))
    assert tuple(fig.layout.yaxis2.range) == tuple(fig.layout.yaxis4.range) == (0, 100)


def _with_directions(tmp_path, name, **y_direction):
    """The bowl in a file whose y direction is changed as given (a target, another normalization)."""
    import h5py

    path = write_surface(tmp_path / name)
    with h5py.File(path, "r+") as f:
        spec = json.loads(f.attrs["spec"])
        spec["y"].update(y_direction)
        f.attrs["spec"] = json.dumps(spec)
    return read_surface(path)


def test_alpha_and_beta_are_drawn_to_one_scale(surface, tmp_path):
    """The grid is 2 wide in α and 1 in β: drawn 2:1 in 2D and 3D, unless asked to fill, or unless the two
    directions are not alike (then a unit of α is not comparable to a unit of β)."""
    assert equal_axes(surface, PlotOptions())
    fig = surface_figure(surface, PlotOptions())
    assert (fig.layout.scene.aspectratio.x, fig.layout.scene.aspectratio.y) == (1.0, 0.5)
    assert fig.layout.scene.aspectratio.z == pytest.approx(0.6) and fig.layout.scene.aspectmode == "manual"
    for kind in ("contour", "filled", "heatmap"):
        plane = figure(surface, kind, PlotOptions())
        assert (plane.layout.yaxis.scaleanchor, plane.layout.yaxis.scaleratio) == ("x", 1)
    free = surface_figure(surface, PlotOptions(aspect="free", zscale=1.5))
    assert (free.layout.scene.aspectratio.x, free.layout.scene.aspectratio.y, free.layout.scene.aspectratio.z) == (
        1.0,
        1.0,
        1.5,
    )
    assert heatmap_figure(surface, PlotOptions(aspect="free")).layout.yaxis.scaleanchor is None
    other_norm = _with_directions(tmp_path, "layer.h5", norm="layer")
    assert not equal_axes(other_norm, PlotOptions()) and equal_axes(other_norm, PlotOptions(aspect="equal"))
    both = compare_figure([surface, surface], "heatmap", PlotOptions())
    assert (both.layout.yaxis.scaleanchor, both.layout.yaxis2.scaleanchor) == ("x", "x2")


def _project(camera, aspect, width, height):
    """Where the box's corners land on the screen (-1..1 both ways) for a plotly camera: plotly's perspective."""
    eye, center, up = (np.array([camera[k][c] for c in "xyz"]) for k in ("eye", "center", "up"))
    forward = (center - eye) / np.linalg.norm(center - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    screen_up = np.cross(right, forward)
    corners = np.array(
        [[i * aspect[0], j * aspect[1], k * aspect[2]] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)]
    )
    rel = corners / 2 - eye
    depth = rel @ forward
    return rel @ right / (depth * 0.44 * width / height), rel @ screen_up / (depth * 0.44)


@pytest.mark.parametrize("camera", list(CAMERAS.values()) + [Camera(elev=50, azim=135)])
@pytest.mark.parametrize("size", [(400, 460), (900, 460), (250, 200)])
def test_the_camera_fits_the_box_with_room_for_the_labels(camera, size):
    aspect = (1.0, 0.5, 0.6)
    margins = (40, 30, 30, 10)
    view = camera_view(camera, aspect, *size, margins=margins)
    sx, sy = _project(view, aspect, *size)
    left, right = -1 + 2 * margins[0] / size[0], 1 - 2 * margins[1] / size[0]
    bottom, top = -1 + 2 * margins[2] / size[1], 1 - 2 * margins[3] / size[1]
    assert sx.min() >= left - 1e-3 and sx.max() <= right + 1e-3
    assert sy.min() >= bottom - 1e-3 and sy.max() <= top + 1e-3
    fill = max(np.ptp(sx) / (right - left), np.ptp(sy) / (top - bottom))
    assert fill == pytest.approx(1, abs=0.01)  # as large as fits
    back = camera_angles(view)
    assert back.elev == pytest.approx(camera.elev, abs=1e-3)
    if abs(camera.elev) < 89:  # looking straight down, the azimuth is in `up`
        assert back.azim % 360 == pytest.approx(camera.azim % 360, abs=1e-3)
    closer = camera_view(Camera(camera.elev, camera.azim, zoom=2), aspect, *size, margins=margins)
    distance = [np.linalg.norm([v["eye"][c] - v["center"][c] for c in "xyz"]) for v in (view, closer)]
    assert distance[1] == pytest.approx(distance[0] / 2, rel=1e-4)


def test_the_view_is_kept_until_the_view_itself_changes(surface, double):
    """uirevision: a figure redrawn with other settings keeps the user's camera and zoom; another camera preset,
    height or file starts from its own view."""
    a = surface_figure(surface, PlotOptions())
    assert a.layout.uirevision == "bowl" and heatmap_figure(surface, PlotOptions(log=True)).layout.uirevision == "bowl"
    same = {surface_figure(surface, o).layout.scene.uirevision for o in (PlotOptions(log=True), PlotOptions(clip=1))}
    assert same == {a.layout.scene.uirevision}
    others = {
        surface_figure(surface, PlotOptions(camera=CAMERAS["top"])).layout.scene.uirevision,
        surface_figure(surface, PlotOptions(zscale=1.2)).layout.scene.uirevision,
        surface_figure(double, PlotOptions()).layout.scene.uirevision,
    }
    assert a.layout.scene.uirevision not in others and len(others) == 3
    top = surface_figure(surface, PlotOptions(camera=CAMERAS["top"])).layout.scene.camera
    assert (top.eye.x, top.eye.y) == pytest.approx((top.center.x, top.center.y)) and top.eye.z > 0  # straight down


def test_slices_of_a_plane_along_rows_columns_and_angles(tmp_path):
    x, y = np.linspace(-1, 1, 9), np.linspace(-1, 1, 5)
    gx, gy = np.meshgrid(x, y)
    values = {k: 1 + gx + 2 * gy + (0 if k.endswith("loss") else 50) for k in bowl(x, y)}
    plane = read_surface(write_surface(tmp_path / "plane.h5", values, x=x, y=y))
    t, v, title = slice_values(plane, Slice("x", 0.4), "train_loss")  # nearest row: β = 0.5
    np.testing.assert_allclose(t, x)
    np.testing.assert_allclose(v, 1 + x + 2 * 0.5)
    assert title == "α (β = 0.5)"  # the row drawn, not the value asked for
    t, v, title = slice_values(plane, Slice("y", -0.5), "train_loss")
    np.testing.assert_allclose(v, 1 - 0.5 + 2 * y)
    assert title == "β (α = -0.5)"
    t, v, title = slice_values(plane, Slice("angle", 45), "train_loss")  # bilinear: exact on a plane
    np.testing.assert_allclose(v, 1 + t * (np.cos(np.pi / 4) + 2 * np.sin(np.pi / 4)))
    assert t.min() == pytest.approx(-np.sqrt(2)) and t.max() == pytest.approx(np.sqrt(2))  # corner to corner
    assert "45°" in title
    xs, ys = slice_path(plane, Slice("angle", 90))
    np.testing.assert_allclose(xs, 0, atol=1e-12)
    np.testing.assert_allclose(ys, np.linspace(-1, 1, 9))
    fig = curve_figure(plane, PlotOptions(line=Slice("y", 0.0)))
    assert fig.layout.title.text == "plane (α = 0)" and fig.layout.xaxis.title.text == "β (α = 0)"
    np.testing.assert_allclose(fig.data[0].y, 1 + 2 * y)
    assert parse_slice("angle=30") == Slice("angle", 30.0) and parse_slice("x=-0.5") == Slice("x", -0.5)
    for bad in ("z=1", "x", "x=a", "angle=inf"):
        with pytest.raises(LandscapeError, match="slice"):
            parse_slice(bad)


def test_difference_on_a_shared_grid(surface, double, tmp_path):
    x, y, diff = shared_grid(surface, double, PlotOptions())
    np.testing.assert_allclose(diff, -LOSS)  # A - 2A
    _, _, ratio = shared_grid(surface, double, PlotOptions(log=True))
    np.testing.assert_allclose(ratio, np.log10(0.5))
    fig = difference_figure(surface, double, PlotOptions())
    assert fig.layout.coloraxis.colorscale[0][1] == "rgb(5,48,97)"  # RdBu_r: blue where A is lower
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax == pytest.approx(-2.1)
    assert fig.layout.title.text.startswith("bowl − double")
    xf, yf = np.linspace(-1, 1, 9), np.linspace(-0.5, 0.5, 5)  # B on a finer grid: linear interpolation
    gx, gy = np.meshgrid(xf, yf)
    plane = {k: 1 + gx + 2 * gy for k in bowl(xf, yf)}
    b = read_surface(write_surface(tmp_path / "fine.h5", plane, x=xf, y=yf))
    _, _, diff = shared_grid(surface, b, PlotOptions())
    gx, gy = np.meshgrid(X, Y)
    np.testing.assert_allclose(diff, LOSS - (1 + gx + 2 * gy))
    small = read_surface(write_surface(tmp_path / "small.h5", bowl(X[1:4], Y), x=X[1:4], y=Y))
    _, _, part = shared_grid(surface, small, PlotOptions())
    assert np.isnan(part[:, [0, 4]]).all() and np.isfinite(part[:, 1:4]).all()  # outside B's grid: no difference


def test_curve_legend_above_and_round_log_ticks(tmp_path):
    x = np.linspace(-1, 1, 9)
    s = read_surface(write_surface(tmp_path / "line.h5", bowl(x, np.zeros(1)), x=x, y=None))
    fig = curve_figure(s, PlotOptions(log=True))
    assert (fig.layout.legend.orientation, fig.layout.legend.yanchor) == ("h", "bottom") and fig.layout.legend.y > 1
    assert fig.layout.yaxis.tickvals == (0.1, 0.2, 0.5, 1, 2)
    assert fig.layout.yaxis.ticktext == ("0.1", "0.2", "0.5", "1", "2")
    assert fig.layout.yaxis2.tickvals == (0, 25, 50, 75, 100)
    paper = paper_layout(fig)
    plot_h = paper.layout.height - paper.layout.margin.t - paper.layout.margin.b
    px = 8 * PX_PER_INCH / 72
    assert (paper.layout.legend.y - 1) * plot_h >= 0.7 * px  # clear of the top tick label's upper half
    both = compare_figure([s, s], "1d", PlotOptions())
    assert [both.layout[a].title.text for a in ("yaxis", "yaxis2", "yaxis3", "yaxis4")] == [
        "loss",
        None,
        None,
        "accuracy (%)",
    ]


def test_settings_are_checked():
    with pytest.raises(LandscapeError, match="minimum 2 is above the maximum 1"):
        PlotOptions(zrange=(2.0, 1.0))
    with pytest.raises(LandscapeError, match="level spacing"):
        PlotOptions(spacing="quadratic")
    with pytest.raises(LandscapeError, match="aspect"):
        PlotOptions(aspect="square")
    with pytest.raises(LandscapeError, match="positive"):
        PlotOptions(zscale=0)
    with pytest.raises(LandscapeError, match="elev"):
        Camera(elev=100)


def test_paper_3d_figures_make_room_for_titles_and_ticks(surface, double):
    px = 8 * PX_PER_INCH / 72
    for fig, width in (
        (surface_figure(surface, PlotOptions()), "column"),
        (compare_figure([surface, double], "surface", PlotOptions()), "page"),
    ):
        paper = paper_layout(fig, width)
        bar = paper.layout.coloraxis.colorbar
        assert (bar.orientation, bar.y, bar.yanchor) == ("h", 0, "bottom")  # under the scenes, not beside them
        plot_h = paper.layout.height - paper.layout.margin.t - paper.layout.margin.b
        plot_w = paper.layout.width - paper.layout.margin.l - paper.layout.margin.r
        for name in [k for k in paper.layout.to_plotly_json() if k.startswith("scene")]:
            scene = paper.layout[name]
            assert scene.domain.y[0] * plot_h == pytest.approx(3.6 * px)  # the colour bar's strip
            for axis in (scene.xaxis, scene.yaxis, scene.zaxis):
                assert axis.title.text and axis.title.font.size == pytest.approx(px)
                assert axis.tickfont.size == pytest.approx(0.9 * px)
            width_px = (scene.domain.x[1] - scene.domain.x[0]) * plot_w
            height_px = (scene.domain.y[1] - scene.domain.y[0]) * plot_h
            aspect = (scene.aspectratio.x, scene.aspectratio.y, scene.aspectratio.z)
            sx, sy = _project(scene.camera.to_plotly_json(), aspect, width_px, height_px)
            assert (1 + sx.min()) * width_px / 2 >= 8 * px - 0.5  # room for the z title and ticks on the left
            assert (1 - sx.max()) * width_px / 2 >= 7 * px - 0.5  # and for β's on the right
            assert (1 + sy.min()) * height_px / 2 >= 4.2 * px - 0.5  # and for α's below


def _infinities(fig) -> list[str]:
    """The infinite numbers of a figure's JSON (plotly writes them as Infinity): ranges, ticks, levels."""
    found: list[str] = []
    json.loads(fig.to_json(), parse_constant=lambda c: found.append(c) if "Infinity" in c else None)
    return found


@pytest.mark.parametrize("extremes", [(1e308, -1e308), (1.7e308, 1e-300), (-1e308, 5e-324), (1e200, 1e-200)])
def test_extreme_finite_values_are_drawn_as_infinite(tmp_path, extremes):
    """A loss beyond ±HUGE (a diverged point, or a crafted file) is a gap, or the cap with `clip`, in every figure:
    its range, squares and levels would overflow float64. Tiny positive values stay, on a log scale too."""
    values = bowl(X, Y)
    values["train_loss"][0, 0], values["train_loss"][2, 4] = extremes
    s = read_surface(write_surface(tmp_path / "extreme.h5", values))
    huge = [abs(v) > HUGE for v in extremes]
    for options in (PlotOptions(), PlotOptions(log=True), PlotOptions(clip=3.0), PlotOptions(spacing="even")):
        figures = [figure(s, kind, options) for kind in KINDS]
        figures += [compare_figure([s, s], kind, options) for kind in KINDS]
        figures.append(difference_figure(s, s, options))
        assert not any(_infinities(f) for f in figures)
        z = np.asarray(heatmap_figure(s, options).data[0].z, dtype=np.float64)
        for (j, i), beyond, v in zip([(0, 0), (2, 4)], huge, extremes):
            if beyond:  # a gap, or the cap for a loss beyond +HUGE
                assert z[j, i] == 3.0 if options.clip and v > 0 else np.isnan(z[j, i])
        assert np.isfinite(z).sum() == 15 - sum(h and not (options.clip and v > 0) for h, v in zip(huge, extremes))
        hover = heatmap_figure(s, options).data[0].customdata
        assert hover[0, 0] == extremes[0]  # the hover shows the value the file holds
    assert contour_levels((1e-300, 1e300), PlotOptions(log=True))  # levels over a range of 600 decades


@pytest.mark.parametrize(
    "levels, log",
    [(Levels(-1e308, 1e308, 1e300), False), (Levels(1e-300, 1e300, 1e-9), True), (Levels(0, 1e10, 1e-300), False)],
)
def test_too_many_chosen_levels_are_one_error(levels, log):
    with pytest.raises(LandscapeError, match="too many"):
        contour_levels((0.1, 2.1), PlotOptions(levels=levels, log=log))


def test_settings_beyond_huge_are_refused():
    with pytest.raises(LandscapeError, match="colour range"):
        PlotOptions(zrange=(-1e308, 1e308))
    with pytest.raises(LandscapeError, match="clip"):
        PlotOptions(clip=1e300)
    for text in ("1e308, 1", "nan", "-inf:1:0.5"):
        with pytest.raises(LandscapeError, match="within"):
            parse_levels(text)


def test_thin_keeps_every_kth_point_through_the_center(surface, tmp_path):
    """What the app draws of a large grid: at most DISPLAY_POINTS (201) a side, evenly spaced, through θ*."""
    assert thin(surface) is surface  # small enough
    grid = np.linspace(-1.0, 1.0, 1001)
    s = read_surface(write_legacy(tmp_path / "wide.h5", x=grid, y=grid[:7]))
    t = thin(s)
    assert len(t.xcoordinates) <= 201 and 0.0 in t.xcoordinates and np.all(np.diff(t.xcoordinates) > 0)
    assert t.ycoordinates is not None and len(t.ycoordinates) == 7  # short enough already: every point
    ix = np.searchsorted(grid, t.xcoordinates)
    np.testing.assert_array_equal(t.values["train_loss"], s.values["train_loss"][:, ix])
    np.testing.assert_array_equal(t.computed, s.computed[:, ix])
    assert s.xcoordinates.shape == (1001,)  # the surface itself is left alone
    shifted = read_surface(write_legacy(tmp_path / "shifted.h5", x=np.linspace(-0.3, 2.0, 461), y=grid[:5]))
    assert np.isclose(thin(shifted, most=100).xcoordinates, 0).any()  # θ* on the thinned grid
    for n in (202, 402, 1001):  # the drawn grid spans the whole one (202 and 402 points lost an edge)
        axis = np.linspace(-1.0, 1.0, n)
        t = thin(read_surface(write_legacy(tmp_path / f"edges{n}.h5", x=axis, y=axis[:3])))
        assert len(t.xcoordinates) <= 201 and (t.xcoordinates[0], t.xcoordinates[-1]) == (-1.0, 1.0)
        assert axis[np.argmin(np.abs(axis))] in t.xcoordinates


def test_thin_keeps_the_envelope_and_the_gaps_of_a_long_1d_surface(tmp_path):
    """A 1D surface of up to a million points was sent to the browser whole (a 104 MB chart)."""
    x = np.linspace(-1.0, 1.0, 100_001)
    rng = np.random.default_rng(0)
    loss = 0.1 + x**2 + rng.normal(0, 0.01, x.size)
    loss[70_000] = 50.0  # one spike: an every-k-th thinning would lose it
    values = {"train_loss": loss, "train_acc": 100 - loss, "test_loss": 2 * loss, "test_acc": 90 - loss}
    computed = np.ones(x.size, dtype=bool)
    computed[20_000:20_050] = False  # not computed yet: a gap, not a straight line across
    values["test_loss"][90_000] = np.nan  # a computed NaN: a gap too
    s = read_surface(write_surface(tmp_path / "long.h5", values, x=x, y=None, computed=computed))
    t = thin(s)
    assert len(t.xcoordinates) <= 2000 * 9 + 3 and np.all(np.diff(t.xcoordinates) > 0)
    assert (t.xcoordinates[0], t.xcoordinates[-1]) == (-1.0, 1.0) and 0.0 in t.xcoordinates
    kept = np.searchsorted(x, t.xcoordinates)
    for name, v in s.values.items():
        np.testing.assert_array_equal(t.values[name], v[kept], err_msg=name)
        stretches = np.linspace(0, x.size, 2001).astype(int)
        for start, end in itertools.pairwise(stretches):  # each stretch: its lowest and highest drawn
            mine = (kept >= start) & (kept < end)
            shown = v[start:end][s.computed[start:end]]
            shown = shown[np.isfinite(shown)]
            if not shown.size:  # not computed at all
                continue
            assert np.nanmax(t.values[name][mine & t.computed]) == shown.max()
            assert np.nanmin(t.values[name][mine & t.computed]) == shown.min()
    assert 50.0 in t.values["train_loss"]
    assert 1 <= (~t.computed).sum() <= 2 and 90_000 in kept  # both gaps are drawn (the first spans 2 stretches?)
    assert thin(read_surface(write_surface(tmp_path / "short.h5", x=np.linspace(-1, 1, 4000), y=None))).ndim == 1


def test_text_from_files_is_shown_as_text_in_figures(tmp_path):
    """plotly reads a few HTML tags in titles and legends: a file named `<a href=...>` made a link there."""
    a = read_surface(write_surface(tmp_path / "<a href=http:evil.example>a.h5"))
    b = read_surface(write_surface(tmp_path / "<b>b&amp.h5"))
    figures = [figure(a, kind, PlotOptions(metric="train_loss")) for kind in KINDS]
    figures += [compare_figure([a, b], kind, PlotOptions(metric="train_loss")) for kind in KINDS]
    figures.append(difference_figure(a, b, PlotOptions(metric="train_loss")))
    shown = ""
    for fig in figures:
        text = json.dumps(
            [fig.layout.title.text, [t.name for t in fig.data], [x.text for x in fig.layout.annotations or ()]]
        )
        assert "<a" not in text and "<b>" not in text and "&amp.h5" not in text, text
        shown += text
    assert "&lt;a href=http:evil.example&gt;a" in shown and "&lt;b&gt;b&amp;amp" in shown


def test_a_slice_outside_the_grid_is_refused_and_the_row_drawn_is_named(tmp_path):
    """`--slice x=50` on a β grid of -0.5..0.5 drew the edge row β = 0.5 and said nothing (the title is dropped in
    a paper figure): such a slice is refused, and the x axis names the row or column drawn."""
    s = read_surface(write_surface(tmp_path / "bowl.h5"))
    draws = (
        lambda line: slice_values(s, line, "train_loss"),
        lambda line: slice_path(s, line),
        lambda line: slice_title(s, line),
        lambda line: figure(s, "1d", PlotOptions(line=line)),
        lambda line: compare_figure([s, s], "1d", PlotOptions(line=line)),
    )
    for line, message in ((Slice("x", 50), "slice x=50 is outside"), (Slice("y", -1.5), "slice y=-1.5 is outside")):
        for draw in draws:
            with pytest.raises(LandscapeError, match=message) as error:
                draw(line)
            assert str(s.path) in str(error.value)
    with pytest.raises(LandscapeError, match="its β runs from -0.5 to 0.5"):
        slice_values(s, Slice("x", 0.51), "train_loss")
    with pytest.raises(LandscapeError, match="its α runs from -1 to 1"):
        slice_values(s, Slice("y", -1.01), "train_loss")
    edge = paper_layout(figure(s, "1d", PlotOptions(line=Slice("x", 0.5))).update_layout(title_text=None))
    assert edge.layout.title.text is None and edge.layout.xaxis.title.text == "α (β = 0.5)"
    np.testing.assert_allclose(edge.data[0].y, LOSS[2])
    nearest = figure(s, "1d", PlotOptions(line=Slice("y", 0.3)))  # inside the grid: the nearest column, α = 0.5
    assert nearest.layout.xaxis.title.text == "β (α = 0.5)"
    np.testing.assert_allclose(nearest.data[0].y, LOSS[:, 3])
    assert slice_title(s, Slice("y", 1 + 1e-12)) == "α = 1"  # a grid's end computed in floating point is its end


def test_unknown_colour_scales_are_refused_up_front():
    """`--colorscale NotAScale` failed in plotly with a PlotlyError (exit 1) after the figure was half made."""
    with pytest.raises(LandscapeError, match="unknown colour scale 'NotAScale': use a plotly scale such as Viridis"):
        PlotOptions(colorscale="NotAScale")
    for name in ("Viridis", "viridis", "RdBu_r", "cividis_R", "Turbo"):  # plotly's names, any case, _r reversed
        PlotOptions(colorscale=name)


@pytest.mark.parametrize(
    "size, message",
    [
        (dict(font_size=-1), "the font size must be a number of points, at least 1 (got -1)"),
        (dict(font_size=0), "the font size must be a number of points, at least 1 (got 0)"),
        (dict(font_size=math.nan), "the font size must be a number of points, at least 1 (got nan)"),
        (dict(font_size=0.5), "at least 1 (got 0.5)"),
        (dict(height=-5), "the height must be a number of inches, at least 0.25 (got -5)"),
        (dict(height=0), "the height must be a number of inches, at least 0.25 (got 0)"),
        (dict(height=math.inf), "the height must be a number of inches, at least 0.25 (got inf)"),
        (dict(width=-1), "the width must be a number of inches, at least 0.25 (got -1)"),
        (dict(width=math.nan), "the width must be a number of inches, at least 0.25 (got nan)"),
        (dict(width=math.inf), "the width must be a number of inches, at least 0.25 (got inf)"),
        (dict(width=0.1), "the width must be a number of inches, at least 0.25 (got 0.1)"),
        (dict(width="poster"), "unknown width 'poster'"),
    ],
)
def test_paper_sizes_and_fonts_must_be_positive_finite(surface, size, message):
    """--font-size -1 or 0, --height -5 or a tiny --width failed in plotly with a bare ValueError (exit 1)."""
    with pytest.raises(LandscapeError, match=re.escape(message)):
        paper_layout(contour_figure(surface, PlotOptions()), **size)


def test_the_smallest_paper_sizes_are_drawn(surface, double):
    for fig in (contour_figure(surface, PlotOptions()), compare_figure([surface, double], "1d", PlotOptions())):
        small = paper_layout(fig, 0.25, font_size=1)
        assert (small.layout.width, small.layout.font.size) == (24, pytest.approx(PX_PER_INCH / 72))
    assert paper_layout(contour_figure(surface, PlotOptions()), height=0.25).layout.height == 24


def test_3d_scenes_too_small_for_their_labels_are_refused(surface, double):
    """A 3D scene smaller than its labels failed in plotly (a bare ValueError) or came out as a few stray labels
    (two scenes at column width); four lines of text are left for the box at least."""
    pair = compare_figure([surface, double], "surface", PlotOptions())
    with pytest.raises(LandscapeError, match=r"a 3.25 x 1.36 in figure leaves a 3D box less than 0.44 in inside its "):
        paper_layout(pair, "column")
    with pytest.raises(LandscapeError, match="8 pt axis titles and tick labels: make the figure larger"):
        paper_layout(surface_figure(surface, PlotOptions()), 1.0)
    with pytest.raises(LandscapeError, match="less than 0.14 in inside its 2.5 pt"):
        paper_layout(pair, 0.5, font_size=2.5)
    paper_layout(pair, "page")
    paper_layout(pair, "column", font_size=5)
    paper_layout(surface_figure(surface, PlotOptions()), 2.5)


def test_a_surface_with_no_computed_point_is_refused(surface, tmp_path):
    """A surface just started drew an empty figure with axes -1..0 and a colour bar -0.5..0.5."""
    empty = read_surface(write_surface(tmp_path / "empty.h5", computed=np.zeros((3, 5), dtype=bool)))
    message = f"{empty.path} has no computed point yet: nothing to draw"
    makers = [lambda kind=kind: figure(empty, kind, PlotOptions()) for kind in KINDS]
    makers += [
        lambda: compare_figure([surface, empty], "contour", PlotOptions()),
        lambda: difference_figure(surface, empty, PlotOptions()),
        lambda: difference_figure(empty, surface, PlotOptions()),
        lambda: surface_figure(empty, PlotOptions()),
        lambda: curve_figure(empty, PlotOptions()),
    ]
    for make in makers:
        with pytest.raises(LandscapeError, match=re.escape(message)):
            make()
    one = np.zeros((3, 5), dtype=bool)
    one[1, 2] = True
    assert figure(read_surface(write_surface(tmp_path / "one.h5", computed=one)), "heatmap", PlotOptions())


def test_levels_of_tiny_values_keep_their_digits():
    """Levels were rounded to 12 decimals: a loss between 1e-300 and 2e-300 got none, and 7.5e-12 became 7e-12."""
    tiny = auto_levels(1e-300, 2e-300, "even")
    assert len(tiny) >= 5 and all(1e-300 < v < 2e-300 for v in tiny)
    assert any(v < 1e-12 for v in auto_levels(3e-13, 5e-11))  # log spacing: lines below 1e-12 too
    levels = contour_levels(None, PlotOptions(levels=Levels(2.5e-12, 1e-11, 2.5e-12)))
    assert levels == (2.5e-12, 5e-12, 7.5e-12, 1e-11)
    assert auto_levels(0.1, 2.1, "even") == tuple(float(f"{0.1 * k:.12g}") for k in range(2, 21))


def test_a_log_scale_with_no_positive_value_is_refused(tmp_path):
    """A surface whose losses are all <= 0 drew an empty figure on a log scale (exit 0)."""
    values = {name: -np.abs(v) for name, v in bowl(X, Y).items()}
    surface = read_surface(write_surface(tmp_path / "neg.h5", values))
    for kind in ("contour", "filled", "heatmap", "surface"):
        with pytest.raises(LandscapeError, match="no positive train_loss to draw on a log scale"):
            figure(surface, kind, PlotOptions(log=True))
        figure(surface, kind, PlotOptions())  # a linear scale draws them
    for drawn in (
        surface,
        read_surface(write_surface(tmp_path / "neg1d.h5", values={k: v[1] for k, v in values.items()}, y=None)),
    ):
        with pytest.raises(LandscapeError, match="has no positive loss to draw on a log scale"):
            figure(drawn, "1d", PlotOptions(log=True))
