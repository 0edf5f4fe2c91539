"""Strong views and CutMix boxes for the online SSL trainers."""

from __future__ import annotations

import torch

from imseg.data.strong import (
    StrongParams,
    cutmix,
    cutmix_boxes,
    gaussian_blur_sigma,
    shift_hue,
    strong_view,
)

OFF = StrongParams(jitter_prob=0.0, grey_prob=0.0, blur_prob=0.0)


def _images(n: int = 5, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


def test_strong_view_is_seeded_photometric_and_identity_when_off():
    x = _images()
    a = strong_view(x, StrongParams(), torch.Generator().manual_seed(1))
    b = strong_view(x, StrongParams(), torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert torch.equal(strong_view(x, OFF, torch.Generator()), x)


def test_grey_makes_rgb_channels_equal_and_grey_images_still_work():
    x = _images()
    grey = strong_view(x, StrongParams(jitter_prob=0.0, grey_prob=1.0, blur_prob=0.0),
                       torch.Generator())
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    one = strong_view(_images(c=1), StrongParams(), torch.Generator().manual_seed(2))
    assert one.shape == (5, 1, 16, 16)


def test_hue_shift_round_trip_and_blur_keeps_flat_images_flat():
    x = _images().float() / 255
    quarter = torch.full((5, 1, 1, 1), 0.25)
    assert torch.allclose(shift_hue(x, torch.zeros(5, 1, 1, 1)), x, atol=1e-5)
    assert torch.allclose(shift_hue(shift_hue(x, quarter), -quarter), x, atol=1e-5)
    flat = torch.full((2, 3, 8, 8), 0.4)
    assert torch.allclose(gaussian_blur_sigma(flat, torch.tensor([0.3, 2.0])), flat, atol=1e-6)
    spike = torch.zeros(1, 1, 31, 31)  # far from the borders: the kernel keeps its mass
    spike[0, 0, 15, 15] = 1.0
    wide, narrow = (gaussian_blur_sigma(spike, torch.tensor([s])) for s in (2.0, 0.5))
    assert wide[0, 0, 15, 15] < narrow[0, 0, 15, 15]
    assert torch.isclose(wide.sum(), torch.tensor(1.0), atol=1e-5)


def test_cutmix_boxes_have_the_drawn_area_and_prob_zero_gives_none():
    boxes = cutmix_boxes(200, 32, 32, 1.0, torch.Generator().manual_seed(3))
    share = boxes.float().mean(dim=(1, 2, 3))
    assert boxes.shape == (200, 1, 32, 32) and (share > 0).all() and (share <= 0.45).all()
    for box in boxes[:20, 0]:  # one rectangle each
        rows, cols = box.any(dim=1).nonzero(), box.any(dim=0).nonzero()
        assert box.sum() == len(rows) * len(cols)
    assert not cutmix_boxes(10, 32, 32, 0.0, torch.Generator()).any()


def test_cutmix_fills_the_box_from_the_partner():
    x = torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 2, 4, 4)
    box = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    box[:, :, :2, :2] = True
    mixed = cutmix(x, box, torch.tensor([1, 2, 0]))
    assert (mixed[0, :, :2, :2] == 1).all() and (mixed[0, :, 2:] == 0).all()
    assert (mixed[2, :, :2, :2] == 0).all() and (mixed[2, :, 2:] == 2).all()
