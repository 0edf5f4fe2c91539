"""Tiles: images larger than a model's input, cut into input-sized pieces and put back.

A data set prepared as tiles (``imseg prepare folder --tile``, HeLa) trains its models
on ``image_size`` pieces of the source images at one scale (1: the images' own
pixels), so a new image must be cut alike before prediction and the pieces' outputs
put back together (:class:`TileCanvas`), not resized whole: a cell or a membrane must
be as many pixels wide as in training.

Tiles are evenly spaced, the first flush with the top-left and the last with the
bottom-right border, so the whole image is covered with about the overlap asked for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from imseg.data.imageio import resize_image, resize_mask

PREDICT_OVERLAP = 0.5
"""Overlap of the tiles a new image is cut into for prediction."""
TILE_SEP = "__"
"""Separates the source stem from a tile's position (or a crop's index) in its name."""


@dataclass(frozen=True)
class Tiling:
    """How new images are cut for a model trained on tiles: scale, then ``image_size``
    tiles overlapping by ``overlap``, outputs blended by :func:`blend_weights`."""

    scale: float = 1.0
    overlap: float = PREDICT_OVERLAP

    def describe(self) -> str:
        scaled = "at their own pixels" if self.scale == 1 else f"scaled by {self.scale:g}"
        return f"tiles of the images {scaled}, overlapping by {self.overlap:g}"


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Evenly spaced tile offsets along one axis, covering ``[0, length)``.

    The step is at most ``tile · (1 − overlap)``; the first tile starts at 0,
    the last ends at ``length``.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), not {overlap}")
    if tile > length:
        raise ValueError(f"tile {tile} larger than the image side {length}")
    step = tile * (1.0 - overlap)
    n = math.ceil((length - tile) / step - 1e-9) + 1
    if n == 1:
        return [0]
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def tile_origins(shape: tuple[int, int], tile: tuple[int, int], overlap: float
                 ) -> list[tuple[int, int]]:
    """Top-left ``(y, x)`` of every tile of an image of ``shape = (H, W)``, row by row."""
    return [(y, x) for y in tile_starts(shape[0], tile[0], overlap)
            for x in tile_starts(shape[1], tile[1], overlap)]


def tile_name(stem: str, y: int, x: int) -> str:
    """A tile's file stem: its source stem and its position, sorting in reading order."""
    return f"{stem}{TILE_SEP}y{y:05d}_x{x:05d}"


def crop_name(stem: str, index: int) -> str:
    """The file stem of a source image's ``index``-th seeded random crop (SUIM)."""
    return f"{stem}{TILE_SEP}c{index}"


_PIECE = re.compile(re.escape(TILE_SEP) + r"(?:y(\d{5})_x(\d{5})|c\d+)$")
"""The suffix :func:`tile_name` (with its position) or :func:`crop_name` adds."""


def tile_source(stem: str) -> str:
    """The source stem a tile or crop was cut from (:func:`tile_name`, :func:`crop_name`);
    other stems are their own. Pieces of one source must stay on one side of a split."""
    found = _PIECE.search(stem)
    return stem[: found.start()] if found else stem


def tile_origin(stem: str) -> tuple[str, tuple[int, int] | None]:
    """``(source stem, (y, x))`` of a tile's stem (:func:`tile_name`); ``(stem, None)``
    for any other stem (a crop stands for itself: it does not cover its source)."""
    found = _PIECE.search(stem)
    if found is None or found.group(1) is None:
        return stem, None
    return stem[: found.start()], (int(found.group(1)), int(found.group(2)))


def source_groups(stems: list[str]) -> list[int]:
    """Per stem, the index of its source image in order of first appearance: tiles of one
    image share an id."""
    ids: dict[str, int] = {}
    return [ids.setdefault(tile_source(stem), len(ids)) for stem in stems]


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """An image's ``(H, W)`` after scaling by ``scale`` (at least one pixel each)."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def scale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` (``H×W(×C)`` uint8) scaled bilinearly; unchanged at scale 1."""
    return resize_image(image, scaled_shape(image.shape[:2], scale))


def scale_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """A mask scaled by nearest neighbour (no new values); unchanged at scale 1."""
    return resize_mask(mask, scaled_shape(mask.shape[:2], scale))


