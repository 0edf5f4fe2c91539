"""``imseg prepare cityscapes``: the Cityscapes fine download → the prepared layout.

Reads under ``--source`` (folders first, else the official zips
``leftImg8bit_trainvaltest.zip`` / ``gtFine_trainvaltest.zip``, read in place)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Images are resized by ``scale`` with each side rounded up to a multiple of 16
(the U-Net's four poolings), as the reference does: 1024×2048 at 0.2 →
208×416; masks with nearest neighbour. Official train → labeled / unlabeled
(seeded, 2975 → 297 / 2678 with the defaults), official val split 50/50 into
val / test (500 → 250 / 250). The test images of the download have no public
masks and are not used.

Classes: the 34 labelIds 0..33 of the official label table, written on disk
as they are (class id = labelId). The in-memory multiclass encoding
(:mod:`imseg.tasks`) shifts *every* class by one and keeps 0 for the
inconsistency-mask class, so labelId 0 ('unlabeled') no longer collides with the
IM class as in the reference's ``where(mask > 0, mask + 1, mask)`` (docs/decisions.md, fault 2).
``train_ids=True`` maps to the standard 19 train ids instead, every other
labelId becoming void (255 on disk).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from imseg.data.imageio import resize_image, resize_mask
from imseg.data.layout import DatasetInfo, finalize_counts
from imseg.data.sources._common import (
    Part,
    download_parser,
    find_part,
    fresh_layout,
    split_fraction,
    summary,
    write_split,
)
from imseg.errors import DataError, Problems
from imseg.tasks import DISK_MULTICLASS_VOID, Task


class Label(NamedTuple):
    name: str
    label_id: int
    train_id: int  # 255: not a train class
    color: tuple[int, int, int]


# The official Cityscapes label table (cityscapesScripts labels.py), labelIds 0..33;
# 'license plate' (-1) never appears in the labelIds images and is left out.
LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, (0, 0, 0)),
    Label("ego vehicle", 1, 255, (0, 0, 0)),
    Label("rectification border", 2, 255, (0, 0, 0)),
    Label("out of roi", 3, 255, (0, 0, 0)),
    Label("static", 4, 255, (0, 0, 0)),
    Label("dynamic", 5, 255, (111, 74, 0)),
    Label("ground", 6, 255, (81, 0, 81)),
    Label("road", 7, 0, (128, 64, 128)),
    Label("sidewalk", 8, 1, (244, 35, 232)),
    Label("parking", 9, 255, (250, 170, 160)),
    Label("rail track", 10, 255, (230, 150, 140)),
    Label("building", 11, 2, (70, 70, 70)),
    Label("wall", 12, 3, (102, 102, 156)),
    Label("fence", 13, 4, (190, 153, 153)),
    Label("guard rail", 14, 255, (180, 165, 180)),
    Label("bridge", 15, 255, (150, 100, 100)),
    Label("tunnel", 16, 255, (150, 120, 90)),
    Label("pole", 17, 5, (153, 153, 153)),
    Label("polegroup", 18, 255, (153, 153, 153)),
    Label("traffic light", 19, 6, (250, 170, 30)),
    Label("traffic sign", 20, 7, (220, 220, 0)),
    Label("vegetation", 21, 8, (107, 142, 35)),
    Label("terrain", 22, 9, (152, 251, 152)),
    Label("sky", 23, 10, (70, 130, 180)),
    Label("person", 24, 11, (220, 20, 60)),
    Label("rider", 25, 12, (255, 0, 0)),
    Label("car", 26, 13, (0, 0, 142)),
    Label("truck", 27, 14, (0, 0, 70)),
    Label("bus", 28, 15, (0, 60, 100)),
    Label("caravan", 29, 255, (0, 0, 90)),
    Label("trailer", 30, 255, (0, 0, 110)),
    Label("train", 31, 16, (0, 80, 100)),
    Label("motorcycle", 32, 17, (0, 0, 230)),
    Label("bicycle", 33, 18, (119, 11, 32)),
)
TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted((lab for lab in LABELS if lab.train_id != 255), key=lambda lab: lab.train_id)
)

IMAGE_SUFFIX = "_leftImg8bit.png"
MASK_SUFFIX = "_gtFine_labelIds.png"
IMAGE_ZIP = "leftImg8bit_trainvaltest.zip"
MASK_ZIP = "gtFine_trainvaltest.zip"
DEFAULT_SCALE = 0.2
MULTIPLE = 16


def label_lut(train_ids: bool) -> np.ndarray:
    """labelId → class id on disk (256 entries): identity for 0..33, or train ids; 255 void."""
    lut = np.full(256, DISK_MULTICLASS_VOID, dtype=np.uint8)
    for lab in LABELS:
        lut[lab.label_id] = lab.train_id if train_ids else lab.label_id
    return lut


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(H, W)`` scaled, each side rounded up to a multiple of 16 (1024×2048, 0.2 → 208×416)."""
    if scale <= 0:
        raise DataError(f"--scale must be positive, not {scale}")

    def side(n: int) -> int:
        return max(MULTIPLE, MULTIPLE * math.ceil(round(n * scale / MULTIPLE, 6)))

    return side(height), side(width)


