"""Labelers with stub teachers whose logits are known exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imseg.config import InconsistencyConfig
from imseg.data.augment import apply_geometry
from imseg.pseudo.labelers import (
    LABELERS,
    InconsistencyLabeler,
    InputEnsembleLabeler,
    LabelingInput,
    PseudoSet,
)
from imseg.tasks import IM_CLASS, VOID, Task

BINARY = Task("binary", 1)
MULTI = Task("multiclass", 3)
CPU = torch.device("cpu")


# ------------------------------------------------------------------------ stubs
class Fixed(nn.Module):
    """Returns the same logits ``(C, H, W)`` for every image, and counts its calls."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits.float())
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.logits.expand(x.shape[0], *self.logits.shape).clone()


class ChannelBinary(nn.Module):
    """Per-pixel teacher: input channels ``[first, first + n)`` (0 or 255) → logits ∓10."""

    def __init__(self, first: int, n: int = 1) -> None:
        super().__init__()
        self.first, self.n = first, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, self.first : self.first + self.n] - 127.5) / 12.75


class ChannelClass(nn.Module):
    """Per-pixel multiclass teacher: input channel value 50·v → label value v (±10 logits)."""

    def __init__(self, channel: int, out_channels: int = MULTI.out_channels) -> None:
        super().__init__()
        self.channel, self.out = channel, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = (x[:, self.channel] / 50).round().long().clamp(0, self.out - 1)
        return F.one_hot(value, self.out).permute(0, 3, 1, 2).float() * 20 - 10


def grid(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.uint8)


def pixels(h: int, w: int, *where: tuple[int, int]) -> torch.Tensor:
    """An ``h×w`` uint8 0/1 map with ones at ``where``."""
    out = torch.zeros(h, w, dtype=torch.uint8)
    for r, c in where:
        out[r, c] = 1
    return out


def box(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    out = torch.zeros(h, w, dtype=torch.uint8)
    out[r0:r1, c0:c1] = 1
    return out


def labeling(task: Task, teachers: list[nn.Module], images: torch.Tensor, *,
             sample_index: list[int] | None = None, seed: int = 0,
             batch_size: int = 64) -> LabelingInput:
    return LabelingInput(
        task=task,
        teachers=teachers,
        images=images,
        device=CPU,
        generator=torch.Generator().manual_seed(seed),
        batch_size=batch_size,
        n=len(teachers),
        sample_index=sample_index or [],
    )


def label(name: str, task: Task, teachers: list[nn.Module], images: torch.Tensor, *,
          sample_index: list[int] | None = None, seed: int = 0, batch_size: int = 64,
          **settings: object) -> PseudoSet:
    """The registered labeler ``name`` with ``settings`` (the rest: its defaults)."""
    part = LABELERS.classes[name].model_validate(settings)
    return part.label(labeling(task, teachers, images, sample_index=sample_index, seed=seed,
                               batch_size=batch_size))


def assert_same(a: PseudoSet, b: PseudoSet) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.source, b.source)
    assert (a.mask is None) == (b.mask is None)
    if a.mask is not None:
        assert torch.equal(a.mask, b.mask)
    assert a.im_fraction == b.im_fraction


def pm10(m: torch.Tensor) -> torch.Tensor:
    """0/1 map → logits +10 where 1, -10 where 0, as ``(1, H, W)``."""
    return (m.float() * 20 - 10)[None]


# -------------------------------------------------------------------- threshold
def test_threshold_uses_only_the_first_teacher() -> None:
    first = box(4, 4, 0, 2, 0, 3)
    a, b = Fixed(pm10(first)), Fixed(pm10(1 - first))
    images = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    out = label("threshold", BINARY, [a, b], images, sample_index=[2])
    assert b.calls == 0
    assert torch.equal(out.labels, first.expand(3, 1, 4, 4))
    assert torch.equal(out.images, images)
    assert out.source.tolist() == [0, 1, 2]
    assert out.mask is None and out.im_fraction is None and out.n_input == 3
    assert set(out.teacher_labels) == {2}
    assert torch.equal(out.teacher_labels[2], first[None, None])


