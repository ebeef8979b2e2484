"""One checkpoint loader for every format we accept, and the project's own checkpoint format with metadata.

Never unpickles arbitrary objects: `torch.load(..., weights_only=True)` only. Never imports what a file names:
a recorded arch is used only when it is a registered model or `torchvision:NAME`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import DEFAULT_NORMALIZATION, check_normalization
from .errors import LandscapeError
from .files import replacing
from .models import create_model, list_models, torchvision_classifiers

CHECKPOINT_FORMAT = "landscape-checkpoint"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: tensors keyed by name, and the metadata this project writes (empty for foreign files).

    A recorded arch that is neither a registered model nor `torchvision:NAME` (e.g. `os:abort`, which would be
    imported and called) is not in `metadata` but in `untrusted_arch`: only the user's own arch may name code.
    """

    path: str
    sha256: str
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    untrusted_arch: str | None = None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a `.pt`/`.pth`/`.safetensors` file: a raw state_dict, a common wrapper, or this project's format."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"checkpoint {path} is a folder" if path.is_dir() else f"checkpoint not found: {path}")
    metadata: Any = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw: Any = {k: f.get_tensor(k) for k in f.keys()}
                header = f.metadata() or {}
            if "landscape" in header:
                metadata = json.loads(header["landscape"])
        else:
            _check_torch_format(path)
            with warnings.catch_warnings():  # torch's two-line warning before our one-line refusal
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                raw = torch.load(path, map_location="cpu", weights_only=True)
    except LandscapeError:
        raise
    except ImportError:
        raise LandscapeError(
            "reading .safetensors files needs the safetensors package: pip install safetensors"
        ) from None
    except Exception as e:  # torch and safetensors raise many types for a damaged file
        raise LandscapeError(f"cannot read checkpoint {path}: {_reason(e)}") from None
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        metadata = raw.get("metadata", {})
    metadata, untrusted_arch = _check_metadata(metadata, path)
    state = _unwrap(raw, path)
    return Checkpoint(str(path), file_sha256(path), state, metadata, untrusted_arch)


def _check_torch_format(path: Path) -> None:
    """Refuse, in plain words, a file that is neither torch.save's zip archive nor a (legacy) pickle."""
    with open(path, "rb") as f:
        start = f.read(262)
    head = start[:4]
    # a zip archive (torch >= 1.6); a pickle of protocol >= 2 opens with PROTO (older torch); the oldest were tar files
    if head == b"PK\x03\x04" or head[:1] == b"\x80" or start[257:262] == b"ustar":
        return
    shown = f"first bytes: {head.hex(' ')}" if head else "it is empty"
    raise LandscapeError(
        f"cannot read checkpoint {path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle; "
        f"{shown})"
    )


def _check_metadata(metadata: Any, path: Path) -> tuple[dict[str, Any], str | None]:
    """Check the fields this project reads (others stay free-form); returns them and an arch that may name code."""
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise LandscapeError(
            f"checkpoint {path} has malformed metadata: expected a mapping of names to values, "
            f"found {type(metadata).__name__}"
        )
    meta = {k: v for k, v in metadata.items() if not (k in _CHECKS and v is None)}  # null: not recorded
    for key, (valid, expected) in _CHECKS.items():
        if key in meta and not valid(meta[key]):
            raise LandscapeError(
                f"checkpoint {path} has malformed metadata: '{key}' must be {expected}, found {_show(meta[key])}"
            )
    untrusted = meta.pop("arch") if "arch" in meta and not _is_known_arch(meta["arch"]) else None
    return meta, untrusted


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_stats(v: Any, positive: bool) -> bool:
    return (
        isinstance(v, (list, tuple)) and 1 <= len(v) <= 4 and all(_is_number(x) and (x > 0 or not positive) for x in v)
    )


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {  # field: (valid, what it must be)
    "arch": (lambda v: isinstance(v, str), "a model name"),
    "num_classes": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1_000_000,
        "a whole number in 1..1000000",
    ),
    "mean": (lambda v: _is_stats(v, positive=False), "a list of 1 to 4 finite numbers"),
    "std": (lambda v: _is_stats(v, positive=True), "a list of 1 to 4 finite numbers, all > 0"),
    "dataset": (lambda v: isinstance(v, str), "a dataset name such as cifar10"),
    "skips": (lambda v: isinstance(v, bool), "true or false"),
}


def _is_known_arch(arch: str) -> bool:
    """A registered model or `torchvision:NAME`: names that build a model without importing anything the file names."""
    if arch in {entry.name for entry in list_models()}:
        return True
    return arch.startswith("torchvision:") and arch.split(":", 1)[1] in torchvision_classifiers()


