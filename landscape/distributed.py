"""One surface computed by the ranks of a torch.distributed job: `torchrun`, `srun ... torchrun`, or `--workers N`.

The work is a `surface.Work`: the loss and accuracy of `landscape compute`, or the convexity map of
`landscape convexity` (λmin, λmax of the Hessian at the points of an existing surface file); the same plan, claims,
result channel, writer and faults serve both.

How the work is split: rank 0 takes the file's writer lock, creates or resumes the file exactly as one process
does, and publishes a plan in the job's c10d store (the TCP key-value store that torchrun already runs): the
resolved spec, the directions, the image indices and the pending points. Every rank, rank 0 included, then
claims the next group of `points_per_pass` points from a shared counter (`store.add`), so a fast rank simply
claims more and a slow one holds nobody back. Results travel back through the store as exact float64 text; a
writer thread on rank 0 writes them into the file point by point as they arrive, so `landscape info` and the
app follow the run as they follow a single process. No collective runs per point: the process group (gloo on
the CPU, NCCL + gloo on CUDA, one GPU per local rank) serves the start barrier.

Faults: every rank beats a counter in the store once a second. A rank whose work raises posts the error there,
and the run stops with that one line; a rank that misses its heartbeat for `rank_timeout` seconds (killed,
node lost) stops it too. Finished points are in the file, which stays readable; the same command resumes it
with any number of ranks, 1 included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .directions import Direction, center_of, check_same_keys, direction_names
from .errors import LandscapeError, resume_advice
from .evaluate import RunOptions
from .spec import CurvatureMapSpec, SurfaceSpec, as_stored
from .storage import Surface, read_surface, write_points, writer_lock
from .surface import (
    Job,
    Progress,
    Work,
    check_out_folder,
    chunks,
    different_images,
    image_fingerprints,
    job_images,
    surface_work,
    work_from_description,
)

HEARTBEAT_SECONDS = 1.0
POLL_SECONDS = 0.02
RANK_TIMEOUT = 60.0  # seconds without a heartbeat before a rank counts as lost


@dataclass(frozen=True)
class World:
    """This process's place in a torch.distributed job, as torchrun (or srun + torchrun) describes it."""

    rank: int
    size: int
    local_rank: int

    @staticmethod
    def from_env(environ: Mapping[str, str] = os.environ) -> World | None:
        """The world of a process launched by torchrun; None outside one (no RANK/WORLD_SIZE)."""
        if "RANK" not in environ or "WORLD_SIZE" not in environ:
            return None
        try:
            rank, size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
            local_rank = int(environ.get("LOCAL_RANK", rank))
        except ValueError:
            raise LandscapeError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
        if size < 1 or not 0 <= rank < size or local_rank < 0:
            raise LandscapeError(f"inconsistent torch.distributed environment: RANK={rank}, WORLD_SIZE={size}")
        return World(rank, size, local_rank)


class RunStopped(LandscapeError):
    """The run stopped for a reason outside this rank's own work; `reported` when the rank that failed has
    already printed the reason (every rank that fails prints its own line, the others stop quietly)."""

    def __init__(self, message: str, reported: bool) -> None:
        super().__init__(message)
        self.reported = reported


