"""What the machine at hand is good at: native bf16, and a one-line description recorded with every result.

Native bf16 means matrix units that compute in bf16: on the CPU, AMX or AVX512-BF16 (elsewhere bf16 autocast is
emulated and runs several times *slower* than fp32: 11-13x measured for a training step on an AVX2 EPYC); on CUDA,
compute capability 8.0 or newer.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

from .errors import LandscapeError

PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str) -> torch.device:
    """`auto` becomes CUDA where it is available and the CPU elsewhere; a clear error for a bad or absent device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise LandscapeError(f"unknown device '{device}': {e}") from None
    if resolved.type not in ("cpu", "cuda"):  # meta, mps, xpu...: never tested, or no numbers at all
        raise LandscapeError(f"device '{device}' is not supported: use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"device '{device}' asked for, but CUDA is not available here")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise LandscapeError(f"device '{device}' asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return resolved


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for precision `bf16`; true fp32 for `fp32` (on CUDA with TF32 off within)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda":
        return exact_fp32()
    return contextlib.nullcontext()


@cache
def autocast_reaches_vmap(device_type: str) -> bool:
    """Whether bf16 autocast applies inside `torch.func.vmap` on this device type: on the CPU (PyTorch 2.14) it does
    not, and a vmapped convolution stays fp32 while the same one outside vmap runs in bf16."""
    weight = torch.ones(2, 1, 1, 1, 1, device=device_type)
    x = torch.ones(1, 1, 2, 2, device=device_type)
    with torch.autocast(device_type, dtype=torch.bfloat16), torch.no_grad():
        out = torch.func.vmap(lambda w: torch.nn.functional.conv2d(x, w))(weight)
    return out.dtype == torch.bfloat16


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Turn TF32 off for convolutions and matrix products within (PyTorch lets cuDNN use it by default: convolutions
    labelled fp32 would round their inputs to 10 mantissa bits); the settings are restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, as on macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_native_bf16() -> bool:
    """AMX or AVX512-BF16, as torch sees it (and /proc/cpuinfo where torch does not say)."""
    cpu = getattr(torch._C, "_cpu", None)
    amx = getattr(cpu, "_is_amx_tile_supported", None)
    avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", None)
    if amx is not None and avx512_bf16 is not None:
        return bool(amx()) or bool(avx512_bf16())
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 arithmetic is native (fast) on `device`."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return cpu_native_bf16()
    return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto` becomes bf16 where it is native and fp32 elsewhere; fp32 and bf16 stay as they are."""
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}")
    return requested


def describe(device: torch.device) -> str:
    """One line naming the hardware: the GPU, or the CPU with its bf16 support and torch's thread count."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    flags = cpu_flags()
    units = [name for name in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if name in flags]
    bf16 = "native bf16" if cpu_native_bf16() else "no native bf16"
    return f"CPU {cpu_name()} ({', '.join(units) or 'no AVX flags read'}; {bf16}), {torch.get_num_threads()} threads"


def bf16_warning(precision: str, device: str = "auto") -> str | None:
    """One line when bf16 is asked for on hardware that only emulates it, else None."""
    if precision != "bf16":
        return None
    dev = resolve_device(device)
    if native_bf16(dev):
        return None
    return (
        f"bf16 is not native on this {dev.type.upper()} ({describe(dev)}): it runs emulated, 11-13x slower than "
        "fp32 for a training step on an AVX2 CPU (docs/benchmarks.md); use fp32 (or --precision auto where offered)"
    )
