"""Shared fixtures: a tiny CIFAR-10-format folder and small checkpoints, generated per test session."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape import create_model, save_checkpoint

TRAIN_PER_BATCH = 12
TEST_IMAGES = 20


def write_cifar10(
    root: Path,
    train_per_batch: int = TRAIN_PER_BATCH,
    test_images: int = TEST_IMAGES,
    seed: int = 0,
    learnable: bool = False,
) -> Path:
    """A `cifar-10-batches-py` folder in the real pickle layout, with random labels and random images, or with
    `learnable` images: each class its own colour plus noise, so that a few epochs of training can learn them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    palette = rng.uniform(40, 215, size=(10, 3)) if learnable else None
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in files:
        n = test_images if name == "test_batch" else train_per_batch
        if palette is None:  # the random images first, then the labels: the draw the other tests were written on
            data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, size=n)
        else:
            labels = rng.integers(0, 10, size=n)
            data = (palette[labels][:, :, None] + rng.normal(0, 10, size=(n, 3, 32 * 32))).clip(0, 255)
        batch = {
            "data": data.astype(np.uint8).reshape(n, 3072),
            "labels": [int(v) for v in labels],
            "filenames": [f"{name}_{i}.png" for i in range(n)],
            "batch_label": name,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f, protocol=2)
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("data"))


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN parameters and statistics, so that folding and BN modes are really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
            m.running_mean = 0.1 * torch.randn(m.running_mean.shape, generator=g)
            m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=g)
    return model


@pytest.fixture(scope="session")
def resnet20_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("resnet20"))
    path = tmp_path_factory.mktemp("ckpt") / "resnet20.pt"
    save_checkpoint(
        path,
        model,
        {
            "arch": "resnet20",
            "num_classes": 10,
            "dataset": "cifar10",
            "mean": [0.49, 0.48, 0.45],
            "std": [0.25, 0.24, 0.26],
        },
    )
    return path
