"""Loss and accuracy of a model at points θ* + Σ c_k d_k, with the data held on the compute device.

The model's own tensors are overwritten in place for each point (no state_dict copy per point) and θ* is
restored afterwards, even on an exception. In `--bn eval` mode BatchNorm is folded into the preceding
convolutions, refolded at every point from the perturbed weights. Several points can share one forward pass
through `torch.func.functional_call` + `vmap` (`points_per_pass`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSet, normalizer
from .directions import Direction, check_same_keys
from .errors import LandscapeError

PRECISIONS = ("fp32", "bf16")
BN_MODES = ("eval", "recompute")


@dataclass(frozen=True)
class EvalSpec:
    """What is computed at each point (part of a surface's identity).

    bn: `eval` uses the stored running statistics; `recompute` re-estimates them at each point from
    `bn_images` fixed training images in batches of `bn_batch_size`, as mode-connectivity work does.
    """

    precision: str = "fp32"
    bn: str = "eval"
    bn_images: int = 1280
    bn_batch_size: int = 128

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise LandscapeError(f"unknown precision '{self.precision}': use {', '.join(PRECISIONS)}")
        if self.bn not in BN_MODES:
            raise LandscapeError(f"unknown BatchNorm mode '{self.bn}': use {', '.join(BN_MODES)}")
        if self.bn_images < 1 or self.bn_batch_size < 2:
            raise LandscapeError("--bn-images must be >= 1 and the BN batch size >= 2")


@dataclass(frozen=True)
class RunOptions:
    """How the points are computed (not part of a surface's identity: results agree to rounding)."""

    device: str = "auto"
    batch_size: int | None = None  # None: 128 on the CPU (measured best, docs/benchmarks.md), 1000 on CUDA
    channels_last: bool = True
    fold_bn: bool = True
    compile: bool = False
    points_per_pass: int = 1

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError as e:
            raise LandscapeError(f"unknown device '{self.device}': {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise LandscapeError(f"device '{self.device}' asked for, but CUDA is not available here")
        return device

    def resolved(self) -> "RunOptions":
        """These options with `device` and `batch_size` made concrete."""
        device = self.resolved_device()
        batch_size = self.batch_size or (1000 if device.type == "cuda" else 128)
        return dataclasses.replace(self, device=str(device), batch_size=batch_size)

    def validate(self) -> None:
        if (self.batch_size is not None and self.batch_size < 1) or self.points_per_pass < 1:
            raise LandscapeError("--batch-size and --points-per-pass must be positive")


class PointEvaluator:
    """Evaluates loss and accuracy at grid points; `evaluate(coefficients)` returns (K, splits, 2) float64."""

    def __init__(self, model: nn.Module, center: Direction, directions: list[Direction],
                 datasets: dict[str, ImageSet], mean: tuple[float, ...], std: tuple[float, ...],
                 spec: EvalSpec = EvalSpec(), options: RunOptions = RunOptions(),
                 bn_set: ImageSet | None = None) -> None:
        spec.validate()
        options.validate()
        options = options.resolved()
        for d in directions:
            check_same_keys(d, center, "direction", "model")
        if spec.bn == "recompute" and bn_set is None:
            raise LandscapeError("--bn recompute needs a set of training images")
        if spec.bn == "recompute" and options.points_per_pass > 1:
            raise LandscapeError("--bn recompute evaluates one point per pass: use --points-per-pass 1")
        self.spec, self.options = spec, options
        self.device = options.resolved_device()
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self.model = model.to(self.device).eval()
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        state = self.model.state_dict()
        self._saved_state = {k: v.clone() for k, v in state.items()}  # θ*, restored after each evaluate()
        missing = [n for n in center if n not in state]
        if missing:
            raise LandscapeError(f"the directions name tensors the model lacks, e.g. {missing[0]}")
        # Only tensors that some direction moves are rewritten at each point.
        self.moving = [n for n in center if any(bool(d[n].any()) for d in directions)]
        self.targets = [state[n] for n in self.moving]
        self.center = [center[n].to(self.device, state[n].dtype) for n in self.moving]
        self.directions = [[d[n].to(self.device, state[n].dtype) for n in self.moving] for d in directions]
        self.datasets = {split: s.to(self.device) for split, s in datasets.items()}
        self.bn_set = bn_set.to(self.device) if bn_set is not None else None
        self.scale, self.shift = normalizer(mean, std, self.device)
        self.folded = fold_batchnorm(self.model) if options.fold_bn else None
        forward_module = self.folded.module if self.folded is not None else self.model
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(forward_module) if options.compile else forward_module)

    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        """Metrics at each row of `coefficients` (K, number of directions): [k, split, (loss, acc %)]."""
        coefficients = np.asarray(coefficients, dtype=np.float64).reshape(len(coefficients), -1)
        if coefficients.shape[1] != len(self.directions):
            raise ValueError(f"expected {len(self.directions)} coefficients per point, got {coefficients.shape[1]}")
        with self._restoring_center(), torch.no_grad():
            if len(coefficients) > 1 and self.options.points_per_pass > 1:
                return np.concatenate([self._evaluate_batched(coefficients[s:s + self.options.points_per_pass])
                                       for s in range(0, len(coefficients), self.options.points_per_pass)])
            return np.stack([self._evaluate_one(c) for c in coefficients])

    @contextlib.contextmanager
    def _restoring_center(self) -> Iterator[None]:
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in self.model.state_dict().items():
                    v.copy_(self._saved_state[k])
                if self.folded is not None:
                    self.folded.refold()

    def _evaluate_one(self, coefficients: np.ndarray) -> np.ndarray:
        self._write_point(coefficients)
        if self.spec.bn == "recompute":
            self._recompute_batchnorm()
        if self.folded is not None:
            self.folded.refold()
        results = []
        for images in self.datasets.values():
            loss, correct = self._run(self.forward, images, points=1)
            results.append([loss[0] / len(images), 100.0 * correct[0] / len(images)])
        return np.asarray(results, dtype=np.float64)

    def _write_point(self, coefficients: np.ndarray) -> None:
        """targets ← θ* + Σ c_k d_k, written into the model's own tensors."""
        if not self.targets:
            return
        torch._foreach_copy_(self.targets, self.center)
        for c, direction in zip(coefficients, self.directions):
            if c != 0.0:
                torch._foreach_add_(self.targets, torch._foreach_mul(direction, float(c)))

    def _recompute_batchnorm(self) -> None:
        assert self.bn_set is not None
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        self.model.train()
        try:
            with self._autocast():
                for start in range(0, len(self.bn_set), self.spec.bn_batch_size):
                    x = self._normalized(self.bn_set.images[start:start + self.spec.bn_batch_size])
                    if len(x) > 1:
                        self.model(x)
        finally:
            self.model.eval()
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum

    def _evaluate_batched(self, coefficients: np.ndarray) -> np.ndarray:
        """Several points in one vmapped forward pass over stacked weights."""
        points = len(coefficients)
        coeffs = torch.as_tensor(coefficients, dtype=torch.float32, device=self.device)
        stacked: dict[str, torch.Tensor] = {}
        for name, center, *dirs in zip(self.moving, self.center, *self.directions):
            shape = (points,) + (1,) * center.dim()
            value = center.unsqueeze(0).expand(points, *center.shape)
            for k, d in enumerate(dirs):
                value = value + coeffs[:, k].view(shape) * d.unsqueeze(0)
            stacked[name] = value
        if self.folded is not None:
            batched, constant = self.folded.functional_state(stacked)
            module = self.folded.module
        else:
            module = self.model
            constant = {k: v for k, v in module.state_dict().items() if k not in stacked}
            batched = stacked

        def forward_one(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(module, {**constant, **weights}, (x,))

        forward = torch.func.vmap(forward_one, in_dims=(0, None))
        results = np.zeros((points, len(self.datasets), 2))
        for s, images in enumerate(self.datasets.values()):
            loss, correct = self._run(lambda x: forward(batched, x), images, points)
            results[:, s, 0] = loss / len(images)
            results[:, s, 1] = 100.0 * correct / len(images)
        return results

    def _run(self, forward: Callable[[torch.Tensor], torch.Tensor], images: ImageSet,
             points: int) -> tuple[np.ndarray, np.ndarray]:
        """Summed cross-entropy and number of correct predictions over `images`, for `points` stacked outputs."""
        loss_sum = torch.zeros(points, dtype=torch.float64, device=self.device)
        correct = torch.zeros(points, dtype=torch.int64, device=self.device)
        for start in range(0, len(images), self.options.batch_size):
            x = self._normalized(images.images[start:start + self.options.batch_size])
            y = images.labels[start:start + self.options.batch_size]
            with self._autocast():
                logits = forward(x)
            logits = logits.float().reshape(points, len(y), -1)
            losses = F.cross_entropy(logits.flatten(0, 1), y.repeat(points), reduction="none")
            loss_sum += losses.view(points, -1).sum(1, dtype=torch.float64)
            correct += (logits.argmax(-1) == y).sum(1)
        return loss_sum.cpu().numpy(), correct.cpu().numpy()

    def _normalized(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().mul_(self.scale).add_(self.shift)
        return x.contiguous(memory_format=self.memory_format)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.spec.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class FoldedModel:
    """A traced copy of a model with each BatchNorm that follows a convolution folded into it.

    Modules that are not folded are shared with the original model, so they see its weights as they change;
    `refold()` recomputes the folded convolutions from the original model's current weights and statistics.
    """

    module: torch.fx.GraphModule
    pairs: list[tuple[str, nn.Conv2d, str, nn.modules.batchnorm._BatchNorm, nn.Conv2d]]

    @torch.no_grad()
    def refold(self) -> None:
        for _, conv, _, bn, fused in self.pairs:
            weight, bias = fold_conv_bn(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                                        bn.running_var, bn.eps)
            fused.weight.copy_(weight)
            fused.bias.copy_(bias)

    def functional_state(self, stacked: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                            dict[str, torch.Tensor]]:
        """The folded module's tensors for stacked original tensors: (batched ones, constant ones)."""
        batched = dict(stacked)
        constant = {k: v for k, v in self.module.state_dict().items() if k not in stacked}
        for conv_name, conv, bn_name, bn, _ in self.pairs:
            def get(module_name: str, attr: str, module: nn.Module) -> torch.Tensor | None:
                return stacked.get(f"{module_name}.{attr}", getattr(module, attr))
            weight, bias = fold_conv_bn(get(conv_name, "weight", conv), get(conv_name, "bias", conv),
                                        get(bn_name, "weight", bn), get(bn_name, "bias", bn),
                                        get(bn_name, "running_mean", bn), get(bn_name, "running_var", bn), bn.eps)
            for attr in ("weight", "bias"):
                batched.pop(f"{conv_name}.{attr}", None)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                batched.pop(f"{bn_name}.{attr}", None)
            for attr, value in (("weight", weight), ("bias", bias)):
                key = f"{conv_name}.{attr}"
                (batched if value.dim() > (4 if attr == "weight" else 1) else constant)[key] = value
        return batched, constant


def fold_conv_bn(weight: torch.Tensor, bias: torch.Tensor | None, gamma: torch.Tensor | None,
                 beta: torch.Tensor | None, mean: torch.Tensor, var: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of conv followed by eval-mode BN as one conv; broadcasts over a leading points axis."""
    scale = torch.rsqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    folded_weight = weight * scale[..., None, None, None]
    folded_bias = (-mean if bias is None else bias - mean) * scale
    if beta is not None:
        folded_bias = folded_bias + beta
    return folded_weight, folded_bias


def fold_batchnorm(model: nn.Module) -> FoldedModel | None:
    """Trace `model` and fold every Conv2d→BatchNorm2d pair; None when the model cannot be traced or has none."""
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:
        return None
    modules = dict(traced.named_modules())
    pairs = []
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        producer = node.args[0]
        if not (isinstance(producer, torch.fx.Node) and producer.op == "call_module"
                and type(modules.get(producer.target)) is nn.Conv2d and len(producer.users) == 1):
            continue
        conv, bn = modules[producer.target], modules[node.target]
        if bn.running_mean is None or conv.padding_mode != "zeros":
            continue
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True, device=conv.weight.device)
        fused = fused.to(memory_format=torch.channels_last) if conv.weight.is_contiguous(
            memory_format=torch.channels_last) and conv.weight.dim() == 4 else fused
        fused.requires_grad_(False)
        _set_submodule(traced, producer.target, fused)
        node.replace_all_uses_with(producer)
        traced.graph.erase_node(node)
        pairs.append((producer.target, conv, node.target, bn, fused))
    if not pairs:
        return None
    traced.graph.lint()
    traced.recompile()
    folded = FoldedModel(traced.eval(), pairs)
    folded.refold()
    return folded


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)
