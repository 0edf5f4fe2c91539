"""Following a study while it trains: start lines in ``log.txt`` and TensorBoard boards.

With ``log.tensorboard`` (default) and the ``tensorboard`` package installed, a run
writes these TensorBoard runs under ``RUN/tensorboard/`` (``tensorboard --logdir
RUN/tensorboard``; the filter box finds a recipe, run, teacher count or generation by
the same names as ``models/``):

======================================  ==============================================  ==========
run                                     holds                                           step
======================================  ==============================================  ==========
``models/<approach>/r0[_n3]_g1/c2``     train/loss, train/lr, val/<score> per epoch;    epoch
                                        final/val_iou, final/test_iou and the settings
                                        as hparams when the model is done
``stages/<approach>/r0[_n3]``           test_iou/mean, std, min, max, best_val of a     generation
                                        stage's models (benchmarks: generation 0)
``pseudo/<approach>/r0[_n3]``           the IM-creation view of a few pseudo labels     generation
``evalnets/<kind>/r0/e1``               train/loss, train/lr, val/mae per epoch          epoch
======================================  ==============================================  ==========

Each board is written by the one process that trains its model or stage (the Ray
worker of its job; rank 0 under torchrun) and marks a restart at its first step, so
a resumed run shows each step once (:mod:`imseg.training.tensorboard`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from imseg.experiment.context import RunContext
from imseg.experiment.settings import flatten
from imseg.logs import log, stage_name
from imseg.results import Place
from imseg.training import tensorboard
from imseg.training.tensorboard import FOLDER, Board, EpochHook, EpochLog, epoch_scalars, numbers

_said_missing: list[bool] = []
"""Whether this process already said the tensorboard package is missing (once)."""


def boards_on(ctx: RunContext) -> bool:
    """Whether this process writes TensorBoard boards for the run (see the module doc)."""
    if not ctx.config.log.tensorboard or not tensorboard.writes_here():
        if ctx.config.log.tensorboard and not tensorboard.installed() and not _said_missing:
            _said_missing.append(True)
            log.info("no TensorBoard files: pip install \"imseg[tensorboard]\" to get them "
                     "(or set log.tensorboard: false to silence this)")
        return False
    return True


def open_board(ctx: RunContext, name: str, first_step: int) -> Board | None:
    """The board ``RUN/tensorboard/<name>`` restarted at ``first_step``, or None when off."""
    return Board(ctx.run_dir / FOLDER / name, first_step) if boards_on(ctx) else None


# ------------------------------------------------------------------------- one model
@dataclass
class Watch:
    """One net's board while it trains (:attr:`on_epoch`) and its summary when done."""

    board: Board | None
    params: dict = field(default_factory=dict)
    final: Callable[[dict], dict[str, float]] = lambda row: {}
    """The final scores to show from the net's results row."""

    @property
    def on_epoch(self) -> EpochHook | None:
        return None if self.board is None else self._epoch

    def _epoch(self, epoch_log: EpochLog) -> None:
        assert self.board is not None
        self.board.scalars(epoch_log.epoch, epoch_scalars(epoch_log))
        self.board.flush()  # once an epoch: a watcher sees it while the model trains

    def finish(self, row: dict) -> dict:
        """Write the net's settings and final scores (HParams) and close; return ``row``."""
        if self.board is not None:
            self.board.hparams(self.params, self.final(row))
            self.board.close()
        return row


def settings_params(ctx: RunContext, *sections: str) -> dict:
    """The config's values (of ``sections`` only, when given) as flat hparams."""
    flat = flatten(ctx.config.model_dump(mode="json"))
    return {k: v for k, v in flat.items()
            if not sections or k.split(".")[0] in sections}


def watch_model(ctx: RunContext, place: Place, first_epoch: int = 1) -> Watch:
    """The board of the model at ``place`` (``models/<approach>/r0_n3_g1/c2``), restarted at
    ``first_epoch`` (a model resumed from its snapshot keeps the epochs before)."""
    board = open_board(ctx, f"models/{place.folder()}/c{place.candidate}", first_epoch)
    if board is None:
        return Watch(None)
    params = {**settings_params(ctx), **{k: v for k, v in place.key().items() if v is not None}}
    return Watch(board, params, lambda row: numbers(
        {"val_iou": row.get("val_iou"), "test_iou": row.get("test_iou")}, "final"))


