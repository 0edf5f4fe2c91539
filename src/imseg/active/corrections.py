"""Corrected labels as a person hands them back: PNG masks, a COCO JSON, or LabelMe JSON
files, read into masks in the set's own disk encoding (:mod:`imseg.tasks`), each at
the size of its image in ``--images``.

Choices:

* **Classes by name**: a COCO category or LabelMe label is the set's class of that
  name; ``background``/``_background_`` is background, ``__ignore__`` marks void pixels,
  :data:`~imseg.active.annotations.UNCERTAIN` (marks left from ``imseg suggest``) is
  skipped; any other name is an error naming the file and the name.
* **Drawing**: COCO regions larger first (an object on another stays visible), void
  last; LabelMe shapes in file order, a later one over an earlier one. Multilabel:
  each region sets its own label's channel, so labels may overlap.
* **Images**: an annotation names its image by file name (COCO ``file_name``, LabelMe
  ``imagePath``, else the JSON's stem), matched in ``--images`` by base name. An
  annotated image missing from ``--images``, or an image there without annotation, is
  an error naming both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PureWindowsPath

import numpy as np

from imseg.active.annotations import UNCERTAIN
from imseg.data.imageio import IMAGE_SUFFIXES, open_image, upright_size
from imseg.data.layout import DatasetInfo
from imseg.data.sources.coco import segmentation_mask
from imseg.data.sources.labelme import shape_mask
from imseg.errors import DataError, Problems
from imseg.tasks import DISK_BINARY_VOID, DISK_MULTICLASS_VOID

VOID_NAME = "__ignore__"
BACKGROUND_NAMES = ("background", "_background_")
FORMATS = ("coco", "labelme")

Masks = dict[str, np.ndarray]
"""Image stem → its mask, disk-encoded."""


# ------------------------------------------------------------------- classes by name
class Painter:
    """Draws named regions into a set's disk encoding: binary 0/255 (void 128),
    multiclass class ids (void 255), multilabel one 0/255 channel per label."""

    def __init__(self, info: DatasetInfo):
        self.info = info
        self.multilabel = info.task == "multilabel"
        self.void = DISK_MULTICLASS_VOID if info.task == "multiclass" else DISK_BINARY_VOID

    def known(self, name: str) -> bool:
        return (name in self.info.classes or name == VOID_NAME or name == UNCERTAIN
                or name.lower() in BACKGROUND_NAMES)

    def blank(self, height: int, width: int) -> np.ndarray:
        channels = len(self.info.classes) if self.multilabel else 1
        mask = np.zeros((height, width, channels), np.uint8)
        return mask if self.multilabel else mask[..., 0]

    def paint(self, mask: np.ndarray, name: str, region: np.ndarray) -> None:
        """Set ``region`` (bool ``H×W``) to the class ``name`` (a known one)."""
        if name == UNCERTAIN:
            return
        if name == VOID_NAME:
            mask[region] = self.void
        elif name.lower() in BACKGROUND_NAMES and name not in self.info.classes:
            mask[region] = 0
        elif self.info.task == "multiclass":
            mask[region] = self.info.classes.index(name)
        elif self.multilabel:
            mask[region, self.info.classes.index(name)] = 255
        else:
            mask[region] = 255

    def order(self, name: str) -> int:
        """Void is drawn last, over the classes."""
        return 1 if name == VOID_NAME else 0


def unknown_names(path: Path, names: set[str], painter: Painter, problems: Problems) -> None:
    unknown = sorted(n for n in names if not painter.known(n))
    if unknown:
        problems.add(f"{path}: classes {unknown} are not classes of the data set "
                     f"({', '.join(painter.info.classes)}; also {VOID_NAME} for void)")


# --------------------------------------------------------------------------- readers
def read_masks_folder(images: dict[str, Path], masks: Path, info: DatasetInfo) -> Masks:
    """The PNG mask of every image, by stem, in the set's encoding (as ``imseg suggest``
    writes them)."""
    problems = Problems()
    task = info.task_obj
    files = {p.stem: p for p in Path(masks).iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES} if Path(masks).is_dir() else None
    if files is None:
        raise DataError(f"{masks}: folder not found")
    out: Masks = {}
    for stem, image in images.items():
        path = files.get(stem)
        if path is None:
            problems.add(f"{image}: no mask {stem}.png in {masks}")
            continue
        mask = np.asarray(open_image(path))
        why = task.check_disk_mask(mask) or _size_problem(mask, image)
        if why:
            problems.add(f"{path}: {why}")
            continue
        out[stem] = mask
    for stem in sorted(set(files) - set(images)):
        problems.add(f"{files[stem]}: a mask of no image in the --images folder")
    problems.raise_any()
    return out


def read_coco(images: dict[str, Path], path: Path, info: DatasetInfo) -> Masks:
    """The masks a COCO instances JSON draws for the images."""
    data = _json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise DataError(f"{path}: not a COCO instances file (needs the lists 'images', "
                        "'annotations' and 'categories')")
    painter, problems = Painter(info), Problems()
    names = {c.get("id"): str(c.get("name")) for c in data["categories"] if isinstance(c, dict)}
    unknown_names(path, set(names.values()), painter, problems)
    by_name = {p.name: (stem, p) for stem, p in images.items()}
    entries: dict[object, str] = {}
    for image in data["images"]:
        name = Path(str(image.get("file_name", ""))).name if isinstance(image, dict) else ""
        found = _match(path, name, by_name, problems)
        if found is not None:
            entries[image.get("id")] = found
    problems.raise_any()
    out = {stem: painter.blank(*upright_size(images[stem])) for stem in entries.values()}
    regions = []
    for n, ann in enumerate(data["annotations"]):
        stem = entries.get(ann.get("image_id")) if isinstance(ann, dict) else None
        name = names.get(ann.get("category_id")) if isinstance(ann, dict) else None
        if stem is None or name is None:
            problems.add(f"{path}: annotation {n + 1}: its image_id or category_id is "
                         "not in the file")
            continue
        height, width = out[stem].shape[:2]
        region = problems.attempt(segmentation_mask, ann.get("segmentation"), height, width)
        if region is not None:
            regions.append((painter.order(name), -int(region.sum()), n, stem, name, region))
    problems.raise_any()
    for *_, stem, name, region in sorted(regions, key=lambda r: r[:3]):
        painter.paint(out[stem], name, region)
    return _complete(out, images, path)


def read_labelme(images: dict[str, Path], path: Path, info: DatasetInfo) -> Masks:
    """The masks LabelMe JSON files draw: ``path`` is one file or a folder of them."""
    files = sorted(Path(path).glob("*.json")) if Path(path).is_dir() else [Path(path)]
    painter, problems = Painter(info), Problems()
    by_name = {p.name: (stem, p) for stem, p in images.items()}
    out: Masks = {}
    for file in files:
        doc = _json(file)
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            problems.add(f"{file}: not a LabelMe file (needs a 'shapes' list)")
            continue
        shapes = [s for s in doc["shapes"] if isinstance(s, dict)]
        unknown_names(file, {str(s.get("label", "")) for s in shapes}, painter, problems)
        given = str(doc.get("imagePath") or f"{file.stem}.png")
        name = PureWindowsPath(given).name if "\\" in given else Path(given).name
        stem = _match(file, name, by_name, problems)
        if stem is None or problems:
            continue
        out[stem] = mask = painter.blank(*upright_size(images[stem]))
        for n, shape in enumerate(shapes):
            kind = str(shape.get("shape_type") or "polygon")
            try:
                region = shape_mask(kind, shape, *mask.shape[:2])
            except (DataError, TypeError, ValueError, IndexError) as exc:
                problems.add(f"{file}: shape {n + 1} ({kind}): {exc}")
                continue
            painter.paint(mask, str(shape.get("label", "")), region)
    problems.raise_any()
    return _complete(out, images, path)


READERS: dict[str, Callable[[dict[str, Path], Path, DatasetInfo], Masks]] = {
    "coco": read_coco, "labelme": read_labelme}


def guess_format(path: Path) -> str:
    """A folder or a JSON with ``shapes``: LabelMe; else COCO."""
    if Path(path).is_dir():
        return "labelme"
    data = _json(path)
    return "labelme" if isinstance(data, dict) and "shapes" in data else "coco"


# --------------------------------------------------------------------------- helpers
def _json(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from None


def _match(path: Path, name: str, by_name: dict[str, tuple[str, Path]],
           problems: Problems) -> str | None:
    """The stem of the ``--images`` file an annotation names."""
    if name in by_name:
        return by_name[name][0]
    problems.add(f"{path}: annotates {name or '(no file name)'}, which is not in the "
                 "--images folder (an annotation file for other images?)")
    return None


def _complete(out: Masks, images: dict[str, Path], source: Path) -> Masks:
    """Refuse images the annotations leave out (they would be added unlabeled)."""
    missing = sorted(str(images[s]) for s in set(images) - set(out))
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                           else "")
        raise DataError(f"{source}: has no annotation of {listed}; annotate them or leave "
                        "them out of --images")
    return out


def _size_problem(mask: np.ndarray, image: Path) -> str | None:
    size = upright_size(image)
    if mask.shape[:2] != size:
        return (f"{mask.shape[0]}×{mask.shape[1]} (H×W), its image {image.name} is "
                f"{size[0]}×{size[1]}")
    return None
