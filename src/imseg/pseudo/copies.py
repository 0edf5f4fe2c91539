"""Copies: what a pseudo-labeled set contributes to the students' training set.

The ``copies`` recipe part (:mod:`imseg.parts`), registered in ``COPIES``:
``none`` keeps the pairs as they are; ``one`` replaces every pair by one
augmented copy (Noisy Student, IM+); ``keep_originals`` keeps the un-augmented
pairs beside the copies (AIM+); ``evalnet`` gives each pair 1–5 copies by its
predicted quality (IM++, AIM++), scored by the run's EvalNet ensemble
(``PartServices.scorer``) unless the labeler scored them already.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from imseg.data.augment import AugmentParams, augment_pairs
from imseg.data.dataset import Split
from imseg.parts import Needs, Part, PartRegistry
from imseg.pseudo.labelers import PartServices, PseudoSet

COPY_MODES = ("none", "one", "evalnet")

COPIES = PartRegistry("copies")


class CopiesPart(Part):
    """Base of the copies parts: :meth:`pairs` turns a pseudo set into training pairs."""

    keep_originals: bool = Field(False, description="keep the un-augmented pair beside its "
                                 "copies")

    def score(self, pseudo: PseudoSet, services: PartServices) -> None:
        """Give the pairs the scores these copies need (only copies by score need any)."""

    def copy_counts(self, pseudo: PseudoSet, services: PartServices) -> torch.Tensor | None:
        """Augmented copies per pair; None: the pairs as they are."""
        return torch.ones(len(pseudo), dtype=torch.long)

    def pairs(self, pseudo: PseudoSet, stems: list[str], params: AugmentParams,
              generator: torch.Generator, services: PartServices) -> Split:
        """The pseudo pairs, copied and augmented with ``params``, as training pairs."""
        counts = self.copy_counts(pseudo, services) if len(pseudo) else None
        return copied_split(pseudo, stems, counts, self.keep_originals, params, generator)


@COPIES.register
class NoCopies(CopiesPart):
    """The pseudo pairs as they are."""

    name: Literal["none"] = "none"

    def copy_counts(self, pseudo: PseudoSet, services: PartServices) -> None:
        return None


@COPIES.register
class OneCopy(CopiesPart):
    """One augmented copy replaces each pair."""

    name: Literal["one"] = "one"


@COPIES.register
class CopiesByScore(CopiesPart):
    """1-5 copies per pair, rising with the EvalNet ensemble's predicted IoU."""

    name: Literal["evalnet"] = "evalnet"
    min_threshold: float | None = Field(None, description="1 copy at or below (None: on val)")
    max_threshold: float | None = Field(None, description="5 copies at or above (None: on val)")
    GLOBALS: ClassVar[dict[str, str]] = {"min_threshold": "evalnet.min_threshold",
                                         "max_threshold": "evalnet.max_threshold"}

    def needs(self) -> Needs:
        return Needs(evalnet_kinds=("im_plus_plus",))

    def score(self, pseudo: PseudoSet, services: PartServices) -> None:
        if pseudo.scores is not None:
            return  # the labeler scored them (EvalNet selection)
        if len(pseudo) == 0:
            pseudo.scores = torch.empty(0)
            return
        if services.scorer is None:
            raise ValueError("copies by EvalNet score need services.scorer")
        pseudo.scores = services.scorer(pseudo.images, pseudo.labels)

    def score_range(self, services: PartServices) -> tuple[float, float]:
        """``(low, high)``: the settings, else the thresholds chosen on val."""
        if self.min_threshold is not None and self.max_threshold is not None:
            return float(self.min_threshold), float(self.max_threshold)
        if services.auto_thresholds is None:
            raise ValueError("copies by EvalNet score without thresholds need "
                             "services.auto_thresholds")
        auto = services.auto_thresholds()
        low = self.min_threshold if self.min_threshold is not None else auto["min_threshold"]
        high = self.max_threshold if self.max_threshold is not None else auto["max_threshold"]
        return float(low), float(high)

    def copy_counts(self, pseudo: PseudoSet, services: PartServices) -> torch.Tensor:
        if pseudo.scores is None:
            raise ValueError("copies by EvalNet score need the pairs' scores")
        return copies_by_score(pseudo.scores, *self.score_range(services))


def copies_by_score(scores: torch.Tensor, low: float, high: float, most: int = 5) -> torch.Tensor:
    """1..``most`` copies per pair, rising linearly with the score between ``low`` and ``high``."""
    if high <= low:
        return torch.where(scores >= high, most, 1).long()
    # float64: in float32 a score equal to ``high`` can land just below 1 (0.75 - 0.72 < 0.03)
    t = ((scores.double() - low) / (high - low)).clamp(0, 1)
    counts = (1 + torch.floor(t * (most - 1) + 1e-6)).long()
    return torch.where(scores >= high, most, counts)


def copied_split(pseudo: PseudoSet, stems: list[str], counts: torch.Tensor | None,
                 keep_originals: bool, params: AugmentParams,
                 generator: torch.Generator) -> Split:
    """The pseudo pairs as a split: ``counts[i]`` augmented copies of pair ``i`` (None: the
    pairs as they are), the originals kept beside them when ``keep_originals``."""
    names = [f"{stems[i]}_pl" for i in pseudo.source.tolist()]
    original = Split(pseudo.images, pseudo.labels, names)
    if counts is None:
        return original
    index = torch.repeat_interleave(torch.arange(len(pseudo)), counts)
    images, labels = augment_pairs(pseudo.images[index], pseudo.labels[index], params, generator)
    copied = Split(images, labels, [f"{names[i]}_aug" for i in index.tolist()])
    return Split.concat([original, copied]) if keep_originals else copied
