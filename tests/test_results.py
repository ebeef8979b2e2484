"""How a surface is named (`results.describe`) and its typed spec (`Surface.surface_spec`): the same strings in
`landscape info`, the app and the figure titles, for files of this project and of the paper's code."""

import numpy as np
import pytest
from surface_fixtures import X, bowl, spec, write_legacy, write_surface
from typer.testing import CliRunner

from landscape import CheckpointSpec, DataSpec, DirectionSpec, EvalSpec, SurfaceSpec, read_surface
from landscape.cli import app
from landscape.plots import PlotOptions, compare_figure, figure
from landscape.results import COLUMNS, describe


def test_the_typed_spec_is_the_stored_one(tmp_path):
    surface = read_surface(write_surface(tmp_path / "s.h5"))
    typed = surface.surface_spec
    assert isinstance(typed, SurfaceSpec) and typed.to_dict() == {
        **spec(),
        "checkpoint": {**spec()["checkpoint"], "mean": (0.5,) * 3, "std": (0.25,) * 3},
        "data": {**spec()["data"], "part": 0},  # the fixture's spec predates `part`: read as its default
    }
    assert typed.checkpoint == CheckpointSpec(
        path="/ckpt/resnet56.pt",
        arch="resnet56",
        num_classes=10,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        sha256="0123456789abcdef" * 4,
    )
    assert typed.data == DataSpec(root="/data", split="both", subset=200)
    assert (typed.x, typed.y, typed.evaluation) == (DirectionSpec(seed=0), DirectionSpec(seed=1), EvalSpec())
    assert surface.spec["checkpoint"]["mean"] == [0.5] * 3  # the dict stays the stored JSON
    assert read_surface(write_legacy(tmp_path / "paper.h5")).surface_spec is None


def test_settings_are_keyword_only():
    with pytest.raises(TypeError):
        CheckpointSpec("a.pt")
    with pytest.raises(TypeError):
        PlotOptions("train_loss")


def test_describe_a_surface_of_this_project(tmp_path):
    computed = np.ones((3, 5), dtype=bool)
    computed[0, :2] = False
    d = describe(read_surface(write_surface(tmp_path / "bowl.h5", computed=computed)))
    assert (d.title, d.label, d.kind) == ("bowl", "resnet56 (bowl.h5)", "landscape surface")
    assert d.fields() == {
        "model": "resnet56 from /ckpt/resnet56.pt (sha256 0123456789ab)",
        "data": "cifar10 both, 200 images (seed 0)",
        "x direction": "random seed 0, norm filter, ignore biasbn (weights)",
        "y direction": "random seed 1, norm filter, ignore biasbn (weights)",
        "evaluation": "fp32, BatchNorm eval",
        "grid": "x -1..1 (5), y -0.5..0.5 (3)",
        "completion": "86.7% (13/15)",
    }
    assert d.columns() == {
        "model": "resnet56",
        "grid": "x -1..1 (5), y -0.5..0.5 (3)",
        "data": "cifar10 both, 200 images (seed 0)",
        "completion": "86.7% (13/15)",
    }
    assert tuple(d.columns()) == COLUMNS
    assert d.sessions is not None and d.sessions.startswith("1 recorded, the last started test")


def test_describe_a_line_and_a_file_of_the_paper(tmp_path):
    line = describe(read_surface(write_surface(tmp_path / "line.h5", bowl(X, np.zeros(1)), y=None)))
    assert line.grid == "x -1..1 (5)" and list(line.directions) == ["x"]
    paper = describe(read_surface(write_legacy(tmp_path / "paper.h5")))
    assert (paper.title, paper.label) == ("paper", "paper.h5")
    assert paper.kind == "surface file of the paper's original code (no spec recorded)"
    assert paper.fields() == {
        "model": "(paper's code: not recorded)",
        "data": "(not recorded)",
        "grid": "x -1..1 (5), y -0.5..0.5 (3)",
        "completion": "100.0% (15/15)",
    }
    assert paper.sessions is None


def test_info_and_figures_name_a_surface_as_describe_does(tmp_path):
    path = write_surface(tmp_path / "bowl.h5")
    d = describe(read_surface(path))
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: landscape surface"
    assert lines[1:8] == [f"  {label:<11} {value}" for label, value in d.fields().items()]
    assert lines[1] == "  model       resnet56 from /ckpt/resnet56.pt (sha256 0123456789ab)"
    assert lines[7] == "  completion  100.0% (15/15)" and lines[8].startswith("  sessions    1 recorded")
    surface = read_surface(path)
    assert figure(surface, "heatmap", PlotOptions()).data[0].name == "bowl"
    assert compare_figure([surface], "contour", PlotOptions()).layout.annotations[0].text == "bowl"
