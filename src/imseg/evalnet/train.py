"""Train one EvalNet: AdamW, mean squared error, the epoch with the best val MAE kept.

The binary net regresses the mask's IoU; the per-class net regresses each
class's IoU (MSE) and classifies its presence (binary cross-entropy, as the
reference's two-headed "miou" net). Validation is the mean absolute error of
the predicted score against the true one; Spearman's rank correlation is
reported for the kept epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from imseg.config import AmpMode, EvalNetConfig
from imseg.evalnet.data import EvalNetData
from imseg.evalnet.ensemble import forward, net_inputs, predict
from imseg.evalnet.stats import mae, spearman
from imseg.evalnet.targets import Targets
from imseg.logs import bar_disable
from imseg.tasks import Task
from imseg.training.batchnorm import (
    derived_generator,
    one_value_batches_explained,
    recompute_bn_stats,
    stats_batches,
)
from imseg.training.inference import autocast
from imseg.training.tensorboard import EpochHook, EpochLog, learning_rate


@dataclass
class EvalNetFit:
    state: dict
    """Weights of the best epoch (on CPU)."""
    val_mae: float
    val_spearman: float
    best_epoch: int
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)
    """Val MAE per epoch."""


def evalnet_loss(iou: torch.Tensor, present: torch.Tensor | None, target: Targets) -> torch.Tensor:
    """MSE on the IoU (per class: plus BCE on presence), in float32."""
    if present is None:
        return F.mse_loss(iou.float(), target.score.float())
    assert target.class_iou is not None and target.present is not None
    return F.mse_loss(iou.float(), target.class_iou.float()) + F.binary_cross_entropy(
        present.float().clamp(1e-6, 1 - 1e-6), target.present.float())


def epoch_indices(n: int, batch: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """``(steps, batch)`` row indices: fresh permutations, chained when one is too short."""
    need = batch * steps
    perms = [torch.randperm(n, generator=generator) for _ in range(math.ceil(need / n))]
    return torch.cat(perms)[:need].view(steps, batch)


def train_epoch(net: nn.Module, task: Task, data: EvalNetData, optimizer: torch.optim.Optimizer,
                index: torch.Tensor, device: torch.device, amp: AmpMode | bool) -> float:
    """One epoch over the batches ``index`` (steps, batch); returns the mean loss."""
    net.train()
    total = 0.0
    for rows in index:
        images, masks, target = data.batch(rows)
        x, m = net_inputs(task, images, masks, device)
        with autocast(device, amp):
            iou, present = forward(net, task, x, m)
        loss = evalnet_loss(iou, present, target.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / max(1, index.shape[0])


def refresh_bn_stats(net: nn.Module, task: Task, data: EvalNetData, batch: int,
                     max_batches: int, device: torch.device, amp: AmpMode | bool,
                     generator: torch.Generator) -> None:
    """BatchNorm statistics recomputed over training batches (``bn_stats: precise``)."""

    def run(rows: torch.Tensor) -> None:
        images, masks, _ = data.batch(rows)
        with autocast(device, amp):
            forward(net, task, *net_inputs(task, images, masks, device))

    recompute_bn_stats(net, stats_batches(len(data), batch, max_batches, generator), run)


def train_evalnet(net: nn.Module, task: Task, train: EvalNetData, val: EvalNetData,
                  cfg: EvalNetConfig, device: torch.device, generator: torch.Generator,
                  eval_batch_size: int = 64, amp: AmpMode | bool = True, desc: str = "evalnet",
                  progress: bool = True, bn_stats: Literal["running", "precise"] = "running",
                  bn_stats_batches: int = 200, on_epoch: EpochHook | None = None) -> EvalNetFit:
    """Train ``net`` and return the weights of its epoch with the lowest val MAE.

    ``bn_stats`` / ``bn_stats_batches`` as ``train.bn_stats`` / ``train.bn_stats_batches``:
    ``precise`` recomputes the BatchNorm statistics before each validation. ``on_epoch``
    hears each epoch's loss, val MAE (``mae``) and learning rate.
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError("EvalNet training needs training and validation masks")
    start = time.perf_counter()
    net.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(train))
    steps = max(1, len(train) // cfg.batch_size)
    best = (math.inf, 0, None, math.nan)  # mae, epoch, state, spearman
    history: list[float] = []
    bn_generator = derived_generator(generator) if bn_stats == "precise" else None
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, leave=False, disable=bar_disable(progress))
    for epoch in bar:
        with one_value_batches_explained():
            loss = train_epoch(net, task, train, optimizer,
                               epoch_indices(len(train), batch, steps, generator), device, amp)
            if bn_generator is not None:
                refresh_bn_stats(net, task, train, batch, bn_stats_batches, device, amp,
                                 bn_generator)
        pred = predict([net], task, val.images, val.masks, device, eval_batch_size, amp,
                       val.index)
        val_mae = mae(pred.score, val.targets.score)
        history.append(val_mae)
        if val_mae < best[0]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
            best = (val_mae, epoch, state, spearman(pred.score, val.targets.score))
        bar.set_postfix(loss=f"{loss:.4f}", mae=f"{val_mae:.3f}", best=f"{best[0]:.3f}")
        if on_epoch is not None:
            on_epoch(EpochLog(epoch, loss, {"mae": val_mae}, learning_rate(optimizer)))
    assert best[2] is not None
    net.load_state_dict(best[2])
    return EvalNetFit(best[2], best[0], best[3], best[1], time.perf_counter() - start, history)
