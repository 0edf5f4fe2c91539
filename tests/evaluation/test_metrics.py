"""Hand-computed cases for the segmentation metrics (docs/method.md §7)."""

from __future__ import annotations

import math

import pytest
import torch

from imseg.evaluation import metrics
from imseg.evaluation.metrics import MetricAccumulator, evaluate, image_scores, iou_of_masks
from imseg.tasks import VOID, Task

BINARY = Task("binary", 1)


def grid(rows: list[str]) -> torch.Tensor:
    """A (H, W) uint8 mask from strings: digits are values, 'v' is VOID."""
    return torch.tensor(
        [[VOID if ch == "v" else int(ch) for ch in row] for row in rows], dtype=torch.uint8
    )


def stack(*masks: torch.Tensor) -> torch.Tensor:
    """Masks (H, W) → one image per mask, one channel: (N, 1, H, W)."""
    return torch.stack(masks)[:, None]


def assert_table(values: torch.Tensor, expected: list[list[float]]) -> None:
    """An (N, K) score tensor equals a hand-computed table."""
    torch.testing.assert_close(values.double(), torch.tensor(expected, dtype=torch.float64))


# truth: 2x2 block at rows 0-1, cols 0-1; prediction shifted one column right.
# intersection 2, union 6 → IoU 1/3; Dice 2*2 / (4+4) = 1/2.
TRUTH_A = grid(["1100", "1100", "0000", "0000"])
PRED_A = grid(["0110", "0110", "0000", "0000"])
EMPTY = grid(["0000"] * 4)
FULL = grid(["1111"] * 4)


def test_binary_shifted_block():
    iou, dice, valid = image_scores(BINARY, stack(PRED_A), stack(TRUTH_A))
    assert iou.shape == dice.shape == valid.shape == (1, 1)
    assert iou.item() == pytest.approx(1 / 3)
    assert dice.item() == pytest.approx(1 / 2)
    assert valid.item()


def test_binary_empty_cases():
    pred = stack(EMPTY, PRED_A)
    truth = stack(EMPTY, EMPTY)
    iou, dice, valid = image_scores(BINARY, pred, truth)
    assert iou[:, 0].tolist() == [1.0, 0.0]  # empty/empty counts 1; false positives only: 0
    assert dice[:, 0].tolist() == [1.0, 0.0]
    assert valid.all()
    # missed object (prediction empty, truth not) is 0 as well
    iou, dice, _ = image_scores(BINARY, stack(EMPTY), stack(TRUTH_A))
    assert iou.item() == 0.0 and dice.item() == 0.0


def test_void_pixels_are_ignored():
    truth = grid(["110v", "110v", "000v", "vvvv"])
    base = image_scores(BINARY, stack(PRED_A), stack(truth))
    # errors on void pixels only: positives where truth is void
    noisy = PRED_A.clone()
    noisy[:, 3] = 1
    noisy[3, :] = 1
    changed = image_scores(BINARY, stack(noisy), stack(truth))
    for a, b in zip(base, changed, strict=True):
        assert torch.equal(a, b)
    assert base[0].item() == pytest.approx(1 / 3)
    # the same prediction scored against the void-free truth is worse
    assert image_scores(BINARY, stack(noisy), stack(TRUTH_A))[0].item() < 1 / 3


def test_all_void_binary_image_counts_as_empty_empty():
    truth = grid(["vvvv"] * 4)
    iou, dice, valid = image_scores(BINARY, stack(FULL), stack(truth))
    assert iou.item() == 1.0 and dice.item() == 1.0 and valid.item()


