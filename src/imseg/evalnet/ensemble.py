"""Batched EvalNet inference: one net or an ensemble, averaged, scored per mask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imseg.config import AmpMode
from imseg.evalnet.targets import encode_masks, mask_channels, per_class, predicted_score
from imseg.models import EvalNet
from imseg.storage import load_checkpoint
from imseg.tasks import Task
from imseg.training.inference import autocast


@dataclass
class Prediction:
    """Averaged EvalNet outputs per mask (float32, CPU)."""

    score: torch.Tensor
    """(N,) the mask's predicted headline IoU."""
    iou: torch.Tensor
    """(N,) or, per class, (N, K)."""
    present: torch.Tensor | None = None
    """(N, K) predicted presence of each class (per-class nets only)."""


def build_evalnet(task: Task, image_channels: int, alpha: float, bn_momentum: float,
                  generator: torch.Generator | None = None) -> EvalNet:
    """The EvalNet variant for ``task``: one IoU (binary) or per-class (iou, present)."""
    k = task.n_classes if per_class(task) else 1
    return EvalNet(image_channels, mask_channels(task), k, alpha, per_class(task),
                   bn_momentum=bn_momentum, generator=generator)


def net_inputs(task: Task, images: torch.Tensor, masks: torch.Tensor, device: torch.device,
               channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and labels → the float inputs of an EvalNet on ``device``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = images.to(device).float().contiguous(memory_format=fmt)
    m = encode_masks(task, masks.to(device)).contiguous(memory_format=fmt)
    return x, m


def forward(net: nn.Module, task: Task, x: torch.Tensor,
            m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(iou, present)`` of one net; ``present`` is None for the binary variant."""
    out = net(x, m)
    if per_class(task):
        return out[0].float(), out[1].float()
    return out.float(), None


@torch.no_grad()
def predict(nets: list[nn.Module], task: Task, images: torch.Tensor, masks: torch.Tensor,
            device: torch.device, batch_size: int = 64, amp: AmpMode | bool = True,
            index: torch.Tensor | None = None) -> Prediction:
    """Mean outputs of ``nets`` for every (image, mask) pair, in batches.

    ``images`` uint8; mask ``i`` belongs to image ``index[i]`` (or ``i``).
    """
    if not nets:
        raise ValueError("an EvalNet ensemble needs at least one net")
    for net in nets:
        net.eval()
    scores, ious, presents = [], [], []
    for s in range(0, masks.shape[0], batch_size):
        sl = slice(s, min(masks.shape[0], s + batch_size))
        img = images[index[sl]] if index is not None else images[sl]
        x, m = net_inputs(task, img, masks[sl], device)
        with autocast(device, amp):
            outs = [forward(net, task, x, m) for net in nets]
        iou = torch.stack([o[0] for o in outs]).mean(0)
        present = torch.stack([o[1] for o in outs]).mean(0) if outs[0][1] is not None else None
        scores.append(predicted_score(task, masks[sl].to(device), iou, present).cpu())
        ious.append(iou.cpu())
        if present is not None:
            presents.append(present.cpu())
    k = task.n_classes if per_class(task) else None
    empty = torch.empty((0, k) if k else (0,))
    return Prediction(
        torch.cat(scores) if scores else torch.empty(0),
        torch.cat(ious) if ious else empty,
        (torch.cat(presents) if presents else empty) if per_class(task) else None,
    )


def load_evalnet(path: Path) -> EvalNet:
    """An EvalNet rebuilt from its checkpoint."""
    ckpt = load_checkpoint(path)
    spec = ckpt["model"]
    net = EvalNet(spec["image_channels"], spec["mask_channels"], spec["n_classes"],
                  spec["alpha"], spec["per_class"], bn_momentum=spec["bn_momentum"])
    net.load_state_dict(ckpt["state_dict"])
    return net


def checkpoint_spec(net: EvalNet, bn_momentum: float) -> dict:
    """What :func:`load_evalnet` needs to rebuild ``net``."""
    return {"kind": "evalnet", "image_channels": net.image_channels,
            "mask_channels": net.mask_channels, "n_classes": net.n_classes,
            "alpha": net.alpha, "per_class": net.per_class, "bn_momentum": bn_momentum}


@dataclass
class EvalNetEnsemble:
    """The kept EvalNets of one kind and run, ready to score (image, mask) pairs."""

    nets: list[nn.Module]
    task: Task
    device: torch.device
    batch_size: int = 64
    amp: AmpMode | bool = True

    def predict(self, images: torch.Tensor, masks: torch.Tensor,
                index: torch.Tensor | None = None) -> Prediction:
        return predict(self.nets, self.task, images, masks, self.device, self.batch_size,
                       self.amp, index)

    def score(self, images: torch.Tensor, masks: torch.Tensor,
              index: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) predicted IoU of each mask for its image."""
        return self.predict(images, masks, index).score
