"""Batched augmentation: geometry shared by image and label, photometric on the image only."""

from __future__ import annotations

import math

import pytest
import torch

from imseg.data.augment import (
    AugmentParams,
    apply_geometry,
    apply_scale_crop,
    augment_pairs,
    augmented_copies,
    gaussian_blur,
    invert_geometry,
    photometric,
    random_geometry,
    random_scale_crop,
)
from imseg.errors import ConfigError

NO_PHOTO = AugmentParams(brightness_prob=0.0, max_blur=0, max_noise=0)
NOTHING = NO_PHOTO.with_(flip_h=False, flip_v=False, rotate=False)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_labels(n: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    """Class ids 0..4 plus some VOID (255) pixels."""
    g = gen(seed)
    labels = torch.randint(0, 5, (n, 1, h, w), generator=g, dtype=torch.uint8)
    labels[torch.rand(labels.shape, generator=g) < 0.1] = 255
    return labels


def image_from_label(labels: torch.Tensor) -> torch.Tensor:
    """Channel 0 is the label times 50 (uint8 wrap-around keeps the 6 values distinct), channels 1-2 random."""
    n, _, h, w = labels.shape
    image = torch.randint(0, 256, (n, 3, h, w), generator=gen(9), dtype=torch.uint8)
    image[:, 0] = labels[:, 0] * 50
    return image


@pytest.mark.parametrize("hw", [(16, 16), (12, 20)])
def test_label_follows_image_geometry(hw: tuple[int, int]) -> None:
    labels = random_labels(32, *hw)
    images = image_from_label(labels)
    out_images, out_labels = augment_pairs(images, labels, NO_PHOTO, gen(3))
    assert out_labels is not None
    assert out_images.shape == images.shape and out_labels.shape == labels.shape
    assert torch.equal(out_images[:, 0], out_labels[:, 0] * 50)
    # geometry really happened for some samples (else the check above is vacuous)
    assert not torch.equal(out_labels, labels)


def test_labels_keep_values_and_inputs_untouched() -> None:
    labels = random_labels(16, 16, 16)
    images = image_from_label(labels)
    images_before, labels_before = images.clone(), labels.clone()
    out_images, out_labels = augment_pairs(images, labels, AugmentParams(), gen(5))
    assert out_labels is not None
    assert torch.equal(images, images_before) and torch.equal(labels, labels_before)
    assert out_images.dtype == torch.uint8 and out_labels.dtype == torch.uint8
    # each label is a permutation of its input: same value histogram, VOID included
    for i in range(labels.shape[0]):
        assert torch.equal(
            torch.bincount(out_labels[i].flatten(), minlength=256),
            torch.bincount(labels[i].flatten(), minlength=256),
        )


def test_photometric_never_touches_labels() -> None:
    """Full photometric strength changes the image, while labels get geometry only."""
    labels = random_labels(8, 16, 16)
    images = image_from_label(labels)
    strong = AugmentParams(brightness_prob=1.0, max_blur=3, max_noise=25)
    out_images, out_labels = augment_pairs(images, labels, strong, gen(11))
    geo_images, geo_labels = augment_pairs(
        images, labels, strong.with_(brightness_prob=0.0, max_blur=0, max_noise=0), gen(11)
    )
    assert torch.equal(out_labels, geo_labels)
    assert not torch.equal(out_images, geo_images)


def test_everything_off_is_identity() -> None:
    labels = random_labels(6, 10, 14)
    images = image_from_label(labels)
    out_images, out_labels = augment_pairs(images, labels, NOTHING, gen(0))
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)
    assert out_images.data_ptr() != images.data_ptr()
    out_images, none = augment_pairs(images, None, NOTHING, gen(0))
    assert none is None and torch.equal(out_images, images)


