"""Finding the source files of ``imseg prepare folder``: images paired with their masks by
stem, the names they get in the prepared layout, and every file read once to record its
size, pixel hash and mask values (so nothing is written before all are checked).

The rules: :mod:`imseg.data.sources.folder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from imseg.data.imageio import list_images, orientation_hint, pixel_digest, read_image
from imseg.data.sources.folder.masks import MaskRead, read_mask
from imseg.data.tiles import tile_name
from imseg.errors import Problems
from imseg.logs import bar_disable

_PROGRESS_MIN = 20  # show progress bars from this many files on
_PREFIXES = {"val": "val-", "test": "test-", "unlabeled": "unl-"}
"""Prefix of each explicit folder's stems when they clash with another folder's."""
_FOLDER_NAMES = {"pool": "train", "val": "val", "test": "test", "unlabeled": "unlabeled"}


@dataclass
class Item:
    """One source image, its mask (None for unlabeled images) and where it came from."""

    stem: str
    image: Path
    mask: Path | None
    origin: str  # "pool", "val", "test" or "unlabeled"
    size: tuple[int, int] = (0, 0)
    present: np.ndarray | None = None  # (mask channels, 256) bool: values seen per channel
    digest: bytes = b""  # hash of the decoded pixels; empty while unread or unreadable


def progress_bar(items: list, desc: str, progress: bool = True):
    """A bar over the files of a ``prepare`` step: on a terminal, from 20 files on."""
    return tqdm(items, desc=desc, unit="file",
                disable=bar_disable(progress and len(items) >= _PROGRESS_MIN))


def find_items(
    images: Path,
    masks: Path,
    unlabeled: Path | None,
    fixed: dict[str, tuple[Path | None, Path | None]],
    mask_suffix: str | None,
    problems: Problems,
) -> tuple[list[Item], dict[str, str]]:
    """Every source image with its mask (None for unlabeled images): the pairs of
    ``--images``, of the ``fixed`` val and test folders (origin → images, masks) and the
    ``--unlabeled`` images; and the mask suffix found, by masks folder. What does not pair
    is recorded in ``problems``."""
    # --unlabeled naming the --images folder: its images without a mask are the unlabeled ones
    rest_unlabeled = unlabeled is not None and Path(unlabeled).resolve() == Path(images).resolve()
    suffixes: dict[str, str] = {}
    items = find_pairs(Path(images), Path(masks), "pool", problems, mask_suffix, suffixes,
                       rest_unlabeled)
    for origin, (imgs, msks) in fixed.items():
        if imgs is not None and msks is not None:  # check_args: both or neither
            items += find_pairs(Path(imgs), Path(msks), origin, problems, mask_suffix, suffixes)
    if unlabeled is not None and not rest_unlabeled:
        found = problems.attempt(list_images, Path(unlabeled)) or {}
        items += [Item(s, p, None, "unlabeled") for s, p in found.items()]
    return items, suffixes


def find_pairs(
    images: Path,
    masks: Path,
    origin: str,
    problems: Problems,
    suffix: str | None = None,
    used_suffixes: dict[str, str] | None = None,
    rest_unlabeled: bool = False,
) -> list[Item]:
    """Images and masks matched by stem (a mask's stem may add ``suffix`` to its image's,
    else a suffix all masks share is found); an unmatched file on either side is a
    problem, except images without a mask when ``rest_unlabeled`` (they are unlabeled).

    The suffix used, if any, is recorded in ``used_suffixes`` under the masks folder.
    """
    imgs = problems.attempt(list_images, images)
    msks = problems.attempt(list_images, masks)
    if imgs is None or msks is None:
        return []
    if suffix is None:
        suffix = mask_suffix_of(list(imgs), list(msks))
    if suffix and used_suffixes is not None:
        used_suffixes[str(masks.absolute())] = suffix
    by_image: dict[str, Path] = {}
    orphans: list[Path] = []
    for stem, path in msks.items():
        image_stem = stem[: len(stem) - len(suffix)]
        if stem.endswith(suffix) and image_stem in imgs:
            by_image[image_stem] = path
        else:
            orphans.append(path)
    if not by_image:
        problems.add(
            f"{masks}: no mask is named like an image of {images} (e.g. image "
            f"{next(iter(imgs.values())).name}, mask {next(iter(msks.values())).name}); "
            "masks are matched by file stem, plus --mask-suffix when their names add one"
        )
        return []
    for path in orphans:
        problems.add(f"{path}: no image named {path.stem.removesuffix(suffix)}.* in {images}")
    pairs = [Item(stem, imgs[stem], by_image[stem], origin) for stem in sorted(by_image)]
    bare = {stem: path for stem, path in imgs.items() if stem not in by_image}
    if rest_unlabeled:
        return pairs + [Item(stem, path, None, "unlabeled") for stem, path in bare.items()]
    for n, (stem, path) in enumerate(bare.items()):
        hint = ""
        if n == 0 and origin == "pool":  # said once, on the first line the user reads
            hint = (f" ({len(bare)} of {len(imgs)} images have none; to train on them as "
                    f"unlabeled images, pass --unlabeled {images})")
        problems.add(f"{path}: no mask named {stem}{suffix}.* in {masks}{hint}")
    return pairs


def mask_suffix_of(image_stems: list[str], mask_stems: list[str]) -> str:
    """The suffix mask names add to their image's stem (``ISIC_0000000_segmentation`` →
    ``_segmentation``, Carvana's ``_mask``), or "" when names match as they are.

    A suffix is taken only when no name matches as it is and it pairs at least half of
    the masks with an image; the rest are then reported as unmatched.
    """
    images = set(image_stems)
    if images & set(mask_stems):
        return ""
    counts: dict[str, int] = {}
    for stem in mask_stems:
        for cut in range(1, len(stem)):
            if stem[:cut] in images:
                counts[stem[cut:]] = counts.get(stem[cut:], 0) + 1
    if not counts:
        return ""
    best = max(sorted(counts), key=lambda k: counts[k])
    return best if 2 * counts[best] >= len(mask_stems) else ""


def unique_stems(items: list[Item], problems: Problems) -> dict[str, str]:
    """Prefix the stems of explicit folders that clash with another folder's
    (:mod:`imseg.data.sources.folder`).

    Returns prepared stem → source image file of each renamed item, for dataset.yaml.
    """
    stems: dict[str, set[str]] = {}
    for item in items:
        stems.setdefault(item.origin, set()).add(item.stem)
    clashing = [
        origin
        for origin in _PREFIXES
        if any(stems.get(origin, set()) & names for o, names in stems.items() if o != origin)
    ]
    renamed: dict[str, str] = {}
    for item in items:
        if item.origin in clashing:
            item.stem = _PREFIXES[item.origin] + item.stem
            renamed[item.stem] = str(item.image.absolute())
    seen: dict[str, Path] = {}
    for item in items:
        if item.stem in seen:  # only when a prefixed name was taken already: val-0 in --images
            problems.add(f"{item.image}: its prepared name {item.stem} is taken by "
                         f"{seen[item.stem]}; rename one of them")
        seen.setdefault(item.stem, item.image)
    return renamed


def check_name_lengths(items: list[Item], out: Path, tiled: bool,
                        problems: Problems) -> None:
    """Record each prepared file name longer than the file system of ``out`` allows, so
    it is refused before anything is written, naming its source file (a name grows by
    the prefix of a clashing folder, ``val-``, and by a tile's position)."""
    limit = _name_max(out)
    grows = len(tile_name("", 0, 0)) if tiled else 0
    for item in items:
        name = f"{item.stem}.png"
        size = len(os.fsencode(name)) + grows
        if size > limit:
            how = "its prepared name" + (" (with the prefix of its folder)"
                                         if item.stem != item.image.stem else "")
            problems.add(f"{item.image}: {how} takes {size} bytes, more than the {limit} a "
                         f"file name may take in {out}; shorten the file name")


def _name_max(out: Path) -> int:
    """The longest file name (bytes) the file system holding ``out`` allows (255 when
    it does not say)."""
    folder = Path(out).absolute()
    while not os.path.exists(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
        return 255


def scan_items(items: list[Item], how: MaskRead, channels: int, progress: bool,
               problems: Problems) -> None:
    """Read every item (:func:`scan_item`) and record the images leaked across folders."""
    for item in progress_bar(items, "checking", progress):
        scan_item(item, how, channels, problems)
    check_leaks(items, problems)


def scan_item(item: Item, how: MaskRead, channels: int, problems: Problems) -> None:
    """Read an item fully and record its size, pixel hash and mask values.

    Unreadable files and a mask whose size differs from its image are recorded
    in ``problems``; the item then keeps no size/hash or no mask values.
    """
    image = problems.attempt(read_image, item.image, channels)
    if image is not None:
        item.size = (int(image.shape[0]), int(image.shape[1]))
        item.digest = pixel_digest(image)
    if item.mask is None:
        return
    mask = problems.attempt(read_mask, item.mask, how)
    if mask is None:
        return
    if image is not None and mask.shape[:2] != item.size:
        turned = orientation_hint(item.image, mask.shape[:2])
        problems.add(
            f"{item.mask}: mask size {mask.shape[0]}×{mask.shape[1]} (H×W) differs from its "
            f"image {item.image.name} ({item.size[0]}×{item.size[1]})"
            + (turned or ": wrong pairing?")
        )
        return
    planes = mask[..., None] if mask.ndim == 2 else mask
    item.present = np.stack(
        [np.bincount(planes[..., c].ravel(), minlength=256) > 0 for c in range(planes.shape[2])]
    )


def check_leaks(items: list[Item], problems: Problems) -> None:
    """Record each image whose pixels equal an image of another folder
    (:mod:`imseg.data.sources.folder`)."""
    first: dict[bytes, Item] = {}
    for item in items:
        if not item.digest:
            continue
        twin = first.setdefault(item.digest, item)
        if twin.origin != item.origin:
            problems.add(
                f"{item.image}: same pixels as {twin.image} ({_FOLDER_NAMES[item.origin]} and "
                f"{_FOLDER_NAMES[twin.origin]}); an image belongs in one split only"
            )
