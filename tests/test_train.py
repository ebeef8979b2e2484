"""`landscape train` on a tiny CIFAR-format fixture: checkpoint with metadata, resume == uninterrupted."""

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TRAIN_PER_BATCH, write_cifar10
from torch import nn
from typer.testing import CliRunner

from landscape import DataSpec, LandscapeError, build_model, create_model, load_checkpoint
from landscape.cli import app
from landscape.data import DEFAULT_NORMALIZATION, load_split, normalizer
from landscape.evaluate import loss_and_accuracy, normalize
from landscape.train import TrainingStopped, TrainSpec, augment, cudnn_benchmark, learning_rate, num_classes, train


def spec(root, **kw):
    base = dict(
        arch="resnet20",
        data=DataSpec(root=str(root)),
        epochs=2,
        batch_size=16,
        lr=0.05,
        snapshot_every=1,
        channels_last=False,
    )
    return TrainSpec(**(base | kw))


def test_train_writes_a_loadable_checkpoint_with_metadata(tmp_path, cifar_root):
    last_batches = []

    def on_batch(epoch, step, steps, running):
        if step == steps:
            last_batches.append((epoch, *running()))

    meta = train(spec(cifar_root), tmp_path / "run", device="cpu", on_batch=on_batch)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt.metadata == meta
    assert meta["arch"] == "resnet20" and meta["skips"] and meta["epochs"] == 2 and meta["dataset"] == "cifar10"
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "wall_time_s", "hardware", "recipe", "seed"):
        assert key in meta
    model = build_model(ckpt)
    assert sum(p.numel() for p in model.parameters()) == 272_474
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    # the running numbers of the progress bar end at the epoch's logged training loss and accuracy
    assert last_batches == [(r["epoch"], r["train_loss"], r["train_acc"]) for r in log]
    import h5py

    with h5py.File(tmp_path / "run" / "snapshots.h5") as f:
        assert sorted(f) == ["epoch_0001", "epoch_0002"]
        assert f["epoch_0002/conv1.weight"].dtype.name == "float16"
        torch.testing.assert_close(
            torch.from_numpy(f["epoch_0002/conv1.weight"][()]).float(),
            model.state_dict()["conv1.weight"],
            atol=1e-3,
            rtol=1e-3,
        )


class Interrupt(Exception):
    pass


def interrupted(s: TrainSpec, folder: Path, after_epoch: int) -> None:
    """Train until `after_epoch` is saved and stop there, as a Ctrl-C right after that epoch."""

    def stop(record):
        if record["epoch"] == after_epoch:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(s, folder, device="cpu", progress=stop)


def test_resume_after_interruption_gives_the_same_weights(tmp_path, cifar_root):
    s = spec(cifar_root, epochs=3, snapshot_every=0)
    train(s, tmp_path / "full", device="cpu")

    interrupted(s, tmp_path / "part", after_epoch=1)
    assert not (tmp_path / "part" / "checkpoint.pt").exists()
    with pytest.raises(LandscapeError, match="unfinished run"):
        train(s, tmp_path / "part", device="cpu")
    train(s, tmp_path / "part", device="cpu", resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt").state_dict
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(LandscapeError, match="finished run"):
        train(s, tmp_path / "part", device="cpu", resume=True)


def test_a_log_an_epoch_short_is_completed_from_the_state_on_resume(tmp_path, cifar_root):
    s = spec(cifar_root, epochs=3, snapshot_every=0)
    train(s, tmp_path / "full", device="cpu")

    interrupted(s, tmp_path / "part", after_epoch=2)
    log = tmp_path / "part" / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:1]))  # as a kill after epoch 2's state was saved, before its log line
    train(s, tmp_path / "part", device="cpu", resume=True)
    full = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    part = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in part] == [1, 2, 3] and part[:2] == [json.loads(line) for line in lines]
    same = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "precision")
    assert [{k: r[k] for k in same} for r in part] == [{k: r[k] for k in same} for r in full]