def test_same_seed_same_output_other_seed_differs() -> None:
    labels = random_labels(8, 16, 16)
    images = image_from_label(labels)
    a = augment_pairs(images, labels, AugmentParams(), gen(42))
    b = augment_pairs(images, labels, AugmentParams(), gen(42))
    c = augment_pairs(images, labels, AugmentParams(), gen(43))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_geometry_codes_round_trip_for_any_dtype() -> None:
    square = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    for dtype in (torch.uint8, torch.int64, torch.float32, torch.bool):
        x = (square % 2 == 0) if dtype == torch.bool else square.to(dtype)
        for code in range(8):
            codes = torch.full((2,), code)
            y = apply_geometry(x, codes)
            assert torch.equal(invert_geometry(y, codes), x)
    # mixed codes in one batch, each sample its own
    x = torch.arange(8 * 4 * 4).reshape(8, 1, 4, 4)
    codes = torch.arange(8)
    y = apply_geometry(x, codes)
    assert torch.equal(invert_geometry(y, codes), x)
    for i in range(8):
        assert torch.equal(y[i], apply_geometry(x[i : i + 1], codes[i : i + 1])[0])
    # the 8 codes are the 8 distinct symmetries of the square
    same = torch.arange(16).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1)
    z = apply_geometry(same, codes)
    assert len({tuple(z[i].flatten().tolist()) for i in range(8)}) == 8


def test_geometry_codes_match_hand_computed_transforms() -> None:
    x = torch.tensor([[1, 2], [3, 4]]).view(1, 1, 2, 2)
    expect = {
        0: [[1, 2], [3, 4]],
        1: [[3, 4], [1, 2]],  # vertical flip
        2: [[2, 1], [4, 3]],  # horizontal flip
        3: [[4, 3], [2, 1]],  # 180°
        4: [[2, 4], [1, 3]],  # rot90 (counter-clockwise)
        7: [[3, 1], [4, 2]],  # 180° then rot90 = 270°
    }
    for code, grid in expect.items():
        assert apply_geometry(x, torch.tensor([code]))[0, 0].tolist() == grid


def test_non_square_geometry() -> None:
    x = torch.arange(6 * 2 * 3 * 5).reshape(6, 2, 3, 5).to(torch.uint8)
    codes = random_geometry(200, AugmentParams(), gen(1), square=False)
    assert set(codes.tolist()) == {0, 1, 2, 3}
    for code in range(4):
        c = torch.full((6,), code)
        assert torch.equal(invert_geometry(apply_geometry(x, c), c), x)
    mixed = torch.tensor([0, 1, 2, 3, 3, 0])
    assert torch.equal(invert_geometry(apply_geometry(x, mixed), mixed), x)
    turned = torch.tensor([4, 5, 6, 7, 4, 5])  # all rotated: shape (W, H), still invertible
    y = apply_geometry(x, turned)
    assert y.shape == (6, 2, 5, 3)
    assert torch.equal(invert_geometry(y, turned), x)
    with pytest.raises(ValueError):
        apply_geometry(x, torch.tensor([0, 4, 0, 0, 0, 0]))


def test_random_geometry_respects_params() -> None:
    def drawn(params: AugmentParams, square: bool = True) -> set[int]:
        return set(random_geometry(400, params, gen(2), square=square).tolist())

    assert drawn(AugmentParams()) == set(range(8))
    assert drawn(AugmentParams(flip_v=False, rotate=False)) == {0, 2}
    assert drawn(AugmentParams(flip_h=False, rotate=False)) == {0, 1}
    assert drawn(AugmentParams(flip_h=False, flip_v=False)) == {0, 3, 4, 7}  # rotations only
    assert drawn(AugmentParams(flip_h=False, flip_v=False), square=False) == {0, 3}
    assert drawn(NOTHING) == {0}
    counts = torch.bincount(random_geometry(8000, AugmentParams(), gen(3)), minlength=8)
    assert counts.min() > 850 and counts.max() < 1150  # ~uniform over the 8 symmetries


