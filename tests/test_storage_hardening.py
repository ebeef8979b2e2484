"""The surface file under faults and attacks: a full disk, two writers, readers that lock, crafted HDF5 files.

Real files and real processes: a small tmpfs fills up for real (skipped where mounting is not allowed), two
`landscape compute` processes race for one file, a reader holds HDF5's own lock while the writer works.
"""

import contextlib
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
from surface_fixtures import spec, write_surface
from typer.testing import CliRunner

from landscape import LandscapeError, read_surface
from landscape.cli import app
from landscape.grid import Axis, GridSpec
from landscape.storage import RUN_SLOTS, append_run, writer_lock

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
    assert runner.invoke(app, compute_args(resnet20_ckpt, cifar_root, out, grid="-1:1:2")).exit_code == 0
    assert not orphan.exists() and other.exists()


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
