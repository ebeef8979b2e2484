import numpy as np
import pytest
import surface_fixtures as fixtures

from landscape import LandscapeError, analysis, read_surface
from landscape.analysis import basin_mask, local_minima, nonconvex_fraction, roughness, summarize, turns_per_line

x = np.linspace(-1, 1, 21)
y = np.linspace(-1, 1, 11)
X, Y = np.meshgrid(x, y)


def test_bowl():
    bowl = X**2 + 2 * Y**2
    s = summarize(bowl, x, y, level=0.5)
    assert s.center == 0 and s.minimum == 0 and s.local_minima == 1
    assert s.nonconvex_fraction == 0
    # fxx = 2, fyy = 4 exactly for a quadratic: the mean of |second differences| over all of them
    n_xx, n_yy = 11 * 19, 9 * 21
    assert s.roughness == pytest.approx((2 * n_xx + 4 * n_yy) / (n_xx + n_yy))
    # basin: points with x^2 + 2y^2 < 0.5, all connected to the center
    assert s.basin_fraction == pytest.approx(np.mean(bowl < 0.5))
    assert s.basin_area == pytest.approx(np.mean(bowl < 0.5) * 2 * 2)


def test_saddle_and_egg_crate():
    saddle = X**2 - Y**2
    assert nonconvex_fraction(saddle, x, y) == 1.0
    crate = np.cos(4 * np.pi * X) * np.cos(4 * np.pi * Y)
    assert local_minima(crate) > 4
    assert roughness(crate, x, y) > 10 * roughness(X**2 + Y**2, x, y)


def test_an_exactly_convex_valley_or_plane_is_convex_everywhere():
    """The share counted second differences of -5.6e-13 (float64 rounding) as negative curvature: 44% of a valley
    (x + y)², 20% of a plane. A weak saddle stays counted, on the 51-point grid of the report."""
    u = np.linspace(-1, 1, 51)
    U, V = np.meshgrid(u, u)
    for surface in ((U + V) ** 2, 0.3 * U + 0.7 * V + 2.3, U**2 + 0.3 * V, 1e6 * (U - V) ** 2 + 5):
        assert nonconvex_fraction(surface, u, u) == 0.0
        assert nonconvex_fraction(surface, u, u[::-1]) == 0.0  # the paper's files may run from +1 to -1
    assert nonconvex_fraction(U**2 - 1e-6 * V**2 + 3, u, u) == 1.0


def test_basin_is_the_component_of_the_center():
    v = np.ones((5, 5))
    v[2, 2] = v[2, 1] = 0  # center region
    v[0, 4] = 0  # a separate low point
    m = basin_mask(v, np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), 0.5)
    assert m.sum() == 2 and not m[0, 4]
    v[2, 2] = np.nan  # a center that is not below the level has no basin
    assert basin_mask(v, np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), 0.5).sum() == 0


def test_missing_points_are_ignored():
    v = X**2 + Y**2
    v[0, 0] = np.nan
    assert local_minima(v) == 1 and np.isfinite(roughness(v, x, y))


def test_turns_per_line():
    assert turns_per_line(X**2 + 2 * Y**2) == 1.0  # one turn on every row and column: the bowl's bottom
    assert turns_per_line(3 * X + Y) == 0.0
    # scale-free: scaling and shifting f changes nothing
    assert turns_per_line(5 * (X**2 + 2 * Y**2) + 7) == 1.0
    # cos(2 pi k x) on [-1, 1] turns 4k - 1 times (at x = j / 2k for |j| < 2k)
    fx, fy = np.meshgrid(np.linspace(-1, 1, 201), np.linspace(-1, 1, 101))
    wave = np.cos(2 * np.pi * 2 * fx) + 0.1 * np.cos(2 * np.pi * fy)
    rows, columns = 101, 201  # every row turns 7 times, every column 3 times
    assert turns_per_line(wave) == pytest.approx((rows * 7 + columns * 3) / (rows + columns))
    # a flat step is skipped, not counted as a turn; a missing point does not break the count
    assert turns_per_line(np.array([[0.0, 1.0, 1.0, 2.0], [0.0, 1.0, np.nan, 2.0]])) == 0.0


