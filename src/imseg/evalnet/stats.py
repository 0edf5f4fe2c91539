"""How good an EvalNet is, and the automatic thresholds drawn from its val predictions.

Spearman's rank correlation is written here (average ranks for ties, then
Pearson's r of the ranks) so scipy need not be a dependency.

**Automatic thresholds** (used when the config leaves ``evalnet.threshold``,
``min_threshold`` or ``max_threshold`` empty, e.g. for a user's own data) are
read off the EvalNet's predictions on the val masks, sorted by predicted score.
:func:`threshold_for_target` returns the *lowest* predicted score ``t`` at
which the val masks reach a mean true IoU of ``target``:

* ``local=False`` (selection): the mean over *all* masks scored ``t`` or more,
  i.e. the set a threshold of ``t`` would keep;
* ``local=True`` (copy counts): the mean over the ``w`` masks scored just at or
  above ``t`` (``w`` = ``min_fraction`` of the val masks), i.e. how good a mask
  *at* that score is.

At least ``w`` masks must pass (a threshold that one lucky mask passes would be
noise). When no ``t`` reaches the target, the EvalNet cannot single out masks
that good, and ``t`` becomes the score that keeps just the top ``w``. The
targets come from the stage models (:mod:`imseg.experiment.evalnet_stage`): a
pseudo label is *selected* when the selected set is expected to be as good as
the best stage model's masks on val; IM++ copies rise from one, for pairs
scored where val pairs are as good as the average LDT model's masks, to five,
where they are as good as the best one's.
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
                         min_fraction: float = 0.1, local: bool = False) -> float:
    """The lowest predicted score at which val masks reach ``target`` mean true IoU
    (over all masks above it, or with ``local`` over the nearest ones above it).

    See the module docstring for the rule and its fallback.
    """
    if pred.numel() == 0 or pred.numel() != true.numel():
        raise ValueError("thresholds need as many true IoUs as predictions, and at least one")
    order = torch.argsort(pred.double().flatten(), descending=True, stable=True)
    p = pred.double().flatten()[order]
    t = true.double().flatten()[order]
    n = p.numel()
    w = max(1, math.ceil(min_fraction * n))
    k = torch.arange(1, n + 1)
    total = torch.cumsum(t, 0)
    if local:  # the w masks ranked k-w+1..k
        before = torch.cat([torch.zeros(1, dtype=t.dtype), total])[(k - w).clamp_min(0)]
        mean = (total - before) / k.clamp_max(w)
    else:  # every mask ranked 1..k
        mean = total / k
    # a threshold p[k-1] keeps every mask scored >= it: only tie boundaries are real cuts
    boundary = torch.ones(n, dtype=torch.bool)
    boundary[:-1] = p[:-1] > p[1:]
    allowed = boundary & (k >= w)
    good = allowed & (mean >= target - 1e-6)  # float32 inputs: equal within rounding
    if bool(good.any()):
        return float(p[int(good.nonzero().max())])
    return float(p[int(allowed.nonzero().min())])
