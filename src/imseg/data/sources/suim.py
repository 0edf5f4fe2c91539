"""``imseg prepare suim``: the SUIM download → seeded random crops in the prepared layout.

The download (Islam et al. 2020; the reference's ``original_data``)::

    train_val/{images/*.jpg, masks/*.bmp}     1525 pairs (folder or train_val.zip)
    TEST/{images/*.jpg, masks/*.bmp}          110 pairs (folder or TEST.zip)

``masks/`` also holds per-class subfolders (FV, HD, ...), which are ignored.
Masks are RGB colour codes; each channel is thresholded at 127, which maps any
colour to its nearest palette colour, and the class id is the RGB bit code
``4·R + 2·G + B``: 000 waterbody, 001 human divers, 010 plants/sea-grass,
011 wrecks/ruins, 100 robots, 101 reefs/invertebrates, 110 fish/vertebrates,
111 sea-floor/rocks (the reference's ``COLOR_TO_CLASS_MAPPING_SUIM_ORG`` order).
Pixels whose colour is far from every palette colour (a channel within
64..191, e.g. compression noise) are snapped the same way and counted in the
report. A mask whose size differs from its image is resized (nearest) to it and
reported.

Protocol (the reference's scripts 00–02, with its faults fixed, docs/decisions.md, fault 11):
train_val is split by source image into val (``ceil(10 %)``, as sklearn's
``train_test_split``) and train; train into labeled (``ceil(10 %)``) and
unlabeled. Every image then gives ``crops`` random square crops with a side
uniform in ``[min_crop, max_crop]`` (clipped to the image's short side),
resized to ``size`` (bilinear image, nearest mask). The crops are seeded per
image from ``(seed, stem)``, so they do not depend on listing order, and both
crops of an image lie in the same split. TEST gives the test split.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from imseg.data.imageio import IMAGE_SUFFIXES, resize_image, resize_mask
from imseg.data.layout import DatasetInfo, finalize_counts, split_dirs, write_pair
from imseg.data.sources._common import (
    Part,
    download_parser,
    find_part,
    fresh_layout,
    summary,
)
from imseg.data.splitting import split_keys
from imseg.data.tiles import TILE_SEP, crop_name
from imseg.errors import DataError, Problems
from imseg.tasks import Task

# (code, class name, RGB); the class id is the position in this list = the RGB bit code.
PALETTE: list[tuple[str, str, tuple[int, int, int]]] = [
    ("BW", "waterbody", (0, 0, 0)),
    ("HD", "human_divers", (0, 0, 255)),
    ("PF", "plants", (0, 255, 0)),
    ("WR", "wrecks", (0, 255, 255)),
    ("RO", "robots", (255, 0, 0)),
    ("RI", "reefs", (255, 0, 255)),
    ("FV", "fish", (255, 255, 0)),
    ("SR", "sea_floor", (255, 255, 255)),
]
CLASSES = [name for _, name, _ in PALETTE]
COLORS = [rgb for _, _, rgb in PALETTE]
OFF_PALETTE = (64, 191)
"""A channel value in this range is far from both 0 and 255: the pixel is off-palette."""
CROP_SEP = f"{TILE_SEP}c"  # crop_name's: a crop's stem ends in __c<index>
MAX_LISTED = 50
"""File names listed per report entry in dataset.yaml (the counts are always complete)."""


# ----------------------------------------------------------------- masks
def rgb_to_class(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """An ``H×W×3`` colour mask → ``(class ids H×W uint8, off-palette pixel count)``."""
    if mask.ndim == 2:
        mask = np.repeat(mask[..., None], 3, axis=-1)
    bits = (mask[..., :3] > 127).astype(np.uint8)
    ids = bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]
    lo, hi = OFF_PALETTE
    off = int(((mask[..., :3] >= lo) & (mask[..., :3] <= hi)).any(-1).sum())
    return ids.astype(np.uint8), off


# ----------------------------------------------------------------- crops
def image_rng(seed: int, stem: str) -> np.random.Generator:
    """A generator seeded from ``(seed, stem)`` alone, independent of listing order."""
    digest = int.from_bytes(hashlib.sha256(stem.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed % (1 << 63), digest])


def random_crops(
    height: int, width: int, n: int, min_crop: int, max_crop: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """``n`` square crops ``(y, x, side)``; side uniform in ``[min_crop, max_crop]`` ∩ the image."""
    limit = min(height, width)
    lo, hi = min(min_crop, limit), min(max_crop, limit)
    out = []
    for _ in range(n):
        side = int(rng.integers(lo, hi + 1))
        y = int(rng.integers(0, height - side + 1))
        x = int(rng.integers(0, width - side + 1))
        out.append((y, x, side))
    return out


# ---------------------------------------------------------------- reading
def _pairs(part: Part) -> tuple[dict[str, str], dict[str, str]]:
    """Image and mask files of one part by stem: ``images/*`` and ``masks/*`` (no subfolders)."""
    found: dict[str, dict[str, str]] = {"images": {}, "masks": {}}
    for name in part.files(IMAGE_SUFFIXES):
        path = PurePosixPath(name)
        if len(path.parts) != 2 or path.parts[0].lower() not in found:
            continue
        bucket = found[path.parts[0].lower()]
        if path.stem in bucket:
            raise DataError(f"{part.label(name)}: same stem as {part.label(bucket[path.stem])}")
        bucket[path.stem] = name
    if not found["images"]:
        raise DataError(f"{part.label('images')}: no images")
    problems = Problems()
    for stem in sorted(set(found["images"]) - set(found["masks"])):
        problems.add(f"{part.label(found['images'][stem])}: no mask in masks/")
    problems.raise_any()
    return found["images"], found["masks"]


def _locate(root: Path, names: tuple[str, ...]) -> Part:
    for name in names:
        if (root / name).is_dir() or (root / f"{name}.zip").is_file():
            return find_part(root, name)
    return find_part(root, names[0], expect="images/*.jpg and masks/*.bmp")


def _root(source: Path) -> Path:
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: source folder not found")
    nested = source / "original_data"
    if nested.is_dir() and any((nested / n).exists() for n in ("train_val", "train_val.zip")):
        return nested
    return source


class _Report:
    """What was found wrong with the masks, for the summary and dataset.yaml."""

    def __init__(self) -> None:
        self.off_pixels = 0
        self.off_masks: dict[str, int] = {}
        self.mismatched: list[str] = []

    def as_dict(self) -> dict:
        worst = sorted(self.off_masks.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED]
        return {
            "off_palette_pixels": self.off_pixels,
            "off_palette_masks": len(self.off_masks),
            "off_palette_examples": dict(worst),
            "size_mismatch_count": len(self.mismatched),
            "size_mismatch_files": sorted(self.mismatched),
        }


def _short(part: Part, name: str) -> str:
    """``train_val/masks/x.bmp``: a file's name for the report, without the absolute path."""
    return f"{part.location.name}/{name}"


def _load(part: Part, image_name: str, mask_name: str, report: _Report) -> tuple[np.ndarray, ...]:
    """``(image H×W×3, class ids H×W)`` of one pair, the mask fitted to the image."""
    image = part.read(image_name, "RGB")
    ids, off = rgb_to_class(part.read(mask_name, "RGB"))
    if off:
        report.off_pixels += off
        report.off_masks[_short(part, mask_name)] = off
    if ids.shape != image.shape[:2]:
        report.mismatched.append(_short(part, mask_name))
        ids = resize_mask(ids, image.shape[:2])
    return image, ids


# ------------------------------------------------------------------ prepare
def prepare_suim(
    source: Path,
    out: Path,
    crops: int = 2,
    min_crop: int = 256,
    max_crop: int = 512,
    size: int = 256,
    labeled_fraction: float = 0.1,
    val_fraction: float = 0.1,
    seed: int = 42,
) -> DatasetInfo:
    """Prepare SUIM in ``out`` (see the module doc); the report lands in ``info.extra``."""
    if crops < 1 or size < 1 or not 1 <= min_crop <= max_crop:
        raise DataError(
            f"need crops ≥ 1, size ≥ 1 and 1 ≤ min crop ≤ max crop "
            f"(got {crops}, {size}, {min_crop}, {max_crop})"
        )
    for name, value in (("labeled", labeled_fraction), ("val", val_fraction)):
        if not 0.0 < value < 1.0:
            raise DataError(f"{name} fraction must lie in (0, 1), not {value}")
    root = _root(source)
    with _locate(root, ("train_val", "TRAIN_VAL")) as train_val, \
            _locate(root, ("TEST", "test")) as test:
        tv_images, tv_masks = _pairs(train_val)
        te_images, te_masks = _pairs(test)
        first = _ceil_split(sorted(tv_images), val_fraction, seed, "val", "train")
        second = _ceil_split(first["train"], labeled_fraction, seed, "train_labeled",
                             "train_unlabeled")
        plan = {
            "train_labeled": (train_val, tv_images, tv_masks, second["train_labeled"]),
            "train_unlabeled": (train_val, tv_images, tv_masks, second["train_unlabeled"]),
            "val": (train_val, tv_images, tv_masks, first["val"]),
            "test": (test, te_images, te_masks, sorted(te_images)),
        }
        with fresh_layout(out) as root:  # the old set stays until the new one is whole
            task = Task("multiclass", len(CLASSES))
            report = _Report()
            for split, (part, images, masks, stems) in plan.items():
                split_dirs(root, split)[0].mkdir(parents=True, exist_ok=True)
                for stem in tqdm(stems, desc=f"suim {split}", unit="img", disable=None):
                    image, ids = _load(part, images[stem], masks[stem], report)
                    rng = image_rng(seed, stem)
                    h, w = ids.shape
                    for j, (y, x, side) in enumerate(random_crops(h, w, crops, min_crop, max_crop, rng)):
                        img = resize_image(image[y : y + side, x : x + side], (size, size))
                        lab = resize_mask(ids[y : y + side, x : x + side], (size, size))
                        write_pair(root, split, crop_name(stem, j), img, (lab + 1)[None], task)
            info = DatasetInfo(
                task="multiclass",
                classes=list(CLASSES),
                image_size=(size, size),
                channels=3,
                colors=list(COLORS),
                seed=seed,
                source=str(Path(source).resolve()),
                rotate=False,
                extra={
                    "dataset": "suim",
                    "class_codes": {name: f"{code} {i:03b}" for i, (code, name, _) in enumerate(PALETTE)},
                    "crops_per_image": crops,
                    "min_crop": min_crop,
                    "max_crop": max_crop,
                    "labeled_fraction": labeled_fraction,
                    "val_fraction": val_fraction,
                    "source_images": {split: plan[split][3] for split in plan},
                    **report.as_dict(),
                },
            )
            return finalize_counts(root, info)


def _ceil_split(
    keys: list[str], fraction: float, seed: int, first: str, rest: str
) -> dict[str, list[str]]:
    """Seeded split whose ``first`` part has ``ceil(fraction · n)`` keys (sklearn's test size)."""
    n = len(keys)
    count = math.ceil(fraction * n - 1e-9)
    if count >= n:
        raise DataError(f"{n} images are too few to split off {first} ({fraction:g})")
    return split_keys(keys, {first: count / n}, seed, rest)


# ---------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare suim``."""
    parser = download_parser(
        subparsers, "suim",
        help="SUIM underwater download → seeded random crops (8 classes)",
        description=("Map the SUIM colour masks to 8 classes and take seeded random crops; "
                     "train_val gives labeled/unlabeled/val, TEST gives test."),
        source_help="the folder holding train_val/ and TEST/ (folders or zips)",
        seed_help="split and crop seed (42)",
    )
    parser.add_argument("--crops", type=int, default=2, help="random crops per image (2)")
    parser.add_argument("--min-crop", type=int, default=256, help="smallest crop side (256)")
    parser.add_argument("--max-crop", type=int, default=512, help="largest crop side (512)")
    parser.add_argument("--size", type=int, default=256, help="side the crops are resized to")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of train_val images held out for val (0.1)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = prepare_suim(args.source, args.out, crops=args.crops, min_crop=args.min_crop,
                        max_crop=args.max_crop, size=args.size,
                        labeled_fraction=args.labeled_fraction,
                        val_fraction=args.val_fraction, seed=args.seed)
    print(summary("suim", args.out, info))
    extra = info.extra
    print(f"off-palette pixels snapped: {extra['off_palette_pixels']} "
          f"in {extra['off_palette_masks']} masks")
    print(f"masks resized to their image: {extra['size_mismatch_count']}"
          + (f" ({', '.join(extra['size_mismatch_files'][:5])}"
             f"{', ...' if extra['size_mismatch_count'] > 5 else ''})"
             if extra["size_mismatch_count"] else ""))
    return 0
