"""EvalNet training data, built in memory and in batches (docs/method.md §6 "EvalNet training data").

Both kinds start from the same step, :func:`stage_labels` (every stage model's
label for every image, predicted in batches), and end in the same step,
:func:`targets_in_chunks` (each candidate mask's true IoU against the truth):

* :func:`prediction_data` (the EvalNet approach): every model's mask on every
  image, plus the true masks at IoU 1 for training;
* :func:`im_data` (IM++): ``loops`` inconsistency-masked pairs per image, each
  from 2–4 random models with a random 0/3/5 erosion and dilation of the IM,
  input and output blocked, and half of the pairs augmented. The augmentation
  moves image, pseudo label and truth together *before* the IoU is computed, so
  a mask is always scored against the truth of the image it is paired with
  (the reference paired masks of augmented images with the originals).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from imseg.config import AmpMode
from imseg.data.augment import AugmentParams, augment_pairs
from imseg.data.dataset import Split
from imseg.evalnet.targets import Targets, targets_of
from imseg.pseudo.inconsistency import agreement, block, refine
from imseg.tasks import Task
from imseg.training.inference import predict_batches

MORPH_SIZES = (0, 3, 5)
"""Erosion / dilation kernel sizes drawn for the IM++ data (0 = off)."""

SUBSET_SIZES = (2, 4)
"""IM++ data: an IM is built from this many (inclusive range) random stage models."""


@dataclass
class EvalNetData:
    """Candidate masks, the images they belong to, and their targets (all on CPU).

    ``index`` maps each mask to its image, so the EvalNet approach's twenty
    masks of one image share one stored image.
    """

    images: torch.Tensor
    """uint8 ``(I, C, H, W)``."""
    index: torch.Tensor
    """long ``(N,)``: the image of each mask."""
    masks: torch.Tensor
    """uint8 ``(N, L, H, W)`` labels in the in-memory encoding."""
    targets: Targets

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Targets]:
        """Images, masks and targets of the rows ``idx``."""
        return self.images[self.index[idx]], self.masks[idx], self.targets.index(idx)


@torch.no_grad()
def stage_labels(task: Task, models: list[nn.Module], images: torch.Tensor,
                 device: torch.device, batch_size: int = 64, amp: AmpMode | bool = True) -> torch.Tensor:
    """uint8 ``(T, N, L, H, W)`` on CPU: every model's label of every image."""
    n, (h, w) = images.shape[0], images.shape[-2:]
    out = torch.empty((len(models), n, task.label_channels, h, w), dtype=torch.uint8)
    for sl, probs in predict_batches(models, images, task, device, batch_size, amp):
        out[:, sl] = task.to_label(probs.flatten(0, 1)).unflatten(0, probs.shape[:2]).cpu()
    return out


def targets_in_chunks(task: Task, masks: torch.Tensor, truth: torch.Tensor,
                      index: torch.Tensor, device: torch.device, chunk: int = 256) -> Targets:
    """Targets of ``masks`` against ``truth[index]``, a chunk at a time on ``device``."""
    parts = [
        targets_of(task, masks[s : s + chunk].to(device),
                   truth[index[s : s + chunk]].to(device)).to(torch.device("cpu"))
        for s in range(0, masks.shape[0], chunk)
    ]
    return Targets.cat(parts)


def prediction_data(task: Task, labels: torch.Tensor, split: Split, with_truth: bool,
                    device: torch.device) -> EvalNetData:
    """Every model's mask of every image of ``split`` (and its true masks at IoU 1)."""
    if split.labels is None:
        raise ValueError("EvalNet data needs a split with true masks")
    t, n = labels.shape[:2]
    masks = labels.flatten(0, 1)
    index = torch.arange(n).repeat(t)
    if with_truth:
        masks = torch.cat([masks, split.labels])
        index = torch.cat([index, torch.arange(n)])
    targets = targets_in_chunks(task, masks, split.labels, index, device)
    return EvalNetData(split.images, index, masks, targets)


# ------------------------------------------------------------------------ IM++ data
@dataclass(frozen=True)
class Blocking:
    """How the loop blocks IM pairs, so the EvalNet learns on pairs made the same way."""

    block_input: bool = True
    block_output: bool = True
    ignore: bool = False


