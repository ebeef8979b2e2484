"""The checkpoints shipped in checkpoints/: they load, and their recorded test accuracy holds on 500 images."""

import os
from pathlib import Path

import pytest

from landscape import DataSpec, build_model, load_checkpoint
from landscape.data import find_cifar_folder, load_split, normalizer
from landscape.evaluate import loss_and_accuracy

CHECKPOINTS = sorted((Path(__file__).parents[1] / "checkpoints").glob("*.pt"))
DATA = Path(os.environ.get("LANDSCAPE_DATA_ROOT") or Path(__file__).parents[2] / "shared" / "data")


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.name)
def test_shipped_checkpoint_loads_with_its_metadata(path):
    ckpt = load_checkpoint(path)
    meta = ckpt.metadata
    assert {
        "arch",
        "num_classes",
        "dataset",
        "mean",
        "std",
        "epochs",
        "test_acc",
        "train_acc",
        "recipe",
        "hardware",
        "wall_time_s",
    } <= set(meta)
    assert meta["arch"] == path.stem and meta["skips"] == (not path.stem.endswith("_noshort"))
    build_model(ckpt)


@pytest.mark.slow
@pytest.mark.skipif(
    not DATA.is_dir() or find_cifar_folder(DATA, "cifar10") is None,
    reason="needs CIFAR-10 under ../shared/data or $LANDSCAPE_DATA_ROOT",
)
@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.name)
def test_recorded_test_accuracy_is_re_measured(path):
    ckpt = load_checkpoint(path)
    model = build_model(ckpt).eval()
    images = load_split(DataSpec(root=str(DATA), subset=500, seed=0), "test")
    scale, shift = normalizer(ckpt.metadata["mean"], ckpt.metadata["std"], "cpu")
    acc = loss_and_accuracy(model, images, scale, shift, batch_size=500).acc[0]
    # 500 images: a binomial standard error of about 1.4 points at 90%; allow 5 points
    assert abs(acc - ckpt.metadata["test_acc"]) < 5.0, (acc, ckpt.metadata["test_acc"])
