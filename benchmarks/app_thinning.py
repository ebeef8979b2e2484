"""The app's figures of a large noisy grid, whole and thinned for display (`plots.thin`), side by side.

    python benchmarks/app_thinning.py [--points 1001] [--kinds surface,contour,heatmap]

Builds a noisy N x N surface in memory (a bowl plus uniform noise, so that contour lines are many and short),
then for each figure kind the app draws (3D view, contour lines, heat map) times `plots.figure` plus its JSON (what
the page sends to the browser) on the whole grid and on `plots.thin`'s, and prints seconds and megabytes of each.
One process, the whole grid first, after an untimed warm-up that builds one small figure of each kind (imports,
first calls): run it with the training paused (`kill -STOP`), and record the CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from landscape.hardware import describe
from landscape.plots import PlotOptions, figure, thin
from landscape.storage import Surface


def noisy_surface(points: int) -> Surface:
    axis = np.linspace(-1.0, 1.0, points)
    a, b = np.meshgrid(axis, axis)
    rng = np.random.default_rng(0)
    loss = a**2 + b**2 + 0.05 * rng.random((points, points))
    values = {"train_loss": loss, "train_acc": 100.0 - 10.0 * loss}
    return Surface(
        "noisy.h5", {"legacy": True}, axis, axis.copy(), values, np.ones((points, points), dtype=bool), legacy=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1001)
    parser.add_argument("--kinds", default="surface,contour,heatmap")
    args = parser.parse_args()
    whole = noisy_surface(args.points)
    options = PlotOptions(metric="train_loss")
    print(f"{args.points} x {args.points} noisy grid on {describe(torch.device('cpu'))}")
    small = noisy_surface(11)
    for kind in args.kinds.split(","):  # warm-up, untimed: the first call of each kind pays imports and set-up
        figure(small, kind, options).to_json()
    for label, surface in (("whole", whole), ("thinned", thin(whole))):
        assert surface.ycoordinates is not None
        size = f"{len(surface.xcoordinates)} x {len(surface.ycoordinates)}"
        total_s, total_mb = 0.0, 0.0
        for kind in args.kinds.split(","):
            started = time.perf_counter()
            text = figure(surface, kind, options).to_json()
            seconds = time.perf_counter() - started
            total_s, total_mb = total_s + seconds, total_mb + len(text) / 1e6
            print(f"  {label:8s} {size:12s} {kind:8s} {seconds:7.2f} s {len(text) / 1e6:8.1f} MB", flush=True)
        print(f"  {label:8s} {size:12s} {'all':8s} {total_s:7.2f} s {total_mb:8.1f} MB", flush=True)


if __name__ == "__main__":
    main()
