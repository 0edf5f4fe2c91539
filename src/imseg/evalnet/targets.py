"""What an EvalNet sees (the mask encoding) and what it must predict (the targets).

Mask input, one float channel per thing the label can say:

* binary: 1 channel, 1.0 on foreground;
* multilabel: C channels, 1.0 where the channel is on;
* multiclass: one-hot over the C + 1 label values (channel 0 = the IM class).

``VOID`` pixels are 0 in every channel.

Targets: binary data has one number per mask, its IoU against the truth
(:func:`imseg.evaluation.metrics.iou_of_masks`). Multilabel and multiclass
data has, per class, the IoU and whether the class is present in the truth;
the mask's **score** is the mean IoU over the classes present in the truth or
in the mask (1.0 when there is none), only the task's headline classes
counting. For multiclass this is exactly the per-image headline IoU of the
metrics module. A predicted score uses the same rule with the predicted
presence in place of the truth's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imseg.evaluation.metrics import headline_only, image_scores, iou_of_masks
from imseg.tasks import Task


def per_class(task: Task) -> bool:
    """Whether the task's EvalNet is the per-class ``(iou, present)`` variant."""
    return task.kind != "binary"


def mask_channels(task: Task) -> int:
    """Channels of the encoded mask input."""
    return task.out_channels


def encode_masks(task: Task, labels: torch.Tensor) -> torch.Tensor:
    """uint8 labels ``(N, L, H, W)`` → float mask input ``(N, mask_channels, H, W)``."""
    if task.kind != "multiclass":
        return (labels == 1).float()
    values = labels[:, 0].long()
    valid = values <= task.n_classes
    onehot = F.one_hot(values.where(valid, 0), task.out_channels)  # (N, H, W, C+1)
    onehot = onehot * valid.unsqueeze(-1)
    return onehot.permute(0, 3, 1, 2).float().contiguous()


def mask_classes(task: Task, labels: torch.Tensor) -> torch.Tensor:
    """bool ``(N, K)``: which scored classes appear in each label (VOID and IM excluded)."""
    if task.kind == "multiclass":
        flat = labels[:, 0].flatten(1)
        return torch.stack([(flat == k).any(1) for k in task.eval_classes], dim=1)
    return (labels == 1).flatten(2).any(2)


def present_mean(iou: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``iou`` over the ``valid`` classes of each row, 1.0 for rows without any."""
    n = valid.sum(1)
    mean = (iou * valid).sum(1) / n.clamp_min(1)
    return torch.where(n > 0, mean, torch.ones_like(mean))


@dataclass
class Targets:
    """What the EvalNet learns for each mask; ``class_iou``/``present`` only per class."""

    score: torch.Tensor
    """(N,) float: the mask's headline IoU against the truth."""
    class_iou: torch.Tensor | None = None
    """(N, K) float: per-class IoU (1.0 where the class is in neither truth nor mask)."""
    present: torch.Tensor | None = None
    """(N, K) float 0/1: the class is present in the truth."""

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def index(self, idx: torch.Tensor) -> Targets:
        return Targets(*(None if t is None else t[idx] for t in self._parts()))

    def to(self, device: torch.device) -> Targets:
        return Targets(*(None if t is None else t.to(device) for t in self._parts()))

    def _parts(self) -> tuple:
        return self.score, self.class_iou, self.present

    @staticmethod
    def cat(parts: list[Targets]) -> Targets:
        cols = list(zip(*(p._parts() for p in parts), strict=True))
        return Targets(*(None if col[0] is None else torch.cat(col) for col in cols))


def targets_of(task: Task, masks: torch.Tensor, truth: torch.Tensor) -> Targets:
    """The targets of candidate ``masks`` against their ``truth`` (same shape, same device)."""
    if not per_class(task):
        return Targets(iou_of_masks(task, masks, truth))
    iou, _, valid = image_scores(task, masks, truth)
    if task.kind == "multiclass":
        iou = torch.where(valid, iou, torch.ones_like(iou))
    present = mask_classes(task, truth)
    score = present_mean(iou, headline_only(task, present | mask_classes(task, masks)))
    return Targets(score, iou, present.float())


def predicted_score(task: Task, masks: torch.Tensor, iou: torch.Tensor,
                    present: torch.Tensor | None) -> torch.Tensor:
    """A mask's score from EvalNet outputs: the IoU itself, or (per class) the mean
    predicted IoU over classes predicted present or found in the mask."""
    if present is None:
        return iou
    return present_mean(iou, headline_only(task, (present > 0.5) | mask_classes(task, masks)))
