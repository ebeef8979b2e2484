"""Evaluation data: CIFAR-10/100 from a `cifar-*-batches-py` folder (read by our own loader), or an ImageFolder tree.

The evaluated images are held once as a uint8 tensor (N, 3, H, W) and normalized on the fly on the compute device.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from .errors import LandscapeError

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

SPLITS = ("train", "test")
MAX_SEED = 2**63 - 2  # seeds of numpy and torch generators; a second draw takes seed + 1
MAX_IMAGE_SIZE = 1024  # --image-size: the images are held decoded, N x 3 x size x size bytes
# Channel statistics on the [0, 1] scale, used when a checkpoint does not record its own.
DEFAULT_NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
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
    part: int = 0  # the part-th of disjoint draws of `subset` images: 0 the usual one, 1 from the images 0 left out...
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
        if not 0 <= self.seed <= MAX_SEED:
            raise LandscapeError(f"--data-seed must be 0 to {MAX_SEED}, got {self.seed}")
        if self.part < 0 or (self.part and self.subset is None):
            raise LandscapeError(f"--data-part must be 0 or more and goes with --subset (got {self.part})")
        if self.image_size is not None and not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise LandscapeError(f"--image-size must be 1 to {MAX_IMAGE_SIZE} pixels, got {self.image_size}")
        if self.image_size is not None and self.name != "imagefolder":  # recorded, yet without effect on CIFAR
            raise LandscapeError(f"--image-size is for --dataset imagefolder: {self.name} images are 32x32")


@dataclass(frozen=True)
class ImageSet:
    """Images of one split: uint8 (N, 3, H, W), int64 labels, and their indices in the full split."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageSet:
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
    """Load `split`; `indices` (e.g. read back from a surface file) override the seeded subset draw.

    Only the chosen images are decoded (ImageFolder) or copied (CIFAR).
    """
    spec.validate()
    root = resolve_root(spec.root)
    if spec.name == "imagefolder":
        dataset = _image_folder(root / split, spec.image_size)
        indices = _chosen(len(dataset), spec, split, indices, root)
        images, labels = _decode_images(dataset, indices)
    else:
        batches = _read_cifar(root, spec.name, split, spec.download)
        indices = _chosen(sum(len(labels) for _, labels in batches), spec, split, indices, root)
        images, labels = _take_rows(batches, indices)
    return ImageSet(images, labels, indices)


def _chosen(total: int, spec: DataSpec, split: str, indices: np.ndarray | None, root: Path) -> np.ndarray:
    """The recorded `indices`, checked against `total`, or the seeded subset draw."""
    if indices is None:
        return subset_indices(total, spec.subset, spec.seed, split, spec.part)
    if len(indices) and (indices.min() < 0 or indices.max() >= total):
        raise LandscapeError(f"recorded image indices exceed the {total} images of the {split} split in {root}")
    return indices


def subset_indices(total: int, subset: int | None, seed: int, split: str, part: int = 0) -> np.ndarray:
    """Sorted indices of `subset` images drawn without replacement (all images when `subset` is None).

    `part` k > 0 draws, with the same generator, k more times from the images the earlier draws left out and
    returns the last: parts are disjoint, and part 0 is the usual draw (the same indices as before parts existed).
    """
    if subset is None or (subset >= total and part == 0):
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else 2])
    remaining = np.arange(total, dtype=np.int64)
    for _ in range(part + 1):
        if subset > len(remaining):
            raise LandscapeError(
                f"--data-part {part} needs {(part + 1) * subset} images ({part + 1} disjoint draws of {subset}); "
                f"the {split} split has {total}"
            )
        chosen = rng.choice(len(remaining), size=subset, replace=False)
        picked = remaining[chosen]
        remaining = np.delete(remaining, chosen)
    return np.sort(picked).astype(np.int64)


def find_cifar_folder(root: Path, name: str) -> Path | None:
    """`root/cifar-10-batches-py` or `root` itself when it is that folder."""
    for candidate in (root / _CIFAR_FOLDERS[name], root):
        if all((candidate / f).is_file() for files in _CIFAR_FILES[name].values() for f in files):
            return candidate
    return None


