"""The trainer part: how a stage's models learn from their training pairs (and, for online
SSL trainers, from the unlabeled images too) inside :func:`imseg.training.fit.fit`.

A trainer is a recipe part (:mod:`imseg.parts`) whose settings are its fields.
:meth:`TrainerPart.epoch_factory` turns it into fit's ``epoch_fn`` for one model
(from the model's seeded generator); ``None`` means fit's own supervised epoch,
the only kind a stage may train fused (:mod:`imseg.training.fused`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field

from imseg.config import TrainConfig
from imseg.data.augment import AugmentParams
from imseg.data.dataset import Split
from imseg.parts import Part, PartRegistry
from imseg.tasks import Task
from imseg.training.fit import EpochFn

EpochFactory = Callable[[torch.Generator], EpochFn]
"""Builds one model's custom epoch from that model's seeded generator."""


@dataclass
class TrainingSetup:
    """What a stage's models train on."""

    task: Task
    train: Split
    """Pairs with labels: the labeled split (and pseudo pairs, for students)."""
    unlabeled: torch.Tensor
    """uint8 ``(N, C, H, W)`` images without labels (online trainers; never their truth)."""
    cfg: TrainConfig
    device: torch.device
    geometry: AugmentParams
    """Flips and rotations the data set allows (the weak view of online trainers)."""
    rotate: bool = True
    """dataset.yaml's ``rotate`` (the consistency loss's views)."""


class TrainerPart(Part):
    """Base of the trainers."""

    FINE_TUNES: ClassVar[bool] = False
    """Students start from their top teacher's weights, and the chain starts from the
    supervised benchmark (the consistency loss)."""
    USES_UNLABELED: ClassVar[bool] = False
    """Trains on the unlabeled images as well (online SSL trainers)."""

    def epoch_factory(self, setup: TrainingSetup) -> EpochFactory | None:
        """fit's custom epoch for this trainer, or None for the plain supervised epoch."""
        return None

    def epoch_count(self) -> int | None:
        """Epochs per model when the trainer sets them (None: ``train.epochs``)."""
        return None

    @property
    def supervised(self) -> bool:
        return self.name == "supervised"

    def stage_name(self, start: str = "ldt") -> str:
        """The ``approach`` of the benchmark stage this trainer trains from ``start`` (``ldt``
        or ``aldt``): ``fixmatch`` (``aldt_fixmatch``), with a short hash of the recipe's own
        settings appended (:meth:`Part.recipe_settings`), so differently set stages of one
        run never share rows. Config-wide values (``ssl.online.*``, a preset's) leave the
        name as it is: the settings check refuses a run folder trained under others."""
        changed = self.recipe_settings()
        name = self.name
        if changed:
            text = json.dumps(changed, sort_keys=True)
            name = f"{name}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"
        return name if start == "ldt" else f"{start}_{name}"


TRAINERS = PartRegistry("trainer")


@TRAINERS.register
class Supervised(TrainerPart):
    """Plain supervised training on the stage's pairs (docs/method.md §3)."""

    name: Literal["supervised"] = "supervised"


@TRAINERS.register
class Consistency(TrainerPart):
    """The consistency loss (docs/method.md §6): fine-tunes the top teacher, odd epochs
    supervised, even epochs MSE between two photometric views of unlabeled batches."""

    name: Literal["consistency"] = "consistency"
    epochs: int = Field(100, ge=2, description="epochs of fine-tuning")
    GLOBALS: ClassVar[dict[str, str]] = {"epochs": "ssl.consistency_epochs"}
    FINE_TUNES: ClassVar[bool] = True
    USES_UNLABELED: ClassVar[bool] = True

    def epoch_factory(self, setup: TrainingSetup) -> EpochFactory:
        from imseg.training.consistency import consistency_epochs

        unlabeled = Split(setup.unlabeled, None, [])
        return consistency_epochs(setup.task, setup.train, unlabeled, setup.cfg, setup.device,
                                  setup.rotate)

    def epoch_count(self) -> int:
        return self.epochs