def subset_agreement(task: Task, labels: torch.Tensor, sizes: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Agreed label and IM of each image from its own ``sizes[b]`` random models.

    ``labels`` ``(T, B, L, H, W)``; returns ``(B, L, H, W)`` labels and bool
    ``(B, 1, H, W)`` masks. Images are grouped by subset size, so there is one
    vectorised :func:`agreement` call per size.
    """
    t, b = labels.shape[:2]
    order = torch.rand(b, t, generator=generator).argsort(dim=1)
    label = torch.empty_like(labels[0])
    mask = torch.empty((b, 1, *labels.shape[-2:]), dtype=torch.bool, device=labels.device)
    for s in torch.unique(sizes).tolist():
        rows = (sizes == s).nonzero().squeeze(1)
        chosen = order[rows, :s].T.to(labels.device)  # (s, rows)
        rows = rows.to(labels.device)
        agreed = agreement(task, labels[chosen, rows.unsqueeze(0)])
        label[rows] = agreed.label
        mask[rows] = agreed.mask
    return label, mask


def random_refine(mask: torch.Tensor, erode_sizes: torch.Tensor,
                  dilate_sizes: torch.Tensor) -> torch.Tensor:
    """:func:`refine` with a per-image erosion and dilation size (grouped by size pair)."""
    out = torch.empty_like(mask)
    pairs = torch.stack([erode_sizes, dilate_sizes], dim=1)
    for e, d in torch.unique(pairs, dim=0).tolist():
        rows = ((erode_sizes == e) & (dilate_sizes == d)).nonzero().squeeze(1).to(mask.device)
        out[rows] = refine(mask[rows], e, d)
    return out


def im_pairs(task: Task, labels: torch.Tensor, images: torch.Tensor, truth: torch.Tensor,
             blocking: Blocking, params: AugmentParams,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random IM pair per image: ``(blocked image, blocked label, truth)``, half of
    them augmented (image, label and truth moved together)."""
    t, b = labels.shape[:2]
    lo, hi = min(SUBSET_SIZES[0], t), min(SUBSET_SIZES[1], t)
    sizes = torch.randint(lo, hi + 1, (b,), generator=generator)
    label, mask = subset_agreement(task, labels, sizes, generator)
    choices = torch.tensor(MORPH_SIZES)
    erode_sizes = choices[torch.randint(0, len(MORPH_SIZES), (b,), generator=generator)]
    dilate_sizes = choices[torch.randint(0, len(MORPH_SIZES), (b,), generator=generator)]
    mask = random_refine(mask, erode_sizes, dilate_sizes)
    images, label = block(task, images, label, mask, blocking.block_input,
                          blocking.block_output, blocking.ignore)
    truth = truth.clone()
    rows = (torch.rand(b, generator=generator) < 0.5).nonzero().squeeze(1)
    if rows.numel():
        dev_rows = rows.to(images.device)
        both = torch.cat([label[dev_rows], truth[dev_rows]], dim=1)
        aug_images, aug_both = augment_pairs(images[dev_rows], both, params, generator)
        images = images.index_copy(0, dev_rows, aug_images)
        split_at = label.shape[1]
        label = label.index_copy(0, dev_rows, aug_both[:, :split_at])
        truth = truth.index_copy(0, dev_rows, aug_both[:, split_at:])
    return images, label, truth


def im_data(task: Task, labels: torch.Tensor, split: Split, loops: int, blocking: Blocking,
            params: AugmentParams, generator: torch.Generator, device: torch.device,
            batch_size: int = 64) -> EvalNetData:
    """``loops`` random IM pairs of every image of ``split`` with their true IoU."""
    if split.labels is None:
        raise ValueError("EvalNet data needs a split with true masks")
    n = len(split)
    images, masks, parts = [], [], []
    for _ in range(loops):
        for s in range(0, n, batch_size):
            sl = slice(s, min(n, s + batch_size))
            x, y, truth = im_pairs(task, labels[:, sl].to(device), split.images[sl].to(device),
                                   split.labels[sl].to(device), blocking, params, generator)
            images.append(x.cpu())
            masks.append(y.cpu())
            parts.append(targets_of(task, y, truth).to(torch.device("cpu")))
    masks_t = torch.cat(masks)
    return EvalNetData(torch.cat(images), torch.arange(masks_t.shape[0]), masks_t,
                       Targets.cat(parts))
