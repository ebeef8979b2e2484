"""Evaluation data: CIFAR-10/100 from a `cifar-*-batches-py` folder (read by our own loader), or an ImageFolder tree.

The evaluated images are held once as a uint8 tensor (N, 3, H, W) and normalized on the fly on the compute device.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import LandscapeError

SPLITS = ("train", "test")
# Channel statistics on the [0, 1] scale, used when a checkpoint does not record its own.
DEFAULT_NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}


@dataclass(frozen=True)
class DataSpec:
    """Which images are evaluated. `root` falls back to $LANDSCAPE_DATA_ROOT; `subset` draws N images per split."""

    name: str = "cifar10"  # cifar10 | cifar100 | imagefolder
    root: str = ""
    split: str = "train"  # train | test | both
    subset: int | None = None
    seed: int = 0
    download: bool = False
    image_size: int | None = None  # imagefolder only: resize + centre crop to this size

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS if self.split == "both" else (self.split,)

    def validate(self) -> None:
        if self.name not in (*_CIFAR_FOLDERS, "imagefolder"):
            raise LandscapeError(f"unknown dataset '{self.name}': use cifar10, cifar100 or imagefolder")
        if self.split not in (*SPLITS, "both"):
            raise LandscapeError(f"unknown split '{self.split}': use train, test or both")
        if self.subset is not None and self.subset < 1:
            raise LandscapeError(f"--subset must be a positive number of images, got {self.subset}")


@dataclass(frozen=True)
class ImageSet:
    """Images of one split: uint8 (N, 3, H, W), int64 labels, and their indices in the full split."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device), self.indices)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """`root`, else $LANDSCAPE_DATA_ROOT; a clear error when neither names an existing folder."""
    value = str(root) if root else os.environ.get("LANDSCAPE_DATA_ROOT", "")
    if not value:
        raise LandscapeError("no data root: pass --data-root DIR or set LANDSCAPE_DATA_ROOT")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise LandscapeError(f"data root {path} does not exist or is not a folder")
    return path


def load_split(spec: DataSpec, split: str, indices: np.ndarray | None = None) -> ImageSet:
    """Load `split`; `indices` (e.g. read back from a surface file) override the seeded subset draw."""
    spec.validate()
    root = resolve_root(spec.root)
    if spec.name == "imagefolder":
        images, labels = _read_image_folder(root / split, spec.image_size)
    else:
        images, labels = _read_cifar(root, spec.name, split, spec.download)
    if indices is None:
        indices = subset_indices(len(labels), spec.subset, spec.seed, split)
    elif len(indices) and (indices.min() < 0 or indices.max() >= len(labels)):
        raise LandscapeError(f"recorded image indices exceed the {len(labels)} images of the {split} split in {root}")
    index = torch.from_numpy(indices)
    return ImageSet(images[index].contiguous(), labels[index].contiguous(), indices)


def subset_indices(total: int, subset: int | None, seed: int, split: str) -> np.ndarray:
    """Sorted indices of `subset` images drawn without replacement (all images when `subset` is None)."""
    if subset is None or subset >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else 2])
    return np.sort(rng.choice(total, size=subset, replace=False)).astype(np.int64)


def find_cifar_folder(root: Path, name: str) -> Path | None:
    """`root/cifar-10-batches-py` or `root` itself when it is that folder."""
    for candidate in (root / _CIFAR_FOLDERS[name], root):
        if all((candidate / f).is_file() for files in _CIFAR_FILES[name].values() for f in files):
            return candidate
    return None


def _read_cifar(root: Path, name: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    folder = find_cifar_folder(root, name)
    if folder is None and download:
        _download_cifar(root, name)
        folder = find_cifar_folder(root, name)
    if folder is None:
        files = ", ".join(f for fs in _CIFAR_FILES[name].values() for f in fs)
        raise LandscapeError(f"no {name} under {root}: expected {root / _CIFAR_FOLDERS[name]}/ with {files}"
                             " (pass --download to fetch it)")
    data, labels = [], []
    for file in _CIFAR_FILES[name][split]:
        try:
            with open(folder / file, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch["labels"] if "labels" in batch else batch["fine_labels"])
        except Exception as e:
            raise LandscapeError(f"cannot read {folder / file}: {type(e).__name__}: {e}") from None
    return torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.int64)


def _download_cifar(root: Path, name: str) -> None:
    import torchvision

    dataset = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        dataset(str(root), train=True, download=True)
    except Exception as e:
        raise LandscapeError(f"downloading {name} into {root} failed ({type(e).__name__}: {e}); "
                             "are you online?") from None


def _read_image_folder(folder: Path, image_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision
    from torchvision.transforms import v2

    if not folder.is_dir():
        raise LandscapeError(f"no ImageFolder split at {folder}: expected {folder}/<class>/<image files>")
    steps = [v2.PILToTensor()]
    if image_size:
        steps = [v2.Resize(image_size), v2.CenterCrop(image_size)] + steps
    try:
        dataset = torchvision.datasets.ImageFolder(str(folder), transform=v2.Compose(steps))
    except (FileNotFoundError, OSError) as e:
        raise LandscapeError(f"cannot read ImageFolder {folder}: {e}") from None
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise LandscapeError(f"images in {folder} differ in size ({len(shapes)} shapes): pass --image-size N")
    return torch.stack([im.expand(3, -1, -1) for im in images]), torch.tensor(labels, dtype=torch.int64)


def normalizer(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift such that `uint8 * scale + shift == (x / 255 - mean) / std`, shaped (1, C, 1, 1)."""
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    scale = (1.0 / (255.0 * std_t)).to(device=device, dtype=dtype)
    shift = (-mean_t / std_t).to(device=device, dtype=dtype)
    return scale, shift