def rank_device(device: str, world: World) -> torch.device:
    """The device of this rank: `auto` and `cuda` mean the GPU of its local rank."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise LandscapeError("--device cuda: no CUDA device is available")
        if world.local_rank >= torch.cuda.device_count():
            raise LandscapeError(
                f"local rank {world.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many ranks per node"
            )
        return torch.device("cuda", world.local_rank)
    return torch.device(device)


class Channel:
    """The job's c10d store seen as the surface's work queue, result log and fault board."""

    def __init__(self, store: dist.Store, world: World) -> None:
        self.store, self.world = store, world
        self._stop_beating = threading.Event()
        self.working = False  # points are being computed: a failure now leaves finished points to resume from

    # --- plan -------------------------------------------------------------------------------------------------
    def publish_plan(self, job: Job, spec_dict: dict[str, Any], points_per_pass: int) -> None:
        buffer = io.BytesIO()
        torch.save({axis: {k: v.cpu() for k, v in d.items()} for axis, d in job.directions.items()}, buffer)
        self.store.set("directions", buffer.getvalue())  # type: ignore[arg-type]  # bytes are fine
        indices = {split: images.indices for split, images in job.datasets.items()}
        if job.bn_set is not None:
            indices["bn"] = job.bn_set.indices
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v, dtype=np.int64) for k, v in indices.items()})  # type: ignore[arg-type]
        self.store.set("indices", buffer.getvalue())  # type: ignore[arg-type]
        plan = {
            "spec": spec_dict,
            "curvature": None if job.curvature is None else as_stored(job.curvature),
            "todo": job.todo.tolist(),
            "total": job.total,
            "points_per_pass": points_per_pass,
            "fingerprints": image_fingerprints(job.datasets, job.bn_set),  # every rank must hold the same images
        }
        self.store.set("plan", json.dumps(plan))

    def wait_plan(self, timeout: float) -> dict[str, Any]:
        beats: dict[int, tuple[int, float]] = {}
        while not self.store.check(["plan"]):
            self.raise_if_aborted()
            self.check_alive([0], beats, timeout)
            time.sleep(POLL_SECONDS * 5)
        plan: dict[str, Any] = json.loads(self.store.get("plan"))
        return plan

    def directions(self, like: Direction) -> dict[str, Direction]:
        loaded = torch.load(io.BytesIO(self.store.get("directions")), weights_only=True)
        for axis, direction in loaded.items():
            check_same_keys(direction, like, f"rank 0's {axis} direction", "this rank's model")
        return {str(axis): dict(direction) for axis, direction in loaded.items()}

    def indices(self) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.store.get("indices")), allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}

    # --- work -------------------------------------------------------------------------------------------------
    def claim(self) -> int:
        """The next group of points to evaluate (a number past the last group means: nothing left)."""
        return int(self.store.add("claimed", 1)) - 1

    def post(self, group: int, values: dict[str, np.ndarray]) -> None:
        payload = {"group": group, "rank": self.world.rank, "values": {k: v.tolist() for k, v in values.items()}}
        slot = int(self.store.add("posted", 1)) - 1
        self.store.set(f"result/{slot}", json.dumps(payload))  # json writes float64 exactly (repr round-trips)

    def result(self, slot: int, beats: dict[int, tuple[int, float]], timeout: float) -> tuple[int, dict[str, Any]]:
        """Result number `slot` as it arrives (rank 0's writer), watching for aborts and lost ranks meanwhile."""
        key = f"result/{slot}"
        last_check = 0.0
        while not self.store.check([key]):
            now = time.monotonic()
            if now - last_check > HEARTBEAT_SECONDS / 2:
                self.raise_if_aborted()
                self.check_alive(range(self.world.size), beats, timeout)
                last_check = now
            time.sleep(POLL_SECONDS)
        payload = json.loads(self.store.get(key))
        self.store.delete_key(key)
        return int(payload["group"]), {k: np.asarray(v, dtype=np.float64) for k, v in payload["values"].items()}

    def has_result(self, slot: int) -> bool:
        return bool(self.store.check([f"result/{slot}"]))

    def finish(self) -> None:
        self.store.set(f"finished/{self.world.rank}", "1")

    def complete(self) -> None:
        self.store.set("complete", "1")

    def wait_complete(self, timeout: float) -> None:
        beats: dict[int, tuple[int, float]] = {}
        while not self.store.check(["complete"]):
            self.raise_if_aborted()
            self.check_alive([0], beats, timeout)
            time.sleep(POLL_SECONDS * 5)

    # --- faults -----------------------------------------------------------------------------------------------
    def abort(self, message: str) -> None:
        """Post the first error of the run (later ones are dropped: the first is the cause)."""
        self.store.compare_set("abort", "", message)

    def aborted(self) -> str | None:
        if not self.store.check(["abort"]):
            return None
        return self.store.get("abort").decode("utf-8", "replace")

    def raise_if_aborted(self) -> None:
        message = self.aborted()
        if message is not None:
            raise RunStopped(message, reported=True)

    def check_alive(self, ranks: Iterable[int], beats: dict[int, tuple[int, float]], timeout: float) -> None:
        """Raise RunStopped when one of `ranks` (not yet finished) has not beaten for `timeout` seconds.

        `beats` holds what this rank saw: rank -> (count, when it last changed), and under -1 when it last looked.
        If this rank itself was not looking for a while (the whole job suspended, or starved of CPU), every clock
        restarts: a silence it could not have observed proves nothing."""
        now = time.monotonic()
        last_look = beats.get(-1, (0, now))[1]
        beats[-1] = (0, now)
        if now - last_look > timeout / 2:
            for rank, (count, _) in list(beats.items()):
                beats[rank] = (count, now)
        for rank in ranks:
            if rank == self.world.rank or self.store.check([f"finished/{rank}"]):
                continue
            count = int(self.store.add(f"beat/{rank}", 0))
            seen = beats.get(rank)
            if seen is None or seen[0] != count:
                beats[rank] = (count, now)
            elif now - seen[1] > timeout:
                message = f"rank {rank} stopped responding (no heartbeat for {timeout:.0f} s: killed or lost)"
                self.abort(message)
                raise RunStopped(message, reported=False)

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        def beat() -> None:
            while not self._stop_beating.wait(HEARTBEAT_SECONDS):
                try:
                    self.store.add(f"beat/{self.world.rank}", 1)
                except Exception:  # the store is gone: the main thread finds out on its next request
                    return

        self.store.add(f"beat/{self.world.rank}", 1)
        thread = threading.Thread(target=beat, name="landscape-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop_beating.set()
            thread.join(timeout=5)


def join_world(world: World, device: torch.device) -> dist.Store:
    """Rendezvous (env://, as torchrun sets it up) and start the process group; returns this run's store."""
    try:
        store, rank, size = next(dist.rendezvous("env://", timeout=timedelta(minutes=10)))
    except (RuntimeError, ValueError) as e:
        raise LandscapeError(f"cannot join the torch.distributed job: {str(e).splitlines()[0]}") from None
    if (rank, size) != (world.rank, world.size):
        raise LandscapeError(f"rendezvous gave rank {rank} of {size}, the environment says {world.rank}")
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        store=store,
        rank=rank,
        world_size=size,
        device_id=device if device.type == "cuda" else None,
        timeout=timedelta(minutes=10),
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"landscape/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{attempt}/", store)


def compute_surface_distributed(
    spec: SurfaceSpec,
    out: str | Path,
    options: RunOptions,
    world: World,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    rank_timeout: float = RANK_TIMEOUT,
) -> Surface | None:
    """`compute_surface` spread over the ranks of `world`: call it in every rank with the same arguments.

    Rank 0 returns the surface read back; the other ranks return None. Raises LandscapeError (RunStopped on
    the ranks that stop because of another one) when the run cannot finish; finished points stay in the file.
    """
    work = surface_work(spec, out, overwrite=overwrite)
    return run_distributed(work, options, world, progress=progress, rank_timeout=rank_timeout)


def run_distributed(
    work: Work,
    options: RunOptions,
    world: World,
    *,
    progress: Progress | None = None,
    rank_timeout: float = RANK_TIMEOUT,
) -> Surface | None:
    """`surface.run_work` spread over the ranks of `world` (the loss surface, or the convexity map of a surface
    file): call it in every rank with the same work. Rank 0 returns the surface read back, the others None."""
    options.validate()
    device = rank_device(options.device, world)
    options = dataclasses.replace(options, device=str(device)).resolved()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out = work.out
    store = join_world(world, device)
    channel = Channel(store, world)
    try:
        with channel.heartbeat():
            dist.barrier()  # every rank is up before rank 0 takes the lock and starts the clock on heartbeats
            try:
                if world.rank == 0:
                    return _lead(channel, work, options, progress, rank_timeout)
                _follow(channel, work, options, rank_timeout)
                return None
            except (RunStopped, KeyboardInterrupt):
                with contextlib.suppress(Exception):
                    channel.abort(f"rank {world.rank} was stopped")
                raise
            except Exception as e:
                error = _as_rank_error(e, world, out, channel.working)
                with contextlib.suppress(Exception):
                    channel.abort(str(error))
                raise error from e
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _as_rank_error(error: BaseException, world: World, out: Path, working: bool) -> LandscapeError:
    """This rank's own failure as the one line it prints, posted for the other ranks to stop on."""
    text = str(error).splitlines()[0] if str(error) else ""
    prefix = "" if isinstance(error, LandscapeError) else f"{type(error).__name__}: "
    line = f"rank {world.rank}: {prefix}{text}"
    return LandscapeError(_stopped_line(line, out) if working else line)


def _lead(
    channel: Channel,
    work: Work,
    options: RunOptions,
    progress: Progress | None,
    rank_timeout: float,
) -> Surface:
    out = work.out
    spec, model = work.load()
    with writer_lock(out):
        job = work.prepare(spec, model, options)
        spec_dict = as_stored(job.spec)
        channel.publish_plan(job, spec_dict, options.points_per_pass)
        channel.working = True
        done = job.total - len(job.todo)
        if progress:
            progress(done, job.total)
        groups = chunks(job.todo, options.points_per_pass)
        writer_error: list[BaseException] = []

        def write_results() -> None:
            nonlocal done
            beats: dict[int, tuple[int, float]] = {}
            try:
                slot = 0
                while slot < len(groups):  # all results that have arrived go into the file in one write
                    arrived = [channel.result(slot, beats, rank_timeout)]
                    slot += 1
                    while slot < len(groups) and channel.has_result(slot):
                        arrived.append(channel.result(slot, beats, rank_timeout))
                        slot += 1
                    indices = np.concatenate([groups[group] for group, _ in arrived])
                    values = {k: np.concatenate([v[k] for _, v in arrived]) for k in arrived[0][1]}
                    write_points(out, indices, values, mask=job.mask)
                    done += len(indices)
                    if progress:
                        progress(done, job.total)
                channel.complete()
            except BaseException as e:
                writer_error.append(e)

        writer = threading.Thread(target=write_results, name="landscape-writer", daemon=True)
        writer.start()
        try:
            _work(channel, job, options, groups, stop=lambda: bool(writer_error))
        except RunStopped:
            writer.join(timeout=2 * HEARTBEAT_SECONDS)  # the writer may have found the cause (a lost rank)
            if not writer_error:
                raise
        while writer.is_alive():
            writer.join(timeout=0.2)  # a plain join would not let Ctrl-C through
        if writer_error:
            error = writer_error[0]
            if isinstance(error, RunStopped):
                raise RunStopped(_stopped_line(str(error), out), reported=error.reported) from None
            raise error
        return read_surface(out)


def _stopped_line(cause: str, out: Path) -> str:
    return f"{cause}; the run stopped: finished points are saved in {out}, run the same command again to resume"


def _follow(channel: Channel, work: Work, options: RunOptions, rank_timeout: float) -> None:
    plan = channel.wait_plan(rank_timeout)
    own_spec, model = work.rank_model(plan)
    lead_spec = SurfaceSpec.from_dict(plan["spec"])
    if lead_spec.checkpoint.sha256 != own_spec.checkpoint.sha256:
        raise LandscapeError(f"{own_spec.checkpoint.path} on this rank is not the checkpoint rank 0 read")
    curvature = None if plan["curvature"] is None else CurvatureMapSpec.from_dict(plan["curvature"])
    center = center_of(model, direction_names(model, own_spec.x.dir_type))
    datasets, bn_set = job_images(own_spec, curvature, channel.indices())
    different = different_images(image_fingerprints(datasets, bn_set), plan["fingerprints"])
    if different is not None:  # another copy of the data on this node: its points would not be the surface's
        words, here, lead = different
        raise LandscapeError(
            f"the {words} on this rank differ from rank 0's (sha256 {here[:12]}... here, {lead[:12]}... on rank 0): "
            "give every rank the same data"
        )
    channel.working = True
    todo = np.asarray(plan["todo"], dtype=np.int64)
    directions = channel.directions(center)
    job = Job(own_spec, model, center, directions, datasets, bn_set, todo, int(plan["total"]), curvature=curvature)
    _work(channel, job, options, chunks(todo, int(plan["points_per_pass"])))
    channel.wait_complete(rank_timeout)


def _work(
    channel: Channel,
    job: Job,
    options: RunOptions,
    groups: list[np.ndarray],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Claim groups of points until none is left (or `stop()`); post each group's metrics."""
    if groups:
        evaluator = job.evaluator(options)
        coefficients = job.coefficients
        while not stop():
            channel.raise_if_aborted()
            group = channel.claim()
            if group >= len(groups):
                break
            channel.post(group, evaluator.evaluate(coefficients[groups[group]]))
    channel.finish()


# --- `--workers N`: local ranks through torch.distributed's own launcher --------------------------------------


def auto_workers(device: str) -> int:
    """`--workers auto`: one rank per GPU on CUDA; on the CPU one single-threaded rank per core, at most 8
    (on a 2-core CPU, 2 ranks x 1 thread evaluate 3-10% faster than 1 rank x 2 threads once started, and start
    4 s later: docs/benchmarks.md)."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, min(8, len(os.sched_getaffinity(0))))


def parse_workers(text: str, device: str) -> int:
    if text == "auto":
        return auto_workers(device)
    try:
        workers = int(text)
    except ValueError:
        raise LandscapeError(f"--workers must be a number or 'auto', not {text[:20]!r}") from None
    if workers < 1:
        raise LandscapeError("--workers must be at least 1")
    cores = len(os.sched_getaffinity(0))
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if on_cpu and workers > cores:  # each rank holds the model and the images: 99 ranks filled 23 GB
        raise LandscapeError(
            f"--workers {workers}: this CPU has {cores} cores for the ranks, at most one single-threaded rank each"
        )
    return workers


def launch_workers(
    work: Work,
    options: RunOptions,
    workers: int,
    *,
    show_progress: bool = True,
    rank_timeout: float = RANK_TIMEOUT,
) -> Surface:
    """Run `work` (the surface, or a convexity map) with `workers` local ranks started by torch's elastic launcher
    (as torchrun does).

    On the CPU the cores are split between the ranks (OMP_NUM_THREADS). The job goes to the ranks as a JSON file
    in a private temporary folder; they run `python -m landscape.distributed JOB`. Returns the surface read back.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    options.validate()
    out = work.out
    check_out_folder(out)
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    job = {
        "work": {**work.description, "out": str(out.resolve())},
        "options": dataclasses.asdict(options),
        "progress": show_progress,
        "rank_timeout": rank_timeout,
        "threads": threads,
    }
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=workers,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
    )
    with tempfile.TemporaryDirectory(prefix="landscape-job-") as folder, _quiet_elastic_logs():
        job_file = Path(folder) / "job.json"
        job_file.write_text(json.dumps(job))
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            elastic_launch(config, sys.executable)("-m", "landscape.distributed", str(job_file))
        except ChildFailedError as e:
            raise _launch_failure(e, out) from None
        except SignalException as e:  # the launcher stopped the ranks on Ctrl-C or SIGTERM
            if e.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise WorkersFailed(_stopped_line(f"stopped by {e.sigval.name}", out), False, 128 + e.sigval) from None
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
    return read_surface(out)


class WorkersFailed(LandscapeError):
    """The ranks of `--workers` stopped; `reported` when a rank already printed the reason, `exit_code` to pass on."""

    def __init__(self, message: str, reported: bool, exit_code: int) -> None:
        super().__init__(message)
        self.reported, self.exit_code = reported, exit_code


REPORTED_EXIT_CODES = (1, 2, 3)  # run_job_file: an error printed, a LandscapeError printed, stopped by another rank


def _launch_failure(error: Any, out: Path) -> WorkersFailed:
    """The first rank that failed, as one line; quiet when that rank printed its own. A rank that stopped because
    another failed (exit 3) comes after every other: the exit status is the failing rank's."""
    rank, failure = min(error.failures.items(), key=lambda item: (item[1].exitcode == 3, item[1].timestamp))
    if failure.exitcode in REPORTED_EXIT_CODES:
        return WorkersFailed(f"rank {rank} exited with code {failure.exitcode}", True, failure.exitcode)
    if failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        return WorkersFailed(_stopped_line(f"rank {rank} (pid {failure.pid}) was killed by {name}", out), False, 1)
    return WorkersFailed(_stopped_line(f"rank {rank} exited with code {failure.exitcode}", out), False, 1)


@contextlib.contextmanager
def _quiet_elastic_logs() -> Iterator[None]:
    """The elastic agent logs every start and stop (INFO, WARNING) and a failed rank (ERROR, with its pid); the user
    gets our one line instead, which names the rank and the cause. Each of torch's modules sets its own logger's
    level, so the loggers are switched off one by one (those of the modules imported by now: all that log here)."""
    import logging

    names = [
        name
        for name in list(logging.Logger.manager.loggerDict)
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher"))
    ]
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, before, strict=True):
            logger.disabled = disabled


