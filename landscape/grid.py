"""The grid of coefficients (α, β) at which the surface is evaluated."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import LandscapeError

# The most points a grid may have: a 1001x1001 surface is days of work even on a GPU, and every reader
# allocates arrays of this size, so larger grids are refused before anything is allocated.
MAX_POINTS = 1_002_001


@dataclass(frozen=True)
class Axis:
    """`num` evenly spaced coefficients from `start` to `stop`, both included."""

    start: float
    stop: float
    num: int

    @classmethod
    def parse(cls, text: str) -> Axis:
        """Parse `START:STOP:NUM`, e.g. `-1:1:51`."""
        parts = text.split(":")
        hint = "expected START:STOP:NUM with START < STOP and NUM >= 2 (or START:START:1), e.g. -1:1:51"
        if len(parts) != 3:
            raise LandscapeError(f"malformed grid axis '{text}': {hint}")
        try:
            start, stop, num_f = float(parts[0]), float(parts[1]), float(parts[2])
        except ValueError:
            raise LandscapeError(f"malformed grid axis '{text}': {hint}") from None
        if not all(math.isfinite(v) for v in (start, stop, num_f)) or num_f != int(num_f):
            raise LandscapeError(f"malformed grid axis '{text}': {hint}")
        axis = cls(start, stop, int(num_f))
        axis.validate(text)
        return axis

    def validate(self, text: str | None = None) -> None:
        label = text or f"{self.start}:{self.stop}:{self.num}"
        if self.num < 1:
            raise LandscapeError(f"grid axis '{label}' has {self.num} points: NUM must be at least 1")
        if self.num > MAX_POINTS:
            raise LandscapeError(f"grid axis '{label}' has {self.num} points: at most {MAX_POINTS} are allowed")
        if self.num == 1 and self.start != self.stop:
            raise LandscapeError(f"grid axis '{label}' has one point but START != STOP: use e.g. 0:0:1")
        if not (math.isfinite(self.start) and math.isfinite(self.stop)):
            raise LandscapeError(f"grid axis '{label}': START and STOP must be finite numbers")
        if self.num > 1 and not self.start < self.stop:
            raise LandscapeError(f"grid axis '{label}' must increase: START < STOP")
        if not math.isfinite(self.stop - self.start):  # linspace of -1e308:1e308 starts with NaN
            raise LandscapeError(f"grid axis '{label}': STOP - START overflows a float64")
        if self.num > 1 and not np.all(np.diff(self.coordinates()) > 0):  # e.g. 0:1e-322:1000
            raise LandscapeError(f"grid axis '{label}' is too fine: its points are not distinct float64 numbers")

    def coordinates(self) -> np.ndarray:
        return np.linspace(self.start, self.stop, self.num, dtype=np.float64)

    def __str__(self) -> str:
        return f"{self.start:g}:{self.stop:g}:{self.num}"


@dataclass(frozen=True)
class GridSpec:
    """A 1D grid (`y` is None) or a 2D grid; results are stored with shape (ny, nx), [j, i] = f(x[i], y[j])."""

    x: Axis
    y: Axis | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.x.num,) if self.y is None else (self.y.num, self.x.num)

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    def coefficients(self) -> np.ndarray:
        """(number of points, ndim) array of (α[, β]) in storage order (row-major over `shape`)."""
        if self.y is None:
            return self.x.coordinates()[:, None]
        yy, xx = np.meshgrid(self.y.coordinates(), self.x.coordinates(), indexing="ij")
        return np.stack([xx.ravel(), yy.ravel()], axis=1)

    def validate(self) -> None:
        self.x.validate()
        if self.y is not None:
            self.y.validate()
            if self.x.num * self.y.num > MAX_POINTS:
                raise LandscapeError(
                    f"the grid has {self.x.num} x {self.y.num} = {self.x.num * self.y.num} points: "
                    f"at most {MAX_POINTS} (1001 x 1001) are allowed"
                )