def test_blur_level1_impulse_gives_opencv_3x3_kernel() -> None:
    impulse = torch.zeros(1, 2, 7, 7)
    impulse[:, :, 3, 3] = 1.0
    out = gaussian_blur(impulse, 1)
    # cv2.getGaussianKernel(3, 0) is OpenCV's fixed table [1, 2, 1] / 4
    k = torch.tensor([0.25, 0.5, 0.25])
    expected = torch.zeros(7, 7)
    expected[2:5, 2:5] = torch.outer(k, k)
    for c in range(2):
        assert torch.allclose(out[0, c], expected, atol=1e-7)


def test_blur_kernels_5_7_and_formula_beyond() -> None:
    for level, k in (
        (2, [1, 4, 6, 4, 1]),
        (3, [2, 7, 14, 18, 14, 7, 2]),
    ):
        size = 2 * level + 1
        impulse = torch.zeros(1, 1, size + 4, size + 4)
        impulse[0, 0, level + 2, level + 2] = 1.0
        out = gaussian_blur(impulse, level)
        k1 = torch.tensor(k, dtype=torch.float32) / sum(k)
        assert torch.allclose(out[0, 0, 2 : size + 2, 2 : size + 2], torch.outer(k1, k1), atol=1e-7)
    # ksize 9 (level 4): OpenCV's sigma rule 0.3*((k-1)*0.5-1)+0.8
    sigma = 0.3 * ((9 - 1) * 0.5 - 1) + 0.8
    g = [math.exp(-((i - 4) ** 2) / (2 * sigma**2)) for i in range(9)]
    k1 = torch.tensor(g) / sum(g)
    impulse = torch.zeros(1, 1, 13, 13)
    impulse[0, 0, 6, 6] = 1.0
    out = gaussian_blur(impulse, 4)
    assert torch.allclose(out[0, 0, 2:11, 2:11], torch.outer(k1, k1), atol=1e-7)


def test_blur_border_is_reflect_101() -> None:
    """An impulse in the corner: OpenCV's default border reflects without repeating the edge."""
    corner = torch.zeros(1, 1, 6, 6)
    corner[0, 0, 0, 0] = 1.0
    out = gaussian_blur(corner, 1)[0, 0]
    # 1-D: [1, 0, ...] padded as [0 | 1, 0, ...] -> [0.5, 0.25, 0, ...]
    assert out[0, 0].item() == pytest.approx(0.25)
    assert out[0, 1].item() == pytest.approx(0.125)
    assert out[1, 1].item() == pytest.approx(0.0625)
    assert out.sum().item() == pytest.approx(0.5625)


def test_photometric_blur_level1_on_uint8_impulse() -> None:
    """Through the public uint8 path every sample is either unblurred or the rounded kernel."""
    images = torch.zeros(16, 1, 7, 7, dtype=torch.uint8)
    images[:, :, 3, 3] = 255
    out = photometric(images, AugmentParams(brightness_prob=0.0, max_blur=1, max_noise=0), gen(4))
    k = torch.tensor([0.25, 0.5, 0.25])
    blurred = torch.zeros(7, 7)
    blurred[2:5, 2:5] = torch.outer(k, k) * 255
    blurred = blurred.round().to(torch.uint8)
    kinds = [
        0 if torch.equal(out[i, 0], images[i, 0]) else 1 if torch.equal(out[i, 0], blurred) else 2
        for i in range(16)
    ]
    assert 2 not in kinds and 0 in kinds and 1 in kinds


def test_noise_bounds() -> None:
    images = torch.full((8, 3, 16, 16), 128, dtype=torch.uint8)
    out = photometric(images, AugmentParams(brightness_prob=0.0, max_blur=0, max_noise=5), gen(6))
    diff = out.to(torch.int16) - 128
    assert diff.min().item() == -5 and diff.max().item() == 4  # [-max_noise, max_noise)
    assert set(diff.unique().tolist()) == set(range(-5, 5))
    # uniform: each of the 10 values about equally often
    big = torch.full((8, 3, 64, 64), 128, dtype=torch.uint8)
    diff = photometric(big, AugmentParams(brightness_prob=0.0, max_blur=0, max_noise=5), gen(6))
    counts = torch.bincount((diff.to(torch.int64) - 128 + 5).flatten(), minlength=10)
    assert (
        counts.numel() == 10 and (counts - big.numel() / 10).abs().max() < 0.05 * big.numel() / 10
    )
    # the largest allowed noise stays in range too
    wide = photometric(big, AugmentParams(brightness_prob=0.0, max_blur=0, max_noise=255), gen(6))
    assert wide.min().item() == 0 and wide.max().item() == 255


