"""How good an EvalNet is, and the automatic thresholds drawn from its val predictions.

Spearman's rank correlation is written here (average ranks for ties, then
Pearson's r of the ranks) so scipy need not be a dependency.

**Automatic thresholds** (used when the config leaves ``evalnet.threshold``,
``min_threshold`` or ``max_threshold`` empty, e.g. for a user's own data):
:func:`threshold_for_target` returns the *lowest* predicted score ``t`` such
that the val masks the EvalNet scores at ``t`` or more have a mean true IoU of
at least ``target``, keeping at least ``min_fraction`` of the val masks (a
threshold that only one lucky mask passes would be noise). When no such ``t``
exists, the EvalNet cannot single out masks that good, and ``t`` becomes the
score that keeps just the top ``min_fraction``. The targets come from the
stage models (:mod:`imseg.experiment.evalnet_stage`): a pseudo label is
*selected* when it is expected to be as good as the best stage model's masks
on val; IM++ copies rise from one, for pairs expected to be as good as the
average LDT model's masks, to five, for pairs expected to be as good as the
best one's.
"""

from __future__ import annotations

import math

import torch


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their average rank (float64)."""
    x = x.detach().double().flatten()
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    _, counts = torch.unique_consecutive(sorted_x, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2  # mean of positions start+1..end
    ranks = torch.empty_like(x)
    ranks[order] = torch.repeat_interleave(average, counts)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors; NaN when either is constant."""
    if a.numel() != b.numel():
        raise ValueError(f"spearman needs equal lengths, got {a.numel()} and {b.numel()}")
    if a.numel() < 2:
        return math.nan
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else math.nan


def mae(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean absolute error (NaN for empty inputs)."""
    if pred.numel() == 0:
        return math.nan
    return float((pred.double() - true.double()).abs().mean())


def threshold_for_target(pred: torch.Tensor, true: torch.Tensor, target: float,
                         min_fraction: float = 0.1) -> float:
    """The lowest predicted score above which val masks reach ``target`` mean true IoU.

    See the module docstring for the rule and its fallback.
    """
    if pred.numel() == 0 or pred.numel() != true.numel():
        raise ValueError("thresholds need as many true IoUs as predictions, and at least one")
    order = torch.argsort(pred.double().flatten(), descending=True, stable=True)
    p = pred.double().flatten()[order]
    t = true.double().flatten()[order]
    n = p.numel()
    k = torch.arange(1, n + 1, dtype=torch.float64)
    running = torch.cumsum(t, 0) / k  # mean true IoU of the top k
    # a threshold p[k-1] keeps every mask scored >= it: only tie boundaries are real cuts
    boundary = torch.ones(n, dtype=torch.bool)
    boundary[:-1] = p[:-1] > p[1:]
    allowed = boundary & (k >= max(1, math.ceil(min_fraction * n)))
    good = allowed & (running >= target - 1e-12)
    if bool(good.any()):
        return float(p[int(good.nonzero().max())])
    return float(p[int(allowed.nonzero().min())])
