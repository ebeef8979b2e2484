import numpy as np
import pytest

from landscape import Axis, GridSpec, LandscapeError


def test_parse_and_coordinates():
    axis = Axis.parse("-1:1:5")
    assert axis == Axis(-1.0, 1.0, 5)
    np.testing.assert_array_equal(axis.coordinates(), [-1, -0.5, 0, 0.5, 1])
    assert Axis.parse("0:0:1").coordinates().tolist() == [0.0]


@pytest.mark.parametrize("text", ["-1:1", "1:-1:5", "-1:1:0", "-1:1:1", "a:1:3", "-1:1:2.5", "0:inf:3", ""])
def test_malformed_axes_are_refused(text):
    with pytest.raises(LandscapeError, match="grid"):
        Axis.parse(text)


@pytest.mark.parametrize(
    "axis, message",
    [
        (Axis(-1e308, 1e308, 2), "STOP - START overflows a float64"),  # computed, then unreadable (NaN coordinate)
        (Axis(0.0, 1e-322, 1000), "too fine: its points are not distinct"),
        (Axis(float("nan"), 1.0, 3), "START and STOP must be finite"),  # a spec read from a file
    ],
)
def test_axes_whose_coordinates_are_not_distinct_numbers_are_refused(axis, message):
    with pytest.raises(LandscapeError, match=message):
        axis.validate()
    assert Axis(-1e307, 1e307, 3).coordinates()[1] == 0.0  # wide, but its extent is a number


def test_coefficients_are_row_major_over_y_then_x():
    grid = GridSpec(Axis.parse("0:2:3"), Axis.parse("10:11:2"))
    assert grid.shape == (2, 3)
    c = grid.coefficients()
    assert c.shape == (6, 2)
    # flat index j * nx + i holds (x[i], y[j])
    assert c[1 * 3 + 2].tolist() == [2.0, 11.0]
    assert GridSpec(Axis.parse("0:1:3")).coefficients().tolist() == [[0.0], [0.5], [1.0]]
