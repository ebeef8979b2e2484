"""Model registry: the CIFAR ResNets of Li et al. (2018), with and without skips, plus torchvision and user models.

`create_model("resnet56")`, `create_model("torchvision:resnet18")`, `create_model("mypkg.models:build")`.
Module names follow the paper's code (`conv1`, `layer1.0.shortcut.0`, `linear`), so its checkpoints load as they are
(files from before PyTorch 0.4.1, without BatchNorm's `num_batches_tracked`, too: `checkpoints.build_model`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LandscapeError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if skip:
            self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.skip:
            out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1x1, 3x3, 1x1 convolutions with BN, a ReLU after the sum. Without skips the last ReLU stays, unlike the
    paper's code, whose `Bottleneck_noshortcut` has none: its ResNet-50/101/152 `_noshort` weights load here but
    compute another function (the CIFAR ResNets of Fig. 5 use `BasicBlock`, which agrees with its code)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        if skip:
            self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.skip:
            out = out + self.shortcut(x)
        return F.relu(out)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity, or a 1x1-conv + BN projection where the shape changes (option B of He et al.)."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """ResNet for 32x32 inputs: a 3x3 stem, stages of `widths` channels, global average pooling, one linear layer."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        num_blocks: list[int],
        widths: list[int],
        num_classes: int = 10,
        skip: bool = True,
    ) -> None:
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        for stage, (width, blocks) in enumerate(zip(widths, num_blocks)):
            stride = 1 if stage == 0 else 2
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(block(self.in_planes, width, s, skip))
                self.in_planes = width * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.num_stages = len(widths)
        self.linear = nn.Linear(widths[-1] * block.expansion, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in range(self.num_stages):
            out = getattr(self, f"layer{stage + 1}")(out)
        out = out.mean((2, 3))  # global average pooling
        return self.linear(out)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(name, build, description)
        return build

    return decorate


def _register_resnets() -> None:
    cifar_depths = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}
    for depth, n in cifar_depths.items():
        for skip in (True, False):
            name = f"resnet{depth}" + ("" if skip else "_noshort")
            what = "with skip connections" if skip else "without skip connections"
            register_model(name, f"CIFAR ResNet-{depth} (16/32/64 channels) {what}")(
                lambda num_classes=10, n=n, skip=skip: ResNet(BasicBlock, [n] * 3, [16, 32, 64], num_classes, skip)
            )
    wide = {
        18: (BasicBlock, [2, 2, 2, 2]),
        34: (BasicBlock, [3, 4, 6, 3]),
        50: (Bottleneck, [3, 4, 6, 3]),
        101: (Bottleneck, [3, 4, 23, 3]),
        152: (Bottleneck, [3, 8, 36, 3]),
    }
    for depth, (block, blocks) in wide.items():
        for skip in (True, False):
            name = f"resnet{depth}" + ("" if skip else "_noshort")
            what = "with skip connections" if skip else "without skip connections"
            register_model(
                name, f"ResNet-{depth} ({block.__name__}, 64-512 channels, 3x3 stem for 32x32 inputs) {what}"
            )(
                lambda num_classes=10, block=block, blocks=blocks, skip=skip: ResNet(
                    block, blocks, [64, 128, 256, 512], num_classes, skip
                )
            )


_register_resnets()


def list_models() -> list[ModelEntry]:
    """The registered architectures, in registration order."""
    return list(_REGISTRY.values())


def torchvision_classifiers() -> set[str]:
    """The names `torchvision:NAME` takes: torchvision's image classifiers, which build without downloading."""
    import torchvision

    return set(torchvision.models.list_models(module=torchvision.models))


def create_model(arch: str, num_classes: int = 10) -> nn.Module:
    """Build an untrained model: a registry name, `torchvision:NAME`, or `module.path:callable`.

    `module.path:callable` imports and calls code: pass only the user's own arch, never one read from a file
    (`load_checkpoint` sets such a recorded arch aside as `Checkpoint.untrusted_arch`).
    """
    if arch in _REGISTRY:
        return _REGISTRY[arch].build(num_classes=num_classes)
    if arch.startswith("torchvision:"):
        import torchvision

        name = arch.split(":", 1)[1]
        if name not in torchvision_classifiers():  # a detection model fetches its backbone's weights, unchecked
            raise LandscapeError(
                f"unknown torchvision model '{name}': torchvision:NAME takes an image classifier of "
                "torchvision.models (e.g. resnet18, vgg11_bn); build others with module.path:callable"
            )
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if ":" in arch:
        module_name, _, attr = arch.partition(":")
        try:
            build = getattr(importlib.import_module(module_name), attr)
        except Exception as e:  # an empty or relative module name is a ValueError
            raise LandscapeError(f"cannot import model builder '{arch}': {type(e).__name__}: {e}") from None
        if not callable(build):
            raise LandscapeError(f"model builder '{arch}' is a {type(build).__name__}, not a callable")
        try:
            accepts_classes = "num_classes" in inspect.signature(build).parameters
        except (TypeError, ValueError):  # a builtin without a signature
            accepts_classes = False
        try:
            model = build(num_classes=num_classes) if accepts_classes else build()
        except LandscapeError:
            raise
        except Exception as e:
            raise LandscapeError(f"model builder '{arch}' failed: {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise LandscapeError(f"'{arch}' returned {type(model).__name__}, not a torch.nn.Module")
        return model
    raise LandscapeError(
        f"unknown model '{arch}': run `landscape models` to list them, or use torchvision:NAME or module.path:callable"
    )
