"""The ensemble's masks as pre-annotations that labeling tools import: COCO JSON (CVAT,
Label Studio, Roboflow), LabelMe JSON, and plain PNG masks.

Choices:

* **Objects**: every 4-connected region of a class (multilabel: of a label) is one
  annotation (COCO) or shape (LabelMe), so an annotator fixes or deletes objects one
  by one. Background (multiclass class 0) gets none.
* **Polygons where they are exact**: a region's outline is traced along the pixel
  borders (vertices on pixel corners, straight runs merged), so its polygon holds
  exactly the region's pixels by the pixel-centre rule :mod:`imseg.data.shapes` and
  ``imseg prepare coco|labelme`` read polygons with. A region with holes (a polygon
  would fill them) is written as RLE instead (COCO, ``iscrowd: 1`` as pycocotools and
  CVAT expect of uncompressed RLE) or as a LabelMe ``mask`` shape (a PNG of its box).
  Tools that fill polygons including their border pixels (PIL, pycocotools) grow each
  region by up to a pixel at its right and bottom edges.
* **Where the models disagree**: the inconsistency mask's regions are written as a
  category of their own, :data:`UNCERTAIN` (``imseg-uncertain``), after the classes
  (LabelMe: last, so drawn on top), for the annotator to look at and then delete.
  ``imseg prepare add`` ignores what is left of them.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from imseg.data.layout import DatasetInfo
from imseg.data.shapes import polygon_mask
from imseg.storage import atomic_write_text
from imseg.tasks import Task

UNCERTAIN = "imseg-uncertain"
"""The category (COCO) or label (LabelMe) of the regions where the models disagree."""
LABELME_VERSION = "5.5.0"


@dataclass
class Region:
    """One connected region of one class: its pixels within its box, and its polygon
    (in image coordinates) when exact."""

    name: str
    part: np.ndarray
    """Bool ``h×w``: the region's pixels within its box."""
    origin: tuple[int, int]
    """``(x, y)`` of the box's top-left corner in the image."""
    shape: tuple[int, int]
    """The image's ``(H, W)``."""
    polygon: list[float] | None
    """``[x1, y1, x2, y2, ...]`` on pixel corners; None when a polygon would lose pixels."""

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` of its pixels."""
        return (*self.origin, self.part.shape[1], self.part.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """Bool ``H×W``: the region in the whole image."""
        (x, y), (h, w) = self.origin, self.part.shape
        full = np.zeros(self.shape, bool)
        full[y : y + h, x : x + w] = self.part
        return full


def class_planes(task: Task, classes: list[str], mask: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """``(class name, bool H×W)`` of each class present in a disk-encoded mask (void and
    multiclass background left out)."""
    if task.kind == "multiclass":  # class ids on disk, 0 background
        for value, name in enumerate(classes[1:], start=1):
            yield name, mask == value
    else:
        label = task.encode_mask(mask)  # (L, H, W) 0/1, 255 void
        for channel, name in enumerate(classes):
            yield name, label[channel] == 1


def regions(name: str, mask: np.ndarray) -> list[Region]:
    """The 4-connected regions of a bool mask, each with its polygon when exact (each
    worked on within its box: an image may hold thousands of small regions)."""
    labelled, _ = ndimage.label(mask)
    found = []
    for index, window in enumerate(ndimage.find_objects(labelled), start=1):
        part = labelled[window] == index
        x, y = window[1].start, window[0].start
        polygon = exact_polygon(part)
        if polygon is not None:
            polygon = [v + (x if i % 2 == 0 else y) for i, v in enumerate(polygon)]
        found.append(Region(name, part, (x, y), mask.shape, polygon))
    return found


def exact_polygon(region: np.ndarray) -> list[float] | None:
    """The outline of a connected region as a flat polygon, or None when one polygon does
    not hold exactly its pixels (holes)."""
    loops = boundary_loops(region)
    if len(loops) != 1:
        return None
    polygon = [float(v) for point in loops[0] for v in point]
    if not np.array_equal(polygon_mask(polygon, *region.shape), region):
        return None
    return polygon


_STEPS = {(1, 0): 0, (0, 1): 1, (-1, 0): 2, (0, -1): 3}  # (dx, dy) → direction, clockwise


def boundary_loops(region: np.ndarray) -> list[list[tuple[int, int]]]:
    """The closed outlines of a bool mask along pixel borders, as corner points ``(x, y)``,
    interior on the right (clockwise on screen), straight runs merged. Where two
    outlines meet at a corner, each turns right, so regions touching only at a corner
    stay apart (4-connectivity)."""
    padded = np.pad(region, 1)
    inside = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    sides = [  # (outside neighbour, start corner, end corner) of each pixel side
        (~padded[:-2, 1:-1] & inside, (0, 0), (1, 0)),  # top, to the right
        (~padded[1:-1, 2:] & inside, (1, 0), (1, 1)),  # right, down
        (~padded[2:, 1:-1] & inside, (1, 1), (0, 1)),  # bottom, to the left
        (~padded[1:-1, :-2] & inside, (0, 1), (0, 0)),  # left, up
    ]
    for border, (sx, sy), (ex, ey) in sides:
        for y, x in zip(*np.nonzero(border), strict=True):
            edges.setdefault((int(x) + sx, int(y) + sy), []).append((int(x) + ex, int(y) + ey))
    loops = []
    while edges:
        start = next(iter(edges))
        loop, here, heading = [start], start, None
        while True:
            ends = edges[here]
            end = ends.pop(_right_turn(here, ends, heading))
            if not ends:
                del edges[here]
            heading = _STEPS[(end[0] - here[0], end[1] - here[1])]
            if end == start:
                break
            loop.append(end)
            here = end
        loops.append(_corners(loop))
    return loops


def _right_turn(here: tuple[int, int], ends: list[tuple[int, int]], heading: int | None) -> int:
    """Which of a corner's outgoing edges to follow: the sharpest right turn."""
    if len(ends) == 1 or heading is None:
        return 0
    turns = [(_STEPS[(e[0] - here[0], e[1] - here[1])] - heading) % 4 for e in ends]
    return turns.index(1) if 1 in turns else 0


def _corners(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A closed loop of unit steps without the points in the middle of straight runs."""
    n = len(loop)
    kept = []
    for i, (x, y) in enumerate(loop):
        (px, py), (nx, ny) = loop[i - 1], loop[(i + 1) % n]
        if (x - px, y - py) != (nx - x, ny - y):
            kept.append((x, y))
    return kept


# ------------------------------------------------------------------------------- RLE
def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed run lengths of a bool mask: column-major, background first."""
    flat = np.asarray(mask, bool).T.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat.size and flat[0] else counts


# --------------------------------------------------------------------------- images
@dataclass
class Preannotation:
    """One picked image's pre-annotation: its file name (in the images folder), size,
    and regions (classes first, then :data:`UNCERTAIN`)."""

    file_name: str
    height: int
    width: int
    regions: list[Region]


def preannotation(file_name: str, mask: np.ndarray, im: np.ndarray, info: DatasetInfo
                  ) -> Preannotation:
    """The regions of an image's disk-encoded ensemble mask and of its IM (bool)."""
    task = info.task_obj
    found = [r for name, plane in class_planes(task, info.classes, mask)
             for r in regions(name, plane)]
    found += regions(UNCERTAIN, im)
    return Preannotation(file_name, mask.shape[0], mask.shape[1], found)


def categories(info: DatasetInfo) -> list[str]:
    """The category names written: the data set's classes (multiclass: not class 0),
    then :data:`UNCERTAIN`."""
    named = info.classes[1:] if info.task == "multiclass" else list(info.classes)
    return [*named, UNCERTAIN]


def coco_document(items: list[Preannotation], info: DatasetInfo) -> dict:
    """A COCO instances document of the images' regions."""
    ids = {name: i for i, name in enumerate(categories(info), start=1)}
    images, annotations = [], []
    for image_id, item in enumerate(items, start=1):
        images.append({"id": image_id, "file_name": item.file_name, "height": item.height,
                       "width": item.width})
        for region in item.regions:
            exact = region.polygon is not None
            segmentation = ([region.polygon] if exact else
                            {"size": [item.height, item.width], "counts": rle_counts(region.mask)})
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": ids[region.name], "segmentation": segmentation,
                "area": int(region.part.sum()), "bbox": list(region.box),
                "iscrowd": 0 if exact else 1})
    return {"info": {"description": "imseg suggest: the ensemble's masks to correct; "
                                    f"{UNCERTAIN}: where its models disagree"},
            "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in ids.items()]}


def labelme_document(item: Preannotation, image_path: str) -> dict:
    """A LabelMe document of one image's regions; ``image_path`` relative to the JSON."""
    return {"version": LABELME_VERSION, "flags": {},
            "shapes": [_labelme_shape(region) for region in item.regions],
            "imagePath": image_path, "imageData": None,
            "imageHeight": item.height, "imageWidth": item.width}


def _labelme_shape(region: Region) -> dict:
    """A polygon shape, or a ``mask`` shape (a PNG of the region's box, whose corners are
    its two points) where a polygon would lose pixels."""
    shape = {"label": region.name, "group_id": None, "description": "", "flags": {},
             "mask": None}
    if region.polygon is not None:
        points = np.asarray(region.polygon).reshape(-1, 2).tolist()
        return {**shape, "points": points, "shape_type": "polygon"}
    x, y, w, h = region.box
    buffer = io.BytesIO()
    Image.fromarray(region.part.astype(np.uint8) * 255).save(
        buffer, format="PNG")
    return {**shape, "points": [[x, y], [x + w - 1, y + h - 1]], "shape_type": "mask",
            "mask": base64.b64encode(buffer.getvalue()).decode()}


def write_coco(path: Path, items: list[Preannotation], info: DatasetInfo) -> None:
    atomic_write_text(path, json.dumps(coco_document(items, info)))


def write_labelme(folder: Path, items: list[Preannotation], info: DatasetInfo,
                  images_folder: str = "../images") -> None:
    """One ``<stem>.json`` per image and LabelMe's ``labels.txt`` (class order)."""
    for item in items:
        document = labelme_document(item, f"{images_folder}/{item.file_name}")
        atomic_write_text(folder / f"{Path(item.file_name).stem}.json", json.dumps(document))
    names = ["_background_"] + categories(info) if info.task == "multiclass" else categories(info)
    atomic_write_text(folder / "labels.txt", "\n".join(names) + "\n")
