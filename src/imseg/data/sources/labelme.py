"""``imseg prepare labelme``: images labelled with LabelMe → the prepared layout.

LabelMe saves one JSON per image, beside it or in a folder of its own: ``shapes``
(``label``, ``points``, ``shape_type``), ``imagePath`` (relative to the JSON),
``imageHeight`` and ``imageWidth``. This source draws each JSON's shapes into a
class-id mask and prepares images and masks as ``prepare folder`` does
(:func:`imseg.data.sources.folder.prepare_drawn`).

Choices:

* **Shapes** are drawn in file order, a later one over an earlier one, as LabelMe's
  own export does: polygons, rectangles (two corners), circles (centre and a point on
  the rim) and masks (a PNG of the shape's box); a pixel belongs to a shape when its
  centre lies inside (:mod:`imseg.data.shapes`). Lines and points have no area: they
  are skipped, counted in dataset.yaml (``extra.skipped_shapes``), and make no class.
* **Classes**: ``--labels FILE`` is LabelMe's ``labels.txt`` (one name per line, in
  class order; ``__ignore__`` marks void pixels, ``_background_`` or ``background``
  is class 0); without it, the labels of shapes with an area, sorted, after
  ``background``. A label the file does not name is an error. One label (besides
  background) → binary.
* **Images**: a JSON's image is the file of its ``imagePath``'s name in ``--images``
  (Windows separators too), else the image with the JSON's stem. Images without a
  JSON are refused like images without masks, unless ``--unlabeled`` names the
  ``--images`` folder: then they are the unlabeled split.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from pathlib import Path, PureWindowsPath

import numpy as np
from PIL import Image

from imseg.data.imageio import list_images, orientation_hint, upright_size
from imseg.data.layout import DatasetInfo, write_info
from imseg.data.shapes import circle_mask, polygon_mask, rectangle_mask
from imseg.data.sources.folder import (
    add_layout_options,
    layout_options,
    prepare_drawn,
    print_prepared,
    progress_bar,
)
from imseg.errors import DataError, Problems
from imseg.storage import write_png

VOID_LABEL = "__ignore__"
BACKGROUND_LABELS = ("_background_", "background")  # class 0, as LabelMe's labels.txt says
_VOID_VALUE = 255  # how void pixels are written for prepare_folder (--ignore-index 255)
_AREA_LESS = {"line", "linestrip", "point", "points"}


def prepare_labelme(*, images: Path, out: Path, annotations: Path | None = None,
                    labels: Path | None = None, **options) -> DatasetInfo:
    """Draw every LabelMe JSON of ``annotations`` (default: the images folder), then
    prepare as ``prepare_folder`` does (``options``: its layout keywords)."""
    images = Path(images)
    folder = Path(annotations) if annotations is not None else images
    problems = Problems()
    documents = _load_all(folder, problems)
    problems.raise_any()
    names, void = _classes(documents, labels, problems)
    problems.raise_any()
    ids = {name: k for k, name in enumerate(names)}
    skipped: dict[str, int] = {}

    def draw(split: str, dest: Path, problems: Problems) -> None:
        try:
            files = list_images(images)
        except DataError as exc:
            problems.add(str(exc))
            return
        by_name = {p.name: p for p in files.values()}
        drawn: dict[Path, Path] = {}
        for path, doc in progress_bar(list(documents.items()), "drawing"):
            image = _image_of(path, doc, by_name, files)
            if image is None:
                problems.add(f"{path}: its image {doc.get('imagePath')!r} is not in {images}")
                continue
            if image in drawn:
                problems.add(f"{path}: describes {image.name}, as {drawn[image].name} does")
                continue
            drawn[image] = path
            mask = _draw(path, doc, image, ids, void, skipped, problems)
            if mask is not None:
                write_png(dest / f"{image.stem}.png", mask)

    binary = len(names) == 2
    info = prepare_drawn(
        {"train": images}, draw, {"train": f"the LabelMe files of {folder}"},
        task="binary" if binary else "multiclass",
        classes=names[1:] if binary else names,
        ignore_index=_VOID_VALUE if void else None, out=out, **options,
    )
    if skipped:
        info.extra["skipped_shapes"] = dict(sorted(skipped.items()))
        write_info(Path(out), info)
    return info


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``imseg prepare labelme`` to the ``imseg prepare`` sub-commands."""
    p = subparsers.add_parser(
        "labelme", help="images labelled with LabelMe (one JSON per image)",
        description="Draw the shapes of LabelMe's JSON files into class-id masks and "
        "prepare them as `prepare folder` does (one label: binary; several: multiclass "
        "with background as class 0).",
    )
    p.add_argument("--images", type=Path, required=True, help="folder of the images")
    p.add_argument("--annotations", type=Path,
                   help="folder of the LabelMe JSON files (default: --images)")
    p.add_argument("--labels", type=Path,
                   help="LabelMe's labels.txt: class names in order (__ignore__: void)")
    add_layout_options(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = prepare_labelme(images=args.images, annotations=args.annotations, labels=args.labels,
                           **layout_options(args))
    skipped = info.extra.get("skipped_shapes")
    if skipped:
        listed = ", ".join(f"{n} {kind}" for kind, n in skipped.items())
        print(f"skipped shapes without area: {listed}")
    print_prepared(args.out, info)
    return 0


# ------------------------------------------------------------------------ reading
def _load_all(folder: Path, problems: Problems) -> dict[Path, dict]:
    """Every ``*.json`` of the folder that is a LabelMe file (has ``shapes``)."""
    if not folder.is_dir():
        problems.add(f"{folder}: folder not found")
        return {}
    documents = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problems.add(f"{path}: cannot read JSON ({exc})")
            continue
        if isinstance(doc, dict) and isinstance(doc.get("shapes"), list):
            documents[path] = doc
    if not documents and not problems:
        problems.add(f"{folder}: no LabelMe JSON files (with a 'shapes' list)")
    return documents


def _classes(documents: dict[Path, dict], labels: Path | None,
             problems: Problems) -> tuple[list[str], bool]:
    """Class names (background first) and whether any label marks void pixels; only
    labels of shapes with an area make classes (a label used by points alone would be
    a class no pixel has)."""
    used = {str(s.get("label", "")) for doc in documents.values() for s in doc["shapes"]
            if isinstance(s, dict) and str(s.get("shape_type") or "polygon") not in _AREA_LESS}
    if labels is None:
        names = ["background", *sorted(n for n in used - {VOID_LABEL, ""}
                                       if n.lower() not in BACKGROUND_LABELS)]
        void = VOID_LABEL in used
    else:
        try:
            listed = [line.strip() for line in Path(labels).read_text().splitlines()
                      if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            problems.add(f"{labels}: cannot read ({exc})")
            return [], False
        void = VOID_LABEL in listed or VOID_LABEL in used  # drawn as void either way
        names = ["background", *(n for n in listed
                                 if n != VOID_LABEL and n.lower() not in BACKGROUND_LABELS)]
        unknown = sorted(n for n in used - set(names) - {VOID_LABEL}
                         if n.lower() not in BACKGROUND_LABELS)
        if unknown:
            problems.add(f"{labels}: does not name the labels {unknown} the JSON files use")
    if len(names) < 2:
        problems.add("no labelled shapes: nothing to learn")
    return names, void


def _image_of(path: Path, doc: dict, by_name: dict[str, Path],
              by_stem: dict[str, Path]) -> Path | None:
    """The image a JSON describes: its imagePath's name, else the JSON's stem."""
    given = str(doc.get("imagePath") or "")
    name = PureWindowsPath(given).name if "\\" in given else Path(given).name
    return by_name.get(name) or by_stem.get(path.stem)


def _draw(path: Path, doc: dict, image: Path, ids: dict[str, int], void: bool,
          skipped: dict[str, int], problems: Problems) -> np.ndarray | None:
    """The class-id mask of one JSON (void: 255), or None after recording its problems."""
    size = problems.attempt(upright_size, image)
    if size is None:
        return None
    height, width = size
    stated = (doc.get("imageHeight"), doc.get("imageWidth"))
    if None not in stated and tuple(int(v) for v in stated) != (height, width):
        problems.add(f"{path}: says {stated[0]}×{stated[1]} (H×W), its image {image.name} is "
                     f"{height}×{width}"
                     + orientation_hint(image, tuple(int(v) for v in stated)))
        return None
    mask = np.zeros((height, width), np.uint8)
    for n, shape in enumerate(doc["shapes"]):
        if not isinstance(shape, dict):
            problems.add(f"{path}: shape {n + 1} is not an object")
            continue
        kind = str(shape.get("shape_type") or "polygon")
        if kind in _AREA_LESS:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        label = str(shape.get("label", ""))
        value = _VOID_VALUE if label == VOID_LABEL else ids.get(label, 0)  # background: 0
        try:
            region = shape_mask(kind, shape, height, width)
        except (DataError, TypeError, ValueError, IndexError) as exc:
            problems.add(f"{path}: shape {n + 1} ({kind} {label!r}): {exc}")
            continue
        mask[region] = value
    return mask


def shape_mask(kind: str, shape: dict, height: int, width: int) -> np.ndarray:
    """One LabelMe shape → ``height×width`` bool."""
    points = [(float(x), float(y)) for x, y in shape.get("points") or []]
    if kind == "polygon":
        if len(points) < 3:
            raise DataError("a polygon needs at least 3 points")
        return polygon_mask([v for p in points for v in p], height, width)
    if kind in ("rectangle", "circle"):
        if len(points) != 2:
            raise DataError(f"a {kind} has 2 points, not {len(points)}")
        draw = rectangle_mask if kind == "rectangle" else circle_mask
        return draw(points[0], points[1], height, width)
    if kind == "mask":
        return _box_mask(shape, points, height, width)
    raise DataError(f"unknown shape type {kind!r}")


def _box_mask(shape: dict, points: list[tuple[float, float]], height: int,
              width: int) -> np.ndarray:
    """A ``mask`` shape: a base64 PNG of the box whose top-left corner is ``points[0]``."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as im:
            part = np.asarray(im.convert("L")) > 0
    except (KeyError, OSError, ValueError) as exc:
        raise DataError(f"unreadable mask ({exc})") from exc
    if not points:
        raise DataError("a mask shape needs the corner of its box")
    x0, y0 = (int(v) for v in points[0])  # as LabelMe places it
    mask = np.zeros((height, width), bool)
    top, left = max(y0, 0), max(x0, 0)  # the part of the box inside the image
    bottom, right = min(y0 + part.shape[0], height), min(x0 + part.shape[1], width)
    if top < bottom and left < right:
        mask[top:bottom, left:right] = part[top - y0 : bottom - y0, left - x0 : right - x0]
    return mask
