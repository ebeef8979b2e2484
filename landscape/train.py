"""Training CIFAR models with the standard recipe, resumable at any step, with optional weight snapshots.

`train(TrainSpec(...), out_dir)` writes into `out_dir`:
  checkpoint.pt   the final model in the project's checkpoint format, with metadata
  state.pt        model + optimizer + schedule + history after the last finished epoch, and the position within
                  the next one (step, augmentation generator, running sums) when saved within it (for resuming)
  snapshots.h5    every `snapshot_every` epochs, the weights in float16 (the training trajectory)
  log.jsonl       one line per epoch: losses, accuracies, learning rate, seconds, precision, hardware, compiled

A run may start from the weights of an earlier checkpoint (`init`: a warm restart, a new learning-rate cycle) and
may be resumed on other hardware, in another precision (`precision="auto"` picks bf16 where it is native) and with
or without `compile`.

On CUDA the loop is written not to wait for the device at every step: the losses are checked for nan/inf on the
device and looked at every `NONFINITE_CHECK_EVERY` steps and before every save, the augmentation's indices go over
in non-blocking copies from pinned memory, cuDNN picks its fastest convolutions (`torch.backends.cudnn.benchmark`)
and `compile=True` adds CUDA graphs. None of this has run on a GPU yet: it is the same code as on the CPU, where it
is tested (the CPU computes bit for bit what it computed before), but the CUDA-only branches are untested.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .checkpoints import check_same_model, file_sha256, load_checkpoint, save_checkpoint
from .data import DEFAULT_NORMALIZATION, DataSpec, ImageSet, fingerprint, load_split, normalizer, subset_indices
from .directions import check_finite
from .errors import LandscapeError
from .evaluate import loss_and_accuracy, normalize
from .files import replacing
from .hardware import PRECISIONS, autocast, exact_fp32, resolve_device, resolve_precision
from .hardware import describe as describe_hardware
from .models import create_model
from .spec import as_stored, read_back
from .storage import writer_lock, writer_lock_file

SCHEDULES = ("onecycle", "cosine")
TRAIN_PRECISIONS = ("auto", *PRECISIONS)
EVAL_BATCH_SIZE = 500  # images per forward pass in the evaluations after each epoch and at the end
# Fields of a run's recipe that may change when it is resumed: they do not change what is optimized. (The device
# and `compile` are options of the run, not of the recipe: they may change too.)
RESUMABLE_CHANGES = ("precision",)
TRAIN_DATASETS = ("cifar10", "cifar100")  # the datasets whose classes and normalization training knows
# Steps between the host's looks at the device's flag of non-finite losses (each look waits for the device); the
# flag is also looked at before every save of the state and at the end of every epoch.
NONFINITE_CHECK_EVERY = 20
RUN_LOCK = writer_lock_file("run").name  # ".run.lock": held by the process training in the folder
LOCK_ADVICE = "another `landscape train` is training in this folder: stop it first (SIGTERM saves its state)"
EPOCH_SEED_STRIDE = 100_003  # epoch e of a run of seed s draws its crops and order from seed s * stride + e


def max_train_seed(epochs: int) -> int:
    """The largest --seed whose every epoch's seed fits torch's 64-bit generator seed."""
    return max(0, (2**64 - 1 - epochs) // EPOCH_SEED_STRIDE)


@dataclass(frozen=True)
class TrainSpec:
    """The training recipe: SGD (Nesterov momentum) with weight decay, crop + flip augmentation, an LR schedule."""

    arch: str = "resnet20"
    data: DataSpec = DataSpec(split="train")
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    seed: int = 0
    precision: str = "auto"  # auto: bf16 where the hardware has it natively, else fp32 (chosen at every start)
    channels_last: bool = True
    snapshot_every: int = 0
    eval_images: int | None = None  # test images evaluated after each epoch (None: all)
    init: str = ""  # a checkpoint whose weights the run starts from (a warm restart); "": random initialization

    def validate(self) -> None:
        self.data.validate()
        if self.data.name not in TRAIN_DATASETS:
            raise LandscapeError(f"landscape train trains on {' or '.join(TRAIN_DATASETS)}, not {self.data.name}")
        create_model(self.arch)  # an unknown arch fails here, before any data is read
        for option, value, valid, expected in (
            ("--epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 2, ">= 2"),
            ("--lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("--weight-decay", self.weight_decay, self.weight_decay >= 0 and math.isfinite(self.weight_decay), ">= 0"),
            # each epoch draws from seed * EPOCH_SEED_STRIDE + epoch, a 64-bit generator seed
            ("--seed", self.seed, 0 <= self.seed <= max_train_seed(self.epochs), f"0 to {max_train_seed(self.epochs)}"),
            ("--snapshot-every", self.snapshot_every, self.snapshot_every >= 0, ">= 0 (0: never)"),
            ("--eval-images", self.eval_images, self.eval_images is None or self.eval_images >= 1, ">= 1"),
        ):
            if not valid:
                raise LandscapeError(f"{option} must be {expected}, not {value}")
        if self.schedule not in SCHEDULES:
            raise LandscapeError(f"unknown schedule '{self.schedule}': use {', '.join(SCHEDULES)}")
        if self.precision not in TRAIN_PRECISIONS:
            raise LandscapeError(f"unknown precision '{self.precision}': use {', '.join(TRAIN_PRECISIONS)}")


def learning_rate(spec: TrainSpec, step: int, total_steps: int) -> float:
    """One-cycle (linear warm-up over 15% of the steps, then cosine to ~0) or plain cosine."""
    if spec.schedule == "onecycle":
        warm = max(1, int(0.15 * total_steps))
        if step < warm:
            return spec.lr * (0.1 + 0.9 * step / warm)
        progress = (step - warm) / max(1, total_steps - warm)
    else:
        progress = step / total_steps
    return spec.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crops of the images zero-padded by 4 pixels, and random horizontal flips (uint8 in, uint8 out).

    The offsets and flips are drawn from `generator`, a CPU generator, on every device: the same images get the
    same augmentation on the CPU and on a GPU, so a run resumes across them. On CUDA the indices go over in one
    non-blocking copy from pinned memory (written for the GPU, never run on one yet)."""
    n, c, h, w = images.shape
    padded = F.pad(images, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)[None, :]  # (n, h)
    cols = dx[:, None] + torch.arange(w)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # (n, w)
    indices = _to_device(torch.cat([rows, cols], 1), images.device)
    rows, cols = indices[:, :h], indices[:, h:]
    index_n = torch.arange(n, device=images.device)[:, None, None, None]
    index_c = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[index_n, index_c, rows[:, None, :, None], cols[:, None, None, :]]


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`: on CUDA copied from pinned memory without waiting (PyTorch's pinned-memory cache
    keeps the block until the copy is done), elsewhere as it is."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def num_classes(dataset: str) -> int:
    """Classes of a dataset that can be trained on: 100 for cifar100, 10 otherwise."""
    return 100 if dataset == "cifar100" else 10


class TrainingStopped(Exception):
    """Training stopped on request (`stop_requested`) after `step` of `steps` in `epoch` (1-based), the state saved."""

    def __init__(self, epoch: int, step: int, steps: int, state_path: Path) -> None:
        super().__init__(f"stopped in epoch {epoch} after step {step} of {steps}; the state is in {state_path}")
        self.epoch, self.step, self.steps, self.state_path = epoch, step, steps, state_path


Progress = Callable[[dict[str, Any]], None]
BatchCallback = Callable[[int, int, int, Callable[[], tuple[float, float]]], None]


def train(
    spec: TrainSpec,
    out_dir: str | Path,
    *,
    device: str = "auto",
    compile: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_batch: BatchCallback | None = None,
    save_every_s: float | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Train `spec.arch` on CIFAR; returns the final checkpoint's metadata.

    Refuses a folder that holds a finished run (unless `overwrite`) or an unfinished one (unless `resume` or
    `overwrite`). `progress(record)` is called after each epoch, `on_batch(epoch, step, steps_per_epoch, running)`
    after each batch (1-based epoch and step; `running()` gives the epoch's mean loss and accuracy so far, and
    waits for the device, so call it now and then). Stops with a LandscapeError at a non-finite loss, found within
    `NONFINITE_CHECK_EVERY` steps and always before the state is saved: the last saved state is a good one.

    The state is saved after every epoch and, with `save_every_s`, also within an epoch once that many seconds have
    passed since the last save (0: after every step): a kill then loses at most that much. `stop_requested()` is
    asked after every step; when it says yes, the state is saved there and `TrainingStopped` raised. A resumed run
    continues from the step it was saved at, exactly as if it had not stopped.

    `compile` runs the training forward through `torch.compile` (mode "reduce-overhead" on CUDA: CUDA graphs; the
    default mode elsewhere); the evaluations use the same model eagerly. It changes the rounding, not the recipe:
    a run may be resumed with or without it. On CUDA, cuDNN benchmarks its convolution algorithms while training
    (`torch.backends.cudnn.benchmark`, restored after): its choice may differ between runs, so two CUDA runs agree
    only up to rounding. The CUDA paths have not run on a GPU yet.
    """
    spec.validate()
    dev = resolve_device(device)
    with cudnn_benchmark(dev), contextlib.ExitStack() as held:
        return _train(
            spec, Path(out_dir), dev, compile, resume, overwrite, progress, on_batch, save_every_s, stop_requested, held
        )


def backward_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The backward pass's counterpart of `autocast`: in fp32 on CUDA, TF32 off (cuDNN would otherwise round the
    gradient convolutions' inputs to 10 mantissa bits); bf16 autocast covers only the forward, as PyTorch advises."""
    return exact_fp32() if precision == "fp32" and device.type == "cuda" else contextlib.nullcontext()


def train_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str,
    device: torch.device,
    cuda_graphs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; the loss (fp32 cross-entropy) and logits, detached and left on the device.

    `cuda_graphs`: `forward` is compiled with CUDA graphs (`--compile` on CUDA), whose outputs the next step may
    overwrite, so each step is marked as a new one.
    """
    if cuda_graphs and device.type == "cuda":
        torch.compiler.cudagraph_mark_step_begin()
    with autocast(precision, device):
        logits = forward(x)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    with backward_precision(precision, device):
        loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """On CUDA, let cuDNN time its convolution algorithms and keep the fastest for each shape (training's shapes are
    fixed: it pays after the first steps); the previous setting is restored after. Elsewhere nothing changes."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _train(
    spec: TrainSpec,
    out_dir: Path,
    dev: torch.device,
    compile: bool,
    resume: bool,
    overwrite: bool,
    progress: Progress | None,
    on_batch: BatchCallback | None,
    save_every_s: float | None,
    stop_requested: Callable[[], bool],
    held: contextlib.ExitStack,
) -> dict[str, Any]:
    """`train` on a resolved device, with cuDNN's settings in place; the folder's lock joins `held`."""
    state_path, final_path = out_dir / "state.pt", out_dir / "checkpoint.pt"
    _check_folder(out_dir, resume, overwrite)  # early, before the data is read; again under the lock
    # the data first: input that cannot train fails before a run is replaced or a folder made
    mean, std = DEFAULT_NORMALIZATION[spec.data.name]
    train_set = load_split(dataclasses.replace(spec.data, subset=None), "train").to(dev)
    full_test = load_split(dataclasses.replace(spec.data, subset=None), "test").to(dev)
    if len(full_test) == 0:
        raise LandscapeError(f"the {spec.data.name} test split in {spec.data.root or 'the data root'} holds no images")
    epoch_test = subset_indices(len(full_test), spec.eval_images, spec.seed, "test")
    test_set = ImageSet(full_test.images[epoch_test], full_test.labels[epoch_test], epoch_test)
    scale, shift = normalizer(mean, std, dev)
    steps_per_epoch = len(train_set) // spec.batch_size
    if steps_per_epoch < 1:
        raise LandscapeError(f"{len(train_set)} training images are fewer than one batch of {spec.batch_size}")
    total_steps = steps_per_epoch * spec.epochs
    data_sha256 = {"train": fingerprint(train_set), "test": fingerprint(full_test)}  # what a resume must find again
    starting = overwrite or not state_path.exists()  # else the init weights are in the state already
    if starting and spec.init and not Path(spec.init).is_file():
        raise LandscapeError(f"--init checkpoint not found: {spec.init}")
    # read and checked before --overwrite deletes anything: it may even be the checkpoint about to be replaced
    init = _checked_init(spec, mean, std) if starting and spec.init else None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LandscapeError(f"cannot create --out {out_dir}: {e.strerror or e}") from None
    # one run per folder: a second one (a --resume while the first still runs) would log every epoch twice and
    # write the same state file
    held.enter_context(writer_lock(out_dir / "run", LOCK_ADVICE, shown=out_dir))  # its file is out_dir / RUN_LOCK
    _check_folder(out_dir, resume, overwrite)  # a run that held the lock until now may have filled the folder
    _remove_temporaries(out_dir)
    if overwrite:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
    elif not state_path.exists():  # snapshots of an attempt that saved no state: no run continues them
        (out_dir / "snapshots.h5").unlink(missing_ok=True)
    torch.manual_seed(spec.seed)
    model = create_model(spec.arch, num_classes=num_classes(spec.data.name)).to(dev)
    memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=True,
    )
    history: list[dict[str, Any]] = []
    start_epoch, elapsed = 0, 0.0
    spec_dict = as_stored(spec)
    precision = resolve_precision(spec.precision, dev)
    hardware = describe_hardware(dev)
    if state_path.exists():
        state = _load_state(state_path, dev)
        # read back through the dataclass: a field added since the run started (data.part) takes its default
        stored = as_stored(read_back(TrainSpec, json.loads(state["spec"]), "the stored recipe"))
        recorded_data = json.loads(state["data"]) if isinstance(state.get("data"), str) else None
        # with the images' sha256 recorded, the data may be elsewhere (another machine): the images are compared
        ignore_root = recorded_data is not None
        recorded_init = _recorded_init(state)
        if recorded_init is not None:  # its weights are in the state: its file need not be here, nor at that path
            _check_init(spec.init, recorded_init)
            spec_dict = {**spec_dict, "init": stored.get("init", "")}
        changed = sorted(
            k
            for k in set(stored) | set(spec_dict)
            if k not in RESUMABLE_CHANGES
            and _recipe(stored, ignore_root).get(k) != _recipe(spec_dict, ignore_root).get(k)
        )
        if changed:
            raise LandscapeError(
                f"{out_dir} holds a run with another recipe ({', '.join(changed)} differ): "
                "pass the same options to resume, or --overwrite to start again"
            )
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history, start_epoch, elapsed = json.loads(state["history"]), int(state["epoch"]), float(state["elapsed"])
            init_info = json.loads(state["init"]) if "init" in state else {}
            if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
                raise ValueError("its history is not a list of epoch records")
            if not isinstance(init_info, dict):
                raise ValueError("its --init record is not a dict")
            _restore_rng(state.get("rng"), dev)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise LandscapeError(_damaged_state(state_path, e)) from None
        for split, value in (recorded_data or {}).items():
            if data_sha256.get(split) != value:
                raise LandscapeError(
                    f"{out_dir}: the {split} images here differ from the ones this run trained on (sha256 "
                    f"{data_sha256.get(split, '')[:12]}... here, {str(value)[:12]}... in the state): point --data-root "
                    "at the same data, or --overwrite to start again"
                )
        within = state.get("within_epoch")  # absent in states saved at the end of an epoch (and before it existed)
        # the log is written after the state: a kill between the two left it an epoch short
        _write_log(out_dir / "log.jsonl", history)
    else:
        init_info = _load_init(init, model)
        within = None
        if init is not None:  # --init may be this folder's checkpoint, which --overwrite deleted: kept from the start
            _save_state(state_path, model, optimizer, spec_dict, history, 0, 0.0, init_info, data_sha256)

    def measure(images: ImageSet, precision: str = precision) -> tuple[float, float]:
        """Mean loss and accuracy (%) in eval mode, without augmentation."""
        model.eval()
        metrics = loss_and_accuracy(
            model, images, scale, shift, batch_size=EVAL_BATCH_SIZE, precision=precision, memory_format=memory_format
        )
        return float(metrics.loss[0]), float(metrics.acc[0])

    position = _within_epoch(within, steps_per_epoch, state_path)
    forward = _compiled(model, dev) if compile else model  # the same parameters: the evaluations use `model`
    last_save = time.perf_counter()
    for epoch in range(start_epoch, spec.epochs):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(spec.seed * EPOCH_SEED_STRIDE + epoch)  # the epoch's own randomness
        order = torch.randperm(len(train_set), generator=generator).to(dev)
        model.train()
        loss_sum, correct, seen = torch.zeros((), device=dev), torch.zeros((), device=dev), 0
        nonfinite = torch.zeros((), dtype=torch.bool, device=dev)  # whether a loss of this epoch was nan or inf
        first_step = 0
        if position is not None:  # resumed within this epoch: its generator and running sums as they were
            first_step, generator_state, sums, seen = position
            generator.set_state(generator_state)
            loss_sum, correct = sums[0].to(dev), sums[1].to(dev)
            position = None
        checked = first_step  # steps of this epoch known to have had finite losses
        for step in range(first_step, steps_per_epoch):
            lr = learning_rate(spec, epoch * steps_per_epoch + step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[step * spec.batch_size : (step + 1) * spec.batch_size]
            images = augment(train_set.images[idx], generator)
            x = normalize(images, scale, shift, memory_format)
            y = train_set.labels[idx]
            try:
                loss, logits = train_step(forward, optimizer, x, y, precision, dev, cuda_graphs=compile)
            except Exception as e:
                if compile and _compile_failed(e):
                    raise LandscapeError(_compile_failure(e)) from None
                raise
            nonfinite |= ~torch.isfinite(loss)  # on the device: no waiting for it here
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            stopping = stop_requested()
            now = time.perf_counter()
            done = step + 1
            saving = done < steps_per_epoch and (
                stopping or (save_every_s is not None and now - last_save >= save_every_s)
            )
            if saving or done == steps_per_epoch or done % NONFINITE_CHECK_EVERY == 0:
                if nonfinite.item():  # waits for the device
                    raise LandscapeError(_nonfinite_message(epoch + 1, checked + 1, done, steps_per_epoch, state_path))
                checked = done
            if saving:
                within_epoch = {
                    "step": done,
                    "generator": generator.get_state(),
                    "sums": torch.stack([loss_sum.detach().float(), correct.float()]).cpu(),
                    "seen": seen,
                }
                elapsed_now = elapsed + now - started
                _save_state(
                    state_path,
                    model,
                    optimizer,
                    spec_dict,
                    history,
                    epoch,
                    elapsed_now,
                    init_info,
                    data_sha256,
                    within_epoch,
                )
                last_save = now
                if stopping:
                    raise TrainingStopped(epoch + 1, done, steps_per_epoch, state_path)
            if on_batch:
                on_batch(
                    epoch + 1,
                    done,
                    steps_per_epoch,
                    lambda: (float(loss_sum) / seen, 100.0 * float(correct) / seen),  # noqa: B023 (called now)
                )
        elapsed += time.perf_counter() - started
        test_loss, test_acc = measure(test_set)
        if not math.isfinite(test_loss):  # the last step's update blew the weights up: its loss was still finite
            kept = f"the last saved state is kept in {state_path}" if state_path.exists() else "no state was saved"
            raise LandscapeError(
                f"epoch {epoch + 1} ended with weights whose test loss is {test_loss}: stopped; {kept} (lower --lr)"
            )
        record = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / seen,
            "train_acc": 100.0 * float(correct) / seen,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": lr,
            "seconds": elapsed,
            "precision": precision,
            "hardware": hardware,
            "compiled": compile,
            "torch": str(torch.__version__),
        }
        history.append(record)
        if spec.snapshot_every and (epoch + 1) % spec.snapshot_every == 0:
            _append_snapshot(out_dir / "snapshots.h5", model, epoch + 1, spec_dict)
        _save_state(state_path, model, optimizer, spec_dict, history, epoch + 1, elapsed, init_info, data_sha256)
        last_save = time.perf_counter()
        _write_log(out_dir / "log.jsonl", history)
        if progress:
            progress(record)
        if stopping and epoch + 1 < spec.epochs:
            raise TrainingStopped(epoch + 1, steps_per_epoch, steps_per_epoch, state_path)

    # Final metrics in eval mode, without augmentation, on all training and test images, in fp32 whatever the
    # training precision: the numbers the checkpoint is known by (bf16 moves an accuracy by tenths of a point).
    train_loss, train_acc = measure(train_set, "fp32")
    test_loss, test_acc = measure(full_test, "fp32")
    metadata = {
        "arch": spec.arch,
        "num_classes": num_classes(spec.data.name),
        "dataset": spec.data.name,
        "skips": _skips(spec.arch),
        "mean": list(mean),
        "std": list(std),
        "epochs": int(init_info.get("epochs", 0)) + spec.epochs,
        "init": init_info,
        "eval_precision": "fp32",
        "epoch_precisions": sorted({r.get("precision", "?") for r in history}),
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "seed": spec.seed,
        "recipe": spec_dict,
        "wall_time_s": round(elapsed, 1),
        "hardware": hardware,
        "torch": str(torch.__version__),
        "landscape": __version__,
    }
    model = model.to(memory_format=torch.contiguous_format)
    save_checkpoint(final_path, model, metadata)
    return metadata


RUN_FILES = ("state.pt", "checkpoint.pt", "snapshots.h5", "log.jsonl")


def _check_folder(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that is a file, holds a run that is neither resumed nor overwritten, or holds a run file that
    is a link (a run folder holds its own files: a link planted there, as git stores them, would be written through)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LandscapeError(f"--out {out_dir} is a file: training writes a folder")
    if not out_dir.exists():
        return
    for name in RUN_FILES:
        if (out_dir / name).is_symlink():
            raise LandscapeError(f"{out_dir / name} is a link: a run folder holds its own files, not links")
    if any(p.name != RUN_LOCK for p in out_dir.iterdir()) and not overwrite:
        if (out_dir / "checkpoint.pt").exists():
            raise LandscapeError(f"{out_dir} holds a finished run: pass --overwrite to train again")
        if not resume:
            raise LandscapeError(
                f"{out_dir} holds an unfinished run: pass --resume to continue it or --overwrite to start again"
            )


def _remove_temporaries(out_dir: Path) -> None:
    """Temporary files of saves that a kill interrupted (`files.replacing`'s names for the run's files)."""
    for name in RUN_FILES:
        for leftover in out_dir.glob(f".{name}.*.partial"):
            leftover.unlink(missing_ok=True)


def _restore_rng(saved: Any, device: torch.device) -> None:
    """The global random state a state was saved with (absent in states saved before it was recorded)."""
    if not isinstance(saved, dict):
        return
    try:
        if isinstance(saved.get("cpu"), torch.Tensor):
            torch.set_rng_state(saved["cpu"].cpu())
        if device.type == "cuda" and isinstance(saved.get("cuda"), torch.Tensor):
            torch.cuda.set_rng_state(saved["cuda"].cpu())
    except (RuntimeError, TypeError, ValueError) as e:
        raise LandscapeError(f"the saved random state is damaged ({type(e).__name__}): pass --overwrite") from None


def _recorded_init(state: dict[str, Any]) -> dict[str, Any] | None:
    """What a saved state records of its run's --init checkpoint (path, sha256), None for a run without one."""
    try:
        init = json.loads(state.get("init") or "{}")
    except (TypeError, ValueError):
        return None
    return init if isinstance(init, dict) and isinstance(init.get("sha256"), str) else None


def _check_init(given: str, recorded: dict[str, Any]) -> None:
    """On resume, an --init that is given and here must be the run's own (by sha256); one given elsewhere or left out
    is fine: the run's weights started from it long ago."""
    if given and Path(given).is_file():
        sha256 = file_sha256(given)
        if sha256 != recorded["sha256"]:
            raise LandscapeError(
                f"--init {given} is not the checkpoint this run started from (sha256 {sha256[:12]}..., the run "
                f"records {recorded['sha256'][:12]}... from {str(recorded.get('path'))[:80]}): pass the same --init "
                "or none to resume, or --overwrite to start again"
            )


def _recipe(stored: dict[str, Any], ignore_root: bool) -> dict[str, Any]:
    """A stored recipe as a resume compares it: without the data's folder when the images themselves are compared."""
    if not ignore_root or not isinstance(stored.get("data"), dict):
        return stored
    return {**stored, "data": {k: v for k, v in stored["data"].items() if k != "root"}}


def _load_state(path: Path, device: torch.device) -> dict[str, Any]:
    """The saved state of a run (weights_only), as a dict holding its recipe; one clear error for anything else."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, not a torch file, or a pickle of objects weights_only refuses
        raise LandscapeError(_damaged_state(path, e)) from None
    if not isinstance(state, dict) or not isinstance(state.get("spec"), str):
        raise LandscapeError(_damaged_state(path, ValueError("it holds no training recipe")))
    return state


def _damaged_state(path: Path, error: Exception) -> str:
    reason = (str(error).strip().splitlines() or [""])[0][:160]
    return (
        f"{path} is damaged or not a state of this run ({type(error).__name__}: {reason}): "
        "pass --overwrite to start again"
    )


@dataclass(frozen=True)
class _Init:
    """A warm restart's checkpoint, read and checked: its weights and what the run records of it."""

    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any]


def _checked_init(spec: TrainSpec, mean: tuple[float, ...], std: tuple[float, ...]) -> _Init:
    """`spec.init` read and checked against the run's model (arch, classes, dataset, normalization, tensors by name
    and shape); what the run will record of it (file, hash, its history) checked to be storable."""
    checkpoint = load_checkpoint(spec.init)
    recorded_arch = checkpoint.metadata.get("arch")
    if recorded_arch is not None and recorded_arch != spec.arch:
        raise LandscapeError(f"--init {spec.init} holds a '{recorded_arch}', not a '{spec.arch}'")
    classes = num_classes(spec.data.name)
    settings = {"arch": spec.arch, "num_classes": classes, "dataset": spec.data.name, "mean": mean, "std": std}
    model = create_model(spec.arch, num_classes=classes)
    check_same_model(checkpoint, model.state_dict(), settings, what="--init")
    check_finite(checkpoint.state_dict, f"--init {spec.init}")  # else blamed on the learning rate at the first step
    meta = checkpoint.metadata
    epochs = meta.get("epochs")
    info = {
        "path": spec.init,
        "sha256": checkpoint.sha256,
        "epochs": epochs if isinstance(epochs, int) else 0,
        "test_acc": meta.get("test_acc"),
        "train_acc": meta.get("train_acc"),
        "recipe": meta.get("recipe"),
        "init": meta.get("init") or {},
    }
    try:  # saved with the state after every epoch: a file whose metadata cannot be would fail there
        json.dumps(info)  # as `_save_state` will
    except (ValueError, TypeError, RecursionError) as e:
        raise LandscapeError(f"--init {spec.init}: its metadata cannot be recorded ({type(e).__name__})") from None
    return _Init(checkpoint.state_dict, info)


def _load_init(init: _Init | None, model: nn.Module) -> dict[str, Any]:
    """Load a checked `--init`'s weights into `model`; returns what the run records of it ({} without one)."""
    if init is None:
        return {}
    model.load_state_dict(init.state_dict, strict=False)  # the tensors were checked by name and shape
    return init.info


def _skips(arch: str) -> bool | None:
    """Whether a registered ResNet has skip connections (`_noshort`: none); None for other architectures."""
    if re.fullmatch(r"resnet\d+(_noshort)?", arch):
        return not arch.endswith("_noshort")
    return None


def _compiled(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` through torch.compile: mode "reduce-overhead" (CUDA graphs) on CUDA, the default mode elsewhere.
    It compiles at its first call (on the CPU with a C++ compiler)."""
    return torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)


def _compile_failed(error: Exception) -> bool:
    """Whether `error` came from torch.compile (TorchDynamo or a backend such as Inductor) rather than the model."""
    import torch._dynamo.exc

    return isinstance(error, torch._dynamo.exc.TorchDynamoException)


def _compile_failure(error: Exception) -> str:
    """One line for a failed torch.compile: the first line of its error, and the way out."""
    lines = str(error).strip().splitlines()
    return f"--compile failed: {lines[0] if lines else type(error).__name__} (train without --compile)"


def _nonfinite_message(epoch: int, first: int, last: int, steps: int, state_path: Path) -> str:
    """The error for a nan or inf training loss in `epoch` (1-based) at one of steps `first`..`last`."""
    where = f"at step {last}" if first == last else f"between steps {first} and {last}"
    kept = f"the last saved state is kept in {state_path}" if state_path.exists() else "no state was saved"
    return (
        f"the training loss became nan or inf in epoch {epoch}, {where} of {steps}: stopped; {kept} "
        "(try a smaller --lr)"
    )


def _save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    spec: dict[str, Any],
    history: list[dict[str, Any]],
    epoch: int,
    elapsed: float,
    init: dict[str, Any],
    data_sha256: dict[str, str],
    within_epoch: dict[str, Any] | None = None,
) -> None:
    """The run's state after `epoch` whole epochs (and, with `within_epoch`, that many steps into the next), with
    the sha256 of its train and test images (`landscape.data.fingerprint`), which a resume compares."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "spec": json.dumps(spec),
        "history": json.dumps(history),
        "epoch": epoch,
        "elapsed": elapsed,
        "init": json.dumps(init),
        "data": json.dumps(data_sha256),
    }
    if within_epoch is not None:
        state["within_epoch"] = within_epoch
    rng = {"cpu": torch.get_rng_state()}  # dropout draws from it: a resume goes on with the same draws
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    state["rng"] = rng
    with replacing(path) as temporary:
        torch.save(state, temporary)


