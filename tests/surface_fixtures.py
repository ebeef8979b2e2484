"""Surface files with known analytic values, written with the real storage code (and a legacy-format writer)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from landscape.storage import create_surface_file, write_points

X = np.linspace(-1.0, 1.0, 5)  # nx = 5 and ny = 3 differ, so that a transposed array cannot pass
Y = np.linspace(-0.5, 0.5, 3)


def bowl(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """train_loss = 0.1 + α² + 4β² (min 0.1 at the centre, max 2.1 at the corners); the others derive from it."""
    gx, gy = np.meshgrid(x, y)  # [j, i] = f(x[i], y[j])
    loss = 0.1 + gx**2 + 4 * gy**2
    return {
        "train_loss": loss,
        "train_acc": 100 - 40 * (loss - 0.1),
        "test_loss": 2 * loss,
        "test_acc": 90 - 40 * (loss - 0.1),
    }


def spec(arch: str = "resnet56", nx: int = len(X), ny: int | None = len(Y)) -> dict:
    """A spec as `landscape compute` stores it."""

    def direction(seed: int) -> dict:
        return {
            "kind": "random",
            "seed": seed,
            "norm": "filter",
            "ignore": "biasbn",
            "dir_type": "weights",
            "target": None,
            "target_sha256": None,
            "source": None,
            "source_axis": "x",
        }

    axis = {"start": -1.0, "stop": 1.0, "num": nx}
    return {
        "checkpoint": {
            "path": f"/ckpt/{arch}.pt",
            "arch": arch,
            "num_classes": 10,
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "sha256": "0123456789abcdef" * 4,
        },
        "data": {
            "name": "cifar10",
            "root": "/data",
            "split": "both",
            "subset": 200,
            "seed": 0,
            "download": False,
            "image_size": None,
        },
        "grid": {"x": axis, "y": None if ny is None else {"start": -0.5, "stop": 0.5, "num": ny}},
        "x": direction(0),
        "y": None if ny is None else direction(1),
        "evaluation": {"precision": "fp32", "bn": "eval", "bn_images": 1280, "bn_batch_size": 128},
    }


def write_surface(
    path: Path,
    values: dict[str, np.ndarray] | None = None,
    x: np.ndarray = X,
    y: np.ndarray | None = Y,
    computed: np.ndarray | None = None,
    arch: str = "resnet56",
    trajectory: dict[str, np.ndarray] | None = None,
    splits: tuple[str, ...] = ("train", "test"),
) -> Path:
    """A surface file of this project holding `values` (default: the bowl) of `splits` at the points where
    `computed`, and the arrays of a `trajectory` group if given."""
    values = values if values is not None else bowl(x, y if y is not None else np.zeros(1))
    shape = (len(x),) if y is None else (len(y), len(x))
    values = {k: np.asarray(v).reshape(shape) for k, v in values.items()}
    coordinates = [x] if y is None else [x, y]
    stored = spec(arch, len(x), None if y is None else len(y))
    stored["grid"] = {  # the grid of the coordinates given: a reader refuses coordinates that are not the spec's
        "x": {"start": float(x[0]), "stop": float(x[-1]), "num": len(x)},
        "y": None if y is None else {"start": float(y[0]), "stop": float(y[-1]), "num": len(y)},
    }
    create_surface_file(
        path,
        stored,
        {"started": "test"},
        shape,
        coordinates,
        splits,
        {},
        {},
        trajectory=trajectory,
    )
    computed = np.ones(shape, dtype=bool) if computed is None else computed
    flat = np.flatnonzero(computed.ravel())
    if flat.size:
        names = [f"{split}_{metric}" for split in splits for metric in ("loss", "acc")]
        write_points(path, flat, {name: values[name].ravel()[flat] for name in names})
    return path


def write_legacy(path: Path, x: np.ndarray = X, y: np.ndarray = Y, computed: np.ndarray | None = None) -> Path:
    """A file as the paper's code writes it: datasets declared (nx, ny) but filled in y-major order, -1 where
    a point is not computed yet, train_loss and train_acc only."""
    values = bowl(x, y)
    computed = np.ones((len(y), len(x)), dtype=bool) if computed is None else computed
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = x
        f["ycoordinates"] = y
        for name in ("train_loss", "train_acc"):
            f[name] = np.where(computed, values[name], -1).ravel().reshape(len(x), len(y))
    return path
