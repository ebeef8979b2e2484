"""The `landscape` command line: parses options, builds specs, calls one library function, prints."""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from .analysis import TURN_TOLERANCE, Comparison
from .errors import LandscapeError, resume_advice
from .files import check_not_input, check_writable, write_file
from .hardware import bf16_warning

app = typer.Typer(
    help="Loss-landscape surfaces of PyTorch models (Li et al., NeurIPS 2018).",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: texts as written, option names never cut at 80 columns
    no_args_is_help=True,
    add_completion=False,
)

Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]


def _lanczos_runs(nodes: list[list[float]]) -> str:
    """'3 x 50 Lanczos steps', or the steps of each run where a Krylov space closed early."""
    steps = sorted({len(n) for n in nodes})
    each = str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
    return f"{len(nodes)} x {each} Lanczos steps"


RESUMABLE_COMMANDS = ("compute", "convexity", "demo")  # their files keep every finished point
FIGURE_PACKAGES = ("plotly", "streamlit", "kaleido")  # the `app` extra: figures, exports and the app


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors into one line on stderr and a non-zero exit; `--debug` shows the traceback instead.

    The commands do not declare `--debug`: typer reads the options from the signature, so the wrapper's signature
    is the command's with a keyword-only `debug` parameter added, which only the wrapper reads."""

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:  # `landscape info FILE | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except LandscapeError as e:
            if debug:
                raise
            typer.echo(resume_advice(f"error: {e}", bool(kwargs.get("overwrite"))), err=True)
            signalled = getattr(e, "exit_code", 0)  # --workers stopped by a signal: 128 + its number, as the shell's
            raise typer.Exit(signalled if isinstance(signalled, int) and signalled > 128 else 2) from None
        except KeyboardInterrupt:
            if command.__name__ == "train":
                line = "interrupted: the run's last saved state is kept; continue it with --resume"
            elif command.__name__ in RESUMABLE_COMMANDS:
                line = "interrupted: finished points are saved; run the same command again to resume"
            else:  # their outputs are written whole at the end, or not at all
                line = "interrupted: nothing was written"
            typer.echo(resume_advice(line, bool(kwargs.get("overwrite"))), err=True)
            raise typer.Exit(130) from None
        except Exception as e:
            if debug:
                raise
            package = (getattr(e, "name", None) or "").split(".")[0] if isinstance(e, ModuleNotFoundError) else ""
            if package in FIGURE_PACKAGES:  # an extra not installed: what to install, not a failure of ours
                typer.echo(
                    f"error: this command needs {package}: pip install -e '.[app]' (plotly, streamlit, kaleido)",
                    err=True,
                )
                raise typer.Exit(2) from None
            typer.echo(
                f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                "(run with --debug for the traceback)",
                err=True,
            )
            raise typer.Exit(1) from None

    signature = inspect.signature(command, eval_str=True)
    debug = inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Debug)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), debug]
    )
    wrapper.__annotations__ = {**command.__annotations__, "debug": Debug}
    return wrapper


