"""The three task kinds (binary, multilabel, multiclass) in one place.

Everything that differs between the kinds lives here, so no other module
branches on a data set's name: output channels and activation, how a
probability map becomes a label, how masks are encoded on disk and in memory,
the loss and its ignore rule, and the headline metric.

In-memory label encoding ("targets", uint8 tensors):

* binary      ``(N, 1, H, W)``: 0 background, 1 foreground, ``VOID`` ignored.
* multilabel  ``(N, C, H, W)``: per channel 0/1, ``VOID`` ignored.
* multiclass  ``(N, 1, H, W)``: ``k + 1`` for class ``k`` of dataset.yaml,
  ``IM_CLASS`` (0) for the inconsistency-mask class the model learns as an
  ordinary class (the reference's choice), ``VOID`` ignored.

``VOID`` pixels never reach a loss or a metric: void labels of the data set
(e.g. CamVid's 11) and, with the ``ignore`` loss option, inconsistency-mask
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

TaskKind = Literal["binary", "multilabel", "multiclass"]
TASK_KINDS: tuple[str, ...] = ("binary", "multilabel", "multiclass")

VOID = 255
"""In-memory label value left out of losses and metrics."""

IM_CLASS = 0
"""Multiclass target value (and output channel) of the inconsistency mask."""

TEST_METRICS: tuple[str, ...] = ("cell_count",)
"""Extra metrics a data set may ask for on its test split (dataset.yaml ``test_metrics``;
scored by :class:`imseg.evaluation.metrics.MetricAccumulator`): ``cell_count``, HeLa's cell-count error."""

DISK_BINARY_VOID = 128
"""Binary and multilabel masks on disk: 0 background, 255 foreground, 128 void."""

DISK_MULTICLASS_VOID = 255
"""Multiclass masks on disk hold class ids 0..C-1; 255 is void."""


