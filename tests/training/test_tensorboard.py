"""TensorBoard boards: read back with TensorBoard's own reader; a restart shows each step once."""

from __future__ import annotations

import math

import pytest

from imseg.training.tensorboard import Board, EpochLog, epoch_scalars, numbers

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard shows them."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_an_epoch_reports_loss_lr_and_every_number_among_the_scores():
    log = EpochLog(3, 0.25, {"iou": 0.5, "dice": 0.6, "n_images": 8, "per_class": "[1, 2]",
                             "iou_all": math.nan}, 0.003)
    assert epoch_scalars(log) == {"train/loss": 0.25, "train/lr": 0.003, "val/iou": 0.5,
                                  "val/dice": 0.6}
    assert numbers({"a": True, "b": 2}, "x") == {"x/b": 2.0}


def test_a_restarted_board_replaces_the_steps_an_interrupted_one_left(tmp_path):
    first = Board(tmp_path / "run", first_step=1)
    for epoch in (1, 2, 3):  # interrupted after epoch 3 of a model
        first.scalars(epoch, {"train/loss": 10.0 + epoch})
    first.close()
    again = Board(tmp_path / "run", first_step=1)  # the model trains again from epoch 1
    for epoch in (1, 2):
        again.scalars(epoch, {"train/loss": float(epoch)})
    again.close()
    assert read_scalars(tmp_path / "run") == {"train/loss": [(1, 1.0), (2, 2.0)]}


def test_hparams_and_their_metrics_land_in_the_board_itself(tmp_path):
    board = Board(tmp_path / "run", first_step=1)
    board.hparams({"train.lr": 0.003, "ssl.teachers": [2, 3], "name": "im"},
                  {"final/test_iou": 0.7})
    board.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert read_scalars(tmp_path / "run") == {"final/test_iou": [(0, pytest.approx(0.7))]}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no run of its own


def test_the_learning_rate_is_the_base_rate_when_an_encoder_runs_slower():
    import torch

    from imseg.training.tensorboard import learning_rate

    encoder, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": 0.0003},
                                   {"params": head.parameters()}], lr=0.003)
    assert learning_rate(optimizer) == 0.003
