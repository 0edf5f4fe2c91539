"""Train one model: AdamW, fixed steps per epoch, best epoch by validation score.

A net whose encoder starts from pretrained weights (``model.weights`` not none) is
fine-tuned: its encoder learns at ``train.encoder_lr_factor`` times the rate, its
BatchNorm layers may be frozen (``train.encoder_bn``), and the rates warm up over
``train.warmup_epochs``. A net from scratch trains as before, on one rate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from tqdm.auto import tqdm

from imseg.config import TrainConfig
from imseg.data.dataset import Split
from imseg.errors import ConfigError
from imseg.logs import bar_disable
from imseg.tasks import Task
from imseg.training import distributed
from imseg.training.batchnorm import (
    bn_layers,
    derived_generator,
    freeze_statistics,
    one_value_batches_explained,
    recompute_bn_stats,
    stats_batches,
)
from imseg.training.inference import autocast, evaluate_model, to_input
from imseg.training.snapshot import Resumable, Snapshots, random_state, restore_random_state
from imseg.training.tensorboard import EpochHook, EpochLog, learning_rate

EpochFn = Callable[[nn.Module, torch.optim.Optimizer, int], float]
"""A custom epoch: ``(model, optimizer, epoch) -> mean loss`` (a trainer's, e.g. the
consistency loss or FixMatch: :mod:`imseg.training.trainers`)."""


@dataclass
class FitResult:
    state: dict
    """Weights of the best epoch (on CPU)."""
    val: dict
    """Validation scores of the best epoch."""
    best_epoch: int
    history: list[float] = field(default_factory=list)
    """Validation headline score per epoch."""
    seconds: float = 0.0


class Batches:
    """Random mini-batches of an in-memory split, kept on the training device.

    Each epoch draws a fresh permutation from the seeded generator; an epoch is
    ``steps`` batches (default ``N // batch_size``, at least one, as the
    reference), wrapping around to a new permutation when it needs more.
    ``shard=(rank, world)`` yields only this rank's part ``[rank::world]`` of each
    global batch (DDP; every rank draws the same permutations from the same seed).
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device,
                 generator: torch.Generator, steps: int | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        if len(split) == 0:
            raise ValueError("no pairs to train on")
        self.rank, self.world = shard
        if min(batch_size, len(split)) < self.world:
            raise ConfigError(f"a batch of {min(batch_size, len(split))} pairs cannot be "
                              f"shared by {self.world} processes; raise train.batch_size")
        self.images = split.images.to(device)
        self.labels = None if split.labels is None else split.labels.to(device)
        self.n = len(split)
        self.batch_size = min(batch_size, self.n)
        self.steps = steps or max(1, self.n // batch_size)
        self.generator = generator
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def _next_index(self) -> torch.Tensor:
        if self._pos + self.batch_size > self._perm.numel():
            # drawn on the CPU (the seeded generator), copied to the device once per
            # permutation rather than once per batch
            self._perm = torch.randperm(self.n, generator=self.generator).to(self.images.device)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def epoch(self):
        """Yield ``(images uint8, labels uint8 or None)`` batches of one epoch."""
        self._pos = self._perm.numel()  # every epoch starts on a fresh permutation
        for _ in range(self.steps):
            idx = self._next_index()[self.rank :: self.world]
            yield self.images[idx], None if self.labels is None else self.labels[idx]


def compile_mode(cfg: TrainConfig) -> str | None:
    """torch.compile's ``mode`` for ``train.compile`` (None: not compiled)."""
    if cfg.compile is False:
        return None
    return "default" if cfg.compile is True else cfg.compile


def compiled(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """The module a training step calls: ``model`` compiled on CUDA when ``train.compile``
    asks (on CPU compiling costs more than it saves for these small nets)."""
    mode = compile_mode(cfg)
    return model if mode is None or device.type != "cuda" else torch.compile(model, mode=mode)


def pretrained_encoder(model: nn.Module) -> nn.Module | None:
    """The encoder of a net whose encoder started from pretrained weights (an encoder
    model's), else None (the tiny U-Net, a net from scratch)."""
    return getattr(model, "pretrained_encoder", None)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW at ``cfg.lr``; a pretrained encoder's parameters at ``encoder_lr_factor`` of it."""
    encoder = pretrained_encoder(model)
    if encoder is None:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    in_encoder = {id(p) for p in encoder.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) in in_encoder],
               "lr": cfg.lr * cfg.encoder_lr_factor},
              {"params": [p for p in model.parameters() if id(p) not in in_encoder]}]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def prepare_finetuning(model: nn.Module, cfg: TrainConfig) -> int:
    """Freeze a pretrained encoder's BatchNorm statistics when ``train.encoder_bn`` asks;
    returns the epochs of warm-up this model gets (0 from scratch)."""
    encoder = pretrained_encoder(model)
    if encoder is None:
        return 0
    if cfg.encoder_bn == "frozen":
        freeze_statistics(bn_layers(encoder))
    return cfg.warmup_epochs


