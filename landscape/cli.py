"""The `landscape` command line: parses options, builds specs, calls one library function, prints."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import numpy as np
import typer

from .errors import LandscapeError

app = typer.Typer(help="Loss-landscape surfaces of PyTorch models (Li et al., NeurIPS 2018).",
                  pretty_exceptions_enable=False, no_args_is_help=True, add_completion=False)

Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors into one line on stderr and a non-zero exit; `--debug` shows the traceback instead."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.get("debug", False)
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except LandscapeError as e:
            if debug:
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished points are saved; run the same command again to resume", err=True)
            raise typer.Exit(130) from None
        except Exception as e:
            if debug:
                raise
            typer.echo(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                       "(run with --debug for the traceback)", err=True)
            raise typer.Exit(1) from None
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
    x: Annotated[str, typer.Option(help="x axis as START:STOP:NUM.")] = "-1:1:51",
    y: Annotated[Optional[str], typer.Option(help="y axis as START:STOP:NUM; omit for a 1D curve.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Architecture when the checkpoint does not record one "
                                                     "(see `landscape models`).")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes, when the checkpoint does not say.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the x direction; y uses seed + 1.")] = 0,
    xnorm: Annotated[str, typer.Option(help="filter | layer | model | none")] = "filter",
    ynorm: Annotated[str, typer.Option(help="filter | layer | model | none")] = "filter",
    xignore: Annotated[str, typer.Option(help="biasbn (zero direction for tensors of dim <= 1) | none")] = "biasbn",
    yignore: Annotated[str, typer.Option(help="biasbn | none")] = "biasbn",
    dir_type: Annotated[str, typer.Option(help="weights (parameters) | states (also BN statistics)")] = "weights",
    xtarget: Annotated[Optional[Path], typer.Option(help="Second checkpoint: x direction = it − θ* "
                                                         "(interpolation, not normalized).")] = None,
    xdir_file: Annotated[Optional[Path], typer.Option(help="Take the x direction from this surface file.")] = None,
    ydir_file: Annotated[Optional[Path], typer.Option(help="Take the y direction from this surface file.")] = None,
    dataset: Annotated[str, typer.Option(help="cifar10 | cifar100 | imagefolder")] = "cifar10",
    data_root: Annotated[Optional[str], typer.Option(help="Data folder; default $LANDSCAPE_DATA_ROOT.")] = None,
    split: Annotated[str, typer.Option(help="train | test | both")] = "train",
    subset: Annotated[Optional[int], typer.Option(help="Evaluate N images per split, drawn with --data-seed.")] = None,
    data_seed: Annotated[int, typer.Option(help="Seed of the --subset draw.")] = 0,
    download: Annotated[bool, typer.Option(help="Download CIFAR with torchvision when missing.")] = False,
    image_size: Annotated[Optional[int], typer.Option(help="ImageFolder: resize + centre crop.")] = None,
    mean: Annotated[Optional[str], typer.Option(help="Input normalization mean, e.g. 0.49,0.48,0.45, "
                                                     "when the checkpoint does not record it.")] = None,
    std: Annotated[Optional[str], typer.Option(help="Input normalization std, likewise.")] = None,
    bn: Annotated[str, typer.Option(help="eval (stored BN statistics) | recompute (re-estimated per point)")] = "eval",
    bn_images: Annotated[int, typer.Option(help="--bn recompute: training images used.")] = 1280,
    precision: Annotated[str, typer.Option(help="fp32 | bf16")] = "fp32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    channels_last: Annotated[bool, typer.Option(help="Channels-last memory format.")] = True,
    fold_bn: Annotated[bool, typer.Option(help="Fold BatchNorm into convolutions (exact up to rounding).")] = True,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (pays off on large grids).")] = False,
    points_per_pass: Annotated[int, typer.Option(help="Grid points per vmapped forward pass.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file of another spec.")] = False,
    debug: Debug = False,
) -> None:
    """Compute f(α, β) = L(θ* + αδ + βη) on a grid into an HDF5 surface file."""
    from .data import DataSpec
    from .directions import DirectionSpec
    from .evaluate import EvalSpec, RunOptions
    from .grid import Axis, GridSpec
    from .surface import CheckpointSpec, SurfaceSpec, compute_surface

    def direction(norm: str, ignore: str, seed_: int, target: Optional[Path], source: Optional[Path],
                  axis: str) -> DirectionSpec:
        if target is not None:
            return DirectionSpec(kind="target", norm="none", ignore="none", dir_type=dir_type, target=str(target))
        if source is not None:
            return DirectionSpec(kind="file", norm="none", ignore="none", dir_type=dir_type, source=str(source),
                                 source_axis=axis)
        return DirectionSpec(kind="random", seed=seed_, norm=norm, ignore=ignore, dir_type=dir_type)

    grid = GridSpec(Axis.parse(x), Axis.parse(y) if y else None)
    spec = SurfaceSpec(
        checkpoint=CheckpointSpec(str(ckpt), arch, num_classes, _floats(mean, "--mean"), _floats(std, "--std")),
        data=DataSpec(dataset, data_root or "", split, subset, data_seed, download, image_size),
        grid=grid,
        x=direction(xnorm, xignore, seed, xtarget, xdir_file, "x"),
        y=direction(ynorm, yignore, seed + 1, None, ydir_file, "y") if y else None,
        evaluation=EvalSpec(precision=precision, bn=bn, bn_images=bn_images))
    options = RunOptions(device, batch_size, channels_last, fold_bn, compile, points_per_pass)
    with _progress_bar() as progress:
        surface = compute_surface(spec, out, options, overwrite=overwrite, progress=progress)
    _print_summary(surface)


class _progress_bar:
    """A tqdm bar (points/s, ETA) on stderr, fed by compute_surface's progress callback."""

    def __enter__(self) -> Callable[[int, int], None]:
        self.bar = None
        return self.update

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, unit="pt", desc="grid points", file=sys.stderr,
                            dynamic_ncols=True)
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
def info(file: Annotated[Path, typer.Argument(help="A surface file.")],
         as_json: Annotated[bool, typer.Option("--json", help="Also print the full spec as JSON.")] = False,
         debug: Debug = False) -> None:
    """Show a surface file's spec, grid, completion and value ranges."""
    from .storage import read_surface

    surface = read_surface(file)
    spec = surface.spec
    if surface.legacy:
        typer.echo(f"{file}: surface file of the paper's original code (no spec recorded)")
    else:
        ckpt, data = spec["checkpoint"], spec["data"]
        typer.echo(f"{file}: landscape surface")
        typer.echo(f"  model       {ckpt['arch']} from {ckpt['path']} (sha256 {ckpt['sha256'][:12]})")
        subset = f"{data['subset']} images" if data["subset"] else "all images"
        typer.echo(f"  data        {data['name']} {data['split']}, {subset} (seed {data['seed']})")
        for axis in ("x", "y"):
            d = spec.get(axis)
            if d:
                what = (f"random seed {d['seed']}, norm {d['norm']}, ignore {d['ignore']}" if d["kind"] == "random"
                        else f"target {d['target']}" if d["kind"] == "target" else f"from {d['source']}")
                typer.echo(f"  {axis} direction {what} ({d['dir_type']})")
        ev = spec["evaluation"]
        typer.echo(f"  evaluation  {ev['precision']}, BatchNorm {ev['bn']}")
    grid = f"x {surface.xcoordinates[0]:g}..{surface.xcoordinates[-1]:g} ({len(surface.xcoordinates)})"
    if surface.ycoordinates is not None:
        grid += f", y {surface.ycoordinates[0]:g}..{surface.ycoordinates[-1]:g} ({len(surface.ycoordinates)})"
    typer.echo(f"  grid        {grid}")
    typer.echo(f"  completion  {surface.completion:.1%}")
    _print_summary(surface)
    if as_json and not surface.legacy:
        typer.echo(json.dumps(spec, indent=2))