def count_tiles(shape: tuple[int, int], tile: tuple[int, int], scale: float,
                overlap: float) -> int:
    """How many tiles an image of ``shape`` gives (a small one is padded to one tile)."""
    h, w = scaled_shape(shape, scale)
    return (len(tile_starts(max(h, tile[0]), tile[0], overlap))
            * len(tile_starts(max(w, tile[1]), tile[1], overlap)))


def cut_pair(stem: str, image: np.ndarray, mask: np.ndarray | None, tile: tuple[int, int],
             scale: float, overlap: float
             ) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(name, image tile, mask tile)`` of every tile of a source image (``H×W(×C)``)
    and its mask (``H×W(×C)`` values, or None) at ``scale``; the image must be at least
    one tile large once scaled."""
    image = scale_image(image, scale)
    mask = None if mask is None else scale_mask(mask, scale)
    th, tw = tile
    for y, x in tile_origins(image.shape[:2], tile, overlap):
        yield (tile_name(stem, y, x), image[y : y + th, x : x + tw],
               None if mask is None else mask[y : y + th, x : x + tw])


def first_cover(stems: list[str], tile: tuple[int, int]) -> np.ndarray:
    """Bool ``(N, tile_h, tile_w)``: per tile, the pixels no earlier tile of the same
    source image holds (reading order, as :func:`tile_name` sorts), so a whole image's
    score counts each of its pixels once; a stem that is no tile is all True."""
    th, tw = tile
    out = np.ones((len(stems), th, tw), bool)
    earlier: dict[str, list[tuple[int, int]]] = {}
    for i in sorted(range(len(stems)), key=lambda i: stems[i]):
        source, origin = tile_origin(stems[i])
        if origin is None:
            continue
        y, x = origin
        before = earlier.setdefault(source, [])
        for ey, ex in before:
            oy, ox = max(ey - y, 0), max(ex - x, 0)  # the earlier tile, in this tile's frame
            out[i, oy : max(ey + th - y, 0), ox : max(ex + tw - x, 0)] = False
        before.append((y, x))
    return out


def pad_to(image: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """An ``H×W×C`` image mirrored out at its bottom and right to at least one tile."""
    ph, pw = max(0, tile[0] - image.shape[0]), max(0, tile[1] - image.shape[1])
    if not ph and not pw:
        return image
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="symmetric")


def blend_weights(tile: tuple[int, int], overlap: float) -> torch.Tensor:
    """``(H, W)`` weights of a tile's output when overlapping tiles are averaged.

    A net sees less context near a tile's border, so there its output counts less: along
    each axis the weight rises linearly from the border over half the overlap's width
    (``ramp = n · overlap / 2`` pixels; ``1 / ramp`` at the border pixel) to 1, and never
    falls below 0.05 (at overlap 0 every pixel counts fully; a weight above 0 keeps the
    image border, which only one tile's edge covers, defined).
    """
    axes = []
    for n in tile:
        ramp = max(1.0, n * overlap / 2)
        edge = torch.minimum(torch.arange(n) + 1.0, n - torch.arange(n).float())
        axes.append((edge / ramp).clamp(0.05, 1.0))
    return axes[0][:, None] * axes[1][None, :]


class TileCanvas:
    """Sums the weighted outputs of an image's tiles; :meth:`result` is their average.

    ``shape`` is the (scaled, padded) image's ``(H, W)``; outputs are
    ``(models, B, channels, tile_h, tile_w)``, as the ensemble's forward pass gives them.
    """

    def __init__(self, models: int, channels: int, shape: tuple[int, int],
                 weights: torch.Tensor):
        self.weights = weights.to(torch.float32)
        self.sum = torch.zeros(models, channels, *shape, device=weights.device)
        self.norm = torch.zeros(shape, device=weights.device)

    def add(self, origins: list[tuple[int, int]], outputs: torch.Tensor) -> None:
        th, tw = self.weights.shape
        for (y, x), out in zip(origins, outputs.unbind(1), strict=True):
            self.sum[:, :, y : y + th, x : x + tw] += out * self.weights
            self.norm[y : y + th, x : x + tw] += self.weights

    def result(self) -> torch.Tensor:
        """``(models, channels, H, W)``: every pixel's weighted mean over its tiles."""
        return self.sum / self.norm
