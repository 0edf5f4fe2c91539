"""Batched joint image + label augmentation on uint8 tensors (docs/method.md §4).

Whole batches are augmented at once on whatever device holds them (CPU or
GPU), with no per-image Python loop: geometry groups the batch by its (at
most 8) dihedral codes, blur runs one separable Gaussian pass per blur level
over the samples at that level, brightness and noise are broadcast.

Reproducibility: every random number is drawn on the CPU from the
``torch.Generator`` passed in and then moved to the data's device, so the
same seed gives the same output on any device.

Geometry codes (``random_geometry``, ``apply_geometry``, ``invert_geometry``)
are ints 0..7, ``code = v + 2*h + 4*r``: apply a vertical flip (rows) if
``v``, then a horizontal flip (columns) if ``h``, then ``torch.rot90`` by 90°
if ``r``. These 8 codes are the 8 symmetries of the square; 180° is
``v + h`` (code 3) and 270° is code 7.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from imseg.errors import ConfigError

__all__ = [
    "AugmentParams",
    "augment_pairs",
    "augmented_copies",
    "photometric",
    "random_geometry",
    "apply_geometry",
    "invert_geometry",
    "random_scale_crop",
    "apply_scale_crop",
    "gaussian_blur",
]

_CHUNK_ELEMENTS = 1 << 24
"""Photometric work is done on chunks of about this many float32 values (64 MiB)."""

# OpenCV's getGaussianKernel(ksize, sigma <= 0) uses these fixed tables for
# ksize <= 7 (and therefore so does cv2.GaussianBlur(img, (k, k), 0), which the
# reference calls); larger kernels use sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8.
_OPENCV_SMALL_GAUSSIAN = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


@dataclass(frozen=True)
class AugmentParams:
    """What one augmentation may do; the defaults are the reference's ISIC setting.

    ``rotate`` draws 0/90/180/270° (only 0/180° for non-square images).
    ``max_blur``: blur level drawn from ``0..max_blur``; level ``l`` is a
    Gaussian of kernel ``2l + 1`` (OpenCV's sigma=0 kernel), 0 = none.
    ``max_noise``: uniform integer noise in ``[-max_noise, max_noise)``, 0 = none.
    """

    flip_h: bool = True
    flip_v: bool = True
    rotate: bool = True
    brightness_prob: float = 0.5
    alpha_range: tuple[float, float] = (0.5, 1.5)
    beta_range: tuple[float, float] = (-25.0, 25.0)
    max_blur: int = 3
    max_noise: int = 25

    def __post_init__(self) -> None:
        if not 0.0 <= self.brightness_prob <= 1.0:
            raise ConfigError(
                f"augmentation brightness_prob must be in [0, 1], got {self.brightness_prob}"
            )
        for name in ("alpha_range", "beta_range"):
            rng = getattr(self, name)
            if len(rng) != 2 or not rng[0] <= rng[1]:
                raise ConfigError(
                    f"augmentation {name} must be (low, high) with low <= high, got {rng}"
                )
        if self.max_blur < 0 or not 0 <= self.max_noise <= 255:
            raise ConfigError(
                "augmentation max_blur must be >= 0 and max_noise in 0..255, got "
                f"{self.max_blur}, {self.max_noise}"
            )

    def with_(self, **changes: Any) -> AugmentParams:
        """A copy with some fields changed (e.g. a Noisy Student generation's strength)."""
        return dataclasses.replace(self, **changes)

    @property
    def photometric_off(self) -> bool:
        """True when ``photometric`` would return its input unchanged."""
        return self.brightness_prob == 0.0 and self.max_blur == 0 and self.max_noise == 0


# --------------------------------------------------------------------------- geometry


def random_geometry(
    n: int, params: AugmentParams, generator: torch.Generator, *, square: bool = True
) -> Tensor:
    """Per-sample dihedral codes (int64, CPU) drawn like the reference.

    Independent vertical flip (p ½), horizontal flip (p ½) and rotation
    k ∈ {0, 1, 2, 3} × 90° — only {0, 2} when ``square`` is False, so
    non-square images keep their shape (codes 0..3 only).
    """
    _check_generator(generator)
    zeros = torch.zeros(n, dtype=torch.int64)
    v = (torch.rand(n, generator=generator) < 0.5).long() if params.flip_v else zeros
    h = (torch.rand(n, generator=generator) < 0.5).long() if params.flip_h else zeros
    if params.rotate:
        k = (
            torch.randint(0, 4, (n,), generator=generator)
            if square
            else (2 * torch.randint(0, 2, (n,), generator=generator))
        )
    else:
        k = zeros
    # rot90^k after the flips == rot90^(k % 2) after flips xor (k // 2), as rot180 = flip both.
    q, r = k // 2, k % 2
    return (v ^ q) + 2 * (h ^ q) + 4 * r


def _forward(x: Tensor, code: int) -> Tensor:
    dims = [d for d, bit in ((-2, 1), (-1, 2)) if code & bit]
    y = torch.flip(x, dims) if dims else x
    if code & 4:
        y = torch.rot90(y, 1, (-2, -1))
    return y.clone() if y is x else y


def _inverse(x: Tensor, code: int) -> Tensor:
    y = torch.rot90(x, -1, (-2, -1)) if code & 4 else x
    dims = [d for d, bit in ((-2, 1), (-1, 2)) if code & bit]
    y = torch.flip(y, dims) if dims else y
    return y.clone() if y is x else y


def _grouped(x: Tensor, codes: Tensor, fn: Any) -> Tensor:
    if x.dim() < 3:
        raise ValueError(
            f"geometry needs a batch of (..., H, W) tensors, got shape {tuple(x.shape)}"
        )
    codes = torch.as_tensor(codes).to("cpu", torch.int64).reshape(-1)
    if codes.numel() != x.shape[0]:
        raise ValueError(f"{codes.numel()} geometry codes for a batch of {x.shape[0]}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > 7):
        raise ValueError("geometry codes must be in 0..7")
    present = torch.unique(codes).tolist()
    if not present:
        return x.clone()
    if len(present) == 1:
        return fn(x, present[0])
    height, width = x.shape[-2], x.shape[-1]
    turned = {c & 4 for c in present}
    if height != width and len(turned) > 1:
        raise ValueError("a non-square batch cannot mix rotated (codes 4..7) and unrotated codes")
    shape = (*x.shape[:-2], width, height) if turned == {4} else x.shape
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    for c in present:
        idx = (codes == c).nonzero().squeeze(1).to(x.device)
        out.index_copy_(0, idx, fn(x.index_select(0, idx), c))
    return out


def apply_geometry(x: Tensor, codes: Tensor) -> Tensor:
    """Transform each sample of ``x`` (N, ..., H, W), any dtype, by its code; a new tensor."""
    return _grouped(x, codes, _forward)


def invert_geometry(x: Tensor, codes: Tensor) -> Tensor:
    """Undo ``apply_geometry`` exactly (maps predictions back onto the input image)."""
    return _grouped(x, codes, _inverse)


# ------------------------------------------------------------------------ scale-crop


@dataclass(frozen=True)
class ScaleCrop:
    """One random rescale-and-crop per sample (UniMatch's natural-image weak view, drawn by
    :func:`random_scale_crop`): sample ``i`` is resized to ``sizes[i]`` (height, width),
    padded at the bottom and right to at least the original size, and cropped back to it
    at ``offsets[i]`` (top, left)."""

    sizes: list[tuple[int, int]]
    offsets: list[tuple[int, int]]


def random_scale_crop(
    n: int, height: int, width: int, scale_range: tuple[float, float], generator: torch.Generator
) -> ScaleCrop:
    """Per-sample scale factors uniform in ``scale_range`` (aspect kept) and crop corners
    uniform over the scaled-and-padded image; drawn on the CPU like every other view."""
    _check_generator(generator)
    low, high = scale_range
    if not 0 < low <= high:
        raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
    scales = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
    corners = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    sizes, offsets = [], []
    for scale, (u, v) in zip(scales.tolist(), corners.tolist(), strict=True):
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        spare = (max(size[0], height) - height, max(size[1], width) - width)
        sizes.append(size)
        offsets.append((int(u * (spare[0] + 1)), int(v * (spare[1] + 1))))
    return ScaleCrop(sizes, offsets)


def apply_scale_crop(x: Tensor, plan: ScaleCrop, *, fill: int, smooth: bool) -> Tensor:
    """Rescale and crop each sample of uint8 ``x`` (N, C, H, W) by ``plan``; where a sample
    shrank below the crop, the rest is ``fill`` (0 for images, VOID for labels).
    ``smooth``: bilinear (antialiased when shrinking) for images; else nearest, which
    moves label values without mixing them."""
    _check_images(x, "scale-crop input")
    height, width = x.shape[-2:]
    out = torch.full_like(x, fill)
    for i, ((h, w), (top, left)) in enumerate(zip(plan.sizes, plan.offsets, strict=True)):
        scaled = _resize(x[i : i + 1], (h, w), smooth)[..., top : top + height, left : left + width]
        out[i, :, : scaled.shape[-2], : scaled.shape[-1]] = scaled[0]
    return out


def _resize(x: Tensor, size: tuple[int, int], smooth: bool) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if smooth:
        y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False,
                          antialias=size[0] < x.shape[-2])
        return y.round().clamp(0, 255).to(x.dtype)
    return F.interpolate(x.float(), size=size, mode="nearest-exact").to(x.dtype)


# ------------------------------------------------------------------------ photometric


def _gaussian_kernel_1d(ksize: int) -> Tensor:
    """OpenCV's ``getGaussianKernel(ksize, 0)`` in float64."""
    if ksize in _OPENCV_SMALL_GAUSSIAN:
        return torch.tensor(_OPENCV_SMALL_GAUSSIAN[ksize], dtype=torch.float64)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    xs = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(xs**2) / (2 * sigma * sigma))
    return k / k.sum()


def gaussian_blur(x: Tensor, level: int) -> Tensor:
    """Blur float (N, C, H, W) with kernel ``2*level + 1`` like ``cv2.GaussianBlur(x, (k, k), 0)``.

    Separable, with OpenCV's default border (BORDER_REFLECT_101 = torch
    'reflect'; 'replicate' only where the image is too small to reflect).
    Each pass is a weighted sum of shifted views of the padded batch: the same
    result as a depthwise conv2d, 3-10x faster on CPU and as fast on GPU.
    """
    if level <= 0:
        return x.clone()
    height, width = x.shape[-2:]
    weights = _gaussian_kernel_1d(2 * level + 1).tolist()
    mode = "reflect" if level < min(height, width) else "replicate"
    padded = F.pad(x, (level, level, level, level), mode=mode)
    rows = padded[..., :, 0:width] * weights[0]
    for i, w in enumerate(weights[1:], start=1):
        rows.add_(padded[..., :, i : i + width], alpha=w)
    out = rows[..., 0:height, :] * weights[0]
    for i, w in enumerate(weights[1:], start=1):
        out.add_(rows[..., i : i + height, :], alpha=w)
    return out


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("augmentation needs a CPU torch.Generator (draws are made on the CPU)")


def _check_images(images: Tensor, name: str = "images") -> None:
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(
            f"{name} must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )


def _integer_noise(
    shape: tuple[int, ...], max_noise: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Uniform integers in ``[-max_noise, max_noise)`` drawn on the CPU, then moved to ``device``.

    Drawing per-pixel noise on the CPU (about 4 ns a pixel) keeps results
    identical on every device; it is the main cost of augmenting on a GPU.
    """
    noise = torch.randint(-max_noise, max_noise, shape, generator=generator, dtype=torch.int16)
    return noise.to(device)


def photometric(images: Tensor, params: AugmentParams, generator: torch.Generator) -> Tensor:
    """Brightness (with prob), blur, noise on uint8 (N, C, H, W); a new uint8 tensor.

    Per sample: with probability ``brightness_prob`` ``x*alpha + beta`` clipped
    to 0..255, then a Gaussian blur of a random level, then integer noise; the
    result is clipped and rounded back to uint8. Work is chunked so only a
    bounded float32 buffer is alive at a time.
    """
    _check_images(images)
    _check_generator(generator)
    n = images.shape[0]
    if n == 0 or params.photometric_off:
        return images.clone()
    device = images.device
    apply = torch.rand(n, generator=generator, dtype=torch.float64) < params.brightness_prob
    lo, hi = params.alpha_range
    alpha = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    lo, hi = params.beta_range
    beta = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    alpha = torch.where(apply, alpha, torch.ones_like(alpha)).float()
    beta = torch.where(apply, beta, torch.zeros_like(beta)).float()
    levels = (
        torch.randint(0, params.max_blur + 1, (n,), generator=generator)
        if params.max_blur > 0
        else torch.zeros(n, dtype=torch.int64)
    )

    out = torch.empty_like(images)
    per_sample = math.prod(images.shape[1:])
    step = max(1, _CHUNK_ELEMENTS // max(1, per_sample))
    for start in range(0, n, step):
        stop = min(n, start + step)
        x = images[start:stop].to(torch.float32)
        if bool(apply[start:stop].any()):
            a = alpha[start:stop].to(device).view(-1, 1, 1, 1)
            b = beta[start:stop].to(device).view(-1, 1, 1, 1)
            x = (x * a + b).clamp_(0.0, 255.0)
        chunk_levels = levels[start:stop]
        for level in torch.unique(chunk_levels).tolist():
            if level == 0:
                continue
            idx = (chunk_levels == level).nonzero().squeeze(1).to(device)
            x.index_copy_(0, idx, gaussian_blur(x.index_select(0, idx), level))
        if params.max_noise > 0:
            x += _integer_noise(tuple(x.shape), params.max_noise, generator, device)
        out[start:stop] = x.clamp_(0.0, 255.0).round_().to(torch.uint8)
    return out


# ------------------------------------------------------------------------------ pairs


def augment_pairs(
    images: Tensor, labels: Tensor | None, params: AugmentParams, generator: torch.Generator
) -> tuple[Tensor, Tensor | None]:
    """Augment each (image, label) pair once: shared geometry, photometric on the image only.

    ``images`` uint8 (N, C, H, W), ``labels`` uint8 (N, L, H, W) with any
    values (class ids, VOID) or None. Returns new tensors on the same device;
    label values are only moved, never changed.
    """
    _check_images(images)
    _check_generator(generator)
    if labels is not None:
        _check_images(labels, "labels")
        if labels.shape[0] != images.shape[0] or labels.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}"
            )
    height, width = images.shape[-2:]
    codes = random_geometry(images.shape[0], params, generator, square=height == width)
    out_images = photometric(apply_geometry(images, codes), params, generator)
    out_labels = None if labels is None else apply_geometry(labels, codes)
    return out_images, out_labels


def augmented_copies(
    images: Tensor,
    labels: Tensor | None,
    params: AugmentParams,
    copies: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor | None]:
    """``copies`` independently augmented versions of every pair, copy-major.

    Row ``j * N + i`` is copy ``j`` of pair ``i``; the originals are not
    included (ALDT: the caller concatenates them with 9 copies).
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    n = images.shape[0]
    # Filled in place: peak memory is the output plus one copy's work, not twice the output.
    out_images = images.new_empty((copies * n, *images.shape[1:]))
    out_labels = None if labels is None else labels.new_empty((copies * n, *labels.shape[1:]))
    for j in range(copies):
        aug_images, aug_labels = augment_pairs(images, labels, params, generator)
        out_images[j * n : (j + 1) * n] = aug_images
        if out_labels is not None:
            out_labels[j * n : (j + 1) * n] = aug_labels
    return out_images, out_labels