def _show(value: Any, limit: int = 60) -> str:
    """A file's value for a one-line message: repr (no raw newlines), shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(error: Exception) -> str:
    """One informative line of a loading error; for a refused pickle, what the file asked for."""
    text = str(error)
    if "Weights only load failed" in text:
        refused = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
        if refused:
            return (
                f"it asks to load the Python object '{refused.group(1)}', which is never unpickled "
                "(only tensors and plain containers are)"
            )
        detail = re.split(r"WeightsUnpickler error:|\n\n", text, maxsplit=1)[-1]  # after torch's advice
        detail = " ".join(detail.split("Check the documentation of torch.load")[0].split())
        return f"it holds Python objects other than tensors and plain containers, which are never unpickled ({detail})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def _unwrap(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    seen: set[int] = set()  # a crafted file's dict may hold itself: unwrapping it would never end
    while isinstance(raw, dict) and not _is_state_dict(raw):
        if id(raw) in seen:
            raise LandscapeError(f"{path} holds no state_dict (its wrapping dicts hold each other in a loop)")
        seen.add(id(raw))
        inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), dict)), None)
        if inner is None:
            raise LandscapeError(f"{path} holds no state_dict (top-level keys: {', '.join(map(str, list(raw)[:8]))})")
        raw = inner
    if not isinstance(raw, dict) or not raw:
        raise LandscapeError(f"{path} holds no state_dict (found {type(raw).__name__})")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise LandscapeError(f"{path} holds a state_dict with a key that is no name (a {type(key).__name__})")
        name = key
        for prefix in _PREFIXES:
            while name.startswith(prefix):
                name = name[len(prefix) :]
        name = name.replace("._orig_mod.", ".")
        if name in state:  # 'module.conv1.weight' and 'conv1.weight': which one is meant cannot be known
            raise LandscapeError(f"{path} holds two tensors named {name} once wrappers' prefixes are removed")
        state[name] = value
    return state


def _is_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write the project's format: `{"format", "metadata", "state_dict"}`; metadata holds only JSON-able values."""
    path = Path(path)
    metadata = json.loads(json.dumps(metadata))  # plain types only, so that weights_only=True reads them back
    payload = {
        "format": CHECKPOINT_FORMAT,
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    with replacing(path) as temporary:
        torch.save(payload, temporary)


def build_model(checkpoint: Checkpoint, arch: str | None = None, num_classes: int | None = None) -> nn.Module:
    """Build the checkpoint's architecture and load its weights; a mismatch names the missing and unexpected keys."""
    if not arch and checkpoint.untrusted_arch is not None:
        raise LandscapeError(_untrusted_arch_message(checkpoint))
    arch = arch or checkpoint.metadata.get("arch")
    if not arch:
        raise LandscapeError(
            f"{checkpoint.path} does not record its architecture: pass --arch (see `landscape models`)"
        )
    if num_classes is not None and num_classes < 1:  # 0 was replaced by the checkpoint's count without a word
        raise LandscapeError(f"--num-classes must be a positive number of classes, got {num_classes}")
    num_classes = num_classes or checkpoint.metadata.get("num_classes") or _infer_num_classes(checkpoint.state_dict)
    expected = _shapes(arch, num_classes)  # a file's "num_classes": 1000000 costs nothing until it fits
    state = {**_batches_tracked(expected, checkpoint.state_dict), **checkpoint.state_dict}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise LandscapeError(
            f"checkpoint {checkpoint.path} does not fit arch '{arch}': "
            f"missing {_some(missing)}; unexpected {_some(unexpected)}"
        )
    wrong = [k for k in expected if expected[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise LandscapeError(
            f"checkpoint {checkpoint.path} does not fit arch '{arch}': {len(wrong)} tensors differ in "
            f"shape, e.g. {k}: {tuple(state[k].shape)} in the file, "
            f"{tuple(expected[k].shape)} in the model"
        )
    negative = next((k for k in state if k.endswith("running_var") and bool((state[k] < 0).any())), None)
    if negative:  # BatchNorm divides by its square root: every point, θ* included, would be NaN
        raise LandscapeError(f"checkpoint {checkpoint.path}'s {negative} holds a negative variance")
    model = create_model(arch, num_classes=num_classes)
    model.load_state_dict(state)
    return model.eval()


def _shapes(arch: str, num_classes: int) -> dict[str, torch.Tensor]:
    """The model's state_dict on PyTorch's meta device: its names and shapes, without their memory."""
    try:
        with torch.device("meta"):
            return create_model(arch, num_classes=num_classes).state_dict()
    except LandscapeError:
        raise
    except Exception:  # a model whose construction reads tensor values (torchvision's RegNets compute widths)
        pass
    try:
        with _registered_on_meta():
            return create_model(arch, num_classes=num_classes).state_dict()
    except LandscapeError:
        raise
    except Exception as e:
        raise LandscapeError(
            f"cannot build arch '{arch}' with {num_classes} classes without its weights' memory, to check the "
            f"checkpoint against it: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        ) from None


@contextlib.contextmanager
def _registered_on_meta() -> Iterator[None]:
    """Every parameter and buffer a module registers goes to the meta device: a layer's weights are allocated but
    never written (its initialization runs on meta), so they cost no memory."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def buffer(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, None if tensor is None else tensor.to("meta"), persistent)

    setattr(nn.Module, "register_parameter", parameter)  # noqa: B010 (a method replaced for the block)
    setattr(nn.Module, "register_buffer", buffer)  # noqa: B010
    try:
        yield
    finally:
        setattr(nn.Module, "register_parameter", register_parameter)  # noqa: B010
        setattr(nn.Module, "register_buffer", register_buffer)  # noqa: B010


def _batches_tracked(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The BatchNorm counters `num_batches_tracked` a model has and a checkpoint lacks, as 0: files saved before
    PyTorch 0.4.1 (as the paper's were) have none, and eval-mode BatchNorm (with momentum) never reads them."""
    return {
        k: torch.zeros(t.shape, dtype=t.dtype)  # on the CPU: `expected` may be on the meta device
        for k, t in expected.items()
        if k.endswith(".num_batches_tracked") and k not in state
    }


def check_dataset(checkpoint: Checkpoint, dataset: str) -> None:
    """Refuse `checkpoint` when its metadata records another dataset than `dataset` (one line)."""
    recorded = checkpoint.metadata.get("dataset", dataset)
    if recorded != dataset:
        raise LandscapeError(f"{checkpoint.path} was trained on {str(recorded)[:40]!r}, but --dataset is {dataset}")


def input_normalization(
    checkpoint: Checkpoint, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, dataset: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's input normalization: `mean` and `std` as given (checked by the caller), else the checkpoint's
    recorded ones (an unusable record is one line), else the dataset's defaults."""
    default_mean, default_std = DEFAULT_NORMALIZATION.get(dataset, DEFAULT_NORMALIZATION["cifar10"])
    meta = checkpoint.metadata
    resolved = tuple(mean or meta.get("mean") or default_mean), tuple(std or meta.get("std") or default_std)
    if mean is None:
        try:
            check_normalization(*resolved, ("mean", "std"))
        except LandscapeError as e:
            raise LandscapeError(
                f"{checkpoint.path} records an unusable input normalization: {e} (pass --mean and --std)"
            ) from None
    return resolved


COMPARED = ("arch", "num_classes", "dataset", "mean", "std", "skips")  # what makes two checkpoints one model


def check_same_model(
    checkpoint: Checkpoint,
    state: Mapping[str, torch.Tensor],
    recorded: Mapping[str, Any],
    what: str = "the target checkpoint",
) -> None:
    """Refuse `checkpoint` unless it is of the model whose tensors are `state` (its state_dict) and whose settings are
    `recorded` (arch, num_classes, dataset, mean, std as in checkpoint metadata; None: not known).

    In this order, one line naming the first difference: a field of `COMPARED` that both record with other values,
    a tensor of the model the checkpoint lacks, a tensor the model lacks, a tensor of another shape.
    """
    head = f"{what} {checkpoint.path} is not of this model"
    theirs = dict(checkpoint.metadata)
    if checkpoint.untrusted_arch is not None:
        theirs["arch"] = checkpoint.untrusted_arch
    for key in COMPARED:
        a, b = _comparable(theirs.get(key)), _comparable(recorded.get(key))
        if a is not None and b is not None and a != b:
            raise LandscapeError(f"{head}: it records {key} {_show(theirs[key])}, the model {_show(_plain(b))}")
    theirs_state = {**_batches_tracked(state, checkpoint.state_dict), **checkpoint.state_dict}
    missing = [k for k in state if k not in theirs_state]
    extra = [k for k in theirs_state if k not in state]
    if missing:
        raise LandscapeError(
            f"{head}: it lacks {missing[0]} ({len(missing)} of the model's tensors missing, "
            f"{len(extra)} tensors the model lacks)"
        )
    if extra:
        raise LandscapeError(f"{head}: it holds {extra[0]}, which the model lacks")
    for k, t in state.items():
        if theirs_state[k].shape != t.shape:
            raise LandscapeError(
                f"{head}: its {k} has shape {tuple(theirs_state[k].shape)}, the model's {tuple(t.shape)}"
            )


def _comparable(value: Any) -> Any:
    """A metadata value in one form for comparison: lists and tuples of numbers as tuples of floats."""
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """The model's value shown as a checkpoint's (a list, not a tuple)."""
    return list(value) if isinstance(value, tuple) else value


def _untrusted_arch_message(checkpoint: Checkpoint) -> str:
    arch = checkpoint.untrusted_arch or ""
    head = f"checkpoint {checkpoint.path} records arch {_show(arch)}"
    if ":" in arch and not arch.startswith("torchvision:"):
        return (
            f"{head}, which names code to import: only your own --arch may do that "
            f"(pass --arch {_show(arch)} if you trust the file)"
        )
    return (
        f"{head}, which is not a registered model or torchvision:NAME of an image classifier: "
        "pass --arch (see `landscape models`)"
    )


def _infer_num_classes(state: dict[str, torch.Tensor]) -> int:
    """The output size of the last 2-D weight (the classifier), or 10."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else 10


def _some(keys: list[str], limit: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
