"""S tiny U-Nets of the same shape as one network with grouped convolutions.

The models of a stage (a benchmark's candidates, a generation's students) share
their layer plan and differ only in their weights, seed and batches. Stacked
as one module whose convolutions have ``groups = S``, one forward and one
backward run all S of them, which is what keeps a GPU busy where a single tiny
U-Net is launch-bound.

Layout: model ``k`` owns channel group ``k`` everywhere. The input is
``(b, S·C, H, W)`` with model ``k``'s images in channels ``k·C .. (k+1)·C - 1``
(:func:`stack_inputs`), the output ``(b, S·out, H, W)`` splits back into S
logit maps (:func:`split_outputs`). Every layer of :class:`TinyUNet` keeps the
groups apart: grouped convs, BatchNorm per channel (so per model), and
pooling, nearest upsampling, ReLU and the additive skips act per channel.

The grouped net is a copy of a :class:`TinyUNet` with its convs and
BatchNorms widened, run by TinyUNet's own ``forward``, so its quirks (input
scaled by 1/255 in the weights' dtype, the float32 head under autocast, the
size checks) are the same code. Its state dict has TinyUNet's keys, each
tensor the S models' tensors concatenated along dim 0, so
:meth:`GroupedUNet.model_state` gives back an ordinary single-model state dict.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from imseg.models.checkpoint import SMP, ModelSpec
from imseg.models.unet import TinyUNet


def _spec(net: TinyUNet) -> tuple:
    """What must agree between nets for them to be stacked."""
    bn = [(m.eps, m.momentum) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    shapes = [(name, tuple(t.shape)) for name, t in net.state_dict().items()]
    return net.in_channels, net.out_channels, net.alpha, net.kernel_size, bn, shapes


def why_spec_not_groupable(spec: ModelSpec) -> str | None:
    """Why nets built from ``spec`` cannot be grouped (asked before building S of them)."""
    return f"{spec.name} is an smp model" if spec.kind == SMP else None


def why_not_groupable(nets: Sequence[nn.Module]) -> str | None:
    """Why ``nets`` cannot be stacked into one :class:`GroupedUNet`, or None when they can."""
    if not nets:
        return "no nets"
    kinds = sorted({type(net).__name__ for net in nets if not isinstance(net, TinyUNet)})
    if kinds:
        return f"only TinyUNet models can be grouped, got {', '.join(kinds)}"
    first = _spec(nets[0])  # type: ignore[arg-type]
    for k, net in enumerate(nets[1:], start=1):
        if _spec(net) != first:  # type: ignore[arg-type]
            return f"net {k} differs from net 0 in shape or settings"
    return None


def _widened(template: TinyUNet, models: int) -> TinyUNet:
    """A copy of ``template`` whose convs are grouped ``models`` ways and BatchNorms
    ``models`` times wider (weights left uninitialised: they are loaded next)."""
    net = copy.deepcopy(template)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                if child.groups != 1 or child.padding_mode != "zeros":
                    raise ValueError(f"cannot group conv {name!r} ({child})")
                wide: nn.Module = nn.Conv2d(
                    models * child.in_channels, models * child.out_channels, child.kernel_size,
                    stride=child.stride, padding=child.padding, dilation=child.dilation,
                    groups=models, bias=child.bias is not None,
                )
            elif isinstance(child, nn.BatchNorm2d):
                wide = nn.BatchNorm2d(models * child.num_features, eps=child.eps,
                                      momentum=child.momentum, affine=child.affine,
                                      track_running_stats=child.track_running_stats)
            elif any(True for _ in child.parameters(recurse=False)) or any(
                    True for _ in child.buffers(recurse=False)):
                raise ValueError(f"cannot group layer {name!r} of type {type(child).__name__}")
            else:
                continue
            setattr(parent, name, wide)
    net.in_channels = models * template.in_channels
    net.out_channels = models * template.out_channels
    return net


class GroupedUNet(nn.Module):
    """``models`` tiny U-Nets of one shape as one module (layout: module docstring).

    Build it with :meth:`from_nets`; read model ``k``'s weights back with
    :meth:`model_state`.
    """

    def __init__(self, template: TinyUNet, models: int) -> None:
        super().__init__()
        if models < 1:
            raise ValueError(f"a grouped U-Net needs at least one model, got {models}")
        self.models = models
        self.in_channels = template.in_channels
        self.out_channels = template.out_channels
        self.net = _widened(template, models)

    @classmethod
    def from_nets(cls, nets: Sequence[TinyUNet]) -> GroupedUNet:
        """The S nets stacked, each keeping its own weights and BatchNorm statistics."""
        reason = why_not_groupable(nets)
        if reason is not None:
            raise ValueError(f"cannot group these nets: {reason}")
        grouped = cls(nets[0], len(nets))
        param = next(nets[0].parameters())
        grouped.to(device=param.device, dtype=param.dtype)
        grouped.load_model_states([net.state_dict() for net in nets])
        return grouped

    def load_model_states(self, states: Sequence[dict]) -> None:
        """Set every model's weights and buffers from single-model state dicts."""
        if len(states) != self.models:
            raise ValueError(f"{len(states)} state dicts for {self.models} models")
        stacked = {key: first if first.dim() == 0 else torch.cat([s[key] for s in states])
                   for key, first in states[0].items()}
        self.net.load_state_dict(stacked)

    def model_state(self, k: int) -> dict:
        """Model ``k``'s state dict, as a :class:`TinyUNet` of the template's shape has it
        (detached copies; scalar buffers such as ``num_batches_tracked`` are shared)."""
        if not 0 <= k < self.models:
            raise IndexError(f"model {k} of {self.models}")
        return {key: (t if t.dim() == 0 else t.chunk(self.models)[k]).detach().clone()
                for key, t in self.net.state_dict().items()}

    def model_states(self) -> list[dict]:
        return [self.model_state(k) for k in range(self.models)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked logits ``(b, S·out, H, W)`` for stacked images ``(b, S·C, H, W)`` in 0..255."""
        return self.net(x)


def stack_inputs(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """S batches ``(b, C, H, W)``, one per model, as the grouped input ``(b, S·C, H, W)``."""
    return torch.cat(list(images), dim=1)


def split_outputs(logits: torch.Tensor, models: int) -> tuple[torch.Tensor, ...]:
    """Grouped logits ``(b, S·out, H, W)`` → S logit maps ``(b, out, H, W)`` (views)."""
    return logits.chunk(models, dim=1)
