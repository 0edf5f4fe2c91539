"""imseg suggest's pre-annotations as the annotation tools' own readers read them.

* **COCO** through pycocotools (COCO's reference API, which CVAT, Label Studio and
  Roboflow follow; in the dev extra): each annotation's ``annToMask``.
* **LabelMe** through the LabelMe package (``pip install labelme``; it pulls in PyQt5 and
  ONNX Runtime, too heavy for the dev extra, so its test skips where it is absent): each
  file read by LabelMe's ``LabelFile`` (image found through ``imagePath``, size
  checked), its shapes rasterised by ``labelme.utils.shapes_to_label``.

Every class and the ``imseg-uncertain`` regions must come back as the PNG masks suggest
wrote. Both tools fill polygons border pixels included, so their regions may grow by one
pixel to the right and bottom (annotations.py's module doc); nothing else may differ.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from active_helpers import random_run
from PIL import Image

from imseg.active.annotations import UNCERTAIN, class_planes
from imseg.active.suggest import suggest
from imseg.data.layout import DatasetInfo, read_info
from imseg.data.sources.sample import prepare_sample
from imseg.predict import run_models

pytestmark = pytest.mark.filterwarnings(  # pycocotools 2.0's own call into NumPy 2
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture(scope="module", params=["binary", "multiclass", "multilabel"])
def suggested(request, tmp_path_factory) -> tuple[Path, DatasetInfo]:
    """suggest's output (4 picks) on a sample set of each kind, and the set's info."""
    tmp = tmp_path_factory.mktemp(f"readers_{request.param}")
    data = tmp / "data"
    prepare_sample(request.param, data, n=16, size=32, seed=3, labeled_fraction=0.25)
    run = random_run(data, tmp / "run")
    out = tmp / "suggest"
    suggest(run_models(run), run, out, k=4, min_distance=0)
    return out, read_info(data)


def grown(plane: np.ndarray) -> np.ndarray:
    """``plane`` and its pixels shifted one to the right, down, and both."""
    out = plane.copy()
    out[:, 1:] |= plane[:, :-1]
    out[1:, :] |= plane[:-1, :]
    out[1:, 1:] |= plane[:-1, :-1]
    return out


def expected_planes(out: Path, info: DatasetInfo, stem: str) -> list[tuple[str, np.ndarray]]:
    """Each class's pixels and the uncertain ones, from suggest's PNGs of ``stem``."""
    mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
    uncertain = np.asarray(Image.open(out / "uncertain" / f"{stem}.png")) > 0
    return [*class_planes(info.task_obj, info.classes, mask), (UNCERTAIN, uncertain)]


def assert_same_regions(read: np.ndarray, plane: np.ndarray, where: str) -> None:
    assert (read >= plane).all(), f"{where}: the tool lost pixels"
    assert (read <= grown(plane)).all(), f"{where}: the tool added pixels"


def test_pycocotools_reads_the_coco_file_as_the_masks_suggest_wrote(suggested):
    coco_api = pytest.importorskip("pycocotools.coco", reason="pycocotools (dev extra)")
    out, info = suggested
    coco = coco_api.COCO(str(out / "coco.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert len(coco.getImgIds()) == 4
    for image in coco.loadImgs(coco.getImgIds()):
        stem = Path(image["file_name"]).stem
        shape = (image["height"], image["width"])
        for name, plane in expected_planes(out, info, stem):
            read = np.zeros(shape, bool)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
                if names[ann["category_id"]] == name:
                    read |= coco.annToMask(ann).astype(bool)
            assert_same_regions(read, plane, f"{image['file_name']} {name}")


def test_labelme_reads_its_files_as_the_masks_suggest_wrote(suggested):
    labelme = pytest.importorskip("labelme", reason="the LabelMe package (pip install labelme)")
    shapes_to_label = importlib.import_module("labelme.utils").shapes_to_label
    out, info = suggested
    files = sorted((out / "labelme").glob("*.json"))
    assert len(files) == 4
    for path in files:
        label_file = labelme.LabelFile(str(path))  # LabelMe's reader: finds and checks the image
        image_path = getattr(label_file, "image_path", None) or label_file.imagePath
        shape = np.asarray(Image.open(path.parent / image_path)).shape[:2]
        for name, plane in expected_planes(out, info, path.stem):
            shapes = [s for s in label_file.shapes if s["label"] == name]
            read = (shapes_to_label(shape, shapes, {name: 1})[0] > 0 if shapes
                    else np.zeros(shape, bool))
            assert_same_regions(read, plane, f"{path.name} {name}")
