"""BatchNorm folded into the preceding convolutions: a traced copy of a model whose Conv2d→BatchNorm2d pairs are
single convolutions, exact up to rounding in eval mode, refolded whenever the original weights change; and
BatchNorm statistics re-estimated from a set of images (`--bn recompute`).

`fold_batchnorm(model)` returns None when there is nothing to fold and raises `NotTraceable` when torch.fx
cannot trace the model (data-dependent control flow, for instance): the caller decides what to do then.
`recompute_batchnorm(model, batches)` sets every BatchNorm's running statistics to those of all the images.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LandscapeError


def constant_tensors(module: nn.Module, moving: Collection[str]) -> dict[str, torch.Tensor]:
    """`module`'s state_dict tensors that stay fixed beside the `moving` ones (given to `functional_call`): all but
    those, and but the names tied to one of them (a shared weight appears under each of its names: given θ* under
    one and the moved values under the other, `functional_call` refuses the pair)."""
    state = module.state_dict(keep_vars=True)
    moved = {id(state[name]) for name in moving if name in state}
    return {k: v.detach() for k, v in state.items() if k not in moving and id(v) not in moved}


def check_running_statistics(model: nn.Module) -> None:
    """Refuse a BatchNorm without running statistics (`track_running_stats=False`): it normalizes each batch by that
    batch's own statistics, in eval mode too, so its loss (and Hessian) would depend on the batch size."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
            module.running_mean is None or module.running_var is None
        ):
            raise LandscapeError(
                f"the model's {name} is a BatchNorm without running statistics (track_running_stats=False): its "
                "loss would depend on --batch-size; give it running statistics"
            )


class NotTraceable(Exception):
    """torch.fx cannot trace the model; `reason` says why (the first line of torch.fx's error)."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"{model} cannot be traced by torch.fx ({reason})")
        self.model, self.reason = model, reason


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
            assert bn.running_mean is not None and bn.running_var is not None and fused.bias is not None
            weight, bias = fold_conv_bn(
                conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps
            )
            fused.weight.copy_(weight)
            fused.bias.copy_(bias)

    def functional_state(
        self, stacked: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The folded module's tensors for stacked original tensors: (batched ones, constant ones)."""
        batched = dict(stacked)
        constant = constant_tensors(self.module, stacked)
        for conv_name, conv, bn_name, bn, _ in self.pairs:

            def get(module_name: str, attr: str, module: nn.Module) -> torch.Tensor | None:
                return stacked.get(f"{module_name}.{attr}", getattr(module, attr))

            weight, bias = fold_conv_bn(
                _present(get(conv_name, "weight", conv)),
                get(conv_name, "bias", conv),
                get(bn_name, "weight", bn),
                get(bn_name, "bias", bn),
                _present(get(bn_name, "running_mean", bn)),
                _present(get(bn_name, "running_var", bn)),
                bn.eps,
            )
            for attr in ("weight", "bias"):
                batched.pop(f"{conv_name}.{attr}", None)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                batched.pop(f"{bn_name}.{attr}", None)
            for attr, value in (("weight", weight), ("bias", bias)):
                key = f"{conv_name}.{attr}"
                (batched if value.dim() > (4 if attr == "weight" else 1) else constant)[key] = value
        return batched, constant


def _present(tensor: torch.Tensor | None) -> torch.Tensor:
    """A tensor that folding needs (the convolution's weight, BN's running statistics): never None here."""
    assert tensor is not None
    return tensor


