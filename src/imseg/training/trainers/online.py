"""Online SSL trainers: FixMatch, UniMatch, Mean Teacher and ``mean_teacher_cutmix``
(docs/method.md §6, "Online SSL trainers").

Every step takes a labeled batch and an unlabeled batch (``unlabeled_ratio`` times as
large). Both get a weak view: a random flip/rotation the data set allows, or
(``weak_view: scale_crop``, UniMatch's natural-image view) a random rescale cropped
back to size and a horizontal flip, padded pixels VOID in labels and left out of the
unsupervised losses.

Weak-to-strong trainers (:class:`OnlineEpochs`): the unlabeled weak view's
prediction, by the model itself (FixMatch, UniMatch) or by an EMA copy of it
(``mean_teacher_cutmix``), gives a pseudo label and a confidence per pixel
(:meth:`imseg.tasks.Task.pseudo_label`). Strong views (:mod:`imseg.data.strong`:
colour jitter, grey, blur, then CutMix with another image of the batch, pasting
image and pseudo label with the same box) are trained towards those labels where
the confidence reaches ``threshold``; the other pixels add nothing. As in
UniMatch, an unsupervised loss is summed over confident pixels and divided by all
(unpadded) pixels, so a batch with few confident pixels pulls little. UniMatch adds
a second strong view and a feature-perturbation stream: the weak view decoded after
channel dropout on the encoder features (inside the model's forward,
:mod:`imseg.models.perturb`), trained towards the same pseudo labels. Loss = labeled
+ 0.25·strong1 + 0.25·strong2 + 0.5·feature (UniMatch halves the sum as well, which
AdamW's scale invariance makes moot).

The standard Mean Teacher (:class:`MeanTeacherEpochs`, SSL4MIS): labeled loss +
w(t)·MSE between the student's and the EMA teacher's probabilities on the same weak
view, the teacher's input with clipped Gaussian noise, w(t) = 0.1·exp(-5(1 - t)²).
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from imseg.config import ScaleRange, Section, WeakView
from imseg.data.augment import (
    apply_geometry,
    apply_scale_crop,
    random_geometry,
    random_scale_crop,
)
from imseg.data.dataset import Split
from imseg.data.strong import StrongParams, cutmix, cutmix_boxes, strong_view
from imseg.errors import ConfigError
from imseg.tasks import VOID, Task
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
    """Settings every online trainer shares: the batches and the weak view."""

    unlabeled_ratio: float = Field(1.0, gt=0, description="unlabeled images per labeled "
                                   "image in a step")
    labeled_weight: float = Field(1.0, ge=0)
    weak_labeled: bool = Field(True, description="labeled batches get the weak view too")
    weak_view: WeakView = Field("flips_rotations", description="flips_rotations (the data "
                                "set's) or scale_crop (random rescale, crop, horizontal flip)")
    scale_range: ScaleRange = Field((0.5, 2.0), description="scale_crop's factors")
    GLOBALS: ClassVar[dict[str, str]] = {"weak_view": "ssl.online.weak_view",
                                         "scale_range": "ssl.online.scale_range"}
    USES_UNLABELED: ClassVar[bool] = True

    def teacher_decay(self) -> float | None:
        """The EMA decay of a teacher (None: the model labels its own images)."""
        return None

    def epochs(self, setup: TrainingSetup, generator: torch.Generator) -> PairedEpochs:
        """fit's ``epoch_fn`` for one model."""
        raise NotImplementedError

    def epoch_factory(self, setup: TrainingSetup) -> EpochFactory:
        if setup.unlabeled.shape[0] == 0:
            raise ValueError(f"trainer {self.name} needs unlabeled images")
        return lambda generator: self.epochs(setup, generator)