def watch_evalnet(ctx: RunContext, kind: str, run: int, index: int) -> Watch:
    """The board of EvalNet ``index`` of a kind and run (``evalnets/<kind>/r0/e1``)."""
    board = open_board(ctx, f"evalnets/{kind}/r{run}/e{index}", 1)
    if board is None:
        return Watch(None)
    params = {**settings_params(ctx, "evalnet", "seed"), "kind": kind, "run": run,
              "index": index}
    return Watch(board, params, lambda row: numbers(
        {"val_mae": row.get("val_mae"), "val_spearman": row.get("val_spearman")}, "final"))


# ------------------------------------------------------------------------ stages
def chain_name(approach: str, run: int, n_teachers: int | None) -> str:
    """``<approach>/r0`` or ``<approach>/r0_n3``: a chain's (or benchmark's) run name."""
    return f"{approach}/r{run}" + ("" if n_teachers is None else f"_n{n_teachers}")


def stage_scalars(rows: list[dict]) -> dict[str, float]:
    """The spread of a stage's test IoU over its models, and the test IoU of the model
    best on val (the one a user would pick)."""
    test = [float(r["test_iou"]) for r in rows if r.get("test_iou") is not None]
    if not test:
        return {}
    scored = [r for r in rows if r.get("val_iou") is not None and r.get("test_iou") is not None]
    out = {"test_iou/mean": statistics.fmean(test), "test_iou/std": statistics.pstdev(test),
           "test_iou/min": min(test), "test_iou/max": max(test)}
    if scored:
        out["test_iou/best_val"] = float(max(scored, key=lambda r: r["val_iou"])["test_iou"])
    return out


def announce_stage(ctx: RunContext, place: Place, count: int, n_pairs: int) -> int:
    """Say in the log that a stage starts (when it has models left to train); return how
    many it has left."""
    keys = [{**place.key(), "candidate": c} for c in range(count)]
    left = sum(ctx.results.get(**k) is None for k in keys)
    if left:
        done = f" ({count - left} done)" if left < count else ""
        log.info(f"{stage_name(place.key())}: training {left} of {count} models on "
                 f"{n_pairs} pairs{done}")
    return left


def record_stage(ctx: RunContext, place: Place, rows: list[dict]) -> None:
    """The test IoU of a stage's (or generation's) models on its chain's board."""
    board = open_board(ctx, "stages/" + chain_name(place.approach, place.run, place.n_teachers),
                       place.generation)
    if board is not None:
        board.scalars(place.generation, stage_scalars(rows))
        board.close()


# ---------------------------------------------------------------------- pseudo labels
@dataclass
class PseudoSample:
    """One sample of a generation's pseudo labels, in the on-disk encoding (as PNGs)."""

    stem: str
    image: np.ndarray
    teachers: list[np.ndarray]
    im: np.ndarray
    label: np.ndarray


def figure_pixels(fig) -> np.ndarray:
    """A matplotlib Figure drawn headless as ``H×W×3`` uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def show_pseudo_labels(ctx: RunContext, place: Place, samples: list[PseudoSample]) -> None:
    """A generation's sample pseudo labels as the IM-creation view ``imseg report`` draws."""
    if not samples:
        return
    board = open_board(ctx, "pseudo/" + chain_name(place.approach, place.run, place.n_teachers),
                       place.generation)
    if board is None:
        return
    from imseg.evaluation.visualize import im_creation_figure  # matplotlib: only when drawing

    for s in samples:
        fig = im_creation_figure(s.image, s.teachers, s.im, s.label, ctx.dataset.info,
                                 f"{stage_name(place.key())}: {s.stem}")
        board.image(f"pseudo/{s.stem}", place.generation, figure_pixels(fig))
    board.close()
