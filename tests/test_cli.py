"""The command line: a surface from a checkpoint, bad input as one line and a non-zero exit, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TEST_IMAGES, TRAIN_PER_BATCH
from typer.testing import CliRunner

from landscape import read_surface
from landscape.cli import app
from landscape.data import subset_indices
from landscape.storage import read_indices

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env or {"LANDSCAPE_DATA_ROOT": ""})


def test_compute_and_info(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "s.h5"
    result = invoke(
        "compute",
        "--ckpt",
        resnet20_ckpt,
        "--x",
        "-1:1:3",
        "--y",
        "-1:1:3",
        "--subset",
        10,
        "--data-root",
        cifar_root,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert f"{out}: 9/9 points computed" in result.stdout
    info = invoke("info", out, "--json")
    assert info.exit_code == 0
    assert "resnet20" in info.stdout and "completion  100.0%" in info.stdout and '"format' not in info.stdout
    models = invoke("models")
    assert "resnet56_noshort" in models.stdout and "torchvision:NAME" in models.stdout


def test_a_disjoint_part_of_the_images(tmp_path, cifar_root, resnet20_ckpt):
    indices = []
    for part in (0, 1):
        out = tmp_path / f"part{part}.h5"
        args = ["--x", "0:0:1", "--subset", 6, "--data-root", cifar_root, "--data-part", part, "--out", out]
        result = invoke("compute", "--ckpt", resnet20_ckpt, *args)
        assert result.exit_code == 0, result.output
        indices.append(read_indices(out)["train"])
        assert read_surface(out).surface_spec.data.part == part
    assert len(indices[0]) == len(indices[1]) == 6 and not set(indices[0]) & set(indices[1])
    np.testing.assert_array_equal(indices[0], subset_indices(5 * TRAIN_PER_BATCH, 6, 0, "train"))


def test_a_subset_above_the_split_size_is_said_and_info_shows_the_images_evaluated(tmp_path, cifar_root, resnet20_ckpt):
    """--subset 1000 of 60 training images evaluated all 60 silently, and `info` said 1000."""
    out = tmp_path / "big.h5"
    args = ["--x", "0:0:1", "--subset", 1000, "--split", "both", "--data-root", cifar_root, "--out", out]
    result = invoke("compute", "--ckpt", resnet20_ckpt, *args)
    assert result.exit_code == 0, result.output
    train, test = 5 * TRAIN_PER_BATCH, TEST_IMAGES
    assert f"--subset 1000: the train split has {train} images, all are evaluated" in result.stderr
    assert f"--subset 1000: the test split has {test} images, all are evaluated" in result.stderr
    assert read_surface(out).images == {"train": train, "test": test}
    info = invoke("info", out)
    assert f"train {train}, test {test} images (--subset 1000 asked; seed 0)" in info.stdout


def test_a_file_from_before_a_new_setting_resumes(tmp_path, cifar_root, resnet20_ckpt):
    """A file written before `data.part` existed (its spec lacks the field) was computed with its default: rerunning
    the same command resumes it instead of calling it a different surface."""
    out = tmp_path / "old.h5"
    args = ["compute", "--ckpt", resnet20_ckpt, "--x", "-1:1:3", "--subset", 4, "--data-root", cifar_root]
    assert invoke(*args, "--out", out).exit_code == 0
    with h5py.File(out, "r+") as f:
        spec = json.loads(f.attrs["spec"])
        del spec["data"]["part"]
        f.attrs["spec"] = json.dumps(spec)
    result = invoke(*args, "--out", out)
    assert result.exit_code == 0 and "holds a different surface" not in result.output, result.output
    result = invoke(*args[:-4], "--subset", 4, "--data-root", cifar_root, "--data-part", 1, "--out", out)
    assert result.exit_code == 2 and "data.part (1 here, 0 in the file)" in result.output


def test_a_file_recording_settings_without_effect_resumes(tmp_path, cifar_root, resnet20_ckpt):
    """Earlier versions recorded a CIFAR --image-size and --bn-images under --bn eval (both without effect); once
    they were refused, such a file could be resumed neither with them nor without them."""
    out = tmp_path / "old.h5"
    args = ["compute", "--ckpt", resnet20_ckpt, "--x", "-1:1:3", "--subset", 4, "--data-root", cifar_root]
    assert invoke(*args, "--out", out).exit_code == 0
    with h5py.File(out, "r+") as f:
        spec = json.loads(f.attrs["spec"])
        spec["data"]["image_size"] = 32
        spec["evaluation"]["bn_images"] = 500
        f.attrs["spec"] = json.dumps(spec)
        f["computed"][1] = 0
    result = invoke(*args, "--out", out)
    assert result.exit_code == 0 and "3/3 points computed" in result.output, result.output


def test_data_root_from_environment(tmp_path, cifar_root, resnet20_ckpt):
    result = invoke(
        "compute",
        "--ckpt",
        resnet20_ckpt,
        "--x",
        "0:0:1",
        "--subset",
        4,
        "--out",
        tmp_path / "e.h5",
        env={"LANDSCAPE_DATA_ROOT": str(cifar_root)},
    )
    assert result.exit_code == 0, result.output


@pytest.fixture
def bad_inputs(tmp_path, cifar_root, resnet20_ckpt):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not a surface")
    other = tmp_path / "other.h5"
    assert (
        invoke(
            "compute",
            "--ckpt",
            resnet20_ckpt,
            "--x",
            "-1:1:3",
            "--subset",
            4,
            "--data-root",
            cifar_root,
            "--out",
            other,
        ).exit_code
        == 0
    )
    ok = ["--ckpt", resnet20_ckpt, "--x", "-1:1:5", "--subset", 4, "--data-root", cifar_root]
    return {
        "missing checkpoint": (["--ckpt", tmp_path / "nope.pt", "--out", tmp_path / "o.h5"], "checkpoint not found"),
        "corrupt checkpoint": (["--ckpt", junk, "--out", tmp_path / "o.h5"], "cannot read checkpoint"),
        "arch that does not fit": (
            ok + ["--arch", "resnet20_noshort", "--out", tmp_path / "o.h5"],
            "does not fit arch 'resnet20_noshort'",
        ),
        "unknown arch": (ok + ["--arch", "resnet21", "--out", tmp_path / "o.h5"], "unknown model 'resnet21'"),
        "grid without count": (ok + ["--y", "-1:1", "--out", tmp_path / "o.h5"], "malformed grid axis '-1:1'"),
        "decreasing grid": (ok + ["--y", "1:-1:5", "--out", tmp_path / "o.h5"], "must increase"),
        "zero points": (ok + ["--y", "-1:1:0", "--out", tmp_path / "o.h5"], "has 0 points"),
        "empty data root": (ok[:-2] + ["--data-root", empty, "--out", tmp_path / "o.h5"], "no cifar10 under"),
        "missing data root": (
            ok[:-2] + ["--data-root", tmp_path / "nodata", "--out", tmp_path / "o.h5"],
            "does not exist",
        ),
        "no data root": (ok[:-2] + ["--out", tmp_path / "o.h5"], "no data root"),
        "unwritable output": (ok + ["--out", text / "o.h5"], "cannot write"),
        "output is another file": (ok + ["--out", text], "not a landscape surface file"),
        "surface of another run": (ok + ["--out", other], "holds a different surface"),
        "bad precision": (ok + ["--precision", "fp8", "--out", tmp_path / "o.h5"], "unknown precision 'fp8'"),
        "y direction without y axis": (
            ok + ["--ydir-file", other, "--out", tmp_path / "o.h5"],
            "--ydir-file needs a 2D grid: give --y",
        ),
        "checkpoint is a folder": (["--ckpt", empty, "--out", tmp_path / "o.h5"], f"checkpoint {empty} is a folder"),
        "output is a folder": (  # it said "--overwrite: replacing ..." first, then failed
            ok + ["--out", empty, "--overwrite"],
            f"cannot write {empty}: it is a folder",
        ),
        "negative data seed": (ok + ["--data-seed", "-1", "--out", tmp_path / "o.h5"], "--data-seed must be 0 to"),
        # given, yet without effect: accepted in silence
        "data seed without subset": (
            ["--ckpt", resnet20_ckpt, "--data-seed", "5", "--out", tmp_path / "o.h5"],
            "--data-seed goes with --subset or --bn recompute",
        ),
        "pca options without trajectory": (
            ok + ["--no-pca-center", "--out", tmp_path / "o.h5"],
            "--no-pca-center and --trajectory-margin go with --trajectory",
        ),
        "margin without trajectory": (
            ok + ["--trajectory-margin", "-5", "--out", tmp_path / "o.h5"],
            "--no-pca-center and --trajectory-margin go with --trajectory",
        ),
        "seed beyond 64 bits": (
            ok + ["--seed", str(2**64), "--out", tmp_path / "o.h5"],
            f"--seed must be 0 to {2**63 - 2} (y takes seed + 1), got {2**64}",
        ),
        # options of random directions that no direction would use were dropped without a word
        "ynorm without y axis": (
            ok + ["--ynorm", "layer", "--out", tmp_path / "o.h5"],
            "--ynorm sets the y direction, and there is none: give --y for a 2D grid",
        ),
        "xnorm of a target": (
            ok + ["--xtarget", resnet20_ckpt, "--xnorm", "layer", "--out", tmp_path / "o.h5"],
            "--xnorm sets random directions, and no direction here is random: the direction of a target",
        ),
        "seed of a direction file": (
            ok + ["--xdir-file", other, "--seed", "3", "--out", tmp_path / "o.h5"],
            "--seed sets random directions, and no direction here is random",
        ),
        "yignore of a trajectory": (
            ok[:2]
            + ["--trajectory", other, "--yignore", "none", "--data-root", cifar_root, "--out", tmp_path / "o.h5"],
            "--yignore sets random directions, and no direction here is random: the PCA directions of --trajectory "
            "are used as they are (--xignore applies to both)",
        ),
        # recorded in the spec yet without effect (a resume without them was refused), or replaced without a word
        "bn images with bn eval": (
            ok + ["--bn-images", "64", "--out", tmp_path / "o.h5"],
            "--bn-images goes with --bn recompute",
        ),
        "image size with cifar": (
            ok + ["--image-size", "64", "--out", tmp_path / "o.h5"],
            "--image-size is for --dataset imagefolder: cifar10 images are 32x32",
        ),
        "zero classes": (ok + ["--num-classes", "0", "--out", tmp_path / "o.h5"], "--num-classes must be a positive"),
        "negative classes": (ok + ["--num-classes", "-1", "--out", tmp_path / "o.h5"], "--num-classes must be"),
        "meta device": (ok + ["--device", "meta", "--out", tmp_path / "o.h5"], "device 'meta' is not supported"),
    }


CASES = [
    "missing checkpoint",
    "corrupt checkpoint",
    "arch that does not fit",
    "unknown arch",
    "grid without count",
    "decreasing grid",
    "zero points",
    "empty data root",
    "missing data root",
    "no data root",
    "unwritable output",
    "output is another file",
    "surface of another run",
    "bad precision",
    "y direction without y axis",
    "checkpoint is a folder",
    "output is a folder",
    "negative data seed",
    "seed beyond 64 bits",
    "ynorm without y axis",
    "xnorm of a target",
    "seed of a direction file",
    "yignore of a trajectory",
    "bn images with bn eval",
    "image size with cifar",
    "zero classes",
    "negative classes",
    "meta device",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_line_and_non_zero_exit(bad_inputs, case, tmp_path):
    args, message = bad_inputs[case]
    other_before = (tmp_path / "other.h5").read_bytes()
    result = invoke("compute", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.h5").exists()
    assert (tmp_path / "other.h5").read_bytes() == other_before  # nothing overwritten


def test_debug_shows_the_exception(tmp_path):
    result = invoke("compute", "--ckpt", tmp_path / "nope.pt", "--out", tmp_path / "o.h5", "--debug")
    assert result.exit_code != 0 and type(result.exception).__name__ == "LandscapeError"
    result = invoke("info", tmp_path / "none.h5", "--debug")
    assert type(result.exception).__name__ == "LandscapeError" and "no such file" in str(result.exception)


@pytest.mark.parametrize("command", ["compute", "info", "models", "train", "compare", "plot", "export", "app", "demo"])
def test_every_command_has_the_debug_option(command):
    """`friendly` adds it: the commands do not declare it."""
    import typer

    (debug,) = [p for p in typer.main.get_command(app).commands[command].params if p.name == "debug"]
    assert debug.opts == ["--debug"] and debug.default is False and debug.is_flag
    assert "--debug" in invoke(command, "--help").stdout


def test_help_shows_every_option_whole_at_80_columns():
    """rich's option table cut long names at 80 columns ('--trajectory-mar…'): click's plain help wraps instead."""
    import typer

    group = typer.main.get_command(app)
    overview = runner.invoke(app, ["--help"], terminal_width=80).stdout
    for name, command in group.commands.items():
        assert f"  {name}  " in overview
        text = runner.invoke(app, [name, "--help"], terminal_width=80).stdout
        assert "…" not in text and "╭" not in text, name
        words = set(text.replace(",", " ").split())
        for param in command.params:
            for option in [*param.opts, *param.secondary_opts]:
                assert option.startswith("-") is False or option in words, (name, option)
    assert "Fig. 7" in overview.split("convexity")[1]  # its first sentence is not cut at "Li et al."


def test_info_on_bad_files(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n broken")
    result = invoke("info", tmp_path / "bad.h5")
    assert result.exit_code == 2 and result.stderr.startswith("error: cannot open")
    result = invoke("info", tmp_path / "none.h5")
    assert result.exit_code == 2 and "no such file" in result.stderr
    result = invoke("info", tmp_path)  # HDF5's message of several lines before
    assert result.exit_code == 2 and result.stderr == f"error: {tmp_path} is a folder, not a surface file\n"


def test_train_refuses_resume_with_overwrite(tmp_path):
    """Both given: --overwrite won and the run started again from scratch, silently."""
    result = invoke("train", "--arch", "resnet20", "--out", tmp_path / "run", "--resume", "--overwrite")
    assert result.exit_code == 2 and "--resume and --overwrite" in result.stderr


def computed_count(path):
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f["computed"][()].sum())
    except (OSError, KeyError):
        return 0


def test_killed_run_keeps_finished_points_and_resumes(tmp_path, cifar_root, resnet20_ckpt):
    """SIGKILL in the middle of a run: the file stays readable, finished points stay, a rerun completes it."""
    args = [
        sys.executable,
        "-m",
        "landscape.cli",
        "compute",
        "--ckpt",
        str(resnet20_ckpt),
        "--x",
        "-1:1:6",
        "--y",
        "-1:1:6",
        "--data-root",
        str(cifar_root),
        "--split",
        "both",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "k.h5"
    proc = subprocess.Popen(args + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while computed_count(out) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survived = computed_count(out)
    assert 3 <= survived < 36, "the run finished before it could be killed: make the grid larger"
    with h5py.File(out, "r") as f:
        kept = f["train_loss"][()][f["computed"][()].astype(bool)]
    assert np.isfinite(kept).all()
    subprocess.run(args + ["--out", str(out)], env=env, check=True, capture_output=True)
    subprocess.run(args + ["--out", str(tmp_path / "ref.h5")], env=env, check=True, capture_output=True)
    with h5py.File(out, "r") as a, h5py.File(tmp_path / "ref.h5", "r") as b:
        for name in ("train_loss", "train_acc", "test_loss", "test_acc", "computed"):
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)


def test_compare_prints_shape_numbers(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "c.h5"
    assert (
        invoke(
            "compute",
            "--ckpt",
            resnet20_ckpt,
            "--x",
            "-1:1:3",
            "--y",
            "-1:1:3",
            "--subset",
            6,
            "--data-root",
            cifar_root,
            "--out",
            out,
        ).exit_code
        == 0
    )
    numbers = tmp_path / "numbers.json"
    result = invoke("compare", out, out, "--level", "1e9", "--json", numbers)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("| resnet20")]
    assert len(rows) == 2 and rows[0] == rows[1]
    assert "| 4 | 100.0% |" in rows[0]  # the whole [-1, 1]^2 grid is below 1e9: area 4, all points
    record = json.loads(numbers.read_text())  # the same numbers, unrounded, with their settings and files
    assert (record["metric"], record["level"], record["tolerance"]) == ("train_loss", 1e9, 0.01)
    assert [s["file"] for s in record["surfaces"]] == [str(out)] * 2
    first = record["surfaces"][0]
    assert (first["basin_area"], first["basin_fraction"], first["completion"]) == (4.0, 1.0, 1.0)
    assert first["name"] == rows[0].split(" | ")[0].lstrip("| ") and first["center"] == pytest.approx(
        float(rows[0].split(" | ")[1]), rel=1e-3
    )
    again = invoke("compare", out, "--json", numbers)
    assert again.exit_code == 2 and "exists: pass --overwrite" in again.stderr
    assert invoke("compare", out, "--json", numbers, "--overwrite").exit_code == 0
    line = tmp_path / "line.h5"
    assert (
        invoke(
            "compute", "--ckpt", resnet20_ckpt, "--x", "-1:1:3", "--subset", 6, "--data-root", cifar_root, "--out", line
        ).exit_code
        == 0
    )
    result = invoke("compare", line)
    assert result.exit_code == 2 and "is a 1D surface: compare takes 2D ones" in result.stderr
    result = invoke("compare", out, "--tolerance", "-0.1")
    assert result.exit_code == 2 and "--tolerance must be in [0, 1)" in result.stderr


def test_demo_computes_the_pair_and_writes_figures(tmp_path, cifar_root):
    import shutil

    import torch

    from landscape import create_model, save_checkpoint

    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for arch in ("resnet20", "resnet20_noshort"):
        torch.manual_seed(0)
        save_checkpoint(
            ckpts / f"{arch}.pt", create_model(arch), {"arch": arch, "num_classes": 10, "dataset": "cifar10"}
        )
    out = tmp_path / "demo"
    result = invoke(
        "demo",
        "--checkpoints",
        ckpts,
        "--pair",
        "resnet20",
        "--grid",
        3,
        "--subset",
        8,
        "--data-root",
        cifar_root,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert (out / "resnet20.h5").exists() and (out / "resnet20_noshort.h5").exists()
    assert result.stdout.count("| resnet20") == 2 and (out / "resnet20_surfaces.html").exists()
    if shutil.which("chromium"):  # named after the pair: `--pair resnet56` into the same folder replaced them
        assert (out / "resnet20_contours.pdf").read_bytes().startswith(b"%PDF")
    missing = invoke("demo", "--checkpoints", tmp_path / "none", "--data-root", cifar_root, "--out", out)
    assert missing.exit_code == 2 and "no checkpoint" in missing.stderr
    args = ["demo", "--checkpoints", ckpts, "--pair", "resnet20", "--subset", 8, "--data-root", cifar_root]
    other = invoke(*args, "--grid", 5, "--out", out)  # its advice, --overwrite, is an option of the demo too
    assert other.exit_code == 2 and "holds a different surface" in other.stderr and "--overwrite" in other.stderr
    assert invoke(*args, "--grid", 5, "--out", out, "--overwrite").exit_code == 0
    assert read_surface(out / "resnet20.h5").values["train_loss"].shape == (5, 5)
    small = invoke(*args, "--grid", 2, "--out", tmp_path / "small")  # compare needs 3x3: refused before computing
    assert small.exit_code == 2 and "--grid 2: the demo compares surfaces of an odd number" in small.stderr
    even = invoke(*args, "--grid", 4, "--out", tmp_path / "even")  # θ* would not be a grid point
    assert even.exit_code == 2 and "--grid 4: the demo compares surfaces of an odd number" in even.stderr
    assert not (tmp_path / "small").exists()


def test_demo_data_root_and_missing_checkpoints(tmp_path, monkeypatch):
    from landscape import LandscapeError
    from landscape.demo import DemoSettings, demo_data_root, run_demo

    monkeypatch.setenv("LANDSCAPE_DATA_ROOT", str(tmp_path / "env"))
    assert demo_data_root("given") == Path("given") and demo_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("LANDSCAPE_DATA_ROOT")
    assert demo_data_root(None) == Path("data")
    settings = DemoSettings(checkpoints=tmp_path, pair="resnet20", out=tmp_path / "out")
    assert settings.archs == ("resnet20", "resnet20_noshort")
    with pytest.raises(LandscapeError, match=f"no checkpoint {tmp_path / 'resnet20.pt'}"):
        run_demo(settings)
    assert not (tmp_path / "out").exists()  # nothing is made before the checkpoints are found
    lines: list[str] = []
    with pytest.raises(LandscapeError, match="^--subset must be a positive number of images, got 0$"):
        run_demo(DemoSettings(checkpoints=tmp_path, subset=0, out=tmp_path / "out"), notify=lines.append)
    assert lines == []  # "surface on 0 training images" was said first
    (tmp_path / "file").write_text("mine")
    with pytest.raises(LandscapeError, match=f"^--out {tmp_path / 'file'} is a file: the demo writes a folder"):
        run_demo(DemoSettings(checkpoints=tmp_path, out=tmp_path / "file"))  # a FileExistsError (exit 1)
    for bad, message in (  # they were refused only after --out and the data folder were made
        ({"precision": "fp64"}, "^--precision must be one of fp32, bf16, not 'fp64'$"),
        ({"device": "tpu"}, "device 'tpu'"),
        ({"grid": 2001}, "at most"),
    ):
        settings = DemoSettings(checkpoints=tmp_path, out=tmp_path / "new", data_root=str(tmp_path / "root"), **bad)
        with pytest.raises(LandscapeError, match=message):
            run_demo(settings)
        assert not (tmp_path / "new").exists() and not (tmp_path / "root").exists()


def test_bf16_where_it_is_not_native_warns_in_one_line(tmp_path, cifar_root, resnet20_ckpt, monkeypatch):
    from landscape import hardware

    args = ["compute", "--ckpt", resnet20_ckpt, "--x", "0:0:1", "--subset", 4, "--data-root", cifar_root]
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: False)
    result = invoke(*args, "--precision", "bf16", "--device", "cpu", "--out", tmp_path / "a.h5")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "bf16 is not native on this CPU" in warnings[0]
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: True)
    result = invoke(*args, "--precision", "bf16", "--device", "cpu", "--out", tmp_path / "b.h5")
    assert result.exit_code == 0 and "warning:" not in result.stderr


def test_train_download_fetches_before_training(tmp_path, monkeypatch):
    import landscape.data
    from landscape import LandscapeError

    def fetch(root, name):
        raise LandscapeError(f"fetching {name} into {root or '$LANDSCAPE_DATA_ROOT'}")

    monkeypatch.setattr(landscape.data, "fetch_cifar", fetch)
    result = invoke("train", "--arch", "resnet20", "--out", tmp_path / "run", "--epochs", "1", "--download")
    assert result.exit_code == 2 and "error: fetching cifar10 into $LANDSCAPE_DATA_ROOT" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--port", "99999"], "--port must be 1 to 65535, got 99999"),
        (["--port", "-1"], "--port must be 1 to 65535, got -1"),
        (["--address", "999.1.1.1"], "cannot serve on --address 999.1.1.1: "),
        (["--address", "192.0.2.1"], "cannot serve on --address 192.0.2.1: Cannot assign requested address"),
    ],
)
def test_app_refuses_a_port_or_address_it_cannot_serve_on(tmp_path, extra, message):
    """Streamlit's own error was a traceback of 50 lines (exit 1)."""
    pytest.importorskip("streamlit")
    result = invoke("app", "--results", tmp_path, *extra)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {message}") and len(result.stderr.strip().splitlines()) == 1


