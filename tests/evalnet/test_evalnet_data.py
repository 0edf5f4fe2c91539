"""EvalNet training data: batched stage labels, prediction data, IM++ pairs."""

from __future__ import annotations

import torch
from torch import nn

from imseg.data.augment import AugmentParams
from imseg.data.dataset import Split
from imseg.evalnet.data import (
    Blocking,
    im_data,
    im_pairs,
    prediction_data,
    random_refine,
    stage_labels,
    subset_agreement,
)
from imseg.evaluation.metrics import iou_of_masks
from imseg.pseudo.inconsistency import agreement, refine
from imseg.tasks import Task

BINARY = Task("binary", 1)
CPU = torch.device("cpu")
GEOMETRY_ONLY = AugmentParams(brightness_prob=0.0, max_blur=0, max_noise=0)


class ChannelThreshold(nn.Module):
    """A fake binary model: foreground where the first channel exceeds ``t``."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - self.t) * 10


def _split(n: int = 3, size: int = 8, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = (images[:, :1] > 100).to(torch.uint8)
    return Split(images, labels, [f"s{i}" for i in range(n)])


def test_stage_labels_are_every_models_label_in_batches():
    split = _split(5)
    models = [ChannelThreshold(100.0), ChannelThreshold(200.0)]
    labels = stage_labels(BINARY, models, split.images, CPU, batch_size=2, amp=False)
    assert labels.shape == (2, 5, 1, 8, 8) and labels.dtype == torch.uint8
    assert torch.equal(labels[0], split.labels)
    assert torch.equal(labels[1], (split.images[:, :1] > 200).to(torch.uint8))


def test_prediction_data_pairs_each_mask_with_its_image_and_truth():
    split = _split(3)
    labels = stage_labels(BINARY, [ChannelThreshold(150.0), ChannelThreshold(60.0)],
                          split.images, CPU, amp=False)
    data = prediction_data(BINARY, labels, split, with_truth=True, device=CPU)
    assert len(data) == 3 * 2 + 3
    assert data.index.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert torch.equal(data.masks[6:], split.labels)
    assert data.targets.score[6:].tolist() == [1.0, 1.0, 1.0]
    expected = iou_of_masks(BINARY, labels.flatten(0, 1), split.labels.repeat(2, 1, 1, 1))
    assert torch.allclose(data.targets.score[:6], expected)
    assert bool((data.targets.score[:6] < 1).all())
    images, masks, targets = data.batch(torch.tensor([4]))
    assert torch.equal(images[0], split.images[1]) and torch.equal(masks[0], labels[1, 1])
    val = prediction_data(BINARY, labels, split, with_truth=False, device=CPU)
    assert len(val) == 6


def test_subset_agreement_uses_each_images_own_random_models():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 2, (5, 6, 1, 4, 4), generator=g, dtype=torch.uint8)
    sizes = torch.tensor([2, 3, 4, 2, 3, 4])
    label, mask = subset_agreement(BINARY, labels, sizes, torch.Generator().manual_seed(9))
    order = torch.rand(6, 5, generator=torch.Generator().manual_seed(9)).argsort(dim=1)
    for b in range(6):
        ref = agreement(BINARY, labels[order[b, : sizes[b]], b : b + 1])
        assert torch.equal(label[b], ref.label[0]) and torch.equal(mask[b], ref.mask[0])


def test_random_refine_is_refine_per_image():
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(4, 1, 9, 9, generator=g) > 0.6
    erode_sizes, dilate_sizes = torch.tensor([0, 3, 5, 3]), torch.tensor([5, 0, 3, 3])
    out = random_refine(mask, erode_sizes, dilate_sizes)
    for b in range(4):
        assert torch.equal(out[b : b + 1], refine(mask[b : b + 1], int(erode_sizes[b]),
                                                   int(dilate_sizes[b])))


def test_augmented_im_pairs_are_scored_against_the_moved_truth():
    # every model predicts the truth: no IM, so every pair's IoU must be 1 — also for
    # the augmented half, whose truth must move with image and label
    n, size = 16, 8
    g = torch.Generator().manual_seed(0)
    truth = (torch.rand(n, 1, size, size, generator=g) > 0.7).to(torch.uint8)
    truth[:, :, 0, :3] = 1  # asymmetric, so flips and rotations change it
    images = (truth * 255).repeat(1, 3, 1, 1)
    labels = truth.unsqueeze(0).repeat(3, 1, 1, 1, 1)
    x, y, t = im_pairs(BINARY, labels, images, truth, Blocking(), GEOMETRY_ONLY,
                       torch.Generator().manual_seed(1))
    assert torch.equal(y, t)
    assert torch.equal(x[:, :1], y * 255)  # the image moved with its label
    moved = (y != truth).flatten(1).any(1)
    assert 0 < int(moved.sum()) < n  # about half were augmented
    assert iou_of_masks(BINARY, y, t).tolist() == [1.0] * n


def test_im_pairs_block_input_and_output_under_the_im():
    # two models: foreground on rows 0-1 and on row 1 only -> agreed row 1, IM row 0,
    # then a random erosion / dilation; the label must be the agreed one outside the
    # (refined) IM and background under it, where the image is black
    n = 12
    a = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    a[..., 2:4, :] = 1
    b = torch.zeros_like(a)
    b[..., 3, :] = 1
    images = torch.full((n, 3, 8, 8), 200, dtype=torch.uint8)
    no_aug = AugmentParams(flip_h=False, flip_v=False, rotate=False, brightness_prob=0.0,
                           max_blur=0, max_noise=0)
    x, y, _ = im_pairs(BINARY, torch.stack([a, b]), images, torch.zeros_like(a), Blocking(),
                       no_aug, torch.Generator().manual_seed(0))
    blocked = x[:, :1] == 0
    assert torch.equal(x == 0, blocked.expand_as(x))  # all channels blocked together
    assert torch.equal(y, b * ~blocked)
    sizes = blocked.flatten(1).sum(1)
    assert len(set(sizes.tolist())) > 1  # the random refinement varies between pairs


def test_im_data_size_and_reproducibility():
    split = _split(5, size=8)
    labels = stage_labels(BINARY, [ChannelThreshold(t) for t in (60.0, 100.0, 140.0, 180.0)],
                          split.images, CPU, amp=False)

    def build(seed: int):
        return im_data(BINARY, labels, split, loops=3, blocking=Blocking(), params=GEOMETRY_ONLY,
                       generator=torch.Generator().manual_seed(seed), device=CPU, batch_size=2)

    a, b, c = build(0), build(0), build(1)
    assert len(a) == 15 and a.images.shape[0] == 15 and a.index.tolist() == list(range(15))
    assert torch.equal(a.masks, b.masks) and torch.equal(a.targets.score, b.targets.score)
    assert not torch.equal(a.masks, c.masks)
    assert bool(((a.targets.score >= 0) & (a.targets.score <= 1)).all())
