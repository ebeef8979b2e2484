"""The surface file under faults and attacks: a full disk, two writers, readers that lock, crafted HDF5 files.

Real files and real processes: a small tmpfs fills up for real (skipped where mounting is not allowed), two
`landscape compute` processes race for one file, a reader holds HDF5's own lock while the writer works.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from surface_fixtures import spec, write_legacy, write_surface
from typer.testing import CliRunner

from landscape import LandscapeError, read_surface
from landscape.cli import app
from landscape.grid import Axis, GridSpec
from landscape.storage import (
    RUN_SLOTS,
    add_curvature,
    append_run,
    is_surface_file,
    read_directions,
    read_indices,
    read_spec,
    write_points,
    writer_lock,
)

runner = CliRunner()


def compute_args(ckpt, root, out, seed=0, grid="-1:1:5"):
    return [
        "compute",
        "--ckpt",
        str(ckpt),
        "--x",
        grid,
        "--y",
        grid,
        "--data-root",
        str(root),
        "--subset",
        "8",
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "landscape.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=300,
    )


def arrays(path):
    with h5py.File(path, "r", locking=False) as f:
        return {n: f[n][()] for n in ("train_loss", "train_acc", "computed")}


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "8m", options: str = ""):
    where.mkdir()
    opts = f"size={size}" + (f",{options}" if options else "")
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(1 << 16))
            f.flush()
    with contextlib.suppress(OSError):  # the last bytes, below one block
        with open(folder / "filler2", "wb") as f:
            for _ in range(1 << 16):
                f.write(b"x")
                f.flush()
    return filler


def stop_after(n):
    def progress(done, total):
        if done >= n:
            raise KeyboardInterrupt

    return progress


# 1. A full disk while a file is resumed: the run stops, the file stays readable and complete after space is freed.


def test_full_disk_during_resumes_never_damages_the_file(tmp_path, cifar_root, resnet20_ckpt):
    with tmpfs(tmp_path / "small") as small:
        out = small / "s.h5"
        ref = tmp_path / "ref.h5"
        assert cli(*compute_args(resnet20_ckpt, cifar_root, ref)).returncode == 0
        args = compute_args(resnet20_ckpt, cifar_root, out)
        # a partial file, resumed (and interrupted) a few times: every resume records itself
        proc = subprocess.Popen(
            [sys.executable, "-m", "landscape.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        deadline = time.time() + 120
        while time.time() < deadline and (not out.exists() or arrays(out)["computed"].sum() < 3):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        size_before = out.stat().st_size
        filler = fill(small)
        for _ in range(3):  # resumes on a full disk: they compute in place, or fail in one line
            result = cli(*args)
            assert result.returncode in (0, 2), result.stderr
            assert result.returncode == 0 or (result.stderr.count("\n") == 1 and "no space" in result.stderr)
        assert out.stat().st_size == size_before  # nothing in the file grew
        surface = read_surface(out)  # readable while the disk is still full
        assert surface.completion == 1.0 and [r["n"] for r in surface.runs] == [0, 1]
        filler.unlink()
        assert cli(*args).returncode == 0
        for name, values in arrays(ref).items():
            np.testing.assert_array_equal(arrays(out)[name], values, err_msg=name)


def test_format_1_file_on_a_full_disk_is_refused_before_anything_is_written(tmp_path):
    with tmpfs(tmp_path / "small") as small:
        path = write_surface(small / "old.h5")
        with h5py.File(path, "r+", locking=False) as f:  # as format 1 stored it: runs in an attribute
            del f["runs"]
            f.attrs["format_version"] = 1
            f.attrs["runs"] = json.dumps([{"started": "before"}])
        before = path.read_bytes()
        fill(small)
        with pytest.raises(LandscapeError, match="cannot record this run in .* free on its disk"):
            append_run(path, {"started": "now"})
        assert path.read_bytes() == before
        assert read_surface(path).runs == [{"started": "before"}]


def test_runs_are_a_fixed_ring_that_never_grows(tmp_path):
    path = write_surface(tmp_path / "s.h5")
    size = path.stat().st_size
    for k in range(1, 101):
        append_run(path, {"started": f"resume {k}"})
    assert path.stat().st_size == size
    runs = read_surface(path).runs
    assert len(runs) == RUN_SLOTS
    assert runs[0] == {"n": 0, "started": "test"}  # the session that created the file is kept
    assert [r["n"] for r in runs[1:]] == list(range(101 - RUN_SLOTS + 1, 101))  # and the latest resumes


def test_unreadable_runs_never_hide_the_results(tmp_path):
    path = write_surface(tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f["runs"][3] = b"{not json"
    surface = read_surface(path)
    assert surface.runs == [] and "unreadable runs" in surface.runs_error
    assert surface.completion == 1.0 and np.isfinite(surface["train_loss"]).all()
    r = runner.invoke(app, ["info", str(path)])
    assert r.exit_code == 0 and "unreadable runs" in r.stdout


def test_a_no_op_resume_writes_nothing(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "s.h5"
    assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, out, grid="-1:1:2")).exit_code == 0
    before = out.read_bytes()
    for _ in range(3):
        assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, out, grid="-1:1:2")).exit_code == 0
    assert out.read_bytes() == before


# 2. Two writers on one file.


def test_two_runs_with_different_specs_on_one_file_never_mix(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "race.h5"
    refs = {}
    for seed in (0, 5):
        refs[seed] = tmp_path / f"ref{seed}.h5"
        assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, refs[seed], seed)).exit_code == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = {
        seed: subprocess.Popen(
            [sys.executable, "-m", "landscape.cli", *compute_args(resnet20_ckpt, cifar_root, out, seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for seed in (0, 5)
    }
    outcomes = {seed: (p.wait(timeout=300), p.stderr.read()) for seed, p in procs.items()}
    winners = [seed for seed, (code, _) in outcomes.items() if code == 0]
    assert len(winners) == 1, outcomes
    (loser,) = set(outcomes) - set(winners)
    code, stderr = outcomes[loser]
    assert code == 2 and stderr.count("\n") == 1
    assert "being written by another process" in stderr or "holds a different surface" in stderr
    assert read_surface(out).spec["x"]["seed"] == winners[0]
    for name, values in arrays(refs[winners[0]]).items():
        np.testing.assert_array_equal(arrays(out)[name], values, err_msg=name)


def test_a_second_writer_is_refused_at_once_and_the_lock_dies_with_its_process(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "s.h5"
    with writer_lock(out):  # this process writes: a second one is refused in one line
        result = cli(*compute_args(resnet20_ckpt, cifar_root, out))
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert f"{out} is being written by another process (pid {os.getpid()})" in result.stderr
        assert not out.exists()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from landscape.storage import writer_lock\n"
            f"with writer_lock({str(out)!r}):\n print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(LandscapeError, match="being written by another process"):
        with writer_lock(out):
            pass
    holder.kill()
    holder.wait()
    with writer_lock(out):  # released by the kernel with the killed process
        pass


def test_orphan_temporary_files_of_a_killed_creation_are_removed(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "s.h5"
    orphan = tmp_path / ".s.h5.999999.tmp"
    orphan.write_bytes(b"half a file")
    other = tmp_path / ".t.h5.999999.tmp"  # another file's: left alone
    other.write_bytes(b"x")
    longer = tmp_path / ".s.h5.b.h5.999999.tmp"  # the file being made by a run on --out s.h5.b.h5: left alone
    longer.write_bytes(b"y")
    assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, out, grid="-1:1:2")).exit_code == 0
    assert not orphan.exists() and other.exists() and longer.exists()


def test_an_interrupted_overwrite_says_how_to_resume_without_replacing_again(tmp_path, monkeypatch):
    """The advice 'run the same command again' would replace the file, and its finished points, once more."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("landscape.cli._run_compute", interrupted)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"")
    for extra, advice in (([], "run the same command again"), (["--overwrite"], "without --overwrite")):
        result = runner.invoke(app, ["compute", "--ckpt", str(ckpt), "--out", str(tmp_path / "s.h5"), *extra])
        assert result.exit_code == 130 and advice in result.stderr, result.stderr