def test_brightness_clip_and_affine() -> None:
    images = (
        torch.tensor([0, 10, 128, 250, 255], dtype=torch.uint8).view(1, 1, 1, 5).repeat(64, 1, 1, 1)
    )
    bright = AugmentParams(
        brightness_prob=1.0,
        alpha_range=(2.0, 2.0),
        beta_range=(30.0, 30.0),
        max_blur=0,
        max_noise=0,
    )
    out = photometric(images, bright, gen(7))
    assert out[0, 0, 0].tolist() == [30, 50, 255, 255, 255]
    dark = bright.with_(alpha_range=(0.5, 0.5), beta_range=(-40.0, -40.0))
    assert photometric(images, dark, gen(7))[0, 0, 0].tolist() == [0, 0, 24, 85, 88]
    # random strength with prob 1/2: some samples untouched, all within 0..255 as uint8
    half = AugmentParams(brightness_prob=0.5, max_blur=0, max_noise=0)
    out = photometric(images, half, gen(8))
    untouched = (out == images).flatten(1).all(1)
    assert 0 < int(untouched.sum()) < 64


def test_augmented_copies_shape_and_order() -> None:
    labels = random_labels(3, 8, 8)
    images = image_from_label(labels)
    out_images, out_labels = augmented_copies(images, labels, NO_PHOTO, 4, gen(10))
    assert out_images.shape == (12, 3, 8, 8) and out_labels.shape == (12, 1, 8, 8)
    # copy-major: row j*N + i is a transformed copy of pair i
    for j in range(4):
        for i in range(3):
            row = j * 3 + i
            assert torch.equal(
                torch.bincount(out_labels[row].flatten(), minlength=256),
                torch.bincount(labels[i].flatten(), minlength=256),
            )
            assert torch.equal(out_images[row, 0], out_labels[row, 0] * 50)
    none_images, none_labels = augmented_copies(images, None, AugmentParams(), 0, gen(0))
    assert none_images.shape == (0, 3, 8, 8) and none_labels is None


def test_chunked_photometric_matches_shapes_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunking (forced tiny here) still blurs/noises every sample and stays in range."""
    import imseg.data.augment as augment

    monkeypatch.setattr(augment, "_CHUNK_ELEMENTS", 3 * 8 * 8 * 2)  # 2 samples per chunk
    images = torch.full((9, 3, 8, 8), 128, dtype=torch.uint8)
    out = photometric(images, AugmentParams(brightness_prob=0.0, max_blur=2, max_noise=3), gen(12))
    diff = (out.to(torch.int16) - 128).abs()
    assert diff.max().item() <= 3
    assert bool((diff.flatten(1).amax(1) > 0).all())  # noise reached every chunk


def test_invalid_params_and_inputs() -> None:
    with pytest.raises(ConfigError):
        AugmentParams(brightness_prob=1.5)
    with pytest.raises(ConfigError):
        AugmentParams(alpha_range=(1.5, 0.5))
    with pytest.raises(ConfigError):
        AugmentParams(max_noise=-1)
    with pytest.raises(ConfigError):
        AugmentParams(max_noise=256)
    with pytest.raises(ValueError):
        augment_pairs(torch.zeros(2, 1, 4, 4), None, AugmentParams(), gen())
    with pytest.raises(ValueError):
        augment_pairs(
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.zeros(3, 1, 4, 4, dtype=torch.uint8),
            AugmentParams(),
            gen(),
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_for_the_same_seed() -> None:
    labels = random_labels(12, 32, 32)
    images = image_from_label(labels)
    cpu = augment_pairs(images, labels, AugmentParams(), gen(21))
    gpu = augment_pairs(images.cuda(), labels.cuda(), AugmentParams(), gen(21))
    assert gpu[0].is_cuda and gpu[1].is_cuda
    assert torch.equal(gpu[1].cpu(), cpu[1])
    assert (gpu[0].cpu().int() - cpu[0].int()).abs().max().item() <= 1  # float rounding only


# ------------------------------------------------------------------------ scale-crop
VOID = 255


def _blocks(n: int = 4, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A checkerboard of 8-pixel blocks: label 0/1, image 20 or 220 in every channel."""
    rows = torch.arange(size).view(-1, 1) // 8
    cols = torch.arange(size).view(1, -1) // 8
    label = ((rows + cols) % 2).to(torch.uint8).expand(n, 1, size, size).clone()
    image = (20 + 200 * label).expand(n, 3, size, size).clone()
    return image, label


