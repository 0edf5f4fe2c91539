"""Precise BatchNorm statistics: running mean and variance recomputed over training batches.

With a small labeled set a model takes few optimizer steps, and BatchNorm's
exponential running averages (Keras' momentum 0.99, 0.01 in torch's terms)
stay far from the statistics the layers normalise with in training, so the
evaluation-mode network is a different one (validation can collapse to 0).
``train.bn_stats: precise`` replaces them, before each validation, by the
pooled statistics of every BatchNorm layer's inputs over up to
``train.bn_stats_batches`` training batches, as Detectron2's PreciseBN does:

* the network runs in eval mode (no dropout, no gradient) except the BatchNorm
  layers, which normalise with their batch statistics as in training, so each
  layer sees the inputs it sees in training;
* the statistics are pooled over all batches (per-channel sums and sums of
  squares in float64), not averaged per batch, so ``running_var`` is the variance of all
  the layer's inputs, unbiased (``n / (n - 1)``) as torch stores it;
* under torchrun each process feeds its share of every batch and the sums and
  counts are all-reduced, so every process ends with the same statistics;
* the batches come from their own generator, derived from the model's seed
  without drawing from it, so the training batch order is the same as with
  ``running``;
* a layer no batch reaches (a library's unused classifier part) affects no output
  and keeps its statistics; a frozen layer (:func:`freeze_statistics`, a pretrained
  encoder's with ``train.encoder_bn: frozen``) keeps its statistics too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from imseg.errors import ConfigError
from imseg.runtime import derive_seed
from imseg.training import distributed

Batch = TypeVar("Batch")


@contextmanager
def one_value_batches_explained():
    """torch's BatchNorm refuses a training batch with one value per channel (one image whose
    deepest feature map is 1x1; Keras accepts it): say what to change instead of torch's
    bare ValueError."""
    try:
        yield
    except ValueError as err:
        if "Expected more than 1 value per channel" not in str(err):
            raise
        raise ConfigError(
            "a training batch of one image reached a BatchNorm layer on a 1x1 feature map "
            f"(torch: {err}). Give each process batches of at least 2 images (train.batch_size; "
            "a labeled set smaller than the batch, or torchrun's split of it, makes them "
            "smaller) or use larger images (the net halves them down to that map: 16x for the "
            "tiny U-Net, 32x for most encoders)") from err


FROZEN = "imseg_frozen_statistics"
"""Attribute that marks a BatchNorm layer as frozen (:func:`freeze_statistics`)."""


def bn_layers(model: nn.Module, frozen: bool = False) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics; frozen ones only
    with ``frozen=True``."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
            and (frozen or not getattr(m, FROZEN, False))]


def freeze_statistics(layers: Iterable[nn.modules.batchnorm._BatchNorm]) -> None:
    """Make ``layers`` normalise with their running statistics and keep them, also while
    the model trains (their affine parameters still learn); idempotent."""
    for layer in layers:
        if not getattr(layer, FROZEN, False):
            setattr(layer, FROZEN, True)
            layer.register_forward_pre_hook(_normalise_as_in_eval)


def _normalise_as_in_eval(layer: nn.Module, _args: object) -> None:
    layer.training = False


def derived_generator(generator: torch.Generator) -> torch.Generator:
    """A generator for the statistics batches, seeded from ``generator``'s seed: the
    same for the same model, and it leaves ``generator``'s stream untouched."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(generator.initial_seed(), "precise-bn"))
    return gen


def stats_batches(n: int, batch_size: int, max_batches: int, generator: torch.Generator,
                  shard: tuple[int, int] = (0, 1)) -> list[torch.Tensor]:
    """Row indices of up to ``max_batches`` batches: one random pass over the ``n`` rows
    (cut short after ``max_batches`` full batches), in batches of near-equal size of at
    most ``batch_size``, each large enough that every process of ``shard=(rank, world)``
    gets at least one row; each holds only this process's share ``[rank::world]``."""
    rank, world = shard
    count = max(1, min(max_batches, -(-n // batch_size), n // world))
    perm = torch.randperm(n, generator=generator)[: count * batch_size]
    return [rows[rank::world] for rows in torch.tensor_split(perm, count)]


class _Moments:
    """Per-channel sums of one layer's inputs: count, sum, sum of squares (float64).

    Each batch is summed in float32 (float64 models: float64; torch's cascade
    summation keeps ~1e-7 relative error) and only the per-channel results are widened to float64 and pooled:
    widening every activation first made the statistics pass cost twice a forward.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        xf = x.detach().to(torch.promote_types(x.dtype, torch.float32))
        count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=torch.float64,
                           device=x.device)
        part = torch.cat([count, xf.sum(dims).double(), xf.square().sum(dims).double()])
        self.total = part if self.total is None else self.total + part

    def sums(self, layer: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
        """The pooled sums; zeros (a count of 0) for a layer no batch reached."""
        if self.total is not None:
            return self.total
        return torch.zeros(2 * layer.num_features + 1, dtype=torch.float64,
                           device=layer.running_mean.device)

    @staticmethod
    def store(layer: nn.modules.batchnorm._BatchNorm, total: torch.Tensor) -> bool:
        """Write the pooled mean and unbiased variance into ``layer``'s buffers; False
        (nothing written) when no process's batch reached it."""
        c = layer.num_features
        n, sums, squares = total[0], total[1 : c + 1], total[c + 1 :]
        if n == 0:
            return False
        mean = sums / n
        var = ((squares - n * mean.square()) / (n - 1).clamp_min(1)).clamp_min(0)
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(var.to(layer.running_var.dtype))
        return True


@contextmanager
def _batch_statistics_mode(model: nn.Module, layers: list[nn.modules.batchnorm._BatchNorm]):
    """Eval mode but BatchNorm on batch statistics, not updating its buffers; restored after."""
    modes = [(m, m.training) for m in model.modules()]
    tracking = [layer.track_running_stats for layer in layers]
    model.eval()
    for layer in layers:
        layer.train()
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer, track in zip(layers, tracking, strict=True):
            layer.track_running_stats = track
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Batch],
                       forward: Callable[[Batch], object]) -> int:
    """Set every BatchNorm layer's running mean and variance to the pooled statistics of
    its inputs over ``forward(batch)`` for each batch; returns the layers updated (those
    a batch reached; frozen ones are left out).

    ``forward`` runs the model on one batch (it knows the model's inputs). Under
    torchrun every process must pass the same number of batches.
    """
    layers = bn_layers(model)
    if not layers:
        return 0
    moments = [_Moments() for _ in layers]
    hooks = [layer.register_forward_pre_hook(lambda _m, args, acc=acc: acc.add(args[0]))
             for layer, acc in zip(layers, moments, strict=True)]
    try:
        with _batch_statistics_mode(model, layers):
            for batch in batches:
                forward(batch)
    finally:
        for hook in hooks:
            hook.remove()
    flat = torch.cat([acc.sums(layer) for layer, acc in zip(layers, moments, strict=True)])
    if distributed.active():
        dist.all_reduce(flat)
    totals = flat.split([2 * m.num_features + 1 for m in layers])
    return sum(_Moments.store(layer, total) for layer, total in zip(layers, totals, strict=True))