def _floats(text: Optional[str], what: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise LandscapeError(f"{what} must be comma-separated numbers, e.g. 0.4914,0.4822,0.4465") from None


@app.command()
@friendly
def compute(
    ckpt: Annotated[Path, typer.Option(help="Checkpoint of the trained model θ* (.pt, .pth, .safetensors).")],
    out: Annotated[Path, typer.Option(help="Surface file to write (HDF5). Re-running resumes it.")],
    x: Annotated[
        Optional[str],
        typer.Option(
            help="x axis as START:STOP:NUM (default -1:1:51); with --trajectory also NUM: bounds from the path."
        ),
    ] = None,
    y: Annotated[
        Optional[str],
        typer.Option(help="y axis as START:STOP:NUM; omit for a 1D curve (--trajectory: NUM, default 51 points)."),
    ] = None,
    arch: Annotated[
        Optional[str],
        typer.Option(help="Architecture when the checkpoint does not record one (see `landscape models`)."),
    ] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes, when the checkpoint does not say.")] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Seed of a random x direction; y uses seed + 1. [default: 0]")
    ] = None,
    xnorm: Annotated[
        Optional[str], typer.Option(help="Random x direction: filter | layer | model | none. [default: filter]")
    ] = None,
    ynorm: Annotated[
        Optional[str], typer.Option(help="Random y direction: filter | layer | model | none. [default: filter]")
    ] = None,
    xignore: Annotated[
        Optional[str],
        typer.Option(
            help="biasbn (zero direction for tensors of dim <= 1) | none; random x direction or both PCA axes. "
            "[default: biasbn]"
        ),
    ] = None,
    yignore: Annotated[Optional[str], typer.Option(help="Random y direction: biasbn | none. [default: biasbn]")] = None,
    dir_type: Annotated[str, typer.Option(help="weights (parameters) | states (also BN statistics)")] = "weights",
    xtarget: Annotated[
        Optional[Path], typer.Option(help="Second checkpoint: x direction = it − θ* (interpolation, not normalized).")
    ] = None,
    xdir_file: Annotated[Optional[Path], typer.Option(help="Take the x direction from this surface file.")] = None,
    ydir_file: Annotated[Optional[Path], typer.Option(help="Take the y direction from this surface file.")] = None,
    trajectory: Annotated[
        Optional[list[Path]],
        typer.Option(
            help="x, y = the top two principal components of a training trajectory minus θ* (docs/trajectory.md): "
            "a snapshots.h5 of `landscape train`, a folder of checkpoints, or checkpoints (repeat the option).",
            metavar="PATH",
        ),
    ] = None,
    pca_center: Annotated[
        bool, typer.Option(help="--trajectory: subtract the mean of the θ_i − θ* before the PCA (as the paper's code).")
    ] = True,
    trajectory_margin: Annotated[
        float, typer.Option(help="--trajectory: grid bounds = the path's extent plus this share of it on each side.")
    ] = 0.2,
    eigenvectors: Annotated[
        Optional[Path], typer.Option(help="Eigenvector file (.npz) of `landscape hessian`, for --x/ydir-hessian.")
    ] = None,
    xdir_hessian: Annotated[
        Optional[int], typer.Option(help="x direction = Hessian eigenvector K of --eigenvectors (1: the largest).")
    ] = None,
    ydir_hessian: Annotated[
        Optional[int], typer.Option(help="y direction = Hessian eigenvector K of --eigenvectors.")
    ] = None,
    dataset: Annotated[str, typer.Option(help="cifar10 | cifar100 | imagefolder")] = "cifar10",
    data_root: Annotated[Optional[str], typer.Option(help="Data folder; default $LANDSCAPE_DATA_ROOT.")] = None,
    split: Annotated[str, typer.Option(help="train | test | both")] = "train",
    subset: Annotated[Optional[int], typer.Option(help="Evaluate N images per split, drawn with --data-seed.")] = None,
    data_seed: Annotated[int, typer.Option(help="Seed of the --subset draw (and of the --bn-images draw).")] = 0,
    data_part: Annotated[
        int,
        typer.Option(
            help="--subset: the K-th of disjoint draws with --data-seed (0: the usual one; 1: from the images "
            "draw 0 left out; ...), e.g. to measure image-subsampling noise on other images."
        ),
    ] = 0,
    download: Annotated[bool, typer.Option(help="Download CIFAR with torchvision when missing.")] = False,
    image_size: Annotated[
        Optional[int], typer.Option(help="ImageFolder: resize + centre crop to N pixels (1 to 1024).")
    ] = None,
    mean: Annotated[
        Optional[str],
        typer.Option(help="Input normalization mean, e.g. 0.49,0.48,0.45 (overrides the one the checkpoint records)."),
    ] = None,
    std: Annotated[Optional[str], typer.Option(help="Input normalization std, likewise.")] = None,
    bn: Annotated[str, typer.Option(help="eval (stored BN statistics) | recompute (re-estimated per point)")] = "eval",
    bn_images: Annotated[
        Optional[int], typer.Option(help="--bn recompute: training images used (at least 2; default 1280).")
    ] = None,
    precision: Annotated[
        str, typer.Option(help="fp32 | bf16 (autocast; warns where the hardware only emulates bf16)")
    ] = "fp32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[
        Optional[int], typer.Option(help="Images per forward pass (default: 128 on the CPU, 1000 on CUDA).")
    ] = None,
    channels_last: Annotated[bool, typer.Option(help="Channels-last memory format.")] = True,
    fold_bn: Annotated[
        bool,
        typer.Option(
            help="Fold BatchNorm into the convolutions (exact up to rounding; "
            "at bf16 it adds rounding: see docs/benchmarks.md)."
        ),
    ] = True,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (pays off on large grids).")] = False,
    points_per_pass: Annotated[int, typer.Option(help="Grid points per vmapped forward pass.")] = 1,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing --out file (of another spec, or recompute this one).")
    ] = False,
    workers: Annotated[
        Optional[str],
        typer.Option(
            help="Local ranks on torch.distributed (N or auto: one per GPU; on the CPU one 1-thread rank per core, "
            "at most 8). Under torchrun the ranks come from torchrun instead."
        ),
    ] = None,
    rank_timeout: Annotated[
        float, typer.Option(help="Several ranks: stop the run when a rank sends no heartbeat for this many seconds.")
    ] = 60.0,
) -> None:
    """Compute f(α, β) = L(θ* + αδ + βη) on a grid into an HDF5 surface file.

    Runs in one process, in N local ranks (--workers N), or in every rank of a torchrun job
    (`torchrun --nproc-per-node N -m landscape compute ...`): see docs/distributed.md.
    """
    from .data import DataSpec
    from .directions import DirectionSpec
    from .evaluate import EvalSpec, RunOptions
    from .grid import Axis, GridSpec
    from .surface import CheckpointSpec, SurfaceSpec

    def direction(
        norm: str, ignore: str, seed_: int, target: Optional[Path], source: Optional[Path], axis: str
    ) -> DirectionSpec:
        if target is not None:
            return DirectionSpec(kind="target", norm="none", ignore="none", dir_type=dir_type, target=str(target))
        if source is not None:
            return DirectionSpec(
                kind="file", norm="none", ignore="none", dir_type=dir_type, source=str(source), source_axis=axis
            )
        return DirectionSpec(kind="random", seed=seed_, norm=norm, ignore=ignore, dir_type=dir_type)

    if ydir_file is not None and not y and not trajectory:
        raise LandscapeError("--ydir-file needs a 2D grid: give --y")
    if bn_images is not None and bn != "recompute":  # recorded in the spec, yet without effect
        raise LandscapeError("--bn-images goes with --bn recompute (--bn eval uses the stored statistics)")
    if not trajectory and (not pca_center or trajectory_margin != 0.2):
        raise LandscapeError("--no-pca-center and --trajectory-margin go with --trajectory")
    if data_seed != 0 and subset is None and bn != "recompute":  # without --subset every image is taken, in order
        raise LandscapeError("--data-seed goes with --subset or --bn recompute (it seeds the draws of the images)")
    given = _random_direction_options(
        {"x": xtarget or xdir_file or (xdir_hessian is not None), "y": ydir_file or (ydir_hessian is not None)},
        bool(trajectory),
        bool(y) or bool(trajectory),
        {"--seed": seed, "--xnorm": xnorm, "--ynorm": ynorm, "--xignore": xignore, "--yignore": yignore},
    )
    seed = 0 if seed is None else seed
    xnorm, ynorm = given["--xnorm"] or "filter", given["--ynorm"] or "filter"
    xignore, yignore = given["--xignore"] or "biasbn", given["--yignore"] or "biasbn"
    if trajectory:  # axes of NUM points get their bounds from the path (_pca_or_hessian)
        grid = GridSpec(_axis_or_count(x, "--x"), _axis_or_count(y, "--y"))
    else:
        grid = GridSpec(Axis.parse(x or "-1:1:51"), Axis.parse(y) if y else None)
    spec = SurfaceSpec(
        checkpoint=CheckpointSpec(
            path=str(ckpt), arch=arch, num_classes=num_classes, mean=_floats(mean, "--mean"), std=_floats(std, "--std")
        ),
        data=DataSpec(
            name=dataset,
            root=data_root or "",
            split=split,
            subset=subset,
            seed=data_seed,
            part=data_part,
            download=download,
            image_size=image_size,
        ),
        grid=grid,
        x=direction(xnorm, xignore, seed, xtarget, xdir_file, "x"),
        y=direction(ynorm, yignore, seed + 1, None, ydir_file, "y") if y else None,
        evaluation=EvalSpec(
            precision=precision, bn=bn, bn_images=EvalSpec.bn_images if bn_images is None else bn_images
        ),
    )
    spec = _pca_or_hessian(
        spec,
        (x, y),
        trajectory,
        pca_center,
        trajectory_margin,
        eigenvectors,
        (xdir_hessian, ydir_hessian),
        (xtarget is not None or xdir_file is not None, ydir_file is not None),
    )
    options = RunOptions(
        device=device,
        batch_size=batch_size,
        channels_last=channels_last,
        fold_bn=fold_bn,
        compile=compile,
        points_per_pass=points_per_pass,
    )
    warning = bf16_warning(precision, device)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    surface = _run_compute(spec, out, options, overwrite, workers, rank_timeout)
    if surface is not None:
        _print_summary(surface)
        _print_trajectory(surface)


def _random_direction_options(
    fixed: dict[str, Any], trajectory: bool, two_d: bool, given: dict[str, Any]
) -> dict[str, Any]:
    """`given` (the options of random directions, None where not given), refusing one that no direction of the run
    would use: an axis whose direction comes from a target, a file, Hessian eigenvectors or --trajectory is used as
    it is (--trajectory takes --xignore for both PCA axes)."""
    used = {
        "--xnorm": not trajectory and not fixed["x"],
        "--ynorm": two_d and not trajectory and not fixed["y"],
        "--xignore": trajectory or not fixed["x"],
        "--yignore": two_d and not trajectory and not fixed["y"],
    }
    used["--seed"] = used["--xnorm"] or used["--ynorm"]
    for option, value in given.items():
        if value is None or used[option]:
            continue
        if option.startswith("--y") and not two_d:
            raise LandscapeError(f"{option} sets the y direction, and there is none: give --y for a 2D grid")
        if trajectory:
            why = "the PCA directions of --trajectory are used as they are (--xignore applies to both)"
        else:
            why = "the direction of a target, a file or Hessian eigenvectors is used as it is"
        raise LandscapeError(f"{option} sets random directions, and no direction here is random: {why}")
    return given


def _axis_or_count(text: Optional[str], option: str) -> Any:
    """START:STOP:NUM as given, or NUM points (default 51) on a placeholder axis whose bounds the path will set."""
    from .grid import Axis

    if text is not None and ":" in text:
        return Axis.parse(text)
    try:
        count = int(text) if text is not None else 51
    except ValueError:
        raise LandscapeError(f"{option} '{text}': use NUM or START:STOP:NUM, e.g. 21 or -1:1:21") from None
    if count < 1:
        raise LandscapeError(f"{option} {count}: an axis needs at least one point")
    return Axis(-1.0, 1.0, count) if count > 1 else Axis.parse("0:0:1")