def test_threshold_multiclass_never_predicts_the_im_class() -> None:
    # channel 0 (the IM class) has the highest logit everywhere; labels still pick 1..3
    logits = torch.zeros(4, 2, 2)
    logits[0] = 50
    logits[2] = 5
    out = label("threshold", MULTI, [Fixed(logits)],
                torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert torch.equal(out.labels, torch.full((1, 1, 2, 2), 2, dtype=torch.uint8))


# --------------------------------------------------------------- model ensemble
def test_model_ensemble_binary_hard_vote_is_all_agree() -> None:
    t0 = grid([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    t1 = grid([[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    t2 = grid([[1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    teachers = [Fixed(pm10(m)) for m in (t0, t1, t2)]
    images = torch.full((2, 3, 4, 4), 33, dtype=torch.uint8)
    out = label("model_ensemble", BINARY, teachers, images, sample_index=[0])
    agreed = grid([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    disagree = grid([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(out.labels, agreed.expand(2, 1, 4, 4))
    assert torch.equal(out.mask, disagree.bool().expand(2, 1, 4, 4))
    assert torch.equal(out.images, images)  # nothing is blocked
    assert out.im_fraction == 3 / 16
    assert torch.equal(out.teacher_labels[0], torch.stack([t0, t1, t2])[:, None])


def test_model_ensemble_multiclass_hard_vote() -> None:
    v0 = grid([[1, 2], [3, 3]])
    v1 = grid([[1, 3], [3, 2]])
    teachers = [Fixed(F.one_hot(v.long(), 4).permute(2, 0, 1) * 20.0 - 10) for v in (v0, v1)]
    out = label("model_ensemble", MULTI, teachers,
                torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert torch.equal(out.labels[0, 0], grid([[1, IM_CLASS], [3, IM_CLASS]]))


def test_model_ensemble_soft_vote_binary_differs_from_hard() -> None:
    # pixel (0,0): +3 / -1 → p .953/.269, mean .611 → soft 1, hard 0
    # pixel (0,1): +1 / -3 → p .731/.047, mean .389 → soft 0, hard 0
    # pixel (1,0): +10/+10 → 1 both; pixel (1,1): -10/-10 → 0 both
    l0 = torch.tensor([[[3.0, 1.0], [10.0, -10.0]]])
    l1 = torch.tensor([[[-1.0, -3.0], [10.0, -10.0]]])
    images = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    hard = label("model_ensemble", BINARY, [Fixed(l0), Fixed(l1)], images)
    soft = label("model_ensemble", BINARY, [Fixed(l0), Fixed(l1)], images,
                 soft_vote=True)
    assert torch.equal(hard.labels[0, 0], grid([[0, 0], [1, 0]]))
    assert torch.equal(soft.labels[0, 0], grid([[1, 0], [1, 0]]))
    # the disagreement mask does not depend on the vote
    assert torch.equal(soft.mask, hard.mask)
    assert torch.equal(hard.mask[0, 0], grid([[1, 1], [0, 0]]).bool())


def test_model_ensemble_soft_vote_multiclass_is_argmax_of_mean() -> None:
    # channels: IM, value 1, value 2, value 3
    # teacher 0 sure of 1: softmax(-10, 5, 0, 0)  ≈ (0, .987, .007, .007)
    # teacher 1 leans to 2: softmax(-10, 0, 1, 0) ≈ (0, .212, .576, .212)
    # mean ≈ (0, .599, .291, .109): soft → 1; hard: 1 vs 2 disagree → IM class
    l0 = torch.tensor([-10.0, 5.0, 0.0, 0.0]).view(4, 1, 1)
    l1 = torch.tensor([-10.0, 0.0, 1.0, 0.0]).view(4, 1, 1)
    images = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    hard = label("model_ensemble", MULTI, [Fixed(l0), Fixed(l1)], images)
    soft = label("model_ensemble", MULTI, [Fixed(l0), Fixed(l1)], images,
                 soft_vote=True)
    assert int(hard.labels) == IM_CLASS
    assert int(soft.labels) == 1


# --------------------------------------------------------------- input ensemble
def l_shape(h: int, w: int) -> torch.Tensor:
    """An asymmetric blob, so every flip or rotation moves it."""
    m = box(h, w, 2, 14, 2, 8)
    m[8:14, 8:14] = 1
    return m


def test_input_ensemble_equivariant_teacher_gives_the_single_prediction() -> None:
    n, h, w = 4, 16, 16
    masks = torch.stack([l_shape(h, w), l_shape(h, w).flip(-1), l_shape(h, w).T,
                         box(h, w, 5, 12, 4, 10)])[:, None]
    images = torch.cat([masks * 255, torch.full((n, 2, h, w), 128, dtype=torch.uint8)], dim=1)
    inp = labeling(BINARY, [ChannelBinary(0)], images)
    out = InputEnsembleLabeler(views=5).label(inp)
    assert out.source.tolist() == [0, 1, 2, 3]
    assert torch.equal(out.labels, masks)
    assert not out.mask.any()
    assert torch.equal(out.images, images)
    assert out.im_fraction == 0.0


def test_input_ensemble_views_really_are_transformed() -> None:
    """Control: a teacher blind to the input disagrees with itself across views."""
    fixed = l_shape(16, 16)
    images = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    inp = labeling(BINARY, [Fixed(pm10(fixed))], images)
    out = InputEnsembleLabeler(views=5).label(inp)
    assert out.im_fraction > 0
    assert all(not torch.equal(label[0], fixed) for label in out.labels)


def test_input_ensemble_non_square_images() -> None:
    h, w = 12, 20
    mask = box(h, w, 2, 9, 3, 9)
    mask[2:5, 9:15] = 1
    images = (mask * 255)[None, None].repeat(3, 1, 1, 1)
    inp = labeling(BINARY, [ChannelBinary(0)], images)
    out = InputEnsembleLabeler(views=5).label(inp)
    assert torch.equal(out.labels, images // 255)
    assert not out.mask.any()


def test_input_ensemble_drops_images_empty_after_5x5_erosion() -> None:
    h = w = 16
    masks = torch.stack([
        box(h, w, 4, 11, 4, 11),   # 7×7: survives a 5×5 erosion
        box(h, w, 6, 10, 6, 10),   # 4×4: gone after a 5×5 erosion
        torch.zeros(h, w, dtype=torch.uint8),
        box(h, w, 5, 10, 5, 10),   # exactly 5×5: its centre survives
    ])[:, None]
    images = masks * 255
    out = label("input_ensemble", BINARY, [ChannelBinary(0)], images,
                views=3)
    assert out.source.tolist() == [0, 3]
    assert torch.equal(out.labels, masks[[0, 3]])
    assert out.mask.shape == (2, 1, h, w)


def test_input_ensemble_multiclass_keeps_every_image() -> None:
    values = torch.stack([grid([[1, 1, 2, 2]] * 2 + [[3, 3, 3, 1]] * 2),
                          torch.ones(4, 4, dtype=torch.uint8)])[:, None]
    images = values * 50
    out = label("input_ensemble", MULTI, [ChannelClass(0)], images,
                views=5)
    assert out.source.tolist() == [0, 1]
    assert torch.equal(out.labels, values)


# ---------------------------------------------------------------- inconsistency
H = W = 6


def two_teacher_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Channel 0 is teacher 0's mask, channel 1 teacher 1's, channel 2 a constant 77."""
    blk = box(H, W, 1, 4, 1, 4)
    t0 = torch.stack([
        blk | pixels(H, W, (0, 5)),                  # A: agree 9, IM 2 → kept
        pixels(H, W, (2, 2), (0, 0), (0, 1)),        # B: agree 1, IM 4 → dropped
        torch.zeros(H, W, dtype=torch.uint8),        # C: nothing → dropped
        pixels(H, W, (4, 4), (4, 5), (1, 1)),        # D: agree 2, IM 1 → kept
    ])
    t1 = torch.stack([
        blk | pixels(H, W, (5, 0)),
        pixels(H, W, (2, 2), (5, 5), (5, 4)),
        torch.zeros(H, W, dtype=torch.uint8),
        pixels(H, W, (4, 4), (4, 5)),
    ])
    const = torch.full((4, H, W), 77, dtype=torch.uint8)
    images = torch.stack([t0 * 255, t1 * 255, const], dim=1)
    return images, t0, t1


def test_inconsistency_binary_blocks_and_filters() -> None:
    images, t0, t1 = two_teacher_images()
    teachers = [ChannelBinary(0), ChannelBinary(1)]
    out = label("inconsistency", BINARY, teachers, images)
    assert out.source.tolist() == [0, 3]
    assert out.n_input == 4
    # mean IM size over every labeled image, kept or not: (2 + 4 + 0 + 1) / (4 · 36)
    assert abs(out.im_fraction - 7 / 144) < 1e-7

    im_a = pixels(H, W, (0, 5), (5, 0))
    im_d = pixels(H, W, (1, 1))
    assert torch.equal(out.mask[:, 0], torch.stack([im_a, im_d]).bool())
    assert torch.equal(out.labels[0, 0], box(H, W, 1, 4, 1, 4))
    assert torch.equal(out.labels[1, 0], pixels(H, W, (4, 4), (4, 5)))

    expected_a = images[0].clone()
    expected_a[:, 0, 5] = 0
    expected_a[:, 5, 0] = 0
    expected_d = images[3].clone()
    expected_d[:, 1, 1] = 0
    assert torch.equal(out.images[0], expected_a)
    assert torch.equal(out.images[1], expected_d)


def test_inconsistency_without_binary_filter_keeps_everything() -> None:
    images, _, _ = two_teacher_images()
    cfg = InconsistencyConfig(binary_filter=False)
    out = label("inconsistency", BINARY, [ChannelBinary(0), ChannelBinary(1)],
                images, **cfg.model_dump())
    assert out.source.tolist() == [0, 1, 2, 3]
    assert torch.equal(out.labels[1, 0], pixels(H, W, (2, 2)))
    assert int(out.images[1, :, 0, 0].sum()) == 0  # IM pixel of B blocked


def test_inconsistency_ignore_writes_void() -> None:
    images, _, _ = two_teacher_images()
    out = label("inconsistency", BINARY, [ChannelBinary(0), ChannelBinary(1)],
                images, ignore_im=True)
    expected = box(H, W, 1, 4, 1, 4)
    expected[0, 5] = VOID
    expected[5, 0] = VOID
    assert torch.equal(out.labels[0, 0], expected)


def test_inconsistency_block_switches_off() -> None:
    images, _, _ = two_teacher_images()
    cfg = InconsistencyConfig(block_input=False, block_output=False)
    out = label("inconsistency", BINARY, [ChannelBinary(0), ChannelBinary(1)],
                images, **cfg.model_dump())
    assert torch.equal(out.images, images[[0, 3]])
    assert torch.equal(out.labels[0, 0], box(H, W, 1, 4, 1, 4))


def test_inconsistency_dilated_mask_blocks_more() -> None:
    images, _, _ = two_teacher_images()
    cfg = InconsistencyConfig(dilate=3)
    out = label("inconsistency", BINARY, [ChannelBinary(0), ChannelBinary(1)],
                images[:1], **cfg.model_dump())
    grown = box(H, W, 0, 2, 4, 6) | box(H, W, 4, 6, 0, 2)  # 8 pixels < 9 agreed: kept
    assert out.source.tolist() == [0]
    assert torch.equal(out.mask[0, 0], grown.bool())
    expected = images[0].clone()
    expected[:, grown.bool()] = 0
    assert torch.equal(out.images[0], expected)
    assert torch.equal(out.labels[0, 0], box(H, W, 1, 4, 1, 4))


def test_inconsistency_batches_give_the_same_result() -> None:
    images, _, _ = two_teacher_images()
    images = torch.cat([images, images.flip(0)])  # 8 images
    teachers = [ChannelBinary(0), ChannelBinary(1)]
    whole = label("inconsistency", BINARY, teachers, images)
    for bs in (1, 3):
        parts = label("inconsistency", BINARY, teachers, images,
                      batch_size=bs)
        assert_same(parts, whole)
    assert whole.source.tolist() == [0, 3, 4, 7]


def test_inconsistency_keeps_teacher_labels_of_sample_images() -> None:
    images, t0, t1 = two_teacher_images()
    out = label("inconsistency", BINARY, [ChannelBinary(0), ChannelBinary(1)],
                images, sample_index=[1, 3],
                batch_size=2)
    assert set(out.teacher_labels) == {1, 3}
    for i in (1, 3):  # image 1 was dropped by the filter; its teachers' labels are kept
        assert out.teacher_labels[i].shape == (2, 1, H, W)
        assert torch.equal(out.teacher_labels[i][:, 0], torch.stack([t0[i], t1[i]]))


def test_inconsistency_multiclass() -> None:
    v0 = grid([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3], [3, 3, 3, 3]])
    v1 = grid([[1, 1, 2, 2], [1, 2, 2, 2], [3, 3, 1, 3], [3, 3, 3, 3]])
    images = torch.stack([v0 * 50, v1 * 50, torch.full((4, 4), 200, dtype=torch.uint8)])[None]
    # a second image where the teachers disagree everywhere: kept (no filter for multiclass)
    other = torch.stack([torch.full((4, 4), 50), torch.full((4, 4), 100),
                         torch.full((4, 4), 200)]).to(torch.uint8)[None]
    images = torch.cat([images, other])
    out = label("inconsistency", MULTI, [ChannelClass(0), ChannelClass(1)], images)
    assert out.source.tolist() == [0, 1]
    assert torch.equal(out.labels[0, 0], grid([[1, 1, 2, 2],
                                               [1, 0, 2, 2],
                                               [3, 3, 0, 3],
                                               [3, 3, 3, 3]]))
    assert torch.equal(out.labels[1], torch.zeros(1, 4, 4, dtype=torch.uint8))
    assert int(out.images[0, :, 1, 1].sum()) == 0 and int(out.images[0, :, 2, 2].sum()) == 0
    assert int(out.images[0, 2].min()) == 0 and int(out.images[0, 2].max()) == 200
    assert int(out.images[1].sum()) == 0
    assert abs(out.im_fraction - (2 / 16 + 1.0) / 2) < 1e-7
    ignored = label("inconsistency", MULTI, [ChannelClass(0), ChannelClass(1)],
                    images, ignore_im=True)
    assert int(ignored.labels[0, 0, 1, 1]) == VOID and int(ignored.labels[0, 0, 0, 0]) == 1


def test_inconsistency_multilabel_blocks_the_union() -> None:
    task = Task("multilabel", 2)
    a0 = box(4, 4, 0, 2, 0, 2)                 # teacher 0, label 0
    a1 = box(4, 4, 2, 4, 2, 4)                 # teacher 0, label 1
    b0 = box(4, 4, 0, 2, 0, 2)
    b1 = box(4, 4, 2, 4, 2, 4) | pixels(4, 4, (0, 3))
    b0[0, 0] = 0                               # label 0 disagrees at (0,0)
    images = (torch.stack([a0, a1, b0, b1]) * 255)[None]
    teachers = [ChannelBinary(0, 2), ChannelBinary(2, 2)]
    out = label("inconsistency", task, teachers, images)
    im = pixels(4, 4, (0, 0), (0, 3)).bool()
    assert torch.equal(out.mask[0, 0], im)
    expected0 = a0.clone()
    expected0[0, 0] = 0
    assert torch.equal(out.labels[0, 0], expected0)
    assert torch.equal(out.labels[0, 1], a1)
    assert int(out.images[0, :, 0, 0].sum()) == 0 and int(out.images[0, :, 0, 3].sum()) == 0


def test_stub_teacher_commutes_with_geometry() -> None:
    """The per-pixel stub commutes with every geometry code (what the ensemble relies on)."""
    x = (l_shape(16, 16) * 255)[None, None].repeat(8, 1, 1, 1).float()
    codes = torch.arange(8)
    teacher = ChannelBinary(0)
    assert torch.equal(teacher(apply_geometry(x, codes)), apply_geometry(teacher(x), codes))


def test_a_long_labeling_pass_reports_progress(monkeypatch) -> None:
    import functools

    from imseg import logs
    from imseg.pseudo import labelers

    images, _, _ = two_teacher_images()
    said: list[str] = []
    monkeypatch.setattr(logs.log, "info", said.append)
    monkeypatch.setattr(labelers, "ProgressLines", functools.partial(logs.ProgressLines,
                                                                     every=0.0))
    inp = labeling(BINARY, [ChannelBinary(0), ChannelBinary(1)], images, batch_size=1)
    inp.name = "im r0 n2 g1: pseudo-labeling"
    InconsistencyLabeler().label(inp)
    assert said == [f"im r0 n2 g1: pseudo-labeling: {i}/4 images ({i / 4:.0%})" for i in (1, 2, 3)]
