"""``imseg prepare folder``: any folder of images and masks → the prepared layout.

Lets users bring their own data without writing a source module::

    imseg prepare folder --images imgs/ --masks masks/ --out data/mine --size 256 256

**Inputs.** Images are png, jpg, bmp, tif, gif or webp files, RGB or gray,
read upright (EXIF orientation applied; 16-bit gray images above 255 are scaled
by their own maximum: :func:`imseg.data.imageio.read_image`); they are written as
RGB, or gray with ``--channels 1``. Hidden files (macOS ``._a.png``) are skipped.
Masks are matched to images by file stem (``a.jpg`` ↔ ``a.png``); when mask names
add a suffix (ISIC's ``a_segmentation.png``, Carvana's ``a_mask.gif``) and no
name matches as it is, the suffix they share is found (or ``--mask-suffix``
gives it). ``--val-images/--val-masks`` and ``--test-images/--test-masks`` give
fixed validation and test folders; ``--unlabeled`` adds images without masks to
``train_unlabeled``. ``--unlabeled`` may name the ``--images`` folder itself
(Pascal VOC: ``JPEGImages`` holds every image, ``SegmentationClass`` masks of a
few): its images without a mask are then the unlabeled ones.

**Split folders numbered alike.** Downloads often number each split from 0
(``train/images/0.jpg``, ``validation/images/0.jpg``). When a stem of the
``--val-*``, ``--test-*`` or ``--unlabeled`` folder also occurs in another
folder, every file of that folder gets a prefix in the prepared layout
(``val-0``, ``test-0``, ``unl-0``); the whole folder, so its files stay named
alike, and only then, so sets without clashes keep the names users know. The
``--images`` folder keeps its names (its split is seeded on them).
dataset.yaml's ``extra.renamed`` maps each prefixed stem to its source image.

**Leakage.** Names say nothing about content, so every image is compared by a
hash of its decoded pixels (and shape): an image equal to one in another
folder (train, unlabeled, val, test) is refused, naming both files. Equal
images within ``--images`` are kept together when it is split, so they never
land on both sides of a split.

**Mask formats and task inference** (``--task`` overrides the inference):

* ``--palette FILE``: RGB colour-coded masks, one colour per class
  (:mod:`imseg.data.palette` describes the file) → multiclass.
* single-channel masks whose values lie within {0, 1} or within {0, 255}
  → binary (one foreground value for the whole set);
* single-channel masks with more values → multiclass with class ids
  ``0..max`` (mode ``P`` PNGs give their palette indices);
* RGB masks without a palette → an error asking for ``--palette`` or
  ``--task multilabel``. An RGB mask whose three channels are equal is read
  as gray (except for multilabel).
* ``--task multilabel``: channel ``c`` of the mask is label ``c``, 0/1 or
  0/255; the label count is the channel count, or ``len(--classes)`` (an
  alpha channel is kept only when ``--classes`` names 4 labels).
* ``--mask-threshold T``: binary masks from gray values, foreground where the
  value is at least ``T`` (multilabel: per channel). ``T = 1`` turns instance
  label masks (one id per object, 16-bit too) into foreground/background. Masks
  that are all JPEG files are read so with ``T = 128`` unless a palette, a void
  value, a task other than binary or several classes are given: JPEG's
  compression leaves values near, not at, 0 and 255, which no class-id reading
  survives. Each must then look binary (grey, and at most 5 % of its pixels
  between 64 and 192); a colour or three-valued JPEG mask is an error asking for
  PNG masks or an explicit ``--mask-threshold``.

``--classes a,b,c`` names the classes (binary: the foreground class only;
without ``--task``, two or more names mean multiclass); else the palette's
names, else ``foreground`` / ``class0, class1, ...`` / ``label0, ...``.

**Void.** ``--ignore-index V`` marks source value ``V`` (e.g. 255, or CamVid's
11) as void: it is written as the task's void on disk and left out of losses
and metrics. For multiclass the classes are the values other than ``V`` in
order: when ``V`` lies inside the class range, the values above it move down by
one (``V=1`` with values 0..3 gives classes 0←0, 1←2, 2←3). With a palette,
``V`` is a palette index and that entry is dropped from the classes.

**Size.** ``--size H W`` resizes images bilinearly and masks by nearest
neighbour. Without it all images must share one size. The size must be a
multiple of 16 (the U-Net halves it four times). An image and its mask must
always have the same size (else the pairing is likely wrong).

**Tiles.** ``--tile`` cuts every image (scaled by ``--tile-scale``, default 1: its own
pixels) into ``--size`` tiles instead of resizing it whole, for images much larger than
the net's input whose detail resizing would lose (cells, membranes, aerial photos).
Training tiles overlap by ``--tile-overlap`` (0.25), val and test tiles as little as
covering the image allows (where they still overlap, a pixel is scored in the first tile
that holds it: :func:`imseg.data.tiles.first_cover`). The split is made
by source image, so the tiles of one image never lie on both sides. dataset.yaml's
``tile_scale`` tells ``predict`` to cut new images alike (:mod:`imseg.data.tiles`), and
``whole_image_scores`` scores the tiles of each image together, as the whole image.

**Splits.** From the pairs of ``--images``, first ``--test-fraction`` and
``--val-fraction`` of all pairs (0.1 each, or 0 when the matching folder is
given) go to test and val, then ``--labeled-fraction`` of the remaining pairs
goes to ``train_labeled`` and the rest to ``train_unlabeled``, whose masks are
written too as hidden truth for scoring pseudo labels, unless ``--unlabeled``
adds images without masks: then ``train_unlabeled`` has no masks at all, so
the split is either fully scored or not. Splits depend on the seed only, not
on file listing order.

**Safety.** Every input file is read and checked before anything is written;
the problems found (a missing partner, an unreadable file, wrong sizes or mask
values, leaked images, prepared names too long for the file system) are listed
together in one DataError naming the files (the first 20, then a count). When
most masks are binary ``0/fg`` and a few are not, those few are named; a void
value that is most masks' foreground is refused. A non-empty ``--out`` is
refused unless ``--overwrite`` (which replaces only the split folders and
dataset.yaml there). The new set is written beside the old one and swapped in
only when complete (:func:`imseg.data.layout.staged_layout`): a failure while
writing leaves ``--out`` as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from imseg.data.imageio import (
    LOSSY_SUFFIXES,
    WIDE_MODES,
    list_images,
    open_image,
    orientation_hint,
    read_image,
    resize_image,
    resize_mask,
)
from imseg.data.layout import (
    SPLITS,
    DatasetInfo,
    check_out,
    finalize_counts,
    staged_layout,
    write_pair,
)
from imseg.data.palette import Palette, colors_to_ids, read_palette
from imseg.data.splitting import split_keys
from imseg.data.tiles import cut_pair, scaled_shape, tile_name
from imseg.errors import ConfigError, DataError, Problems
from imseg.logs import bar_disable
from imseg.storage import WriteFailed, storage_error
from imseg.tasks import DISK_BINARY_VOID, DISK_MULTICLASS_VOID, TASK_KINDS, Task

_PROGRESS_MIN = 20  # show progress bars from this many files on
_PREFIXES = {"val": "val-", "test": "test-", "unlabeled": "unl-"}
"""Prefix of each explicit folder's stems when they clash with another folder's."""
_FOLDER_NAMES = {"pool": "train", "val": "val", "test": "test", "unlabeled": "unlabeled"}
DEFAULT_TILE_OVERLAP = 0.25
"""Overlap of neighbouring training tiles with ``--tile`` (val and test: none)."""
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


@dataclass
class _Item:
    """One source image, its mask (None for unlabeled images) and where it came from."""

    stem: str
    image: Path
    mask: Path | None
    origin: str  # "pool", "val", "test" or "unlabeled"
    size: tuple[int, int] = (0, 0)
    present: np.ndarray | None = None  # (mask channels, 256) bool: values seen per channel
    digest: bytes = b""  # hash of the decoded pixels; empty while unread or unreadable


@dataclass
class _Plan:
    """How source mask values become disk mask values, decided once for the whole set."""

    task: Task
    classes: list[str]
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    lut: np.ndarray = field(default_factory=lambda: np.zeros(256, np.uint8))
    allowed: np.ndarray = field(default_factory=lambda: np.zeros(256, bool))
    expect: str = ""  # the allowed values, in words, for error messages


@dataclass(frozen=True)
class _MaskRead:
    palette: Palette | None
    keep_channels: bool  # multilabel: no gray collapse
    keep_alpha: bool
    threshold: int | None = None  # values >= threshold are foreground (1), the rest 0
    lossy_guess: bool = False  # the threshold was not asked for: check the masks look binary


# ----------------------------------------------------------------------------- public
def prepare_folder(
    *,
    images: Path,
    masks: Path,
    out: Path,
    unlabeled: Path | None = None,
    val_images: Path | None = None,
    val_masks: Path | None = None,
    test_images: Path | None = None,
    test_masks: Path | None = None,
    size: tuple[int, int] | None = None,
    labeled_fraction: float = 0.1,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 42,
    task: str | None = None,
    classes: list[str] | None = None,
    palette: Path | None = None,
    ignore_index: int | None = None,
    rotate: bool = True,
    channels: int = 3,
    mask_suffix: str | None = None,
    mask_threshold: int | None = None,
    tile_scale: float = 0.0,
    tile_overlap: float = DEFAULT_TILE_OVERLAP,
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetInfo:
    """Check every input, then write the prepared layout and dataset.yaml to ``out``.

    See the module docstring for the rules; returns the written DatasetInfo.
    """
    out = Path(out)
    val_fraction = (0.0 if val_images else 0.1) if val_fraction is None else val_fraction
    test_fraction = (0.0 if test_images else 0.1) if test_fraction is None else test_fraction
    _check_args(
        val_images, val_masks, test_images, test_masks, size, labeled_fraction, val_fraction,
        test_fraction, task, classes, palette, ignore_index, channels, mask_threshold,
        tile_scale, tile_overlap,
    )
    _check_out(out, overwrite, [images, masks, unlabeled, val_images, val_masks, test_images,
                                test_masks])
    pal = read_palette(palette) if palette is not None else None
    if pal is not None and ignore_index is not None and ignore_index >= len(pal):
        raise ConfigError(
            f"--ignore-index {ignore_index} is not an entry of the {len(pal)}-class palette "
            f"{palette}: with a palette it is a palette index (0..{len(pal) - 1})"
        )

    problems = Problems()
    # --unlabeled naming the --images folder: its images without a mask are the unlabeled ones
    rest_unlabeled = unlabeled is not None and Path(unlabeled).resolve() == Path(images).resolve()
    suffixes: dict[str, str] = {}
    items = _pairs(Path(images), Path(masks), "pool", problems, mask_suffix, suffixes,
                   rest_unlabeled)
    for origin, imgs, msks in (("val", val_images, val_masks), ("test", test_images, test_masks)):
        if imgs is not None and msks is not None:  # _check_args: both or neither
            items += _pairs(Path(imgs), Path(msks), origin, problems, mask_suffix, suffixes)
    if unlabeled is not None and not rest_unlabeled:
        found = problems.attempt(list_images, Path(unlabeled)) or {}
        items += [_Item(s, p, None, "unlabeled") for s, p in found.items()]
    renamed = _unique_stems(items, problems)
    _check_name_lengths(items, out, bool(tile_scale), problems)

    if task is None and mask_threshold is not None:
        task = "binary"
    mask_files = [i.mask for i in items if i.mask is not None]
    lossy = {str(m) for m in mask_files if m.suffix.lower() in LOSSY_SUFFIXES}
    plainly_binary = (task in (None, "binary") and pal is None and ignore_index is None
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
    how = _MaskRead(
        palette=pal,
        keep_channels=task == "multilabel",
        keep_alpha=task == "multilabel" and classes is not None and len(classes) == 4,
        threshold=mask_threshold,
        lossy_guess=guessed,
    )
    for item in progress_bar(items, "checking", progress):
        _scan(item, how, channels, problems)
    _check_leaks(items, problems)
    readable = [i for i in items if i.digest]
    target = problems.attempt(_target_size, readable, size) if readable else None
    if target is not None and tile_scale:
        _check_tiles(readable, target, tile_scale, problems)
    scanned = [i for i in items if i.present is not None]
    plan = problems.attempt(_plan, scanned, task, classes, pal, ignore_index) if scanned else None
    for item in scanned if plan is not None else []:
        problem = _mask_problem(item.present, plan)  # type: ignore[arg-type]
        if problem:
            problems.add(f"{item.mask}: {problem}")
    if mask_threshold is not None and scanned and not any(i.present[:, 1].any() for i in scanned):
        problems.add(f"{masks}: no mask has a value >= {mask_threshold}, so every mask would be "
                     "empty; lower --mask-threshold (lossy JPEG masks are read so by default)")
    heading = None
    if mask_threshold is None and any(m.split(": ", 1)[0] in lossy for m in problems.messages):
        heading = (f"{len(problems.messages)} problem(s) in the input files (nothing was "
                   f"written); {len(lossy)} of the masks are JPEG, whose compression leaves "
                   "values near, not at, 0 and 255: pass --mask-threshold 128 to read them as "
                   "binary:")  # the likely cause of a JPEG mask's value problem
    problems.raise_any(heading)
    assert target is not None and plan is not None  # no problems: every file was read

    splits = _assign(items, labeled_fraction, val_fraction, test_fraction, seed)
    extra: dict = {} if ignore_index is None else {"ignore_index": int(ignore_index)}
    if mask_threshold is not None:
        extra["mask_threshold"] = int(mask_threshold)
    if suffixes:
        extra["mask_suffix"] = suffixes
    if renamed:
        extra["renamed"] = renamed
    if tile_scale:
        extra["tile_overlap"] = float(tile_overlap)
        extra["tiled_images"] = {split: len(splits[split]) for split in SPLITS}
    info = DatasetInfo(
        task=plan.task.kind,
        classes=plan.classes,
        image_size=target,
        channels=channels,
        colors=plan.colors,
        seed=seed,
        source=str(Path(images).resolve()),
        rotate=rotate,
        tile_scale=tile_scale,
        whole_image_scores=bool(tile_scale),  # a user's score is that of their images
        extra=extra,
    )
    with staged_layout(out) as staging:  # the old set stays until the new one is whole
        _write_splits(staging, splits, how, plan, info, tile_overlap, progress)
        return finalize_counts(staging, info)


def _write_splits(root: Path, splits: dict[str, list[_Item]], how: _MaskRead, plan: _Plan,
                  info: DatasetInfo, tile_overlap: float, progress: bool) -> None:
    """Write every split's images (resized to ``info.image_size`` or cut into tiles of it)
    and masks under ``root``; ``train_unlabeled`` gets masks only when every one of its
    images has one (so the split is either fully scored or not)."""
    size, tile_scale = info.image_size, info.tile_scale
    with_truth = {split: split != "train_unlabeled"
                  or all(i.mask is not None for i in splits[split]) for split in SPLITS}
    for split in SPLITS:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        if with_truth[split]:
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
    jobs = [(split, item) for split in SPLITS for item in splits[split]]
    for split, item in progress_bar(jobs, "writing", progress):
        image = read_image(item.image, info.channels)
        truth = with_truth[split] and item.mask is not None
        mask = _to_disk(_read_mask(item.mask, how), plan) if truth else None  # type: ignore[arg-type]
        overlap = tile_overlap if split.startswith("train") else 0.0
        pieces = (cut_pair(item.stem, image, mask, size, tile_scale, overlap) if tile_scale
                  else [(item.stem, resize_image(image, size),
                         None if mask is None else resize_mask(mask, size))])
        for stem, piece, disk in pieces:
            label = None if disk is None else plan.task.encode_mask(disk)
            write_pair(root, split, stem, piece, label, plan.task)


def prepare_drawn(
    images: dict[str, Path],
    draw: Callable[[str, Path, Problems], None],
    drawn_from: dict[str, str],
    *,
    task: str,
    classes: list[str],
    ignore_index: int | None = None,
    **options,
) -> DatasetInfo:
    """Prepare masks that another source draws from annotations (COCO, LabelMe) as a
    folder of masks, so every check and split rule of :func:`prepare_folder` holds.

    ``images`` holds the image folder of "train" and, optionally, of "val" and "test";
    ``draw(split, dest, problems)`` writes ``dest/<image stem>.png`` for that split's
    annotated images and records what it cannot draw; ``drawn_from[split]`` names what
    the masks come from in messages (not the temporary folder they are drawn into).
    ``options``: the layout keywords of :func:`prepare_folder` (``out``, ``size``, ...).
    """
    problems = Problems()
    with tempfile.TemporaryDirectory(prefix="imseg-drawn-masks-") as tmp:
        masks = {split: Path(tmp) / split for split in images}
        try:
            for split, dest in masks.items():
                dest.mkdir()
                draw(split, dest, problems)
        except WriteFailed as exc:
            raise storage_error(exc.path, exc.cause, f"nothing was written to {options['out']} "
                                "(masks are drawn in a temporary folder first: TMPDIR sets "
                                "where)") from None
        problems.raise_any()
        try:
            return prepare_folder(
                images=images["train"], masks=masks["train"],
                val_images=images.get("val"), val_masks=masks.get("val"),
                test_images=images.get("test"), test_masks=masks.get("test"),
                task=task, classes=classes, ignore_index=ignore_index, mask_suffix="",
                **options,
            )
        except DataError as exc:
            message = str(exc)
            for split, folder in masks.items():
                message = message.replace(str(folder), drawn_from[split])
            raise DataError(message) from None


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


# --------------------------------------------------------------------------- checks
def _check_args(
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


def _check_out(out: Path, overwrite: bool, sources: list[Path | None]) -> None:
    check_out(out, overwrite)
    if overwrite:
        doomed = [(out / s).resolve() for s in SPLITS]
        for src in sources:
            if src is not None and any(Path(src).resolve().is_relative_to(d) for d in doomed):
                raise ConfigError(f"{src}: lies inside {out}, which --overwrite would replace")


def _pairs(
    images: Path,
    masks: Path,
    origin: str,
    problems: Problems,
    suffix: str | None = None,
    used_suffixes: dict[str, str] | None = None,
    rest_unlabeled: bool = False,
) -> list[_Item]:
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
    pairs = [_Item(stem, imgs[stem], by_image[stem], origin) for stem in sorted(by_image)]
    bare = {stem: path for stem, path in imgs.items() if stem not in by_image}
    if rest_unlabeled:
        return pairs + [_Item(stem, path, None, "unlabeled") for stem, path in bare.items()]
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


def _unique_stems(items: list[_Item], problems: Problems) -> dict[str, str]:
    """Prefix the stems of explicit folders that clash with another folder's (module doc).

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