def test_binary_accumulator_and_pixel_level():
    # image 1: inter 2, union 6 (IoU 1/3); image 2: two full rows, perfect (inter 8, union 8)
    half = grid(["1111", "1111", "0000", "0000"])
    pred = stack(PRED_A, half)
    truth = stack(TRUTH_A, half)
    out = evaluate(BINARY, pred, truth)
    assert out["n_images"] == 2
    assert out["iou"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["dice"] == pytest.approx((1 / 2 + 1) / 2)
    assert out["class_iou"] == pytest.approx([2 / 3])
    assert out["class_dice"] == pytest.approx([3 / 4])
    assert out["pixel_class_iou"] == pytest.approx([10 / 14])  # (2 + 8) / (6 + 8)
    assert out["pixel_miou"] == pytest.approx(10 / 14)
    assert iou_of_masks(BINARY, pred, truth).tolist() == pytest.approx([1 / 3, 1.0])


def test_multilabel_per_channel():
    task = Task("multilabel", 2)
    # image 1: channel 0 shifted block (1/3, 1/2), channel 1 empty/empty (1, 1)
    # image 2: channel 0 perfect (1, 1), channel 1 truth present, prediction empty (0, 0)
    pred = torch.stack([torch.stack([PRED_A, EMPTY]), torch.stack([TRUTH_A, EMPTY])])
    truth = torch.stack([torch.stack([TRUTH_A, EMPTY]), torch.stack([TRUTH_A, FULL])])
    iou, dice, valid = image_scores(task, pred, truth)
    assert_table(iou, [[1 / 3, 1.0], [1.0, 0.0]])
    assert_table(dice, [[1 / 2, 1.0], [1.0, 0.0]])
    assert valid.all()
    out = evaluate(task, pred, truth)
    assert out["class_iou"] == pytest.approx([2 / 3, 1 / 2])
    assert out["class_dice"] == pytest.approx([3 / 4, 1 / 2])
    assert out["iou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["dice"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    # pixel level, channel 0: (2 + 4) / (6 + 4); channel 1: 0 / 16
    assert out["pixel_class_iou"] == pytest.approx([6 / 10, 0.0])
    assert iou_of_masks(task, pred, truth).tolist() == pytest.approx([2 / 3, 1 / 2])


def test_a_headline_subset_scores_only_its_channels():
    """HeLa's mIoU_ad: the headline averages the chosen channels; ``iou_all`` keeps all."""
    pred = torch.stack([torch.stack([PRED_A, EMPTY]), torch.stack([TRUTH_A, EMPTY])])
    truth = torch.stack([torch.stack([TRUTH_A, EMPTY]), torch.stack([TRUTH_A, FULL])])
    task = Task("multilabel", 2, headline=(0,))
    out = evaluate(task, pred, truth)
    assert out["iou"] == pytest.approx(2 / 3) and out["dice"] == pytest.approx(3 / 4)
    assert out["iou_all"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["class_iou"] == pytest.approx([2 / 3, 1 / 2])
    assert iou_of_masks(task, pred, truth).tolist() == pytest.approx([1 / 3, 1.0])
    assert "iou_all" not in evaluate(Task("multilabel", 2), pred, truth)
    with pytest.raises(ValueError, match="headline"):
        Task("multilabel", 2, headline=(2,))


def test_a_multiclass_headline_subset_averages_its_classes_per_image():
    # class 1 perfect, class 2 perfect, class 3 only in the prediction (scores 0)
    task = Task("multiclass", 3, headline=(0, 2))
    out = evaluate(task, MC_PRED.view(1, 1, 4, 4), MC_TRUTH.view(1, 1, 4, 4))
    class_iou = out["class_iou"]
    assert out["iou"] == pytest.approx((class_iou[0] + class_iou[2]) / 2)
    assert out["iou_all"] == pytest.approx(sum(class_iou) / 3)


# multiclass, 3 classes (values 1..3). Image 1: top half class 1, bottom half class 2;
# the prediction puts class 3 on pixel (1, 1), a class absent from the truth.
MC_TRUTH = grid(["1111", "1111", "2222", "2222"])
MC_PRED = grid(["1111", "1311", "2222", "2222"])
ONES = grid(["1111"] * 4)


def test_multiclass_class_only_in_prediction():
    task = Task("multiclass", 3)
    iou, dice, valid = image_scores(task, stack(MC_PRED, ONES), stack(MC_TRUTH, ONES))
    # class 1: inter 7, union 8; class 2: perfect; class 3: inter 0, union 1 (valid, 0)
    assert_table(iou, [[7 / 8, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert_table(dice, [[14 / 15, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert valid.tolist() == [[True, True, True], [True, False, False]]
    per_image = iou_of_masks(task, stack(MC_PRED, ONES), stack(MC_TRUTH, ONES))
    assert per_image.tolist() == pytest.approx([(7 / 8 + 1) / 3, 1.0])


def test_multiclass_accumulator():
    task = Task("multiclass", 4)  # class 4 never appears
    out = evaluate(task, stack(MC_PRED, ONES), stack(MC_TRUTH, ONES))
    assert out["iou"] == pytest.approx(((7 / 8 + 1 + 0) / 3 + 1) / 2)
    assert out["dice"] == pytest.approx(((14 / 15 + 1 + 0) / 3 + 1) / 2)
    assert out["class_iou"][:3] == pytest.approx([(7 / 8 + 1) / 2, 1.0, 0.0])
    assert out["class_dice"][:3] == pytest.approx([(14 / 15 + 1) / 2, 1.0, 0.0])
    assert math.isnan(out["class_iou"][3]) and math.isnan(out["class_dice"][3])
    # pixel level: class 1 (7 + 16) / (8 + 16), class 2 8/8, class 3 0/1, class 4 no union
    assert out["pixel_class_iou"][:3] == pytest.approx([23 / 24, 1.0, 0.0])
    assert math.isnan(out["pixel_class_iou"][3])
    assert out["pixel_miou"] == pytest.approx((23 / 24 + 1 + 0) / 3)


def test_multiclass_void_and_im_class():
    task = Task("multiclass", 2)
    truth = grid(["11vv", "11vv", "0022", "0022"])  # 0: IM class, not void
    pred = grid(["1122", "1111", "1122", "2222"])  # wrong only on void and on class 0
    iou, _, valid = image_scores(task, stack(pred), stack(truth))
    # class 1: inter 4, union 4 + 2 (predicted on the IM pixels) → 4/6; class 2: 4/6
    assert_table(iou, [[4 / 6, 4 / 6]])
    # a prediction value outside 1..C (e.g. an IM pixel in a pseudo label) matches no class
    pseudo = grid(["1022", "1100", "0022", "0022"])
    iou, _, _ = image_scores(task, stack(pseudo), stack(truth))
    assert_table(iou, [[3 / 4, 1.0]])
    # an all-void image has no valid class: 1.0 per image, skipped in the headline
    all_void = grid(["vvvv"] * 4)
    _, _, valid = image_scores(task, stack(pred), stack(all_void))
    assert not valid.any()
    assert iou_of_masks(task, stack(pred, pred), stack(all_void, truth)).tolist() == (
        pytest.approx([1.0, 4 / 6])
    )
    out = evaluate(task, stack(pred, pred), stack(all_void, truth))
    assert out["iou"] == pytest.approx(4 / 6)
    assert out["n_images"] == 2


def _random_case(task: Task, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (n, task.label_channels, 8, 8)
    if task.kind == "multiclass":
        truth = torch.randint(0, task.n_classes + 1, shape, generator=gen).to(torch.uint8)
        pred = torch.randint(1, task.n_classes + 1, shape, generator=gen).to(torch.uint8)
    else:
        truth = torch.randint(0, 2, shape, generator=gen).to(torch.uint8)
        pred = torch.randint(0, 2, shape, generator=gen).to(torch.uint8)
        truth[:2] = 0  # some empty images
        pred[:1] = 0
    truth[torch.rand(shape, generator=gen) < 0.1] = VOID
    return pred, truth


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x = a[key] if isinstance(a[key], list) else [a[key]]
        y = b[key] if isinstance(b[key], list) else [b[key]]
        assert x == pytest.approx(y, nan_ok=True), key


@pytest.mark.parametrize("task", [BINARY, Task("multilabel", 3), Task("multiclass", 5)])
def test_batching_invariance(task: Task, monkeypatch: pytest.MonkeyPatch):
    gen = torch.Generator().manual_seed(0)
    pred, truth = _random_case(task, 7, gen)
    whole = evaluate(task, pred, truth)
    acc = MetricAccumulator(task)
    acc.update(pred[:3], truth[:3])
    acc.update(pred[3:3], truth[3:3])  # an empty batch changes nothing
    acc.update(pred[3:], truth[3:])
    _assert_same(whole, acc.compute())
    assert whole["n_images"] == 7
    # internal chunking (a tiny pixel budget: 2 images per chunk) gives the same counts
    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 2 * task.label_channels * 64)
    _assert_same(whole, evaluate(task, pred, truth))


@pytest.mark.parametrize("task", [BINARY, Task("multilabel", 2), Task("multiclass", 3),
                                  Task("multiclass", 3, headline=(1, 2))])
def test_headline_matches_per_image_scores(task: Task):
    gen = torch.Generator().manual_seed(1)
    pred, truth = _random_case(task, 5, gen)
    per_image = iou_of_masks(task, pred, truth)
    assert evaluate(task, pred, truth)["iou"] == pytest.approx(per_image.mean().item())


def test_empty_accumulator_and_bad_shapes():
    out = MetricAccumulator(BINARY).compute()
    assert out["n_images"] == 0 and math.isnan(out["iou"]) and math.isnan(out["pixel_miou"])
    with pytest.raises(ValueError, match="shape"):
        image_scores(BINARY, stack(EMPTY), stack(EMPTY, EMPTY))
    with pytest.raises(ValueError, match="multilabel"):
        image_scores(Task("multilabel", 2), stack(EMPTY), stack(EMPTY))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    task = Task("multiclass", 4)
    pred, truth = _random_case(task, 6, torch.Generator().manual_seed(2))
    _assert_same(evaluate(task, pred, truth), evaluate(task, pred.cuda(), truth.cuda()))
    ious = image_scores(task, pred.cuda(), truth.cuda())[0]
    assert ious.device.type == "cuda"
    assert torch.allclose(ious.cpu(), image_scores(task, pred, truth)[0])


def test_every_test_metric_name_has_an_accumulator():
    from imseg import tasks

    assert set(metrics.TEST_METRICS) == set(tasks.TEST_METRICS)


def _quarters(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, 8, 8)`` → its four ``4×4`` quarters per image, image by image: tiles."""
    n, c = x.shape[:2]
    return x.reshape(n, c, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(n * 4, c, 4, 4)


@pytest.mark.parametrize("task", [BINARY, Task("multilabel", 3), Task("multiclass", 5),
                                  Task("multiclass", 3, headline=(1, 2))])
def test_tiles_scored_together_score_as_their_whole_image(task: Task):
    gen = torch.Generator().manual_seed(2)
    pred, truth = _random_case(task, 3, gen)  # 8×8 images
    pred[1, :, :4, :4], truth[1, :, :4, :4] = 1, 0  # a tile of only false positives
    whole = evaluate(task, pred, truth)
    tiles_pred, tiles_truth = _quarters(pred), _quarters(truth)
    groups = torch.arange(3).repeat_interleave(4)
    acc = MetricAccumulator(task)
    for part in (slice(0, 5), slice(5, 6), slice(6, 12)):  # a group across batches
        acc.update(tiles_pred[part], tiles_truth[part], groups[part])
    _assert_same(whole, acc.compute())
    per_tile = evaluate(task, tiles_pred, tiles_truth)
    assert per_tile["n_images"] == 12 and per_tile["iou"] != pytest.approx(whole["iou"])


def test_grouped_scores_count_each_group_once_whatever_its_ids():
    truth = stack(TRUTH_A, EMPTY, TRUTH_A)
    pred = stack(PRED_A, EMPTY, EMPTY)
    acc = MetricAccumulator(BINARY)
    acc.update(pred, truth, torch.tensor([7, 7, 3]))  # ids need not be dense or ordered
    scores = acc.compute()
    assert scores["n_images"] == 2
    assert scores["iou"] == pytest.approx((1 / 3 + 0.0) / 2)  # group 7: 2 / 6; group 3: 0
    assert acc.compute() == scores  # computing does not change what was seen
    acc.update(pred[:0], truth[:0], torch.tensor([], dtype=torch.long))  # an empty batch
    assert acc.compute() == scores
    empty = MetricAccumulator(BINARY)
    empty.update(pred[:0], truth[:0], torch.tensor([], dtype=torch.long))
    assert empty.compute()["n_images"] == 0
