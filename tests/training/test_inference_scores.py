"""evaluate_model scores a split's groups (the tiles of one image) as one image."""

from __future__ import annotations

import pytest
import torch

from imseg.data.dataset import Split
from imseg.tasks import Task
from imseg.training.inference import evaluate_model


class Everywhere(torch.nn.Module):
    """Predicts foreground at every pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], 10.0)


def test_tiles_of_one_image_are_scored_as_that_image():
    task = Task("binary", 1)
    labels = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    labels[0, 0, :2] = 1  # the image's foreground: 8 of its 64 pixels, all in one tile
    images = torch.zeros(4, 3, 4, 4, dtype=torch.uint8)
    tiles = Split(images, labels, [f"a__y0000{i}_x00000" for i in range(4)])
    cpu = torch.device("cpu")
    per_tile = evaluate_model(Everywhere(), tiles, task, cpu, batch_size=3, amp=False)
    assert per_tile["iou"] == pytest.approx((8 / 16 + 0 + 0 + 0) / 4)
    grouped = Split(images, labels, tiles.stems, torch.zeros(4, dtype=torch.long))
    whole = evaluate_model(Everywhere(), grouped, task, cpu, batch_size=3, amp=False)
    assert whole["iou"] == pytest.approx(8 / 64) and whole["n_images"] == 1
