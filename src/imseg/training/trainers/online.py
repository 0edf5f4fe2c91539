"""Online SSL trainers: FixMatch, UniMatch and Mean Teacher (docs/method.md §6, "Online SSL
trainers"), one weak-to-strong training step with three configurations.

Every step takes a labeled batch and an unlabeled batch (``unlabeled_ratio`` times as
large). Both get a weak view: a random flip/rotation the data set allows. The
unlabeled weak view's prediction, by the model itself (FixMatch, UniMatch) or by
an EMA copy of it (Mean Teacher), gives a pseudo label and a confidence per pixel
(:meth:`imseg.tasks.Task.pseudo_label`). Strong views (:mod:`imseg.data.strong`:
colour jitter, grey, blur, then CutMix with another image of the batch, pasting
image and pseudo label with the same box) are trained towards those labels where
the confidence reaches ``threshold``; the other pixels add nothing. As in
UniMatch, an unsupervised loss is summed over confident pixels and divided by all
pixels, so a batch with few confident pixels pulls little.

UniMatch adds a second strong view and a feature-perturbation stream: the weak
view decoded after channel dropout on the encoder features (inside the model's forward,
:mod:`imseg.models.perturb`), trained towards the same pseudo labels. Loss = labeled + 0.25·strong1 + 0.25·strong2 + 0.5·feature
(UniMatch halves the sum as well, which AdamW's scale invariance makes moot).
"""

from __future__ import annotations

import copy
import inspect
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from imseg.config import Section
from imseg.data.augment import apply_geometry, random_geometry
from imseg.data.dataset import Split
from imseg.data.strong import StrongParams, cutmix, cutmix_boxes, strong_view
from imseg.errors import ConfigError
from imseg.tasks import Task
from imseg.training.fit import Batches, run_epoch
from imseg.training.inference import autocast, to_input
from imseg.training.trainers.base import (
    TRAINERS,
    EpochFactory,
    TrainerPart,
    TrainingSetup,
)