def _pca_or_hessian(
    spec: Any,
    axes: tuple[Optional[str], Optional[str]],
    trajectory: Optional[list[Path]],
    pca_center: bool,
    margin: float,
    eigenvectors: Optional[Path],
    hessian: tuple[Optional[int], Optional[int]],
    other_source: tuple[bool, bool],
) -> Any:
    """The spec with the directions of --trajectory (PCA; axes given as NUM get their bounds from the path) or of
    --xdir-hessian/--ydir-hessian; one source per axis."""
    import dataclasses

    from .directions import DirectionSpec
    from .spec import TrajectorySpec
    from .trajectory import trajectory_grid

    for axis, k in enumerate("xy"):
        if sum([bool(trajectory), hessian[axis] is not None, other_source[axis]]) > 1:
            raise LandscapeError(
                f"choose one source for the {k} direction: --trajectory, --{k}dir-hessian"
                + (", --xtarget or --xdir-file" if k == "x" else " or --ydir-file")
            )
    if (eigenvectors is None) != (hessian == (None, None)):
        raise LandscapeError(
            "--xdir-hessian and --ydir-hessian take eigenvectors from --eigenvectors FILE.npz: give both"
        )
    if eigenvectors is not None:
        replaced = {}
        for k, index in zip("xy", hessian):
            if index is not None:
                if getattr(spec, k) is None:
                    raise LandscapeError(f"--{k}dir-hessian needs a 2D grid: give --y")
                replaced[k] = DirectionSpec(
                    kind="hessian", source=str(eigenvectors), index=index, norm="none", ignore="none"
                )
        spec = dataclasses.replace(spec, **replaced)
    if not trajectory:
        return spec
    ignore, dir_type = spec.x.ignore, spec.x.dir_type
    spec = dataclasses.replace(
        spec,
        x=DirectionSpec(kind="pca", index=1, norm="none", ignore=ignore, dir_type=dir_type),
        y=DirectionSpec(kind="pca", index=2, norm="none", ignore=ignore, dir_type=dir_type),
        trajectory=TrajectorySpec(paths=tuple(str(p) for p in trajectory), centered=pca_center),
    )
    from_path = [text is None or ":" not in text for text in axes]
    if any(from_path):
        spec.validate()
        nums = [axis.num if wanted else None for axis, wanted in zip((spec.grid.x, spec.grid.y), from_path)]
        spec = dataclasses.replace(spec, grid=trajectory_grid(spec, nums[0], nums[1], margin))
    return spec


def _print_trajectory(surface: Any) -> None:
    """For a surface on PCA directions: the explained variance and how far the path lies off the plane."""
    from .plots import explained
    from .trajectory import read_trajectory

    path = read_trajectory(surface)
    if path is None:
        return
    ratio = path.explained_variance_ratio
    of = explained(surface)
    share = "explained variance" if of == "variance" else f"share of {of} (--no-pca-center)"
    typer.echo(
        f"  trajectory  {len(path.epochs)} snapshots; {share} x {ratio[0]:.1%}, y {ratio[1]:.1%}; "
        f"off the plane by at most {path.residual.max():.4g} (distance to θ* up to {path.distance.max():.4g})"
    )


def _run_compute(
    spec: Any, out: Path, options: Any, overwrite: bool, workers: Optional[str], rank_timeout: float
) -> Any:
    """The surface of `spec` into `out` (`_run_work`)."""
    from .surface import surface_work

    return _run_work(surface_work(spec, out, overwrite=overwrite), options, workers, rank_timeout)


def _run_work(work: Any, options: Any, workers: Optional[str], rank_timeout: float) -> Any:
    """A surface's per-point work (the loss, or the convexity map) in one process, `--workers` local ranks, or this
    rank of a torchrun job; the surface (None off rank 0)."""
    from .distributed import (
        RunStopped,
        WorkersFailed,
        World,
        launch_workers,
        parse_workers,
        run_distributed,
    )
    from .surface import run_work

    world = World.from_env()
    if not (math.isfinite(rank_timeout) and rank_timeout > 0):  # nan would turn lost-rank detection off
        raise LandscapeError(f"--rank-timeout must be a positive number of seconds, not {rank_timeout}")
    if world is not None and world.size > 1:
        if workers is not None:
            raise LandscapeError("--workers starts its own ranks: leave it out under torchrun")
        try:
            with progress_bar() as progress:
                return run_distributed(
                    work,
                    options,
                    world,
                    progress=progress if world.rank == 0 else None,
                    rank_timeout=rank_timeout,
                )
        except RunStopped as e:
            if e.reported:  # the rank that failed printed the reason
                raise typer.Exit(3) from None
            raise
        except KeyboardInterrupt:
            if world.rank != 0:  # rank 0 says it once
                raise typer.Exit(130) from None
            raise
    count = parse_workers(workers, options.device) if workers is not None else 1
    if count > 1:
        try:
            return launch_workers(work, options, count, rank_timeout=rank_timeout)
        except WorkersFailed as e:
            if e.reported:
                raise typer.Exit(e.exit_code) from None
            typer.echo("", err=True)  # rank 0's progress bar was stopped mid-line: our line starts on its own
            raise
        except KeyboardInterrupt:
            typer.echo("", err=True)
            raise
    with progress_bar() as progress:
        return run_work(work, options, progress)