class WeakToStrong(OnlineTrainer):
    """Strong views trained on hard pseudo labels of the weak view where they are confident;
    defaults are UniMatch's published ones."""

    threshold: float = Field(0.95, ge=0, le=1, description="confidence a pseudo-labeled "
                             "pixel needs to count")
    cutmix_prob: float = Field(0.5, ge=0, le=1, description="chance of a CutMix box per "
                               "strong view")
    strong_weights: tuple[float, ...] = Field((1.0,), min_length=1, description="one weight "
                                              "per strong view")
    strong: StrongAugment = StrongAugment()

    def feature_stream(self) -> tuple[float, float]:
        """``(loss weight, channel dropout)`` of the feature-perturbation stream (0: none)."""
        return 0.0, 0.0

    def epochs(self, setup: TrainingSetup, generator: torch.Generator) -> OnlineEpochs:
        return OnlineEpochs(self, setup, generator)


class EmaTeacher(OnlineTrainer):
    """A teacher that is an exponential moving average of the model's weights."""

    ema_decay: float = Field(0.99, ge=0, lt=1)

    def teacher_decay(self) -> float:
        return self.ema_decay


@TRAINERS.register
class FixMatch(WeakToStrong):
    """One strong view trained on the model's own confident weak-view labels."""

    name: Literal["fixmatch"] = "fixmatch"


@TRAINERS.register
class UniMatch(WeakToStrong):
    """FixMatch with two strong views and a feature-perturbation stream."""

    name: Literal["unimatch"] = "unimatch"
    strong_weights: tuple[float, ...] = Field((0.25, 0.25), min_length=1)
    feature_weight: float = Field(0.5, ge=0)
    feature_dropout: float = Field(0.5, ge=0, lt=1, description="channel dropout on the "
                                   "encoder features")

    def feature_stream(self) -> tuple[float, float]:
        return self.feature_weight, self.feature_dropout


@TRAINERS.register
class MeanTeacherCutMix(WeakToStrong, EmaTeacher):
    """FixMatch's strong + CutMix view trained on the EMA teacher's confident hard labels
    (imseg's ``mean_teacher`` before the standard one took that name)."""

    name: Literal["mean_teacher_cutmix"] = "mean_teacher_cutmix"


MEAN_TEACHER_SETTINGS = ("consistency_weight", "rampup_epochs", "noise_std", "noise_clamp")


@TRAINERS.register
class MeanTeacher(EmaTeacher):
    """The standard Mean Teacher (SSL4MIS ``train_mean_teacher_2D``): the MSE between the
    student's and the EMA teacher's probabilities on the same weak view, the teacher's input
    with Gaussian noise, weighted by a sigmoid ramp-up."""

    name: Literal["mean_teacher"] = "mean_teacher"
    consistency_weight: float = Field(0.1, ge=0)
    rampup_epochs: float | None = Field(None, gt=0)
    noise_std: float = Field(0.1, ge=0)
    noise_clamp: float = Field(0.2, ge=0)
    GLOBALS: ClassVar[dict[str, str]] = {
        **OnlineTrainer.GLOBALS,
        **{key: f"ssl.online.mean_teacher.{key}" for key in MEAN_TEACHER_SETTINGS}}

    def epochs(self, setup: TrainingSetup, generator: torch.Generator) -> MeanTeacherEpochs:
        return MeanTeacherEpochs(self, setup, generator)


