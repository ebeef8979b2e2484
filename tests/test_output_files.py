"""Output files (figures, tables, Hessian reports and eigenvectors): an existing file is replaced only with
--overwrite, an input never, and a failed write leaves the old file whole."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from surface_fixtures import write_surface
from torch import nn
from typer.testing import CliRunner

from landscape import LandscapeError
from landscape.cli import app
from landscape.curvature import HessianSpec, hessian_report
from landscape.data import ImageSet
from landscape.files import check_writable, write_file

runner = CliRunner()
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"LANDSCAPE_DATA_ROOT": ""})


def one_line_error(result, message):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "command, suffix",
    [
        (("export", "{surface}", "--table"), ".dat"),
        (("export", "{surface}", "--csv"), ".csv"),
        (("plot", "{surface}", "--kind", "heatmap", "--format", "html"), ".html"),
    ],
)
def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, command, suffix):
    surface = write_surface(tmp_path / "s.h5")
    out = tmp_path / f"edited{suffix}"
    out.write_bytes(b"edited by hand")
    args = [a.format(surface=surface) for a in command] + ["--out", out]
    one_line_error(invoke(*args), f"{out} exists: pass --overwrite")
    assert out.read_bytes() == b"edited by hand"
    result = invoke(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != b"edited by hand" and out.stat().st_size > 100
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_export_default_name_is_refused_when_it_exists(tmp_path):
    surface = write_surface(tmp_path / "s.h5")
    assert invoke("export", surface, "--csv").exit_code == 0
    first = (tmp_path / "s.csv").read_bytes()
    one_line_error(invoke("export", surface, "--csv"), "s.csv exists: pass --overwrite")
    assert (tmp_path / "s.csv").read_bytes() == first


def test_the_surface_file_is_never_an_output(tmp_path):
    surface = write_surface(tmp_path / "s.h5")
    before = surface.read_bytes()
    one_line_error(invoke("export", surface, "--table", "--out", surface, "--overwrite"), "is an input")
    link = tmp_path / "link.csv"
    link.symlink_to(surface)
    one_line_error(invoke("export", surface, "--csv", "--out", link, "--overwrite"), "is an input")
    assert surface.read_bytes() == before


def test_compute_never_writes_its_surface_over_an_input(tmp_path, cifar_root, resnet20_ckpt):
    """`--out` naming the checkpoint (or a direction file) with --overwrite replaced it with a surface."""
    checkpoint = tmp_path / "victim.pt"
    checkpoint.write_bytes(resnet20_ckpt.read_bytes())
    surface = write_surface(tmp_path / "s.h5")
    before = checkpoint.read_bytes(), surface.read_bytes()
    args = ("compute", "--ckpt", checkpoint, "--data-root", cifar_root, "--subset", 4, "--x", "-1:1:3", "--overwrite")
    one_line_error(invoke(*args, "--out", checkpoint), f"{checkpoint} is an input of this command")
    one_line_error(invoke(*args, "--out", tmp_path / "." / "victim.pt"), "is an input of this command")
    one_line_error(invoke(*args, "--xdir-file", surface, "--out", surface), f"{surface} is an input of this command")
    assert (checkpoint.read_bytes(), surface.read_bytes()) == before


def test_hessian_refuses_existing_outputs_before_computing(tmp_path, cifar_root, resnet20_ckpt):
    report, vectors = tmp_path / "h.json", tmp_path / "v.npz"
    args = ("hessian", "--ckpt", resnet20_ckpt, "--data-root", cifar_root, "--subset", 8, "--top-k", 1)
    report.write_text("a report of yesterday")
    one_line_error(invoke(*args, "--json", report), f"{report} exists: pass --overwrite")
    vectors.write_bytes(b"eigenvectors of yesterday")
    one_line_error(invoke(*args, "--eigenvectors", vectors), f"{vectors} exists: pass --overwrite")
    assert report.read_text() == "a report of yesterday" and vectors.read_bytes() == b"eigenvectors of yesterday"
    result = invoke(*args, "--tol", 1e-2, "--device", "cpu", "--json", report, "--eigenvectors", vectors, "--overwrite")
    assert result.exit_code == 0, result.output
    assert report.read_text().startswith("{") and vectors.read_bytes()[:2] == b"PK"


def test_a_failed_eigenvector_write_keeps_the_report(tmp_path, cifar_root, resnet20_ckpt, monkeypatch):
    """The eigenvectors were written before the report: a failed .npz write lost the printed and --json report."""
    report, vectors = tmp_path / "h.json", tmp_path / "v.npz"

    def full_disk(path, data, overwrite, inputs=()):
        if Path(path).suffix == ".npz":
            raise LandscapeError(f"cannot write {path}: no space left on the device")
        return write_file(path, data, overwrite, inputs)

    monkeypatch.setattr("landscape.curvature.write_file", full_disk)
    args = ("hessian", "--ckpt", resnet20_ckpt, "--data-root", cifar_root, "--subset", 8, "--top-k", 1, "--tol", 1e-2)
    result = invoke(*args, "--device", "cpu", "--json", report, "--eigenvectors", vectors)
    one_line_error(result, f"cannot write {vectors}: no space left on the device (the eigenvalues above were computed")
    assert "λ1" in result.stdout and f"wrote {report}" in result.stdout and f"wrote {vectors}" not in result.stdout
    assert len(json.loads(report.read_text())["eigenvalues"]) == 1 and not vectors.exists()


def test_hessian_report_refuses_to_replace_eigenvectors(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    g = torch.Generator().manual_seed(0)
    images = ImageSet(
        torch.randint(0, 256, (8, 3, 2, 2), dtype=torch.uint8, generator=g), torch.arange(8) % 3, np.arange(8)
    )
    path = tmp_path / "v.npz"
    path.write_bytes(b"kept")
    with pytest.raises(LandscapeError, match="exists: pass --overwrite"):
        hessian_report(model, images, MEAN, STD, HessianSpec(top_k=1), "cpu", eigenvectors=path)
    assert path.read_bytes() == b"kept"
    hessian_report(model, images, MEAN, STD, HessianSpec(top_k=1), "cpu", eigenvectors=path, overwrite=True)
    assert path.read_bytes()[:2] == b"PK"


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "figure.svg"
    target.write_bytes(b"old figure")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(LandscapeError, match=r"cannot write .*figure.svg: No space left on device"):
        write_file(target, b"new figure" * 1000, overwrite=True)
    assert target.read_bytes() == b"old figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.svg"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, a folder that takes no new file")
def test_a_folder_that_takes_no_file_is_found_before_the_work(tmp_path):
    """Only the folder's existence was checked: the write failed after the work (a Hessian run, minutes)."""
    with pytest.raises(LandscapeError, match=r"^cannot write /proc/report.json: No such file or directory$"):
        check_writable("/proc/report.json")
    assert check_writable(tmp_path / "new.json") == tmp_path / "new.json"
    assert list(tmp_path.iterdir()) == []  # the probe is gone


