"""Picks that are not near-copies of one scene, or that follow the pool's mix of scenes.

Two rules (``suggest --spread``):

* ``near-copies`` (the default): the top of the ranking, near-copies skipped.
* ``clusters``: the thumbnails are grouped into :data:`CLUSTERS` groups of alike
  scenes (k-means, seeded: the same picks on every rerun); each group gets a share of
  the ``k`` picks in proportion to its size (largest remainders) and fills it with its
  best-ranked images. The top of a ranking by disagreement can be one kind of scene the
  models find hard (dsb2018: the stained-tissue fifth of the images), which teaches
  them that kind and little else; shares by size keep the picks in the pool's mix of
  scenes, the hardest of each (docs/results.md, "Active labeling on dsb2018").

The near-copy rule (greedy, in rank order): each image is shrunk to a ``THUMB × THUMB`` grey
thumbnail, standardised (zero mean, unit variance: brightness and contrast do not
count); the distance of two images is the root mean square of their thumbnails'
difference over 2, in 0..1 (``sqrt((1 - r) / 2)`` for their correlation ``r``; blank
images are all alike). Going down the ranking, an image closer than ``min_distance``
to one already picked is skipped, until ``k`` are picked; when fewer than ``k`` pass,
the skipped ones fill up the rest in rank order. ``min_distance`` 0 turns the rule off;
0.15 (the default) skips images whose thumbnails correlate above 0.955.
"""

from __future__ import annotations

import numpy as np

from imseg.data.imageio import resize_image

THUMB = 16
DEFAULT_MIN_DISTANCE = 0.15
SPREADS = ("near-copies", "clusters")
"""``suggest --spread``: how the picks are spread over the ranking (module doc)."""
CLUSTERS = 8
"""Groups of alike scenes the cluster rule shares the picks among."""
KMEANS_STEPS = 50


def thumbnail(image: np.ndarray) -> np.ndarray:
    """An ``H×W×C`` uint8 image → its standardised ``THUMB²`` grey thumbnail (flat)."""
    grey = image.astype(np.float32).mean(axis=-1).round().astype(np.uint8)
    small = resize_image(grey, (THUMB, THUMB)).astype(np.float32).ravel()
    spread = small.std()
    return (small - small.mean()) / spread if spread > 1e-6 else np.zeros_like(small)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Of two thumbnails, in 0..1 (module doc)."""
    return float(np.sqrt(np.mean((a - b) ** 2)) / 2)


def diverse_picks(thumbs: list[np.ndarray], k: int, min_distance: float = DEFAULT_MIN_DISTANCE
                  ) -> tuple[list[int], dict[int, int]]:
    """``(picked, near)``: the ranking positions picked (in rank order), and for each
    skipped position before the last pick, the position of the pick it resembles."""
    picked: list[int] = []
    near: dict[int, int] = {}
    for i, thumb in enumerate(thumbs):
        if len(picked) == k:
            break
        close = [j for j in picked if distance(thumb, thumbs[j]) < min_distance]
        if close:
            near[i] = close[0]
        else:
            picked.append(i)
    refill = list(near)[: k - len(picked)]  # too few unlike ones: skipped ones fill up, in rank order
    picked = sorted(picked + refill)
    return picked, {i: j for i, j in near.items() if i not in refill}


def kmeans(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Each point's cluster among ``k`` (k-means++ start, Lloyd's steps; seeded)."""
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):  # k-means++: far points are likelier next centres
        d2 = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        total = d2.sum()
        centres.append(points[rng.choice(len(points), p=d2 / total)] if total > 0
                       else points[rng.integers(len(points))])
    centre = np.stack(centres)
    label = np.zeros(len(points), dtype=np.int64)
    for step in range(KMEANS_STEPS):
        d2 = ((points[:, None, :] - centre[None]) ** 2).sum(axis=2)
        new = d2.argmin(axis=1)
        if step and np.array_equal(new, label):
            break
        label = new
        for j in range(k):
            members = points[label == j]
            if len(members):
                centre[j] = members.mean(axis=0)
    return label


def cluster_picks(thumbs: list[np.ndarray], k: int, clusters: int = CLUSTERS, seed: int = 0
                  ) -> tuple[list[int], dict[int, int]]:
    """``(picked, near)`` by the cluster rule (module doc): the ranking positions picked,
    and for each position ranked above the last pick but not picked (its group's share
    was full), the group's best pick."""
    if len(thumbs) <= k:
        return list(range(len(thumbs))), {}
    label = kmeans(np.stack(thumbs).astype(np.float64), min(clusters, k), seed).tolist()
    members: dict[int, list[int]] = {}
    for i, group in enumerate(label):  # thumbs are in rank order: members best first
        members.setdefault(group, []).append(i)
    shares = proportional_shares({g: len(m) for g, m in members.items()}, k)
    picked = sorted(i for g, m in members.items() for i in m[: shares[g]])
    taken = set(picked)
    near = {i: members[label[i]][0] for i in range(picked[-1]) if i not in taken}
    return picked, near


def proportional_shares(sizes: dict[int, int], k: int) -> dict[int, int]:
    """``k`` split in proportion to ``sizes`` by largest remainders (ties: the larger
    group, then the lower id); no group gets more than its size."""
    total = sum(sizes.values())
    exact = {g: k * n / total for g, n in sizes.items()}
    shares = {g: int(v) for g, v in exact.items()}
    by_remainder = sorted(sizes, key=lambda g: (-(exact[g] - shares[g]), -sizes[g], g))
    for g in by_remainder[: k - sum(shares.values())]:
        shares[g] += 1
    return {g: min(v, sizes[g]) for g, v in shares.items()}
