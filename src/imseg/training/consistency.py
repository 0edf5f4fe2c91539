"""Consistency-loss training mode (docs/method.md §6): alternate a supervised epoch on the
labeled pairs with an epoch of MSE between the predictions on two photometric
augmentations of the same flipped/rotated unlabeled batch."""

from __future__ import annotations

import torch
from torch import nn

from imseg.config import TrainConfig
from imseg.data.augment import AugmentParams, apply_geometry, photometric, random_geometry
from imseg.data.dataset import Split
from imseg.tasks import Task
from imseg.training.fit import Batches, EpochFn, run_epoch, supervised_epoch
from imseg.training.inference import autocast, to_input

# Three strengths of the photometric pair: (max_blur, max_noise, alpha ±, beta ±).
STRENGTHS: tuple[tuple[int, int, float, float], ...] = (
    (1, 10, 0.15, 10.0),
    (2, 17, 0.30, 17.0),
    (3, 25, 0.50, 25.0),
)


def strength_params(level: int) -> AugmentParams:
    blur, noise, a, b = STRENGTHS[level]
    return AugmentParams(flip_h=False, flip_v=False, rotate=False, brightness_prob=1.0,
                         alpha_range=(1 - a, 1 + a), beta_range=(-b, b), max_blur=blur,
                         max_noise=noise)


def consistency_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches,
                      task: Task, cfg: TrainConfig, device: torch.device, rotate: bool,
                      generator: torch.Generator) -> float:
    """One unsupervised epoch: both views share the geometry, differ in photometrics."""
    geometry = AugmentParams(rotate=rotate)

    def loss_of(images: torch.Tensor, _labels: object) -> torch.Tensor:
        codes = random_geometry(images.shape[0], geometry, generator,
                                square=images.shape[-2] == images.shape[-1])
        flipped = apply_geometry(images, codes)
        params = strength_params(int(torch.randint(len(STRENGTHS), (1,), generator=generator)))
        views = torch.cat([photometric(flipped, params, generator),
                           photometric(flipped, params, generator)])
        with autocast(device, cfg.amp):
            probs = task.activate(model(to_input(views, device, cfg.channels_last)))
        first, second = probs.chunk(2)
        return (first - second).square().mean()

    return run_epoch(model, optimizer, batches, loss_of)


def consistency_epochs(task: Task, labeled: Split, unlabeled: Split, cfg: TrainConfig,
                       device: torch.device, rotate: bool):
    """A factory for ``fit(epoch_fn=...)``: odd epochs supervised, even epochs consistency."""

    def factory(generator: torch.Generator) -> EpochFn:
        sup = Batches(labeled, cfg.batch_size, device, generator, cfg.steps_per_epoch)
        unsup = Batches(unlabeled, cfg.batch_size, device, generator, cfg.steps_per_epoch)

        def epoch_fn(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> float:
            if epoch % 2 == 1:
                return supervised_epoch(model, optimizer, sup, task, cfg, device)
            return consistency_epoch(model, optimizer, unsup, task, cfg, device, rotate,
                                     generator)

        return epoch_fn

    return factory