class progress_bar:
    """A tqdm bar (points/s, ETA) on stderr, fed by compute_surface's progress callback."""

    def __enter__(self) -> Callable[[int, int], None]:
        self.bar = None
        return self.update

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=total, initial=done, unit="pt", desc="grid points", file=sys.stderr, dynamic_ncols=True
            )
        else:
            self.bar.update(done - self.bar.n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(surface: Any) -> None:
    done = int(surface.computed.sum())
    typer.echo(f"{surface.path}: {done}/{surface.computed.size} points computed")
    for name, values in surface.values.items():
        finite = values[surface.computed & np.isfinite(values)]
        bad = int((surface.computed & ~np.isfinite(values)).sum())
        line = f"  {name:<11} min {finite.min():.6g}  max {finite.max():.6g}" if finite.size else f"  {name:<11} -"
        if bad:
            line += f"  ({bad} points are NaN/inf: stored as they are)"
        typer.echo(line)


@app.command()
@friendly
def info(
    file: Annotated[Path, typer.Argument(help="A surface file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Also print the full spec as JSON.")] = False,
) -> None:
    """Show a surface file's spec, grid, completion and value ranges."""
    from .results import describe
    from .storage import read_surface

    surface = read_surface(file)
    description = describe(surface)
    typer.echo(f"{file}: {description.kind}")
    for label, value in description.fields().items():
        typer.echo(f"  {label:<11} {value}")
    if description.sessions:
        typer.echo(f"  {'sessions':<11} {description.sessions}")
    _print_summary(surface)
    if surface.curvature is not None:
        _print_convexity(surface)
    if as_json and not surface.legacy:
        typer.echo(json.dumps(surface.spec, indent=2))


@app.command()
@friendly
def models() -> None:
    """List the registered architectures (also: torchvision:NAME and module.path:callable)."""
    from .models import list_models

    for entry in list_models():
        typer.echo(f"{entry.name:<18} {entry.description}")
    typer.echo("torchvision:NAME   a torchvision image classifier (torchvision.models), e.g. torchvision:resnet18")
    typer.echo("module.path:fn     your own builder, called with num_classes= when it accepts it")


@app.command()
@friendly
def train(
    arch: Annotated[
        str, typer.Option(help="Architecture, e.g. resnet56 or resnet56_noshort (see `landscape models`).")
    ],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, state.pt, log.jsonl, snapshots.h5.")],
    data_root: Annotated[Optional[str], typer.Option(help="Data folder; default $LANDSCAPE_DATA_ROOT.")] = None,
    dataset: Annotated[str, typer.Option(help="cifar10 | cifar100")] = "cifar10",
    download: Annotated[bool, typer.Option(help="Download CIFAR with torchvision when missing.")] = False,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (not on biases and BN).")] = 5e-4,
    schedule: Annotated[str, typer.Option(help="onecycle | cosine")] = "onecycle",
    seed: Annotated[int, typer.Option(help="Seed of initialization, order and augmentation.")] = 0,
    precision: Annotated[
        str,
        typer.Option(
            help="auto | fp32 | bf16 (autocast). auto: bf16 where the hardware "
            "has it natively (AMX, AVX512-BF16, CUDA sm_80+), else fp32; "
            "may change when a run is resumed."
        ),
    ] = "auto",
    channels_last: Annotated[bool, typer.Option(help="Channels-last memory format.")] = True,
    init: Annotated[
        Optional[Path],
        typer.Option(
            help="Start from this checkpoint's weights (a warm restart: a "
            "new learning-rate cycle) instead of a random initialization."
        ),
    ] = None,
    snapshot_every: Annotated[int, typer.Option(help="Save float16 weights every K epochs (0: never).")] = 0,
    eval_images: Annotated[Optional[int], typer.Option(help="Test images evaluated after each epoch.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    compile: Annotated[
        bool,
        typer.Option(
            help="torch.compile the training forward (with CUDA graphs on CUDA; evaluations stay eager); "
            "may change when a run is resumed."
        ),
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue an unfinished run in --out (where it holds none, a new run starts, said).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard what --out holds and start again.")] = False,
    save_minutes: Annotated[
        float,
        typer.Option(help="Also save the state within an epoch every this many minutes (0: only after each epoch)."),
    ] = 5.0,
) -> None:
    """Train a CIFAR model (crop + flip, SGD Nesterov, weight decay, one-cycle/cosine); resumable at any step.

    The state is saved after every epoch and every --save-minutes within one; Ctrl-C or SIGTERM saves it at the
    next step and stops (exit 130 / 143): --resume continues exactly from there."""
    import signal

    from tqdm import tqdm

    from .data import DataSpec, fetch_cifar
    from .train import NONFINITE_CHECK_EVERY, TrainingStopped, TrainSpec
    from .train import train as run_training

    if resume and overwrite:
        raise LandscapeError("--resume and --overwrite exclude each other: continue the run, or start it again")
    if not save_minutes >= 0 or save_minutes == float("inf"):  # nan: never saved within an epoch
        raise LandscapeError(f"--save-minutes must be a finite number >= 0, not {save_minutes}")

    spec = TrainSpec(
        arch=arch,
        data=DataSpec(name=dataset, root=str(Path(data_root).resolve()) if data_root else "", split="train"),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        seed=seed,
        precision=precision,
        channels_last=channels_last,
        snapshot_every=snapshot_every,
        eval_images=eval_images,
        init=str(init) if init else "",
    )
    spec.validate()  # a bad option gets its line before the progress bar is drawn
    if resume and not (out / "state.pt").exists():  # as documented; a mistyped --out must not pass unnoticed
        typer.echo(f"note: {out} holds no saved state: --resume starts a new run there", err=True)
    if download:  # not part of the recipe: a resume without --download finds the same images
        fetch_cifar(spec.data.root, spec.data.name)
    warning = bf16_warning(precision, device)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    bars: list[tqdm] = []  # drawn at the first batch: a run refused before training shows no empty bar
    shown_epoch: list[int] = []  # the epoch the bar shows; a resumed run starts inside one, at step > 1

    def on_batch(epoch: int, step: int, steps: int, running: Callable[[], tuple[float, float]]) -> None:
        if not bars:
            bars.append(tqdm(unit="batch", file=sys.stderr, dynamic_ncols=True))
        bar = bars[0]
        if shown_epoch != [epoch]:
            shown_epoch[:] = [epoch]
            bar.initial = 0  # reset() draws the bar: with the last epoch's initial its rate came out negative
            bar.set_description(f"epoch {epoch}/{epochs}", refresh=False)
            bar.reset(total=steps)
            bar.initial = bar.n = bar.last_print_n = step  # steps before a resume count, not in the rate
            bar.refresh()
        else:
            bar.update(1)
        if step % NONFINITE_CHECK_EVERY == 0 or step == steps:  # the running numbers wait for the device: seldom
            loss, acc = running()
            bar.set_postfix_str(f"loss {loss:.4f} acc {acc:.2f}%", refresh=False)

    def on_epoch(record: dict) -> None:
        tqdm.write(
            f"epoch {record['epoch']:>3}/{epochs}: train loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:.2f}%  test loss {record['test_loss']:.4f} "
            f"acc {record['test_acc']:.2f}%  ({record['seconds']:.0f} s, {record['precision']}"
            f"{', compiled' if record['compiled'] else ''})",
            file=sys.stderr,
        )

    def close_bar() -> None:
        for bar in bars:
            bar.close()

    received: list[int] = []

    def request_stop(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) > 1:  # a second signal: stop now, losing at most the steps since the last save
            raise KeyboardInterrupt
        tqdm.write(f"{signal.Signals(signum).name}: saving the state after this step, then stopping", file=sys.stderr)

    handled = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job of a script ignores Ctrl-C: keep it
        handled.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, request_stop) for signum in handled}
    try:
        meta = run_training(
            spec,
            out,
            device=device,
            compile=compile,
            resume=resume,
            overwrite=overwrite,
            progress=on_epoch,
            on_batch=on_batch,
            save_every_s=save_minutes * 60 if save_minutes > 0 else None,
            stop_requested=lambda: bool(received),
        )
    except TrainingStopped as stopped:
        close_bar()
        same = "the same command without --overwrite" if overwrite else "the same command"
        typer.echo(f"{stopped}: continue with {same} and --resume", err=True)
        raise typer.Exit(128 + received[0]) from None
    except KeyboardInterrupt:
        if len(received) < 2 or received[-1] == signal.SIGINT:
            raise  # Ctrl-C: `friendly` says it and exits 130
        close_bar()
        typer.echo("interrupted: the run's last saved state is kept; continue it with --resume", err=True)
        raise typer.Exit(128 + received[-1]) from None  # a second SIGTERM: 143, as the shell reports it
    finally:
        close_bar()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    typer.echo(
        f"{out / 'checkpoint.pt'}: {arch}, test accuracy {meta['test_acc']:.2f}%, "
        f"train accuracy {meta['train_acc']:.2f}% (all images, eval mode, no augmentation: not the epochs' running "
        f"figure), {meta['wall_time_s']:.0f} s in all"
    )


@app.command()
@friendly
def compare(
    files: Annotated[list[Path], typer.Argument(help="2D surface files to compare.")],
    metric: Annotated[
        Optional[str],
        typer.Option(help="Loss to compare: train_loss or test_loss (default: the first the files hold, train first)."),
    ] = None,
    level: Annotated[
        Optional[float], typer.Option(help="Loss level of the basin area (default: 2 x the largest centre value).")
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(
            help="Turns per line count only moves back by more than this share of the loss (bf16 errs by up to ~1%)."
        ),
    ] = TURN_TOLERANCE,
    json_out: Annotated[
        Optional[Path],
        typer.Option("--json", help="Also write the numbers here (JSON: the settings, one object per surface)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --json file.")] = False,
) -> None:
    """Quantify surfaces side by side: centre, basin area below a level, local minima, roughness, turns per grid line,
    non-convexity."""
    from .analysis import compare as compare_surfaces
    from .analysis import comparison_record
    from .plots import default_metric
    from .storage import read_surface

    if not 0 <= tolerance < 1:
        raise LandscapeError(f"--tolerance must be in [0, 1), not {tolerance}")
    if json_out is not None:
        check_writable(json_out, overwrite, files)
    surfaces = [read_surface(f) for f in files]
    comparison = compare_surfaces(surfaces, metric or default_metric(surfaces, losses_only=True), level, tolerance)
    _warn_incomplete(surfaces, "its numbers will change")
    _print_comparison(comparison)
    if json_out is not None:
        record = comparison_record(comparison, surfaces)
        text = json.dumps(record, indent=2, allow_nan=False)  # NaN is not JSON: the record says null
        write_file(json_out, (text + "\n").encode(), overwrite, files)
        typer.echo(f"wrote {json_out}", err=True)


def _warn_incomplete(surfaces: list[Any], consequence: str) -> None:
    """One warning line per surface not yet complete (a figure or a table of it has gaps)."""
    for surface in surfaces:
        if 0 < surface.completion < 1:
            typer.echo(f"warning: {surface.path} is {surface.completion:.1%} complete: {consequence}", err=True)


def _print_comparison(comparison: Comparison) -> None:
    typer.echo(
        f"{comparison.metric}, basin = connected region around the centre below {comparison.level:.4g}, "
        f"turns that move back by more than {comparison.tolerance:.2%}"
    )
    typer.echo(
        "| surface | centre | minimum | basin area | basin share | local minima | roughness | turns per line "
        "| non-convex share |"
    )
    typer.echo("|---|---|---|---|---|---|---|---|---|")
    for name, s in comparison.rows:
        cell = (name if name.isprintable() else ascii(name)).replace("|", "\\|")  # from the file: one cell, one line
        typer.echo(
            f"| {cell} | {s.center:.4g} | {s.minimum:.4g} | {s.basin_area:.3g} | {s.basin_fraction:.1%} | "
            f"{s.local_minima} | {s.roughness:.4g} | {s.turns_per_line:.2f} | {s.nonconvex_fraction:.1%} |"
        )


@app.command()
@friendly
def plot(
    files: Annotated[
        list[Path], typer.Argument(help="Surface file(s); two or more are drawn side by side on one colour scale.")
    ],
    out: Annotated[Path, typer.Option(help="Figure file to write.")],
    kind: Annotated[
        Optional[str],
        typer.Option(help="surface (3D) | contour | filled | heatmap | 1d; default contour, or 1d for a 1D surface."),
    ] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format", help="pdf | svg | png | html; default: the suffix of --out (an --out without one gets it)."
        ),
    ] = None,
    metric: Annotated[
        Optional[str],
        typer.Option(
            help="train_loss | train_acc | test_loss | test_acc | ... (default: the first loss the files hold, "
            "train first)."
        ),
    ] = None,
    log: Annotated[bool, typer.Option(help="Log scale (tick labels stay in the metric's units).")] = False,
    clip: Annotated[Optional[float], typer.Option(help="Cap values at this maximum.")] = None,
    zrange: Annotated[
        Optional[str], typer.Option(help="Colour (and 3D z) range MIN:MAX, e.g. to match another figure.")
    ] = None,
    levels: Annotated[
        Optional[str],
        typer.Option(
            help="Contour levels START:END:SIZE (SIZE in decades with --log) or a list A,B,C; "
            "default: about 20 round levels, --spacing apart."
        ),
    ] = None,
    spacing: Annotated[
        str,
        typer.Option(
            help="Automatic contour levels: log (log-spaced above the minimum of a loss, the maximum of an "
            "accuracy: dense in the basin) or even."
        ),
    ] = "log",
    labels: Annotated[bool, typer.Option(help="Write the values on the contour lines.")] = False,
    aspect: Annotated[
        str,
        typer.Option(
            help="equal (α and β to one scale) | free | auto (equal unless the directions differ in kind or norm)."
        ),
    ] = "auto",
    elev: Annotated[float, typer.Option(help="3D view: degrees above the α-β plane (as matplotlib's).")] = 30.0,
    azim: Annotated[float, typer.Option(help="3D view: degrees from the α axis (as matplotlib's).")] = -60.0,
    zscale: Annotated[
        float, typer.Option(help="3D height over the longer of the α and β sides (z exaggeration).")
    ] = 0.6,
    floor: Annotated[bool, typer.Option(help="3D: contour lines projected under the surface.")] = True,
    line: Annotated[
        Optional[str],
        typer.Option(
            "--slice",
            help="--kind 1d of a 2D surface: x=B (the row nearest β = B, default x=0), y=A (the column nearest "
            "α = A) or angle=D (the line through θ* at D degrees from α). B or A must lie within the grid.",
        ),
    ] = None,
    width: Annotated[str, typer.Option(help="column (3.25 in) | page (6.75 in) | inches (at least 0.25).")] = "column",
    height: Annotated[
        Optional[float], typer.Option(help="Height in inches, at least 0.25 (default from the width).")
    ] = None,
    font: Annotated[Optional[str], typer.Option(help="Font family (default: Times-like serif).")] = None,
    font_size: Annotated[float, typer.Option(help="Font size in points (at least 1).")] = 8,
    colorscale: Annotated[
        str, typer.Option(help="A plotly colour scale: Viridis, Cividis, RdBu_r, ... (any case; _r reverses).")
    ] = "Viridis",
    center: Annotated[bool, typer.Option(help="Mark θ* at (0, 0).")] = True,
    path: Annotated[
        bool,
        typer.Option(help="Draw the training path of a surface on PCA directions (contour, heatmap, 3D)."),
    ] = True,
    title: Annotated[Optional[str], typer.Option(help="Figure title (papers usually use the caption).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Draw a surface for a paper: vector PDF or SVG (or PNG at 300 dpi, or interactive HTML); a 3D scene is an
    image at 384 ppi inside PDF and SVG."""
    from .export import FIGURE_FORMATS, write_figure
    from .plots import (
        SERIF,
        Camera,
        PlotOptions,
        compare_figure,
        default_metric,
        figure,
        paper_layout,
        parse_levels,
        parse_slice,
    )
    from .storage import read_surface

    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt in FIGURE_FORMATS and not out.suffix:  # `--format svg --out figures/bowl`: figures/bowl.svg
        out = out.with_name(f"{out.name}.{fmt}")
    if not fmt:
        raise LandscapeError(f"--out {out} has no suffix: end it in .{' | .'.join(FIGURE_FORMATS)}, or give --format")
    if fmt not in FIGURE_FORMATS:
        raise LandscapeError(
            f"unknown figure format '{fmt}': use --format {' | '.join(FIGURE_FORMATS)} or an --out ending in one"
        )
    if out.suffix.lower() != f".{fmt}":
        raise LandscapeError(f"--out {out} does not end in .{fmt}")
    check_writable(out, overwrite, files)
    surfaces = [read_surface(f) for f in files]
    options = PlotOptions(
        metric=metric or default_metric(surfaces),
        log=log,
        clip=clip,
        zrange=_range(zrange),
        levels=parse_levels(levels) if levels else None,
        spacing=spacing,
        labels=labels,
        colorscale=colorscale,
        mark_center=center,
        path=path,
        aspect=aspect,
        zscale=zscale,
        camera=Camera(elev=elev, azim=azim),
        floor=floor,
        line=parse_slice(line) if line else parse_slice("x=0"),
    )
    _warn_incomplete(surfaces, "the points not computed yet are missing")
    kind = kind or ("1d" if surfaces[0].ndim == 1 else "contour")
    if line is not None and kind != "1d":
        raise LandscapeError(f"--slice goes with --kind 1d (a line through a 2D surface), not --kind {kind}")
    if fmt == "html" and kind != "1d":  # every contour level holds the whole grid
        surfaces, options = _thinned_for_html(surfaces, options)
    fig = figure(surfaces[0], kind, options) if len(surfaces) == 1 else compare_figure(surfaces, kind, options)
    fig = paper_layout(
        fig.update_layout(title_text=title),
        width=_width(width),
        height=height,
        font_family=font or SERIF,
        font_size=font_size,
    )
    write_figure(fig, out, fmt, overwrite=overwrite)
    typer.echo(f"wrote {out} ({fig.layout.width / 96:.2f} x {fig.layout.height / 96:.2f} in)")


def _thinned_for_html(surfaces: list[Any], options: Any) -> tuple[list[Any], Any]:
    """Grids of more than `DISPLAY_POINTS` a side as the app draws them (`plots.thin`), in the whole grids' colour
    range, with a note; the static formats draw every point."""
    import dataclasses

    from .plots import DISPLAY_POINTS, thin, value_range

    thinned = [thin(s) if s.ycoordinates is not None else s for s in surfaces]
    if all(t is s for t, s in zip(thinned, surfaces)):
        return surfaces, options
    for surface, drawn in zip(surfaces, thinned):
        if drawn is not surface and drawn.ycoordinates is not None:
            typer.echo(
                f"note: the HTML draws {len(drawn.xcoordinates)} x {len(drawn.ycoordinates)} of the "
                f"{len(surface.xcoordinates)} x {len(surface.ycoordinates)} points of {surface.path} (at most "
                f"{DISPLAY_POINTS} a side, through θ*); PDF, SVG and PNG draw every point",
                err=True,
            )
    return thinned, dataclasses.replace(options, zrange=options.zrange or value_range(surfaces, options))


@app.command()
@friendly
def export(
    file: Annotated[Path, typer.Argument(help="A surface file.")],
    vtp: Annotated[bool, typer.Option("--vtp", help="VTK PolyData surface for ParaView.")] = False,
    table: Annotated[bool, typer.Option("--table", help="Plain-text table for pgfplots or gnuplot.")] = False,
    csv: Annotated[bool, typer.Option("--csv", help="CSV table, one row per grid point.")] = False,
    npz: Annotated[bool, typer.Option("--npz", help="NumPy arrays (with the training path's, if any).")] = False,
    path_table: Annotated[
        bool,
        typer.Option(
            "--path",
            help="The training path of a surface on PCA directions, a table for pgfplots: epoch, x, y, residual, "
            "distance and the surface's metrics interpolated at (x, y).",
        ),
    ] = False,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="File to write, ending in the format's suffix; default FILE with it "
            "(.vtp, .dat, .csv, .npz, .path.dat)."
        ),
    ] = None,
    metric: Annotated[
        Optional[str],
        typer.Option(
            help="--vtp: the metric that gives the height (default: the first loss the file holds, train first)."
        ),
    ] = None,
    log: Annotated[bool, typer.Option(help="--vtp: height log10 of the metric.")] = False,
    clip: Annotated[Optional[float], typer.Option(help="--vtp: cap the height at this value.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Write a surface as data: --vtp (ParaView), --table (pgfplots), --csv, --npz, or its training path: --path."""
    from .export import DATA_SUFFIXES, check_data_suffix, write_data
    from .plots import PlotOptions, default_metric
    from .storage import read_surface

    formats = (("vtp", vtp), ("table", table), ("csv", csv), ("npz", npz), ("path", path_table))
    chosen = [fmt for fmt, on in formats if on]
    if len(chosen) != 1:
        raise LandscapeError("choose one of --vtp, --table, --csv, --npz, --path")
    fmt = chosen[0]
    if fmt != "vtp" and (metric is not None or log or clip is not None):  # the others hold every metric as stored
        raise LandscapeError("--metric, --log and --clip go with --vtp (its height): the others hold every value")
    target = out or file.with_suffix(DATA_SUFFIXES[fmt])
    check_not_input(target, [file])  # before the suffix: naming the surface itself gets the clearer reason
    target = check_writable(check_data_suffix(target, fmt), overwrite, [file])
    surface = read_surface(file)
    _warn_incomplete([surface], "the points not computed yet are missing")
    options = PlotOptions(metric=metric or default_metric([surface]), log=log, clip=clip)
    path = write_data(surface, target, fmt, options, overwrite=overwrite, inputs=[file])
    typer.echo(f"wrote {path}")


@app.command("app")
@friendly
def app_command(
    results: Annotated[
        Path, typer.Option(help="Folder of surface files to browse (only files under it are read).")
    ] = Path("results"),
    port: Annotated[
        Optional[int],
        typer.Option(help="Port of the app (default: Streamlit's, 8501; with --open, a free one where 8501 is taken)."),
    ] = None,
    address: Annotated[str, typer.Option(help="Address to serve on; 0.0.0.0 opens it to the network.")] = "localhost",
    browser: Annotated[
        bool,
        typer.Option(
            "--open/--headless",
            help="Open the app in a browser window once it serves (where a display is present); "
            "by default it only serves.",
        ),
    ] = False,
) -> None:
    """Browse the surfaces of a results folder in the browser (a Streamlit app). It never asks anything, sends no
    usage statistics, and Ctrl-C or SIGTERM stops it and its server."""
    import importlib.util
    import signal
    import subprocess
    import threading

    for package in ("streamlit", "plotly"):
        if importlib.util.find_spec(package) is None:
            raise LandscapeError(f"the app needs {package}: pip install -e '.[app]' (plotly, streamlit, kaleido)")
    if not results.is_dir():
        raise LandscapeError(f"results folder {results} " + ("is a file" if results.exists() else "does not exist"))
    port = _check_serving_address(address, port, choose=browser)  # `--open` must know the URL it opens
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(Path(__file__).with_name("app.py")),
        "--server.address",
        address,
        "--server.headless",
        "true",  # never Streamlit's e-mail prompt nor its own browser: `--open` opens one when the app serves
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]
    command += ["--server.port", str(port)] if port else []
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "STREAMLIT_SERVER_HEADLESS": "true"}
    server = subprocess.Popen(command + ["--", "--results", str(results.resolve())], stdin=subprocess.DEVNULL, env=env)

    def forward(signum: int, frame: Any) -> None:
        if server.poll() is None:
            server.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    if browser:
        host = "localhost" if address in ("0.0.0.0", "::", "") else address
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        if _display_present():
            threading.Thread(target=_open_when_serving, args=(url, server), daemon=True).start()
        else:
            typer.echo(f"no display to open a browser on: open {url} yourself", err=True)
    while True:
        try:
            code = server.wait()
            break
        except KeyboardInterrupt:  # a signal that arrived before the handlers were installed
            forward(signal.SIGINT, None)
    raise typer.Exit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)