def _check_name_lengths(items: list[_Item], out: Path, tiled: bool,
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


def _scan(item: _Item, how: _MaskRead, channels: int, problems: Problems) -> None:
    """Read an item fully and record its size, pixel hash and mask values.

    Unreadable files and a mask whose size differs from its image are recorded
    in ``problems``; the item then keeps no size/hash or no mask values.
    """
    image = problems.attempt(read_image, item.image, channels)
    if image is not None:
        item.size = (int(image.shape[0]), int(image.shape[1]))
        item.digest = _pixel_digest(image)
    if item.mask is None:
        return
    mask = problems.attempt(_read_mask, item.mask, how)
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


def _pixel_digest(image: np.ndarray) -> bytes:
    """A hash of an image's decoded pixels and shape: equal for equal images, whatever the file."""
    digest = hashlib.blake2b(str(image.shape).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.digest()


def _check_leaks(items: list[_Item], problems: Problems) -> None:
    """Record each image whose pixels equal an image of another folder (module doc)."""
    first: dict[bytes, _Item] = {}
    for item in items:
        if not item.digest:
            continue
        twin = first.setdefault(item.digest, item)
        if twin.origin != item.origin:
            problems.add(
                f"{item.image}: same pixels as {twin.image} ({_FOLDER_NAMES[item.origin]} and "
                f"{_FOLDER_NAMES[twin.origin]}); an image belongs in one split only"
            )


def _target_size(items: list[_Item], size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        target = (int(size[0]), int(size[1]))
        where = f"--size {target[0]} {target[1]}"
    else:
        ref = items[0]
        for item in items[1:]:
            if item.size != ref.size:
                raise DataError(
                    f"{item.image}: size {item.size[0]}×{item.size[1]} (H×W) differs from "
                    f"{ref.image.name} ({ref.size[0]}×{ref.size[1]}); pass --size H W to resize "
                    "all images to one size"
                )
        target = ref.size
        where = f"{ref.image}: images are {target[0]}×{target[1]} (H×W)"
    if target[0] % 16 or target[1] % 16:
        h, w = (max(16, int(round(v / 16)) * 16) for v in target)
        raise DataError(
            f"{where}: the U-Net needs sides that are multiples of 16; pass e.g. --size {h} {w}"
        )
    return target


def _check_tiles(items: list[_Item], tile: tuple[int, int], scale: float,
                 problems: Problems) -> None:
    """Every image must hold at least one whole tile once scaled."""
    for item in items:
        h, w = scaled_shape(item.size, scale)
        if h < tile[0] or w < tile[1]:
            at = f" at --tile-scale {scale:g} ({h}×{w})" if scale != 1 else ""
            problems.add(f"{item.image}: {item.size[0]}×{item.size[1]} (H×W){at} is smaller "
                         f"than the {tile[0]}×{tile[1]} tile; pass a smaller --size")


# --------------------------------------------------------------------- the mask plan
def _plan(
    items: list[_Item],
    task: str | None,
    classes: list[str] | None,
    palette: Palette | None,
    ignore: int | None,
) -> _Plan:
    """Decide the task, classes and value mapping from all masks at once."""
    scanned = [i for i in items if i.present is not None]
    if task is None and palette is None and ignore is not None:
        _check_void_is_not_foreground(scanned, ignore)
    if palette is not None:
        kind = "multiclass"
    elif task is not None:
        kind = task
    else:
        for item in scanned:
            if item.present.shape[0] > 1:  # type: ignore[union-attr]
                raise DataError(
                    f"{item.mask}: a colour (RGB) mask; pass --palette FILE when colours code "
                    "classes, or --task multilabel when each channel is one label"
                )
        if classes is not None:
            kind = "binary" if len(classes) == 1 else "multiclass"
        else:
            seen = _union(scanned, 1, ignore)
            binary = seen <= {0, 1} or seen <= {0, 255}
            kind = "binary" if binary else "multiclass"
    if kind == "multiclass":
        return _multiclass_plan(scanned, classes, palette, ignore)
    return _binary_plan(scanned, kind, classes, ignore)


def _usual(fg: int, ignore: int | None) -> np.ndarray:
    """The values of a binary ``0/fg`` mask (and the void value), as a 256-long mask."""
    usual = np.zeros(256, bool)
    usual[[0, fg]] = True
    if ignore is not None:
        usual[ignore] = True
    return usual


def _binary_majority(items: list[_Item], ignore: int | None) -> int | None:
    """The foreground value (255 or 1) of a set whose masks are mostly binary ``0/fg``
    (more than half of them, some with foreground), or None: then the masks with other
    values are the odd ones out, to be named, not a clean mask."""
    for fg in (255, 1):
        clean = [i for i in items if not _odd_values(i, fg, ignore).size]
        if 2 * len(clean) > len(items) and any(i.present[0, fg] for i in clean):  # type: ignore[index]
            return fg
    return None


def _odd_values(item: _Item, fg: int, ignore: int | None) -> np.ndarray:
    """The values of a single-channel mask besides ``0/fg`` (and void)."""
    return np.flatnonzero(item.present[0] & ~_usual(fg, ignore))  # type: ignore[index]


def _raise_odd_masks(items: list[_Item], fg: int, ignore: int | None, advice: str) -> None:
    """One error naming every mask with values besides ``0/fg`` (the odd ones out), and
    ``advice``: what they are not, and what to do."""
    problems = Problems()
    for item in items:
        extra = _odd_values(item, fg, ignore)
        if extra.size:
            problems.add(f"{item.mask}: values {extra[:8].tolist()} besides 0/{fg}")
    odd = len(problems.messages)
    problems.raise_any(f"{len(items) - odd} of the {len(items)} masks are binary 0/{fg}, but "
                       f"the {odd} below hold other values; {advice}:")


def _check_void_is_not_foreground(items: list[_Item], ignore: int) -> None:
    """Refuse a void value that is the foreground of most masks (binary 0/255 masks with
    ``--ignore-index 255`` would be all void): a set is never ruined by a flag unsaid."""
    gray = [i for i in items if i.present.shape[0] == 1]  # type: ignore[union-attr]
    if not gray or _binary_majority(gray, None) != ignore:
        return
    odd = [str(i.mask) for i in gray if _odd_values(i, ignore, None).size]
    named = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    raise DataError(
        f"--ignore-index {ignore} would make every object pixel void in {len(gray) - len(odd)} "
        f"of the {len(gray)} masks: they hold only 0 and {ignore}, binary masks whose "
        f"foreground is {ignore}; drop --ignore-index (or pass --task when {ignore} does mark "
        "void pixels)" + (f". The masks with other values: {named}" if odd else "")
    )


def _union(items: list[_Item], n_channels: int, ignore: int | None) -> set[int]:
    seen = np.zeros(256, bool)
    for item in items:
        seen |= item.present[:n_channels].any(axis=0)  # type: ignore[index]
    if ignore is not None:
        seen[ignore] = False
    return set(np.flatnonzero(seen).tolist())


def _binary_plan(
    items: list[_Item], kind: str, classes: list[str] | None, ignore: int | None
) -> _Plan:
    if kind == "multilabel":
        n = len(classes) if classes else _channel_count(items)
        names = classes or [f"label{c}" for c in range(n)]
    else:
        n, names = 1, classes or ["foreground"]
    seen = _union(items, n, ignore)
    if 1 in seen and 255 in seen and kind == "binary":
        fg = _binary_majority(items, ignore)
        if fg is not None:
            _raise_odd_masks(items, fg, ignore, "masks must use one foreground value: fix "
                             "or remove them")
    if 1 in seen and 255 in seen:
        with1 = next(i for i in items if i.present[:n, 1].any())  # type: ignore[index]
        with255 = next(i for i in items if i.present[:n, 255].any())  # type: ignore[index]
        raise DataError(
            f"{with255.mask}: foreground value 255, but {with1.mask} uses 1: masks must use "
            "one foreground value (0/1 or 0/255); pass --ignore-index when one of them is void"
        )
    fg = 1 if 1 in seen else 255
    plan = _Plan(Task(kind, n), names)  # type: ignore[arg-type]
    plan.lut[fg] = 255
    plan.allowed[[0, fg]] = True
    plan.expect = f"0/{fg}"
    if ignore is not None:
        plan.lut[ignore] = DISK_BINARY_VOID
        plan.allowed[ignore] = True
        plan.expect += f" (void {ignore})"
    return plan


def _channel_count(items: list[_Item]) -> int:
    first = items[0]
    n = first.present.shape[0]  # type: ignore[union-attr]
    for item in items[1:]:
        if item.present.shape[0] != n:  # type: ignore[union-attr]
            raise DataError(
                f"{item.mask}: {item.present.shape[0]} channels, but {first.mask.name} "  # type: ignore[union-attr]
                f"has {n}; multilabel masks need one channel per label (or pass --classes)"
            )
    return n


def _multiclass_plan(
    items: list[_Item], classes: list[str] | None, palette: Palette | None, ignore: int | None
) -> _Plan:
    values = np.arange(256)
    rank = values - (values > ignore) if ignore is not None else values.copy()
    colors: list[tuple[int, int, int]] = []
    if palette is not None:
        keep = [i for i in range(len(palette)) if i != ignore]
        n = len(keep)
        names = [palette.names[i] for i in keep]
        colors = [palette.colors[i] for i in keep]
        if classes is not None:
            if len(classes) != n:
                raise ConfigError(
                    f"--classes names {len(classes)} classes, the palette has {n}"
                    + (" (void entry left out)" if ignore is not None else "")
                )
            names = list(classes)
        if n < 2:
            raise ConfigError("a palette needs at least two classes besides the void entry")
    elif classes is not None:
        n, names = len(classes), list(classes)
    else:
        seen = _union(items, 1, ignore)
        top = max(seen) if seen else 0
        n = max(int(rank[top]) + 1, 2)
        if n > 254:
            fg = _binary_majority(items, ignore)
            if fg is not None:
                void = f", pass --ignore-index {top} if it marks void pixels" if fg != top else ""
                _raise_odd_masks(items, fg, ignore, f"read as class ids, value {top} "
                                 f"would make {n} classes; fix or remove them{void}, or pass "
                                 "--mask-threshold T to read every mask as binary (values "
                                 "from T on are foreground, the others background)")
            where = next(i for i in items if i.present[0, top])  # type: ignore[index]
            raise DataError(
                f"{where.mask}: value {top} would make {n} classes (at most 254); pass "
                f"--ignore-index {top} if it marks void pixels, --task binary for 0/{top} "
                "masks, or --mask-threshold 1 for instance labels (any id is foreground)"
            )
        names = [f"class{c}" for c in range(n)]
    plan = _Plan(Task("multiclass", n), names, colors)
    plan.allowed = rank < n
    plan.lut = np.where(plan.allowed, rank, DISK_MULTICLASS_VOID).astype(np.uint8)
    plan.expect = f"class ids of {n} classes"
    if palette is not None:
        plan.expect = f"palette entries of {n} classes"
    if ignore is not None:
        plan.lut[ignore] = DISK_MULTICLASS_VOID
        plan.allowed[ignore] = True
        plan.expect += f" (void {ignore})"
    return plan


def _mask_problem(present: np.ndarray, plan: _Plan) -> str | None:
    """Why a scanned mask does not fit the plan, or None."""
    task = plan.task
    if task.kind != "multilabel":
        if present.shape[0] != 1:
            return f"a {present.shape[0]}-channel mask; {task.kind} masks are single-channel"
        n = 1
    else:
        n = task.n_classes
        if present.shape[0] < n:
            return f"{present.shape[0]} channel(s) for {n} labels"
        extra = present[n:, 1:].any(axis=1)
        if extra.any():
            c = int(np.flatnonzero(extra)[0]) + n
            return f"channel {c} has labels, but --classes names only {n}"
    bad = np.flatnonzero(present[:n].any(axis=0) & ~plan.allowed)
    if bad.size:
        return f"values {bad[:8].tolist()} outside {plan.expect}"
    return None


# ------------------------------------------------------------------------ reading
def progress_bar(items: list, desc: str, progress: bool = True):
    """A bar over the files of a ``prepare`` step: on a terminal, from 20 files on."""
    return tqdm(items, desc=desc, unit="file",
                disable=bar_disable(progress and len(items) >= _PROGRESS_MIN))


def _read_mask(path: Path, how: _MaskRead) -> np.ndarray:
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
    """A JPEG mask read as binary without being asked must be grey (module doc)."""
    spread = rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)
    if int((spread > 32).sum()) > LOSSY_COLOUR_PIXELS:
        raise DataError(f"{path}: a colour JPEG mask; JPEG changes colours, so colour-coded "
                        "classes cannot be read back from it: save the masks as PNG (and pass "
                        "--palette), or pass --mask-threshold T to read them as grey binary")


def _check_two_valued(path: Path, values: np.ndarray) -> None:
    """... and two-valued: no patch of middle grey, as a class between 0 and 255 makes
    (module doc)."""
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


def _to_disk(mask: np.ndarray, plan: _Plan) -> np.ndarray:
    """Source mask → mask in the prepared layout's encoding (see imseg.tasks)."""
    if plan.task.kind != "multilabel":
        return plan.lut[mask]
    planes = mask[..., None] if mask.ndim == 2 else mask
    disk = plan.lut[planes[..., : plan.task.n_classes]]
    return disk[..., 0] if disk.shape[2] == 1 else disk


# ------------------------------------------------------------------- splits and out
def _assign(
    items: list[_Item], labeled: float, val: float, test: float, seed: int
) -> dict[str, list[_Item]]:
    by_stem = {i.stem: i for i in items}
    pool = [i.stem for i in items if i.origin == "pool"]
    # equal images of the pool move together: the first stem stands for its copies
    copies: dict[str, list[str]] = {}
    lead: dict[bytes, str] = {}
    for stem in sorted(pool):
        copies.setdefault(lead.setdefault(by_stem[stem].digest, stem), []).append(stem)
    first = split_keys(list(copies), {"test": test, "val": val}, seed, rest="train")
    train = split_keys(first["train"], {"train_labeled": labeled}, seed, rest="train_unlabeled")

    def with_copies(leads: list[str]) -> list[str]:
        return [stem for key in leads for stem in copies[key]]

    keys = {
        "train_labeled": with_copies(train["train_labeled"]),
        "train_unlabeled": with_copies(train["train_unlabeled"])
        + [i.stem for i in items if i.origin == "unlabeled"],
        "val": with_copies(first["val"]) + [i.stem for i in items if i.origin == "val"],
        "test": with_copies(first["test"]) + [i.stem for i in items if i.origin == "test"],
    }
    if not keys["train_labeled"]:
        raise ConfigError(
            f"no labeled training pairs left from {len(pool)} pairs after test "
            f"({len(first['test'])}) and val ({len(first['val'])}); add pairs or lower the "
            "fractions"
        )
    if not keys["val"]:
        raise ConfigError("no validation images: pass --val-fraction > 0 or --val-images")
    return {split: [by_stem[s] for s in sorted(stems)] for split, stems in keys.items()}
