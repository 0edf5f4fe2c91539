"""Seeded splits that do not depend on file-system listing order."""

from __future__ import annotations

import numpy as np


def seeded_permutation(keys: list[str], seed: int) -> list[str]:
    """``keys`` sorted, then shuffled with ``seed``: the same for any listing order."""
    ordered = sorted(keys)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in order]


def split_keys(
    keys: list[str], fractions: dict[str, float], seed: int, rest: str
) -> dict[str, list[str]]:
    """Split ``keys`` into named parts by fraction; whatever is left goes to ``rest``.

    Each fractional part gets ``round(fraction * n)`` keys, at least one when its
    fraction is positive and keys remain, so a 10 % labeled part of 5 images is
    still one image rather than none. Parts are taken in the order given.
    """
    shuffled = seeded_permutation(keys, seed)
    n = len(shuffled)
    out: dict[str, list[str]] = {}
    start = 0
    for name, fraction in fractions.items():
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction of {name!r} must lie in [0, 1], not {fraction}")
        count = int(round(fraction * n))
        if fraction > 0 and count == 0:
            count = 1
        count = min(count, n - start)
        out[name] = sorted(shuffled[start : start + count])
        start += count
    out[rest] = sorted(shuffled[start:])
    return out
