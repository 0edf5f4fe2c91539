"""conv_flops: counted from the convolutions' output sizes, 2 FLOPs per multiply-add."""

from __future__ import annotations

from torch import nn

from imseg.models.flops import conv_flops
from imseg.models.unet import build_unet


def test_counts_a_plain_and_a_grouped_convolution_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 8, 1, groups=2), nn.MaxPool2d(2), nn.Conv2d(8, 2, 1))
    per_pixel = 2 * (9 * 3 * 4) + 2 * (1 * 2 * 8)  # a grouped conv sees in_channels / groups
    assert conv_flops(net, (3, 8, 8)) == per_pixel * 64 + 2 * (8 * 2) * 16


def test_the_tiny_unet_scales_with_pixels_and_width_and_keeps_its_mode():
    small = build_unet(3, 1, 0.5)
    assert conv_flops(small, (3, 64, 64)) == 4 * conv_flops(small, (3, 32, 32))
    wide = build_unet(3, 1, 1.0)
    ratio = conv_flops(wide, (3, 32, 32)) / conv_flops(small, (3, 32, 32))
    assert 3.5 < ratio < 4.0  # nearly alpha²: the RGB stem and the 1-channel head are linear
    assert small.training  # counted in eval mode, then given back as it was