def test_a_kill_while_a_snapshot_is_written_loses_no_earlier_snapshot(tmp_path, cifar_root, monkeypatch):
    import h5py

    s = spec(cifar_root, epochs=3, snapshot_every=1)
    train(s, tmp_path / "full", device="cpu")
    real_create = h5py.Group.create_dataset
    calls = []

    def killed_in_epoch_two(group, name, *args, **kwargs):
        calls.append(group.name)
        if group.name == "/epoch_0002" and len([c for c in calls if c == "/epoch_0002"]) == 3:
            raise Interrupt  # as a kill halfway through writing epoch 2's snapshot
        return real_create(group, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", killed_in_epoch_two)
    with pytest.raises(Interrupt):
        train(s, tmp_path / "part", device="cpu")
    monkeypatch.setattr(h5py.Group, "create_dataset", real_create)
    with h5py.File(tmp_path / "part" / "snapshots.h5") as f:
        assert sorted(f) == ["epoch_0001"] and len(f["epoch_0001"]) == len(calls) - 3
    train(s, tmp_path / "part", device="cpu", resume=True)
    with h5py.File(tmp_path / "full" / "snapshots.h5") as a, h5py.File(tmp_path / "part" / "snapshots.h5") as b:
        assert sorted(a) == sorted(b) == ["epoch_0001", "epoch_0002", "epoch_0003"]
        for epoch in a:
            assert sorted(a[epoch]) == sorted(b[epoch])
            assert all(np.array_equal(a[epoch][n][()], b[epoch][n][()]) for n in a[epoch])
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == sorted(
        p.name for p in (tmp_path / "full").iterdir()
    )


def _same_run(full: Path, part: Path) -> None:
    """The two run folders hold the same final weights and the same logged numbers."""
    a = load_checkpoint(full / "checkpoint.pt").state_dict
    b = load_checkpoint(part / "checkpoint.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    numbers = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
    logs = [[json.loads(line) for line in (f / "log.jsonl").read_text().splitlines()] for f in (full, part)]
    assert [{k: r[k] for k in numbers} for r in logs[0]] == [{k: r[k] for k in numbers} for r in logs[1]]


def stop_at_call(n: int):
    """A `stop_requested` that says yes the n-th time it is asked (once per step: 3 steps per fixture epoch)."""
    calls = []

    def asked() -> bool:
        calls.append(1)
        return len(calls) == n

    return asked


@pytest.mark.parametrize(
    "stop_at, message, step_saved",
    [
        (4, "stopped in epoch 2 after step 1 of 3", 1),  # within an epoch: the position in it is saved
        (3, "stopped in epoch 1 after step 3 of 3", None),  # at an epoch's end: the epoch is finished and saved
    ],
)
def test_a_stopped_run_resumes_exactly(tmp_path, cifar_root, stop_at, message, step_saved):
    s = spec(cifar_root, epochs=2, snapshot_every=0)
    train(s, tmp_path / "full", device="cpu")
    with pytest.raises(TrainingStopped, match=message):
        train(s, tmp_path / "part", device="cpu", stop_requested=stop_at_call(stop_at))
    state = torch.load(tmp_path / "part" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and (state.get("within_epoch") or {}).get("step") == step_saved
    train(s, tmp_path / "part", device="cpu", resume=True)
    _same_run(tmp_path / "full", tmp_path / "part")


def test_saves_within_epochs_lose_only_the_steps_since_the_last(tmp_path, cifar_root):
    s = spec(cifar_root, epochs=2, snapshot_every=0)
    train(s, tmp_path / "full", device="cpu")

    def killed_in_epoch_two(epoch, step, steps, running):
        if (epoch, step) == (2, 2):
            raise Interrupt  # as a kill after step 2 of epoch 2 was saved

    with pytest.raises(Interrupt):
        train(s, tmp_path / "part", device="cpu", on_batch=killed_in_epoch_two, save_every_s=0)
    state = torch.load(tmp_path / "part" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["within_epoch"]["step"] == 2
    train(s, tmp_path / "part", device="cpu", resume=True, save_every_s=0)
    _same_run(tmp_path / "full", tmp_path / "part")


def test_a_damaged_position_within_an_epoch_is_one_clear_error(tmp_path, cifar_root):
    s = spec(cifar_root, epochs=2, snapshot_every=0)
    with pytest.raises(TrainingStopped):
        train(s, tmp_path / "run", device="cpu", stop_requested=stop_at_call(4))
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    state["within_epoch"]["step"] = 7
    torch.save(state, tmp_path / "run" / "state.pt")
    with pytest.raises(LandscapeError, match="holds a damaged position within an epoch"):
        train(s, tmp_path / "run", device="cpu", resume=True)


def _cli_run_stopped_by_sigterms(tmp_path, cifar_root, monkeypatch, signals: int, extra: tuple[str, ...] = ()):
    """`landscape train` of 2 epochs uninterrupted into full/, then into part/ with `signals` SIGTERMs sent during
    step 2 of epoch 2; returns (the stopped run's result, the CLI args, the runner) with augment restored."""
    import os
    import signal

    import landscape.train

    args = ["train", "--arch", "resnet20", "--data-root", str(cifar_root), "--epochs", "2", "--batch-size", "16"]
    args += ["--no-channels-last", "--save-minutes", "0"]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "full")]).exit_code == 0
    real_augment, calls = landscape.train.augment, []

    def augment_then_sigterms(images, generator):
        calls.append(1)
        if len(calls) == 5:  # during step 2 of epoch 2
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGTERM)
        return real_augment(images, generator)

    monkeypatch.setattr(landscape.train, "augment", augment_then_sigterms)
    stopped = runner.invoke(app, [*args, "--out", str(tmp_path / "part"), *extra])
    monkeypatch.setattr(landscape.train, "augment", real_augment)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the command
    return stopped, args, runner


