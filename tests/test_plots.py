"""Figures of known analytic surfaces: trace types, z values and ranges after clipping and log, contour levels,
a shared colour axis, the centre mark, paper sizes; and the reading of the paper's legacy files."""

import math
from pathlib import Path

import numpy as np
import pytest
from surface_fixtures import X, Y, bowl, write_legacy, write_surface

from landscape import LandscapeError, read_surface
from landscape.plots import (
    PX_PER_INCH,
    Levels,
    PlotOptions,
    compare_figure,
    contour_figure,
    curve_figure,
    figure,
    heatmap_figure,
    metric_order,
    paper_layout,
    parse_levels,
    surface_figure,
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


def test_surface_figure_draws_the_values_on_the_grid_with_the_center_marked(surface):
    fig = surface_figure(surface, PlotOptions())
    assert _trace_types(fig) == ["surface", "scatter3d"]
    s = fig.data[0]
    np.testing.assert_allclose(s.z, LOSS)
    np.testing.assert_allclose(s.x, X)
    np.testing.assert_allclose(s.y, Y)
    assert s.coloraxis == "coloraxis"
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx((0.1, 2.1))
    assert tuple(fig.layout.scene.zaxis.range) == pytest.approx((0.06, 2.14))  # padded by 2 %
    center = fig.data[1]
    assert (center.x[0], center.y[0], center.z[0]) == pytest.approx((0.0, 0.0, 0.1))


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


def test_automatic_contour_levels_are_round_numbers_over_the_range(surface):
    fig = contour_figure(surface, PlotOptions())
    assert _trace_types(fig) == ["contour", "scatter"]
    c = fig.data[0].contours
    assert (c.start, c.end, c.size) == pytest.approx((0.1, 2.1, 0.1)) and c.coloring == "lines"
    assert fig.data[0].autocontour is False


def test_chosen_levels_lines_and_filled(surface):
    c = contour_figure(surface, PlotOptions(levels=Levels(0.5, 2.0, 0.5))).data[0].contours
    assert (c.start, c.end, c.size, c.coloring) == (0.5, 2.0, 0.5, "lines")
    assert figure(surface, "filled", PlotOptions(levels=Levels(0.5, 2.0, 0.5))).data[0].contours.coloring == "fill"
    c = contour_figure(surface, PlotOptions(log=True, levels=Levels(0.1, 10, 0.25))).data[0].contours
    assert (c.start, c.end, c.size) == pytest.approx((-1.0, 1.0, 0.25))


def test_a_list_of_levels_gives_one_named_line_each(surface):
    fig = contour_figure(surface, PlotOptions(levels=(0.5, 1.0, 2.0)))
    lines = [t for t in fig.data if t.type == "contour"]
    assert [t.name for t in lines] == ["0.5", "1", "2"]
    assert [(t.contours.start, t.contours.end) for t in lines] == [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)]
    assert len({t.line.color for t in lines}) == 3 and all(t.contours.coloring == "none" for t in lines)
    logged = contour_figure(surface, PlotOptions(log=True, levels=(0.5, 1.0, 2.0)))
    assert [t.contours.start for t in logged.data[:3]] == pytest.approx(np.log10([0.5, 1.0, 2.0]))
    with pytest.raises(LandscapeError, match="filled contours"):
        contour_figure(surface, PlotOptions(levels=(0.5, 1.0)), filled=True)


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
    fig = compare_figure([surface, double], "surface", PlotOptions())
    assert _trace_types(fig) == ["surface", "scatter3d", "surface", "scatter3d"]
    assert [t.coloraxis for t in fig.data if t.type == "surface"] == ["coloraxis", "coloraxis"]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx((0.1, 4.2))
    assert tuple(fig.layout.scene.zaxis.range) == tuple(fig.layout.scene2.zaxis.range) == pytest.approx((0.018, 4.282))
    assert [a.text for a in fig.layout.annotations] == ["bowl", "double"]
    contours = compare_figure([surface, double], "contour", PlotOptions())
    levels = {(t.contours.start, t.contours.end, t.contours.size) for t in contours.data if t.type == "contour"}
    assert levels == {(0.25, 4.0, 0.25)}  # one set of levels over the shared range 0.1 .. 4.2
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
