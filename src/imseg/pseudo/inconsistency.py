"""The inconsistency mask (docs/method.md §6): where an ensemble of teachers disagrees.

All functions work on whole batches of teacher labels ``(T, B, L, H, W)``
(uint8, the in-memory encoding of :mod:`imseg.tasks`, as ``Task.to_label``
gives them) and return tensors on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imseg.tasks import IM_CLASS, VOID, Task


@dataclass
class Inconsistency:
    """The agreed label and the inconsistency mask of a batch.

    ``label``: uint8 ``(B, L, H, W)``: binary/multilabel 1 where every teacher
    says 1 (per channel); multiclass the agreed class where all agree, else
    ``IM_CLASS``. ``mask``: bool ``(B, 1, H, W)``, True where teachers disagree
    (multilabel: the union over channels).
    """

    label: torch.Tensor
    mask: torch.Tensor


def agreement(task: Task, teacher_labels: torch.Tensor) -> Inconsistency:
    """Agreed label and raw inconsistency mask of ``T`` teachers' labels."""
    if teacher_labels.ndim != 5:
        raise ValueError("teacher labels must be (teachers, batch, channels, H, W)")
    n = teacher_labels.shape[0]
    if task.kind == "multiclass":
        first = teacher_labels[0]
        agree = (teacher_labels == first).all(dim=0)  # (B, 1, H, W)
        label = torch.where(agree, first, torch.full_like(first, IM_CLASS))
        return Inconsistency(label, ~agree)
    votes = teacher_labels.to(torch.int16).sum(dim=0)  # (B, L, H, W)
    label = (votes == n).to(torch.uint8)
    mask = ((votes > 0) & (votes < n)).any(dim=1, keepdim=True)
    return Inconsistency(label, mask)


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary erosion of a bool ``(B, 1, H, W)`` mask with a ``size×size`` square (0 = off)."""
    if size <= 1:
        return mask
    return ~dilate(~mask, size)


def dilate(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary dilation of a bool ``(B, 1, H, W)`` mask with a ``size×size`` square (0 = off)."""
    if size <= 1:
        return mask
    if size % 2 == 0:
        raise ValueError(f"morphology kernel sizes must be odd, not {size}")
    return F.max_pool2d(mask.float(), size, stride=1, padding=size // 2) > 0


def refine(mask: torch.Tensor, erode_size: int = 0, dilate_size: int = 0) -> torch.Tensor:
    """Optional erosion, then dilation, of the IM (the reference's default: both off)."""
    return dilate(erode(mask, erode_size), dilate_size)


def block(
    task: Task,
    images: torch.Tensor,
    label: torch.Tensor,
    mask: torch.Tensor,
    block_input: bool = True,
    block_output: bool = True,
    ignore: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the uncertainty from an input/pseudo-label pair.

    Block input: image pixels under the IM become 0 (black). Block output: the
    label under the IM becomes background (binary, multilabel) or the IM class
    0 (multiclass), the reference's choice; with ``ignore`` it becomes ``VOID``
    instead, so those pixels leave the loss.
    """
    if block_input:
        images = images.masked_fill(mask, 0)
    if block_output or ignore:
        fill = VOID if ignore else (IM_CLASS if task.kind == "multiclass" else 0)
        label = label.masked_fill(mask.expand_as(label), fill)
    return images, label


def binary_keep(label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary filter: keep a pair only if its agreed positive area is > 0 and > the IM area."""
    positive = (label == 1).flatten(1).sum(dim=1)
    im_area = mask.flatten(1).sum(dim=1)
    return (positive > 0) & (positive > im_area)


def im_fraction(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels under the IM, per image ``(B,)``."""
    return mask.flatten(1).float().mean(dim=1)
