"""UniMatch's feature perturbation inside a model's own forward.

``model(x, feature_dropout=p)`` returns ``2N`` logits: the ``N`` clean ones, then the ``N``
decoded after channel dropout ``p`` on every encoder feature, from one encoder pass. It
lives in ``forward`` (not in a hook added around a step) so the call goes through DDP and
``torch.compile`` wrappers like any other: a compiled graph is specialised on the argument,
never reused for the other stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def doubled_with_dropout(features: Sequence[object], dropout: float) -> list[object]:
    """Each feature tensor twice along the batch: as it is, then after channel dropout
    (anything else an encoder lists, e.g. None, stays as it is)."""
    return [torch.cat((f, F.dropout2d(f, dropout, training=True)))
            if isinstance(f, torch.Tensor) else f for f in features]


def smp_forward_perturbed(net: nn.Module, x: torch.Tensor, dropout: float) -> torch.Tensor:
    """An smp model's forward (encoder → decoder → segmentation head) with the features
    doubled by :func:`doubled_with_dropout`: ``2N`` logits.

    smp's ViT encoder (DPT) returns ``(features, prefix tokens)``; the tokens are doubled
    (one per feature) unchanged, as DPT's decoder reads them beside the features.
    """
    encoded = net.encoder(x)
    if isinstance(encoded, tuple) and len(encoded) == 2 and isinstance(encoded[0], list | tuple):
        features, extras = encoded[0], [encoded[1]]
    else:
        features, extras = encoded, []
    extras = [_repeated(t) for t in extras]
    return net.segmentation_head(net.decoder(doubled_with_dropout(features, dropout), *extras))


def _repeated(value: object) -> object:
    """A tensor (or each tensor of a list) twice along the batch, unchanged."""
    if isinstance(value, torch.Tensor):
        return torch.cat((value, value))
    if isinstance(value, list | tuple):
        return [_repeated(v) for v in value]
    return value