def fold_conv_bn(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of conv followed by eval-mode BN as one conv; broadcasts over a leading points axis."""
    scale = torch.rsqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    folded_weight = weight * scale[..., None, None, None]
    folded_bias = (-mean if bias is None else bias - mean) * scale
    if beta is not None:
        folded_bias = folded_bias + beta
    return folded_weight, folded_bias


def _hooked(module: nn.Module) -> bool:
    """A module with hooks, or a conv whose weight is no parameter of its own: weight_norm and spectral_norm set
    `weight` in a forward pre-hook from other tensors (weight_g, weight_v), which the fused conv would never run."""
    weight = getattr(module, "weight", None)
    return bool(module._forward_pre_hooks or module._forward_hooks) or (
        weight is not None and not isinstance(weight, nn.Parameter)
    )


def fold_batchnorm(model: nn.Module) -> FoldedModel | None:
    """Trace `model` and fold every Conv2d→BatchNorm2d pair; None when it has no such pair.

    Raises NotTraceable when the model has a BatchNorm2d and torch.fx cannot trace it.
    """
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return None
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as e:  # torch.fx raises TraceError, TypeError, RuntimeError, ... depending on the model
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NotTraceable(type(model).__name__, reason) from e
    modules = dict(traced.named_modules())
    calls = collections.Counter(str(n.target) for n in traced.graph.nodes if n.op == "call_module")
    read = [str(n.target) for n in traced.graph.nodes if n.op == "get_attr"]  # `self.conv.weight` in a forward
    tensors = itertools.chain(
        traced.named_parameters(remove_duplicate=False), traced.named_buffers(remove_duplicate=False)
    )
    names = collections.Counter(id(t) for _, t in tensors)  # a tensor under two names is tied
    pairs = []
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        producer = node.args[0]
        if not (
            isinstance(producer, torch.fx.Node)
            and producer.op == "call_module"
            and type(modules.get(producer.target)) is nn.Conv2d
            and len(producer.users) == 1
            and calls[str(producer.target)] == 1  # a conv called twice: its other calls keep its own weights
        ):
            continue
        conv, bn = modules[producer.target], modules[node.target]
        if bn.running_mean is None or conv.padding_mode != "zeros" or _hooked(conv) or _hooked(bn):
            continue
        if any(t == m or t.startswith(f"{m}.") for t in read for m in (str(producer.target), str(node.target))) or any(
            names[id(t)] > 1 for module in (conv, bn) for t in itertools.chain(module.parameters(), module.buffers())
        ):  # its weights read elsewhere (directly, or tied to another module's): they must stay the unfolded ones
            continue
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=True,
            device=conv.weight.device,
        )
        fused = (
            fused.to(memory_format=torch.channels_last)
            if conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.dim() == 4
            else fused
        )
        fused.requires_grad_(False)
        _set_submodule(traced, str(producer.target), fused)
        node.replace_all_uses_with(producer)
        traced.graph.erase_node(node)
        pairs.append((str(producer.target), conv, str(node.target), bn, fused))
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


def batch_slices(count: int, size: int) -> list[slice]:
    """Consecutive batches of `size` of `count` images; a last batch of one image joins the one before (train-mode
    BatchNorm cannot normalize a single value per channel)."""
    starts = list(range(0, count, size))
    if len(starts) > 1 and count - starts[-1] == 1:
        starts.pop()
    return [slice(start, end) for start, end in zip(starts, starts[1:] + [count])]


@dataclass
class _Moments:
    """Per channel: how many values, their mean and the sum of squared deviations from it, in float64."""

    count: int
    mean: torch.Tensor
    m2: torch.Tensor

    def add(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Pool in the moments of `n` more values per channel: their `mean` and sum of squared deviations `m2`
        (Chan et al.'s parallel update, in float64)."""
        mean, m2 = mean.double(), m2.double()
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total


def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set the running statistics of every BatchNorm of `model` to those of all the images of `batches`.

    Each batch passes through the model in train mode, so that each BatchNorm normalizes it with its own batch
    statistics, as in training (and as `torch.optim.swa_utils.update_bn`). What each BatchNorm sees is pooled over
    all batches, weighted by their sizes: running_mean is the mean over all images (and positions), running_var
    their unbiased variance, PyTorch's convention for running_var (the variance of all values about the pooled mean
    times N/(N-1), N values per channel). The statistics of the first BatchNorm are thus those of one batch of all
    the images, whatever the batch sizes; those of later BatchNorms depend on them through the batch-normalized
    activations before them, as in training. A BatchNorm no image reaches keeps reset statistics (0 and 1).
    Only the BatchNorms are in train mode: dropout and stochastic depth stay off (in eval), so the statistics, and
    the loss, are the same at every call. Refuses fewer than 2 images in all (no variance); every module's mode is
    restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    moments: dict[nn.Module, _Moments] = {}

    def pool(module: nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        # with momentum 1 the running statistics are the batch's own, as BatchNorm just computed them (no second
        # pass over the activations): its mean, and its unbiased variance = m2 / (n - 1)
        n = inputs[0].numel() // inputs[0].shape[1]
        mean, variance = module.running_mean, module.running_var
        assert isinstance(mean, torch.Tensor) and isinstance(variance, torch.Tensor)  # track_running_stats
        if module not in moments:
            zeros = torch.zeros(mean.shape, dtype=torch.float64, device=mean.device)
            moments[module] = _Moments(0, zeros, zeros.clone())
        moments[module].add(n, mean, variance.double() * (n - 1))

    iterator = iter(batches)
    head = list(itertools.islice(iterator, 2))  # enough to know whether there are two images, before any change
    images = sum(len(x) for x in head)
    if images < 2:
        raise LandscapeError(f"--bn recompute needs at least 2 images (got {images}): a variance needs two")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = 1.0
    hooks = [m.register_forward_hook(pool) for m in norms]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for m in norms:
            m.train()
        for x in itertools.chain(head, iterator):
            model(x)
    finally:
        for module, training in modes.items():
            module.training = training
        for hook, m, momentum in zip(hooks, norms, momenta):
            hook.remove()
            m.momentum = momentum
    for m in norms:
        if m in moments:
            assert m.running_mean is not None and m.running_var is not None  # track_running_stats
            pooled = moments[m]
            m.running_mean.copy_(pooled.mean)
            m.running_var.copy_(pooled.m2 / max(pooled.count - 1, 1))


RECOMPUTE_MODE = "batchnorm-only"  # run records: --bn recompute puts only BatchNorms in train mode (not dropout)


def random_in_training(model: nn.Module) -> list[str]:
    """Names of `model`'s modules that draw random numbers in train mode (dropout, stochastic depth, drop path)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ in ("StochasticDepth", "DropPath")
    ]