def _pairs(images: Part, masks: Part, split: str) -> dict[str, tuple[str, str]]:
    """Frame id (``<city>_<seq>_<frame>``) → (image file, mask file) of one official split."""
    found: dict[str, str] = {}
    for name in images.files((IMAGE_SUFFIX,)):
        if name.startswith(f"{split}/"):
            found[Path(name).name[: -len(IMAGE_SUFFIX)]] = name
    if not found:
        raise DataError(
            f"{images.label(split)}: no images; expected "
            f"{images.label(f'{split}/<city>/<city>_<seq>_<frame>{IMAGE_SUFFIX}')}"
        )
    mask_by_id = {
        Path(name).name[: -len(MASK_SUFFIX)]: name
        for name in masks.files((MASK_SUFFIX,))
        if name.startswith(f"{split}/")
    }
    problems = Problems()
    for key, name in found.items():
        if key not in mask_by_id:
            city = Path(name).parent.name
            problems.add(
                f"{images.label(name)}: no mask {masks.label(f'{split}/{city}/{key}{MASK_SUFFIX}')}"
            )
    problems.raise_any()
    return {key: (name, mask_by_id[key]) for key, name in found.items()}


def _loader(
    images: Part,
    masks: Part,
    pairs: dict[str, tuple[str, str]],
    lut: np.ndarray,
    size: tuple[int, int],
    task: Task,
):
    """frame id → (resized image, in-memory label) of labelIds mapped through ``lut``."""

    def load(key: str) -> tuple[np.ndarray, np.ndarray]:
        image_name, mask_name = pairs[key]
        raw = masks.read(mask_name)
        where = masks.label(mask_name)
        if raw.ndim != 2:
            raise DataError(f"{where}: not a single-channel labelIds image")
        if raw.max(initial=0) > LABELS[-1].label_id:
            bad = np.unique(raw[raw > LABELS[-1].label_id])[:8].tolist()
            raise DataError(f"{where}: values {bad} are not labelIds 0..33")
        disk = resize_mask(lut[raw], size)
        image = resize_image(images.read(image_name, "RGB"), size)
        return image, task.encode_mask(disk)

    return load


def prepare_cityscapes(
    source: Path,
    out: Path,
    scale: float = DEFAULT_SCALE,
    train_ids: bool = False,
    labeled_fraction: float = 0.1,
    seed: int = 42,
    limit: int | None = None,
) -> DatasetInfo:
    """Write the prepared Cityscapes data set to ``out`` and return its info.

    ``limit`` keeps only the first N frames (sorted) of each official split.
    """
    source, out = Path(source), Path(out)
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be positive, not {limit}")
    labels = TRAIN_LABELS if train_ids else LABELS
    lut = label_lut(train_ids)
    task = Task("multiclass", len(labels))
    images = masks = None
    try:
        images = find_part(source, "leftImg8bit", (IMAGE_ZIP,), f"{{train,val}}/*/*{IMAGE_SUFFIX}")
        masks = find_part(source, "gtFine", (MASK_ZIP,), f"{{train,val}}/*/*{MASK_SUFFIX}")
        pairs = {split: _pairs(images, masks, split) for split in ("train", "val")}
        if limit is not None:
            pairs = {s: dict(sorted(p.items())[:limit]) for s, p in pairs.items()}
        first = pairs["train"][min(pairs["train"])][0]
        h, w = images.read(first, "RGB").shape[:2]
        size = scaled_size(h, w, scale)
        plan = {
            **split_fraction(list(pairs["train"]), labeled_fraction, seed,
                             "train_labeled", "train_unlabeled"),
            **split_fraction(list(pairs["val"]), 0.5, seed, "val", "test"),
        }
        with fresh_layout(out) as root:  # the old set stays until the new one is whole
            for split, keys in plan.items():
                official = "train" if split.startswith("train") else "val"
                load = _loader(images, masks, pairs[official], lut, size, task)
                write_split(root, split, keys, load, task, desc=f"cityscapes {split}")
            info = DatasetInfo(
                task="multiclass",
                classes=[lab.name for lab in labels],
                image_size=size,
                colors=[lab.color for lab in labels],
                seed=seed,
                source="cityscapes",
                rotate=False,
                extra={
                    "labels": "trainIds" if train_ids else "labelIds",
                    "scale": scale,
                    "labeled_fraction": labeled_fraction,
                    "limit": limit,
                    "source_dir": str(source),
                },
            )
            return finalize_counts(root, info)
    finally:
        for part in (images, masks):
            if part is not None:
                part.close()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare cityscapes``."""
    p = download_parser(
        subparsers, "cityscapes",
        help="Cityscapes fine download (folders or zips) → prepared layout",
        description="Prepare Cityscapes (gtFine, multiclass): official train → "
        "labeled/unlabeled, official val → val/test 50/50. Classes are the 34 labelIds, "
        "or the 19 train ids.",
        source_help="folder holding leftImg8bit/ and gtFine/ (or their zips)",
    )
    p.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                   help="resize factor, sides rounded up to multiples of 16 (0.2 → 208x416)")
    p.add_argument("--train-ids", action="store_true",
                   help="19 train-id classes (others void) instead of the 34 labelIds")
    p.add_argument("--limit", type=int, default=None, help="first N frames per split only")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = prepare_cityscapes(
        args.source, args.out, args.scale, args.train_ids, args.labeled_fraction, args.seed,
        args.limit,
    )
    print(summary("cityscapes", args.out, info))
    return 0