def _read_cifar(root: Path, name: str, split: str, download: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split's batches as (uint8 (N, 3072) rows, int64 labels), checked, not yet copied."""
    folder = find_cifar_folder(root, name)
    if folder is None and download:
        _download_cifar(root, name)
        folder = find_cifar_folder(root, name)
    if folder is None:
        files = ", ".join(f for fs in _CIFAR_FILES[name].values() for f in fs)
        raise LandscapeError(
            f"no {name} under {root}: expected {root / _CIFAR_FOLDERS[name]}/ with {files}"
            " (pass --download to fetch it)"
        )
    return [_read_cifar_batch(folder / file, _CIFAR_CLASSES[name]) for file in _CIFAR_FILES[name][split]]


def _read_cifar_batch(path: Path, classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            budget = _BYTES_LEFT.set(2 * os.fstat(f.fileno()).st_size)
            try:
                batch = _CifarUnpickler(f, encoding="latin1").load()
            finally:
                _BYTES_LEFT.reset(budget)
    except LandscapeError as e:
        raise LandscapeError(f"cannot read {path}: {e}") from None
    except Exception as e:
        raise LandscapeError(f"cannot read {path}: {type(e).__name__}: {_first_line(e)}") from None
    data = batch.get("data") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise LandscapeError(
            f"cannot read {path}: it is not a CIFAR batch (a dict whose 'data' is a uint8 array "
            "of N rows of 3072 pixels)"
        )
    data = np.asarray(data)  # a plain ndarray, no longer the unpickler's `_PickledArray`
    labels = batch.get("labels", batch.get("fine_labels"))
    # a list of whole numbers or a 1-D array, checked before numpy sees it: numpy expands nested lists densely
    flat = (isinstance(labels, list) and all(type(v) is int for v in labels)) or (
        isinstance(labels, np.ndarray) and labels.ndim == 1
    )
    labels = np.asarray(labels if flat else None)
    if labels.ndim != 1 or len(labels) != len(data) or (len(labels) and labels.dtype.kind not in "iu"):
        raise LandscapeError(
            f"cannot read {path}: it is not a CIFAR batch ('labels' or 'fine_labels' must be "
            f"{len(data)} whole numbers, one per image)"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise LandscapeError(f"cannot read {path}: label {bad} is outside 0..{classes - 1}")
    return data, labels.astype(np.int64)


def check_labels_fit(model: torch.nn.Module, sets: dict[str, ImageSet]) -> None:
    """Refuse images whose labels the model has no output for (an image folder of 11 classes and a 10-class
    network): the loss would fail deep inside with an IndexError (on CUDA, a device-side assert). One image goes
    through the model (eval mode, restored after) to count its outputs."""
    filled = {split: images for split, images in sets.items() if len(images)}
    if not filled:
        return
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    sample = next(iter(filled.values())).images[:1]  # the outputs do not depend on which image
    was_training = model.training
    try:
        with torch.no_grad():
            outputs = model.eval()(sample.to(device, dtype)).shape[-1]
    finally:
        model.train(was_training)
    for split, images in filled.items():
        highest = int(images.labels.max())
        if highest >= outputs:
            raise LandscapeError(
                f"the {split} images have {highest + 1} or more classes (labels up to {highest}), the model "
                f"outputs {outputs}: evaluate it on the data it was trained for"
            )


def _take_rows(batches: list[tuple[np.ndarray, np.ndarray]], indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) and labels at `indices` of the batches laid end to end, copying only those rows."""
    starts = np.cumsum([0] + [len(labels) for _, labels in batches])
    which = np.searchsorted(starts, indices, side="right") - 1
    images = np.empty((len(indices), 3072), dtype=np.uint8)
    labels = np.empty(len(indices), dtype=np.int64)
    for b, (data, batch_labels) in enumerate(batches):
        rows = np.flatnonzero(which == b)
        images[rows] = data[indices[rows] - starts[b]]
        labels[rows] = batch_labels[indices[rows] - starts[b]]
    return torch.from_numpy(images.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


# numpy's own array-rebuilding function, under whichever module name this numpy gives it
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]
# What numpy's pickles of a plain number type hold, after `dtype(spec, False, True)`: (3, byte order, no sub-array,
# no fields, no names, the default size and alignment, no flags)
_PLAIN_DTYPE_STATE = (None, None, None, -1, -1, 0)


# Bytes a CIFAR pickle may still make numpy and the encoder produce: twice its file's size (a protocol-2 array's
# bytes are made once from text, then taken by the array), set for each file by `_read_cifar_batch`. A memoized
# string or array state used again costs again, so a small file cannot multiply its bytes.
_BYTES_LEFT: contextvars.ContextVar[int] = contextvars.ContextVar("cifar_pickle_bytes_left", default=0)


def _spend(count: int) -> None:
    left = _BYTES_LEFT.get() - count
    if left < 0:
        raise LandscapeError(
            "it makes more bytes than the file holds (the same data used again), as no CIFAR file does"
        )
    _BYTES_LEFT.set(left)


class _Guarded:
    """What the unpickler hands out for a name: slots and a refusing BUILD, so a file cannot change it."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise LandscapeError("it asks to change a function it loads, which numpy's pickles never do")


class _PickledArrayClass(_Guarded):
    """`numpy.ndarray` as numpy's pickles name it: the first argument of `_reconstruct`, never called itself
    (`ndarray(shape)` would allocate whatever shape a file declares)."""

    __slots__ = ()

    def __call__(self, *args: object) -> None:
        raise LandscapeError("it asks to make a numpy array of a given shape, which pickled arrays never do")


_NDARRAY = _PickledArrayClass()


class _PickledDtype:
    """`numpy.dtype(spec, False, True)` as numpy's pickles call it, for plain numbers only (bool, integers and
    floats of at most 8 bytes: no objects, strings, sub-arrays or fields); its BUILD may set the byte order and
    nothing else. The array's BUILD (`_PickledArray`) takes the checked type from it."""

    __slots__ = ("dtype",)

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        if not isinstance(spec, str) or (align, copy) != (False, True):
            raise LandscapeError("it asks for a numpy data type with arguments that numpy's pickles never use")
        dtype = np.dtype(spec) if len(spec) <= 8 else None  # "u1", "<f8": longer ones are never plain numbers
        if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8 or dtype.subdtype or dtype.names:
            raise LandscapeError(
                f"it asks for the numpy data type {_short(spec)}, not a plain number (bool, integer, float of at "
                "most 8 bytes)"
            )
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")):
            raise LandscapeError("it holds a numpy data type state that numpy's pickles never write")
        if state[2:] != _PLAIN_DTYPE_STATE:
            raise LandscapeError(
                "it holds a numpy data type state with a sub-array, fields, a size or flags, which numpy's pickles "
                "of plain numbers never write"
            )
        self.dtype = self.dtype.newbyteorder(state[1])


class _PickledArray(np.ndarray):
    """An array as numpy's pickles rebuild it (`_reconstruct`, then BUILD): the state is checked before numpy takes
    it, so that its size is that of the bytes in the file and its type a checked `_PickledDtype`."""

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise LandscapeError("it holds a numpy array state that numpy's pickles never write")
        version, shape, dtype, fortran_order, raw = state
        if not (
            isinstance(version, int)
            and version == 1
            and isinstance(shape, tuple)
            and len(shape) <= 32
            and all(isinstance(n, int) and 0 <= n < 2**62 for n in shape)
            and isinstance(dtype, _PickledDtype)
            and isinstance(fortran_order, bool)
            and isinstance(raw, (bytes, str))  # str: bytes of Python 2, read as latin-1
        ):
            raise LandscapeError("it holds a numpy array state that numpy's pickles never write")
        size = dtype.dtype.itemsize
        for n in shape:
            size *= n
        if size != len(raw):
            raise LandscapeError(
                f"it holds a numpy array of shape {_short(str(shape))} that declares {size} bytes, and the file "
                f"holds {len(raw)}"
            )
        _spend(len(raw))
        data = raw.encode("latin1") if isinstance(raw, str) else raw  # as numpy does
        state = (1, shape, dtype.dtype, fortran_order, data)
        super().__setstate__(state)  # type: ignore[arg-type]  # numpy's stub asks for np.bool, numpy for an int


class _EmptyArray(_Guarded):
    """numpy's `_reconstruct` as numpy's pickles call it, always as `(ndarray, (0,), b'b')`: an empty array, which
    its BUILD then fills in (checked)."""

    __slots__ = ()

    def __call__(self, cls: object, shape: object, typecode: object) -> np.ndarray:
        if cls is not _NDARRAY or type(shape) is not tuple or shape != (0,) or typecode not in (b"b", "b"):
            raise LandscapeError("it asks numpy to rebuild an array from arguments that numpy's pickles never use")
        return _RECONSTRUCT(_PickledArray, (0,), b"b")


class _Latin1Encode(_Guarded):
    """`_codecs.encode` as pickles of bytes use it (protocol 2), limited to that use."""

    __slots__ = ()

    def __call__(self, text: object, encoding: object = "utf-8") -> bytes:
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise LandscapeError(f"it asks to encode text as {_short(str(encoding))}, which pickled arrays never do")
        _spend(len(text))
        return text.encode("latin1")


# Each stands in for what numpy's pickles name, accepting only the arguments numpy's own pickles use.
_CIFAR_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _EmptyArray(),  # files written with numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _EmptyArray(),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PickledDtype,  # a class: BUILD on it calls __setstate__ unbound, which fails
    ("_codecs", "encode"): _Latin1Encode(),
}


class _CifarUnpickler(pickle._Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays of plain numbers, never any other Python object;
    the arrays' bytes come to at most twice the file's size (`_BYTES_LEFT`).

    A tuple, list or dict is referred to once: a pickle may refer to an earlier one again (its memo), and a few
    KB of tuples that each hold the previous one twice make a dict key whose hash takes 2^depth steps, in C, deaf to
    Ctrl-C (or a label list numpy expands to gigabytes). CIFAR's batches never refer to anything twice but the
    names of numpy's functions and dtypes. Python's own unpickler (not the C one) lets the memo reads be checked.
    """

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)

    def _recall(self, index: int) -> None:
        try:
            value = self.memo[index]  # type: ignore[attr-defined]
        except KeyError:
            raise LandscapeError(f"it refers to an object it never stored (memo {index})") from None
        if isinstance(value, (tuple, list, dict, set, frozenset)):
            raise LandscapeError(
                f"it refers to one {type(value).__name__} more than once, which CIFAR batches never do"
            )
        self.append(value)  # type: ignore[attr-defined]

    def _load_get(self) -> None:
        self._recall(int(self.readline()[:-1]))  # type: ignore[attr-defined]

    def _load_binget(self) -> None:
        self._recall(self.read(1)[0])  # type: ignore[attr-defined]

    def _load_long_binget(self) -> None:
        self._recall(int.from_bytes(self.read(4), "little"))  # type: ignore[attr-defined]

    @staticmethod
    def _key(key: object) -> object:
        """A dict key as CIFAR's are: text, bytes or a number. Any other is hashed, and a tuple nested a million
        deep (1 MB of TUPLE1) overflows the C stack in its hash: a crash, not an error."""
        if type(key) not in (str, bytes, int):
            raise LandscapeError(f"it has a dict key of type {type(key).__name__}, which CIFAR batches never do")
        return key

    def _load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()  # type: ignore[attr-defined]
        self.stack[-1][self._key(key)] = value  # type: ignore[attr-defined]

    def _load_setitems(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        target = self.stack[-1]  # type: ignore[attr-defined]
        for i in range(0, len(items) - 1, 2):
            target[self._key(items[i])] = items[i + 1]

    def _load_dict(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        self.append({self._key(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)})  # type: ignore[attr-defined]

    def _refuse_set(self) -> None:
        raise LandscapeError("it holds a set, which CIFAR batches never do")

    dispatch[pickle.GET[0]] = _load_get
    dispatch[pickle.BINGET[0]] = _load_binget
    dispatch[pickle.LONG_BINGET[0]] = _load_long_binget
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.EMPTY_SET[0]] = _refuse_set
    dispatch[pickle.ADDITEMS[0]] = _refuse_set
    dispatch[pickle.FROZENSET[0]] = _refuse_set

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _CIFAR_GLOBALS:
            return _CIFAR_GLOBALS[module, name]
        raise LandscapeError(
            f"it asks to load the Python object {_short(f'{module}.{name}')}, which is never unpickled"
        )


def _short(text: str, limit: int = 80) -> str:
    """repr of a name taken from a file, shortened: one line whatever it holds."""
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def fetch_cifar(root: str | os.PathLike | None, name: str) -> None:
    """Download CIFAR `name` into `root` (else $LANDSCAPE_DATA_ROOT), an existing folder, unless it is there."""
    folder = resolve_root(root)
    if name not in _CIFAR_FOLDERS:
        raise LandscapeError(f"only CIFAR can be downloaded, not {name}")
    if find_cifar_folder(folder, name) is None:
        _download_cifar(folder, name)


def _download_cifar(root: Path, name: str) -> None:
    import torchvision

    dataset = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        dataset(str(root), train=True, download=True)
    except Exception as e:
        raise LandscapeError(
            f"downloading {name} into {root} failed ({type(e).__name__}: {e}); are you online?"
        ) from None


def _image_folder(folder: Path, image_size: int | None) -> ImageFolder:
    """The split's files and labels, listed, not decoded."""
    import torchvision
    from torchvision.transforms import v2

    if not folder.is_dir():
        raise LandscapeError(f"no ImageFolder split at {folder}: expected {folder}/<class>/<image files>")
    steps = [v2.PILToTensor()]
    if image_size:
        steps = [v2.Resize(image_size), v2.CenterCrop(image_size)] + steps
    try:
        return torchvision.datasets.ImageFolder(str(folder), transform=v2.Compose(steps))
    except (FileNotFoundError, OSError) as e:
        raise LandscapeError(f"cannot read ImageFolder {folder}: {e}") from None


def _decode_images(dataset: ImageFolder, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the images at `indices` only."""
    images, labels = [], []
    for i in indices.tolist():
        try:
            image, label = dataset[i]
        except Exception as e:  # PIL raises many types for a damaged file
            raise LandscapeError(
                f"cannot read image {dataset.samples[i][0]}: {type(e).__name__}: {_first_line(e)}"
            ) from None
        images.append(image.expand(3, -1, -1))
        labels.append(label)
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise LandscapeError(f"images in {dataset.root} differ in size ({len(shapes)} shapes): pass --image-size N")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def normalizer(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift such that `uint8 * scale + shift == (x / 255 - mean) / std`, shaped (1, C, 1, 1)."""
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    scale = (1.0 / (255.0 * std_t)).to(device=device, dtype=dtype)
    shift = (-mean_t / std_t).to(device=device, dtype=dtype)
    return scale, shift


def fingerprint(images: ImageSet) -> str:
    """sha256 (hex) of what an image set holds, to tell whether two copies of a data set give the same images: its
    shape (N, 3, H, W) as four little-endian int64, its uint8 pixels in that order (row-major) and its labels as
    little-endian int64. The indices are not part of it (they are stored next to it)."""
    pixels = images.images.detach().cpu().contiguous()
    if pixels.dtype != torch.uint8:
        raise LandscapeError(f"a fingerprint is taken of uint8 images, not {pixels.dtype}")
    digest = hashlib.sha256(np.asarray(pixels.shape, dtype="<i8").tobytes())
    digest.update(pixels.numpy().data)  # contiguous: hashed in place, not copied
    digest.update(images.labels.detach().cpu().numpy().astype("<i8").tobytes())
    return digest.hexdigest()


IMAGE_CHANNELS = 3  # every ImageSet is (N, 3, H, W): CIFAR is RGB, and ImageFolder images are read as 3 channels


def check_normalization(
    mean: tuple[float, ...], std: tuple[float, ...], names: tuple[str, str] = ("--mean", "--std")
) -> None:
    """One LandscapeError unless `mean` and `std` are IMAGE_CHANNELS finite numbers each and every std is > 0."""
    for name, values in zip(names, (mean, std)):
        if len(values) != IMAGE_CHANNELS:
            raise LandscapeError(
                f"{name} must be {IMAGE_CHANNELS} numbers, one per colour channel (R,G,B), got {len(values)}"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise LandscapeError(f"{name} must be finite numbers, got {', '.join(str(v)[:20] for v in values)}")
    if min(std) <= 0:
        raise LandscapeError(
            f"{names[1]} must be positive (the images are divided by it), got {', '.join(str(v) for v in std)}"
        )