def test_cli_sigterm_saves_the_step_and_resume_continues_exactly(tmp_path, cifar_root, monkeypatch):
    import signal

    stopped, args, runner = _cli_run_stopped_by_sigterms(tmp_path, cifar_root, monkeypatch, signals=1)
    assert stopped.exit_code == 128 + signal.SIGTERM, stopped.output
    assert "SIGTERM: saving the state after this step, then stopping" in stopped.stderr
    assert "stopped in epoch 2 after step 2 of 3" in stopped.stderr and "--resume" in stopped.stderr
    resumed = runner.invoke(app, [*args, "--out", str(tmp_path / "part"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "epoch 2/2: 100%|██████████| 3/3 [00:00<?, ?batch/s]" in resumed.stderr  # labelled, no false rate
    for bars in (stopped.stderr, resumed.stderr):  # an epoch's first drawing had the last one's initial: -15477/s
        assert "<-" not in bars and not re.search(r"-[\d.]+batch/s", bars), bars
    _same_run(tmp_path / "full", tmp_path / "part")


def test_cli_a_run_started_with_overwrite_is_told_to_resume_without_it(tmp_path, cifar_root, monkeypatch):
    """ "continue with the same command and --resume": that command has --overwrite, which --resume refuses."""
    stopped, args, runner = _cli_run_stopped_by_sigterms(tmp_path, cifar_root, monkeypatch, 1, ("--overwrite",))
    assert "stopped in epoch 2 after step 2 of 3" in stopped.stderr
    assert "continue with the same command without --overwrite and --resume" in stopped.stderr
    resumed = runner.invoke(app, [*args, "--out", str(tmp_path / "part"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    _same_run(tmp_path / "full", tmp_path / "part")


def test_cli_a_second_sigterm_stops_at_once_with_143_and_resume_continues_exactly(tmp_path, cifar_root, monkeypatch):
    """A second signal stops within the step (the last saved state is kept); it exited 130 as if Ctrl-C."""
    import signal

    stopped, args, runner = _cli_run_stopped_by_sigterms(tmp_path, cifar_root, monkeypatch, signals=2)
    assert stopped.exit_code == 128 + signal.SIGTERM, stopped.output
    assert "interrupted: the run's last saved state is kept; continue it with --resume" in stopped.stderr
    state = torch.load(tmp_path / "part" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and "within_epoch" not in state  # the state of epoch 1's end: --save-minutes 0
    resumed = runner.invoke(app, [*args, "--out", str(tmp_path / "part"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    _same_run(tmp_path / "full", tmp_path / "part")


def _edit_stored_recipe(state_path: Path, edit) -> None:
    state = torch.load(state_path, weights_only=True)
    recipe = json.loads(state["spec"])
    edit(recipe)
    state["spec"] = json.dumps(recipe)
    torch.save(state, state_path)


def test_a_run_started_before_a_recipe_field_existed_resumes(tmp_path, cifar_root):
    """A state written before `data.part` existed (session 5's runs) resumes, exactly as if never stopped."""
    s = spec(cifar_root, epochs=2, snapshot_every=0)
    train(s, tmp_path / "full", device="cpu")

    interrupted(s, tmp_path / "part", after_epoch=1)
    _edit_stored_recipe(tmp_path / "part" / "state.pt", lambda recipe: recipe["data"].pop("part"))
    train(s, tmp_path / "part", device="cpu", resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt").state_dict
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_stored_recipe_is_one_clear_error(tmp_path, cifar_root):
    s = spec(cifar_root, epochs=2, snapshot_every=0)

    interrupted(s, tmp_path / "run", after_epoch=1)
    _edit_stored_recipe(tmp_path / "run" / "state.pt", lambda recipe: recipe.update(epochs="two"))
    with pytest.raises(LandscapeError, match=r"the stored recipe\.epochs should be an integer"):
        train(s, tmp_path / "run", device="cpu", resume=True)
    _edit_stored_recipe(tmp_path / "run" / "state.pt", lambda recipe: recipe.update(epochs=2, optimizer="adam"))
    with pytest.raises(LandscapeError, match="the stored recipe has unknown fields: optimizer"):
        train(s, tmp_path / "run", device="cpu", resume=True)


def test_nan_loss_stops_with_a_clear_message(tmp_path, cifar_root):
    # a learning rate of 1e30 makes the loss of step 2 (3 steps per epoch) non-finite: it is found at the epoch's end
    with pytest.raises(LandscapeError) as error:
        train(spec(cifar_root, lr=1e30, epochs=2), tmp_path / "nan", device="cpu")
    assert str(error.value) == (
        "the training loss became nan or inf in epoch 1, between steps 1 and 3 of 3: stopped; no state was saved "
        "(try a smaller --lr)"
    )
    assert not (tmp_path / "nan" / "state.pt").exists() and not (tmp_path / "nan" / "log.jsonl").exists()


@pytest.mark.parametrize(
    "batch_size, check_every, save_every_s, nan_at, where, saved",
    [
        (16, 20, None, (2, 2), "epoch 2, between steps 1 and 3 of 3", (1, None)),  # found at the epoch's end
        (16, 20, 0, (2, 2), "epoch 2, at step 2 of 3", (1, 1)),  # found before the save after step 2
        (8, 2, None, (1, 3), "epoch 1, between steps 3 and 4 of 7", None),  # found at the check every 2 steps
    ],
)
def test_a_nonfinite_loss_is_found_before_any_save(
    tmp_path, cifar_root, monkeypatch, batch_size, check_every, save_every_s, nan_at, where, saved
):
    """The losses are checked on the host only every NONFINITE_CHECK_EVERY steps, at the end of an epoch and before
    every save: the run stops with one error naming the steps, and the last saved state is a good one."""
    import landscape.train

    monkeypatch.setattr(landscape.train, "NONFINITE_CHECK_EVERY", check_every)
    steps = 5 * TRAIN_PER_BATCH // batch_size  # 60 training images
    real_augment, calls = landscape.train.augment, []

    def nan_images_once(images, generator):
        calls.append(1)
        out = real_augment(images, generator)
        if len(calls) == (nan_at[0] - 1) * steps + nan_at[1]:
            return out.float().fill_(float("nan"))  # as a diverged step: its loss is nan
        return out

    monkeypatch.setattr(landscape.train, "augment", nan_images_once)
    state_path = tmp_path / "run" / "state.pt"
    kept = f"the last saved state is kept in {state_path}" if saved else "no state was saved"
    with pytest.raises(LandscapeError) as error:
        train(
            spec(cifar_root, batch_size=batch_size, snapshot_every=0),
            tmp_path / "run",
            device="cpu",
            save_every_s=save_every_s,
        )
    assert str(error.value) == f"the training loss became nan or inf in {where}: stopped; {kept} (try a smaller --lr)"
    if saved is None:
        assert not state_path.exists()
        return
    state = torch.load(state_path, weights_only=True)
    assert (state["epoch"], (state.get("within_epoch") or {}).get("step")) == saved
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert len(json.loads(state["history"])) == 1


def reference_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`augment` written out image by image: the same draws (offsets y, offsets x, flips), then crop and flip."""
    n = len(images)
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(images, (4, 4, 4, 4))
    crops = [padded[k, :, dy[k] : dy[k] + 32, dx[k] : dx[k] + 32] for k in range(n)]
    return torch.stack([crop.flip(-1) if flip[k] else crop for k, crop in enumerate(crops)])


def test_augmentation_is_the_reference_crop_and_flip():
    """The draws of the seed-0 stream are pinned (stored when they were written): a run resumes on any machine and
    device with the same augmentation as before."""
    generator = torch.Generator().manual_seed(0)
    assert torch.randint(0, 9, (4,), generator=generator).tolist() == [8, 0, 2, 6]  # y offsets
    assert torch.randint(0, 9, (4,), generator=generator).tolist() == [7, 6, 7, 1]  # x offsets
    assert (torch.rand(4, generator=generator) < 0.5).tolist() == [True, False, True, True]  # flips
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a, b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    out = augment(images, a)
    assert out.dtype == torch.uint8 and torch.equal(out, reference_augment(images, b))
    assert torch.equal(a.get_state(), b.get_state())  # the stream goes on from the same place
    # image 1: y offset 0, x offset 6, not flipped: 4 rows of padding on top, the padding's 2 columns on the right
    expected = torch.zeros(3, 32, 32, dtype=torch.uint8)
    expected[:, 4:, :30] = images[1, :, :28, 2:]
    assert torch.equal(out[1], expected)


def reference_training(s: TrainSpec) -> dict[str, torch.Tensor]:
    """The training loop of `train` written out plainly on the CPU, with the check of every step's loss that it had
    before the losses were checked on the device: the weights `train` must still give bit for bit."""
    torch.manual_seed(s.seed)
    model = create_model(s.arch, num_classes=10)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr,
        momentum=s.momentum,
        nesterov=True,
    )
    images = load_split(dataclasses.replace(s.data, subset=None), "train")
    scale, shift = normalizer(*DEFAULT_NORMALIZATION[s.data.name], "cpu")
    steps = len(images) // s.batch_size
    for epoch in range(s.epochs):
        generator = torch.Generator().manual_seed(s.seed * 100_003 + epoch)
        order = torch.randperm(len(images), generator=generator)
        model.train()
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(s, epoch * steps + step, steps * s.epochs)
            idx = order[step * s.batch_size : (step + 1) * s.batch_size]
            x = normalize(reference_augment(images.images[idx], generator), scale, shift)
            loss = F.cross_entropy(model(x), images.labels[idx])
            assert torch.isfinite(loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.state_dict()


def test_training_on_the_cpu_is_the_reference_loop_bit_for_bit(tmp_path, cifar_root):
    s = spec(cifar_root, epochs=2, snapshot_every=0, precision="fp32")
    train(s, tmp_path / "run", device="cpu")
    trained = load_checkpoint(tmp_path / "run" / "checkpoint.pt").state_dict
    reference = reference_training(s)
    assert sorted(trained) == sorted(reference)
    assert all(torch.equal(trained[k], reference[k]) for k in reference)


def test_cudnn_benchmark_is_on_while_training_on_cuda_only():
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_benchmark(torch.device("cpu")):
            assert torch.backends.cudnn.benchmark is False
        with pytest.raises(Interrupt), cudnn_benchmark(torch.device("cuda")):  # only a flag: no GPU needed
            assert torch.backends.cudnn.benchmark is True
            raise Interrupt
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved


class TinyConvNet(nn.Module):
    """A 3x3 convolution with BatchNorm (batch statistics, running buffers updated), pooled, then the classes: 166
    parameters, which torch.compile compiles in ~10 s on one thread (2-3 s from inductor's cache)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.linear = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    return TinyConvNet(num_classes)


TINY_CNN = "test_train:tiny_cnn"  # tests/ is on sys.path, as for toymodels


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_compiled_training_matches_eager_and_resumes_across_the_switch(tmp_path, cifar_root):
    s = spec(cifar_root, arch=TINY_CNN, epochs=2, snapshot_every=0, precision="fp32")
    train(s, tmp_path / "eager", device="cpu")
    train(s, tmp_path / "compiled", device="cpu", compile=True)

    def stop_after_epoch_one(record):
        if record["epoch"] == 1:
            raise Interrupt

    for first, second in ((True, False), (False, True)):  # compiled, then eager; eager, then compiled
        folder = tmp_path / f"part_{first}"
        with pytest.raises(Interrupt):
            train(s, folder, device="cpu", compile=first, progress=stop_after_epoch_one)
        train(s, folder, device="cpu", compile=second, resume=True)
        assert [r["compiled"] for r in _log(folder)] == [first, second]
    assert [r["compiled"] for r in _log(tmp_path / "eager")] == [False, False]
    assert [r["compiled"] for r in _log(tmp_path / "compiled")] == [True, True]
    eager = load_checkpoint(tmp_path / "eager" / "checkpoint.pt").state_dict
    for folder in ("compiled", "part_True", "part_False"):
        other = load_checkpoint(tmp_path / folder / "checkpoint.pt").state_dict
        for name in eager:  # the same recipe, other kernels: measured differences up to 2e-7
            torch.testing.assert_close(other[name], eager[name], rtol=1e-4, atol=1e-5, msg=f"{folder}: {name}")


@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_a_failing_compile_is_one_clear_line(tmp_path, cifar_root, monkeypatch):
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()  # compile again, not from the earlier tests' compiled code
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(torch._inductor.config, "force_disable_caches", True)
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, str(tmp_path / "no-such-c++")))
    args = ["train", "--arch", TINY_CNN, "--data-root", str(cifar_root), "--epochs", "1", "--batch-size", "16"]
    r = CliRunner().invoke(app, [*args, "--precision", "fp32", "--compile", "--out", str(tmp_path / "run")])
    torch._dynamo.reset()
    assert r.exit_code == 2, r.output
    error = r.stderr.splitlines()[-1]
    assert error.startswith("error: --compile failed: ") and error.endswith(" (train without --compile)"), error
    assert "C++ compiler" in error, error


def test_learning_rate_schedules():
    s = TrainSpec(lr=0.1)
    assert learning_rate(s, 0, 100) == pytest.approx(0.01)
    assert learning_rate(s, 15, 100) == pytest.approx(0.1)
    assert learning_rate(s, 100, 100) == pytest.approx(0.0, abs=1e-12)
    cos = TrainSpec(lr=0.1, schedule="cosine")
    assert learning_rate(cos, 0, 100) == pytest.approx(0.1) and learning_rate(cos, 50, 100) == pytest.approx(0.05)


def test_cli_bad_input(tmp_path, cifar_root):
    runner = CliRunner()
    r = runner.invoke(
        app, ["train", "--arch", "resnet21", "--out", str(tmp_path / "x"), "--data-root", str(cifar_root)]
    )
    assert r.exit_code == 2 and "unknown model 'resnet21'" in r.stderr
    assert "batch" not in r.stderr  # the error comes before any progress bar
    for option, value, expected in (
        ("--epochs", "0", ">= 1"),
        ("--batch-size", "1", ">= 2"),
        ("--lr", "-0.1", "a positive number"),
        ("--weight-decay", "nan", ">= 0"),
        ("--seed", "-1", f"0 to {(2**64 - 1 - 30) // 100_003}"),  # every epoch's seed * 100003 + epoch fits 64 bits
        ("--snapshot-every", "-1", ">= 0 (0: never)"),
        ("--eval-images", "0", ">= 1"),
        ("--eval-images", "-5", ">= 1"),
        ("--save-minutes", "nan", "a finite number >= 0"),  # was taken: never saved within an epoch
        ("--save-minutes", "inf", "a finite number >= 0"),
    ):
        r = runner.invoke(app, ["train", "--arch", "resnet20", "--out", str(tmp_path / "x"), option, value])
        assert (r.exit_code, r.stderr) == (2, f"error: {option} must be {expected}, not {float(value):g}\n")
        assert not (tmp_path / "x").exists()
    r = runner.invoke(
        app, ["train", "--arch", "resnet20", "--out", str(tmp_path / "x"), "--data-root", str(tmp_path / "missing")]
    )
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = runner.invoke(
        app,
        [
            "train",
            "--arch",
            "resnet20",
            "--out",
            str(tmp_path / "y"),
            "--data-root",
            str(cifar_root),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--no-channels-last",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.stdout and Path(tmp_path / "y" / "checkpoint.pt").exists()
    # the progress bar: "epoch 1/1: 100%|...| 3/3 [00:01<00:00, 2.5batch/s, loss 2.3 acc 10.0%]"
    assert "epoch 1/1: " in r.stderr and ("batch/s, loss " in r.stderr or "s/batch, loss " in r.stderr)  # slow CPU
    finished = sorted(p.name for p in (tmp_path / "y").iterdir())
    big = str((2**64 - 1) // 100_003 + 1)  # its epoch 1 seed overflowed 64 bits after --overwrite deleted the run
    args = ["train", "--arch", "resnet20", "--out", str(tmp_path / "y"), "--data-root", str(cifar_root)]
    r = runner.invoke(app, [*args, "--epochs", "1", "--batch-size", "16", "--seed", big, "--overwrite"])
    assert r.exit_code == 2 and r.stderr.startswith("error: --seed must be 0 to "), r.output
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == finished
    r = runner.invoke(
        app,
        [
            "train",
            "--arch",
            "resnet20",
            "--out",
            str(tmp_path / "y"),
            "--data-root",
            str(cifar_root),
            "--epochs",
            "1",
            "--batch-size",
            "16",
        ],
    )
    assert r.exit_code == 2 and "finished run" in r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1  # no empty progress bar before it


def test_resume_may_change_precision_but_not_the_recipe(tmp_path, cifar_root):
    s = spec(cifar_root, epochs=3, snapshot_every=0, precision="fp32")

    interrupted(s, tmp_path / "run", after_epoch=1)
    with pytest.raises(LandscapeError, match=r"another recipe \(lr differ\)"):
        train(spec(cifar_root, epochs=3, snapshot_every=0, lr=0.2), tmp_path / "run", device="cpu", resume=True)
    meta = train(
        spec(cifar_root, epochs=3, snapshot_every=0, precision="bf16"), tmp_path / "run", device="cpu", resume=True
    )
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["precision"] for r in log] == ["fp32", "bf16", "bf16"]
    assert all(r["hardware"].startswith("CPU ") and r["torch"] == torch.__version__ for r in log)
    assert meta["epoch_precisions"] == ["bf16", "fp32"] and meta["eval_precision"] == "fp32"
    # the recorded final numbers are the fp32 ones of the saved weights, on all test images, whatever trained them
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    model = build_model(checkpoint, None, None).eval()
    test = load_split(DataSpec(root=str(cifar_root)), "test")
    scale, shift = normalizer(checkpoint.metadata["mean"], checkpoint.metadata["std"], "cpu")
    metrics = loss_and_accuracy(model, test, scale, shift, batch_size=500, precision="fp32")
    assert (meta["test_loss"], meta["test_acc"]) == pytest.approx((metrics.loss[0], metrics.acc[0]), rel=1e-6)


def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch):
    from landscape import hardware

    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: False)
    assert hardware.resolve_precision("auto", cpu) == "fp32"
    assert hardware.resolve_precision("bf16", cpu) == "bf16"
    assert "not native" in hardware.bf16_warning("bf16", "cpu")
    assert hardware.bf16_warning("fp32", "cpu") is None
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: True)
    assert hardware.resolve_precision("auto", cpu) == "bf16"
    assert hardware.bf16_warning("bf16", "cpu") is None


@pytest.fixture
def init_ckpt(tmp_path, resnet20_ckpt) -> Path:
    """`resnet20_ckpt` as a CIFAR-10 run of `landscape train` would record it (its normalization: the default)."""
    from landscape import save_checkpoint

    checkpoint = load_checkpoint(resnet20_ckpt)
    mean, std = DEFAULT_NORMALIZATION["cifar10"]
    path = tmp_path / "init" / "resnet20.pt"
    path.parent.mkdir()
    save_checkpoint(path, build_model(checkpoint), {**checkpoint.metadata, "mean": list(mean), "std": list(std)})
    return path


def test_warm_restart_starts_from_the_init_checkpoint(tmp_path, cifar_root, init_ckpt, resnet20_ckpt):
    from landscape.checkpoints import file_sha256

    init = load_checkpoint(init_ckpt)
    # a learning rate of 1e-9 leaves the weights where they started: the init checkpoint's
    meta = train(
        spec(cifar_root, epochs=1, snapshot_every=0, lr=1e-9, init=str(init_ckpt)), tmp_path / "warm", device="cpu"
    )
    final = load_checkpoint(tmp_path / "warm" / "checkpoint.pt").state_dict
    for name in ("conv1.weight", "layer3.2.conv2.weight", "linear.weight"):
        torch.testing.assert_close(final[name], init.state_dict[name], atol=1e-6, rtol=0)
    assert meta["init"]["sha256"] == file_sha256(init_ckpt)
    assert meta["epochs"] == int(init.metadata.get("epochs", 0)) + 1
    with pytest.raises(LandscapeError, match="holds a 'resnet20', not a 'resnet56'"):
        train(spec(cifar_root, arch="resnet56", epochs=1, init=str(init_ckpt)), tmp_path / "bad", device="cpu")
    with pytest.raises(LandscapeError, match=r"--init .* is not of this model: it records mean \[0.49, 0.48, 0.45\]"):
        train(spec(cifar_root, epochs=1, init=str(resnet20_ckpt)), tmp_path / "bad", device="cpu")  # other inputs
    with pytest.raises(LandscapeError, match="--init checkpoint not found"):
        train(spec(cifar_root, init=str(tmp_path / "nope.pt")), tmp_path / "bad2", device="cpu")
    assert not (tmp_path / "bad2").exists()  # refused before the folder is made


def test_a_warm_restart_resumes_once_its_init_file_has_moved(tmp_path, cifar_root, init_ckpt):
    """The init weights are in the state: the run resumes with the file moved, with --init left out, or given at
    its new place; another checkpoint as --init is refused (by sha256: the path was compared before)."""
    import shutil

    init = shutil.copyfile(init_ckpt, tmp_path / "init.pt")
    s = spec(cifar_root, epochs=2, snapshot_every=0, init=str(init))
    train(s, tmp_path / "full", device="cpu")
    for how in ("moved", "left out", "at its new place"):
        out = tmp_path / how
        with pytest.raises(TrainingStopped):
            train(s, out, device="cpu", stop_requested=stop_at_call(4))
        moved = tmp_path / "elsewhere" / "init.pt"
        moved.parent.mkdir(exist_ok=True)
        shutil.move(init, moved)
        given = {"moved": str(init), "left out": "", "at its new place": str(moved)}[how]
        train(dataclasses.replace(s, init=given), out, device="cpu", resume=True)
        _same_run(tmp_path / "full", out)
        shutil.move(moved, init)
    other = tmp_path / "other.pt"
    torch.save(torch.load(init_ckpt, weights_only=True) | {"metadata": {"arch": "resnet20", "epochs": 7}}, other)
    with pytest.raises(TrainingStopped):
        train(s, tmp_path / "o", device="cpu", stop_requested=stop_at_call(4))
    with pytest.raises(LandscapeError, match="is not the checkpoint this run started from"):
        train(dataclasses.replace(s, init=str(other)), tmp_path / "o", device="cpu", resume=True)


@pytest.fixture(scope="module")
def coloured_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10-format folder as tiny as `cifar_root` (60 training images), whose labels can be learnt: each
    class has its own colour, plus noise. (On `cifar_root`'s random labels, 3 epochs move the loss by less than
    a change of learning rate or batch size does, so they cannot tell a working optimizer from a broken one.)"""
    return write_cifar10(tmp_path_factory.mktemp("coloured"), learnable=True)


def test_training_lowers_the_loss(tmp_path, coloured_root):
    s = spec(coloured_root, epochs=3, batch_size=8, lr=0.01, snapshot_every=0, precision="fp32")
    torch.manual_seed(s.seed)  # the untrained model of the run: the same seed, the same initialization
    untrained = create_model(s.arch, num_classes=num_classes(s.data.name)).eval()
    scale, shift = normalizer(*DEFAULT_NORMALIZATION[s.data.name], "cpu")
    initial = loss_and_accuracy(untrained, load_split(s.data, "train"), scale, shift, batch_size=500).loss[0]
    meta = train(s, tmp_path / "run", device="cpu")
    # measured: 2.30 -> 1.28 (and below 1.75 for batch sizes 6-10 and learning rates 0.005-0.02); an optimizer
    # that does not step leaves it at 2.30
    assert meta["train_loss"] < initial - 0.4, (initial, meta["train_loss"])


def test_num_classes():
    assert num_classes("cifar100") == 100 and num_classes("cifar10") == 10


def test_fp32_backward_on_cuda_runs_with_tf32_off():
    """The flags are global switches: they can be checked on a machine without CUDA."""
    from landscape.train import backward_precision

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with backward_precision("fp32", torch.device("cuda")):
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
        for precision, device in (("bf16", "cuda"), ("fp32", "cpu")):
            with backward_precision(precision, torch.device(device)):
                assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_overwrite_keeps_a_finished_run_until_the_new_one_can_start(tmp_path, cifar_root):
    """--overwrite deleted the run's files before the data or the batch size were checked: a typo lost the run."""
    s = spec(cifar_root, epochs=1)
    train(s, tmp_path / "run", device="cpu")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    for bad in (dataclasses.replace(s, batch_size=10_000), dataclasses.replace(s, data=DataSpec(root=str(tmp_path)))):
        with pytest.raises(LandscapeError):
            train(bad, tmp_path / "run", device="cpu", overwrite=True)
        assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LandscapeError, match="is a file: training writes a folder"):
        train(s, tmp_path / "file", device="cpu", overwrite=True)
    if Path("/proc/self").is_dir():  # a folder that takes no new one: a FileNotFoundError (exit 1) before
        with pytest.raises(LandscapeError, match="^cannot create --out /proc/run: No such file or directory$"):
            train(s, "/proc/run", device="cpu")


@pytest.mark.parametrize("damage", ["truncated", "text", "a dict", "another model", "history", "init"])
def test_a_damaged_state_is_one_clear_line(tmp_path, cifar_root, damage):
    s = spec(cifar_root, epochs=2)
    with pytest.raises(TrainingStopped):
        train(s, tmp_path / "run", device="cpu", stop_requested=lambda: True)
    state = tmp_path / "run" / "state.pt"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[:1000])
    elif damage == "text":
        state.write_text("hello")
    elif damage == "a dict":
        torch.save({"a": 1}, state)
    else:
        saved = torch.load(state, weights_only=True)
        if damage == "history":  # was an AttributeError at the end of the run
            saved["history"] = json.dumps([1, 2])
        elif damage == "init":
            saved["init"] = json.dumps([])
        else:
            saved["model"] = {k: v[:1] if v.dim() else v for k, v in saved["model"].items()}
        torch.save(saved, state)
    with pytest.raises(
        LandscapeError, match=r"state.pt is damaged or not a state of this run \(.*\): pass --overwrite"
    ):
        train(s, tmp_path / "run", device="cpu", resume=True)


@pytest.mark.parametrize("damage", ["generator", "rng"])
def test_a_damaged_random_state_is_one_clear_line(tmp_path, cifar_root, damage):
    """A generator state of another length was a RuntimeError of set_state (exit 1)."""
    s = spec(cifar_root, epochs=2)
    with pytest.raises(TrainingStopped):
        train(s, tmp_path / "run", device="cpu", stop_requested=lambda: True)
    state = tmp_path / "run" / "state.pt"
    saved = torch.load(state, weights_only=True)
    if damage == "generator":
        saved["within_epoch"]["generator"] = saved["within_epoch"]["generator"][:10]
        message = "holds a damaged position within an epoch"
    else:
        saved["rng"]["cpu"] = torch.zeros(3, dtype=torch.uint8)
        message = "the saved random state is damaged"
    torch.save(saved, state)
    with pytest.raises(LandscapeError, match=message):
        train(s, tmp_path / "run", device="cpu", resume=True)


def test_a_resume_compares_the_images_not_the_folder(tmp_path, cifar_root):
    """The state holds its images' sha256: the same data elsewhere (another machine) resumes exactly, other images
    at the same folder are refused (the folder's path was compared before, and the images never)."""
    import shutil

    s = spec(cifar_root, epochs=2, snapshot_every=0)
    train(s, tmp_path / "full", device="cpu")
    with pytest.raises(TrainingStopped):
        train(s, tmp_path / "part", device="cpu", stop_requested=stop_at_call(4))
    moved = shutil.copytree(cifar_root, tmp_path / "moved")
    elsewhere = dataclasses.replace(s, data=DataSpec(root=str(moved)))
    other = write_cifar10(tmp_path / "other", seed=1)  # as many images, other pixels
    with pytest.raises(LandscapeError, match=r"the train images here differ from the ones this run trained on"):
        train(dataclasses.replace(s, data=DataSpec(root=str(other))), tmp_path / "part", device="cpu", resume=True)
    train(elsewhere, tmp_path / "part", device="cpu", resume=True)
    _same_run(tmp_path / "full", tmp_path / "part")


def test_a_state_without_image_fingerprints_still_compares_the_folder(tmp_path, cifar_root):
    s = spec(cifar_root, epochs=2, snapshot_every=0)
    with pytest.raises(TrainingStopped):
        train(s, tmp_path / "part", device="cpu", stop_requested=stop_at_call(4))
    state = torch.load(tmp_path / "part" / "state.pt", weights_only=True)
    del state["data"]  # as states saved before the fingerprints
    torch.save(state, tmp_path / "part" / "state.pt")
    import shutil

    moved = shutil.copytree(cifar_root, tmp_path / "moved")
    with pytest.raises(LandscapeError, match=r"another recipe \(data differ\)"):
        train(dataclasses.replace(s, data=DataSpec(root=str(moved))), tmp_path / "part", device="cpu", resume=True)
    train(s, tmp_path / "part", device="cpu", resume=True)
    assert "data" in torch.load(tmp_path / "part" / "state.pt", weights_only=True)


def test_overwrite_deletes_nothing_until_the_init_checkpoint_is_read_and_checked(tmp_path, cifar_root, init_ckpt):
    """--overwrite deleted the run, then failed on its --init: the finished run was lost, and an --init inside the
    folder (a warm restart in place) deleted before it was read."""
    s = spec(cifar_root, epochs=1, snapshot_every=0)
    out = tmp_path / "run"
    train(s, out, device="cpu")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(LandscapeError):
        train(dataclasses.replace(s, init=str(bad)), out, device="cpu", overwrite=True)
    hundred = tmp_path / "c100.pt"  # the same arch for 100 classes: another linear layer
    from landscape import save_checkpoint

    save_checkpoint(hundred, create_model("resnet20", num_classes=100), {"arch": "resnet20"})
    with pytest.raises(LandscapeError, match=r"--init .*c100.pt is not of this model: its linear.weight has shape"):
        train(dataclasses.replace(s, init=str(hundred)), out, device="cpu", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    in_place = dataclasses.replace(s, init=str(out / "checkpoint.pt"), lr=1e-9)
    meta = train(in_place, out, device="cpu", overwrite=True)  # read before the folder is emptied
    assert meta["init"]["sha256"] == hashlib.sha256(before["checkpoint.pt"]).hexdigest()


def test_an_init_whose_metadata_cannot_be_recorded_is_refused_before_training(tmp_path, cifar_root, init_ckpt):
    """Metadata that refers to itself (or nests 1,500 deep) loaded, then failed json.dumps when the first epoch's
    state was saved: the epoch was lost."""
    looped: dict = {"arch": "resnet20"}
    looped["init"] = looped
    deep = tmp_path / "deep.pt"
    torch.save(torch.load(init_ckpt, weights_only=True) | {"metadata": looped}, deep)
    with pytest.raises(LandscapeError, match=r"--init .*deep.pt: its metadata cannot be recorded \(ValueError\)"):
        train(spec(cifar_root, epochs=1, init=str(deep)), tmp_path / "run", device="cpu")


def test_train_refuses_an_image_folder_and_records_skips_only_for_the_resnets(tmp_path, cifar_root):
    """An ImageFolder trained a 10-class head whatever it held; a user arch was recorded as having skips."""
    with pytest.raises(LandscapeError, match="landscape train trains on cifar10 or cifar100, not imagefolder"):
        train(TrainSpec(data=DataSpec(name="imagefolder", root=str(cifar_root)), epochs=1), tmp_path, device="cpu")
    from landscape.train import _skips

    assert (_skips("resnet56"), _skips("resnet56_noshort"), _skips("torchvision:resnet18"), _skips("m:f")) == (
        True,
        False,
        None,
        None,
    )


def test_weights_blown_up_by_an_epochs_last_step_are_not_saved(tmp_path, cifar_root, monkeypatch):
    """The last step's update made the weights non-finite while its own loss was finite: that state was saved, and
    the log held NaN, which strict JSON readers refuse."""
    import landscape.train

    real_step, calls = landscape.train.train_step, []

    def step_then_blow_up(forward, optimizer, *args, **kwargs):
        result = real_step(forward, optimizer, *args, **kwargs)
        calls.append(1)
        if len(calls) == 6:  # the last step of epoch 2 (3 per epoch)
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        p.fill_(float("inf"))
        return result

    monkeypatch.setattr(landscape.train, "train_step", step_then_blow_up)
    with pytest.raises(LandscapeError, match=r"epoch 2 ended with weights whose test loss is nan: stopped; the last"):
        train(spec(cifar_root, epochs=3, snapshot_every=0), tmp_path / "run", device="cpu")
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all("NaN" not in line for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines())


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_trains(tmp_path, cifar_root):
    """`--resume` of a run still training (a later session restarting the campaign while its runs lived) was
    accepted: both trained, every epoch logged twice, one state file written by two processes."""
    from landscape.storage import writer_lock

    folder = tmp_path / "run"
    train(spec(cifar_root, epochs=1), folder, device="cpu")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with writer_lock(folder / "run"):  # what a training process holds (the lock file .run.lock)
        with pytest.raises(LandscapeError) as error:
            train(spec(cifar_root, epochs=2), folder, device="cpu", overwrite=True)
    assert str(error.value) == (
        f"{folder} is being written by another process (pid {os.getpid()}): another `landscape train` is training "
        "in this folder: stop it first (SIGTERM saves its state)"
    )
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_snapshots_of_an_attempt_that_saved_no_state_are_replaced(tmp_path, cifar_root, monkeypatch):
    """A kill between an epoch's snapshot and its state kept the killed attempt's weights in snapshots.h5 (the
    group existed, its tensors were skipped); with no state at all, a --resume of another recipe kept them too."""
    import landscape.train

    real_save = landscape.train._save_state

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(landscape.train, "_save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        train(spec(cifar_root, epochs=1, lr=0.2), tmp_path / "run", device="cpu")
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == ["snapshots.h5"]
    monkeypatch.setattr(landscape.train, "_save_state", real_save)
    train(spec(cifar_root, epochs=1), tmp_path / "run", device="cpu", resume=True)
    train(spec(cifar_root, epochs=1), tmp_path / "clean", device="cpu")
    for folder in ("run", "clean"):
        with h5py.File(tmp_path / folder / "snapshots.h5") as f:
            snapshot = {k: torch.from_numpy(v[()]) for k, v in f["epoch_0001"].items()}
        final = load_checkpoint(tmp_path / folder / "checkpoint.pt").state_dict
        assert all(torch.equal(snapshot[k], final[k].half()) for k in snapshot), folder


class DropoutNet(nn.Module):
    """A model that draws from the global random generator while training (dropout)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.drop = nn.Dropout(0.5)
        self.linear = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(F.relu(self.conv(x)).mean((2, 3))))


def dropout_net(num_classes: int = 10) -> nn.Module:
    return DropoutNet(num_classes)


@pytest.mark.parametrize("stop_at", [4, 3])  # within epoch 2; at the end of epoch 1
def test_a_model_with_dropout_resumes_exactly(tmp_path, cifar_root, stop_at):
    """The global random state was seeded anew on resume: the dropout masks replayed those of the run's start."""
    s = spec(cifar_root, arch="test_train:dropout_net", epochs=3, snapshot_every=0, precision="fp32")
    train(s, tmp_path / "full", device="cpu")
    with pytest.raises(TrainingStopped):
        train(s, tmp_path / "part", device="cpu", stop_requested=stop_at_call(stop_at))
    torch.manual_seed(1234)  # whatever this process drew since
    train(s, tmp_path / "part", device="cpu", resume=True)
    _same_run(tmp_path / "full", tmp_path / "part")


def test_a_warm_restart_in_place_keeps_its_weights_when_it_fails_at_once(tmp_path, cifar_root):
    """`--overwrite --init out/checkpoint.pt`: the folder was emptied, and a run that failed before its first save
    left nothing, not even the weights it started from. They are now the run's first state."""
    s = spec(cifar_root, epochs=1, snapshot_every=1)
    out = tmp_path / "run"
    train(s, out, device="cpu")
    weights = load_checkpoint(out / "checkpoint.pt").state_dict
    blown = dataclasses.replace(s, init=str(out / "checkpoint.pt"), lr=1e30)
    with pytest.raises(LandscapeError, match=f"the last saved state is kept in {re.escape(str(out / 'state.pt'))}"):
        train(blown, out, device="cpu", overwrite=True)
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["epoch"] == 0 and json.loads(state["history"]) == []
    assert state["model"].keys() == weights.keys()
    assert all(torch.equal(state["model"][k], weights[k]) for k in weights)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["state.pt"]


def test_a_resume_through_an_interrupted_init_start_is_the_uninterrupted_run(tmp_path, cifar_root, init_ckpt):
    s = spec(cifar_root, epochs=2, snapshot_every=0, init=str(init_ckpt))
    train(s, tmp_path / "full", device="cpu")

    def killed_at_once(epoch, step, steps, running):
        raise Interrupt  # after the first step, before any save of the run's own

    with pytest.raises(Interrupt):
        train(s, tmp_path / "part", device="cpu", on_batch=killed_at_once)
    assert torch.load(tmp_path / "part" / "state.pt", weights_only=True)["epoch"] == 0
    train(s, tmp_path / "part", device="cpu", resume=True)
    _same_run(tmp_path / "full", tmp_path / "part")


@pytest.mark.parametrize("planted", ["state.pt.tmp", "log.jsonl.partial", "snapshots.h5.partial", "checkpoint.pt.tmp"])
def test_a_link_planted_under_a_temporary_name_is_never_written_through(tmp_path, cifar_root, planted):
    """The temporary files had fixed names and were opened following links: a link committed into a run folder
    (git stores links) made `--resume` write the state, the log or the checkpoint into the file it named."""
    s = spec(cifar_root, epochs=2, snapshot_every=1)
    out = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(s, out, device="cpu", stop_requested=stop_at_call(4))
    victim = tmp_path / "victim.txt"
    victim.write_text("a week of notes")
    (out / planted).symlink_to(victim)
    train(s, out, device="cpu", resume=True)
    assert victim.read_text() == "a week of notes"
    assert not any(p.is_symlink() for p in out.iterdir() if p.name != planted)
    assert [r["epoch"] for r in _log(out)] == [1, 2]


@pytest.mark.parametrize("name", ["log.jsonl", "state.pt", "snapshots.h5"])
def test_a_run_file_that_is_a_link_is_refused(tmp_path, cifar_root, name):
    s = spec(cifar_root, epochs=2, snapshot_every=1)
    out = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(s, out, device="cpu", stop_requested=stop_at_call(4))
    victim = tmp_path / "victim"
    (out / name).rename(victim)
    (out / name).symlink_to(victim)
    before = victim.read_bytes()
    with pytest.raises(LandscapeError, match=f"{re.escape(str(out / name))} is a link: a run folder holds its own"):
        train(s, out, device="cpu", resume=True)
    assert victim.read_bytes() == before


def test_an_empty_test_split_is_refused_before_training(tmp_path):
    import pickle

    root = write_cifar10(tmp_path / "data")
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((0, 3072), np.uint8), "labels": []}, f, protocol=4)
    with pytest.raises(LandscapeError, match="test split .* holds no images"):
        train(spec(root, epochs=1), tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()


def test_an_init_with_nan_weights_is_refused(tmp_path, cifar_root, init_ckpt):
    """It trained, then stopped at the first step blaming the learning rate."""
    from landscape import save_checkpoint

    checkpoint = load_checkpoint(init_ckpt)
    model = build_model(checkpoint)
    with torch.no_grad():
        model.linear.weight[0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    save_checkpoint(bad, model, checkpoint.metadata)
    with pytest.raises(LandscapeError, match=r"--init .*nan.pt's linear.weight holds NaN or inf"):
        train(spec(cifar_root, epochs=1, init=str(bad)), tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()


def test_resume_into_a_folder_without_a_state_says_it_starts_a_new_run(tmp_path):
    """`--resume` starts a run where --out holds none (documented: the campaign's one command); a mistyped --out
    restarted a run without a word."""
    out = tmp_path / "mistyped"
    result = CliRunner().invoke(
        app, ["train", "--arch", "resnet20", "--out", str(out), "--resume", "--data-root", str(tmp_path / "none")]
    )
    assert result.exit_code == 2
    assert f"note: {out} holds no saved state: --resume starts a new run there" in result.stderr