def test_check_writable_messages(tmp_path):
    with pytest.raises(LandscapeError, match="folder .*missing does not exist"):
        check_writable(tmp_path / "missing" / "f.pdf")
    with pytest.raises(LandscapeError, match="it is a folder"):
        check_writable(tmp_path, overwrite=True)
    assert check_writable(tmp_path / "new.pdf") == tmp_path / "new.pdf"


def test_a_planted_link_is_never_followed(tmp_path, monkeypatch):
    """The temporary name is not guessable from the pid, and even a link at the name it does get is not opened."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    out = tmp_path / "out"
    out.mkdir()
    for pid in range(os.getpid() - 5, os.getpid() + 5):  # the names the old code used
        (out / f".figure.svg.{pid}.partial").symlink_to(outside)
    write_file(out / "figure.svg", b"new figure")
    assert outside.read_bytes() == b"not yours"
    assert (out / "figure.svg").read_bytes() == b"new figure"

    import secrets

    monkeypatch.setattr(secrets, "token_hex", lambda n: "guessed")  # a link at the very name: refused, not followed
    (out / f".table.dat.{os.getpid()}.guessed.partial").symlink_to(outside)
    with pytest.raises(LandscapeError, match=r"cannot write .*table.dat: File exists"):
        write_file(out / "table.dat", b"rows")
    assert outside.read_bytes() == b"not yours" and not (out / "table.dat").exists()


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_file(tmp_path / "figure.svg", b"figure")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
