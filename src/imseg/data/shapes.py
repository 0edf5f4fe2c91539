"""Shapes drawn by labelling tools, as pixel masks: a pixel belongs to a shape when its
centre (``x + 0.5, y + 0.5``) lies inside, so a shape's pixels do not depend on which
tool drew it or in which order its vertices run."""

from __future__ import annotations

import numpy as np


def polygon_mask(polygon: list[float], height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygon ``[x1, y1, x2, y2, ...]`` (even-odd)."""
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    mask = np.zeros((height, width), bool)
    top = max(int(np.floor(y0.min())), 0)
    bottom = min(int(np.ceil(y0.max())), height)
    centres = np.arange(top, bottom) + 0.5  # (R,)
    if not len(centres):
        return mask
    # edges that cross each row's centre line (half-open, so shared vertices count once)
    crosses = (y0[None] <= centres[:, None]) != (y1[None] <= centres[:, None])  # (R, E)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (centres[:, None] - y0) * (x1 - x0) / (y1 - y0)  # (R, E)
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    for r, row in enumerate(xs):
        row = row[np.isfinite(row)]
        for left, right in zip(row[0::2], row[1::2], strict=False):
            start = max(int(np.ceil(left - 0.5)), 0)  # first centre at or right of the edge
            stop = min(int(np.ceil(right - 0.5)), width)
            if start < stop:
                mask[top + r, start:stop] = True
    return mask


def rectangle_mask(corner: tuple[float, float], other: tuple[float, float], height: int,
                   width: int) -> np.ndarray:
    """Pixels whose centre lies inside the axis-aligned box of two opposite corners."""
    (xa, ya), (xb, yb) = corner, other
    return polygon_mask([xa, ya, xb, ya, xb, yb, xa, yb], height, width)


def circle_mask(centre: tuple[float, float], rim: tuple[float, float], height: int,
                width: int) -> np.ndarray:
    """Pixels whose centre lies inside the circle through ``rim`` around ``centre``."""
    (cx, cy), (rx, ry) = centre, rim
    radius2 = (rx - cx) ** 2 + (ry - cy) ** 2
    yy, xx = np.mgrid[:height, :width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 < radius2