def test_turns_ignore_wiggles_below_the_tolerance():
    fine_x, fine_y = np.linspace(-1, 1, 201), np.linspace(-1, 1, 101)
    fx, fy = np.meshgrid(fine_x, fine_y)
    bowl = 1 + fx**2 + 2 * fy**2
    wiggly = bowl * (1 + 1e-3 * np.cos(20 * np.pi * fx) * np.cos(20 * np.pi * fy))  # 0.1% relative ripples
    assert turns_per_line(wiggly) > 1.2  # near the bottom, where the bowl is flat, every ripple counts
    assert turns_per_line(wiggly, tolerance=0.005) == 1.0  # at 0.5% only the bowl's bottom
    line = np.array([[10.0, 9.0, 9.5, 8.0, 8.5, 12.0]])  # moves back by 0.5 (5.6% of 9), 1.5, 0.5 (6.25% of 8)
    assert turns_per_line(line, 0.0) == 3.0 and turns_per_line(line, 0.05) == 3.0
    assert turns_per_line(line, 0.06) == 1.0  # 9 -> 9.5 is not a turn: the valley is at 8
    assert turns_per_line(line, 0.1) == 1.0 and turns_per_line(line, 0.5) == 0.0  # 8 -> 12 is exactly 50%
    # a first move below the tolerance followed by a larger one the other way: one turn, at the top
    assert turns_per_line(np.array([[10.0, 10.5, 9.0, 8.0]]), 0.1) == 0.0
    assert turns_per_line(np.array([[10.0, 10.5, 9.0, 8.0]]), 0.0) == 1.0
    assert summarize(wiggly, fine_x, fine_y, level=2).turns_per_line == 1.0  # compare's default tolerance is 1%


def test_center_index_is_the_point_nearest_the_origin():
    assert analysis.center_index(x, y) == (5, 10)
    assert analysis.center_index(np.array([-1.0, -0.2, 0.6]), np.array([0.3, 0.5])) == (0, 1)


def test_compare_names_the_rows_and_shares_one_level(tmp_path):
    doubled = {k: 2 * v if k.endswith("_loss") else v for k, v in fixtures.bowl(fixtures.X, fixtures.Y).items()}
    surfaces = [
        read_surface(fixtures.write_surface(tmp_path / "a.h5")),
        read_surface(fixtures.write_surface(tmp_path / "b.h5", doubled, arch="resnet56_noshort")),
        read_surface(fixtures.write_legacy(tmp_path / "paper.h5")),
    ]
    table = analysis.compare(surfaces)
    assert (table.metric, table.tolerance) == ("train_loss", 0.01)
    assert table.level == pytest.approx(2 * 0.2)  # twice the largest value at the center: 2 x 0.1 doubled
    assert [name for name, _ in table.rows] == ["resnet56 (a.h5)", "resnet56_noshort (b.h5)", "paper.h5"]
    assert [row.center for _, row in table.rows] == pytest.approx([0.1, 0.2, 0.1])
    expected = summarize(surfaces[1].values["train_loss"], fixtures.X, fixtures.Y, level=0.4)
    assert table.rows[1][1] == expected
    chosen = analysis.compare(surfaces[:1], "test_loss", level=1.0, tolerance=0.0)
    assert (chosen.level, chosen.tolerance, chosen.rows[0][1].center) == (1.0, 0.0, pytest.approx(0.2))


def test_compare_refuses_a_line_or_a_missing_metric(tmp_path):
    line = read_surface(fixtures.write_surface(tmp_path / "line.h5", fixtures.bowl(fixtures.X, np.zeros(1)), y=None))
    with pytest.raises(LandscapeError, match="line.h5 is a 1D surface: compare takes 2D ones"):
        analysis.compare([line])
    legacy = read_surface(fixtures.write_legacy(tmp_path / "paper.h5"))
    with pytest.raises(LandscapeError, match=r"\(it has train_acc, train_loss\)"):
        analysis.compare([legacy], "test_loss")
    x2, y2 = np.array([-1.0, 1.0]), np.array([-1.0, 1.0])
    small = read_surface(fixtures.write_surface(tmp_path / "small.h5", fixtures.bowl(x2, y2), x=x2, y=y2))
    with pytest.raises(LandscapeError, match="small.h5 has 2x2 points: compare needs at least 3x3"):
        analysis.compare([small])  # a ValueError before (exit 1 with a traceback hint)


