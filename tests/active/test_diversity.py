"""The greedy diversity rule: near-copies skipped, refilled when too few unlike ones."""

from __future__ import annotations

import numpy as np

from imseg.active.diversity import distance, diverse_picks, thumbnail


def _scenes(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(n)]


def test_near_copies_are_skipped_and_named():
    a, b, c = _scenes(3)
    brighter = np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8)  # same scene, other light
    thumbs = [thumbnail(x) for x in (a, brighter, b, c)]
    assert distance(thumbs[0], thumbs[1]) < 0.05 < distance(thumbs[0], thumbs[2])
    picked, near = diverse_picks(thumbs, 3, 0.15)
    assert picked == [0, 2, 3] and near == {1: 0}
    assert diverse_picks(thumbs, 3, 0.0) == ([0, 1, 2], {})  # the rule off


def test_too_few_unlike_images_are_filled_up_in_rank_order():
    (a,) = _scenes(1)
    thumbs = [thumbnail(a)] * 3 + [thumbnail(np.zeros_like(a))]
    picked, near = diverse_picks(thumbs, 3, 0.15)
    assert picked == [0, 1, 3] and near == {2: 0}
