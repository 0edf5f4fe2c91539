"""HeLa metrics on hand-made masks: IoU conventions, void, cell counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imseg.evaluation.hela import count_cells, hela_scores
from imseg.evaluation.metrics import MetricAccumulator
from imseg.tasks import VOID, Task


def disc(shape: tuple[int, int], cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def labels(*images: tuple[np.ndarray, np.ndarray, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.stack(img) for img in images]).astype(np.uint8))


def test_iou_per_channel_and_headline_means():
    z = np.zeros((8, 8), dtype=bool)
    t_alive = z.copy()
    t_alive[0:4, 0:4] = True  # 16 px
    p_alive = z.copy()
    p_alive[0:4, 2:6] = True  # overlap 8, union 24 -> 1/3
    t_dead = z.copy()
    t_dead[6:8, 6:8] = True
    p_dead = t_dead.copy()  # 1.0
    t_pos = z.copy()
    t_pos[0, 0] = True
    p_pos = z.copy()  # 0.0
    # second image: everything empty in truth and prediction -> 1.0 everywhere
    target = labels((t_alive, t_dead, t_pos), (z, z, z))
    pred = labels((p_alive, p_dead, p_pos), (z, z, z))
    s = hela_scores(pred, target)
    assert s["iou_alive"] == pytest.approx((1 / 3 + 1) / 2)
    assert s["iou_dead"] == pytest.approx(1.0)
    assert s["iou_position"] == pytest.approx(0.5)
    assert s["miou_ad"] == pytest.approx(((1 / 3 + 1) / 2 + 1.0) / 2)
    assert s["miou_all"] == pytest.approx(((1 / 3 + 1) / 2 + 1.0 + 0.5) / 3)
    assert s["n_images"] == 2


def test_void_pixels_do_not_count():
    t = np.zeros((3, 6, 6), dtype=np.uint8)
    t[0, :2, :2] = 1
    t[0, 4:, 4:] = VOID
    p = np.zeros_like(t)
    p[0, :2, :2] = 1
    p[0, 4:, 4:] = 1  # positives only where the truth is void
    s = hela_scores(torch.from_numpy(p[None]), torch.from_numpy(t[None]))
    assert s["iou_alive"] == pytest.approx(1.0)


def test_count_cells_majority_and_unclear():
    shape = (40, 40)
    alive = np.zeros(shape, dtype=bool)
    dead = np.zeros(shape, dtype=bool)
    alive[0:20, :] = True
    dead[20:40, 0:20] = True
    position = disc(shape, 8, 8, 4) | disc(shape, 8, 28, 4) | disc(shape, 30, 8, 4)
    position |= disc(shape, 30, 30, 4)  # on neither mask -> unclear
    assert count_cells(alive, dead, position) == (2, 1, 1)


def test_erosion_splits_discs_joined_by_a_bridge():
    shape = (20, 30)
    position = disc(shape, 10, 7, 4) | disc(shape, 10, 20, 4)
    position[10, 7:21] = True  # a one-pixel bridge
    alive = np.ones(shape, dtype=bool)
    dead = np.zeros(shape, dtype=bool)
    assert count_cells(alive, dead, position, erode=3) == (2, 0, 0)
    assert count_cells(alive, dead, position, erode=1) == (1, 0, 0)


def test_count_error_per_image_mean_and_relative():
    shape = (40, 40)
    z = np.zeros(shape, dtype=bool)
    alive = z.copy()
    alive[:, :20] = True
    dead = ~alive
    a1, a2, d1 = disc(shape, 8, 8, 3), disc(shape, 28, 8, 3), disc(shape, 8, 30, 3)
    # image 1: truth 2 alive + 1 dead; prediction finds 1 alive + 1 dead
    # image 2: truth nothing; prediction one dead cell
    target = labels((alive, dead, a1 | a2 | d1), (z, z, z))
    pred = labels((alive, dead, a1 | d1), (z, dead, d1))
    s = hela_scores(pred, target)
    assert s["count_error_alive"] == pytest.approx((1 + 0) / 2)
    assert s["count_error_dead"] == pytest.approx((0 + 1) / 2)
    assert s["count_error"] == pytest.approx((1 + 1) / 2)
    assert s["count_error_rel"] == pytest.approx((1 / 3 + 1 / 1) / 2)


def test_a_hela_task_scores_mIoU_ad_and_cell_counts_on_test_only():
    shape = (40, 40)
    z = np.zeros(shape, dtype=bool)
    alive = z.copy()
    alive[:, :20] = True
    a1, d1 = disc(shape, 8, 8, 3), disc(shape, 8, 30, 3)
    target = labels((alive, ~alive, a1 | d1), (z, z, z), (alive, z, a1))
    pred = labels((alive, ~alive, a1), (z, ~alive, d1), (z, z, a1))
    task = Task("multilabel", 3, headline=(0, 1), test_metrics=("cell_count",))
    acc = MetricAccumulator(task, test=True)
    acc.update(pred[:1], target[:1])
    acc.update(pred[1:], target[1:])
    got, whole = acc.compute(), hela_scores(pred, target)
    for key in ("count_error", "count_error_alive", "count_error_dead", "count_error_rel"):
        assert got[key] == pytest.approx(whole[key]), key
    assert got["count_error"] > 0
    assert got["iou"] == pytest.approx(whole["miou_ad"])
    assert got["iou_all"] == pytest.approx(whole["miou_all"])
    plain = MetricAccumulator(task)  # validation: no cell counting each epoch
    plain.update(pred, target)
    assert "count_error" not in plain.compute()


def test_test_metrics_are_checked_against_the_task():
    with pytest.raises(ValueError, match="unknown test_metrics"):
        Task("multilabel", 3, test_metrics=("cells",))
    with pytest.raises(ValueError, match="HeLa"):
        Task("binary", 1, test_metrics=("cell_count",))


def test_void_region_cleared_before_counting():
    shape = (30, 30)
    alive = np.ones(shape, dtype=np.uint8)
    dead = np.zeros(shape, dtype=np.uint8)
    pos_t = disc(shape, 8, 8, 3).astype(np.uint8)
    pos_p = (disc(shape, 8, 8, 3) | disc(shape, 22, 22, 3)).astype(np.uint8)
    target = np.stack([alive, dead, pos_t])
    target[:, 15:, 15:] = VOID  # the extra predicted cell lies in a void region
    pred = np.stack([alive, dead, pos_p])
    s = hela_scores(torch.from_numpy(pred[None]), torch.from_numpy(target[None]))
    assert s["count_error"] == 0.0


def test_shape_checks_and_empty_input():
    with pytest.raises(ValueError):
        hela_scores(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.zeros(1, 2, 4, 4,
                    dtype=torch.uint8))
    s = hela_scores(torch.zeros(0, 3, 4, 4, dtype=torch.uint8),
                    torch.zeros(0, 3, 4, 4, dtype=torch.uint8))
    assert s["n_images"] == 0 and math.isnan(s["miou_ad"])