def test_compare_refuses_a_center_without_a_finite_value_and_a_level_that_is_not_a_number(tmp_path):
    """The default level is twice the largest value at θ*: a center not computed (or NaN) gave "below nan" and NaN
    numbers with exit 0."""
    computed = np.ones((len(fixtures.Y), len(fixtures.X)), dtype=bool)
    computed[1, 2] = False  # the point at (0, 0)
    partial = read_surface(fixtures.write_surface(tmp_path / "nocenter.h5", computed=computed))
    whole = read_surface(fixtures.write_surface(tmp_path / "whole.h5"))
    with pytest.raises(LandscapeError, match=r"nocenter.h5: its point nearest θ\* is not computed yet, and the def"):
        analysis.compare([whole, partial])  # it said "has no finite train_loss (nan)" of a point not computed
    values = fixtures.bowl(fixtures.X, fixtures.Y)
    values["train_loss"][1, 2] = np.nan
    diverged = read_surface(fixtures.write_surface(tmp_path / "nan.h5", values))
    with pytest.raises(LandscapeError, match=r"nan.h5: its point nearest θ\* has no finite train_loss \(nan\)"):
        analysis.compare([whole, diverged])
    assert analysis.compare([whole, partial], level=1.0).level == 1.0  # a level given: the rest is still compared
    with pytest.raises(LandscapeError, match="--level must be a finite number, got nan"):
        analysis.compare([whole], level=float("nan"))


def test_compare_refuses_a_grid_without_theta_star_and_an_accuracy(tmp_path):
    """An even grid on [-1, 1] has no point at θ*: its 'centre' was the loss at (0.33, 0.33), and the default level
    twice that; an accuracy's 'basin below twice the centre' covered everything."""
    even = np.linspace(-1.0, 1.0, 4)
    surface = read_surface(fixtures.write_surface(tmp_path / "even.h5", fixtures.bowl(even, even), x=even, y=even))
    with pytest.raises(LandscapeError, match=r"even.h5: θ\* is not a grid point \(the α value nearest 0 is -?0.3333\)"):
        analysis.compare([surface])
    odd = read_surface(fixtures.write_surface(tmp_path / "odd.h5"))
    with pytest.raises(LandscapeError, match="train_acc is an accuracy, use train_loss"):
        analysis.compare([odd], "train_acc")
    assert analysis.compare([odd], "test_loss").rows[0][1].center == pytest.approx(0.2)


def test_compare_reads_only_computed_points_and_areas_are_positive(tmp_path):
    """Values stored where `computed` is 0 (a kill between the values and the mask, or a crafted file) were measured:
    minimum 0.0; a legacy file whose x runs from +1 to -1 had a negative basin area."""
    import h5py

    computed = np.ones((len(fixtures.Y), len(fixtures.X)), dtype=bool)
    computed[:, 4:] = False
    path = fixtures.write_surface(tmp_path / "part.h5", computed=computed)
    with h5py.File(path, "r+", locking=False) as f:
        f["train_loss"][:, 4:] = 0.0  # not marked computed: not a result
    ((_, row),) = analysis.compare([read_surface(path)]).rows
    assert row.minimum == pytest.approx(0.1)
    increasing = read_surface(fixtures.write_legacy(tmp_path / "up.h5"))
    decreasing = read_surface(fixtures.write_legacy(tmp_path / "down.h5", x=fixtures.X[::-1]))
    up, down = (analysis.compare([s]).rows[0][1] for s in (increasing, decreasing))
    assert down.basin_area == pytest.approx(up.basin_area) and up.basin_area > 0


def test_compare_json_is_strict_json_and_the_table_keeps_a_crafted_name_in_its_cell(tmp_path):
    """`"nonconvex_fraction": NaN` is not JSON; an arch holding a newline and '|' forged a row of the table."""
    import json

    from typer.testing import CliRunner

    from landscape.cli import app

    computed = np.zeros((len(fixtures.Y), len(fixtures.X)), dtype=bool)
    computed[1] = True  # the centre row only: no inner point for the curvature
    row = fixtures.write_surface(tmp_path / "row.h5", computed=computed)
    forged = fixtures.write_surface(tmp_path / "forged.h5", arch="x\n| resnet56 (good.h5) | 0.001 | |")
    result = CliRunner().invoke(app, ["compare", str(row), str(forged), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "c.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert record["surfaces"][0]["nonconvex_fraction"] is None and record["surfaces"][0]["center"] == 0.1
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and rows[2].startswith(r"| 'x\n\| resnet56 (good.h5) \| 0.001 \| \| (forged.h5)' | 0.1 |")


def test_a_default_level_beyond_float64_is_refused(tmp_path):
    """A centre loss of 1.5e308: twice it is inf, and --json failed after the table with a ValueError."""
    values = fixtures.bowl(fixtures.X, fixtures.Y)
    values["train_loss"] = np.full_like(values["train_loss"], 1.5e308)
    surface = read_surface(fixtures.write_surface(tmp_path / "huge.h5", values))
    with pytest.raises(LandscapeError, match="the default level, twice the largest centre train_loss, is inf: pass"):
        analysis.compare([surface])