def run_job_file(path: str) -> int:
    """Entry point of one `--workers` rank: read the job its parent wrote, compute, return an exit status.

    Every rank that fails prints its own line (exit 1 or 2); a rank stopped by another one's failure stays quiet
    (exit 3) unless it found the cause itself (a lost rank)."""
    from .cli import progress_bar

    world = World.from_env()
    if world is None:
        print("error: python -m landscape.distributed runs under torch.distributed's launcher", file=sys.stderr)
        return 2
    job = json.loads(Path(path).read_text())
    torch.set_num_threads(int(job["threads"]))
    bar_of_another_rank = bool(job["progress"]) and world.rank != 0

    def say(line: str) -> None:
        """One line on the shared stderr, on a line of its own even while rank 0's progress bar is mid-line (its
        advice to rerun fixed for a run started with --overwrite)."""
        line = resume_advice(line, bool(job["work"].get("overwrite")))
        print(f"\n{line}" if bar_of_another_rank else line, file=sys.stderr)

    try:
        work = work_from_description(job["work"])
        options = RunOptions(**job["options"])
        with progress_bar() as progress:
            run_distributed(
                work,
                options,
                world,
                progress=progress if job["progress"] and world.rank == 0 else None,
                rank_timeout=float(job["rank_timeout"]),
            )
    except RunStopped as e:
        if not e.reported:
            say(f"error: {e}")
        return 3
    except LandscapeError as e:
        say(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        text = str(e).splitlines()[0] if str(e) else ""
        say(f"error: rank {world.rank}: {type(e).__name__}: {text}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_job_file(sys.argv[1]))
