"""The ``imseg prepare folder`` command: its arguments, the call, and the closing lines.

The rules: :mod:`imseg.data.sources.folder`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imseg.data.layout import DatasetInfo
from imseg.data.sources.folder.options import add_layout_options, add_split_sources, layout_options
from imseg.data.sources.folder.prepare import prepare_folder
from imseg.errors import ConfigError
from imseg.tasks import TASK_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare folder`` to the ``imseg prepare`` sub-commands."""
    p = subparsers.add_parser(
        "folder",
        help="any folder of images and masks",
        description="Turn a folder of images and masks into the prepared layout. "
        "Masks are matched to images by file stem; everything is checked before "
        "anything is written.",
    )
    add_split_sources(p, "masks", "folder of masks (same stems)", "masks of")
    add_layout_options(p)
    p.add_argument("--task", choices=TASK_KINDS, help="task kind (default: inferred from masks)")
    p.add_argument("--classes", help="comma-separated class names")
    p.add_argument("--palette", type=Path,
                   help="palette of RGB colour-coded masks: YAML/JSON, or a CVAT labelmap.txt")
    p.add_argument("--ignore-index", type=int, help="void value in the source masks")
    p.add_argument("--mask-suffix",
                   help="what mask names add to their image's stem (a.jpg ↔ a_mask.png: "
                   "_mask); found by itself when no name matches as it is")
    p.add_argument("--mask-threshold", type=int,
                   help="binary masks from gray values: foreground where value >= T (1: every "
                   "labelled pixel of an instance-label mask); JPEG masks are read with 128")
    p.set_defaults(func=_run)


def print_prepared(out: Path, info: DatasetInfo) -> None:
    """The closing line of a ``prepare``: task, classes, size and split counts."""
    counts = ", ".join(f"{k} {v}" for k, v in info.counts.items())
    size = f"{info.image_size[0]}×{info.image_size[1]}"
    if info.tile_scale:
        scale = "" if info.tile_scale == 1 else f" of the images scaled by {info.tile_scale:g}"
        images = sum(info.extra.get("tiled_images", {}).values())
        size += f" tiles{scale} (from {images} images)"
    print(f"prepared {out}: {info.task} {info.classes}, {size}; {counts}")


def _run(args: argparse.Namespace) -> int:
    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",")]
        if not all(classes):
            raise ConfigError(f"--classes {args.classes!r}: empty class name")
    info = prepare_folder(
        images=args.images, masks=args.masks, val_images=args.val_images,
        val_masks=args.val_masks, test_images=args.test_images, test_masks=args.test_masks,
        task=args.task, classes=classes, palette=args.palette, ignore_index=args.ignore_index,
        mask_suffix=args.mask_suffix, mask_threshold=args.mask_threshold,
        **layout_options(args),
    )
    if args.mask_suffix is None:
        for folder, suffix in info.extra.get("mask_suffix", {}).items():
            print(f"{folder}: masks named <image stem>{suffix} (found; --mask-suffix sets it)")
    if args.mask_threshold is None and "mask_threshold" in info.extra:
        print(f"masks are JPEG (lossy): read as binary, foreground where the gray value is >= "
              f"{info.extra['mask_threshold']} (--mask-threshold T to change)")
    print_prepared(args.out, info)
    return 0
