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


def test_pixels_an_earlier_tile_holds_are_scored_there_only():
    task = Task("binary", 1)
    labels = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    labels[:, 0, :, :2] = 1  # two tiles sharing their left half, which is foreground
    counted = torch.ones(2, 4, 4, dtype=torch.bool)
    counted[1, :, :2] = False  # the second tile's share is the first one's
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    stems = ["a__y00000_x00000", "a__y00000_x00002"]
    both = Split(images, labels, stems, torch.zeros(2, dtype=torch.long))
    once = Split(images, labels, stems, torch.zeros(2, dtype=torch.long), counted)
    cpu = torch.device("cpu")
    assert evaluate_model(Everywhere(), both, task, cpu, amp=False)["iou"] == pytest.approx(16 / 32)
    assert evaluate_model(Everywhere(), once, task, cpu, amp=False)["iou"] == pytest.approx(8 / 24)
    assert torch.equal(once.labels, both.labels)  # scoring leaves the labels whole