class StrongAugment(Section):
    """The strong view's photometric augmentation (UniMatch's values)."""

    jitter_prob: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.5, ge=0, lt=1)
    contrast: float = Field(0.5, ge=0, lt=1)
    saturation: float = Field(0.5, ge=0, lt=1)
    hue: float = Field(0.25, ge=0, le=0.5)
    grey_prob: float = Field(0.2, ge=0, le=1)
    blur_prob: float = Field(0.5, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def params(self) -> StrongParams:
        return StrongParams(**self.model_dump())


class OnlineTrainer(TrainerPart):
    """Settings every online trainer shares; defaults are UniMatch's published ones."""

    threshold: float = Field(0.95, ge=0, le=1, description="confidence a pseudo-labeled "
                             "pixel needs to count")
    unlabeled_ratio: float = Field(1.0, gt=0, description="unlabeled images per labeled "
                                   "image in a step")
    cutmix_prob: float = Field(0.5, ge=0, le=1, description="chance of a CutMix box per "
                               "strong view")
    labeled_weight: float = Field(1.0, ge=0)
    strong_weights: tuple[float, ...] = Field((1.0,), min_length=1, description="one weight "
                                              "per strong view")
    weak_labeled: bool = Field(True, description="labeled batches get the weak view too")
    strong: StrongAugment = StrongAugment()
    USES_UNLABELED: ClassVar[bool] = True

    def feature_stream(self) -> tuple[float, float]:
        """``(loss weight, channel dropout)`` of the feature-perturbation stream (0: none)."""
        return 0.0, 0.0

    def teacher_decay(self) -> float | None:
        """The EMA decay of a teacher giving the pseudo labels (None: the model itself)."""
        return None

    def epoch_factory(self, setup: TrainingSetup) -> EpochFactory:
        if setup.unlabeled.shape[0] == 0:
            raise ValueError(f"trainer {self.name} needs unlabeled images")
        return lambda generator: OnlineEpochs(self, setup, generator)


@TRAINERS.register
class FixMatch(OnlineTrainer):
    """One strong view trained on the model's own confident weak-view labels."""

    name: Literal["fixmatch"] = "fixmatch"


@TRAINERS.register
class UniMatch(OnlineTrainer):
    """FixMatch with two strong views and a feature-perturbation stream."""

    name: Literal["unimatch"] = "unimatch"
    strong_weights: tuple[float, ...] = Field((0.25, 0.25), min_length=1)
    feature_weight: float = Field(0.5, ge=0)
    feature_dropout: float = Field(0.5, ge=0, lt=1, description="channel dropout on the "
                                   "encoder features")

    def feature_stream(self) -> tuple[float, float]:
        return self.feature_weight, self.feature_dropout


@TRAINERS.register
class MeanTeacher(OnlineTrainer):
    """Pseudo labels from an exponential moving average of the model's weights."""

    name: Literal["mean_teacher"] = "mean_teacher"
    ema_decay: float = Field(0.99, ge=0, lt=1)

    def teacher_decay(self) -> float:
        return self.ema_decay


# ------------------------------------------------------------------------- batches
class PairedBatches:
    """Each step a labeled batch ``(images, labels)`` and an unlabeled batch of images."""

    def __init__(self, labeled: Batches, unlabeled: Batches) -> None:
        self.labeled, self.unlabeled = labeled, unlabeled

    def epoch(self):
        for (x, y), (u, _) in zip(self.labeled.epoch(), self.unlabeled.epoch(), strict=True):
            yield x, y, u


def online_batches(setup: TrainingSetup, ratio: float,
                   generator: torch.Generator) -> PairedBatches:
    """An epoch runs over the unlabeled images once (UniMatch), or ``train.steps_per_epoch``
    steps; the labeled batches wrap around as often as that takes."""
    cfg = setup.cfg
    unlabeled = Split(setup.unlabeled, None, [])
    u_batch = max(1, round(cfg.batch_size * ratio))
    steps = cfg.steps_per_epoch or max(1, len(unlabeled) // u_batch)
    return PairedBatches(Batches(setup.train, cfg.batch_size, setup.device, generator, steps),
                         Batches(unlabeled, u_batch, setup.device, generator, steps))


# ----------------------------------------------------------------------------- pieces
def confident_loss(task: Task, logits: torch.Tensor, target: torch.Tensor,
                   confident: torch.Tensor) -> torch.Tensor:
    """The task's pixel loss towards ``target`` summed over ``confident`` pixels, divided
    by all pixels."""
    return (task.pixel_loss(logits, target) * confident).sum() / confident.numel()


def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher ← decay·teacher + (1 - decay)·student`` for the weights; buffers (BatchNorm
    statistics) are copied."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
            t.lerp_(s.detach(), 1.0 - decay)
        for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
            t.copy_(s)


def ema_decay_at(decay: float, step: int) -> float:
    """Mean Teacher's warm-up: the true average of the weights so far until ``decay`` is
    reached (``min(decay, 1 - 1/(step + 1))``, step counted from 0)."""
    return min(decay, 1.0 - 1.0 / (step + 1))


def unwrap(model: nn.Module) -> nn.Module:
    """The net inside a DDP or torch.compile wrapper."""
    for attr in ("module", "_orig_mod"):
        while hasattr(model, attr) and isinstance(getattr(model, attr), nn.Module):
            model = getattr(model, attr)
    return model


def forward_perturbed(model: nn.Module, x: torch.Tensor,
                      dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, logits with channel dropout on the encoder features)`` in one encoder pass.

    Both come from the model's own forward (``feature_dropout``, :mod:`imseg.models.perturb`:
    the tiny U-Net and smp models of every family), called through ``model`` so DDP and
    ``torch.compile`` see an ordinary call.
    """
    net = unwrap(model)
    if "feature_dropout" not in inspect.signature(net.forward).parameters:
        raise ConfigError(f"the unimatch trainer's feature perturbation needs a model whose "
                          f"forward takes feature_dropout; {type(net).__name__} does not")
    clean, perturbed = model(x, feature_dropout=dropout).chunk(2)
    return clean, perturbed


# ------------------------------------------------------------------------------ epochs
class OnlineEpochs:
    """fit's ``epoch_fn`` for one model under an online trainer."""

    def __init__(self, trainer: OnlineTrainer, setup: TrainingSetup,
                 generator: torch.Generator) -> None:
        self.trainer, self.setup, self.generator = trainer, setup, generator
        self.batches = online_batches(setup, trainer.unlabeled_ratio, generator)
        self.teacher: nn.Module | None = None
        self.steps = 0

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        after = None
        if self.trainer.teacher_decay() is not None:
            if self.teacher is None:
                self.teacher = copy.deepcopy(unwrap(model))
            after = lambda: self._update_teacher(model)  # noqa: E731
        return run_epoch(model, optimizer, self.batches,
                         lambda x, y, u: self.loss(model, x, y, u), after_step=after)

    def _update_teacher(self, model: nn.Module) -> None:
        decay = self.trainer.teacher_decay()
        assert self.teacher is not None and decay is not None
        ema_update(self.teacher, unwrap(model), ema_decay_at(decay, self.steps))
        self.steps += 1

    def _weak(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The same random flip/rotation of each image for every tensor given."""
        first = tensors[0]
        codes = random_geometry(first.shape[0], self.setup.geometry, self.generator,
                                square=first.shape[-2] == first.shape[-1])
        return [apply_geometry(t, codes) for t in tensors]

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        return to_input(images, self.setup.device, self.setup.cfg.channels_last)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             u: torch.Tensor) -> torch.Tensor:
        """One step's loss: labeled + weighted confident losses of every unlabeled stream."""
        t, task, cfg, device = self.trainer, self.setup.task, self.setup.cfg, self.setup.device
        if t.weak_labeled:
            x, y = self._weak(x, y)
        (u,) = self._weak(u)
        n_x = x.shape[0]
        feature_weight, dropout = t.feature_stream()
        perturbed = None
        with autocast(device, cfg.amp):
            if self.teacher is not None:  # the EMA teacher labels; the model sees x only
                logits_x = model(self._input(x))
                with torch.no_grad():
                    self.teacher.train()
                    logits_u = self.teacher(self._input(u))
            elif feature_weight > 0:
                logits, perturbed = forward_perturbed(model, self._input(torch.cat((x, u))),
                                                      dropout)
                logits_x, logits_u, perturbed = logits[:n_x], logits[n_x:], perturbed[n_x:]
            else:
                logits = model(self._input(torch.cat((x, u))))
                logits_x, logits_u = logits[:n_x], logits[n_x:]
        target, confidence = task.pseudo_label(task.activate(logits_u.detach()))
        confident = confidence >= t.threshold
        loss = t.labeled_weight * task.loss(logits_x, y)
        views, targets, masks = self.strong_views(u, target, confident)
        with autocast(device, cfg.amp):
            strong_logits = model(self._input(torch.cat(views))).chunk(len(views))
        for weight, out, tgt, mask in zip(t.strong_weights, strong_logits, targets, masks,
                                          strict=True):
            loss = loss + weight * confident_loss(task, out, tgt, mask)
        if perturbed is not None:
            loss = loss + feature_weight * confident_loss(task, perturbed, target, confident)
        return loss

    def strong_views(self, u: torch.Tensor, target: torch.Tensor, confident: torch.Tensor):
        """One strong view per strong weight, each CutMixed with the previous image of the batch,
        its pseudo label and confidence mask mixed with the same box."""
        t, g = self.trainer, self.generator
        n, _, h, w = u.shape
        partner = torch.roll(torch.arange(n), 1)
        views, targets, masks = [], [], []
        for _ in t.strong_weights:
            box = cutmix_boxes(n, h, w, t.cutmix_prob, g)
            views.append(cutmix(strong_view(u, t.strong.params(), g), box, partner))
            targets.append(cutmix(target, box, partner))
            masks.append(cutmix(confident, box, partner))
        return views, targets, masks
