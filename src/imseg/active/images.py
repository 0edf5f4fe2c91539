"""The images a person labels: a prepared split's source images (tiles stitched back
together) or the image files of a folder, and the key that finds an image by its pixels.

A set prepared with ``--tile`` holds ``image_size`` tiles named after their source
image and position (:func:`imseg.data.tiles.tile_name`); the tiles of one source cover
it whole, so stitching them gives the source image at the set's scale, which is what
a person labels (a tile alone shows too little). Other pieces (SUIM's random crops)
and whole images stand for themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imseg.data.imageio import list_images, open_image, read_image
from imseg.data.layout import DatasetInfo, split_dirs
from imseg.data.tiles import tile_origin


@dataclass(frozen=True)
class Piece:
    """One file of a source image: the whole image (``origin`` None) or a tile whose
    top-left lies at ``origin = (y, x)`` of the source image at the set's scale."""

    path: Path
    origin: tuple[int, int] | None = None


@dataclass
class SourceImage:
    """An image as a person sees it, made of one file or of a prepared set's tiles."""

    stem: str
    pieces: dict[str, Piece]
    """Each file's stem (a prepared set's stem, or the folder's file stem) → its piece."""
    prepared: bool
    """Pixels as the set holds them (tiles at the set's scale), not a user's file."""

    @property
    def tiled(self) -> bool:
        return any(piece.origin is not None for piece in self.pieces.values())

    def read(self, info: DatasetInfo) -> np.ndarray:
        """``H×W×C`` uint8: the file, or the tiles stitched back at their origins."""
        if not self.tiled:
            (piece,) = self.pieces.values()
            return read_image(piece.path, info.channels, info.wide_images or "stretch")
        return self._stitch(lambda path: read_image(path, info.channels))

    def read_mask(self) -> np.ndarray | None:
        """A prepared image's mask as stored (``masks/`` beside ``images/``; the hidden
        truth of an unlabeled one), stitched alike; None where it has none."""
        masks = {stem: _mask_path(piece.path) for stem, piece in self.pieces.items()}
        if not self.prepared or not all(path.is_file() for path in masks.values()):
            return None
        return self._stitch(lambda path: np.asarray(open_image(_mask_path(path))))

    def _stitch(self, read: Callable[[Path], np.ndarray]) -> np.ndarray:
        """The pieces, each read by ``read(path)``, put together at their origins."""
        parts = [(piece.origin or (0, 0), read(piece.path)) for piece in self.pieces.values()]
        first = parts[0][1]
        height = max(y + part.shape[0] for (y, _), part in parts)
        width = max(x + part.shape[1] for (_, x), part in parts)
        canvas = np.zeros((height, width, *first.shape[2:]), first.dtype)
        for (y, x), part in parts:
            canvas[y : y + part.shape[0], x : x + part.shape[1]] = part
        return canvas


def _mask_path(image_path: Path) -> Path:
    return image_path.parent.parent / "masks" / image_path.name


def split_sources(root: Path, split: str) -> list[SourceImage]:
    """The source images of a prepared split (tiles grouped by the image they were cut
    from), by stem; an absent split has none."""
    images, _ = split_dirs(root, split)
    if not images.is_dir():
        return []
    grouped: dict[str, dict[str, Piece]] = {}
    for path in sorted(images.glob("*.png")):
        source, origin = tile_origin(path.stem)
        grouped.setdefault(source, {})[path.stem] = Piece(path, origin)
    return [SourceImage(stem, pieces, prepared=True) for stem, pieces in grouped.items()]


def folder_sources(folder: Path) -> list[SourceImage]:
    """Every image file of a folder, each its own source image."""
    return [SourceImage(stem, {stem: Piece(path)}, prepared=False)
            for stem, path in list_images(Path(folder)).items()]