# 6. A reader holding HDF5's own lock never stops the writer.


def test_a_reader_with_hdf5_locking_does_not_kill_the_writer(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        from landscape import DataSpec, DirectionSpec, compute_surface
        from landscape.spec import CheckpointSpec, SurfaceSpec

        compute_surface(
            SurfaceSpec(
                checkpoint=CheckpointSpec(path=str(resnet20_ckpt)),
                data=DataSpec(root=str(cifar_root), subset=8),
                grid=GridSpec(Axis.parse("-1:1:5"), Axis.parse("-1:1:5")),
                x=DirectionSpec(seed=0),
                y=DirectionSpec(seed=1),
            ),
            out,
            progress=stop_after(2),
        )
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import h5py, time\n"
            f"f = h5py.File({str(out)!r}, 'r')  # h5py's default: locking=True\n"
            "print('open', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        result = cli(*compute_args(resnet20_ckpt, cifar_root, out))
        assert result.returncode == 0, result.stderr
        assert read_surface(out).completion == 1.0
    finally:
        reader.kill()
        reader.wait()


# 4 and 7. Crafted files: nothing outside the file is read, nothing declared is allocated.


@pytest.fixture
def outside(tmp_path):
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(np.arange(15, dtype=np.float64).tobytes())
    return secret


def replace_dataset(path, name, make):
    with h5py.File(path, "r+", locking=False) as f:
        del f[name]
        make(f, name)


def test_external_raw_storage_is_never_read(tmp_path, outside):
    path = write_surface(tmp_path / "ext.h5")
    replace_dataset(
        path,
        "train_loss",
        lambda f, n: f.create_dataset(n, shape=(3, 5), dtype="f8", external=[(str(outside), 0, 15 * 8)]),
    )
    with pytest.raises(LandscapeError, match="'train_loss' keeps its data in an external file"):
        read_surface(path)


def test_external_links_are_never_followed(tmp_path, outside):
    foreign = tmp_path / "outside" / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.full((3, 5), 7.0)
    path = write_surface(tmp_path / "link.h5")
    replace_dataset(path, "train_loss", lambda f, n: f.__setitem__(n, h5py.ExternalLink(str(foreign), "data")))
    with pytest.raises(LandscapeError, match="'train_loss' is a ExternalLink, and links are never followed"):
        read_surface(path)
    replace_dataset(path, "train_loss", lambda f, n: f.__setitem__(n, h5py.SoftLink("/test_loss")))
    with pytest.raises(LandscapeError, match="is a SoftLink"):
        read_surface(path)


def test_virtual_datasets_are_never_read(tmp_path, outside):
    foreign = tmp_path / "outside" / "source.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.full((3, 5), 7.0)
    path = write_surface(tmp_path / "vds.h5")

    def virtual(f, name):
        layout = h5py.VirtualLayout(shape=(3, 5), dtype="f8")
        layout[:] = h5py.VirtualSource(str(foreign), "data", shape=(3, 5))
        f.create_virtual_dataset(name, layout)

    replace_dataset(path, "train_loss", virtual)
    with pytest.raises(LandscapeError, match="'train_loss' is a virtual dataset"):
        read_surface(path)


def test_the_app_folder_never_serves_an_outside_file(tmp_path, outside):
    from landscape import results

    root = tmp_path / "results"
    root.mkdir()
    path = write_surface(root / "ext.h5")
    replace_dataset(
        path,
        "train_loss",
        lambda f, n: f.create_dataset(n, shape=(3, 5), dtype="f8", external=[(str(outside), 0, 15 * 8)]),
    )
    with pytest.raises(LandscapeError, match="ext.h5: 'train_loss' keeps its data in an external file"):
        results.load(root, "ext.h5")


def test_declared_shapes_are_checked_before_anything_is_allocated(tmp_path):
    path = write_surface(tmp_path / "huge.h5")
    replace_dataset(
        path, "train_loss", lambda f, n: f.create_dataset(n, shape=(20000, 20000), dtype="f8", chunks=(100, 100))
    )
    with pytest.raises(LandscapeError, match="'train_loss' declares 400000000 values"):
        read_surface(path)
    path = write_surface(tmp_path / "coords.h5")
    replace_dataset(
        path, "xcoordinates", lambda f, n: f.create_dataset(n, shape=(3_000_000,), dtype="f8", chunks=(1000,))
    )
    with pytest.raises(LandscapeError, match="'xcoordinates' declares 3000000 values"):
        read_surface(path)


def test_attribute_sizes_are_checked_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr("landscape.storage.MAX_SPEC_BYTES", 1000)  # HDF5 headers hold 64 kB: a smaller limit here
    path = write_surface(tmp_path / "spec.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f.attrs.create("spec", np.zeros(3000, dtype=np.uint8))
    with pytest.raises(LandscapeError, match="its spec attribute declares 3000 bytes, more than 1000"):
        read_surface(path)


def test_grid_size_is_bounded_before_allocation(resnet20_ckpt):
    with pytest.raises(LandscapeError, match="100000 x 100000 = 10000000000 points: at most 1002001"):
        GridSpec(Axis.parse("-1:1:100000"), Axis.parse("-1:1:100000")).validate()
    with pytest.raises(LandscapeError, match="at most 1002001 are allowed"):
        Axis.parse("-1:1:2000000")
    r = runner.invoke(
        app, ["compute", "--ckpt", str(resnet20_ckpt), "--out", "x.h5", "--x", "-1:1:100000", "--y", "-1:1:100000"]
    )
    assert r.exit_code == 2 and "at most 1002001" in r.stderr
    r = runner.invoke(app, ["compute", "--ckpt", str(resnet20_ckpt), "--out", "x.h5", "--x", "-1:1:nan"])
    assert r.exit_code == 2 and "malformed grid axis '-1:1:nan'" in r.stderr


# 9. Damaged or foreign metadata: one line naming the file, exit status 2.


def damage(path, **attrs):
    with h5py.File(path, "r+", locking=False) as f:
        for key, value in attrs.items():
            f.attrs[key] = value


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"format_version": 99}, "has format version 99; this landscape reads 1 to 2"),
        ({"format_version": "two"}, "has a damaged format_version"),
        ({"spec": "{not json"}, "has a damaged spec attribute (not JSON)"),
        ({"spec": json.dumps({**spec(), "grid": 5})}, "has a damaged spec: spec.grid should be an object"),
        (
            {"spec": json.dumps({**spec(), "checkpoint": {**spec()["checkpoint"], "num_classes": "ten"}})},
            "spec.checkpoint.num_classes should be an integer",
        ),
    ],
)
@pytest.mark.parametrize("command", ["info", "plot", "export"])
def test_damaged_metadata_is_one_line_naming_the_file(tmp_path, attrs, message, command):
    path = write_surface(tmp_path / "bad.h5")
    damage(path, **attrs)
    extra = {
        "info": [],
        "plot": ["--out", str(tmp_path / "f.pdf")],
        "export": ["--csv", "--out", str(tmp_path / "f.csv")],
    }
    r = runner.invoke(app, [command, str(path), *extra[command]])
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and str(path) in r.stderr and message in r.stderr


