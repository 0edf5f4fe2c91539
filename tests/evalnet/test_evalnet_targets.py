"""Mask encoding and targets of the EvalNet, hand-computed."""

from __future__ import annotations

import torch

from imseg.evalnet.targets import (
    Targets,
    encode_masks,
    mask_channels,
    predicted_score,
    targets_of,
)
from imseg.evaluation.metrics import iou_of_masks
from imseg.tasks import IM_CLASS, VOID, Task

BINARY = Task("binary", 1)
MULTICLASS = Task("multiclass", 3)
MULTILABEL = Task("multilabel", 2)


def _label(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.uint8)[None, None]


def test_encoding_binary_void_is_zero():
    enc = encode_masks(BINARY, _label([[0, 1], [VOID, 1]]))
    assert enc.shape == (1, 1, 2, 2) and enc.dtype == torch.float32
    assert enc[0, 0].tolist() == [[0.0, 1.0], [0.0, 1.0]]


def test_encoding_multiclass_is_one_hot_with_the_im_class():
    label = _label([[IM_CLASS, 1], [3, VOID]])
    enc = encode_masks(MULTICLASS, label)
    assert mask_channels(MULTICLASS) == 4 and enc.shape == (1, 4, 2, 2)
    assert enc[0, :, 0, 0].tolist() == [1, 0, 0, 0]  # IM class -> channel 0
    assert enc[0, :, 0, 1].tolist() == [0, 1, 0, 0]
    assert enc[0, :, 1, 0].tolist() == [0, 0, 0, 1]
    assert enc[0, :, 1, 1].tolist() == [0, 0, 0, 0]  # void: no channel


def test_encoding_multilabel_keeps_channels():
    label = torch.tensor([[[1, 0]], [[VOID, 1]]], dtype=torch.uint8)[None]  # (1, 2, 1, 2)
    enc = encode_masks(MULTILABEL, label)
    assert enc.shape == (1, 2, 1, 2)
    assert enc[0, :, 0].tolist() == [[1, 0], [0, 1]]


def test_binary_target_is_the_iou():
    truth = _label([[1, 1, 0, 0]])
    mask = _label([[0, 1, 1, 0]])  # 1 shared of 3 in the union
    t = targets_of(BINARY, mask, truth)
    assert t.class_iou is None and t.present is None
    assert torch.allclose(t.score, torch.tensor([1 / 3]))
    # both empty counts as 1.0 (the metrics' convention)
    assert float(targets_of(BINARY, _label([[0, 0]]), _label([[0, 0]])).score) == 1.0


def test_multiclass_targets_per_class_and_score():
    truth = _label([[1, 1, 2, 2]])
    mask = _label([[1, 2, 2, 2]])
    t = targets_of(MULTICLASS, mask, truth)
    # class 1: 1/2, class 2: 2/3, class 3 in neither -> 1.0 (not counted in the score)
    assert torch.allclose(t.class_iou, torch.tensor([[0.5, 2 / 3, 1.0]]))
    assert t.present.tolist() == [[1.0, 1.0, 0.0]]
    assert torch.allclose(t.score, torch.tensor([(0.5 + 2 / 3) / 2]))


def test_multiclass_score_is_the_metrics_headline_iou():
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(1, 4, (6, 1, 8, 8), generator=g, dtype=torch.uint8)
    mask = torch.randint(0, 4, (6, 1, 8, 8), generator=g, dtype=torch.uint8)
    t = targets_of(MULTICLASS, mask, truth)
    assert torch.allclose(t.score, iou_of_masks(MULTICLASS, mask, truth))


def test_multilabel_score_counts_classes_in_truth_or_mask():
    truth = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]], dtype=torch.uint8)[None]
    mask = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]]], dtype=torch.uint8)[None]
    t = targets_of(MULTILABEL, mask, truth)
    assert torch.allclose(t.class_iou, torch.tensor([[0.5, 1.0]]))
    assert t.present.tolist() == [[1.0, 0.0]]
    assert torch.allclose(t.score, torch.tensor([0.5]))  # channel 2 empty in both: left out
    # a false positive channel counts (IoU 0)
    fp = mask.clone()
    fp[0, 1, 0, 3] = 1
    assert torch.allclose(targets_of(MULTILABEL, fp, truth).score, torch.tensor([0.25]))


def test_only_the_headline_classes_make_the_score():
    truth = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 1, 1]]], dtype=torch.uint8)[None]
    mask = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 1, 1]]], dtype=torch.uint8)[None]
    assert torch.allclose(targets_of(MULTILABEL, mask, truth).score, torch.tensor([0.75]))
    first = Task("multilabel", 2, headline=(0,))
    t = targets_of(first, mask, truth)
    assert torch.allclose(t.score, torch.tensor([0.5]))  # channel 1 (IoU 1.0) left out
    assert torch.allclose(t.class_iou, torch.tensor([[0.5, 1.0]]))  # still learnt per class
    iou, present = torch.tensor([[0.4, 0.9]]), torch.tensor([[0.9, 0.9]])
    assert torch.allclose(predicted_score(first, mask, iou, present), torch.tensor([0.4]))


def test_predicted_score_uses_presence_or_the_mask():
    mask = _label([[1, 1, 1, 1]])  # only class 1 in the mask
    iou = torch.tensor([[0.8, 0.2, 0.5]])
    present = torch.tensor([[0.1, 0.9, 0.3]])  # class 2 predicted present
    score = predicted_score(MULTICLASS, mask, iou, present)
    assert torch.allclose(score, torch.tensor([0.5]))  # mean of 0.8 and 0.2
    assert torch.equal(predicted_score(BINARY, mask, torch.tensor([0.3]), None),
                       torch.tensor([0.3]))


def test_targets_index_and_cat_round_trip():
    t = Targets(torch.tensor([0.1, 0.2, 0.3]), torch.rand(3, 2), torch.ones(3, 2))
    back = Targets.cat([t.index(torch.tensor([0])), t.index(torch.tensor([1, 2]))])
    assert torch.equal(back.score, t.score) and torch.equal(back.class_iou, t.class_iou)
    assert len(back) == 3
