"""Copies: what a pseudo-labeled set contributes to the students' training set.

``none`` keeps the pairs as they are; ``one`` replaces every pair by one
augmented copy (Noisy Student, IM+); ``keep_originals`` keeps the un-augmented
pairs beside the copies (AIM+); ``evalnet`` gives each pair 1–5 copies by its
predicted quality (IM++, AIM++).
"""

from __future__ import annotations

import torch

from imseg.data.augment import AugmentParams, augment_pairs
from imseg.data.dataset import Split
from imseg.pseudo.labelers import PseudoSet

COPY_MODES = ("none", "one", "evalnet")


def copies_by_score(scores: torch.Tensor, low: float, high: float, most: int = 5) -> torch.Tensor:
    """1..``most`` copies per pair, rising linearly with the score between ``low`` and ``high``."""
    if high <= low:
        return torch.where(scores >= high, most, 1).long()
    # float64: in float32 a score equal to ``high`` can land just below 1 (0.75 - 0.72 < 0.03)
    t = ((scores.double() - low) / (high - low)).clamp(0, 1)
    counts = (1 + torch.floor(t * (most - 1) + 1e-6)).long()
    return torch.where(scores >= high, most, counts)


def pseudo_split(pseudo: PseudoSet, stems: list[str], mode: str, keep_originals: bool,
                 params: AugmentParams, generator: torch.Generator,
                 score_range: tuple[float, float] | None = None) -> Split:
    """The pseudo pairs, copied and augmented as the recipe says."""
    names = [f"{stems[i]}_pl" for i in pseudo.source.tolist()]
    original = Split(pseudo.images, pseudo.labels, names)
    if mode == "none" or len(pseudo) == 0:
        return original
    if mode == "one":
        counts = torch.ones(len(pseudo), dtype=torch.long)
    elif mode == "evalnet":
        if pseudo.scores is None or score_range is None:
            raise ValueError("copies by EvalNet score need the pairs' scores and a threshold range")
        counts = copies_by_score(pseudo.scores, *score_range)
    else:
        raise ValueError(f"unknown copies mode {mode!r}; choose one of {COPY_MODES}")
    index = torch.repeat_interleave(torch.arange(len(pseudo)), counts)
    images, labels = augment_pairs(pseudo.images[index], pseudo.labels[index], params, generator)
    copied = Split(images, labels, [f"{names[i]}_aug" for i in index.tolist()])
    return Split.concat([original, copied]) if keep_originals else copied
