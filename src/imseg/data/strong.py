"""Strong views for online SSL trainers (FixMatch, UniMatch): colour jitter, grey, blur,
and CutMix boxes, on whole uint8 batches (docs/method.md §6, "Online SSL trainers").

The recipe is UniMatch's strong augmentation: with probability 0.8 a colour
jitter (brightness, contrast and saturation factors in 1 ± 0.5, hue shift
± 0.25 of a turn), grey with probability 0.2, a Gaussian blur of sigma 0.1-2
with probability 0.5; then, in the trainer, a CutMix box with probability 0.5.
The jitter's four steps run in a fixed order (torchvision draws one per image);
saturation, hue and grey apply to RGB images only.

As in :mod:`imseg.data.augment`, every random number is drawn on the CPU from
the generator passed in, so a seed gives the same views on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601 luma, as torchvision's and PIL's grey."""


@dataclass(frozen=True)
class StrongParams:
    """How strong a view is; the defaults are UniMatch's."""

    jitter_prob: float = 0.8
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.25
    grey_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _chance(n: int, p: float, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator) < p


def strong_view(images: Tensor, params: StrongParams, generator: torch.Generator) -> Tensor:
    """A strongly augmented copy of uint8 ``(N, C, H, W)`` images (photometric only: the
    pixels stay where they are, so the weak view's pseudo label fits it)."""
    n, c = images.shape[:2]
    device = images.device
    jitter = _chance(n, params.jitter_prob, generator)
    factors = [torch.where(jitter, _uniform(n, 1 - s, 1 + s, generator), torch.ones(n))
               for s in (params.brightness, params.contrast, params.saturation)]
    hue = torch.where(jitter, _uniform(n, -params.hue, params.hue, generator), torch.zeros(n))
    grey = _chance(n, params.grey_prob, generator)
    blur = _chance(n, params.blur_prob, generator)
    sigma = _uniform(n, *params.blur_sigma, generator)

    def per_image(values: Tensor) -> Tensor:
        return values.to(device, torch.float32).view(n, 1, 1, 1)

    x = images.float() / 255.0
    brightness, contrast, saturation = (per_image(f) for f in factors)
    x = (x * brightness).clamp(0, 1)
    x = _blend(x, luma(x).mean(dim=(1, 2, 3), keepdim=True), contrast)
    if c == 3:
        x = _blend(x, luma(x), saturation)
        x = shift_hue(x, per_image(hue))
        x = torch.where(per_image(grey) > 0, luma(x).expand_as(x), x)
    if bool(blur.any()):
        rows = blur.nonzero().squeeze(1).to(device)
        x = x.index_copy(0, rows, gaussian_blur_sigma(x[rows], sigma[blur].to(device)))
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8)


def luma(x: Tensor) -> Tensor:
    """Grey ``(N, 1, H, W)`` of float images in 0..1 (the channel mean unless RGB)."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    w = torch.tensor(GREY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor·x + (1 - factor)·other``, clipped (torchvision's adjust_* blend)."""
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def shift_hue(rgb: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of RGB images in 0..1 by ``shift`` turns ``(N, 1, 1, 1)`` (via HSV)."""
    r, g, b = rgb.unbind(dim=1)
    high, low = rgb.amax(dim=1), rgb.amin(dim=1)
    span = high - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    h = torch.where(high == r, ((g - b) / safe) % 6,
                    torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(span > 0, h / 6, torch.zeros_like(h))
    s = torch.where(high > 0, span / torch.where(high > 0, high, torch.ones_like(high)),
                    torch.zeros_like(high))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(h, s, high)


def hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV (each ``(N, H, W)`` in 0..1) → RGB ``(N, 3, H, W)``."""
    k = torch.tensor([5.0, 3.0, 1.0], device=h.device).view(1, 3, 1, 1)
    t = (k + h.unsqueeze(1) * 6) % 6
    ramp = torch.minimum(t, 4 - t).clamp(0, 1)
    return v.unsqueeze(1) - v.unsqueeze(1) * s.unsqueeze(1) * ramp


def gaussian_blur_sigma(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each float image ``(N, C, H, W)`` with its own sigma ``(N,)`` (kernels of radius
    ceil(3·max sigma), reflected borders), as one depthwise convolution per direction."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    radius = min(radius, h - 1, w - 1) if min(h, w) > 1 else 0
    if radius == 0:
        return x.clone()
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernels = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"),
                    kernels.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"),
                    kernels.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


# ------------------------------------------------------------------------------ CutMix
def cutmix_boxes(n: int, height: int, width: int, prob: float, generator: torch.Generator,
                 area: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.3, 1 / 0.3)) -> Tensor:
    """bool ``(N, 1, H, W)``: with probability ``prob`` one box per image covering a share
    ``area`` of it, with aspect ``ratio`` (UniMatch's), placed where it fits; else none."""
    use = _chance(n, prob, generator)
    size = _uniform(n, *area, generator) * height * width
    aspect = _uniform(n, *ratio, generator)
    box_w = torch.sqrt(size / aspect).long().clamp(1, width)
    box_h = torch.sqrt(size * aspect).long().clamp(1, height)
    left = (torch.rand(n, generator=generator) * (width - box_w + 1)).long()
    top = (torch.rand(n, generator=generator) * (height - box_h + 1)).long()
    cols, rows = torch.arange(width).view(1, 1, -1), torch.arange(height).view(1, -1, 1)
    inside = ((cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))
              & (rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1)))
    return (inside & use.view(-1, 1, 1)).unsqueeze(1)


def cutmix(x: Tensor, box: Tensor, partner: Tensor) -> Tensor:
    """``x`` with each image's box filled from image ``partner[i]`` of the same batch; the
    same ``box`` and ``partner`` mix an image batch and its pseudo labels alike."""
    box = box.to(x.device)
    return torch.where(box, x[partner.to(x.device)], x)
