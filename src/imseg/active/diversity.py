"""Picks that are not near-copies of one scene.

The rule (greedy, in rank order): each image is shrunk to a ``THUMB × THUMB`` grey
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
