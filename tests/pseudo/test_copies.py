"""Copies of pseudo pairs: counts by score, the copy modes, and pairs staying aligned."""

from __future__ import annotations

import pytest
import torch

from imseg.config import Config
from imseg.data.augment import AugmentParams
from imseg.data.dataset import Split
from imseg.errors import ConfigError
from imseg.pseudo.copies import COPIES, CopiesByScore, copies_by_score
from imseg.pseudo.labelers import PartServices, PseudoSet
from imseg.tasks import IM_CLASS, VOID

GEOMETRY_ONLY = AugmentParams(brightness_prob=0.0, max_blur=0, max_noise=0)
STEMS = ["a", "b", "c", "d", "e", "f", "g"]


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of an ``(..., H, W)`` tensor."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, (-2, -1))
        out += [r, r.flip(-1)]
    return out


def pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random asymmetric binary labels and images whose channel 0 is label·255."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, 1, 8, 8, generator=g) < 0.4).to(torch.uint8)
    other = torch.randint(0, 256, (n, 2, 8, 8), generator=g, dtype=torch.uint8)
    return torch.cat([labels * 255, other], dim=1), labels


def pseudo(n: int, source: list[int], scores: list[float] | None = None) -> PseudoSet:
    images, labels = pairs(n)
    return PseudoSet(images, labels, torch.tensor(source),
                     scores=None if scores is None else torch.tensor(scores))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ copies by score
@pytest.mark.parametrize(
    ("score", "count"),
    [(-0.5, 1), (0.0, 1), (0.1, 1), (0.24, 1), (0.25, 2), (0.3, 2), (0.49, 2), (0.5, 3),
     (0.74, 3), (0.75, 4), (0.99, 4), (1.0, 5), (1.7, 5)],
)
def test_copies_by_score_unit_range(score: float, count: int) -> None:
    out = copies_by_score(torch.tensor([score]), 0.0, 1.0)
    assert out.dtype == torch.long
    assert out.tolist() == [count]


def test_copies_by_score_isic_range() -> None:
    # ISIC: 0.72 .. 0.75, a quarter of the range is 0.0075
    scores = torch.tensor([0.50, 0.72, 0.725, 0.73, 0.74, 0.745, 0.7499, 0.75, 0.9])
    assert copies_by_score(scores, 0.72, 0.75).tolist() == [1, 1, 1, 2, 3, 4, 4, 5, 5]


@pytest.mark.parametrize(("low", "high"), [(0.72, 0.75), (0.59, 0.62), (0.43, 0.51),
                                           (0.372, 0.453)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_copies_by_score_paper_ranges_end_points(low: float, high: float,
                                                 dtype: torch.dtype) -> None:
    """A score equal to MIN gets 1 copy and one equal to MAX gets 5, whatever the float type."""
    scores = torch.tensor([low - 0.01, low, high, high + 0.01], dtype=dtype)
    assert copies_by_score(scores, low, high).tolist() == [1, 1, 5, 5]


def test_copies_by_score_other_maximum() -> None:
    scores = torch.tensor([0.0, 0.49, 0.5, 0.99, 1.0])
    assert copies_by_score(scores, 0.0, 1.0, most=3).tolist() == [1, 1, 2, 2, 3]


def test_copies_by_score_degenerate_range() -> None:
    scores = torch.tensor([0.4, 0.5, 0.6])
    assert copies_by_score(scores, 0.5, 0.5).tolist() == [1, 5, 5]


# -------------------------------------------------------------------- the copies parts
def copies_of(ps: PseudoSet, stems: list[str], mode: str, keep_originals: bool,
              params: AugmentParams, generator: torch.Generator,
              score_range: tuple[float, float] | None = None) -> Split:
    """The copies part ``mode`` over ``ps``; ``score_range``: copies by score's settings."""
    low, high = score_range or (None, None)
    settings = {"min_threshold": low, "max_threshold": high} if mode == "evalnet" else {}
    part = COPIES.classes[mode](keep_originals=keep_originals, **settings)
    return part.pairs(ps, stems, params, generator, PartServices())


def test_mode_none_keeps_the_pairs() -> None:
    ps = pseudo(3, [0, 2, 5])
    out = copies_of(ps, STEMS, "none", keep_originals=False, params=GEOMETRY_ONLY,
                       generator=gen())
    assert out.stems == ["a_pl", "c_pl", "f_pl"]
    assert torch.equal(out.images, ps.images) and torch.equal(out.labels, ps.labels)


def assert_copies_of(out_images: torch.Tensor, out_labels: torch.Tensor,
                     src_labels: torch.Tensor) -> int:
    """Each output pair is aligned and a flip/rotation of its source; returns how many moved."""
    moved = 0
    for img, lab, src in zip(out_images, out_labels, src_labels, strict=True):
        assert torch.equal(img[0], lab[0] * 255), "image and label no longer aligned"
        assert any(torch.equal(lab, v) for v in dihedral(src))
        moved += not torch.equal(lab, src)
    return moved


def test_mode_one_gives_one_aligned_copy_per_pair() -> None:
    ps = pseudo(6, [0, 1, 2, 3, 4, 6])
    out = copies_of(ps, STEMS, "one", keep_originals=False, params=GEOMETRY_ONLY,
                       generator=gen())
    assert len(out) == 6
    assert out.stems == [f"{s}_pl_aug" for s in "abcdeg"]
    assert assert_copies_of(out.images, out.labels, ps.labels) > 0  # geometry really ran
    # photometric off: the other channels move with the label, values unchanged
    for img, src in zip(out.images, ps.images, strict=True):
        assert any(torch.equal(img, v) for v in dihedral(src))


def test_keep_originals_puts_the_originals_first() -> None:
    ps = pseudo(4, [1, 2, 3, 4])
    out = copies_of(ps, STEMS, "one", keep_originals=True, params=GEOMETRY_ONLY,
                       generator=gen())
    assert len(out) == 8
    assert out.stems[:4] == ["b_pl", "c_pl", "d_pl", "e_pl"]
    assert out.stems[4:] == ["b_pl_aug", "c_pl_aug", "d_pl_aug", "e_pl_aug"]
    assert torch.equal(out.images[:4], ps.images) and torch.equal(out.labels[:4], ps.labels)
    assert_copies_of(out.images[4:], out.labels[4:], ps.labels)


def test_mode_evalnet_copies_by_score() -> None:
    ps = pseudo(3, [0, 3, 4], scores=[0.0, 0.5, 1.0])  # → 1, 3, 5 copies
    out = copies_of(ps, STEMS, "evalnet", keep_originals=False, params=GEOMETRY_ONLY,
                       generator=gen(), score_range=(0.0, 1.0))
    assert len(out) == 9
    assert out.stems == ["a_pl_aug"] + ["d_pl_aug"] * 3 + ["e_pl_aug"] * 5
    source = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2])
    assert_copies_of(out.images, out.labels, ps.labels[source])

    with_originals = copies_of(ps, STEMS, "evalnet", keep_originals=True,
                                  params=GEOMETRY_ONLY, generator=gen(),
                                  score_range=(0.0, 1.0))
    assert len(with_originals) == 12
    assert with_originals.stems[:3] == ["a_pl", "d_pl", "e_pl"]


