"""One checkpoint loader for every format we accept, and the project's own checkpoint format with metadata.

Never unpickles arbitrary objects: `torch.load(..., weights_only=True)` only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import LandscapeError
from .models import create_model

CHECKPOINT_FORMAT = "landscape-checkpoint"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: tensors keyed by name, and the metadata this project writes (empty for foreign files)."""

    path: str
    sha256: str
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)


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
        raise LandscapeError(f"checkpoint not found: {path}")
    metadata: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw: Any = {k: f.get_tensor(k) for k in f.keys()}
                header = f.metadata() or {}
            if "landscape" in header:
                metadata = json.loads(header["landscape"])
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise LandscapeError("reading .safetensors files needs the safetensors package: pip install safetensors") from None
    except Exception as e:  # torch and safetensors raise many types for a damaged file
        raise LandscapeError(f"cannot read checkpoint {path}: {_reason(e)}") from None
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        metadata = dict(raw.get("metadata", {}))
    state = _unwrap(raw, path)
    return Checkpoint(str(path), file_sha256(path), state, metadata)


def _reason(error: Exception) -> str:
    """One informative line of a loading error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    unpickler = [line for line in lines if "WeightsUnpickler error" in line]
    if unpickler:
        return ("it holds Python objects other than tensors and plain containers, which are never unpickled "
                f"({unpickler[0].split(':', 2)[-1].strip()[:160]})")
    return (lines[0] if lines else type(error).__name__)[:300]


def _unwrap(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(raw, dict) and not _is_state_dict(raw):
        inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), dict)), None)
        if inner is None:
            raise LandscapeError(f"{path} holds no state_dict (top-level keys: {', '.join(map(str, list(raw)[:8]))})")
        raw = inner
    if not isinstance(raw, dict) or not raw:
        raise LandscapeError(f"{path} holds no state_dict (found {type(raw).__name__})")
    state = {}
    for key, value in raw.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        state[key.replace("._orig_mod.", ".")] = value
    return state


def _is_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write the project's format: `{"format", "metadata", "state_dict"}`; metadata holds only JSON-able values."""
    path = Path(path)
    metadata = json.loads(json.dumps(metadata))  # plain types only, so that weights_only=True reads them back
    payload = {"format": CHECKPOINT_FORMAT, "metadata": metadata,
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def build_model(checkpoint: Checkpoint, arch: str | None = None, num_classes: int | None = None) -> nn.Module:
    """Build the checkpoint's architecture and load its weights; a mismatch names the missing and unexpected keys."""
    arch = arch or checkpoint.metadata.get("arch")
    if not arch:
        raise LandscapeError(f"{checkpoint.path} does not record its architecture: pass --arch (see `landscape models`)")
    num_classes = num_classes or checkpoint.metadata.get("num_classes") or _infer_num_classes(checkpoint.state_dict)
    model = create_model(arch, num_classes=num_classes)
    expected = model.state_dict()
    missing = [k for k in expected if k not in checkpoint.state_dict]
    unexpected = [k for k in checkpoint.state_dict if k not in expected]
    if missing or unexpected:
        raise LandscapeError(f"checkpoint {checkpoint.path} does not fit arch '{arch}': "
                             f"missing {_some(missing)}; unexpected {_some(unexpected)}")
    wrong = [k for k in expected if expected[k].shape != checkpoint.state_dict[k].shape]
    if wrong:
        k = wrong[0]
        raise LandscapeError(f"checkpoint {checkpoint.path} does not fit arch '{arch}': {len(wrong)} tensors differ in "
                             f"shape, e.g. {k}: {tuple(checkpoint.state_dict[k].shape)} in the file, "
                             f"{tuple(expected[k].shape)} in the model")
    model.load_state_dict(checkpoint.state_dict)
    return model.eval()


def _infer_num_classes(state: dict[str, torch.Tensor]) -> int:
    """The output size of the last 2-D weight (the classifier), or 10."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else 10


def _some(keys: list[str], limit: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