def _within_epoch(
    within: Any, steps_per_epoch: int, state_path: Path
) -> tuple[int, torch.Tensor, torch.Tensor, int] | None:
    """A saved position within an epoch, checked: (steps done, generator state, [loss sum, correct], images seen)."""
    if within is None:
        return None
    try:
        step, generator, sums, seen = within["step"], within["generator"], within["sums"], within["seen"]
        valid = (
            isinstance(step, int)
            and 0 < step < steps_per_epoch
            and isinstance(generator, torch.Tensor)
            and generator.dtype == torch.uint8
            and generator.shape == torch.Generator().get_state().shape  # else set_state fails: a RuntimeError
            and isinstance(sums, torch.Tensor)
            and sums.shape == (2,)
            and isinstance(seen, int)
            and seen > 0
        )
    except (KeyError, TypeError):
        valid = False
    if not valid:
        raise LandscapeError(f"{state_path} holds a damaged position within an epoch: start again with --overwrite")
    return step, generator.cpu(), sums.cpu(), seen


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    """The log as the state's history has it, one JSON line per epoch (temporary file, then rename)."""
    with replacing(path) as temporary:
        temporary.write_text("".join(json.dumps(record) + "\n" for record in history))


def _append_snapshot(path: Path, model: nn.Module, epoch: int, spec: dict[str, Any]) -> None:
    """Weights after `epoch` in float16, keyed by tensor name: snapshots.h5/epoch_XXXX/<name>.

    HDF5 has no journal: a kill in the middle of an append can leave the whole file unreadable. So the snapshots are
    appended to a copy that then replaces the file: a kill leaves the earlier snapshots as they were."""
    with replacing(path) as partial:
        if path.exists():
            shutil.copyfile(path, partial)
        _write_snapshot(partial, model, epoch, spec, new=not path.exists())


def _write_snapshot(partial: Path, model: nn.Module, epoch: int, spec: dict[str, Any], new: bool) -> None:
    with h5py.File(partial, "w" if new else "a") as f:
        f.attrs["format"] = "landscape-trajectory"
        f.attrs["spec"] = json.dumps(spec)
        if f"epoch_{epoch:04d}" in f:  # written by an attempt killed before its state was saved: replaced
            del f[f"epoch_{epoch:04d}"]
        group = f.create_group(f"epoch_{epoch:04d}")
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                group.create_dataset(
                    name, data=tensor.detach().cpu().contiguous().numpy().astype(np.float16), compression="gzip"
                )