def test_a_computed_mask_of_the_wrong_shape_is_never_resumed(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "s.h5"
    args = compute_args(resnet20_ckpt, cifar_root, out, grid="-1:1:3")
    with pytest.raises(KeyboardInterrupt):
        from landscape import DataSpec, DirectionSpec, compute_surface
        from landscape.spec import CheckpointSpec, SurfaceSpec

        compute_surface(
            SurfaceSpec(
                checkpoint=CheckpointSpec(path=str(resnet20_ckpt)),
                data=DataSpec(root=str(cifar_root), subset=8),
                grid=GridSpec(Axis.parse("-1:1:3"), Axis.parse("-1:1:3")),
                x=DirectionSpec(seed=0),
                y=DirectionSpec(seed=1),
            ),
            out,
            progress=stop_after(2),
        )
    replace_dataset(out, "computed", lambda f, n: f.create_dataset(n, data=np.zeros((9,), dtype=np.uint8)))
    before = arrays(out)["train_loss"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "is damaged: computed has shape (9,), the grid (3, 3)" in r.stderr
    np.testing.assert_array_equal(arrays(out)["train_loss"], before)


def test_read_only_folder_is_one_line_and_exit_2(tmp_path, cifar_root, resnet20_ckpt):
    with tmpfs(tmp_path / "ro", "1m", "ro") as folder:
        r = cli(*compute_args(resnet20_ckpt, cifar_root, folder / "s.h5"))
        assert r.returncode == 2 and r.stderr == f"error: cannot write {folder / 's.h5'}: read-only file system\n"


def test_info_into_a_closed_pipe_is_quiet(tmp_path):
    path = write_surface(tmp_path / "s.h5")
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `landscape info FILE | head -1` once head has exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "landscape.cli", "info", "--json", str(path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0 and result.stderr == ""


# 10. Declared data types: what a dataset's type makes the reader allocate is bounded too.

HUGE_STRING = "S134217728"  # 128 MiB a value: 15 of them read as 1.9 GiB, from a file of a few kB


def huge_strings(shape):
    """A dataset of 128 MiB strings that stores none of them (compressed chunks, never written)."""
    return lambda f, n: f.create_dataset(
        n, shape=shape, dtype=HUGE_STRING, chunks=(1,) * len(shape), compression="gzip"
    )


@contextlib.contextmanager
def allocation_at_most(limit):
    """Fails if the block makes Python or numpy allocate more than `limit` bytes at once."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"allocated {peak} bytes"


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("train_loss", huge_strings((3, 5)), f"is damaged: train_loss is |{HUGE_STRING}, not numbers"),
        ("computed", huge_strings((3, 5)), f"is damaged: computed is |{HUGE_STRING}, not numbers"),
        ("xcoordinates", huge_strings((5,)), f"is damaged: xcoordinates is |{HUGE_STRING}, not numbers"),
        (
            "train_loss",
            lambda f, n: f.create_dataset(n, data=np.full((3, 5), b"1.5")),
            "is damaged: train_loss is |S3",
        ),
        (
            "train_loss",
            lambda f, n: f.create_dataset(n, data=np.ones((3, 5), dtype=np.longdouble)),
            "is damaged: train_loss is float128, not numbers",
        ),
        (
            "train_loss",
            lambda f, n: f.create_dataset(n, data=np.ones((3, 5), dtype="c16")),
            "is damaged: train_loss is complex128, not numbers",
        ),
    ],
    ids=["huge-strings", "huge-strings-mask", "huge-strings-coordinates", "S3", "float128", "complex"],
)
def test_data_types_are_checked_before_anything_is_allocated(tmp_path, name, make, message):
    path = write_surface(tmp_path / "types.h5")
    replace_dataset(path, name, make)
    assert path.stat().st_size < 100_000
    with allocation_at_most(20 << 20), pytest.raises(LandscapeError) as error:
        read_surface(path)
    assert str(error.value).startswith(f"{path} ") and message in str(error.value)
    r = runner.invoke(app, ["info", str(path)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and message in r.stderr


def test_strings_are_read_only_where_the_format_has_them_and_no_longer(tmp_path):
    """`runs` is the one dataset of strings, S2048: a longer type is refused, and the results are still read."""
    path = write_surface(tmp_path / "runs.h5")
    replace_dataset(path, "runs", huge_strings((RUN_SLOTS,)))
    with allocation_at_most(20 << 20):
        surface = read_surface(path)
    assert surface.runs == [] and f"is damaged: runs is |{HUGE_STRING}" in surface.runs_error
    assert surface.completion == 1.0
    with (
        allocation_at_most(20 << 20),
        pytest.raises(LandscapeError, match=re.escape(f"is damaged: runs is |{HUGE_STRING}")),
    ):
        append_run(path, {"started": "resume"})


def test_legacy_files_get_the_same_type_checks(tmp_path):
    path = write_legacy(tmp_path / "legacy.h5")
    replace_dataset(path, "train_loss", huge_strings((5, 3)))
    with (
        allocation_at_most(20 << 20),
        pytest.raises(LandscapeError, match=re.escape(f"is damaged: train_loss is |{HUGE_STRING}")),
    ):
        read_surface(path)


# 11. Only the format's own metrics are read: (train|test)_(loss|acc); other datasets are ignored.


def test_only_the_metrics_of_the_format_are_read(tmp_path):
    path = write_surface(tmp_path / "extra.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f.create_dataset("evil_loss", shape=(20000, 20000), dtype="f8", chunks=(100, 100))
        huge_strings((3, 5))(f, "evil_acc")
        for k in range(100):
            f.create_dataset(f"more{k}_loss", shape=(1000, 1000), dtype="f8", chunks=(100, 100))
    with allocation_at_most(20 << 20):
        surface = read_surface(path)
    assert surface.metrics == ["test_acc", "test_loss", "train_acc", "train_loss"]
    write_points(path, np.array([0]), {name: np.array([1.0]) for name in surface.metrics})  # the writer agrees
    assert read_surface(path)["train_loss"][0, 0] == 1.0

    legacy = write_legacy(tmp_path / "legacy.h5")
    with h5py.File(legacy, "r+", locking=False) as f:
        f.create_dataset("evil_loss", shape=(20000, 20000), dtype="f8", chunks=(100, 100))
    with allocation_at_most(20 << 20):
        assert read_surface(legacy).metrics == ["train_acc", "train_loss"]


# 12. Damaged attributes and data: one LandscapeError naming the file, never a raw ValueError or TypeError.


def corrupt_a_chunk(path):
    """train_loss compressed, its one chunk's bytes overwritten: HDF5 cannot inflate it."""
    replace_dataset(path, "train_loss", lambda f, n: f.create_dataset(n, data=np.ones((3, 5)), compression="gzip"))
    with h5py.File(path, "r", locking=False) as f:
        info = f["train_loss"].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)


@pytest.mark.parametrize(
    "damage_file, message",
    [
        (lambda p: damage(p, format=np.array([b"landscape-surface", b"x"])), "its format attribute is not a string"),
        (lambda p: damage(p, format=np.array([1, 2])), "its format attribute is not a string"),
        (lambda p: damage(p, format=np.bytes_(b"\xff\xfe")), "its format attribute is not UTF-8 text"),
        (lambda p: damage(p, format_version=np.array([1, 2])), "has a damaged format_version"),
        (lambda p: damage(p, spec=np.bytes_(b"\xff{")), "spec attribute"),
        (corrupt_a_chunk, "cannot read"),
    ],
    ids=["format-strings", "format-numbers", "format-not-utf8", "format_version-array", "spec-not-utf8", "bad-chunk"],
)
def test_damaged_attributes_and_data_are_one_line_naming_the_file(tmp_path, damage_file, message):
    path = write_surface(tmp_path / "damaged.h5")
    damage_file(path)
    with pytest.raises(LandscapeError) as error:
        read_surface(path)
    assert str(path) in str(error.value) and message in str(error.value) and "\n" not in str(error.value)
    r = runner.invoke(app, ["info", str(path)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and str(path) in r.stderr and message in r.stderr


def test_a_damaged_format_attribute_is_not_a_surface_file(tmp_path):
    path = write_surface(tmp_path / "damaged.h5")
    damage(path, format=np.array([b"landscape-surface", b"x"]))
    assert is_surface_file(path) is False
    with pytest.raises(LandscapeError, match="its format attribute is not a string"):
        read_spec(path)


# 13. Durability: the bytes are on the disk before a rename makes them the file, and values before their mask.


@pytest.fixture
def synced(monkeypatch):
    """Records, in order, every os.fsync (as the path of its file or folder) and every rename."""
    events = []
    real_fsync, real_replace = os.fsync, Path.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(self, target):
        events.append(("rename", str(self), str(target)))
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    return events


def test_files_are_synced_before_they_are_renamed_into_place(tmp_path, synced):
    path = tmp_path / "s.h5"
    write_surface(path)  # create_surface_file, then one write_points
    tmp = tmp_path / f".s.h5.{os.getpid()}.tmp"
    assert synced == [
        ("fsync", str(tmp)),
        ("rename", str(tmp), str(path)),
        ("fsync", str(tmp_path)),
        ("fsync", str(path)),  # write_points: the values, before the mask marks them
    ]
    synced.clear()
    write_points(path, np.arange(6), {name: np.zeros(6) for name in read_surface(path).metrics})
    assert synced == [("fsync", str(path))]  # once per call, not once per point
    synced.clear()
    add_curvature(path, {"stride": 1}, np.arange(4), {"started": "convexity"})
    assert synced == [("fsync", str(tmp)), ("rename", str(tmp), str(path)), ("fsync", str(tmp_path))]


def test_only_the_index_sets_of_the_format_are_read_and_each_as_stored(tmp_path):
    """Hard links to one never-written (or compressed) dataset of 50 million indices: a file of a few KiB that
    allocated 400 MB per link when `read_indices` read every name in `indices/`."""
    path = write_surface(tmp_path / "links.h5")
    damage(path, spec=json.dumps({**spec(), "data": {**spec()["data"], "subset": None}}))  # all images: any count
    with h5py.File(path, "r+", locking=False) as f:
        f.create_dataset("indices/test", data=np.arange(7))
        for k in range(20):
            f["indices"].create_dataset(f"copy{k}", shape=(10_000_000,), dtype="<i8", chunks=(1 << 20,))
    with allocation_at_most(20 << 20):
        stored = read_indices(path)
    assert list(stored) == ["test"] and np.array_equal(stored["test"], np.arange(7))
    for layout in ({"chunks": (1 << 20,)}, {"chunks": (1 << 20,), "compression": "gzip"}):
        with h5py.File(path, "r+", locking=False) as f:
            del f["indices/test"]
            f["indices"].create_dataset("test", shape=(10_000_000,), dtype="<i8", **layout)
            if "compression" in layout:
                f["indices/test"][:] = 0
        with allocation_at_most(20 << 20), pytest.raises(LandscapeError) as error:
            read_indices(path)
        assert re.fullmatch(
            rf"{re.escape(str(path))} is damaged: indices/test declares 10000000 values but stores \d+ bytes",
            str(error.value),
        )


@pytest.mark.parametrize("count", [3, 40, 200])
def test_points_written_few_or_many_at_a_time_land_where_they_belong(tmp_path, count):
    """Below WHOLE_ARRAY_FROM points a write goes point by point, from it the arrays are rewritten whole: either
    way exactly the given points change, and the others keep their values and marks."""
    rng = np.random.default_rng(count)
    x, y = np.linspace(-1, 1, 31), np.linspace(-0.5, 0.5, 21)  # the fixture's spec: -1:1 and -0.5:0.5
    path = write_surface(tmp_path / "s.h5", x=x, y=y, computed=np.zeros((len(y), len(x)), dtype=bool))
    before = read_surface(path)
    size = before.computed.size
    first = rng.choice(size, size // 3, replace=False)
    write_points(path, first, {name: rng.random(len(first)) for name in before.metrics})
    middle = read_surface(path)
    rest = np.setdiff1d(np.arange(size), first)
    flat = rng.choice(rest, min(count, len(rest)), replace=False)
    given = {name: rng.random(len(flat)) for name in before.metrics}
    write_points(path, flat, given)
    after = read_surface(path)
    expected = middle.computed.ravel().copy()
    expected[flat] = True
    np.testing.assert_array_equal(after.computed.ravel(), expected)
    for name in before.metrics:
        want = middle[name].ravel().copy()
        want[flat] = given[name]
        np.testing.assert_array_equal(after[name].ravel(), want)


# 14. What a file declares must agree with the rest of it: its grid, coordinates, arrays, path and image indices.


def with_spec(path, change):
    """Store the spec of `path` as `change` (a function of the spec dict) leaves it."""
    with h5py.File(path, "r+", locking=False) as f:
        stored = json.loads(f.attrs["spec"])
        change(stored)
        f.attrs["spec"] = json.dumps(stored)


def one_line(result, path, message):
    """A CLI result that is one error line naming `path` and saying `message`, exit status 2."""
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["grid"]["x"].update(num=10**12), "has 1000000000000 points: at most 1002001 are allowed"),
        (
            lambda s: s["grid"].update(
                x={"start": -1, "stop": 1, "num": 2000}, y={"start": -1, "stop": 1, "num": 2000}
            ),
            "the grid has 2000 x 2000 = 4000000 points: at most 1002001",
        ),
        (lambda s: s["grid"]["x"].update(num=0), "has 0 points: NUM must be at least 1"),
        (lambda s: s["grid"]["x"].update(start=1, stop=-1), "must increase: START < STOP"),
        (lambda s: s.update(y=None), "a 2D grid needs a y direction and a 1D grid none"),
    ],
    ids=["huge-axis", "huge-grid", "empty-axis", "decreasing-axis", "2d-grid-without-y"],
)
def test_a_stored_grid_is_checked_before_anything_is_allocated(tmp_path, change, message):
    """`info` read a spec whose grid declared 10^12 points, and `convexity` then died allocating 7.28 TiB for its
    coordinates (MemoryError, exit 1): the stored grid is checked when the spec is read."""
    path = write_surface(tmp_path / "bad.h5")
    with_spec(path, change)
    for read in (read_spec, read_surface):
        with allocation_at_most(20 << 20), pytest.raises(LandscapeError) as error:
            read(path)
        assert str(error.value).startswith(f"{path} has a damaged spec: spec.grid: ") and message in str(error.value)
    one_line(runner.invoke(app, ["info", str(path)]), path, message)
    one_line(runner.invoke(app, ["convexity", "--surface", str(path)]), path, message)


def test_a_stored_grid_of_one_point_per_axis_is_read(tmp_path):
    """The grid check refuses nothing the writer stores: 0:0:1 axes, on both sides of the shape check."""
    path = write_surface(tmp_path / "point.h5", x=np.zeros(1), y=np.zeros(1))
    with_spec(
        path, lambda s: s["grid"].update(x={"start": 0, "stop": 0, "num": 1}, y={"start": 0, "stop": 0, "num": 1})
    )
    assert read_surface(path).computed.shape == (1, 1)


@pytest.mark.parametrize(
    "name, values, message",
    [
        ("xcoordinates", [1.0, 0.0, -1.0, 2.0, 5.0], "xcoordinates are not the coordinates -1:1:5 of its spec's grid"),
        ("xcoordinates", np.linspace(-1, 1, 5)[::-1], "xcoordinates are not the coordinates -1:1:5"),
        ("xcoordinates", np.linspace(-1, 1, 5) + 1e-9, "xcoordinates are not the coordinates -1:1:5"),
        ("ycoordinates", [-0.5, 0.5, 0.0], "ycoordinates are not the coordinates -0.5:0.5:3"),
        ("xcoordinates", np.linspace(-1, 1, 4), "xcoordinates has 4 values, its spec's grid axis -1:1:5"),
        ("ycoordinates", None, "has no 'ycoordinates' dataset"),
    ],
    ids=["zig-zag", "reversed", "shifted", "y-unsorted", "fewer", "no-y"],
)
def test_stored_coordinates_are_those_of_the_spec_grid(tmp_path, name, values, message):
    """A file whose xcoordinates were [1, 0, -1, 2, 5] under a spec of -1..1 was read, and `compare` computed on it."""
    path = write_surface(tmp_path / "bad.h5")
    with h5py.File(path, "r+", locking=False) as f:
        del f[name]
        if values is not None:
            f[name] = np.asarray(values, dtype=np.float64)
    with pytest.raises(LandscapeError) as error:
        read_surface(path)
    assert str(error.value).startswith(f"{path} ") and message in str(error.value)
    one_line(runner.invoke(app, ["compare", str(path), str(write_surface(tmp_path / "good.h5"))]), path, message)


def test_coordinates_agree_with_the_spec_to_rounding_and_a_1d_spec_has_no_y(tmp_path):
    path = write_surface(tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f["xcoordinates"][...] = np.linspace(-1, 1, 5) + 1e-14  # rounding of another linspace: the same grid
    np.testing.assert_allclose(read_surface(path).xcoordinates, np.linspace(-1, 1, 5), rtol=0, atol=1e-13)
    line = write_surface(tmp_path / "line.h5", y=None)
    with h5py.File(line, "r+", locking=False) as f:
        f["ycoordinates"] = np.linspace(-0.5, 0.5, 3)
    with pytest.raises(LandscapeError, match="is damaged: it holds ycoordinates, and its spec's grid is 1D"):
        read_surface(line)


@pytest.mark.parametrize(
    "x, y, readable",
    [
        (np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3), True),
        (np.linspace(1, -1, 5), np.linspace(0.5, -0.5, 3), True),  # decreasing: the figures handle it
        (np.array([-1.0, 0.0, 0.0, 0.5, 1.0]), np.linspace(-0.5, 0.5, 3), False),  # repeated
        (np.linspace(-1, 1, 5), np.array([-0.5, 0.5, 0.0]), False),  # zig-zag
    ],
    ids=["increasing", "decreasing", "repeated", "zig-zag"],
)
def test_legacy_coordinates_increase_or_decrease_strictly(tmp_path, x, y, readable):
    """Files of the paper's code have no spec to compare with; their coordinates must at least be monotonic."""
    path = write_legacy(tmp_path / "legacy.h5", x=x, y=y)
    if readable:
        np.testing.assert_array_equal(read_surface(path).xcoordinates, x)
        return
    with pytest.raises(LandscapeError, match="coordinates neither increase nor decrease"):
        read_surface(path)


def test_deeply_nested_json_never_hides_the_results(tmp_path):
    """runs[1] = '[' * 2000 made `landscape info` die of a RecursionError (exit 1), hiding the results; a spec of
    '[' * 100000 did the same."""
    path = write_surface(tmp_path / "s.h5")
    for record in (b"[" * 2000, ("[" * 40 + "]" * 40).encode()):  # too deep to parse, and deeper than a record
        with h5py.File(path, "r+", locking=False) as f:
            f["runs"][2] = record
        surface = read_surface(path)
        assert surface.runs == [] and "unreadable runs (JSON nested" in surface.runs_error
        assert surface.completion == 1.0 and np.isfinite(surface["train_loss"]).all()
        r = runner.invoke(app, ["info", str(path)])
        assert r.exit_code == 0 and "unreadable runs (JSON nested" in r.stdout
        append_run(path, {"started": "resume"})  # a resume records itself over the unreadable slot's number
    with h5py.File(path, "r+", locking=False) as f:
        assert [json.loads(s)["n"] for s in f["runs"][()] if s] == [0, 1, 2]
    for attribute in ("spec", "curvature"):
        bad = write_surface(tmp_path / f"{attribute}.h5")
        if attribute == "curvature":
            add_curvature(bad, {"stride": 1}, np.arange(4), {"started": "convexity"})
        damage(bad, **{attribute: "[" * 100000})
        with pytest.raises(LandscapeError, match=rf"has a damaged {attribute} attribute \(JSON nested too deeply\)"):
            read_surface(bad)
        one_line(runner.invoke(app, ["info", str(bad)]), bad, f"damaged {attribute} attribute (JSON nested too deeply)")
        damage(bad, **{attribute: "[" * 40 + "]" * 40})
        with pytest.raises(LandscapeError, match=rf"damaged {attribute} attribute \(JSON nested more than 32"):
            read_surface(bad)


def test_integer_metric_arrays_are_refused_never_written_truncated(tmp_path):
    """An int64 train_loss took the values of a resume truncated ([3 2 2 2 2]) and exit 0."""
    path = write_surface(tmp_path / "s.h5", computed=np.zeros((3, 5), dtype=bool))
    replace_dataset(path, "train_loss", lambda f, n: f.create_dataset(n, data=np.zeros((3, 5), dtype=np.int64)))
    message = "is damaged: train_loss is int64, not floating point"
    with pytest.raises(LandscapeError, match=message):
        read_surface(path)
    names = ("train_loss", "train_acc", "test_loss", "test_acc")
    with pytest.raises(LandscapeError, match=message):
        write_points(path, np.array([0]), {name: np.array([2.7]) for name in names})
    with h5py.File(path, "r", locking=False) as f:
        assert not f["computed"][()].any() and not f["train_loss"][()].any()  # nothing written
    legacy = write_legacy(tmp_path / "legacy.h5")
    replace_dataset(legacy, "train_loss", lambda f, n: f.create_dataset(n, data=np.zeros((5, 3), dtype=np.int32)))
    with pytest.raises(LandscapeError, match="is damaged: train_loss is int32, not floating point"):
        read_surface(legacy)


def test_convexity_map_arrays_are_written_only_as_their_kind(tmp_path):
    path = write_surface(tmp_path / "s.h5")
    add_indices(path, train=np.arange(4))  # the images the map is on, as the writer stores them
    add_curvature(path, {"stride": 1}, np.arange(4), {"started": "convexity"})
    values = {"hessian_min": np.array([-0.5]), "hessian_max": np.array([2.5]), "hessian_products": np.array([7])}
    replace_dataset(path, "hessian_max", lambda f, n: f.create_dataset(n, data=np.zeros((3, 5), dtype=np.int64)))
    with pytest.raises(LandscapeError, match="is damaged: hessian_max is int64, not floating point"):
        write_points(path, np.array([0]), values, mask="computed_hessian")
    replace_dataset(path, "hessian_max", lambda f, n: f.create_dataset(n, data=np.full((3, 5), np.nan)))
    write_points(path, np.array([0]), values, mask="computed_hessian")  # products stay integers: 7
    curvature = read_surface(path).curvature
    assert curvature is not None and curvature.largest[0, 0] == 2.5 and curvature.products[0, 0] == 7


def test_a_resume_never_writes_into_an_integer_metric_array(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "s.h5"
    args = compute_args(resnet20_ckpt, cifar_root, out, grid="-1:1:2")
    assert runner.invoke(app, args).exit_code == 0
    with h5py.File(out, "r+", locking=False) as f:
        del f["train_loss"]
        f["train_loss"] = np.zeros((2, 2), dtype=np.int64)
        f["computed"][...] = 0
    one_line(runner.invoke(app, args), out, "is damaged: train_loss is int64, not floating point")
    with h5py.File(out, "r", locking=False) as f:
        assert not f["computed"][()].any() and not f["train_loss"][()].any()


def trajectory_arrays(**changes):
    arrays = {
        "coordinates": np.array([[0.5, 0.25], [0.25, -0.25], [0.0, 0.0]]),
        "epochs": np.array([5, 10, 15]),
        "residual": np.array([0.5, 0.25, 0.0]),
        "distance": np.array([2.0, 1.0, 0.0]),
        "explained_variance_ratio": np.array([0.7, 0.2]),
    }
    return {**arrays, **changes}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": np.array([5.0, np.nan, 15.0])}, "trajectory/epochs are not whole numbers of int64"),
        ({"epochs": np.array([5.0, 1e30, 15.0])}, "trajectory/epochs are not whole numbers of int64"),
        ({"epochs": np.array([5.0, 2.0**63, 15.0])}, "trajectory/epochs are not whole numbers of int64"),
        ({"epochs": np.array([5.0, 7.5, 15.0])}, "trajectory/epochs are not whole numbers of int64"),
        ({"epochs": np.array([5, 2**63, 15], dtype=np.uint64)}, "trajectory/epochs are not whole numbers of int64"),
        ({"epochs": np.array([True, False, True])}, "trajectory/epochs are not whole numbers of int64"),
        (
            {"coordinates": np.array([[0.5, np.nan], [0.25, -0.25], [0.0, 0.0]])},
            "trajectory/coordinates holds non-finite",
        ),
        ({"coordinates": np.array([[0.5, 0.25], [np.inf, 0], [0.0, 0.0]])}, "trajectory/coordinates holds non-finite"),
        ({"residual": np.array([0.5, np.inf, 0.0])}, "trajectory/residual holds non-finite values"),
        ({"distance": np.array([2.0, np.nan, 0.0])}, "trajectory/distance holds non-finite values"),
        ({"residual": np.array([0.5, -0.25, 0.0])}, "trajectory/residual holds negative norms"),
        ({"distance": np.array([2.0, -1.0, 0.0])}, "trajectory/distance holds negative norms"),
        ({"explained_variance_ratio": np.array([0.7, -0.2])}, "explained_variance_ratio [0.7, -0.2] are not shares"),
        ({"explained_variance_ratio": np.array([0.7, 0.4])}, "explained_variance_ratio [0.7, 0.4] are not shares"),
        ({"explained_variance_ratio": np.array([1.5, 0.0])}, "explained_variance_ratio [1.5, 0.0] are not shares"),
        ({"explained_variance_ratio": np.array([np.nan, 0.2])}, "explained_variance_ratio [nan, 0.2] are not shares"),
    ],
    ids=[
        "epoch-nan",
        "epoch-1e30",
        "epoch-2**63",
        "epoch-fraction",
        "epoch-uint64",
        "epoch-bool",
        "coordinates-nan",
        "coordinates-inf",
        "residual-inf",
        "distance-nan",
        "residual-negative",
        "distance-negative",
        "ratio-negative",
        "ratio-sum",
        "ratio-above-1",
        "ratio-nan",
    ],
)
def test_a_stored_training_path_is_checked(tmp_path, changes, message):
    """NaN or 1e30 epochs became -9223372036854775808 (with a numpy RuntimeWarning), NaN coordinates and negative
    variance shares were read, and went on into figures and `export --path`."""
    path = write_surface(tmp_path / "pca.h5", trajectory=trajectory_arrays(**changes))
    with pytest.raises(LandscapeError) as error:
        read_surface(path)
    assert str(error.value).startswith(f"{path} is damaged: ") and message in str(error.value)
    one_line(runner.invoke(app, ["info", str(path)]), path, message)


def test_a_stored_training_path_as_the_writer_makes_it_is_read(tmp_path):
    ratio = np.array([0.8, 0.2 + 1e-9])  # shares of all the variance, to rounding
    arrays = trajectory_arrays(epochs=np.array([0.0, 10.0, -(2.0**63)]), explained_variance_ratio=ratio)
    trajectory = read_surface(write_surface(tmp_path / "pca.h5", trajectory=arrays)).trajectory
    assert trajectory is not None
    assert trajectory.epochs.dtype == np.int64 and trajectory.epochs.tolist() == [0, 10, -(2**63)]
    np.testing.assert_array_equal(trajectory.explained_variance_ratio, ratio)


def add_indices(path, **sets):
    with h5py.File(path, "r+", locking=False) as f:
        for name, values in sets.items():
            if f"indices/{name}" in f:
                del f[f"indices/{name}"]
            f[f"indices/{name}"] = values


@pytest.mark.parametrize(
    "name, values, message",
    [
        ("train", np.array([3, 1, 2]), "indices/train are not distinct image indices >= 0 in increasing order"),
        ("train", np.array([1, 1, 2]), "indices/train are not distinct image indices >= 0 in increasing order"),
        ("test", np.array([-1, 0, 1]), "indices/test are not distinct image indices >= 0 in increasing order"),
        ("bn", np.array([0, 2**63, 2**64 - 1], dtype=np.uint64), "indices/bn are not distinct image indices >= 0"),
        ("train", np.zeros(201, dtype=np.int64), "indices/train holds 201 images, more than its spec's --subset 200"),
        ("bn", np.arange(1281), "indices/bn holds 1281 images, more than its spec's --bn-images 1280"),
        ("train", np.array([0.0, 1.5]), "indices/train is float64 (2,), not a list of integers"),
        ("test", np.arange(6).reshape(2, 3), "indices/test is int64 (2, 3), not a list of integers"),
    ],
    ids=["unsorted", "repeated", "negative", "uint64-wraps", "more-than-subset", "more-than-bn-images", "floats", "2d"],
)
def test_stored_image_indices_are_distinct_increasing_and_no_more_than_drawn(tmp_path, name, values, message):
    """5000 zeros as indices/train of a --subset 4 surface resumed with exit 0, and `info` showed 5000 images: every
    writer stores a draw sorted and unique (`subset_indices`, `hessian_indices`), never more than the spec draws."""
    path = write_surface(tmp_path / "s.h5")
    add_indices(path, **{name: values})
    with pytest.raises(LandscapeError) as error:
        read_indices(path)
    assert str(error.value).startswith(f"{path} is damaged: ") and message in str(error.value)


def test_image_indices_as_the_writer_stores_them_are_read(tmp_path):
    path = write_surface(tmp_path / "s.h5")
    add_indices(path, train=np.array([0, 5, 7], dtype=np.int64), test=np.arange(200), bn=np.array([], dtype=np.int64))
    stored = read_indices(path)
    assert stored["train"].tolist() == [0, 5, 7] and len(stored["test"]) == 200 and len(stored["bn"]) == 0
    assert read_surface(path).images == {"train": 3, "test": 200, "bn": 0}


def test_a_count_beyond_the_spec_is_refused_by_every_reader(tmp_path):
    """`info` counts the images from the shapes (nothing is read): a count the spec cannot draw is refused there too."""
    path = write_surface(tmp_path / "s.h5")
    add_indices(path, train=np.arange(5000))
    message = "indices/train holds 5000 images, more than its spec's --subset 200"
    with pytest.raises(LandscapeError, match=message):
        read_surface(path)
    one_line(runner.invoke(app, ["info", str(path)]), path, message)


def test_hessian_indices_are_a_checked_subset_of_the_evaluated_ones(tmp_path):
    path = write_surface(tmp_path / "s.h5")
    add_indices(path, train=np.arange(4))
    add_curvature(path, {"stride": 1}, np.arange(4), {"started": "convexity"})
    add_indices(path, hessian=np.array([0, 2, 1]))
    with pytest.raises(LandscapeError, match="indices/hessian are not distinct image indices >= 0 in increasing"):
        read_surface(path)
    add_indices(path, hessian=np.arange(5))
    with pytest.raises(LandscapeError, match="indices/hessian holds 5 images, indices/train 4"):
        read_surface(path)
    add_indices(path, hessian=np.array([1, 3]))
    curvature = read_surface(path).curvature
    assert curvature is not None and curvature.indices.tolist() == [1, 3]


def test_repeated_indices_are_never_resumed(tmp_path, cifar_root, resnet20_ckpt):
    """The reported file: --subset 8 of a 35-image split, indices/train replaced (which drops its fingerprint) by
    5000 zeros, or by 8 zeros: both refused in one line by `info` (the count) or the resume (the values)."""
    out = tmp_path / "s.h5"
    args = compute_args(resnet20_ckpt, cifar_root, out, grid="-1:1:2")
    assert runner.invoke(app, args).exit_code == 0
    with h5py.File(out, "r+", locking=False) as f:
        f["computed"][0, 0] = 0
    add_indices(out, train=np.zeros(5000, dtype=np.int64))
    message = "indices/train holds 5000 images, more than its spec's --subset 8"
    one_line(runner.invoke(app, ["info", str(out)]), out, message)
    one_line(runner.invoke(app, args), out, message)
    add_indices(out, train=np.zeros(8, dtype=np.int64))
    one_line(runner.invoke(app, args), out, "indices/train are not distinct image indices >= 0 in increasing order")
    with h5py.File(out, "r", locking=False) as f:
        assert f["computed"][0, 0] == 0  # nothing computed


@pytest.mark.parametrize("name", ["train_loss", "computed"])
def test_an_array_stored_in_thousands_of_pieces_is_refused_unread(tmp_path, name):
    """A 23 KB file declaring 1001x1001 values in 1x1 HDF5 chunks, none written, took 193 s to read (34 µs per
    piece), and the app's files table read every file of the folder."""
    grid = np.linspace(-1, 1, 101)
    path = write_surface(tmp_path / "s.h5", x=grid, y=grid)
    with h5py.File(path, "a") as f:
        dtype = f[name].dtype
        del f[name]
        f.create_dataset(name, shape=(101, 101), dtype=dtype, chunks=(1, 1), fillvalue=1)
    with pytest.raises(LandscapeError) as error:
        read_surface(path)
    assert str(error.value) == (
        f"{path}: '{name}' is stored in 10201 pieces (HDF5 chunks of (1, 1)), more than the 4096 allowed: landscape "
        "writes whole arrays (h5repack -l CONTI makes it so)"
    )
    with h5py.File(path, "a") as f:  # a few pieces (a file compressed with h5repack) are read as before
        values = np.ones((101, 101), dtype=dtype)
        del f[name]
        f.create_dataset(name, data=values, chunks=(26, 101), compression="gzip")
    read_surface(path)


def test_a_chunk_far_larger_than_its_array_is_refused_unread(tmp_path):
    """A 5-value axis in one gzip chunk of 100 million values (a 780 KB file) was inflated whole at every read:
    24 s and 800 MB, twice per page of the app. A chunk of a resizable array a little larger than it is read."""
    path = write_surface(tmp_path / "s.h5")
    with h5py.File(path, "a") as f:
        values = f["xcoordinates"][()]
        del f["xcoordinates"]
        f.create_dataset(
            "xcoordinates", data=values, maxshape=(None,), chunks=(1_000_000,), compression="gzip", fillvalue=0
        )
    with pytest.raises(LandscapeError) as error:
        read_surface(path)
    assert str(error.value) == (
        f"{path}: 'xcoordinates' is stored in HDF5 chunks of (1000000,) (8000000 bytes), larger than its 5 values: "
        "landscape writes whole arrays (h5repack -l CONTI makes it so)"
    )
    with h5py.File(path, "a") as f:
        del f["xcoordinates"]
        f.create_dataset("xcoordinates", data=values, maxshape=(None,), chunks=(1024,))
    np.testing.assert_array_equal(read_surface(path).xcoordinates, values)


def test_a_spec_of_a_variable_length_string_is_held_to_its_size_limit(tmp_path):
    """Its storage size is that of a heap reference (16 bytes): an 8 MiB spec was read and parsed."""
    path = write_surface(tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f.attrs["spec"] = f.attrs["spec"] + " " * (2 << 20)
    with pytest.raises(LandscapeError, match=r"its spec attribute holds \d+ bytes, more than 1048576"):
        read_surface(path)


def test_hessian_indices_are_stored_whole_and_of_the_split_the_map_is_on(tmp_path):
    """An 89 KB file declaring 50 million never-written hessian indices (its split's indices removed) took 1.4 GB and
    38 s to read; indices the evaluated images do not hold were accepted."""
    path = write_surface(tmp_path / "s.h5")
    add_indices(path, train=np.arange(4))
    add_curvature(path, {"stride": 1}, np.arange(4), {"started": "convexity"})
    add_indices(path, hessian=np.array([1, 7]))
    with pytest.raises(LandscapeError, match="indices/hessian holds images that indices/train does not"):
        read_surface(path)
    with h5py.File(path, "r+", locking=False) as f:
        del f["indices/hessian"]
        f.create_dataset("indices/hessian", shape=(4,), dtype="i8", chunks=(1,))  # declared, never written
    with pytest.raises(LandscapeError, match=r"indices/hessian declares 4 values but stores 0 bytes"):
        read_surface(path)
    add_indices(path, hessian=np.array([1, 3]))
    with h5py.File(path, "r+", locking=False) as f:
        del f["indices/train"]
    with pytest.raises(LandscapeError, match="its convexity map is on train images, and it holds none"):
        read_surface(path)


@pytest.mark.parametrize("shared", ["train_acc", "test_loss"])
def test_a_dataset_under_two_names_is_refused(tmp_path, shared):
    """train_acc hard-linked to train_loss: a resume stored the accuracy as the loss and marked the point done."""
    computed = np.ones((3, 5), dtype=bool)
    computed[0, 0] = False
    path = write_surface(tmp_path / "s.h5", computed=computed)
    with h5py.File(path, "r+", locking=False) as f:
        del f[shared]
        f[shared] = f["train_loss"]
    before = path.read_bytes()
    message = "is stored under more than one name \\(hard links\\)"
    with pytest.raises(LandscapeError, match=message):
        write_points(path, [0], {"train_loss": [2.5], "train_acc": [10.0], "test_loss": [1.0], "test_acc": [5.0]})
    with pytest.raises(LandscapeError, match=message):
        read_surface(path)
    assert path.read_bytes() == before


def test_a_group_under_two_names_is_refused(tmp_path):
    """directions/y hard-linked to directions/x: the y direction read back as x (a degenerate plane)."""
    path = write_surface(tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f["directions/x/w"] = np.ones(3, dtype=np.float32)
        f["directions/y"] = f["directions/x"]
    with pytest.raises(LandscapeError, match="'directions/y' is stored under more than one name"):
        read_directions(path, "y", like={"w": torch.zeros(3)})


def test_the_writer_lock_never_follows_a_planted_link(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("a week of notes")
    (tmp_path / ".out.h5.lock").symlink_to(precious)
    with (
        pytest.raises(LandscapeError, match=r"cannot write .*out.h5: .*\.out\.h5\.lock is a link"),
        writer_lock(tmp_path / "out.h5"),
    ):
        pass
    assert precious.read_text() == "a week of notes"
    (tmp_path / ".out.h5.lock").unlink()
    os.mkfifo(tmp_path / ".out.h5.lock")
    with pytest.raises(LandscapeError, match=r"\.out\.h5\.lock is not a plain file"), writer_lock(tmp_path / "out.h5"):
        pass


def test_a_run_record_numbered_beyond_integers_never_blocks_a_resume(tmp_path):
    path = write_surface(tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f["runs"][1] = b'{"n": 1e400}'
    append_run(path, {"started": "resume"})  # was an OverflowError: the surface could not be finished
    assert read_surface(path).runs[-1]["started"] == "resume"


def test_a_surface_written_through_a_symbolic_link_is_its_target(tmp_path, cifar_root, resnet20_ckpt):
    """`--out link.h5` (a link to real.h5): the link was replaced by a new file, the target kept the old results,
    and a run on real.h5 took another lock than one on link.h5, so both could write the same file."""
    real, link = tmp_path / "real.h5", tmp_path / "link.h5"
    link.symlink_to(real)
    assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, link, grid="-1:1:2")).exit_code == 0
    assert link.is_symlink() and read_surface(real).completion == 1.0
    with h5py.File(real, "r+", locking=False) as f:
        f["computed"][0, 0] = 0
    with writer_lock(real):  # a run on real.h5
        result = runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, link, grid="-1:1:2"))
    assert result.exit_code == 2 and "is being written by another process" in result.stderr
    assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, link, grid="-1:1:2")).exit_code == 0
    assert link.is_symlink() and read_surface(real).completion == 1.0


