"""Reading mask files for ``imseg prepare folder``: how masks are read (palette, channels,
a threshold, JPEG masks read as binary) and each file read into values.

The rules: :mod:`imseg.data.sources.folder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imseg.data.imageio import LOSSY_SUFFIXES, WIDE_MODES, open_image
from imseg.data.palette import Palette, colors_to_ids, read_palette
from imseg.errors import ConfigError, DataError

LOSSY_MASK_THRESHOLD = 128
"""JPEG masks are read as binary, foreground where the gray value is at least this."""
LOSSY_PLATEAU = 5
"""A JPEG mask read as binary without being asked must have no ``5×5`` patch of middle
grey (96..160): JPEG's noise and soft edges of a 0/255 mask never make one (0 of the 664
dsb2018 masks at quality 30–90, nor of 200 with bilinear edges), a grey class does,
however small."""
LOSSY_COLOUR_PIXELS = 16
"""... and at most this many pixels whose channels differ by more than 32: a grey mask
saved as RGB JPEG stays grey (spread 0 on every dsb2018 mask at quality 30–95); a
colour-coded one does not, however small its objects."""


@dataclass(frozen=True)
class MaskRead:
    palette: Palette | None
    keep_channels: bool  # multilabel: no gray collapse
    keep_alpha: bool
    threshold: int | None = None  # values >= threshold are foreground (1), the rest 0
    lossy_guess: bool = False  # the threshold was not asked for: check the masks look binary


def read_mask_palette(palette: Path | None, ignore_index: int | None) -> Palette | None:
    """The ``--palette`` file read, or None; ``--ignore-index`` must be one of its entries."""
    pal = read_palette(palette) if palette is not None else None
    if pal is not None and ignore_index is not None and ignore_index >= len(pal):
        raise ConfigError(
            f"--ignore-index {ignore_index} is not an entry of the {len(pal)}-class palette "
            f"{palette}: with a palette it is a palette index (0..{len(pal) - 1})"
        )
    return pal


def lossy_masks(mask_files: list[Path]) -> set[str]:
    """The JPEG files among the masks."""
    return {str(m) for m in mask_files if m.suffix.lower() in LOSSY_SUFFIXES}


def mask_reading(
    mask_files: list[Path],
    task: str | None,
    classes: list[str] | None,
    palette: Palette | None,
    ignore_index: int | None,
    mask_threshold: int | None,
) -> tuple[MaskRead, str | None]:
    """How every mask is read, and the task as far as the reading decides it (a threshold
    makes binary masks); masks that are all JPEG are read as binary when nothing asks for
    classes, and JPEG masks that must keep class ids or colours are refused."""
    if task is None and mask_threshold is not None:
        task = "binary"
    lossy = lossy_masks(mask_files)
    plainly_binary = (task in (None, "binary") and palette is None and ignore_index is None
                      and (classes is None or len(classes) == 1))
    thresholdable = plainly_binary or (task == "multilabel" and ignore_index is None)
    if lossy and mask_threshold is None and not thresholdable:
        raise DataError(f"{min(lossy)}: {len(lossy)} of the {len(mask_files)} masks are JPEG, "
                        "which cannot keep class ids or colours (its compression changes "
                        "pixel values); save the masks as PNG")
    if mask_threshold is None and plainly_binary and mask_files and len(lossy) == len(mask_files):
        mask_threshold, task, guessed = LOSSY_MASK_THRESHOLD, "binary", True
    else:
        guessed = False
    how = MaskRead(
        palette=palette,
        keep_channels=task == "multilabel",
        keep_alpha=task == "multilabel" and classes is not None and len(classes) == 4,
        threshold=mask_threshold,
        lossy_guess=guessed,
    )
    return how, task


def jpeg_heading(messages: list[str], mask_files: list[Path], how: MaskRead) -> str | None:
    """The heading of the problem list when JPEG masks are the likely cause of value
    problems (and were not read with a threshold), else None."""
    lossy = lossy_masks(mask_files)
    if how.threshold is None and any(m.split(": ", 1)[0] in lossy for m in messages):
        return (f"{len(messages)} problem(s) in the input files (nothing was "
                f"written); {len(lossy)} of the masks are JPEG, whose compression leaves "
                "values near, not at, 0 and 255: pass --mask-threshold 128 to read them as "
                "binary:")
    return None


def read_mask(path: Path, how: MaskRead) -> np.ndarray:
    """A mask file → ``H×W`` values (or palette ids), or ``H×W×C`` for multi-channel masks;
    with a threshold, 0/1 (a gray or 16-bit mask's value, or each channel for multilabel)."""
    im = open_image(path)
    if how.palette is not None:
        return colors_to_ids(np.asarray(im.convert("RGB")), how.palette, source=str(path))
    if im.mode in WIDE_MODES:
        arr = np.asarray(im)
        if how.threshold is not None:
            return (arr >= how.threshold).astype(np.uint8)
        if arr.size and (arr.min() < 0 or arr.max() > 255 or not np.all(arr == np.round(arr))):
            raise DataError(
                f"{path}: mask values must be whole numbers 0..255 (found up to "
                f"{arr.max():g}); for instance labels (one id per object) pass "
                "--mask-threshold 1 to make every labelled pixel foreground"
            )
        arr = arr.astype(np.uint8)
    elif how.threshold is not None and not how.keep_channels and im.mode not in ("1", "L", "P"):
        if how.lossy_guess:
            _check_grey(path, np.asarray(im.convert("RGB")))
        arr = np.asarray(im.convert("L"))  # a lossy gray mask saved as RGB: channels differ
    elif im.mode == "1":
        arr = np.asarray(im.convert("L"))  # bilevel: 0/255, as any viewer shows it
    elif im.mode in ("L", "P", "RGB", "RGBA", "LA"):
        arr = np.asarray(im).astype(np.uint8)  # P: palette indices are the class ids
        if im.mode in ("RGBA", "LA") and not how.keep_alpha:
            arr = arr[..., :-1]
    else:
        arr = np.asarray(im.convert("RGB"))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not how.keep_channels and arr.ndim == 3 and (arr == arr[..., :1]).all():
        arr = arr[..., 0]  # gray saved as RGB
    if how.threshold is not None:
        if how.lossy_guess:
            _check_two_valued(path, arr)
        arr = (arr >= how.threshold).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _check_grey(path: Path, rgb: np.ndarray) -> None:
    """A JPEG mask read as binary without being asked must be grey
    (:mod:`imseg.data.sources.folder`)."""
    spread = rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)
    if int((spread > 32).sum()) > LOSSY_COLOUR_PIXELS:
        raise DataError(f"{path}: a colour JPEG mask; JPEG changes colours, so colour-coded "
                        "classes cannot be read back from it: save the masks as PNG (and pass "
                        "--palette), or pass --mask-threshold T to read them as grey binary")


def _check_two_valued(path: Path, values: np.ndarray) -> None:
    """... and two-valued: no patch of middle grey, as a class between 0 and 255 makes
    (:mod:`imseg.data.sources.folder`)."""
    k = LOSSY_PLATEAU
    mid = ((values >= 96) & (values <= 160)).astype(np.int32)
    if mid.ndim != 2 or min(mid.shape) < k:
        return
    total = np.pad(mid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # window sums by corners
    windows = total[k:, k:] - total[:-k, k:] - total[k:, :-k] + total[:-k, :-k]
    hits = np.argwhere(windows == k * k)
    if len(hits):
        y, x = (int(v) for v in hits[0])
        raise DataError(f"{path}: a JPEG mask with a middle-grey area (at x {x}, y {y}), not a "
                        "two-valued mask: values that code classes do not survive JPEG; save "
                        "the masks as PNG, or pass --mask-threshold T to read them as binary")
