"""imseg prepare labelme: one JSON per image drawn in file order, classes from labels.txt
or the labels found, void, skipped lines, images found by imagePath or stem."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prepare_faults import fill_disk, snapshot

from imseg.cli import main
from imseg.data.layout import read_info
from imseg.data.sources.labelme import prepare_labelme
from imseg.errors import DataError, StorageError
from imseg.tasks import DISK_MULTICLASS_VOID


def _mask_png(part: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(part.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _labelme_set(root: Path, n: int = 10, json_dir: Path | None = None) -> Path:
    """``n`` 32×48 images; each JSON: a 'leaf' rectangle, a 'bug' polygon drawn over it,
    a 'bug' circle, a void square, a line (no area) and, in image 0, a 'bug' mask shape."""
    (root / "images").mkdir(parents=True)
    json_dir = json_dir or root / "images"
    json_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
            root / "images" / f"img{k}.jpg")
        shapes = [
            {"label": "leaf", "points": [[2, 2], [20 + k, 16]], "shape_type": "rectangle"},
            {"label": "bug", "points": [[4, 4], [10, 4], [10, 10], [4, 10]],
             "shape_type": "polygon"},
            {"label": "bug", "points": [[30, 24], [30, 27]], "shape_type": "circle"},
            {"label": "__ignore__", "points": [[0, 28], [4, 32]], "shape_type": "rectangle"},
            {"label": "leaf", "points": [[0, 0], [39, 31]], "shape_type": "line"},
        ]
        if k == 0:
            part = np.zeros((4, 6), bool)
            part[1:3, 2:5] = True
            shapes.append({"label": "bug", "points": [[30, 2], [35, 5]], "shape_type": "mask",
                           "mask": _mask_png(part)})
        doc = {"version": "5.4.1", "shapes": shapes,
               "imagePath": f"..\\images\\img{k}.jpg" if k == 1 else f"img{k}.jpg",
               "imageData": None, "imageHeight": 32, "imageWidth": 48}
        (json_dir / f"img{k}.json").write_text(json.dumps(doc))
    return root


def _expected(k: int, bug: int, leaf: int, void: int) -> np.ndarray:
    want = np.zeros((32, 48), np.uint8)
    want[2:16, 2 : 20 + k] = leaf
    want[4:10, 4:10] = bug
    yy, xx = np.mgrid[:32, :48]
    want[(xx + 0.5 - 30) ** 2 + (yy + 0.5 - 24) ** 2 < 9] = bug
    want[28:32, 0:4] = void
    if k == 0:
        want[3:5, 32:35] = bug
    return want


def _written(out: Path) -> dict[int, np.ndarray]:
    return {int(p.stem[3:]): np.asarray(Image.open(p)) for p in out.glob("*/masks/*.png")}


def test_shapes_are_drawn_in_order_with_sorted_labels_and_void(tmp_path, capsys):
    src = _labelme_set(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["prepare", "labelme", "--images", str(src / "images"), "--out", str(out),
                 "--labeled-fraction", "0.5"]) == 0
    assert "skipped shapes without area: 10 line" in capsys.readouterr().out
    info = read_info(out)
    assert info.task == "multiclass" and info.classes == ["background", "bug", "leaf"]
    assert info.extra["skipped_shapes"] == {"line": 10} and info.extra["ignore_index"] == 255
    written = _written(out)
    assert sorted(written) == list(range(10))
    for k, mask in written.items():
        assert np.array_equal(mask, _expected(k, bug=1, leaf=2, void=DISK_MULTICLASS_VOID)), k


def test_labels_txt_orders_the_classes_and_json_files_may_live_apart(tmp_path):
    src = _labelme_set(tmp_path / "src", json_dir=tmp_path / "src" / "json")
    (src / "labels.txt").write_text("__ignore__\n_background_\nleaf\nbug\n")
    info = prepare_labelme(images=src / "images", annotations=src / "json",
                           labels=src / "labels.txt", out=tmp_path / "out")
    assert info.classes == ["background", "leaf", "bug"]
    for k, mask in _written(tmp_path / "out").items():
        assert np.array_equal(mask, _expected(k, bug=2, leaf=1, void=DISK_MULTICLASS_VOID))
    (src / "labels.txt").write_text("_background_\nleaf\n")
    with pytest.raises(DataError, match=r"does not name the labels \['bug'\]"):
        prepare_labelme(images=src / "images", annotations=src / "json",
                        labels=src / "labels.txt", out=tmp_path / "out2")


def test_one_label_is_binary(tmp_path):
    src = _labelme_set(tmp_path / "src")
    for path in (src / "images").glob("*.json"):
        doc = json.loads(path.read_text())
        doc["shapes"] = [s for s in doc["shapes"] if s["label"] == "leaf"]
        path.write_text(json.dumps(doc))
    info = prepare_labelme(images=src / "images", out=tmp_path / "out")
    assert info.task == "binary" and info.classes == ["leaf"]
    for k, mask in _written(tmp_path / "out").items():
        want = np.zeros((32, 48), np.uint8)
        want[2:16, 2 : 20 + k] = 255
        assert np.array_equal(mask, want)


def test_problems_and_images_without_json(tmp_path):
    src = _labelme_set(tmp_path / "src")
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(src / "images" / "extra.png")
    with pytest.raises(DataError, match=r"extra.png: no mask named extra\.\* .*--unlabeled"):
        prepare_labelme(images=src / "images", out=tmp_path / "bad")
    info = prepare_labelme(images=src / "images", out=tmp_path / "out",
                           unlabeled=src / "images", labeled_fraction=1.0)
    assert info.counts == {"train_labeled": 8, "train_unlabeled": 1, "val": 1, "test": 1}

    doc = json.loads((src / "images" / "img2.json").read_text())
    doc["imageHeight"] = 64
    doc["shapes"].append({"label": "bug", "points": [[1, 1], [2, 2]], "shape_type": "polygon"})
    (src / "images" / "img2.json").write_text(json.dumps(doc))
    doc = json.loads((src / "images" / "img3.json").read_text())
    doc["shapes"].append({"label": "bug", "points": [[1, 1], [2, 2]], "shape_type": "polygon"})
    (src / "images" / "img3.json").write_text(json.dumps(doc))
    clean = json.loads((src / "images" / "img5.json").read_text())
    (src / "images" / "copy.json").write_text(json.dumps({**clean, "imagePath": "img4.jpg"}))
    (src / "images" / "gone.json").write_text(json.dumps({**clean, "imagePath": "gone.jpg"}))
    with pytest.raises(DataError) as err:
        prepare_labelme(images=src / "images", out=tmp_path / "bad2")
    text = str(err.value)
    assert text.startswith("4 problems in the input files (nothing was written):")
    folder = src / "images"
    for line in (f"{folder / 'img2.json'}: says 64×48 (H×W), its image img2.jpg is 32×48",
                 f"{folder / 'img3.json'}: shape 6 (polygon 'bug'): a polygon needs at least 3",
                 f"{folder / 'img4.json'}: describes img4.jpg, as copy.json does",
                 f"{folder / 'gone.json'}: its image 'gone.jpg' is not in {folder}"):
        assert line in text, line


def test_points_make_no_class_background_is_class_0_and_masks_are_cropped(tmp_path):
    src = _labelme_set(tmp_path / "src", n=10)
    for path in (src / "images").glob("*.json"):
        doc = json.loads(path.read_text())
        part = np.ones((4, 4), bool)
        doc["shapes"] = [
            {"label": "background", "points": [[0, 0], [48, 32]], "shape_type": "rectangle"},
            {"label": "leaf", "points": [[2, 2], [20, 16]], "shape_type": "rectangle"},
            {"label": "centre", "points": [[5, 5]], "shape_type": "point"},
            {"label": "leaf", "points": [[-2, 30], [2, 34]], "shape_type": "mask",
             "mask": _mask_png(part)},  # its box reaches past the left and bottom edges
        ]
        path.write_text(json.dumps(doc))
    info = prepare_labelme(images=src / "images", out=tmp_path / "out")
    assert info.task == "binary" and info.classes == ["leaf"]  # no empty 'centre' class
    want = np.zeros((32, 48), np.uint8)
    want[2:16, 2:20] = 255
    want[30:32, 0:2] = 255  # the part of the mask's box inside the image
    for mask in _written(tmp_path / "out").values():
        assert np.array_equal(mask, want)


def test_ignore_shapes_are_void_even_when_labels_txt_leaves_it_out(tmp_path):
    src = _labelme_set(tmp_path / "src")
    (src / "labels.txt").write_text("_background_\nbug\nleaf\n")
    info = prepare_labelme(images=src / "images", labels=src / "labels.txt", out=tmp_path / "o")
    assert info.extra["ignore_index"] == 255
    for k, mask in _written(tmp_path / "o").items():
        assert np.array_equal(mask, _expected(k, bug=1, leaf=2, void=DISK_MULTICLASS_VOID))


def test_overwrite_failing_part_way_keeps_the_old_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare_labelme(images=_labelme_set(tmp_path / "a") / "images", out=out)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    new = _labelme_set(tmp_path / "b", n=8)
    fill_disk(monkeypatch, 8 + 4)  # the 8 drawn masks, then 4 of the set
    with pytest.raises(StorageError, match="No space left on device") as err:
        prepare_labelme(images=new / "images", out=out, size=(16, 16), overwrite=True)
    assert f"{out} is as it was" in str(err.value)
    assert snapshot(out) == before