def test_a_surface_file_with_two_names_is_not_written(tmp_path, cifar_root, resnet20_ckpt):
    """A hard link `copy.h5` of `real.h5`: the lock is per name, so a run on each name could write one file at once."""
    real, copy = tmp_path / "real.h5", tmp_path / "copy.h5"
    assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, real, grid="-1:1:2")).exit_code == 0
    with h5py.File(real, "r+", locking=False) as f:
        f["computed"][0, 0] = 0
    os.link(real, copy)
    before = real.read_bytes()
    for name in (real, copy):
        result = runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, name, grid="-1:1:2"))
        assert result.exit_code == 2, result.output
        assert f"cannot write {name}: the file has 2 names (hard links)" in result.stderr
    assert real.read_bytes() == before
    copy.unlink()
    assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, real, grid="-1:1:2")).exit_code == 0
    assert read_surface(real).completion == 1.0


@pytest.mark.parametrize("replace", [False, True])
def test_adding_a_convexity_map_keeps_the_files_permissions(tmp_path, replace):
    """The map is added to a copy renamed into place: a private surface (mode 600) came back readable by all."""
    path = write_surface(tmp_path / "s.h5")
    if replace:
        add_curvature(path, {"stride": 1}, np.arange(4), {"started": "convexity"})
    path.chmod(0o600)
    add_curvature(path, {"stride": 2}, np.arange(4), {"started": "convexity"}, replace=replace)
    assert path.stat().st_mode & 0o777 == 0o600
    with h5py.File(path, "r", locking=False) as f:
        assert json.loads(f.attrs["curvature"]) == {"stride": 2} and "hessian_min" in f
