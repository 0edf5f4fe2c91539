"""HeLa metrics (docs/method.md §7): IoU over alive/dead (the paper's headline) and cell-count error.

Labels are the in-memory multilabel encoding ``(N, 3, H, W)`` uint8 with the
channels ``alive, dead, position`` (0/1, ``VOID`` ignored).

* IoU per image and channel, over the pixels whose target is not ``VOID``; a
  channel empty in both truth and prediction scores 1.0 (docs/decisions.md, fault 13). ``miou_ad``
  averages alive and dead over images, then over the two channels; ``miou_all``
  the same over all three.
* Cell count: cells are the connected components (8-connected) of the position
  channel after a 3×3 erosion, which splits discs joined by a thin bridge and
  drops specks smaller than 3×3, as the reference does. A cell is alive when
  more alive than dead pixels lie under its blob, dead when more dead ones,
  otherwise unclear (counted as neither, like the reference). Pixels where any
  target channel is ``VOID`` are cleared in prediction and truth before
  counting. ``count_error`` is the mean over images of
  ``|Δalive| + |Δdead|``; ``count_error_rel`` divides each image's error by its
  true cell count (at least 1) before averaging.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from imseg.tasks import VOID

ALIVE, DEAD, POSITION = 0, 1, 2
_EIGHT = np.ones((3, 3), dtype=bool)


def channel_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image and channel IoU ``(N, C)`` (float64), void excluded, empty/empty = 1."""
    valid = target != VOID
    truth = target == 1
    predicted = (pred == 1) & valid
    inter = (truth & predicted).sum((2, 3)).double()
    union = (truth | predicted).sum((2, 3)).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def count_cells(
    alive: np.ndarray, dead: np.ndarray, position: np.ndarray, erode: int = 3
) -> tuple[int, int, int]:
    """``(alive, dead, unclear)`` cell counts of one image from bool ``H×W`` masks."""
    blobs = position.astype(bool)
    if erode > 1:
        blobs = ndimage.binary_erosion(blobs, structure=np.ones((erode, erode), dtype=bool))
    labels, n = ndimage.label(blobs, structure=_EIGHT)
    if n == 0:
        return 0, 0, 0
    flat = labels.ravel()
    n_alive = np.bincount(flat, weights=alive.ravel().astype(np.float64), minlength=n + 1)[1:]
    n_dead = np.bincount(flat, weights=dead.ravel().astype(np.float64), minlength=n + 1)[1:]
    a = int((n_alive > n_dead).sum())
    d = int((n_dead > n_alive).sum())
    return a, d, n - a - d


def _counts(labels: np.ndarray, keep: np.ndarray, erode: int) -> np.ndarray:
    """``(N, 2)`` alive/dead counts of a batch of 0/1 labels, pixels outside ``keep`` cleared."""
    on = (labels == 1) & keep[:, None]
    return np.array(
        [count_cells(img[ALIVE], img[DEAD], img[POSITION], erode)[:2] for img in on],
        dtype=np.int64,
    ).reshape(-1, 2)


class CellCountAccumulator:
    """The cell-count errors over any number of batches (``test_metrics: [cell_count]``):
    ``count_error``, ``count_error_alive``, ``count_error_dead``, ``count_error_rel``."""

    KEYS = ("count_error", "count_error_alive", "count_error_dead", "count_error_rel")

    def __init__(self, erode: int = 3) -> None:
        self.erode = erode
        self.delta = np.zeros(2, dtype=np.int64)  # summed |Δalive|, |Δdead|
        self.relative = 0.0
        self.n_images = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if target.ndim != 4 or target.shape[1] != 3 or pred.shape != target.shape:
            raise ValueError(f"cell counts need (N, 3, H, W) labels, got prediction "
                             f"{tuple(pred.shape)} and target {tuple(target.shape)}")
        t = target.detach().cpu().numpy()
        keep = (t != VOID).all(1)
        true_counts = _counts(t, keep, self.erode)
        delta = np.abs(_counts(pred.detach().cpu().numpy(), keep, self.erode) - true_counts)
        self.delta += delta.sum(0)
        self.relative += float((delta.sum(1) / np.maximum(true_counts.sum(1), 1)).sum())
        self.n_images += int(t.shape[0])

    def compute(self) -> dict:
        if self.n_images == 0:
            return dict.fromkeys(self.KEYS, math.nan)
        alive, dead = (float(v) / self.n_images for v in self.delta)
        return {"count_error": alive + dead, "count_error_alive": alive,
                "count_error_dead": dead, "count_error_rel": self.relative / self.n_images}


def hela_scores(pred: torch.Tensor, target: torch.Tensor, erode: int = 3) -> dict:
    """IoU and cell-count metrics of predicted against true HeLa labels (see module doc).

    Returns plain floats: ``miou_ad``, ``miou_all``, ``iou_alive``, ``iou_dead``,
    ``iou_position``, ``count_error``, ``count_error_alive``, ``count_error_dead``,
    ``count_error_rel``, and ``n_images``. With no images every score is NaN.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    if target.ndim != 4 or target.shape[1] != 3:
        raise ValueError(f"HeLa labels must be (N, 3, H, W), got {tuple(target.shape)}")
    n = int(target.shape[0])
    keys = ("miou_ad", "miou_all", "iou_alive", "iou_dead", "iou_position")
    if n == 0:
        return {**dict.fromkeys(keys, math.nan), **CellCountAccumulator().compute(),
                "n_images": 0}
    class_iou = channel_iou(pred, target).mean(0)
    counts = CellCountAccumulator(erode)
    counts.update(pred, target)
    return {
        "miou_ad": float(class_iou[[ALIVE, DEAD]].mean()),
        "miou_all": float(class_iou.mean()),
        "iou_alive": float(class_iou[ALIVE]),
        "iou_dead": float(class_iou[DEAD]),
        "iou_position": float(class_iou[POSITION]),
        **counts.compute(),
        "n_images": n,
    }