@dataclass(frozen=True)
class Task:
    """Behaviour of one task kind for a data set with ``n_classes`` classes.

    ``n_classes`` counts foreground channels for binary (1) and multilabel (C),
    and all classes including background for multiclass (C). ``headline``: the
    positions in :attr:`eval_classes` whose mean is the headline score (empty: all),
    e.g. HeLa's alive and dead channels without position (dataset.yaml's
    ``headline_classes``). ``test_metrics``: names from :data:`TEST_METRICS` scored on the
    test split besides the IoU.
    """

    kind: TaskKind
    n_classes: int
    headline: tuple[int, ...] = ()
    test_metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; choose one of {TASK_KINDS}")
        if self.kind == "binary" and self.n_classes != 1:
            raise ValueError("a binary task has exactly one foreground class")
        if self.kind == "multilabel" and not 1 <= self.n_classes <= 4:
            raise ValueError("multilabel masks are stored as PNG channels: 1 to 4 labels")
        if self.kind == "multiclass" and not 2 <= self.n_classes <= 254:
            raise ValueError("a multiclass task has 2 to 254 classes")
        k = len(self.eval_classes)
        if any(not 0 <= i < k for i in self.headline) or len(set(self.headline)) < len(
                self.headline):
            raise ValueError(f"headline positions {list(self.headline)} must be distinct, "
                             f"in 0..{k - 1}")
        unknown = [m for m in self.test_metrics if m not in TEST_METRICS]
        if unknown:
            raise ValueError(f"unknown test_metrics {unknown}; known: {list(TEST_METRICS)}")
        if "cell_count" in self.test_metrics and (self.kind, self.n_classes) != ("multilabel", 3):
            raise ValueError("test_metrics cell_count needs multilabel alive, dead, position "
                             "channels (HeLa)")

    # ------------------------------------------------------------------ shapes
    @property
    def out_channels(self) -> int:
        """Channels of the network output (multiclass adds the IM class 0)."""
        return self.n_classes + 1 if self.kind == "multiclass" else self.n_classes

    @property
    def label_channels(self) -> int:
        """Channels of an in-memory label tensor."""
        return self.n_classes if self.kind == "multilabel" else 1

    @property
    def eval_classes(self) -> list[int]:
        """Label values (multiclass) or channels (others) that metrics score."""
        if self.kind == "multiclass":
            return list(range(1, self.n_classes + 1))
        return list(range(self.n_classes))

    @property
    def headline_positions(self) -> list[int]:
        """Positions in :attr:`eval_classes` the headline score averages."""
        return list(self.headline) or list(range(len(self.eval_classes)))

    # -------------------------------------------------------------- activation
    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Network logits → probabilities (sigmoid or softmax over channels)."""
        if self.kind == "multiclass":
            return logits.float().softmax(dim=1)
        return logits.float().sigmoid()

    def to_label(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(N, out_channels, H, W)`` → uint8 label ``(N, label_channels, H, W)``.

        Binary and multilabel: p > 0.5. Multiclass: argmax over the real classes
        (channel 0, the IM class, is never predicted for a final label).
        """
        if self.kind == "multiclass":
            return (probs[:, 1:].argmax(dim=1, keepdim=True) + 1).to(torch.uint8)
        return (probs > 0.5).to(torch.uint8)

    # --------------------------------------------------------------------- loss
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over non-void pixels.

        Binary and multilabel: mean squared error on the sigmoid output (as the
        reference); multiclass: cross-entropy over the ``C + 1`` channels.
        """
        if self.kind == "multiclass":
            return F.cross_entropy(logits.float(), target[:, 0].long(), ignore_index=VOID)
        valid = target != VOID
        return self.pixel_loss(logits, target).sum() / valid.sum().clamp_min(1)

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of every pixel, ``(N, label_channels, H, W)``, 0 where the target is VOID
        (squared error on the sigmoid, or cross-entropy), for losses weighted per pixel."""
        if self.kind == "multiclass":
            return F.cross_entropy(logits.float(), target[:, 0].long(), ignore_index=VOID,
                                   reduction="none").unsqueeze(1)
        valid = target != VOID
        return (logits.float().sigmoid() - target.float()).square() * valid

    # ------------------------------------------------------------ pseudo labels
    def pseudo_label(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities → ``(label, confidence)``, both ``(N, label_channels, H, W)``: the
        label as :meth:`to_label`, and how sure the prediction is of it (online SSL
        trainers keep pixels whose confidence reaches a threshold).

        Binary and multilabel: per pixel and channel, ``max(p, 1 - p)``. Multiclass: the
        softmax probability of the chosen class.
        """
        label = self.to_label(probs)
        if self.kind == "multiclass":
            return label, probs.float().gather(1, label.long())
        probs = probs.float()
        return label, torch.where(label.bool(), probs, 1.0 - probs)

    # ------------------------------------------------------------ disk ↔ memory
    def encode_mask(self, disk: np.ndarray, void_value: int | None = None) -> np.ndarray:
        """A mask as stored in the prepared layout → in-memory label ``(label_channels, H, W)``.

        ``void_value`` overrides the kind's default void value on disk.
        """
        if self.kind == "multiclass":
            if disk.ndim != 2:
                raise ValueError("a multiclass mask must be a single-channel class-id image")
            void = DISK_MULTICLASS_VOID if void_value is None else void_value
            out = disk.astype(np.int16) + 1
            out[disk == void] = VOID
            return out.astype(np.uint8)[None]
        void = DISK_BINARY_VOID if void_value is None else void_value
        planes = disk[None] if disk.ndim == 2 else np.moveaxis(disk, -1, 0)[: self.n_classes]
        out = (planes > 127).astype(np.uint8)
        out[planes == void] = VOID
        return out

    def decode_mask(self, label: np.ndarray) -> np.ndarray:
        """In-memory label ``(label_channels, H, W)`` → the mask as written to disk.

        Multiclass IM pixels (class 0) are written as void: on disk they are
        "not a class".
        """
        if self.kind == "multiclass":
            out = label[0].astype(np.int16) - 1
            out[(label[0] == VOID) | (label[0] == IM_CLASS)] = DISK_MULTICLASS_VOID
            return out.astype(np.uint8)
        out = np.where(label == VOID, DISK_BINARY_VOID, label.astype(np.uint16) * 255)
        out = out.astype(np.uint8)
        if self.kind == "binary" or self.n_classes == 1:
            return out[0]
        if self.n_classes == 2:  # pad to RGB so any viewer shows it
            out = np.concatenate([out, np.zeros_like(out[:1])])
        return np.moveaxis(out, 0, -1)

    def check_disk_mask(self, disk: np.ndarray, void_value: int | None = None) -> str | None:
        """Why a prepared-layout mask is invalid for this task, or None when it is fine."""
        if self.kind == "multiclass":
            void = DISK_MULTICLASS_VOID if void_value is None else void_value
            if disk.ndim != 2:
                return "multiclass masks must be single-channel class-id images"
            bad = np.unique(disk[(disk >= self.n_classes) & (disk != void)])
            if bad.size:
                return f"values {bad[:8].tolist()} outside the {self.n_classes} classes"
            return None
        void = DISK_BINARY_VOID if void_value is None else void_value
        bad = np.unique(disk[(disk != 0) & (disk != 255) & (disk != void)])
        if bad.size:
            return f"values {bad[:8].tolist()} are not 0/255"
        if self.kind == "multilabel" and disk.ndim == 3 and disk.shape[-1] < self.n_classes:
            return f"{disk.shape[-1]} channels for {self.n_classes} labels"
        return None


def task_from_info(kind: str, classes: list[str], headline_classes: list[str] = (),
                   test_metrics: list[str] = ()) -> Task:
    """The Task of a data set described by dataset.yaml's ``task``, ``classes``,
    ``headline_classes`` (names in ``classes``; empty: all) and ``test_metrics``."""
    unknown = [c for c in headline_classes if c not in classes]
    if unknown:
        raise ValueError(f"headline_classes {unknown} are not among the classes {classes}")
    return Task(kind, len(classes),  # type: ignore[arg-type]
                tuple(classes.index(c) for c in headline_classes), tuple(test_metrics))
