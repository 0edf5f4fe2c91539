"""The command-line options of ``imseg prepare folder`` (shared with the other ``prepare``
commands that split a user's images: coco, labelme) and their checks, made before any
file is read.

The rules: :mod:`imseg.data.sources.folder`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from imseg.data.layout import SPLITS, check_out
from imseg.errors import ConfigError
from imseg.tasks import TASK_KINDS

DEFAULT_TILE_OVERLAP = 0.25
"""Overlap of neighbouring training tiles with ``--tile`` (val and test: none)."""


def add_split_sources(p: argparse.ArgumentParser, labels: str, labels_help: str,
                      of_help: str, images_help: str = "folder of images") -> None:
    """``--images`` and ``--<labels>`` (masks, annotations), and the same for fixed
    validation and test splits: the sources every user-data ``prepare`` reads."""
    p.add_argument("--images", type=Path, required=True, help=images_help)
    p.add_argument(f"--{labels}", type=Path, required=True, help=labels_help)
    for split, name in (("val", "validation"), ("test", "test")):
        p.add_argument(f"--{split}-images", type=Path, help=f"fixed {name} images")
        p.add_argument(f"--{split}-{labels}", type=Path, help=f"{of_help} --{split}-images")


def add_layout_options(p: argparse.ArgumentParser) -> None:
    """Options of every ``prepare`` that splits a user's images (folder, coco): where the
    set goes, its size, splits, seed and channels (:func:`layout_options` reads them)."""
    p.add_argument("--out", type=Path, required=True, help="prepared data set folder to create")
    p.add_argument("--unlabeled", type=Path,
                   help="extra images without masks (train_unlabeled); the --images folder "
                   "itself: its images without a mask")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="resize to H W (multiples of 16); with --tile: the tile size")
    p.add_argument("--tile", action="store_true",
                   help="cut every image into --size tiles at its own resolution instead of "
                   "resizing it whole (large images: cells, membranes, aerial photos); "
                   "predict then cuts new images alike")
    p.add_argument("--tile-scale", type=float, metavar="S",
                   help="with --tile: scale images by S before cutting (0.5 halves them; "
                   "default 1)")
    p.add_argument("--tile-overlap", type=float, metavar="F",
                   help=f"with --tile: overlap of neighbouring training tiles (default "
                   f"{DEFAULT_TILE_OVERLAP}; val and test tiles do not overlap)")
    p.add_argument("--labeled-fraction", type=float, default=0.1,
                   help="share of the training pairs kept labeled (default 0.1)")
    p.add_argument("--val-fraction", type=float,
                   help="share of all pairs for validation (default 0.1, 0 with --val-images)")
    p.add_argument("--test-fraction", type=float,
                   help="share of all pairs for testing (default 0.1, 0 with --test-images)")
    p.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    p.add_argument("--no-rotate", dest="rotate", action="store_false",
                   help="90° rotations do not suit this data (e.g. street scenes)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3,
                   help="write RGB (3, default) or gray (1) images")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared set in --out")


def layout_options(args: argparse.Namespace) -> dict:
    """:func:`prepare_folder` keywords from the options of :func:`add_layout_options`."""
    for name in ("tile_scale", "tile_overlap"):
        if getattr(args, name) is not None and not args.tile:
            raise ConfigError(f"--{name.replace('_', '-')} goes with --tile")
    overlap = DEFAULT_TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap
    scale = 1.0 if args.tile_scale is None else args.tile_scale
    if args.tile and not scale > 0:
        raise ConfigError(f"--tile-scale {scale} must be positive")
    return dict(
        out=args.out, unlabeled=args.unlabeled, size=tuple(args.size) if args.size else None,
        labeled_fraction=args.labeled_fraction, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, rotate=args.rotate,
        channels=args.channels, overwrite=args.overwrite,
        tile_scale=scale if args.tile else 0.0, tile_overlap=overlap,
    )


def check_args(
    val_images, val_masks, test_images, test_masks, size, labeled_fraction, val_fraction,
    test_fraction, task, classes, palette, ignore_index, channels, mask_threshold,
    tile_scale=0.0, tile_overlap=DEFAULT_TILE_OVERLAP,
) -> None:
    for name, a, b in (("val", val_images, val_masks), ("test", test_images, test_masks)):
        if (a is None) != (b is None):
            raise ConfigError(f"--{name}-images and --{name}-masks go together")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ConfigError(f"--size {size}: give a positive height and width")
    if not 0.0 < labeled_fraction <= 1.0:
        raise ConfigError(f"--labeled-fraction {labeled_fraction} must lie in (0, 1]")
    for name, f in (("val", val_fraction), ("test", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"--{name}-fraction {f} must lie in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError("--val-fraction and --test-fraction leave no training pairs")
    if task is not None and task not in TASK_KINDS:
        raise ConfigError(f"--task {task!r}: choose one of {TASK_KINDS}")
    if palette is not None and task not in (None, "multiclass"):
        raise ConfigError("--palette describes multiclass colour masks; drop --task or use "
                          "--task multiclass")
    if classes is not None:
        if not classes or not all(str(c).strip() for c in classes):
            raise ConfigError("--classes: give non-empty comma-separated names")
        if len(classes) > 254:
            raise ConfigError(f"--classes names {len(classes)} classes; at most 254 fit")
        if len(set(classes)) != len(classes):
            raise ConfigError(f"--classes {classes}: a name appears twice")
        if task == "binary" and len(classes) != 1:
            raise ConfigError("--task binary: --classes names the one foreground class")
        if task == "multiclass" and not 2 <= len(classes) <= 254:
            raise ConfigError("--task multiclass: --classes names 2 to 254 classes, "
                              "background included")
        if task == "multilabel" and len(classes) > 4:
            raise ConfigError("--task multilabel: at most 4 labels (mask channels)")
    if ignore_index is not None and not 0 <= ignore_index <= 255:
        raise ConfigError(f"--ignore-index {ignore_index} must lie in 0..255")
    if channels not in (1, 3):
        raise ConfigError(f"--channels {channels}: choose 1 (gray) or 3 (RGB)")
    if mask_threshold is not None:
        if not 1 <= mask_threshold <= 65535:
            raise ConfigError(f"--mask-threshold {mask_threshold} must lie in 1..65535")
        clash = ("--palette" if palette is not None
                 else "--ignore-index" if ignore_index is not None
                 else "--task multiclass" if task == "multiclass"
                 else "several --classes" if task is None and classes and len(classes) > 1
                 else None)
        if clash:
            raise ConfigError(f"--mask-threshold makes binary (or multilabel) masks; it does "
                              f"not go with {clash}")
    if not (tile_scale >= 0 and np.isfinite(tile_scale)):  # 0: resize, no tiles
        raise ConfigError(f"--tile-scale {tile_scale} must be positive")
    if tile_scale and size is None:
        raise ConfigError("--tile cuts tiles of --size H W from every image; give --size")
    if not 0.0 <= tile_overlap < 1.0:
        raise ConfigError(f"--tile-overlap {tile_overlap} must lie in [0, 1)")


def check_out_folder(out: Path, overwrite: bool, sources: list[Path | None]) -> None:
    check_out(out, overwrite)
    if overwrite:
        doomed = [(out / s).resolve() for s in SPLITS]
        for src in sources:
            if src is not None and any(Path(src).resolve().is_relative_to(d) for d in doomed):
                raise ConfigError(f"{src}: lies inside {out}, which --overwrite would replace")
