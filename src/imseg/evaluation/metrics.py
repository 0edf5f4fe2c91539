"""Segmentation metrics (docs/method.md §7): per-image IoU/Dice and their dataset averages.

All three task kinds are scored from the same three counts per image and scored
class: intersection, predicted area and true area. Pixels whose *target* is
``VOID`` are left out of every count. Everything is vectorised over images and
pixels (only the number of classes may drive a Python loop) and runs on the
device of its inputs.

Conventions (docs/decisions.md, "Metrics"):

* Binary and multilabel: when truth and prediction of a channel are both empty
  in an image, its IoU and Dice count as 1.0; every (image, channel) entry is
  valid. A prediction value other than 1 counts as negative.
* Multiclass: class ``k`` counts in an image only when it is present in the
  truth or the prediction of that image (the reference's "classes present");
  a class found only in the prediction scores 0. Target pixels holding no
  scored class (e.g. the IM class 0) are not void: predicting a class there is
  a false positive. Prediction values outside ``1..C`` match no class.
"""

from __future__ import annotations

import math

import torch

from imseg.evaluation.hela import CellCountAccumulator
from imseg.tasks import VOID, Task

_CHUNK_PIXELS = 1 << 24
"""Pixels processed at once, bounding the memory of the multiclass index tensor."""


TEST_METRICS = {"cell_count": CellCountAccumulator}
"""The accumulators behind :data:`imseg.tasks.TEST_METRICS` (``update``/``compute``)."""


