"""How much labeling an image is expected to help, from the ensemble's probabilities.

* ``im``: the share of the image's pixels where the teachers' own labels differ (the
  inconsistency mask, :func:`imseg.pseudo.inconsistency.agreement`), as ``imseg
  predict`` ranks images. Per class too (``im_<class>``): the share where some teacher
  gives the pixel that class and another does not (multilabel: per label), so a
  multiclass set can be ranked by the class it lacks (``suggest --class``).
* ``entropy``: the mean over pixels of the ensemble's mean probability's entropy,
  scaled to 0..1 (binary and multilabel: per channel; multiclass: over the real
  classes). It sees where the models agree but are unsure, which the IM misses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from imseg.predict import ImagePrediction, prediction_of
from imseg.tasks import Task

SCORES: tuple[str, ...] = ("im", "entropy")
"""The scores every image gets; ``suggest --score`` ranks by one of them."""


@dataclass
class ImageScores:
    """One image's scores (module doc)."""

    im: float
    entropy: float
    class_im: dict[str, float]
    """Per class name, its IM share."""

    def value(self, score: str, class_name: str | None = None) -> float:
        """The score ranked by: ``im`` of one class when ``class_name`` is given."""
        if class_name is not None:
            return self.class_im[class_name]
        return float(getattr(self, score))


def score_image(task: Task, classes: list[str], probabilities: torch.Tensor
                ) -> tuple[ImageScores, ImagePrediction]:
    """The scores and the prediction (ensemble label, IM) of one image's
    ``(models, channels, H, W)`` probabilities."""
    prediction = prediction_of(task, probabilities)
    members = _class_members(task, task.to_label(probabilities))  # (T, K, H, W)
    disagree = members.any(dim=0) & ~members.all(dim=0)  # (K, H, W)
    shares = disagree.float().mean(dim=(1, 2)).tolist()
    scores = ImageScores(im=prediction.im_fraction,
                         entropy=mean_entropy(task, probabilities.mean(dim=0)),
                         class_im=dict(zip(classes, shares, strict=True)))
    return scores, prediction


def _class_members(task: Task, votes: torch.Tensor) -> torch.Tensor:
    """Bool ``(T, K, H, W)``: which teacher gives each pixel each ranked class."""
    if task.kind == "multiclass":
        values = torch.tensor(task.eval_classes, device=votes.device)
        return votes[:, 0, None] == values[None, :, None, None]
    return votes.bool()


def mean_entropy(task: Task, probabilities: torch.Tensor) -> float:
    """The mean entropy of ``(channels, H, W)`` probabilities, scaled to 0..1."""
    p = probabilities.float()
    if task.kind == "multiclass":
        real = p[1:] / p[1:].sum(dim=0, keepdim=True).clamp_min(1e-12)  # not the IM class
        h = -(real * real.clamp_min(1e-12).log()).sum(dim=0) / math.log(real.shape[0])
        return float(h.mean())
    q = p.clamp(1e-12, 1 - 1e-12)
    h = -(q * q.log() + (1 - q) * (1 - q).log()) / math.log(2)
    return float(h.mean())


def class_columns(classes: list[str]) -> list[str]:
    """ranking.csv's column names of the per-class IM shares."""
    return [f"im_{name}" for name in classes]


def score_row(scores: ImageScores) -> dict[str, float]:
    """The scores as ranking.csv columns."""
    row = {"im": scores.im, "entropy": scores.entropy}
    row.update({f"im_{k}": v for k, v in scores.class_im.items()})
    return {k: float(np.round(v, 6)) for k, v in row.items()}