@app.command()
@friendly
def models(debug: Debug = False) -> None:
    """List the registered architectures (also: torchvision:NAME and module.path:callable)."""
    from .models import list_models

    for entry in list_models():
        typer.echo(f"{entry.name:<18} {entry.description}")
    typer.echo("torchvision:NAME   any torchvision classification model, e.g. torchvision:resnet18")
    typer.echo("module.path:fn     your own builder, called with num_classes= when it accepts it")


@app.command()
@friendly
def train(
    arch: Annotated[str, typer.Option(help="Architecture, e.g. resnet56 or resnet56_noshort (see `landscape models`).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, state.pt, log.jsonl, snapshots.h5.")],
    data_root: Annotated[Optional[str], typer.Option(help="Data folder; default $LANDSCAPE_DATA_ROOT.")] = None,
    dataset: Annotated[str, typer.Option(help="cifar10 | cifar100")] = "cifar10",
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (not on biases and BN).")] = 5e-4,
    schedule: Annotated[str, typer.Option(help="onecycle | cosine")] = "onecycle",
    seed: Annotated[int, typer.Option(help="Seed of initialization, order and augmentation.")] = 0,
    precision: Annotated[str, typer.Option(help="fp32 | bf16 (autocast)")] = "fp32",
    channels_last: Annotated[bool, typer.Option(help="Channels-last memory format.")] = True,
    snapshot_every: Annotated[int, typer.Option(help="Save float16 weights every K epochs (0: never).")] = 0,
    eval_images: Annotated[Optional[int], typer.Option(help="Test images evaluated after each epoch.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue an unfinished run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard what --out holds and start again.")] = False,
    debug: Debug = False,
) -> None:
    """Train a CIFAR model (crop + flip, SGD Nesterov, weight decay, one-cycle/cosine); resumable per epoch."""
    from tqdm import tqdm

    from .data import DataSpec
    from .train import TrainSpec, train as run_training

    spec = TrainSpec(arch=arch, data=DataSpec(dataset, str(Path(data_root).resolve()) if data_root else "", "train"),
                     epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
                     seed=seed, precision=precision, channels_last=channels_last, snapshot_every=snapshot_every,
                     eval_images=eval_images)
    bar = tqdm(unit="batch", file=sys.stderr, dynamic_ncols=True)

    def on_batch(step: int, steps: int) -> None:
        bar.total = steps
        bar.update(1)

    def on_epoch(record: dict) -> None:
        bar.write(f"epoch {record['epoch']:>3}/{epochs}: train loss {record['train_loss']:.4f} "
                  f"acc {record['train_acc']:.2f}%  test loss {record['test_loss']:.4f} "
                  f"acc {record['test_acc']:.2f}%  ({record['seconds']:.0f} s)", file=sys.stderr)
        bar.reset()

    try:
        meta = run_training(spec, out, device=device, resume=resume, overwrite=overwrite, progress=on_epoch,
                            on_batch=on_batch)
    finally:
        bar.close()
    typer.echo(f"{out / 'checkpoint.pt'}: {arch}, test accuracy {meta['test_acc']:.2f}%, "
               f"train accuracy {meta['train_acc']:.2f}%, {meta['wall_time_s']:.0f} s")


