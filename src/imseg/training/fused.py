"""Train the S models of a stage at once, as one grouped network (``train.fuse``).

:func:`fit_fused` is S calls of :func:`imseg.training.fit.fit` in one: each
model keeps its own initial weights, its own batch order (its own
:class:`Batches` on its own generator; model ``k``'s batch goes to channel
group ``k`` of :class:`imseg.models.grouped.GroupedUNet`), its own validation
score per epoch, best epoch and best weights. Why the updates are the same:

* model ``k``'s logits depend only on its own channel group, so the gradient of
  the summed loss ``sum_k task.loss(logits_k, labels_k)`` with respect to model
  ``k``'s weights is the gradient of its own loss;
* AdamW is elementwise (moments, bias correction by a step count all models
  share, ``eps`` and the decoupled weight decay ``p -= lr * wd * p``), so one
  AdamW over the stacked tensors is S AdamWs over their slices.

Training does not augment online (stages augment their training sets before
training), so the batch order is all that differs between the models' data.
Not covered, so callers train those one at a time: custom epochs (the
consistency loss), models of different shapes or kinds, and torchrun (DDP).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import get_args

import torch
from tqdm.auto import tqdm

from imseg.config import AmpMode, AutoMode, TrainConfig
from imseg.data.dataset import Split
from imseg.evaluation.metrics import MetricAccumulator
from imseg.logs import bar_disable
from imseg.models.grouped import GroupedUNet, split_outputs, stack_inputs, why_not_groupable
from imseg.models.unet import TinyUNet
from imseg.tasks import Task
from imseg.training import distributed
from imseg.training.batchnorm import (
    derived_generator,
    one_value_batches_explained,
    recompute_bn_stats,
    stats_batches,
)
from imseg.training.fit import Batches, FitResult, Streams, compiled, make_optimizer
from imseg.training.inference import autocast, to_input
from imseg.training.snapshot import Snapshots
from imseg.training.tensorboard import EpochHook, EpochLog, learning_rate


def fusable(nets: Sequence[torch.nn.Module]) -> str | None:
    """Why ``nets`` cannot be trained as one grouped network, or None when they can."""
    if distributed.active():
        return "fused training does not run under torchrun"
    return why_not_groupable(nets)


def use_fused(mode: str, device: torch.device) -> bool:
    """Whether ``train.fuse`` means fusing on ``device`` (for models that are fusable).

    ``auto`` fuses on CUDA, where a single tiny U-Net is launch-bound. On CPU
    ``bench/train_speed.py --models 5`` measured fusing no faster (alpha 0.5: 0.9-1.0x at
    64 px and 0.66x at 128 px with batch 8, 0.51x at 256 px with batch 32), so there ``auto``
    trains one at a time.
    """
    if mode not in get_args(AutoMode):
        raise ValueError(f"train.fuse must be auto, always or never, got {mode!r}")
    return mode == "always" or (mode == "auto" and device.type == "cuda")


def fused_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                batches: Sequence[Batches], task: Task, cfg: TrainConfig,
                device: torch.device) -> torch.Tensor:
    """One epoch of every model, each on its own batches; returns the S mean losses.

    Losses stay on the device until the epoch ends (no host sync per step).
    """
    model.train()
    total = torch.zeros(len(batches), device=device)
    steps = 0
    for pairs in zip(*(b.epoch() for b in batches), strict=True):
        x = to_input(stack_inputs([images for images, _ in pairs]), device, cfg.channels_last)
        with autocast(device, cfg.amp):
            logits = model(x)
        losses = torch.stack([task.loss(out, labels) for out, (_, labels)
                              in zip(split_outputs(logits, len(batches)), pairs, strict=True)])
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        total += losses.detach()
        steps += 1
    return total.cpu() / max(steps, 1)


@torch.no_grad()
def evaluate_grouped(model: GroupedUNet, split: Split, task: Task, device: torch.device,
                     batch_size: int = 64, amp: AmpMode | bool = True) -> list[dict]:
    """Each model's scores on a labeled split, as :func:`evaluate_model` gives them
    (every model sees every image: the batch is repeated in each channel group)."""
    if split.labels is None or len(split) == 0:
        return [{} for _ in range(model.models)]
    model.eval()
    accs = [MetricAccumulator(task) for _ in range(model.models)]
    for start in range(0, len(split), batch_size):
        sl = slice(start, min(start + batch_size, len(split)))
        x = to_input(stack_inputs([split.images[sl]] * model.models), device)
        with autocast(device, amp):
            logits = model(x)
        labels, groups = split.scored(sl)
        labels = labels.to(device)
        for acc, out in zip(accs, split_outputs(logits, model.models), strict=True):
            acc.update(task.to_label(task.activate(out)), labels, groups)
    return [acc.compute() for acc in accs]


def refresh_grouped_bn_stats(model: GroupedUNet, images: torch.Tensor, cfg: TrainConfig,
                             device: torch.device, generators: Sequence[torch.Generator]) -> None:
    """``train.bn_stats: precise`` for every model: model ``k``'s statistics over its own
    batches (drawn from ``generators[k]``). The batches of all models have the same sizes,
    so each BatchNorm channel pools exactly what the single model's would."""
    per_model = [stats_batches(len(images), cfg.batch_size, cfg.bn_stats_batches, g)
                 for g in generators]

    def forward(rows: tuple[torch.Tensor, ...]) -> None:
        stacked = stack_inputs([images[r.to(images.device)] for r in rows])
        with autocast(device, cfg.amp):
            model(to_input(stacked, device, cfg.channels_last))

    recompute_bn_stats(model, zip(*per_model, strict=True), forward)


