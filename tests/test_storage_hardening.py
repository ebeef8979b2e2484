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
    assert path.stat().st_size < 200_000
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
    with h5py.File(path, "r+", locking=False) as f:
        f.create_dataset("indices/test", data=np.arange(7))
        for k in range(20):
            f["indices"].create_dataset(f"copy{k}", shape=(10_000_000,), dtype="<i8", chunks=(1 << 20,))
    assert path.stat().st_size < 200_000
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
    x, y = np.linspace(-1, 1, 31), np.linspace(-1, 1, 21)
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
