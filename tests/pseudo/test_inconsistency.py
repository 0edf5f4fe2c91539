"""The inconsistency mask on hand-made teacher labels: agreement, refinement, blocking, filter."""

from __future__ import annotations

import pytest
import torch

from imseg.pseudo.inconsistency import (
    agreement,
    binary_keep,
    block,
    dilate,
    erode,
    im_fraction,
    refine,
)
from imseg.tasks import IM_CLASS, VOID, Task

BINARY = Task("binary", 1)


def t(rows: list[list[int]]) -> torch.Tensor:
    """A hand-written H×W grid as uint8."""
    return torch.tensor(rows, dtype=torch.uint8)


def teachers(*grids: list[list[int]]) -> torch.Tensor:
    """Single-channel teacher labels of one image → ``(T, 1, 1, H, W)``."""
    return torch.stack([t(g) for g in grids])[:, None, None]


def as_mask(rows: list[list[int]]) -> torch.Tensor:
    """A hand-written 0/1 grid → bool ``(1, 1, H, W)``."""
    return t(rows).bool()[None, None]


# ------------------------------------------------------------------------- binary
def test_binary_two_teachers() -> None:
    votes = teachers(
        [[1, 1, 0, 0],
         [1, 1, 0, 0],
         [0, 0, 0, 0],
         [0, 0, 0, 1]],
        [[1, 0, 0, 0],
         [1, 1, 1, 0],
         [0, 0, 0, 0],
         [0, 0, 0, 1]],
    )
    out = agreement(BINARY, votes)
    assert out.label.dtype == torch.uint8 and out.label.shape == (1, 1, 4, 4)
    assert out.mask.dtype == torch.bool and out.mask.shape == (1, 1, 4, 4)
    assert torch.equal(out.label[0, 0], t([[1, 0, 0, 0],
                                           [1, 1, 0, 0],
                                           [0, 0, 0, 0],
                                           [0, 0, 0, 1]]))
    assert torch.equal(out.mask, as_mask([[0, 1, 0, 0],
                                          [0, 0, 1, 0],
                                          [0, 0, 0, 0],
                                          [0, 0, 0, 0]]))


def test_binary_three_teachers() -> None:
    votes = teachers(
        [[1, 1, 1, 0],
         [1, 1, 0, 0],
         [0, 0, 0, 0],
         [0, 0, 0, 0]],
        [[1, 1, 0, 0],
         [1, 1, 0, 0],
         [0, 1, 0, 0],
         [0, 0, 0, 0]],
        [[1, 1, 1, 0],
         [0, 1, 0, 0],
         [0, 0, 0, 0],
         [0, 0, 0, 1]],
    )
    # vote sums: 3 3 2 0 / 2 3 0 0 / 0 1 0 0 / 0 0 0 1
    out = agreement(BINARY, votes)
    assert torch.equal(out.label[0, 0], t([[1, 1, 0, 0],
                                           [0, 1, 0, 0],
                                           [0, 0, 0, 0],
                                           [0, 0, 0, 0]]))
    assert torch.equal(out.mask, as_mask([[0, 0, 1, 0],
                                          [1, 0, 0, 0],
                                          [0, 1, 0, 0],
                                          [0, 0, 0, 1]]))


def test_binary_four_teachers() -> None:
    votes = teachers(
        [[1, 1, 1, 1],
         [1, 0, 0, 0],
         [0, 0, 0, 0],
         [1, 0, 0, 0]],
        [[1, 1, 1, 0],
         [1, 0, 0, 0],
         [0, 0, 0, 0],
         [1, 0, 0, 0]],
        [[1, 1, 0, 0],
         [1, 0, 1, 0],
         [0, 0, 0, 0],
         [1, 0, 0, 0]],
        [[1, 0, 0, 0],
         [1, 0, 0, 0],
         [0, 0, 0, 0],
         [1, 0, 0, 1]],
    )
    # vote sums: 4 3 2 1 / 4 0 1 0 / 0 0 0 0 / 4 0 0 1
    out = agreement(BINARY, votes)
    assert torch.equal(out.label[0, 0], t([[1, 0, 0, 0],
                                           [1, 0, 0, 0],
                                           [0, 0, 0, 0],
                                           [1, 0, 0, 0]]))
    assert torch.equal(out.mask, as_mask([[0, 1, 1, 1],
                                          [0, 0, 1, 0],
                                          [0, 0, 0, 0],
                                          [0, 0, 0, 1]]))