@app.command()
@friendly
def compare(
    files: Annotated[list[Path], typer.Argument(help="2D surface files to compare.")],
    metric: Annotated[str, typer.Option(help="Array to compare, e.g. train_loss or test_loss.")] = "train_loss",
    level: Annotated[Optional[float], typer.Option(help="Loss level of the basin area "
                                                        "(default: 2 x the largest centre value).")] = None,
    debug: Debug = False,
) -> None:
    """Quantify surfaces side by side: centre, basin area below a level, local minima, roughness, non-convexity."""
    from .storage import read_surface

    _print_comparison([read_surface(f) for f in files], metric, level)


def _print_comparison(surfaces: list[Any], metric: str, level: Optional[float]) -> None:
    from .analysis import summarize

    for surface in surfaces:
        if surface.ycoordinates is None or metric not in surface.values:
            raise LandscapeError(f"{surface.path} is not a 2D surface with '{metric}' "
                                 f"(it has {', '.join(surface.values) or 'nothing'})")
    if level is None:
        centres = [s.values[metric][np.argmin(np.abs(s.ycoordinates)), np.argmin(np.abs(s.xcoordinates))]
                   for s in surfaces]
        level = 2 * float(np.nanmax(centres))
    typer.echo(f"{metric}, basin = connected region around the centre below {level:.4g}")
    typer.echo("| surface | centre | minimum | basin area | basin share | local minima | roughness | non-convex share |")
    typer.echo("|---|---|---|---|---|---|---|---|")
    for surface in surfaces:
        s = summarize(surface.values[metric], surface.xcoordinates, surface.ycoordinates, level)
        name = surface.spec.get("checkpoint", {}).get("arch") or Path(surface.path).name
        typer.echo(f"| {name} ({Path(surface.path).name}) | {s.centre:.4g} | {s.minimum:.4g} | {s.basin_area:.3g} | "
                   f"{s.basin_fraction:.1%} | {s.local_minima} | {s.roughness:.4g} | {s.nonconvex_fraction:.1%} |")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
