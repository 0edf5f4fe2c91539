"""The spread rules: near-copies skipped (refilled when too few unlike ones), or the best
of each cluster of alike scenes."""

from __future__ import annotations

import numpy as np

from imseg.active.diversity import (
    THUMB,
    cluster_picks,
    distance,
    diverse_picks,
    kmeans,
    proportional_shares,
    thumbnail,
)


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


def test_clusters_share_the_picks_by_group_size_and_take_each_groups_best():
    """A ranking whose top is all one rare kind of scene: the cluster rule gives each kind
    picks in proportion to its size, its best-ranked ones, the same on every call."""
    rng = np.random.default_rng(1)
    kinds = [rng.normal(size=THUMB * THUMB) for _ in range(3)]  # three kinds of scene
    # ranked best first: five of kind 0 (the hard, rare kind), then kinds 1 and 2 mixed
    order = [0] * 5 + [1, 2] * 10
    thumbs = [kinds[k] + 0.4 * rng.normal(size=THUMB * THUMB) for k in order]  # not near-copies
    picked, near = cluster_picks(thumbs, 5, clusters=3)
    assert picked == [0, 5, 6, 7, 8]  # kind 0: 5 of 25 images, 1 pick; kinds 1, 2: 2 each
    assert near == {1: 0, 2: 0, 3: 0, 4: 0}  # skipped: their group's share was full
    assert diverse_picks(thumbs, 5, 0.15)[0] == [0, 1, 2, 3, 4]  # near-copy rule: the top
    assert cluster_picks(thumbs, 5, clusters=3) == (picked, near)
    assert cluster_picks(thumbs[:2], 3) == ([0, 1], {})  # fewer images than picks: all


def test_shares_are_proportional_and_never_exceed_a_group():
    assert proportional_shares({0: 80, 1: 20}, 10) == {0: 8, 1: 2}
    assert proportional_shares({0: 5, 1: 10, 2: 10}, 5) == {0: 1, 1: 2, 2: 2}
    shares = proportional_shares({0: 1, 1: 1, 2: 98}, 3)
    assert sum(shares.values()) == 3 and shares[2] >= 2


def test_kmeans_finds_separated_groups():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(c, 0.1, size=(20, 2)) for c in (0, 5, 10)])
    label = kmeans(points, 3)
    assert len(set(label.tolist())) == 3
    assert all(len(set(label[i:i + 20].tolist())) == 1 for i in (0, 20, 40))