def test_binary_batch_images_are_independent() -> None:
    a = [[1, 1], [0, 0]]
    b = [[1, 0], [0, 0]]
    empty = [[0, 0], [0, 0]]
    full = [[1, 1], [1, 1]]
    # teacher 0 and teacher 1, each labelling two images
    votes = torch.stack([
        torch.stack([t(a), t(empty)]),
        torch.stack([t(b), t(full)]),
    ])[:, :, None]  # (T=2, B=2, 1, 2, 2)
    out = agreement(BINARY, votes)
    assert torch.equal(out.label[:, 0], torch.stack([t([[1, 0], [0, 0]]), t(empty)]))
    assert torch.equal(out.mask[:, 0], torch.stack([t([[0, 1], [0, 0]]), t(full)]).bool())


def test_agreement_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="teachers, batch"):
        agreement(BINARY, torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# --------------------------------------------------------------------- multilabel
def test_multilabel_two_channels_two_teachers_union() -> None:
    task = Task("multilabel", 2)
    ch0 = ([[1, 1, 0, 0],
            [0, 1, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0]],
           [[1, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0]])
    ch1 = ([[0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 1, 1]],
           [[0, 0, 0, 0],
            [0, 1, 0, 0],
            [0, 0, 1, 0],
            [0, 0, 1, 1]])
    votes = torch.stack([torch.stack([t(ch0[k]), t(ch1[k])]) for k in range(2)])[:, None]
    assert votes.shape == (2, 1, 2, 4, 4)
    out = agreement(task, votes)
    assert out.label.shape == (1, 2, 4, 4)
    assert torch.equal(out.label[0, 0], t([[1, 0, 0, 0],
                                           [0, 0, 0, 0],
                                           [0, 0, 0, 0],
                                           [0, 0, 0, 0]]))
    assert torch.equal(out.label[0, 1], t([[0, 0, 0, 0],
                                           [0, 0, 0, 0],
                                           [0, 0, 1, 0],
                                           [0, 0, 1, 1]]))
    # one mask for all channels: (0,1) from ch0, (2,3) from ch1, (1,1) from both
    assert out.mask.shape == (1, 1, 4, 4)
    assert torch.equal(out.mask, as_mask([[0, 1, 0, 0],
                                          [0, 1, 0, 0],
                                          [0, 0, 0, 1],
                                          [0, 0, 0, 0]]))


def test_multilabel_three_channels_three_teachers() -> None:
    task = Task("multilabel", 3)
    z = [[0] * 4 for _ in range(4)]

    def one(r: int, c: int) -> list[list[int]]:
        g = [row[:] for row in z]
        g[r][c] = 1
        return g

    # channel 0: all three say (0,0); channel 1: only teacher 2 says (3,3);
    # channel 2: teachers 0 and 1 say (1,2), teacher 2 does not.
    per_teacher = [
        [one(0, 0), z, one(1, 2)],
        [one(0, 0), z, one(1, 2)],
        [one(0, 0), one(3, 3), z],
    ]
    votes = torch.stack([torch.stack([t(g) for g in chans]) for chans in per_teacher])[:, None]
    out = agreement(task, votes)
    assert torch.equal(out.label[0, 0], t(one(0, 0)))
    assert torch.equal(out.label[0, 1], t(z))
    assert torch.equal(out.label[0, 2], t(z))
    assert torch.equal(out.mask, as_mask([[0, 0, 0, 0],
                                          [0, 0, 1, 0],
                                          [0, 0, 0, 0],
                                          [0, 0, 0, 1]]))


# --------------------------------------------------------------------- multiclass
MULTI = Task("multiclass", 3)  # label values 1..3, IM_CLASS 0


def test_multiclass_two_teachers() -> None:
    votes = teachers(
        [[1, 1, 2, 2],
         [1, 1, 2, 2],
         [3, 3, 3, 3],
         [3, 3, 3, 3]],
        [[1, 1, 2, 2],
         [1, 2, 2, 2],
         [3, 3, 1, 3],
         [3, 3, 3, 3]],
    )
    out = agreement(MULTI, votes)
    assert torch.equal(out.label[0, 0], t([[1, 1, 2, 2],
                                           [1, 0, 2, 2],
                                           [3, 3, 0, 3],
                                           [3, 3, 3, 3]]))
    assert torch.equal(out.mask, as_mask([[0, 0, 0, 0],
                                          [0, 1, 0, 0],
                                          [0, 0, 1, 0],
                                          [0, 0, 0, 0]]))
    assert IM_CLASS == 0


def test_multiclass_three_teachers() -> None:
    votes = teachers(
        [[1, 1, 2, 3],
         [1, 1, 2, 3],
         [2, 2, 2, 3],
         [3, 3, 3, 3]],
        [[1, 1, 2, 3],
         [1, 1, 2, 3],
         [2, 2, 2, 3],
         [3, 3, 3, 3]],
        [[1, 2, 2, 3],  # teachers 0,1 agree on 1, teacher 2 says 2
         [1, 1, 2, 3],
         [2, 2, 3, 3],
         [3, 3, 3, 1]],
    )
    out = agreement(MULTI, votes)
    assert torch.equal(out.label[0, 0], t([[1, 0, 2, 3],
                                           [1, 1, 2, 3],
                                           [2, 2, 0, 3],
                                           [3, 3, 3, 0]]))
    assert torch.equal(out.mask, as_mask([[0, 1, 0, 0],
                                          [0, 0, 0, 0],
                                          [0, 0, 1, 0],
                                          [0, 0, 0, 1]]))


def test_multiclass_four_teachers_all_different_and_three_of_four() -> None:
    votes = teachers(
        [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [1, 2, 3, 1]],
        [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [1, 2, 3, 2]],
        [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [1, 2, 3, 3]],
        [[1, 1, 1, 2], [2, 2, 2, 2], [3, 3, 3, 3], [1, 2, 3, 1]],
    )
    out = agreement(MULTI, votes)
    assert torch.equal(out.label[0, 0], t([[1, 1, 1, 0],
                                           [2, 2, 2, 2],
                                           [3, 3, 3, 3],
                                           [1, 2, 3, 0]]))
    assert torch.equal(out.mask, as_mask([[0, 0, 0, 1],
                                          [0, 0, 0, 0],
                                          [0, 0, 0, 0],
                                          [0, 0, 0, 1]]))


# -------------------------------------------------------------------- morphology
ISOLATED = [[0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0]]

BLOCK3 = [[0, 0, 0, 0, 0, 0],
          [0, 1, 1, 1, 0, 0],
          [0, 1, 1, 1, 0, 0],
          [0, 1, 1, 1, 0, 0],
          [0, 0, 0, 0, 0, 0],
          [0, 0, 0, 0, 0, 0]]


def test_erode_removes_an_isolated_pixel() -> None:
    assert not erode(as_mask(ISOLATED), 3).any()


def test_erode_shrinks_a_block_to_its_centre() -> None:
    expected = [[0] * 6 for _ in range(6)]
    expected[2][2] = 1
    assert torch.equal(erode(as_mask(BLOCK3), 3), as_mask(expected))


def test_block_survives_erode_then_dilate() -> None:
    assert torch.equal(refine(as_mask(BLOCK3), erode_size=3, dilate_size=3), as_mask(BLOCK3))


def test_dilate_grows_a_pixel_to_a_square() -> None:
    assert torch.equal(dilate(as_mask(ISOLATED), 3), as_mask(BLOCK3))
    grown5 = [[1, 1, 1, 1, 1, 0],
              [1, 1, 1, 1, 1, 0],
              [1, 1, 1, 1, 1, 0],
              [1, 1, 1, 1, 1, 0],
              [1, 1, 1, 1, 1, 0],
              [0, 0, 0, 0, 0, 0]]
    assert torch.equal(dilate(as_mask(ISOLATED), 5), as_mask(grown5))


def test_dilate_clips_at_the_border() -> None:
    corner = [[0] * 6 for _ in range(6)]
    corner[0][0] = 1
    expected = [[0] * 6 for _ in range(6)]
    for r in range(2):
        for c in range(2):
            expected[r][c] = 1
    assert torch.equal(dilate(as_mask(corner), 3), as_mask(expected))


def test_erode_keeps_a_full_mask_full_like_opencv() -> None:
    """Outside the image counts as set for erosion (cv2.erode's default border)."""
    full = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    assert torch.equal(erode(full, 5), full)


def test_refine_is_an_opening_not_a_closing() -> None:
    """Erosion first: an isolated pixel is gone and dilation cannot bring it back."""
    assert not refine(as_mask(ISOLATED), erode_size=3, dilate_size=3).any()
    assert torch.equal(refine(as_mask(ISOLATED), erode_size=0, dilate_size=3), as_mask(BLOCK3))
    assert torch.equal(refine(as_mask(BLOCK3), erode_size=3, dilate_size=0),
                       erode(as_mask(BLOCK3), 3))


@pytest.mark.parametrize("size", [0, 1])
def test_off_sizes_are_identity(size: int) -> None:
    m = as_mask(BLOCK3)
    assert torch.equal(erode(m, size), m)
    assert torch.equal(dilate(m, size), m)
    assert torch.equal(refine(m, size, size), m)


@pytest.mark.parametrize("size", [2, 4])
def test_even_sizes_raise(size: int) -> None:
    m = as_mask(BLOCK3)
    with pytest.raises(ValueError, match="odd"):
        erode(m, size)
    with pytest.raises(ValueError, match="odd"):
        dilate(m, size)
    with pytest.raises(ValueError, match="odd"):
        refine(m, erode_size=0, dilate_size=size)


# ----------------------------------------------------------------------- blocking
IM = as_mask([[0, 1, 0, 0],
              [0, 0, 0, 0],
              [0, 0, 1, 1],
              [0, 0, 0, 0]])


def test_block_input_blacks_every_channel_under_the_mask() -> None:
    images = torch.full((1, 3, 4, 4), 200, dtype=torch.uint8)
    images[0, 1] = 90
    label = t([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])[None, None]
    out_img, out_lab = block(BINARY, images, label, IM, block_input=True, block_output=False)
    expected = images.clone()
    for r, c in ((0, 1), (2, 2), (2, 3)):
        expected[0, :, r, c] = 0
    assert torch.equal(out_img, expected)
    assert torch.equal(out_lab, label)
    assert int(images[0, 0, 0, 1]) == 200  # the input tensor is not modified


def test_block_output_binary_writes_background() -> None:
    images = torch.full((1, 1, 4, 4), 50, dtype=torch.uint8)
    label = t([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])[None, None]
    out_img, out_lab = block(BINARY, images, label, IM, block_input=False, block_output=True)
    assert torch.equal(out_img, images)
    assert torch.equal(out_lab[0, 0], t([[1, 0, 0, 0],
                                         [1, 1, 0, 0],
                                         [0, 0, 0, 0],
                                         [0, 0, 0, 0]]))


def test_block_ignore_writes_void() -> None:
    images = torch.full((1, 1, 4, 4), 50, dtype=torch.uint8)
    label = t([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])[None, None]
    _, out_lab = block(BINARY, images, label, IM, block_output=True, ignore=True)
    v = VOID
    assert torch.equal(out_lab[0, 0], t([[1, v, 0, 0],
                                         [1, 1, 0, 0],
                                         [0, 0, v, v],
                                         [0, 0, 0, 0]]))


def test_block_multilabel_blocks_every_channel() -> None:
    task = Task("multilabel", 2)
    label = torch.ones(1, 2, 4, 4, dtype=torch.uint8)
    images = torch.full((1, 3, 4, 4), 9, dtype=torch.uint8)
    _, out_lab = block(task, images, label, IM)
    expected = (~IM[0, 0]).to(torch.uint8)
    assert torch.equal(out_lab[0, 0], expected)
    assert torch.equal(out_lab[0, 1], expected)
    _, ignored = block(task, images, label, IM, ignore=True)
    assert torch.equal(ignored[0], torch.where(IM[0, 0], VOID, 1).to(torch.uint8).expand(2, 4, 4))


def test_block_multiclass_writes_im_class_under_a_dilated_mask() -> None:
    """Pixels the dilation adds (where teachers agreed) also become class 0."""
    label = t([[1, 1, 2, 2],
               [1, 1, 2, 2],
               [3, 3, 3, 3],
               [3, 3, 3, 3]])[None, None]
    raw = as_mask([[0, 0, 0, 0],
                   [0, 0, 0, 0],
                   [0, 0, 0, 0],
                   [0, 0, 0, 1]])
    grown = dilate(raw, 3)
    images = torch.full((1, 3, 4, 4), 100, dtype=torch.uint8)
    out_img, out_lab = block(MULTI, images, label, grown)
    assert torch.equal(out_lab[0, 0], t([[1, 1, 2, 2],
                                         [1, 1, 2, 2],
                                         [3, 3, 0, 0],
                                         [3, 3, 0, 0]]))
    assert int(out_img[0, :, 2:, 2:].sum()) == 0
    assert int(out_img[0, :, :2].min()) == 100
    _, ignored = block(MULTI, images, label, grown, ignore=True)
    assert torch.equal(ignored[0, 0, 2:, 2:], torch.full((2, 2), VOID, dtype=torch.uint8))


# ------------------------------------------------------------------ filter, size
def test_binary_keep_rules() -> None:
    z = [[0] * 4 for _ in range(4)]
    labels = torch.stack([
        t(z),                                                       # nothing positive
        t([[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),  # 3 positive
        t([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),  # 2 positive
        t([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),  # 1 positive
    ])[:, None]
    masks = torch.stack([
        t(z),                                                       # IM 0
        t([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]),  # IM 2 < 3
        t([[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),  # IM 2 = 2
        t(z),                                                       # IM 0 < 1
    ])[:, None].bool()
    assert binary_keep(labels, masks).tolist() == [False, True, False, True]


def test_im_fraction_per_image() -> None:
    masks = torch.stack([IM[0], torch.zeros_like(IM[0]), torch.ones_like(IM[0])])
    assert im_fraction(masks).tolist() == [3 / 16, 0.0, 1.0]
