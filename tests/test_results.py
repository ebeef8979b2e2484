"""How a surface is named (`results.describe`) and its typed spec (`Surface.surface_spec`): the same strings in
`landscape info`, the app and the figure titles, for files of this project and of the paper's code; and the
results folder itself: symbolic link loops, any failure to read as one error, and the rows of its files table
read again only when a file changes."""

import os
from pathlib import Path

import numpy as np
import pytest
from surface_fixtures import X, bowl, spec, write_legacy, write_surface
from typer.testing import CliRunner

from landscape import (
    CheckpointSpec,
    DataSpec,
    DirectionSpec,
    EvalSpec,
    LandscapeError,
    SurfaceSpec,
    read_surface,
    results,
)
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


def test_a_symbolic_link_loop_is_left_out_of_the_listing(tmp_path):
    write_surface(tmp_path / "good.h5")
    os.symlink(tmp_path / "b.h5", tmp_path / "a.h5")  # a.h5 -> b.h5 -> a.h5
    os.symlink(tmp_path / "a.h5", tmp_path / "b.h5")
    os.symlink("self.h5", tmp_path / "self.h5")
    assert results.list_files(tmp_path) == ["good.h5"]
    for name in ("a.h5", "self.h5"):
        with pytest.raises(LandscapeError, match="results folder"):
            results.load(tmp_path, name)
    good, loop = results.Summaries().rows(tmp_path, ["good.h5", "a.h5"])
    assert good["status"] == "ok" and "not a file name of the results folder" in loop["status"]


def test_a_second_listing_reads_no_unchanged_file(tmp_path, monkeypatch):
    """Rows of the files table are kept per file while its (mtime, size) stays, however many files there are."""
    for k in range(100):
        write_surface(tmp_path / f"s{k:03d}.h5")
    reads = []
    real = results.read_surface
    monkeypatch.setattr(results, "read_surface", lambda path: reads.append(Path(path).name) or real(path))
    names = results.list_files(tmp_path)
    summaries = results.Summaries()
    first = summaries.rows(tmp_path, names)
    assert len(reads) == 100 and [row["file"] for row in first] == names
    assert {row["status"] for row in first} == {"ok"} and first[0]["model"] == "resnet56"
    reads.clear()
    assert summaries.rows(tmp_path, names) == first and reads == []  # nothing read again
    computed = np.ones((3, 5), dtype=bool)
    computed[0] = False
    write_surface(tmp_path / "s007.h5", computed=computed)  # a file that changes is read again, alone
    rows = summaries.rows(tmp_path, names[:50])
    assert reads == ["s007.h5"] and rows[7]["completion"] == "66.7% (10/15)"
    assert len(summaries) == 50  # files that left the listing are forgotten


def test_an_unforeseen_failure_to_read_is_one_landscape_error(tmp_path, monkeypatch):
    write_surface(tmp_path / "s.h5")

    def damaged(path):
        raise RuntimeError("HDF5 said no\nand more")

    monkeypatch.setattr(results, "read_surface", damaged)
    with pytest.raises(LandscapeError, match=r"^s.h5 is not a readable surface file \(RuntimeError: HDF5 said no\)$"):
        results.load(tmp_path, "s.h5")


def test_names_the_page_could_not_show_are_left_out(tmp_path):
    write_surface(tmp_path / "good.h5")
    write_surface(tmp_path / "line\nbreak.h5")
    write_surface(Path(os.fsdecode(bytes(tmp_path) + b"/latin1-\xe9.h5")))  # not UTF-8
    assert results.list_files(tmp_path) == ["good.h5"]


def test_a_name_too_long_for_the_file_system_is_one_error(tmp_path):
    """`is_file` passes ENAMETOOLONG on: a `?file=` of 300 letters showed a traceback in the app."""
    from landscape.results import resolve

    with pytest.raises(LandscapeError, match="is not a file in the results folder"):
        resolve(tmp_path, "a" * 300)


def test_a_file_replaced_by_another_of_the_same_size_and_mtime_is_read_again(tmp_path):
    """`cp -p`, `rsync -t` and `tar x` set the mtime back: the stamp holds the ctime and inode too."""
    from landscape.results import Summaries

    write_surface(tmp_path / "a.h5", arch="resnet20")
    before = os.stat(tmp_path / "a.h5")
    summaries = Summaries()
    assert summaries.rows(tmp_path, ["a.h5"])[0]["model"] == "resnet20"
    write_surface(tmp_path / "b.h5", arch="resnet56")  # the same size: one name's length differs by nothing
    assert os.stat(tmp_path / "b.h5").st_size == before.st_size
    os.replace(tmp_path / "b.h5", tmp_path / "a.h5")
    os.utime(tmp_path / "a.h5", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert summaries.rows(tmp_path, ["a.h5"])[0]["model"] == "resnet56"