# ------------------------------------------------------------------------- batches
class PairedBatches:
    """Each step a labeled batch ``(images, labels)`` and an unlabeled batch of images;
    ``steps`` per epoch."""

    def __init__(self, labeled: Batches, unlabeled: Batches) -> None:
        self.labeled, self.unlabeled = labeled, unlabeled
        self.steps = unlabeled.steps

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
                   confident: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The task's pixel loss towards ``target`` summed over ``confident`` pixels, divided
    by all ``valid`` pixels (bool ``(N, 1, H, W)``: those the weak view did not pad; None:
    all), as UniMatch divides by the pixels its ignore mask keeps."""
    if valid is None:
        return (task.pixel_loss(logits, target) * confident).sum() / confident.numel()
    valid = valid.expand_as(confident)
    kept = confident & valid
    return (task.pixel_loss(logits, target) * kept).sum() / valid.sum().clamp_min(1)


def probability_mse(task: Task, student: torch.Tensor, teacher: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
    """Mean Teacher's consistency: the squared difference of the student's and the teacher's
    probabilities (softmax, or sigmoid per channel), averaged over every channel of the
    ``valid`` pixels (bool ``(N, 1, H, W)``)."""
    squared = (task.activate(student) - task.activate(teacher.detach())).square()
    valid = valid.expand_as(squared)
    return (squared * valid).sum() / valid.sum().clamp_min(1)


def sigmoid_rampup(progress: float) -> float:
    """``exp(-5 (1 - t)²)`` for ``t`` = ``progress`` clipped to 0..1 (Laine & Aila's ramp-up,
    Mean Teacher's consistency weight): about 0.0067 at the start, 1 at the end."""
    t = min(max(progress, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


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
class PairedEpochs:
    """fit's ``epoch_fn`` for one model under an online trainer: the paired batches, the
    weak view, and the EMA teacher of trainers that have one; subclasses give the loss."""

    def __init__(self, trainer: OnlineTrainer, setup: TrainingSetup,
                 generator: torch.Generator) -> None:
        self.trainer, self.setup, self.generator = trainer, setup, generator
        self.batches = online_batches(setup, trainer.unlabeled_ratio, generator)
        self.teacher: nn.Module | None = None
        self.steps = 0
        self._saved_teacher: dict | None = None

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        after = None
        if self.trainer.teacher_decay() is not None:
            self.teacher_of(model)
            after = lambda: self._update_teacher(model)  # noqa: E731
        return run_epoch(model, optimizer, self.batches,
                         lambda x, y, u: self.loss(model, x, y, u), after_step=after)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def teacher_of(self, model: nn.Module) -> nn.Module:
        """The EMA teacher, a copy of ``model`` when first asked for (with a snapshot's
        teacher weights when training resumes)."""
        if self.teacher is None:
            self.teacher = copy.deepcopy(unwrap(model))
            if self._saved_teacher is not None:
                self.teacher.load_state_dict(self._saved_teacher)
                self._saved_teacher = None
        return self.teacher

    def state_dict(self) -> dict:
        """The trainer's own state for a snapshot (:mod:`imseg.training.snapshot`): its step
        count and its EMA teacher's weights."""
        teacher = None if self.teacher is None else self.teacher.state_dict()
        return {"steps": self.steps, "teacher": teacher}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.teacher, self._saved_teacher = None, state["teacher"]

    def _update_teacher(self, model: nn.Module) -> None:
        decay = self.trainer.teacher_decay()
        assert self.teacher is not None and decay is not None
        ema_update(self.teacher, unwrap(model), ema_decay_at(decay, self.steps))
        self.steps += 1

    def weak_views(self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor):
        """``(x, y, u, valid)``: the weak views of the labeled pairs (unless ``weak_labeled``
        is off) and of the unlabeled images, and bool ``(N_u, 1, H, W)`` marking the
        unlabeled pixels the view did not pad."""
        if self.trainer.weak_labeled:
            x, y = self.weak_view(x, y, VOID)
        ones = torch.ones((u.shape[0], 1, *u.shape[-2:]), dtype=torch.uint8, device=u.device)
        u, valid = self.weak_view(u, ones, 0)
        return x, y, u, valid.bool()

    def weak_view(self, images: torch.Tensor, labels: torch.Tensor,
                  fill: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One random weak view of each image, the same for its labels (``fill`` where a
        shrunk image leaves the crop): the data set's flips/rotations, or (``scale_crop``) a
        rescale by a factor in ``scale_range``, cropped back to size, then the data set's
        horizontal flip."""
        t, geometry = self.trainer, self.setup.geometry
        n, _, height, width = images.shape
        if t.weak_view == "scale_crop":
            plan = random_scale_crop(n, height, width, t.scale_range, self.generator)
            images = apply_scale_crop(images, plan, fill=0, smooth=True)
            labels = apply_scale_crop(labels, plan, fill=fill, smooth=False)
            geometry = geometry.with_(flip_v=False, rotate=False)
        codes = random_geometry(n, geometry, self.generator, square=height == width)
        return apply_geometry(images, codes), apply_geometry(labels, codes)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        return to_input(images, self.setup.device, self.setup.cfg.channels_last)


class OnlineEpochs(PairedEpochs):
    """Weak-to-strong steps (FixMatch, UniMatch, ``mean_teacher_cutmix``)."""

    trainer: WeakToStrong

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             u: torch.Tensor) -> torch.Tensor:
        """One step's loss: labeled + weighted confident losses of every unlabeled stream."""
        t, task, cfg, device = self.trainer, self.setup.task, self.setup.cfg, self.setup.device
        x, y, u, valid = self.weak_views(x, y, u)
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
        confident = (confidence >= t.threshold) & valid.to(confidence.device)
        loss = t.labeled_weight * task.loss(logits_x, y)
        views, targets, masks, valids = self.strong_views(u, target, confident, valid)
        with autocast(device, cfg.amp):
            strong_logits = model(self._input(torch.cat(views))).chunk(len(views))
        for weight, out, tgt, mask, kept in zip(t.strong_weights, strong_logits, targets, masks,
                                                valids, strict=True):
            loss = loss + weight * confident_loss(task, out, tgt, mask, kept)
        if perturbed is not None:
            loss = loss + feature_weight * confident_loss(task, perturbed, target, confident,
                                                          valid)
        return loss

    def strong_views(self, u: torch.Tensor, target: torch.Tensor, confident: torch.Tensor,
                     valid: torch.Tensor | None = None):
        """One strong view per strong weight, each CutMixed with the previous image of the batch,
        its pseudo label, confidence mask and valid pixels mixed with the same box."""
        t, g = self.trainer, self.generator
        n, _, h, w = u.shape
        if valid is None:
            valid = torch.ones((n, 1, h, w), dtype=torch.bool, device=u.device)
        partner = torch.roll(torch.arange(n), 1)
        views, targets, masks, valids = [], [], [], []
        for _ in t.strong_weights:
            box = cutmix_boxes(n, h, w, t.cutmix_prob, g)
            views.append(cutmix(strong_view(u, t.strong.params(), g), box, partner))
            targets.append(cutmix(target, box, partner))
            masks.append(cutmix(confident, box, partner))
            valids.append(cutmix(valid, box, partner))
        return views, targets, masks, valids


class MeanTeacherEpochs(PairedEpochs):
    """The standard Mean Teacher's steps: labeled loss + ramped-up weight · the MSE between
    the student's and the EMA teacher's probabilities on the same weak view of the
    unlabeled batch, the teacher's copy with clipped Gaussian noise (SSL4MIS)."""

    trainer: MeanTeacher

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             u: torch.Tensor) -> torch.Tensor:
        t, task, cfg, device = self.trainer, self.setup.task, self.setup.cfg, self.setup.device
        x, y, u, valid = self.weak_views(x, y, u)
        teacher = self.teacher_of(model)
        with autocast(device, cfg.amp):
            logits = model(self._input(torch.cat((x, u))))
            with torch.no_grad():
                teacher.train()
                teacher_logits = teacher(self.noisy_input(u))
        logits_x, logits_u = logits[:x.shape[0]], logits[x.shape[0]:]
        consistency = probability_mse(task, logits_u, teacher_logits, valid.to(device))
        return t.labeled_weight * task.loss(logits_x, y) + self.consistency_weight() * consistency

    def noisy_input(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's input: the images plus Gaussian noise of ``noise_std``, clipped to
        ± ``noise_clamp`` (in image ranges; SSL4MIS's images are 0..1, imseg's 0..255)."""
        t = self.trainer
        noise = torch.randn(images.shape, generator=self.generator) * t.noise_std
        noise = noise.clamp(-t.noise_clamp, t.noise_clamp) * 255.0
        x = self._input(images)
        return x + noise.to(x.device)

    def consistency_weight(self) -> float:
        """``consistency_weight`` times the sigmoid ramp-up at this step; the ramp-up spans
        ``rampup_epochs`` (None: all of ``train.epochs``) of this trainer's steps."""
        t = self.trainer
        epochs = t.rampup_epochs or self.setup.cfg.epochs
        return t.consistency_weight * sigmoid_rampup(self.steps / (epochs * self.batches.steps))
