"""``imseg prepare coco``: images with COCO-format annotations → the prepared layout.

Labelling tools (CVAT, Label Studio, Roboflow, makesense) export segmentation as a
COCO ``instances`` JSON: ``images`` (``id``, ``file_name``, ``height``, ``width``),
``categories`` (``id``, ``name``) and ``annotations`` (``image_id``, ``category_id``,
``segmentation`` as polygons or run-length encoding). This source draws each
image's annotations into a class-id mask and hands images and masks to
:func:`imseg.data.sources.folder.prepare_folder`, so every check and split rule of
``prepare folder`` holds here too.

Choices:

* **Classes**: the categories that have at least one annotation, in category-id
  order (exports often list an unused category, e.g. Roboflow's data-set name as id
  0). One category → binary (its name is the foreground class); several →
  multiclass with ``background`` as class 0.
* **Overlaps**: larger annotations are drawn first, so an object lying on another
  (a nucleus in a cell) stays visible; crowd regions (``iscrowd``) are drawn as
  their category.
* **Pixels**: a pixel belongs to a polygon when its centre lies inside (even-odd
  rule). pycocotools rounds polygons to a fifth of a pixel first, so edge pixels
  may differ from its masks (1.4 % of the foreground pixels of 200 random polygons
  on 64×64, as many added as dropped). RLE masks are decoded exactly
  (column-major runs, the compressed string form too).
* **Images**: ``file_name`` is matched by its base name in the ``--images``
  folder. Every image the JSON lists is labelled (no annotation: all background).
  Images of the folder that the JSON does not list are refused like images without
  masks, unless ``--unlabeled`` names the ``--images`` folder: then they are the
  unlabeled split.
* **Problems** (an image listed but missing, an annotation without segmentation,
  unknown image or category ids, a size that differs from the image file) are
  gathered into one error naming the JSON and the entries, before anything is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from imseg.data.imageio import list_images, orientation_hint, upright_size
from imseg.data.layout import DatasetInfo
from imseg.data.shapes import polygon_mask
from imseg.data.sources.folder import (
    add_layout_options,
    add_split_sources,
    layout_options,
    prepare_drawn,
    print_prepared,
    progress_bar,
)
from imseg.errors import ConfigError, DataError, Problems
from imseg.storage import write_png

BACKGROUND_NAMES = ("background", "_background_")
"""Category names that mean class 0: their annotations are drawn as background."""


def prepare_coco(
    *,
    images: Path,
    annotations: Path,
    out: Path,
    val_images: Path | None = None,
    val_annotations: Path | None = None,
    test_images: Path | None = None,
    test_annotations: Path | None = None,
    **options,
) -> DatasetInfo:
    """Draw the masks of every given COCO JSON, then prepare as ``prepare_folder`` does
    (``options``: its layout keywords, e.g. ``size``, ``unlabeled``, ``labeled_fraction``).
    """
    parts = {"train": (images, annotations), "val": (val_images, val_annotations),
             "test": (test_images, test_annotations)}
    for name, (imgs, ann) in parts.items():
        if (imgs is None) != (ann is None):
            flag = "" if name == "train" else f"{name}-"
            raise ConfigError(f"--{flag}images and --{flag}annotations go together")
    given = {name: (Path(i), Path(a)) for name, (i, a) in parts.items() if i is not None}
    problems = Problems()
    loaded = {name: _load(ann, problems) for name, (_, ann) in given.items()}
    problems.raise_any()
    categories, background = _used_categories(
        {given[split][1]: data for split, data in loaded.items()}, problems)
    problems.raise_any()
    binary = len(categories) == 1
    ids = {cat_id: (1 if binary else k + 1) for k, cat_id in enumerate(categories)}
    ids.update(dict.fromkeys(background, 0))
    names = list(categories.values())

    def draw(split: str, dest: Path, problems: Problems) -> None:
        imgs, ann = given[split]
        _draw_masks(loaded[split], ann, imgs, ids, dest, problems)

    return prepare_drawn(
        {split: imgs for split, (imgs, _) in given.items()}, draw,
        {split: f"the annotations of {ann}" for split, (_, ann) in given.items()},
        task="binary" if binary else "multiclass",
        classes=names if binary else ["background", *names], out=out, **options,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare coco`` to the ``imseg prepare`` sub-commands."""
    p = subparsers.add_parser(
        "coco",
        help="images with COCO-format segmentation annotations (CVAT, Label Studio, Roboflow)",
        description="Draw the polygons or RLE masks of a COCO instances JSON into class-id "
        "masks and prepare them as `prepare folder` does (one category: binary; several: "
        "multiclass with background as class 0).",
    )
    add_split_sources(p, "annotations", "COCO instances JSON", "COCO JSON of",
                      images_help="folder of the JSON's images")
    add_layout_options(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = prepare_coco(
        images=args.images, annotations=args.annotations, val_images=args.val_images,
        val_annotations=args.val_annotations, test_images=args.test_images,
        test_annotations=args.test_annotations, **layout_options(args),
    )
    print_prepared(args.out, info)
    return 0


# ------------------------------------------------------------------------ the JSON
def _load(path: Path, problems: Problems) -> dict:
    """The JSON with its three lists checked for shape (entries are checked when drawn)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.add(f"{path}: annotation file not found")
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.add(f"{path}: cannot read COCO JSON ({exc})")
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        problems.add(f"{path}: not a COCO instances file (needs the lists 'images', "
                     "'annotations' and 'categories')")
        return {}
    return data


def _coco_id(value: object) -> int | None:
    """An id as written (``1`` or ``"1"``) → int; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _used_categories(loaded: dict[Path, dict],
                     problems: Problems) -> tuple[dict[int, str], set[int]]:
    """Category id → name of the categories with annotations, in id order, agreeing
    across the given files; and the ids of a category named background (class 0)."""
    names: dict[int, str] = {}
    used: set[int | None] = set()
    for source, data in loaded.items():
        for cat in data.get("categories", []):
            cat_id = _coco_id(cat.get("id")) if isinstance(cat, dict) else None
            if cat_id is None or "name" not in cat:
                problems.add(f"{source}: category {cat!r}: needs an integer 'id' and a 'name'")
                continue
            known = names.setdefault(cat_id, str(cat["name"]))
            if known != str(cat["name"]):
                problems.add(f"category id {cat_id}: named {known!r} in one file and "
                             f"{cat['name']!r} in another")
        used |= {_coco_id(a.get("category_id")) for a in data.get("annotations", [])
                 if isinstance(a, dict)}
    background = {i for i, name in names.items() if name.strip().lower() in BACKGROUND_NAMES}
    chosen = {i: names[i] for i in sorted(names) if i in used and i not in background}
    twice = sorted({n for n in chosen.values() if list(chosen.values()).count(n) > 1})
    for name in twice:
        problems.add(f"categories {[i for i, n in chosen.items() if n == name]} are all named "
                     f"{name!r}; one class needs one name")
    if not chosen and not problems:
        problems.add("no category has an annotation: nothing to learn")
    if len(chosen) > 253:
        problems.add(f"{len(chosen)} categories with annotations; at most 253 fit besides "
                     "background")
    return chosen, background


def _draw_masks(data: dict, source: Path, images: Path, ids: dict[int, int], dest: Path,
                problems: Problems) -> None:
    """Write ``dest/<image stem>.png`` (class ids) for every image the JSON lists."""
    try:
        files = {p.name: p for p in list_images(images).values()}
    except DataError as exc:
        problems.add(str(exc))
        return
    entries: dict[int, tuple[Path, int, int]] = {}
    named: dict[str, object] = {}  # file name → the id that lists it first
    for n, image in enumerate(data["images"]):
        if not isinstance(image, dict):
            problems.add(f"{source}: image entry {n}: not an object")
            continue
        where = f"{source}: image {image.get('file_name', image.get('id'))!r}"
        try:
            image_id, name = _coco_id(image["id"]), Path(str(image["file_name"])).name
            height, width = int(image["height"]), int(image["width"])
            if image_id is None:
                raise TypeError(image["id"])
        except (KeyError, TypeError, ValueError):
            problems.add(f"{where}: needs 'id', 'file_name', 'height' and 'width'")
            continue
        if name not in files:
            problems.add(f"{where}: no file {name} in {images}")
            continue
        if name in named or image_id in entries:
            twin = f"id {named[name]} names the same file" if name in named else "its id is taken"
            problems.add(f"{where} (id {image_id}): listed twice ({twin}); one image needs one "
                         "entry, its annotations all pointing at it")
            continue
        named[name] = image_id
        shown = upright_size(files[name])
        if shown != (height, width):
            problems.add(f"{where}: the JSON says {height}×{width} (H×W), the file is "
                         f"{shown[0]}×{shown[1]}"
                         + orientation_hint(files[name], (height, width)))
            continue
        entries[image_id] = (files[name], height, width)
    listed = {_coco_id(image.get("id")) for image in data["images"]
              if isinstance(image, dict)}
    areas: dict[int, list[tuple[int, int]]] = {i: [] for i in entries}  # (pixels, index)
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            problems.add(f"{source}: annotation {n}: not an object")
            continue
        where = f"{source}: annotation {ann.get('id', n)}"
        image_id = _coco_id(ann.get("image_id"))
        if image_id not in entries:
            if image_id is None or image_id not in listed:
                problems.add(f"{where}: image_id {ann.get('image_id')} is not among the "
                             "JSON's images")
            continue  # else its image has a problem of its own, reported above
        if _coco_id(ann.get("category_id")) not in ids:
            problems.add(f"{where}: category_id {ann.get('category_id')!r} is not a category")
            continue
        _, height, width = entries[image_id]
        try:
            pixels = int(segmentation_mask(ann.get("segmentation"), height, width).sum())
        except DataError as exc:
            problems.add(f"{where}: {exc}")
            continue
        areas[image_id].append((pixels, n))
    if problems:
        return
    for image_id, (path, height, width) in progress_bar(list(entries.items()), "drawing"):
        mask = np.zeros((height, width), np.uint8)
        # drawn again one at a time, larger first: holding every region of an image with
        # hundreds of objects would cost hundreds of image-sized masks
        for _, n in sorted(areas[image_id], key=lambda a: (-a[0], a[1])):
            ann = data["annotations"][n]
            value = ids[_coco_id(ann["category_id"])]  # type: ignore[index]
            mask[segmentation_mask(ann["segmentation"], height, width)] = value
        write_png(dest / f"{path.stem}.png", mask)


# ------------------------------------------------------------------ segmentations
def segmentation_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygon list, or RLE with list or string counts) → a
    ``height×width`` bool mask."""
    if isinstance(segmentation, list) and segmentation:
        mask = np.zeros((height, width), bool)
        for polygon in segmentation:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(isinstance(v, (int, float)) for v in polygon)):
                raise DataError("a polygon is a flat list [x1, y1, x2, y2, ...] of at least "
                                "3 points")
            mask |= polygon_mask(polygon, height, width)  # an object's parts
        return mask
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size")
        if list(size or []) != [height, width]:
            raise DataError(f"RLE size {size} differs from its image ({height}, {width})")
        counts = segmentation["counts"]
        if isinstance(counts, (str, bytes)):
            counts = rle_counts_from_string(counts)
        return rle_mask(counts, height, width)
    raise DataError("no segmentation (polygons or RLE); a detection data set with boxes "
                    "only cannot train segmentation")


def rle_mask(counts: list[int], height: int, width: int) -> np.ndarray:
    """COCO run lengths (background first, column-major) → ``height×width`` bool."""
    if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
        raise DataError(f"RLE counts do not cover the {height}×{width} image")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T


def rle_counts_from_string(text: str | bytes) -> list[int]:
    """Run lengths of COCO's compressed RLE string: each count is a signed number in
    5-bit groups (6th bit: more follows; ASCII offset 48), and after the second, a
    count is stored as its difference from the count two before."""
    data = text.encode() if isinstance(text, str) else text
    counts: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise DataError("RLE string ends inside a count")
            group = data[pos] - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift  # the sign bit of the last group
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