def warm_up(optimizer: torch.optim.Optimizer, epoch: int, warmup_epochs: int) -> None:
    """Set each group's rate for ``epoch`` (1-based): its full rate times e/(k+1) in the
    first k epochs, the full rate after."""
    factor = min(1.0, epoch / (warmup_epochs + 1))
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


def supervised_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches,
                     task: Task, cfg: TrainConfig, device: torch.device) -> float:
    """One epoch of plain supervised training; returns the mean loss."""

    def loss_of(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast(device, cfg.amp):
            logits = model(to_input(images, device, cfg.channels_last))
        return task.loss(logits, labels)

    return run_epoch(model, optimizer, batches, loss_of)


def run_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches,
              loss_of: Callable[..., torch.Tensor],
              after_step: Callable[[], None] | None = None) -> float:
    """One epoch of optimizer steps on ``loss_of(*batch)`` for each batch of
    ``batches.epoch()`` (``(images, labels)``, or what a trainer's batches yield);
    ``after_step`` runs after every step (an EMA teacher's update). Returns the mean loss,
    summed on the device and read back once (no host sync per step: on CUDA the CPU queues
    the next step while the GPU runs this one)."""
    model.train()
    total, steps = None, 0
    for batch in batches.epoch():
        loss = loss_of(*batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        total = loss.detach().float() if total is None else total + loss.detach().float()
        steps += 1
    return 0.0 if total is None else float(total) / steps


def refresh_bn_stats(model: nn.Module, images: torch.Tensor, cfg: TrainConfig,
                     device: torch.device, generator: torch.Generator) -> None:
    """``train.bn_stats: precise``: BatchNorm statistics recomputed over training batches
    of ``images`` (uint8) drawn from ``generator`` (see :mod:`imseg.training.batchnorm`)."""

    def forward(rows: torch.Tensor) -> None:
        with autocast(device, cfg.amp):
            model(to_input(images[rows.to(images.device)], device, cfg.channels_last))

    recompute_bn_stats(model, stats_batches(len(images), cfg.batch_size, cfg.bn_stats_batches,
                                            generator, distributed.shard()), forward)


@dataclass
class Progress:
    """What one model's training has come to after ``epoch`` epochs: the best epoch, its
    weights and scores, the validation history, and the seconds spent before this process
    took over (a snapshot carries it over a stop)."""

    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    best_val: dict = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, epoch: int, scores: dict, weights: Callable[[], Mapping]) -> None:
        """Note epoch ``epoch``'s validation ``scores``; when it is the best so far, keep a
        CPU copy of ``weights()`` (the model's state dict)."""
        score = float(scores["iou"])
        self.epoch = epoch
        self.history.append(score)
        if score > self.best_score:
            self.best_score, self.best_epoch, self.best_val = score, epoch, scores
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in weights().items()}

    def result(self, elapsed: float) -> FitResult:
        assert self.best_state is not None
        return FitResult(self.best_state, self.best_val, self.best_epoch, self.history,
                         self.seconds + elapsed)

    def saved(self, elapsed: float) -> dict:
        """Itself as a snapshot holds it (plain types), ``elapsed`` seconds later."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["best_val"] = json.loads(json.dumps(self.best_val, default=float))
        out["seconds"] = self.seconds + elapsed
        return out


@dataclass
class Streams:
    """What training holds beyond the weights: the optimizer, the random generators it
    draws from (by name), and a trainer's epoch function with a state of its own."""

    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator | None]
    epoch_fn: EpochFn | None = None

    def capture(self, model: nn.Module, progress: list[Progress], elapsed: float) -> dict:
        """The state a snapshot saves after the epoch ``progress`` has come to (one per
        model ``model`` trains: one, or a fused stage's)."""
        trainer = self.epoch_fn.state_dict() if isinstance(self.epoch_fn, Resumable) else None
        return {"epoch": progress[0].epoch, "model": model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "random": random_state(self.generators),
                "trainer": trainer, "progress": [p.saved(elapsed) for p in progress]}

    def restore(self, model: nn.Module, state: dict) -> list[Progress]:
        """Load a snapshot's state into ``model``, the optimizer, the generators and the
        trainer; return the progress it records."""
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_random_state(state["random"], self.generators)
        if isinstance(self.epoch_fn, Resumable) and state["trainer"] is not None:
            self.epoch_fn.load_state_dict(state["trainer"])
        return [Progress(**p) for p in state["progress"]]

    def start(self, model: nn.Module, snapshots: Snapshots | None, count: int = 1) -> list[Progress]:
        """The progress training starts from: the snapshot's (its state loaded), or none."""
        saved = snapshots.latest() if snapshots is not None else None
        return self.restore(model, saved) if saved is not None else [Progress() for _ in range(count)]


