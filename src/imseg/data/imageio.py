"""Reading and resizing source images and masks (nearest neighbour for masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from imseg.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem, with a clear error for a missing or empty folder
    and for two files that share a stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise DataError(f"{path}: same stem as {found[path.stem]}")
            found[path.stem] = path
    if not found:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def open_image(path: Path, mode: str | None = None) -> Image.Image:
    """Open and fully load an image file, naming the file when it is unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode) if mode else im.copy()
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header only."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``H×W(×C)`` uint8 image to ``size = (H, W)`` with bilinear (area-ish) filtering."""
    if img.shape[:2] == tuple(size):
        return img
    squeeze = img.ndim == 3 and img.shape[2] == 1
    pil = Image.fromarray(img[..., 0] if squeeze else img)
    out = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))
    return out[..., None] if squeeze else out


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a mask with nearest neighbour, so no new label values appear."""
    if mask.shape[:2] == tuple(size):
        return mask
    if mask.ndim == 3:
        return np.stack([resize_mask(mask[..., c], size) for c in range(mask.shape[2])], axis=-1)
    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
