"""Labelers: how teachers turn unlabeled images into pseudo-labeled pairs.

A labeler is a recipe part (:mod:`imseg.parts`): a :class:`LabelerPart`
subclass registered in ``LABELERS`` under the name a recipe uses, whose fields
are its settings and whose :meth:`~LabelerPart.label` makes the pseudo set. They
all stream the unlabeled images in batches through :func:`label_in_batches`;
only what differs (how a batch of teacher predictions becomes labels) is written
per labeler. What a labeler needs from the run (an EvalNet scorer, state across
generations) it declares in its ``needs`` and receives as
``LabelingInput.services``. The ``evalnet_select`` labeler is registered by
:mod:`imseg.evalnet.select`, the layer that knows EvalNets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from imseg.config import AmpMode, InconsistencyConfig, SSLConfig
from imseg.data.augment import (
    AugmentParams,
    apply_geometry,
    invert_geometry,
    photometric,
    random_geometry,
)
from imseg.logs import ProgressLines
from imseg.parts import Needs, Part, PartRegistry
from imseg.pseudo.inconsistency import agreement, binary_keep, block, erode, im_fraction, refine
from imseg.pseudo.state import StateStore
from imseg.tasks import IM_CLASS, Task
from imseg.training.inference import autocast, to_input

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(images uint8 (N, C, H, W), masks uint8 (N, L, H, W)) -> (N,)`` predicted IoU."""


@dataclass
class PartServices:
    """What the run provides to parts whose ``needs`` ask for it (:class:`imseg.parts.Needs`):
    labelers, and copies by score."""

    scorer: Scorer | None = None
    """The EvalNet ensemble of the kind the part needs."""
    auto_thresholds: Callable[[], dict[str, float]] | None = None
    """The thresholds chosen on val for that kind (``threshold``, ``min_threshold``,
    ``max_threshold``), read on first use: for settings the part leaves empty."""
    state: StateStore | None = None
    """The chain's saved state per generation."""


@dataclass
class LabelingInput:
    """What a labeler needs; ``n`` is the teacher count of the chain (or views)."""

    task: Task
    teachers: list[nn.Module]
    images: torch.Tensor
    """Unlabeled images, uint8 ``(N, C, H, W)`` on CPU."""
    device: torch.device
    generator: torch.Generator
    batch_size: int = SSLConfig().pseudo_batch_size
    """Images per teacher pass (``ssl.pseudo_batch_size``)."""
    n: int = 1
    rotate: bool = True
    amp: AmpMode | bool = True
    sample_index: list[int] = field(default_factory=list)
    """Images whose per-teacher labels are kept for figures."""
    generation: int = 1
    """The generation being labeled (1-based)."""
    services: PartServices = field(default_factory=PartServices)
    name: str = "pseudo-labeling"
    """What progress lines of a long pass call it (``im r0 n3 g1: pseudo-labeling``)."""


@dataclass
class PseudoSet:
    """Pseudo-labeled pairs (on CPU) and what was learned while making them."""

    images: torch.Tensor
    labels: torch.Tensor
    source: torch.Tensor
    """Index of each pair's image in the unlabeled split."""
    mask: torch.Tensor | None = None
    """Inconsistency (or disagreement) mask of each kept pair, bool ``(M, 1, H, W)``."""
    im_fraction: float | None = None
    """Mean IM fraction over every labeled image, kept or not."""
    scores: torch.Tensor | None = None
    """Predicted quality per pair (EvalNet labelers), for copies by score."""
    teacher_labels: dict[int, torch.Tensor] = field(default_factory=dict)
    n_input: int = 0

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class BatchResult:
    images: torch.Tensor
    labels: torch.Tensor
    keep: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    teacher_labels: torch.Tensor | None = None


BatchFn = Callable[[torch.Tensor], BatchResult]


@torch.no_grad()
def teacher_probs(models: list[nn.Module], x: torch.Tensor, task: Task, device: torch.device,
                  amp: AmpMode | bool) -> torch.Tensor:
    """``(T, B, out_channels, H, W)`` probabilities of every teacher for a uint8 batch."""
    inp = to_input(x, device)
    with autocast(device, amp):
        return torch.stack([task.activate(m(inp)) for m in models]).float()