def test_copies_are_seeded() -> None:
    ps = pseudo(5, [0, 1, 2, 3, 4])
    params = AugmentParams()  # photometric on too
    a = copies_of(ps, STEMS, "one", False, params, gen(7))
    b = copies_of(ps, STEMS, "one", False, params, gen(7))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_multiclass_values_are_moved_not_changed() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(1, 4, (4, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels[:, :, 0, :3] = IM_CLASS
    labels[:, :, 7, 5:] = VOID
    images = labels.expand(4, 3, 8, 8).clone()  # every channel holds the label value
    ps = PseudoSet(images, labels, torch.arange(4), scores=torch.tensor([0.2, 0.4, 0.6, 0.8]))
    out = copies_of(ps, STEMS, "evalnet", keep_originals=False, params=GEOMETRY_ONLY,
                       generator=gen(), score_range=(0.0, 1.0))
    counts = [1, 2, 3, 4]  # 1 + floor(4 · score)
    source = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    assert len(out) == sum(counts)
    for img, lab, s in zip(out.images, out.labels, source.tolist(), strict=True):
        assert torch.equal(img, lab.expand(3, 8, 8))
        assert any(torch.equal(lab, v) for v in dihedral(labels[s]))
        assert torch.equal(lab.flatten().sort().values, labels[s].flatten().sort().values)


def test_empty_pseudo_set() -> None:
    empty = PseudoSet(torch.empty(0, 3, 8, 8, dtype=torch.uint8),
                      torch.empty(0, 1, 8, 8, dtype=torch.uint8),
                      torch.empty(0, dtype=torch.long))
    for mode in ("none", "one"):
        out = copies_of(empty, STEMS, mode, True, GEOMETRY_ONLY, gen())
        assert len(out) == 0 and out.stems == []


def test_bad_modes_raise() -> None:
    ps = pseudo(2, [0, 1])
    with pytest.raises(ConfigError, match="unknown copies 'twice'"):
        COPIES.parse("twice", Config(), "recipe 'x'")
    with pytest.raises(ValueError, match="scores"):
        copies_of(ps, STEMS, "evalnet", False, GEOMETRY_ONLY, gen(), score_range=(0.0, 1.0))
    scored = pseudo(2, [0, 1], scores=[0.5, 0.5])
    with pytest.raises(ValueError, match="auto_thresholds"):
        copies_of(scored, STEMS, "evalnet", False, GEOMETRY_ONLY, gen())


def test_copies_by_score_score_unscored_pairs_and_keep_the_labelers_scores() -> None:
    calls: list[int] = []

    def scorer(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return labels.float().mean(dim=(1, 2, 3))

    services = PartServices(scorer=scorer)
    ps = pseudo(3, [0, 1, 2])
    CopiesByScore().score(ps, services)
    assert calls == [3] and torch.equal(ps.scores, ps.labels.float().mean(dim=(1, 2, 3)))
    scored = pseudo(2, [0, 1], scores=[0.1, 0.9])
    CopiesByScore().score(scored, services)
    assert calls == [3] and scored.scores.tolist() == pytest.approx([0.1, 0.9])


def test_copies_by_score_take_thresholds_chosen_on_val_where_their_own_are_empty() -> None:
    auto = {"threshold": 0.9, "min_threshold": 0.2, "max_threshold": 0.6}
    services = PartServices(auto_thresholds=lambda: auto)
    assert CopiesByScore().score_range(services) == (0.2, 0.6)
    assert CopiesByScore(min_threshold=0.4).score_range(services) == (0.4, 0.6)
    assert CopiesByScore(min_threshold=0.1, max_threshold=0.3).score_range(
        PartServices()) == (0.1, 0.3)