def test_app_says_a_results_file_is_not_a_folder(tmp_path):
    surface = tmp_path / "s.h5"
    surface.write_bytes(b"")
    result = invoke("app", "--results", surface)
    assert result.exit_code == 2 and result.stderr == f"error: results folder {surface} is a file\n"


def test_plot_and_export_of_a_partial_surface_warn(tmp_path):
    """compare warned of a surface not yet complete; plot and export drew and wrote its gaps without a word."""
    import numpy as np
    from surface_fixtures import X, Y, write_surface

    computed = np.zeros((len(Y), len(X)), dtype=bool)
    computed[:2] = True  # 10 of 15 points
    partial = write_surface(tmp_path / "partial.h5", computed=computed)
    warning = f"warning: {partial} is 66.7% complete: the points not computed yet are missing\n"
    plotted = invoke("plot", partial, "--out", tmp_path / "p.html")
    assert plotted.exit_code == 0 and plotted.stderr == warning, plotted.output
    exported = invoke("export", partial, "--csv")
    assert exported.exit_code == 0 and exported.stderr == warning, exported.output
    whole = write_surface(tmp_path / "whole.h5")
    assert invoke("export", whole, "--csv").stderr == ""


@pytest.mark.parametrize("command", ["plot", "app"])
def test_a_missing_figure_package_is_one_line(tmp_path, monkeypatch, command):
    """Without plotly, `plot` ended in a ModuleNotFoundError (exit 1), and the app started a server whose page
    failed: now one line naming the extra to install (the data exports need no plotly: tests/test_export.py)."""
    import importlib.util

    from surface_fixtures import write_surface

    surface = write_surface(tmp_path / "s.h5")
    monkeypatch.setitem(sys.modules, "plotly", None)  # `import plotly` fails as when it is not installed
    import landscape

    for module in ("plots", "export"):  # imported afresh without plotly; the package's attributes restored after
        monkeypatch.delitem(sys.modules, f"landscape.{module}", raising=False)
        if hasattr(landscape, module):
            monkeypatch.setattr(landscape, module, getattr(landscape, module))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else find_spec(name, *a))
    args = {"plot": ("plot", surface, "--out", tmp_path / "p.html")}
    result = invoke(*args.get(command, ("app", "--results", tmp_path)))
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {'the app' if command == 'app' else 'this command'} needs plotly: "
        "pip install -e '.[app]' (plotly, streamlit, kaleido)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_another_missing_module_is_still_one_line(tmp_path, monkeypatch):
    """A missing module that is not a figure package (a user's --arch code, say) got a traceback after the extra's
    message was added."""
    from surface_fixtures import write_surface

    surface = write_surface(tmp_path / "s.h5")
    monkeypatch.setitem(sys.modules, "landscape.plots", None)
    result = invoke("plot", surface, "--out", tmp_path / "p.html")
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: ModuleNotFoundError: ") and result.stderr.count("\n") == 1


def test_demo_figures_without_plotly_are_skipped_and_said(tmp_path):
    """plots imports plotly on first use: the demo's `except ImportError` around its imports no longer caught a
    missing plotly, and the demo died after computing its surfaces."""
    script = """
import sys
sys.modules["plotly"] = None  # not installed
from landscape.demo import _write_figures
print(_write_figures([], None, "resnet20"))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "((), ('figures skipped: pip install plotly kaleido (see docs/app.md)',))"