def _check(task: Task, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    if target.ndim != 4 or target.shape[1] != task.label_channels:
        raise ValueError(
            f"labels must be (N, {task.label_channels}, H, W) for a {task.kind} task, "
            f"got {tuple(target.shape)}"
        )
    if pred.device != target.device:
        raise ValueError(f"prediction on {pred.device}, target on {target.device}")


def _counts_channels(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Binary/multilabel counts ``(N, C)``: intersection, predicted, true area."""
    truth = target == 1
    predicted = (pred == 1) & (target != VOID)
    dims = (2, 3)
    return (truth & predicted).sum(dims), predicted.sum(dims), truth.sum(dims)


def _counts_multiclass(
    task: Task, pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Multiclass counts ``(N, C)`` from one per-image confusion matrix (a bincount)."""
    n, c = target.shape[0], task.n_classes
    m = c + 1  # bucket 0: "no scored class"; target bucket m: VOID
    t = target[:, 0].long()
    p = pred[:, 0].long()
    t = torch.where((t >= 1) & (t <= c), t, 0)
    t = torch.where(target[:, 0] == VOID, m, t)
    p = torch.where((p >= 1) & (p <= c), p, 0)
    img = torch.arange(n, device=target.device).view(n, 1, 1)
    idx = (img * (m + 1) + t) * m + p
    conf = torch.bincount(idx.flatten(), minlength=n * (m + 1) * m).view(n, m + 1, m)[:, :m]
    inter = conf.diagonal(dim1=1, dim2=2)[:, 1:]
    return inter, conf[:, :, 1:].sum(1), conf[:, 1:, :].sum(2)


def _counts(task: Task, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Intersection, predicted and true area ``(N, K)`` (int64), in chunks of images."""
    _check(task, pred, target)
    step = max(1, _CHUNK_PIXELS // max(1, math.prod(target.shape[1:])))
    parts = []
    for p, t in zip(pred.split(step), target.split(step), strict=True):
        if task.kind == "multiclass":
            parts.append(_counts_multiclass(task, p, t))
        else:
            parts.append(_counts_channels(p, t))
    return tuple(torch.cat([part[i] for part in parts]).long() for i in range(3))


def _scores(task: Task, inter: torch.Tensor, pa: torch.Tensor, ta: torch.Tensor):
    """IoU, Dice (float64) and valid from counts, by the conventions above."""
    inter, pa, ta = inter.double(), pa.double(), ta.double()
    union = pa + ta - inter
    total = pa + ta
    nonempty = union > 0
    iou = torch.where(nonempty, inter / union.clamp_min(1), 1.0)
    dice = torch.where(nonempty, 2 * inter / total.clamp_min(1), 1.0)
    if task.kind == "multiclass":
        valid = nonempty
        iou, dice = iou * valid, dice * valid
    else:
        valid = torch.ones_like(nonempty)
    return iou, dice, valid


def image_scores(
    task: Task, pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and scored class: IoU ``(N, K)``, Dice ``(N, K)`` and bool ``valid``.

    Invalid entries (multiclass classes absent from both truth and prediction)
    hold 0.
    """
    iou, dice, valid = _scores(task, *_counts(task, pred, target))
    return iou.float(), dice.float(), valid


def _image_mean(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the valid classes of each image, and whether it had any."""
    n_valid = valid.sum(1)
    mean = (values * valid).sum(1) / n_valid.clamp_min(1)
    return mean, n_valid > 0


def headline_only(task: Task, valid: torch.Tensor) -> torch.Tensor:
    """``valid`` with the classes outside the task's headline cleared."""
    if not task.headline:
        return valid
    keep = torch.zeros(valid.shape[1], dtype=torch.bool, device=valid.device)
    keep[list(task.headline)] = True
    return valid & keep


def iou_of_masks(task: Task, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image headline IoU ``(N,)`` (float32), never NaN.

    Binary: foreground IoU; multilabel: mean over channels; multiclass: mean
    over the valid classes, and 1.0 for an image without any (all void); only the
    task's headline classes count.
    """
    iou, _, valid = _scores(task, *_counts(task, pred, target))
    mean, has_any = _image_mean(iou, headline_only(task, valid))
    return torch.where(has_any, mean, 1.0).float()


def _nan_div(num: torch.Tensor, den: torch.Tensor) -> list[float]:
    return [float(a) / float(b) if b > 0 else math.nan for a, b in zip(num, den, strict=True)]


class MetricAccumulator:
    """Sums of per-image scores and pixel counts over any number of batches: the one way
    to score predictions (docs/method.md §7). Binary: foreground IoU and Dice per image;
    multiclass: mIoU over the classes present; multilabel: mean over channels (the
    ``headline`` ones). ``test``: the task's ``test_metrics`` too (the test split's extras,
    e.g. HeLa's cell counts).

    ``compute()`` returns:

    * ``iou`` / ``dice``: the headline. Binary: mean over images of the
      foreground score; multilabel: mean over channels of each channel's mean
      over images; multiclass: mean over images of the mean over that image's
      valid classes (images without a valid class, i.e. all void, are skipped;
      NaN if no image has one). Only the task's headline classes count; where
      they are fewer than all, ``iou_all`` / ``dice_all`` give the same over all.
    * ``class_iou`` / ``class_dice``: per scored class, mean over the images
      where it is valid (NaN when never valid).
    * ``pixel_class_iou``: per class, dataset-level intersection / union
      (Cityscapes style; NaN where the union is 0); ``pixel_miou`` its nanmean.
    * ``n_images``: images seen (a group of images counts as one).
    """

    def __init__(self, task: Task, test: bool = False) -> None:
        self.task = task
        self._state: dict[str, torch.Tensor] | None = None
        self._group_counts: list[torch.Tensor] | None = None  # inter, pa, ta per group id
        self._seen_groups: set[int] = set()
        self.n_images = 0
        self.extras = [TEST_METRICS[name]() for name in (task.test_metrics if test else ())]

    def _zeros(self, device: torch.device) -> dict[str, torch.Tensor]:
        k = len(self.task.eval_classes)
        f = {"dtype": torch.float64, "device": device}
        i = {"dtype": torch.long, "device": device}
        return {
            "iou": torch.zeros(k, **f),
            "dice": torch.zeros(k, **f),
            "valid": torch.zeros(k, **i),
            "img_iou": torch.zeros(2, **f),
            "img_dice": torch.zeros(2, **f),
            "img_valid": torch.zeros(2, **i),
            "inter": torch.zeros(k, **i),
            "union": torch.zeros(k, **i),
        }

    def update(self, pred: torch.Tensor, target: torch.Tensor,
               groups: torch.Tensor | None = None) -> None:
        """Add a batch of predictions and targets (same shape, any batch size).

        ``groups`` (int ``(N,)``): images with one id are scored as one image, their
        counts summed (the tiles of one source image, over any number of batches); an
        accumulator takes groups for every batch or for none."""
        counts = _counts(self.task, pred, target)
        if groups is None:
            self._state = self._add(self._state, *counts)
            self.n_images += int(target.shape[0])
        elif len(groups):
            ids = groups.to(counts[0].device).long()
            size = int(ids.max()) + 1
            if self._group_counts is None:
                self._group_counts = [torch.zeros(size, c.shape[1], dtype=torch.long,
                                                  device=c.device) for c in counts]
            if size > self._group_counts[0].shape[0]:
                self._group_counts = [torch.cat([g, g.new_zeros(size - g.shape[0], g.shape[1])])
                                      for g in self._group_counts]
            for total, c in zip(self._group_counts, counts, strict=True):
                total.index_add_(0, ids, c)
            self._seen_groups.update(ids.tolist())
        for extra in self.extras:
            extra.update(pred, target)

    def _add(self, state: dict[str, torch.Tensor] | None, inter: torch.Tensor, pa: torch.Tensor,
             ta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``state`` with the scores of images of these counts added (a new one for None)."""
        iou, dice, valid = _scores(self.task, inter, pa, ta)
        s = state if state is not None else self._zeros(inter.device)
        dev = s["iou"].device
        # per-image means over the headline classes (row 0) and over all classes (row 1)
        rows = [headline_only(self.task, valid), valid]
        img_iou, has_any = map(torch.stack, zip(*(_image_mean(iou, v) for v in rows), strict=True))
        img_dice = torch.stack([_image_mean(dice, v)[0] for v in rows])
        batch = {
            "iou": (iou * valid).sum(0),
            "dice": (dice * valid).sum(0),
            "valid": valid.long().sum(0),
            "img_iou": (img_iou * has_any).sum(1),
            "img_dice": (img_dice * has_any).sum(1),
            "img_valid": has_any.long().sum(1),
            "inter": inter.sum(0),
            "union": (pa + ta - inter).sum(0),
        }
        for key, value in batch.items():
            s[key] += value.to(dev)
        return s

    def compute(self) -> dict:
        """The metrics of everything seen so far (plain floats and lists)."""
        s, n_images = self._state, self.n_images
        if self._group_counts is not None:  # each group scored as one image, once all is seen
            seen = torch.tensor(sorted(self._seen_groups), device=self._group_counts[0].device)
            copy = None if s is None else {k: v.clone() for k, v in s.items()}
            s = self._add(copy, *(g[seen] for g in self._group_counts))
            n_images += len(seen)
        s = s if s is not None else self._zeros(torch.device("cpu"))
        s = {key: value.cpu() for key, value in s.items()}
        class_iou = _nan_div(s["iou"], s["valid"])
        class_dice = _nan_div(s["dice"], s["valid"])
        if self.task.kind == "multiclass":
            iou, iou_all = _nan_div(s["img_iou"], s["img_valid"])
            dice, dice_all = _nan_div(s["img_dice"], s["img_valid"])
        else:
            head = self.task.headline_positions
            iou, iou_all = _mean([class_iou[k] for k in head]), _mean(class_iou)
            dice, dice_all = _mean([class_dice[k] for k in head]), _mean(class_dice)
        pixel_class_iou = _nan_div(s["inter"], s["union"])
        overall = {"iou_all": iou_all, "dice_all": dice_all} if self.task.headline else {}
        return {
            "iou": iou,
            "dice": dice,
            **overall,
            "class_iou": class_iou,
            "class_dice": class_dice,
            "pixel_class_iou": pixel_class_iou,
            "pixel_miou": _nanmean(pixel_class_iou),
            "n_images": n_images,
            **{k: v for extra in self.extras for k, v in extra.compute().items()},
        }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _nanmean(values: list[float]) -> float:
    return _mean([v for v in values if not math.isnan(v)])


def evaluate(task: Task, pred: torch.Tensor, target: torch.Tensor,
             groups: torch.Tensor | None = None) -> dict:
    """Metrics of one batch (see ``MetricAccumulator.compute``)."""
    acc = MetricAccumulator(task)
    acc.update(pred, target, groups)
    return acc.compute()