def fit(
    model: nn.Module,
    task: Task,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    epochs: int | None = None,
    epoch_fn: EpochFn | None = None,
    desc: str = "train",
    progress: bool = True,
    on_epoch: EpochHook | None = None,
    snapshots: Snapshots | None = None,
) -> FitResult:
    """Train ``model`` and return the weights of its best validation epoch.

    ``epoch_fn`` replaces the supervised epoch (a trainer's: the consistency loss,
    FixMatch, UniMatch, Mean Teacher; :mod:`imseg.training.trainers`). Under torchrun
    the model trains with DDP (see :mod:`imseg.training.distributed`); a custom
    epoch then sees the DDP model but is not sharded. With ``cfg.bn_stats ==
    "precise"`` the BatchNorm statistics are recomputed over ``train`` before each
    validation, so the kept best-epoch weights carry them. ``on_epoch`` hears each
    epoch's loss, scores and learning rate (TensorBoard: :mod:`imseg.training.tensorboard`).
    ``snapshots``: the model's training state is saved there as it trains, and training
    continues from the one it holds (:mod:`imseg.training.snapshot`).
    """
    start = time.perf_counter()
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    step_model = compiled(distributed.wrap(model, device, cfg.sync_bn), cfg, device)
    warmup_epochs = prepare_finetuning(model, cfg)  # after wrap: it may swap in SyncBatchNorm
    batches = None if epoch_fn else Batches(train, cfg.batch_size, device, generator,
                                            cfg.steps_per_epoch, distributed.shard())
    bn_generator = derived_generator(generator) if cfg.bn_stats == "precise" else None
    streams = Streams(optimizer, {"model": generator, "bn_stats": bn_generator}, epoch_fn)
    (done,) = streams.start(model, snapshots)
    n_epochs = epochs or cfg.epochs
    bar = tqdm(range(done.epoch + 1, n_epochs + 1), desc=desc, leave=False,
               initial=done.epoch, total=n_epochs, disable=bar_disable(progress))
    for epoch in bar:
        if warmup_epochs:
            warm_up(optimizer, epoch, warmup_epochs)
        with one_value_batches_explained():
            if epoch_fn is None:
                loss = supervised_epoch(step_model, optimizer, batches, task, cfg, device)
            else:
                loss = epoch_fn(step_model, optimizer, epoch)
            distributed.sync_buffers(model)
            if bn_generator is not None:
                refresh_bn_stats(model, train.images if batches is None else batches.images,
                                 cfg, device, bn_generator)
        scores = evaluate_model(model, val, task, device, cfg.eval_batch, cfg.amp)
        done.record(epoch, scores, model.state_dict)
        bar.set_postfix(loss=f"{loss:.4f}", val=f"{done.history[-1]:.3f}",
                        best=f"{done.best_score:.3f}")
        if on_epoch is not None:
            on_epoch(EpochLog(epoch, loss, scores, learning_rate(optimizer)))
        if snapshots is not None and epoch < n_epochs and snapshots.due():
            snapshots.write(streams.capture(model, [done], time.perf_counter() - start))
    result = done.result(time.perf_counter() - start)
    model.load_state_dict(result.state)
    return result
