"""Several ranks on torch.distributed (gloo, real processes): equal to one process, faults, resume across sizes.

Every run here is a real `landscape compute` process tree: `--workers 2` (torch's elastic launcher),
`python -m torch.distributed.run` (torchrun), or two processes started by hand on env:// (no launcher, so that
our own fault handling is what stops the run). One thread per rank, as in the single-process reference, which
makes the results bit-identical: each point is computed by the same code on the same data whichever rank
computes it.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_cifar10

from landscape import read_surface
from landscape.distributed import World, parse_workers
from landscape.errors import LandscapeError

GRID = ["--x", "-1:1:4", "--y", "-0.5:0.5:3"]  # 12 points
TIMEOUT = 240  # a hang fails the test instead of the CI run


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 training images: a point takes long enough that a rank can be killed while others still work."""
    return write_cifar10(tmp_path_factory.mktemp("data"), train_per_batch=100)


def env(data_root: Path, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    environ.update(LANDSCAPE_DATA_ROOT=str(data_root), OMP_NUM_THREADS="1", **extra)
    return environ


def landscape(args: list[str], data_root: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "landscape", *args],
        env=env(data_root),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kwargs,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, resnet20_ckpt: Path, data_root: Path) -> Path:
    """The surface computed by one process with one thread."""
    out = tmp_path_factory.mktemp("reference") / "reference.h5"
    result = landscape(["compute", "--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID], data_root)
    assert result.returncode == 0, result.stderr
    return out


def assert_same_surface(path: Path, reference: Path) -> None:
    got, want = read_surface(path), read_surface(reference)
    assert got.computed.all()
    assert sorted(got.values) == sorted(want.values)
    for name in want.values:
        np.testing.assert_array_equal(got.values[name], want.values[name], err_msg=name)
    np.testing.assert_array_equal(got.xcoordinates, want.xcoordinates)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def elastic_log_lines(text: str) -> list[str]:
    """torch's own log lines (`E1124 22:52:50.291000 19453 torch/distributed/...`), which our one line replaces."""
    return [line for line in text.splitlines() if re.match(r"[DIWEF]\d{4} \d\d:\d\d", line)]


def test_world_from_env() -> None:
    assert World.from_env({}) is None
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == World(3, 8, 1)
    with pytest.raises(LandscapeError, match="RANK=8"):
        World.from_env({"RANK": "8", "WORLD_SIZE": "8"})
    with pytest.raises(LandscapeError, match="integers"):
        World.from_env({"RANK": "x", "WORLD_SIZE": "8"})
    assert parse_workers("auto", "cpu") >= 1
    with pytest.raises(LandscapeError, match="--workers"):
        parse_workers("0", "cpu")


def test_more_cpu_workers_than_cores_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """--workers 99 on the 2-core CPU started 99 ranks of ~260 MB: the kernel's OOM killer took the launcher and
    other jobs, and 92 ranks ran on."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert parse_workers("2", "cpu") == 2
    with pytest.raises(LandscapeError, match="^--workers 3: this CPU has 2 cores for the ranks"):
        parse_workers("3", "cpu")
    with pytest.raises(LandscapeError, match="^--workers 99: this CPU has 2 cores"):
        parse_workers("99", "cpu")


def test_workers_equal_one_process(tmp_path: Path, resnet20_ckpt: Path, data_root: Path, reference: Path) -> None:
    out = tmp_path / "two.h5"
    result = landscape(["compute", "--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID, "--workers", "2"], data_root)
    assert result.returncode == 0, result.stderr
    assert "12/12 points computed" in result.stdout
    assert not error_lines(result.stderr)
    assert_same_surface(out, reference)
    with h5py.File(out, "r") as f:  # the same file layout as one process: no trace of the ranks
        with h5py.File(reference, "r") as g:
            assert sorted(f) == sorted(g)


def forget_points(path: Path, flat: list[int]) -> None:
    """Mark points of a finished file as not computed, as a run stopped before them leaves it."""
    with h5py.File(path, "r+") as f:
        shape = f["computed"].shape
        for index in flat:
            f["computed"][np.unravel_index(index, shape)] = 0


def test_torchrun_resumes_a_file_of_another_world_size(
    tmp_path: Path, resnet20_ckpt: Path, data_root: Path, reference: Path
) -> None:
    out = tmp_path / "resumed.h5"
    out.write_bytes(reference.read_bytes())
    forget_points(out, [0, 1, 5, 6, 7, 11])
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + ["-m", "landscape", "compute", "--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID],
        env=env(data_root),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("12/12 points computed") == 1  # rank 0 alone reports
    assert_same_surface(out, reference)
    assert len(read_surface(out).runs) == 2  # the creating session and this one


FAULTY_RANK = """
import os, signal, sys
from landscape.evaluate import PointEvaluator

if os.environ["RANK"] == "1":
    original, calls = PointEvaluator.evaluate, []

    def evaluate(self, coefficients):
        calls.append(1)
        if len(calls) == 2:  # the second group of points this rank claims
            if os.environ["FAULT"] == "raise":
                raise RuntimeError("CUDA out of memory (simulated)")
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, coefficients)

    PointEvaluator.evaluate = evaluate

from landscape.cli import main

sys.argv = ["landscape", "compute", *sys.argv[1:]]
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_ranks(args: list[str], data_root: Path, fault: str, tmp_path: Path) -> list[subprocess.Popen]:
    """Two ranks on env:// started by hand: no launcher watches them, our own fault handling must stop the run."""
    script = tmp_path / "faulty_rank.py"
    script.write_text(FAULTY_RANK)
    port = str(free_port())
    return [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env=env(
                data_root,
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                FAULT=fault,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]


def check_partial(out: Path) -> int:
    surface = read_surface(out)  # readable
    done = int(surface.computed.sum())
    assert 0 < done < surface.computed.size
    for values in surface.values.values():
        assert np.isfinite(values[surface.computed]).all()
    return done


@pytest.mark.parametrize("fault", ["raise", "kill"])
def test_a_failing_or_killed_rank_stops_the_run_and_the_file_resumes(
    tmp_path: Path, resnet20_ckpt: Path, data_root: Path, reference: Path, fault: str
) -> None:
    out = tmp_path / "faulty.h5"
    args = ["--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID, "--rank-timeout", "3"]
    ranks = start_ranks(args, data_root, fault, tmp_path)
    outputs = [rank.communicate(timeout=TIMEOUT) for rank in ranks]
    codes = [rank.returncode for rank in ranks]
    errors = error_lines(outputs[0][1]) + error_lines(outputs[1][1])
    assert len(errors) == 1, outputs  # one clear line for the whole run
    if fault == "raise":
        assert codes == [3, 2]  # rank 0 stops quietly; rank 1 says why
        assert errors[0].startswith("error: rank 1: RuntimeError: CUDA out of memory (simulated); the run stopped")
    else:
        assert codes == [2, -signal.SIGKILL]  # rank 0 found the cause and says it
        assert errors[0].startswith("error: rank 1 stopped responding (no heartbeat for 3 s")
    assert f"finished points are saved in {out}" in errors[0]
    check_partial(out)
    resumed = landscape(["compute", "--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID], data_root)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_surface(out, reference)


def test_a_rank_with_other_data_is_refused_and_contributes_no_point(
    tmp_path: Path, resnet20_ckpt: Path, data_root: Path, reference: Path
) -> None:
    other = shutil.copytree(data_root, tmp_path / "other")  # the same files but one label, on rank 1's node
    path = other / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch["labels"][7] = (batch["labels"][7] + 1) % 10
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    out = tmp_path / "mixed.h5"
    port = str(free_port())
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "landscape", "compute", "--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID],
            env=env(
                root, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, root in ((0, data_root), (1, other))
    ]
    outputs = [rank.communicate(timeout=TIMEOUT) for rank in ranks]
    codes = [rank.returncode for rank in ranks]
    assert codes[1] == 2 and codes[0] in (0, 3), outputs  # rank 0 stops quietly (or had finished alone)
    errors = error_lines(outputs[0][1]) + error_lines(outputs[1][1])
    assert len(errors) == 1 and re.fullmatch(
        r"error: rank 1: the train images on this rank differ from rank 0's \(sha256 [0-9a-f]{12}\.\.\. here, "
        r"[0-9a-f]{12}\.\.\. on rank 0\): give every rank the same data",
        errors[0],
    ), outputs
    got, want = read_surface(out), read_surface(reference)
    for name in want.values:  # every point in the file is one of rank 0's, on rank 0's data
        np.testing.assert_array_equal(got.values[name][got.computed], want.values[name][got.computed], err_msg=name)
    resumed = landscape(["compute", "--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID], data_root)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_surface(out, reference)


def rank_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of the processes below `parent` that torch's launcher started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])
        variables = dict(v.split(b"=", 1) for v in environ if b"=" in v)
        if ppid == parent and b"RANK" in variables and b"TORCHELASTIC_RUN_ID" in variables:
            found[int(variables[b"RANK"])] = int(entry.name)
    return found


def start_two_workers(ckpt: Path, out: Path, data_root: Path) -> subprocess.Popen:
    """`landscape compute ... --workers 2` on GRID in the background, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "landscape", "compute", "--ckpt", str(ckpt), "--out", str(out), *GRID, "--workers", "2"],
        env=env(data_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_of_a_rank_under_workers(tmp_path: Path, resnet20_ckpt: Path, data_root: Path, reference: Path) -> None:
    out = tmp_path / "killed.h5"
    launcher = start_two_workers(resnet20_ckpt, out, data_root)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:  # kill rank 1 once the first point is in the file
        time.sleep(0.05)
        try:
            if out.exists() and read_surface(out).computed.any():
                break
        except LandscapeError:  # caught mid-creation
            continue
    pids = rank_pids(launcher.pid)
    assert set(pids) == {0, 1}, pids
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    stdout, stderr = launcher.communicate(timeout=TIMEOUT)
    assert time.monotonic() - killed < 30  # the launcher stops rank 0 within its monitor interval
    assert launcher.returncode == 2
    errors = error_lines(stderr)
    assert errors == [
        f"error: rank 1 (pid {pids[1]}) was killed by SIGKILL; the run stopped: finished points are saved in "
        f"{out}, run the same command again to resume"
    ], stderr
    assert not elastic_log_lines(stderr)
    check_partial(out)
    resumed = landscape(
        ["compute", "--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID, "--workers", "2"], data_root
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_surface(out, reference)


def test_a_failing_rank_under_workers_with_overwrite_says_to_resume_without_it(tmp_path: Path, data_root: Path) -> None:
    """Each rank of --workers prints its own line: it said to run the same command again, which with --overwrite
    would replace the finished points."""
    from toymodels import fails_on_rank_one

    from landscape import save_checkpoint

    ckpt = tmp_path / "fails.pt"
    save_checkpoint(ckpt, fails_on_rank_one(), {"num_classes": 10, "dataset": "cifar10"})
    out = tmp_path / "s.h5"
    args = ["--ckpt", str(ckpt), "--arch", "toymodels:fails_on_rank_one", "--out", str(out), *GRID]
    tests = str(Path(__file__).parent)
    result = subprocess.run(
        [sys.executable, "-m", "landscape", "compute", *args, "--workers", "2", "--overwrite"],
        env={**env(data_root), "PYTHONPATH": tests, "FAILED_FLAG": str(tmp_path / "rank1.failed")},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2, result.stderr  # the failing rank's status (its error line), not rank 0's 3
    errors = error_lines(result.stderr)
    assert errors and errors[0].startswith("error: rank 1: RuntimeError: simulated failure on rank 1"), result.stderr
    assert all("run the same command without --overwrite to resume" in line for line in errors), result.stderr
    assert "again to resume" not in result.stderr


def test_the_launcher_reports_the_rank_that_failed_not_one_it_stopped() -> None:
    from types import SimpleNamespace

    from landscape.distributed import _launch_failure

    stopped = SimpleNamespace(exitcode=3, timestamp=1, pid=10)  # rank 0 stopped first, because rank 1 failed
    failed = SimpleNamespace(exitcode=1, timestamp=2, pid=11)
    report = _launch_failure(SimpleNamespace(failures={0: stopped, 1: failed}), Path("s.h5"))
    assert (str(report), report.reported, report.exit_code) == ("rank 1 exited with code 1", True, 1)


def test_workers_refused_under_torchrun(tmp_path: Path, resnet20_ckpt: Path, data_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "landscape", "compute", "--ckpt", str(resnet20_ckpt), "--out", str(tmp_path / "a.h5")]
        + ["--workers", "2"],
        env=env(data_root, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["error: --workers starts its own ranks: leave it out under torchrun"]


def test_heartbeat_watch_tells_a_lost_rank_from_a_suspended_job(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from landscape import distributed

    clock = [0.0]
    monkeypatch.setattr(distributed.time, "monotonic", lambda: clock[0])
    store = dist.HashStore()
    channel = distributed.Channel(store, World(0, 2, 0))

    def look(at: float, beats: dict) -> None:
        clock[0] = at
        channel.check_alive([1], beats, timeout=10)

    beats: dict = {}
    for at in (0, 4, 8):  # rank 1 silent, but not yet for 10 s
        look(at, beats)
    store.add("beat/1", 1)  # a beat restarts its clock
    for at in (12, 16, 20):
        look(at, beats)
    with pytest.raises(distributed.RunStopped, match="rank 1 stopped responding"):
        look(24, beats)  # silent since 12
    assert store.get("abort").decode().startswith("rank 1 stopped responding")

    store.delete_key("abort")
    beats = {}
    look(0, beats)
    look(60, beats)  # this rank did not look for 60 s (the job was suspended): nothing can be concluded
    look(64, beats)
    look(68, beats)
    with pytest.raises(distributed.RunStopped):
        look(72, beats)  # 12 s of observed silence
    store.delete_key("abort")
    store.set("finished/1", "1")  # a rank that finished its work is not expected to beat
    look(200, {})
    look(204, beats)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_rank_timeout_must_be_a_positive_number(value: str, tmp_path: Path) -> None:
    """nan passed `<= 0` and turned the detection of lost ranks off."""
    from typer.testing import CliRunner

    from landscape.cli import app

    args = ["compute", "--ckpt", str(tmp_path / "c.pt"), "--out", str(tmp_path / "s.h5"), "--rank-timeout", value]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--rank-timeout must be a positive number of seconds" in result.stderr


def test_sigterm_to_the_launcher_stops_the_ranks_with_143(
    tmp_path: Path, resnet20_ckpt: Path, data_root: Path, reference: Path
) -> None:
    """The launcher's own stop line (128 + SIGTERM) was lost: `friendly` exited 2 for every error line."""
    out = tmp_path / "stopped.h5"
    launcher = start_two_workers(resnet20_ckpt, out, data_root)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and len(rank_pids(launcher.pid)) < 2:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=TIMEOUT)
    assert launcher.returncode == 128 + signal.SIGTERM, stderr
    assert error_lines(stderr) == [
        f"error: stopped by SIGTERM; the run stopped: finished points are saved in {out}, run the same command "
        "again to resume"
    ], stderr
    assert not elastic_log_lines(stderr)
    resumed = landscape(["compute", "--ckpt", str(resnet20_ckpt), "--out", str(out), *GRID], data_root)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_surface(out, reference)