def _check_serving_address(address: str, port: Optional[int], choose: bool = False) -> Optional[int]:
    """Refuse a port outside 1-65535 or an address this machine cannot serve on, in one line (Streamlit's own
    error was a traceback of 50 lines). The port to serve on: `port`; without it, where `choose`, the one Streamlit
    would be told (STREAMLIT_SERVER_PORT, else `server.port` of its config files), else 8501 where it is free on
    `address` and any free port where not; else None, Streamlit's choice."""
    import socket

    given = "--port"
    if port is None and choose:
        text = os.environ.get("STREAMLIT_SERVER_PORT", "")
        if text:
            given = "STREAMLIT_SERVER_PORT"
            try:
                port = int(text)
            except ValueError:
                raise LandscapeError(f"{given} must be 1 to 65535, got {text!r}") from None
        else:
            from streamlit import config

            if config.is_manually_set("server.port"):
                given, port = "server.port in Streamlit's config", int(config.get_option("server.port"))
    if port is not None and not 1 <= port <= 65535:
        raise LandscapeError(f"{given} must be 1 to 65535, got {port}")
    try:
        family, kind, _, _, where = socket.getaddrinfo(address or None, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.bind(where)  # port 0: any free one, the address alone is tested
            free = int(probe.getsockname()[1])
    except (OSError, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise LandscapeError(f"cannot serve on --address {address}: {reason}") from None
    if port is not None or not choose:
        return port
    try:
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            probe.bind((where[0], 8501, *where[2:]))
        return 8501
    except OSError:  # in use: Streamlit would take the next free one, which --open cannot know
        return free


def _display_present() -> bool:
    """Whether a browser window could be shown: macOS and Windows always, elsewhere an X11 or Wayland display."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_when_serving(url: str, server: Any) -> None:
    """Open `url` in the default browser once the app answers its health check (or give up when it stopped)."""
    import time
    import urllib.request
    import webbrowser

    for _ in range(600):
        if server.poll() is not None:
            return
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as reply:
                if reply.read() == b"ok":
                    webbrowser.open(url)
                    return
        except OSError:
            pass
        time.sleep(0.2)


def _range(text: Optional[str]) -> Optional[tuple[float, float]]:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise LandscapeError(f"--zrange '{text}': use MIN:MAX, e.g. 0.1:10") from None
    if not lo < hi:
        raise LandscapeError(f"--zrange '{text}': MIN must be below MAX")
    return lo, hi


def _width(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


@app.command()
@friendly
def demo(
    data_root: Annotated[
        Optional[str],
        typer.Option(
            help="Data folder; default $LANDSCAPE_DATA_ROOT, else ./data (CIFAR-10 is downloaded there when missing)."
        ),
    ] = None,
    checkpoints: Annotated[Path, typer.Option(help="Folder with <pair>.pt and <pair>_noshort.pt.")] = Path(
        "checkpoints"
    ),
    pair: Annotated[str, typer.Option(help="resnet56 or resnet20: the model with and without skips.")] = "resnet56",
    out: Annotated[Path, typer.Option(help="Folder for the surfaces and figures.")] = Path("results/demo"),
    grid: Annotated[int, typer.Option(help="Points per axis over [-1, 1], odd (θ* is the centre point).")] = 13,
    subset: Annotated[int, typer.Option(help="Training images evaluated.")] = 256,
    precision: Annotated[str, typer.Option(help="fp32 | bf16")] = "fp32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Compute the surfaces in --out again (else one of these settings is resumed, others refused)."
        ),
    ] = False,
) -> None:
    """Skips vs no skips in a few minutes: surfaces of the shipped pair, their figures and their numbers."""
    from .demo import DemoSettings, run_demo

    settings = DemoSettings(
        checkpoints=checkpoints,
        pair=pair,
        out=out,
        data_root=data_root,
        grid=grid,
        subset=subset,
        precision=precision,
        device=device,
    )
    result = run_demo(
        settings, overwrite=overwrite, notify=lambda message: typer.echo(message, err=True), progress=progress_bar
    )
    _print_comparison(result.comparison)
    for message in result.skipped:
        typer.echo(message, err=True)
    if result.figures:
        typer.echo("figures: " + ", ".join(str(p) for p in result.figures))
        typer.echo(f"browse them: landscape app --results {out}")


@app.command()
@friendly
def hessian(
    ckpt: Annotated[Path, typer.Option(help="Checkpoint of the trained model θ* (.pt, .pth, .safetensors).")],
    arch: Annotated[
        Optional[str],
        typer.Option(help="Architecture when the checkpoint does not record one (see `landscape models`)."),
    ] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes, when the checkpoint does not say.")] = None,
    dataset: Annotated[str, typer.Option(help="cifar10 | cifar100 | imagefolder")] = "cifar10",
    data_root: Annotated[Optional[str], typer.Option(help="Data folder; default $LANDSCAPE_DATA_ROOT.")] = None,
    split: Annotated[str, typer.Option(help="train | test")] = "train",
    download: Annotated[bool, typer.Option(help="Download CIFAR with torchvision when missing.")] = False,
    image_size: Annotated[
        Optional[int], typer.Option(help="ImageFolder: resize + centre crop to N pixels (1 to 1024).")
    ] = None,
    mean: Annotated[
        Optional[str],
        typer.Option(help="Input normalization mean, e.g. 0.49,0.48,0.45 (overrides the one the checkpoint records)."),
    ] = None,
    std: Annotated[Optional[str], typer.Option(help="Input normalization std, likewise.")] = None,
    subset: Annotated[int, typer.Option(help="Images the loss averages over, drawn with --data-seed.")] = 1000,
    data_seed: Annotated[int, typer.Option(help="Seed of the --subset draw.")] = 0,
    top_k: Annotated[int, typer.Option(help="Largest eigenvalues computed (Lanczos).")] = 5,
    solver: Annotated[
        str,
        typer.Option(
            help="auto | lanczos | arpack: our Lanczos (stops as soon as the top k converge; auto) or ARPACK's "
            "eigsh (at least 20 products). Measured on resnet20.pt: 12/20/20 products for the top 1/2/5 where "
            "ARPACK took 21 (k >= 2: at least ARPACK's first cycle)."
        ),
    ] = "auto",
    trace_samples: Annotated[int, typer.Option(help="Hutchinson samples of the trace (0: no trace).")] = 0,
    tol: Annotated[
        float, typer.Option(help="Relative accuracy of the eigenvalues (ARPACK's tol: residual <= tol x |λ|).")
    ] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the Lanczos start vector and the trace's vectors.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per double-backward pass.")] = 128,
    keep_graph: Annotated[
        bool,
        typer.Option(help="Keep the gradient graphs between products: each costs one backward pass; more memory."),
    ] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report (with the spec) here.")] = None,
    eigenvectors: Annotated[
        Optional[Path], typer.Option(help="Write the eigenvectors here (.npz, one array per parameter name).")
    ] = None,
    density: Annotated[
        bool, typer.Option(help="Also estimate the eigenvalue density (stochastic Lanczos quadrature).")
    ] = False,
    density_steps: Annotated[int, typer.Option(help="--density: Lanczos steps (products) per start vector.")] = 50,
    density_samples: Annotated[int, typer.Option(help="--density: Rademacher start vectors averaged.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace existing --json and --eigenvectors files.")] = False,
) -> None:
    """Top eigenvalues, trace and eigenvalue density of the loss Hessian at θ* (Lanczos, Hutchinson, stochastic
    Lanczos quadrature), over a fixed set of images."""
    from .checkpoints import build_model, check_dataset, input_normalization, load_checkpoint
    from .curvature import EigenvectorsNotWritten, HessianSpec, hessian_report
    from .data import DataSpec, load_split
    from .hardware import resolve_device
    from .spec import CheckpointSpec

    if split not in ("train", "test"):
        raise LandscapeError(f"--split must be train or test, got '{split}'")
    spec = HessianSpec(
        top_k=top_k,
        solver=solver,
        trace_samples=trace_samples,
        seed=seed,
        tol=tol,
        data=DataSpec(
            name=dataset,
            root=data_root or "",
            split=split,
            subset=subset,
            seed=data_seed,
            download=download,
            image_size=image_size,
        ),
        density_steps=density_steps if density else 0,
        density_samples=density_samples,
    )
    spec.validate()
    if density and density_steps < 2:  # 0 meant "no density", silently
        raise LandscapeError(f"--density-steps must be at least 2, got {density_steps}")
    if not density and (density_steps != 50 or density_samples != 1):  # given, yet without effect
        raise LandscapeError("--density-steps and --density-samples go with --density")
    if batch_size < 1:
        raise LandscapeError(f"--batch-size must be positive, got {batch_size}")
    for output in (json_out, eigenvectors):  # before minutes of products, not after
        if output is not None:
            check_writable(output, overwrite, [ckpt])
    if json_out is not None and eigenvectors is not None:  # the report replaced the eigenvectors, or was lost
        same = os.path.abspath(json_out) == os.path.abspath(eigenvectors)
        if same or (json_out.exists() and eigenvectors.exists() and json_out.samefile(eigenvectors)):
            raise LandscapeError(f"--json and --eigenvectors both name {json_out}: give each its own file")
    resolved = resolve_device(device)
    given_mean, given_std = _floats(mean, "--mean"), _floats(std, "--std")
    CheckpointSpec(path=str(ckpt), mean=given_mean, std=given_std).validate()  # both or neither, usable
    checkpoint = load_checkpoint(ckpt)
    check_dataset(checkpoint, dataset)
    model = build_model(checkpoint, arch, num_classes)
    input_mean, input_std = input_normalization(checkpoint, given_mean, given_std, dataset)
    images = load_split(spec.data, split)
    unwritten: EigenvectorsNotWritten | None = None
    try:
        report = hessian_report(
            model,
            images,
            input_mean,
            input_std,
            spec,
            resolved,
            batch_size=batch_size,
            eigenvectors=eigenvectors,
            checkpoint_sha256=checkpoint.sha256,
            keep_graph=keep_graph,
            overwrite=overwrite,
        )
    except EigenvectorsNotWritten as e:  # the report is still printed and written, then the error
        report, unwritten = e.report, e
    report = {
        "checkpoint": {"path": str(ckpt), "sha256": checkpoint.sha256},
        "normalization": {"mean": list(input_mean), "std": list(input_std)},
        **report,
    }
    typer.echo(
        f"{report['parameters']} parameters, {report['images']} images, "
        f"{report['hvps']} Hessian-vector products ({report['eigen_hvps']} for the eigenvalues, "
        f"{report['solver']}), {report['seconds']:.1f} s"
    )
    for i, value in enumerate(report["eigenvalues"], 1):
        typer.echo(f"  λ{i:<3} {value:.6g}")
    if report["trace"] is not None:
        typer.echo(f"  trace {report['trace']:.6g} ± {report['trace_stderr']:.2g} (standard error)")
    if report["density"] is not None:
        d = report["density"]
        typer.echo(
            f"  density: Ritz values from {d['smallest']:.6g} to {d['largest']:.6g}, "
            f"weight below -1% of the largest |value| {d['negative_share']:.2%}, within ±1% of 0 "
            f"{d['near_zero_share']:.1%} ({_lanczos_runs(d['nodes'])})"
        )
    if json_out is not None:
        write_file(json_out, json.dumps(report, indent=2).encode(), overwrite, [ckpt])
        typer.echo(f"wrote {json_out}")
    if unwritten is not None:
        raise LandscapeError(f"{unwritten} (the eigenvalues above were computed; the eigenvectors are lost)")
    if eigenvectors is not None:
        typer.echo(f"wrote {eigenvectors}")


@app.command(short_help="Convexity map (Li et al. Fig. 7): λmin, λmax of the Hessian on the grid.")
@friendly
def convexity(
    surface: Annotated[Path, typer.Option(help="Surface file of `landscape compute`: the map is added to it.")],
    stride: Annotated[
        int, typer.Option(help="Every stride-th grid point along each axis, from the middle one (5 on 51: 11x11).")
    ] = 1,
    images: Annotated[
        int, typer.Option(help="Images the Hessian averages over: a draw from the surface's own (0: all of them).")
    ] = 0,
    split: Annotated[str, typer.Option(help="train | test: which of the surface's images.")] = "train",
    steps: Annotated[int, typer.Option(help="Lanczos steps (Hessian-vector products) per point, at most.")] = 20,
    tol: Annotated[
        float, typer.Option(help="Stop a point once λmin and λmax are each accurate to tol, relatively (0: --steps).")
    ] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the image draw and the Lanczos start vector.")] = 0,
    ckpt: Annotated[
        Optional[Path], typer.Option(help="The surface's checkpoint, when not at its recorded path (same sha256).")
    ] = None,
    arch: Annotated[
        Optional[str], typer.Option(help="Only for an architecture that names code (module:callable) you trust.")
    ] = None,
    data_root: Annotated[
        Optional[str],
        typer.Option(help="Data folder, when not at the recorded one (default: it, else $LANDSCAPE_DATA_ROOT)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[
        Optional[int], typer.Option(help="Images per double-backward pass (default 128 on the CPU).")
    ] = None,
    keep_graph: Annotated[
        bool,
        typer.Option(
            help="Keep the gradient graphs between the products of a point: each costs one backward pass; more memory."
        ),
    ] = False,
    workers: Annotated[
        Optional[str],
        typer.Option(help="Local ranks on torch.distributed, as for compute (N or auto); under torchrun, its ranks."),
    ] = None,
    rank_timeout: Annotated[
        float, typer.Option(help="Several ranks: stop the run when a rank sends no heartbeat for this many seconds.")
    ] = 60.0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the convexity map the file holds (the loss is kept).")
    ] = False,
) -> None:
    """Convexity map (Li et al. Fig. 7): λmin and λmax of the loss Hessian at the surface's grid points, stored in
    the surface file next to the loss. Resumable like compute; runs in one process, --workers N or under torchrun."""
    from .evaluate import RunOptions
    from .spec import CurvatureMapSpec
    from .surface import convexity_work

    curvature = CurvatureMapSpec(stride=stride, images=images, split=split, steps=steps, tol=tol, seed=seed)
    options = RunOptions(device=device, batch_size=batch_size, keep_graph=keep_graph)
    work = convexity_work(surface, curvature, checkpoint=ckpt, data_root=data_root, arch=arch, overwrite=overwrite)
    result = _run_work(work, options, workers, rank_timeout)
    if result is not None:
        _print_convexity(result)


def _print_convexity(surface: Any) -> None:
    curvature = surface.curvature
    settings = curvature.curvature_spec
    selected, done = curvature.selected, curvature.computed & curvature.selected
    typer.echo(
        f"{surface.path}: convexity map, {int(done.sum())}/{int(selected.sum())} points computed (stride "
        f"{settings.stride}, {len(curvature.indices)} {settings.split} images, at most {settings.steps} Lanczos steps, "
        f"tol {settings.tol:g}, seed {settings.seed})"
    )
    finite = done & np.isfinite(curvature.largest) & np.isfinite(curvature.smallest)
    if finite.any():
        ratio = curvature.ratio[finite]
        typer.echo(
            f"  λmax {curvature.largest[finite].min():.4g} .. {curvature.largest[finite].max():.4g}, "
            f"λmin {curvature.smallest[finite].min():.4g} .. {curvature.smallest[finite].max():.4g}, "
            f"|λmin/λmax| {np.nanmin(ratio):.3g} .. {np.nanmax(ratio):.3g}, "
            f"{int(curvature.products[done].sum())} Hessian-vector products"
        )
    capped = done & finite & (curvature.products >= settings.steps)
    if settings.tol > 0 and capped.any():  # an early stop is the tolerance met; at the cap it is not known
        typer.echo(
            f"  {int((done & finite).sum() - capped.sum())} of {int((done & finite).sum())} points reached tol "
            f"{settings.tol:g}; {int(capped.sum())} stopped at --steps {settings.steps}, not known to be within it "
            "(raise --steps)"
        )
    if (done & ~finite).any():
        typer.echo(f"  {int((done & ~finite).sum())} points without curvature: the loss overflows there (NaN or inf)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
