"""``imseg prepare isic2018``: the ISIC 2018 Task 1 download → the prepared layout.

Reads the six official parts under ``--source``, each either extracted or as its
downloaded ``<part>.zip`` (read in place)::

    ISIC2018_Task1-2_Training_Input/ISIC_<id>.jpg
    ISIC2018_Task1_Training_GroundTruth/ISIC_<id>_segmentation.png   (0/255)
    ISIC2018_Task1-2_Validation_Input/...,  ISIC2018_Task1_Validation_GroundTruth/...
    ISIC2018_Task1-2_Test_Input/...,        ISIC2018_Task1_Test_GroundTruth/...

Images are resized to ``size × size`` (bilinear), masks binarised with one rule
(> 127) and resized with nearest neighbour. Official train is split by image id
into labeled / unlabeled (seeded, the reference's counts), official val → val,
official test → test. With the paper's defaults: 2594 train → 259 labeled /
2335 unlabeled, val 100, test 1000, all 256×256. Unlabeled masks are written as
the hidden truth for scoring pseudo labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from imseg.data.imageio import IMAGE_SUFFIXES, resize_image, resize_mask
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
from imseg.tasks import Task

PARTS: dict[str, tuple[str, str]] = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}
"""Official split → (image part, mask part)."""

MASK_SUFFIX = "_segmentation.png"
TASK = Task("binary", 1)


def _pairs(images: Part, masks: Part) -> dict[str, tuple[str, str]]:
    """Image id → (image file, mask file); an image without its mask is an error."""
    by_id: dict[str, str] = {}
    for name in images.files(IMAGE_SUFFIXES):
        stem = Path(name).stem
        if stem in by_id:
            raise DataError(f"{images.label(name)}: same image id as {images.label(by_id[stem])}")
        by_id[stem] = name
    if not by_id:
        raise DataError(f"{images.location}: no images (expected ISIC_<id>.jpg)")
    mask_by_id = {
        Path(name).name[: -len(MASK_SUFFIX)]: name for name in masks.files((MASK_SUFFIX,))
    }
    problems = Problems()
    for stem, name in by_id.items():
        if stem not in mask_by_id:
            problems.add(f"{images.label(name)}: no mask {stem}{MASK_SUFFIX} in {masks.location}")
    problems.raise_any()
    return {stem: (name, mask_by_id[stem]) for stem, name in by_id.items()}


def _loader(images: Part, masks: Part, pairs: dict[str, tuple[str, str]], size: int):
    def load(stem: str) -> tuple[np.ndarray, np.ndarray]:
        image_name, mask_name = pairs[stem]
        image = images.read(image_name, "RGB", draft=(2 * size, 2 * size))
        mask = masks.read(mask_name, "L")
        binary = (mask > 127).astype(np.uint8)
        label = resize_mask(binary, (size, size))[None]
        return resize_image(image, (size, size)), label

    return load


def prepare_isic2018(
    source: Path,
    out: Path,
    size: int = 256,
    labeled_fraction: float = 0.1,
    seed: int = 42,
    limit: int | None = None,
) -> DatasetInfo:
    """Write the prepared ISIC 2018 data set to ``out`` and return its info.

    ``limit`` keeps only the first N image ids (sorted) of each official split,
    for quick trials.
    """
    source, out = Path(source), Path(out)
    if size < 1:
        raise DataError(f"--size must be positive, not {size}")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be positive, not {limit}")
    parts: dict[str, tuple[Part, Part]] = {}
    try:
        for split, (image_part, mask_part) in PARTS.items():
            parts[split] = (
                find_part(source, image_part, expect="ISIC_<id>.jpg"),
                find_part(source, mask_part, expect=f"ISIC_<id>{MASK_SUFFIX}"),
            )
        pairs = {split: _pairs(*parts[split]) for split in PARTS}
        if limit is not None:
            pairs = {s: dict(sorted(p.items())[:limit]) for s, p in pairs.items()}
        train = split_fraction(
            list(pairs["train"]), labeled_fraction, seed, "train_labeled", "train_unlabeled"
        )
        plan = {**train, "val": sorted(pairs["val"]), "test": sorted(pairs["test"])}
        with fresh_layout(out) as root:  # the old set stays until the new one is whole
            for split, stems in plan.items():
                official = split if split in ("val", "test") else "train"
                load = _loader(*parts[official], pairs[official], size)
                write_split(root, split, stems, load, TASK, desc=f"isic2018 {split}")
            info = DatasetInfo(
                task="binary",
                classes=["lesion"],
                image_size=(size, size),
                seed=seed,
                source="isic2018",
                rotate=True,
                extra={"labeled_fraction": labeled_fraction, "limit": limit, "source_dir": str(source)},
            )
            return finalize_counts(root, info)
    finally:
        for image_part, mask_part in parts.values():
            image_part.close()
            mask_part.close()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare isic2018``."""
    p = download_parser(
        subparsers, "isic2018",
        help="ISIC 2018 Task 1 download (folders or zips) → prepared layout",
        description="Prepare ISIC 2018 Task 1 (skin lesion, binary) from its official parts, "
        "extracted or as zips: official train → labeled/unlabeled, val → val, test → test.",
        source_help="folder holding the six parts",
        seed_help="seed of the labeled split (42)",
    )
    p.add_argument("--size", type=int, default=256, help="square side in pixels (256)")
    p.add_argument("--limit", type=int, default=None, help="first N images per split only")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = prepare_isic2018(
        args.source, args.out, args.size, args.labeled_fraction, args.seed, args.limit
    )
    print(summary("isic2018", args.out, info))
    return 0