def _scale_crop(image, label, scale_range, seed):
    plan = random_scale_crop(image.shape[0], *image.shape[-2:], scale_range,
                             torch.Generator().manual_seed(seed))
    return (apply_scale_crop(image, plan, fill=0, smooth=True),
            apply_scale_crop(label, plan, fill=VOID, smooth=False), plan)


def test_scale_crop_keeps_image_and_label_aligned():
    image, label = _blocks()
    out_image, out_label, _ = _scale_crop(image, label, (0.5, 2.0), seed=0)
    padded = out_label == VOID
    assert torch.equal(padded, out_image[:, :1] == 0)  # the same pixels padded in both
    content = ~padded
    agree = ((out_image[:, :1] > 120).to(torch.uint8) == out_label)[content]
    assert agree.float().mean() > 0.95  # only the blurred block edges may differ
    assert set(out_label.unique().tolist()) <= {0, 1, VOID}  # labels moved, never mixed


def test_a_shrunk_image_is_padded_with_void_at_the_bottom_and_right():
    image, label = _blocks(n=2)
    out_image, out_label, plan = _scale_crop(image, label, (0.5, 0.5), seed=1)
    assert plan.sizes == [(32, 32), (32, 32)] and plan.offsets == [(0, 0), (0, 0)]
    assert (out_label[..., 32:, :] == VOID).all() and (out_label[..., :, 32:] == VOID).all()
    assert (out_image[..., 32:, :] == 0).all() and (out_image[..., :, 32:] == 0).all()
    assert (out_label[..., :32, :32] != VOID).all()
    # the kept part is the whole image at half size: 4-pixel blocks
    assert torch.equal(out_label[0, 0, :32, :32], label[0, 0, ::2, ::2])


def test_scale_crop_draws_scales_inside_its_range_and_crops_inside_the_image():
    plan = random_scale_crop(400, 40, 60, (0.7, 1.3), torch.Generator().manual_seed(2))
    scales = torch.tensor([h / 40 for h, _ in plan.sizes])
    assert scales.min() >= 0.7 - 1 / 40 and scales.max() <= 1.3 + 1 / 40
    assert scales.min() < 0.75 and scales.max() > 1.25  # the range is used, not a point
    for (h, w), (top, left) in zip(plan.sizes, plan.offsets, strict=True):
        assert abs(w / 60 - h / 40) < 2 / 40  # aspect kept
        assert 0 <= top <= max(h - 40, 0) and 0 <= left <= max(w - 60, 0)
    with pytest.raises(ConfigError, match="scale_range"):
        random_scale_crop(1, 8, 8, (2.0, 0.5), torch.Generator())


def test_scale_crop_is_the_same_for_the_same_seed():
    image, label = _blocks()
    first = _scale_crop(image, label, (0.5, 2.0), seed=3)
    again = _scale_crop(image, label, (0.5, 2.0), seed=3)
    other = _scale_crop(image, label, (0.5, 2.0), seed=4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