class _Gathered:
    """Kept rows of every batch written into one buffer allocated on first use.

    One block of at most N rows instead of a list of pieces joined at the end:
    no second copy while joining, and no long-lived pieces scattered between a
    batch's freed activations (which keeps the heap from fragmenting on CPU).
    """

    def __init__(self, total: int) -> None:
        self.total, self.count, self.buffer = total, 0, None

    def put(self, rows: torch.Tensor) -> None:
        rows = rows.cpu()
        if self.buffer is None:
            self.buffer = torch.empty((self.total, *rows.shape[1:]), dtype=rows.dtype)
        self.buffer[self.count : self.count + rows.shape[0]] = rows
        self.count += rows.shape[0]

    def result(self, empty: torch.Tensor | None = None) -> torch.Tensor | None:
        """The gathered rows, or ``empty`` when no batch came (an empty unlabeled split)."""
        return empty if self.buffer is None else self.buffer[: self.count]


@torch.no_grad()
def label_in_batches(inp: LabelingInput, batch_fn: BatchFn) -> PseudoSet:
    """Run ``batch_fn`` over the unlabeled images in batches and gather a PseudoSet."""
    for m in inp.teachers:
        m.eval()
    bs = inp.batch_size
    n = inp.images.shape[0]
    images, labels, sources, masks = (_Gathered(n) for _ in range(4))
    fractions: list[torch.Tensor] = []
    teacher_samples: dict[int, torch.Tensor] = {}
    wanted = set(inp.sample_index)
    progress = ProgressLines(inp.name, n)
    for start in range(0, n, bs):
        x = inp.images[start : start + bs].to(inp.device)
        out = batch_fn(x)
        idx = torch.arange(start, start + x.shape[0])
        keep = out.keep.cpu() if out.keep is not None else torch.ones(len(idx), dtype=torch.bool)
        if out.mask is not None:
            fractions.append(im_fraction(out.mask).cpu())
            masks.put(out.mask[keep.to(out.mask.device)])
        if out.teacher_labels is not None:
            for j, i in enumerate(idx.tolist()):
                if i in wanted:
                    teacher_samples[i] = out.teacher_labels[:, j].cpu()
        images.put(out.images[keep.to(out.images.device)])
        labels.put(out.labels[keep.to(out.labels.device)])
        sources.put(idx[keep])
        progress.update(start + x.shape[0])
    task = inp.task
    h, w = inp.images.shape[-2:]
    empty_img = torch.empty((0, inp.images.shape[1], h, w), dtype=torch.uint8)
    empty_lab = torch.empty((0, task.label_channels, h, w), dtype=torch.uint8)
    return PseudoSet(
        images=images.result(empty_img),
        labels=labels.result(empty_lab),
        source=sources.result(torch.empty(0, dtype=torch.long)),
        mask=masks.result(),
        im_fraction=float(torch.cat(fractions).mean()) if fractions else None,
        teacher_labels=teacher_samples,
        n_input=n,
    )


# ----------------------------------------------------------------------------- labelers
class LabelerPart(Part):
    """Base of the labelers: settings as fields, :meth:`label` makes the pseudo set."""

    MAKES_PAIRS: ClassVar[bool] = True
    """False for ``none``: the recipe trains on its labeled pairs only."""

    def label(self, inp: LabelingInput) -> PseudoSet:
        """The pseudo-labeled pairs of ``inp.images``."""
        raise NotImplementedError(f"the {self.name} labeler makes no pseudo pairs")


LABELERS = PartRegistry("labeler")


@LABELERS.register
class NoLabeler(LabelerPart):
    """No pseudo labels (a trainer that learns from the unlabeled images itself)."""

    name: Literal["none"] = "none"
    MAKES_PAIRS: ClassVar[bool] = False


@LABELERS.register
class ThresholdLabeler(LabelerPart):
    """The top-1 teacher's thresholded (argmax) prediction."""

    name: Literal["threshold"] = "threshold"

    def label(self, inp: LabelingInput) -> PseudoSet:
        task, teacher = inp.task, inp.teachers[:1]

        def batch(x: torch.Tensor) -> BatchResult:
            label = task.to_label(teacher_probs(teacher, x, task, inp.device, inp.amp)[0])
            return BatchResult(x, label, teacher_labels=label[None])

        return label_in_batches(inp, batch)