def fit_fused(
    nets: Sequence[TinyUNet],
    task: Task,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    device: torch.device,
    generators: Sequence[torch.Generator],
    epochs: int | None = None,
    desc: str = "train",
    progress: bool = True,
    on_epoch: Sequence[EpochHook | None] = (),
    snapshots: Snapshots | None = None,
) -> list[FitResult]:
    """Train ``nets`` together; result ``k`` is what ``fit(nets[k], ..., generators[k])`` gives
    (``on_epoch[k]``: net ``k``'s as fit's ``on_epoch``; ``snapshots``: one for the group).

    Each net ends holding its best epoch's weights, as after :func:`fit`.
    ``seconds`` of each result is its share (1/S) of the wall time.
    """
    if len(generators) != len(nets):
        raise ValueError(f"{len(generators)} generators for {len(nets)} models")
    reason = fusable(nets)
    if reason is not None:
        raise ValueError(f"cannot train these models fused: {reason}")
    start = time.perf_counter()
    for net in nets:
        net.to(device)
    grouped = GroupedUNet.from_nets(nets)
    if cfg.channels_last:
        grouped.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(grouped, cfg)
    step_model = compiled(grouped, cfg, device)
    on_device = Split(train.images.to(device),
                      None if train.labels is None else train.labels.to(device), train.stems)
    batches = [Batches(on_device, cfg.batch_size, device, g, cfg.steps_per_epoch)
               for g in generators]
    bn_generators = ([derived_generator(g) for g in generators]
                     if cfg.bn_stats == "precise" else None)
    streams = Streams(optimizer, {
        **{f"model{k}": g for k, g in enumerate(generators)},
        **{f"bn_stats{k}": g for k, g in enumerate(bn_generators or [])}})
    records = streams.start(grouped, snapshots, len(nets))
    n_epochs = epochs or cfg.epochs
    bar = tqdm(range(records[0].epoch + 1, n_epochs + 1), desc=desc, leave=False,
               initial=records[0].epoch, total=n_epochs, disable=bar_disable(progress))
    for epoch in bar:
        with one_value_batches_explained():
            losses = fused_epoch(step_model, optimizer, batches, task, cfg, device)
            if bn_generators is not None:
                refresh_grouped_bn_stats(grouped, on_device.images, cfg, device, bn_generators)
        for k, (rec, scores) in enumerate(zip(
                records, evaluate_grouped(grouped, val, task, device, cfg.eval_batch, cfg.amp),
                strict=True)):
            rec.record(epoch, scores, lambda k=k: grouped.model_state(k))
            if k < len(on_epoch) and on_epoch[k] is not None:
                on_epoch[k](EpochLog(epoch, float(losses[k]), scores, learning_rate(optimizer)))
        bar.set_postfix(loss=f"{float(losses.mean()):.4f}",
                        best=f"{max(rec.best_score for rec in records):.3f}")
        if snapshots is not None and epoch < n_epochs and snapshots.due():
            snapshots.write(streams.capture(grouped, records,
                                            (time.perf_counter() - start) / len(nets)))
    seconds = (time.perf_counter() - start) / len(nets)
    results = []
    for net, rec in zip(nets, records, strict=True):
        result = rec.result(seconds)
        if cfg.channels_last:
            net.to(memory_format=torch.channels_last)
        net.load_state_dict(result.state)
        results.append(result)
    return results
