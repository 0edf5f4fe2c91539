"""Reading and resizing source images and masks (nearest neighbour for masks).

Images are read as people see them: a JPEG's EXIF orientation is applied (as
viewers, OpenCV and annotation tools do, so a mask drawn on the shown image
fits), and 16-bit or float gray images are brought into 0..255 by the rule the
data set records (dataset.yaml ``wide_images``: :data:`WIDE_RULES`). ``prepare
folder`` / ``coco`` / ``labelme``, HeLa's brightfield, the data sets and ``predict``
read through :func:`read_image`, so a model sees a new image as it saw its
training images. (The other paper sources read their downloads as the reference
did.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from imseg.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
LOSSY_SUFFIXES = (".jpg", ".jpeg")
"""Formats whose compression changes pixel values (a mask saved so has noisy edges)."""
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""Pillow modes of 16-bit and float images, whose values may exceed 255."""
_ORIENTATION = 0x0112  # the EXIF tag
WIDE_RULES = ("stretch", "high_byte")
"""How 16-bit images become 8-bit: ``stretch`` scales each image whose values exceed 255
by its own maximum; ``high_byte`` keeps the high byte, as OpenCV's ``imread`` does (HeLa,
following the reference). Float images are always stretched over their range (from 0,
or from their minimum when it is negative)."""


def list_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem, with a clear error for a missing or empty folder
    and for two files that share a stem.

    Hidden files are skipped: macOS leaves ``._name.png`` companions beside the images
    in archives (the Oxford-IIIT Pet trimaps have them), which are not images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise DataError(f"{path}: same stem as {found[path.stem]}")
            found[path.stem] = path
    if not found:
        subfolders = sum(1 for p in folder.iterdir() if p.is_dir())
        below = (f"; it has {subfolders} subfolder(s), and images are read from the folder "
                 "itself, not below it") if subfolders else ""
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}){below}")
    return found


def open_image(path: Path, mode: str | None = None) -> Image.Image:
    """Open and fully load an image file upright (EXIF orientation applied), naming the
    file when it is unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
            return upright.convert(mode) if mode else upright
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def read_image(path: Path, channels: int, wide: str = "stretch") -> np.ndarray:
    """An image file → ``H×W×channels`` uint8 (3: RGB, 1: gray).

    16-bit and float gray images become 8-bit by the rule ``wide`` (:data:`WIDE_RULES`)
    rather than being clipped at 255 as a plain conversion would.
    """
    if wide not in WIDE_RULES:
        raise DataError(f"wide_images {wide!r}: choose one of {WIDE_RULES}")
    im = open_image(path)
    if im.mode in WIDE_MODES:
        arr = np.asarray(im, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        low = min(0.0, float(arr.min())) if arr.size else 0.0
        if im.mode == "F" and top > low:  # floats (0..1, -1..1, counts): their range, from 0
            arr = (arr - low) * (255.0 / (top - low))
        elif top > 255:
            arr = np.floor(arr / 256) if wide == "high_byte" else arr * (255.0 / top)
        im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _header_sizes(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(height, width)`` of an image as stored and as shown (EXIF orientation applied),
    from its header only."""
    try:
        with Image.open(path) as im:
            h, w = im.height, im.width
            turned = im.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    return (h, w), ((w, h) if turned else (h, w))


def upright_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image as shown (EXIF orientation applied), from its header."""
    return _header_sizes(path)[1]


def orientation_hint(path: Path, size: tuple[int, int]) -> str:
    """Why ``size`` may not fit the image: "" unless it is the image's stored size and the
    image's EXIF orientation turns it (what was drawn on the stored pixels is turned)."""
    try:
        stored, shown = _header_sizes(path)
    except DataError:
        return ""
    if tuple(size) == stored != shown:
        return (f"; {path.name} is stored {stored[0]}×{stored[1]} and turned upright by its "
                "EXIF orientation, as viewers show it: a mask must fit the upright image")
    return ""


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file as stored, read from its header only."""
    return _header_sizes(path)[0]


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


def pixel_digest(image: np.ndarray) -> bytes:
    """A hash of an image's decoded pixels and shape: equal for equal images, whatever the
    file or its name (prepare's leak check, prepare add's matching)."""
    digest = hashlib.blake2b(str(image.shape).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.digest()
