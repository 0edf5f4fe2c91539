"""TensorBoard event files (``pip install 'imseg[tensorboard]'``), written off the hot path.

A :class:`Board` is one TensorBoard *run*: a folder of event files written by
torch's ``SummaryWriter`` (the real ``tensorboard`` package). Training calls an
:data:`EpochHook` once per epoch with an :class:`EpochLog`; what the hook does
with it (a board's scalars, nothing) is the caller's business, so the trainers
stay free of TensorBoard. Only one process writes a board: under torchrun rank 0,
under Ray the worker that trains the model (each writer makes its own file).

Resume: a board opened at step ``s`` marks a restart there (``purge_step``), and
TensorBoard's reader then drops the events at steps ``>= s`` that an earlier,
interrupted writer left behind, so a retrained model's curve appears once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imseg.training import distributed

FOLDER = "tensorboard"
"""The run folder's subfolder holding every board (``tensorboard --logdir RUN/tensorboard``)."""


@dataclass(frozen=True)
class EpochLog:
    """What one finished epoch reports: its mean loss, validation scores and learning rate."""

    epoch: int
    loss: float
    scores: Mapping[str, object]
    lr: float


EpochHook = Callable[[EpochLog], None]
"""Called once per epoch, after validation (``fit(on_epoch=...)``)."""


def learning_rate(optimizer: torch.optim.Optimizer) -> float:
    """The base learning rate of the epoch: the highest group's (a pretrained encoder's
    group runs at a fraction of it), warm-up included."""
    return max(float(group["lr"]) for group in optimizer.param_groups)


def installed() -> bool:
    """Whether the ``tensorboard`` package (which torch's writer needs) is importable."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def writes_here() -> bool:
    """Whether this process writes boards: the package is there and it is not a follower
    rank of torchrun (those train the same model as rank 0)."""
    return installed() and distributed.member().is_writer


def numbers(values: Mapping[str, object], prefix: str = "") -> dict[str, float]:
    """The finite numbers of ``values`` as ``prefix/key`` tags (scores hold text too)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.startswith("n_") \
                and math.isfinite(float(value)):
            out[f"{prefix}/{key}" if prefix else key] = float(value)
    return out


class Board:
    """One TensorBoard run at ``folder``, restarted at ``first_step`` (see the module doc)."""

    def __init__(self, folder: Path, first_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=first_step, flush_secs=30)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, step: int, image: np.ndarray) -> None:
        """``image``: uint8 ``(H, W)`` or ``(H, W, 3)``."""
        self.writer.add_image(tag, image, step, dataformats="HWC" if image.ndim == 3 else "HW")

    def text(self, tag: str, step: int, text: str) -> None:
        self.writer.add_text(tag, text, step)

    def hparams(self, params: Mapping[str, object], metrics: Mapping[str, float]) -> None:
        """``params`` (numbers, text, booleans) with ``metrics`` for the HParams dashboard,
        in this run itself (torch's ``add_hparams`` would open a run of its own)."""
        from torch.utils.tensorboard.summary import hparams

        plain = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
                 for k, v in params.items()}
        for summary in hparams(plain, dict(metrics)):
            self.writer.file_writer.add_summary(summary)
        self.scalars(0, metrics)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def epoch_scalars(log: EpochLog) -> dict[str, float]:
    """An epoch's tags: ``train/loss``, ``train/lr`` and every ``val/<score>``."""
    return {"train/loss": log.loss, "train/lr": log.lr, **numbers(log.scores, "val")}
