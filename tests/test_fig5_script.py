"""docs/results/fig5/run.sh (the paper's Fig. 5 on the shipped checkpoints) runs end to end on a tiny grid and a
CIFAR-format fixture, and what it writes holds together: its fp32 rows equal the surface's rows exactly.
One pair (PAIRS=resnet20) keeps it to about 15 processes; the second pair runs the same lines of the script."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from landscape import read_surface

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("resnet20", "resnet20_noshort")


@pytest.mark.skipif(not shutil.which("chromium"), reason="the figures need a headless Chromium (CI installs it)")
def test_the_fig5_script_runs_and_its_rows_match_its_surfaces(tmp_path, cifar_root):
    out = tmp_path / "fig5"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "LANDSCAPE_DATA_ROOT": str(cifar_root),
        "GRID": "11",
        "IMAGES": "16",
        "PRECISION": "fp32",
        "OUT": str(out),
        "OMP_NUM_THREADS": "1",
        "PAIRS": "resnet20",
    }
    script = REPO / "docs" / "results" / "fig5" / "run.sh"
    result = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = (out / "numbers.txt").read_text()
    for arch in ARCHS:
        surface = read_surface(out / f"{arch}.h5")
        rows = read_surface(out / "rows" / f"{arch}.fp32.h5")
        other = read_surface(out / "rows" / f"{arch}.fp32.part1.h5")
        assert surface["train_loss"].shape == (11, 11) and rows["train_loss"].shape == (3, 11)
        assert np.isfinite(surface["train_loss"]).all()
        # β = -0.8, 0, 0.8 are rows 1, 5, 9 of the 11-point grid: the same directions and images give the same values
        np.testing.assert_array_equal(rows["train_loss"], surface["train_loss"][[1, 5, 9]])
        assert not np.array_equal(other["train_loss"], rows["train_loss"])  # other images, other values
        assert f"| {arch} ({arch}.h5) |" in numbers and f"| {arch} ({arch}.fp32.part1.h5) |" in numbers
    assert numbers.count("| 0.00% | 0.00% |") == 3 * len(ARCHS)  # the surfaces' rows against fp32: both fp32
    compared = json.loads((out / "compare.json").read_text())
    assert [Path(s["file"]).name for s in compared["surfaces"]] == [f"{arch}.h5" for arch in ARCHS]
    assert not list(out.glob("resnet56*"))  # only the pair asked for
    for kind in ("contours", "surfaces"):
        assert (out / f"resnet20_pair_{kind}.pdf").read_bytes().startswith(b"%PDF-")
        assert (out / f"resnet20_pair_{kind}.png").read_bytes().startswith(b"\x89PNG")