@LABELERS.register
class ModelEnsembleLabeler(LabelerPart):
    """Hard vote: positive (a class) only where every teacher agrees; soft vote: the
    thresholded mean. Disagreement is recorded as a mask but not blocked."""

    name: Literal["model_ensemble"] = "model_ensemble"
    soft_vote: bool = Field(False, description="argmax of the mean instead of all-agree")
    GLOBALS: ClassVar[dict[str, str]] = {"soft_vote": "ssl.soft_vote"}

    def label(self, inp: LabelingInput) -> PseudoSet:
        task = inp.task

        def batch(x: torch.Tensor) -> BatchResult:
            probs = teacher_probs(inp.teachers, x, task, inp.device, inp.amp)
            votes = task.to_label(probs.flatten(0, 1)).unflatten(0, probs.shape[:2])
            agreed = agreement(task, votes)
            label = task.to_label(probs.mean(dim=0)) if self.soft_vote else agreed.label
            return BatchResult(x, label, mask=agreed.mask, teacher_labels=votes)

        return label_in_batches(inp, batch)


LIGHT_NOISE = AugmentParams(flip_h=False, flip_v=False, rotate=False, brightness_prob=0.5,
                            alpha_range=(0.9, 1.1), beta_range=(-5.0, 5.0), max_blur=0,
                            max_noise=5)
"""The input ensemble's photometric noise on every view but the first."""


@LABELERS.register
class InputEnsembleLabeler(LabelerPart):
    """The top-1 teacher on ``views`` random flips/rotations with light photometric
    noise; predictions are transformed back and kept where all views agree. Images
    whose prediction is empty after a 5×5 erosion are dropped (binary, multilabel)."""

    name: Literal["input_ensemble"] = "input_ensemble"
    views: int = Field(0, ge=0, description="0: 2n - 1 for teacher count n")
    GLOBALS: ClassVar[dict[str, str]] = {"views": "ssl.input_ensemble_views"}

    def needs(self) -> Needs:
        return Needs(per_teacher_count=True)

    def label(self, inp: LabelingInput) -> PseudoSet:
        task, teacher = inp.task, inp.teachers[:1]
        views = self.views or (2 * inp.n - 1)
        geometry = AugmentParams(rotate=inp.rotate)

        def batch(x: torch.Tensor) -> BatchResult:
            per_view = []
            for v in range(views):
                if v == 0:
                    codes = torch.zeros(x.shape[0], dtype=torch.long)  # the image as it is
                else:
                    codes = random_geometry(x.shape[0], geometry, inp.generator,
                                            square=x.shape[-2] == x.shape[-1])
                xv = photometric(apply_geometry(x, codes), LIGHT_NOISE, inp.generator) if v else x
                label = task.to_label(teacher_probs(teacher, xv, task, inp.device, inp.amp)[0])
                per_view.append(invert_geometry(label, codes))
            votes = torch.stack(per_view)
            agreed = agreement(task, votes)
            keep = None
            if task.kind != "multiclass":
                core = erode(agreed.label.amax(dim=1, keepdim=True).bool(), 5)
                keep = core.flatten(1).any(dim=1)
            return BatchResult(x, agreed.label, keep=keep, mask=agreed.mask, teacher_labels=votes)

        return label_in_batches(inp, batch)


@LABELERS.register
class InconsistencyLabeler(LabelerPart, InconsistencyConfig):
    """The Inconsistency Mask: agreed label, IM refined, input and label blocked, and
    (binary) the keep/drop filter. Its settings are ``ssl.inconsistency``'s plus
    ``ignore_im`` (IM pixels VOID in the label instead of background / class 0;
    ``train.ignore_im``)."""

    name: Literal["inconsistency"] = "inconsistency"
    ignore_im: bool = False
    GLOBALS: ClassVar[dict[str, str]] = {
        **{f: f"ssl.inconsistency.{f}" for f in InconsistencyConfig.model_fields},
        "ignore_im": "train.ignore_im",
    }

    def label(self, inp: LabelingInput) -> PseudoSet:
        task = inp.task
        filtered = task.kind == "binary" and self.binary_filter

        def batch(x: torch.Tensor) -> BatchResult:
            probs = teacher_probs(inp.teachers, x, task, inp.device, inp.amp)
            votes = task.to_label(probs.flatten(0, 1)).unflatten(0, probs.shape[:2])
            agreed = agreement(task, votes)
            mask = refine(agreed.mask, self.erode, self.dilate)
            images, label = block(task, x, agreed.label, mask, self.block_input,
                                  self.block_output, self.ignore_im)
            keep = binary_keep(agreed.label, mask) if filtered else None
            return BatchResult(images, label, keep=keep, mask=mask, teacher_labels=votes)

        return label_in_batches(inp, batch)


__all__ = ["LABELERS", "IM_CLASS", "LabelerPart", "LabelingInput", "PartServices", "PseudoSet",
           "label_in_batches"]
