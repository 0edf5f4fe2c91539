"""imseg prepare coco: COCO JSON polygons and RLE drawn into class-id masks, classes from
the used categories, overlaps, problems named in one error, unlisted images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prepare_faults import fill_disk, snapshot

from imseg.cli import main
from imseg.data.layout import read_info
from imseg.data.sources.coco import (
    prepare_coco,
    rle_counts_from_string,
    rle_mask,
    segmentation_mask,
)
from imseg.data.sources.folder import prepare_folder
from imseg.errors import DataError, StorageError

# masks and their compressed RLE strings as pycocotools 2.0 encodes them
RLE_SMALL = "5160L2ON12ON12ON12ON500001"
RLE_LARGE = ":2l00000000_4d0mJ000000000000000000000000000000000000000000000000000g2"


def _small() -> np.ndarray:
    m = np.zeros((7, 9), bool)
    m[1:4, 2:6] = True
    m[5, :] = True
    m[6, 8] = True
    return m


def _large() -> np.ndarray:
    m = np.zeros((30, 40), bool)
    m[3:25, 10:37] = True
    m[10:12, 0:5] = True
    return m


def test_compressed_rle_strings_decode_as_pycocotools_encoded_them():
    assert np.array_equal(rle_mask(rle_counts_from_string(RLE_SMALL), 7, 9), _small())
    assert np.array_equal(rle_mask(rle_counts_from_string(RLE_LARGE), 30, 40), _large())
    counts = [5, 1, 6, 1, 2, 3, 1, 1, 2, 3, 1, 1, 2, 3, 1, 1, 2, 3, 1, 1, 6, 1, 6, 1, 6, 2]
    assert rle_counts_from_string(RLE_SMALL) == counts  # the uncompressed form
    assert np.array_equal(segmentation_mask({"size": [7, 9], "counts": counts}, 7, 9), _small())
    with pytest.raises(DataError, match="do not cover"):
        rle_mask(counts[:-1], 7, 9)


def test_an_objects_polygons_are_a_union():
    two = segmentation_mask([[0, 0, 2, 0, 2, 2, 0, 2], [4, 4, 6, 4, 6, 6, 4, 6]], 6, 6)
    assert two.sum() == 8
    with pytest.raises(DataError, match="at least 3 points"):
        segmentation_mask([[0, 0, 2, 0]], 6, 6)


# ---------------------------------------------------------------------- a COCO set
def _box(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _coco_set(root: Path, n: int = 10, categories=None, skip_file: bool = False) -> Path:
    """``n`` 32×48 images; image k has a 'cat' box, even ones a 'dog' RLE lying inside it
    (drawn on top: smaller), image 0 no annotation at all."""
    images, annotations = [], []
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        name = f"photo_{k}.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
            root / "images" / name)
        images.append({"id": 100 + k, "file_name": f"some/export/path/{name}", "height": 32,
                       "width": 48})
        if k == 0:
            continue
        annotations.append({"id": len(annotations), "image_id": 100 + k, "category_id": 1,
                            "segmentation": [_box(4 + k, 2, 30 + k, 20)], "iscrowd": 0})
        if k % 2 == 0:
            dog = np.zeros((32, 48), bool)
            dog[5:12, 10:20] = True
            runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, dog.T.ravel().astype(int), -1])))
            counts = runs.tolist() if not dog.T.ravel()[0] else [0, *runs.tolist()]
            annotations.append({"id": len(annotations), "image_id": 100 + k, "category_id": 2,
                                "segmentation": {"size": [32, 48], "counts": counts},
                                "iscrowd": 1})
    cats = categories or [{"id": 0, "name": "my-dataset"}, {"id": 1, "name": "cat"},
                          {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
    (root / "ann.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": cats}))
    return root


def _expected(k: int, dogs: bool = True) -> np.ndarray:
    want = np.zeros((32, 48), np.uint8)
    if k:
        want[2:20, 4 + k : 30 + k] = 1
    if dogs and k and k % 2 == 0:
        want[5:12, 10:20] = 2
    return want


def _written(out: Path) -> dict[int, np.ndarray]:
    return {int(p.stem.split("_")[1]): np.asarray(Image.open(p))
            for p in out.glob("*/masks/*.png")}


def test_a_coco_export_becomes_class_id_masks_with_the_used_categories(tmp_path, capsys):
    src = _coco_set(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["prepare", "coco", "--images", str(src / "images"), "--annotations",
                 str(src / "ann.json"), "--out", str(out), "--labeled-fraction", "0.5"]) == 0
    assert "prepared" in capsys.readouterr().out
    info = read_info(out)
    assert info.task == "multiclass" and info.classes == ["background", "cat", "dog"]
    written = _written(out)
    assert sorted(written) == list(range(10))
    for k, mask in written.items():
        assert np.array_equal(mask, _expected(k)), k


def test_one_category_is_binary(tmp_path):
    src = _coco_set(tmp_path / "src", categories=[{"id": 1, "name": "cat"},
                                                  {"id": 2, "name": "cat-2"}])
    data = json.loads((src / "ann.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] == 1]
    (src / "ann.json").write_text(json.dumps(data))
    info = prepare_coco(images=src / "images", annotations=src / "ann.json",
                        out=tmp_path / "out")
    assert info.task == "binary" and info.classes == ["cat"]
    for k, mask in _written(tmp_path / "out").items():
        assert np.array_equal(mask, _expected(k, dogs=False) * 255)


def test_problems_are_named_together_before_anything_is_written(tmp_path):
    src = _coco_set(tmp_path / "src")
    data = json.loads((src / "ann.json").read_text())
    data["images"][1]["height"] = 40  # not the file's size
    data["images"].append({"id": 999, "file_name": "gone.jpg", "height": 32, "width": 48})
    data["annotations"] += [
        {"id": 50, "image_id": 103, "category_id": 1, "bbox": [1, 2, 3, 4]},  # boxes only
        {"id": 51, "image_id": 104, "category_id": 7, "segmentation": [_box(0, 0, 4, 4)]},
        {"id": 52, "image_id": 5555, "category_id": 1, "segmentation": [_box(0, 0, 4, 4)]},
    ]
    (src / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "out")
    text = str(err.value)
    ann = src / "ann.json"
    assert text.startswith("5 problems in the input files (nothing was written):")
    for line in (f"{ann}: image 'some/export/path/photo_1.jpg': the JSON says 40×48 (H×W), "
                 "the file is 32×48",
                 f"{ann}: image 'gone.jpg': no file gone.jpg in {src / 'images'}",
                 f"{ann}: annotation 50: no segmentation (polygons or RLE)",
                 f"{ann}: annotation 51: category_id 7 is not a category",
                 f"{ann}: annotation 52: image_id 5555 is not among the JSON's images"):
        assert line in text, line
    assert not (tmp_path / "out").exists()


def test_folder_images_the_json_does_not_list_can_be_the_unlabeled_ones(tmp_path):
    src = _coco_set(tmp_path / "src")
    for k in range(3):
        Image.fromarray(np.full((32, 48, 3), 40 * k, np.uint8)).save(
            src / "images" / f"new_{k}.png")
    with pytest.raises(DataError, match=r"new_0.png: no mask named new_0\.\* .*pass --unlabeled"):
        prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "bad")
    info = prepare_coco(images=src / "images", annotations=src / "ann.json",
                        out=tmp_path / "out", unlabeled=src / "images", labeled_fraction=1.0)
    assert info.counts == {"train_labeled": 8, "train_unlabeled": 3, "val": 1, "test": 1}


DSB = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "dsb2018"


def test_dsb2018_masks_as_coco_rle_prepare_as_the_mask_folder_does(tmp_path):
    """Real masks of mixed sizes, turned into a COCO JSON (uncompressed RLE, one object
    per image), give the very masks `prepare folder` makes from the PNGs."""
    if not DSB.is_dir():
        pytest.skip("shared dsb2018 data not present")
    stems = sorted(p.stem for p in (DSB / "images").glob("*.png"))[:12]
    images, annotations = [], []
    (tmp_path / "images").mkdir()
    for k, stem in enumerate(stems):
        (tmp_path / "images" / f"{stem}.png").symlink_to(DSB / "images" / f"{stem}.png")
        mask = np.asarray(Image.open(DSB / "masks" / f"{stem}.png")) > 0
        h, w = mask.shape
        flat = mask.T.ravel()  # COCO runs go down the columns
        edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
        runs = np.diff(np.r_[0, edges, flat.size]).tolist()
        counts = [0, *runs] if flat[0] else runs
        images.append({"id": k, "file_name": f"{stem}.png", "height": h, "width": w})
        annotations.append({"id": k, "image_id": k, "category_id": 1, "iscrowd": 1,
                            "segmentation": {"size": [h, w], "counts": counts}})
    (tmp_path / "ann.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 1, "name": "nucleus"}]}))
    (tmp_path / "masks").mkdir()
    for stem in stems:
        (tmp_path / "masks" / f"{stem}.png").symlink_to(DSB / "masks" / f"{stem}.png")
    options = dict(size=(64, 64), labeled_fraction=0.2, seed=1)
    coco = prepare_coco(images=tmp_path / "images", annotations=tmp_path / "ann.json",
                        out=tmp_path / "coco", **options)
    folder = prepare_folder(images=tmp_path / "images", masks=tmp_path / "masks",
                            out=tmp_path / "folder", **options)
    assert coco.counts == folder.counts and coco.classes == ["nucleus"]
    a, b = _written_by_stem(tmp_path / "coco"), _written_by_stem(tmp_path / "folder")
    assert sorted(a) == sorted(b) == sorted(stems)
    for stem in stems:
        assert np.array_equal(a[stem], b[stem]), stem


def _written_by_stem(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in out.glob("*/masks/*.png")}


def test_string_ids_a_background_category_and_twice_listed_images(tmp_path):
    src = _coco_set(tmp_path / "src", categories=[
        {"id": "0", "name": "Background"}, {"id": "1", "name": "cat"}, {"id": "2", "name": "dog"}])
    data = json.loads((src / "ann.json").read_text())
    for ann in data["annotations"]:
        ann["category_id"] = str(ann["category_id"])
    data["annotations"].append({"id": 90, "image_id": 103, "category_id": "0",
                                "segmentation": [_box(0, 0, 48, 32)]})  # background, drawn first
    (src / "ann.json").write_text(json.dumps(data))
    info = prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "a")
    assert info.classes == ["background", "cat", "dog"]
    for k, mask in _written(tmp_path / "a").items():
        assert np.array_equal(mask, _expected(k)), k

    data["images"].append({**data["images"][2], "id": 777})  # photo_2.jpg again
    (src / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"image 'some/export/path/photo_2.jpg' \(id 777\): "
                                        r"listed twice \(id 102 names the same file\)"):
        prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "b")


def test_messages_name_the_json_not_a_temporary_folder(tmp_path):
    src = _coco_set(tmp_path / "src")
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(src / "images" / "extra.png")
    with pytest.raises(DataError) as err:
        prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "o")
    assert (f"extra.png: no mask named extra.* in the annotations of {src / 'ann.json'}"
            in str(err.value))
    assert "imseg-drawn-masks" not in str(err.value)


def test_a_size_the_exif_orientation_turns_is_explained(tmp_path):
    src = _coco_set(tmp_path / "src", n=10)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(src / "images" / "photo_3.jpg",
                                                          exif=exif)  # shown 48 high
    with pytest.raises(DataError, match=r"the JSON says 32×48 \(H×W\), the file is 48×32; "
                                        r"photo_3.jpg is stored 32×48 and turned upright"):
        prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "o")


def test_ids_written_as_strings_or_badly_are_read_or_named(tmp_path):
    src = _coco_set(tmp_path / "src")
    data = json.loads((src / "ann.json").read_text())
    for image in data["images"]:
        image["id"] = str(image["id"])  # images "101", annotations 101
    data["annotations"].append({"id": 91, "image_id": [1], "category_id": "--1",
                                "segmentation": [_box(0, 0, 4, 4)]})
    (src / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotation 91: image_id \[1\] is not among"):
        prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "a")
    data["annotations"].pop()
    (src / "ann.json").write_text(json.dumps(data))
    prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "b")
    for k, mask in _written(tmp_path / "b").items():
        assert np.array_equal(mask, _expected(k)), k


def test_drawn_masks_are_cut_into_tiles_as_folder_masks_are(tmp_path, capsys):
    src = _coco_set(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["prepare", "coco", "--images", str(src / "images"), "--annotations",
                 str(src / "ann.json"), "--out", str(out), "--labeled-fraction", "0.5",
                 "--size", "16", "16", "--tile"]) == 0
    assert "16×16 tiles (from 10 images)" in capsys.readouterr().out
    assert read_info(out).tile_scale == 1.0
    tiles = sorted(out.glob("*/masks/*.png"))
    assert len(tiles) > 10
    for path in tiles:
        stem, pos = path.stem.rsplit("__", 1)
        y, x = (int(p[1:]) for p in pos.split("_"))
        want = _expected(int(stem.split("_")[1]))[y : y + 16, x : x + 16]
        assert np.array_equal(np.asarray(Image.open(path)), want), path.name


def test_overwrite_failing_part_way_keeps_the_old_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare_coco(images=_coco_set(tmp_path / "a", n=10) / "images",
                 annotations=tmp_path / "a" / "ann.json", out=out)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    new = _coco_set(tmp_path / "b", n=8)
    fill_disk(monkeypatch, 8 + 4)  # the 8 drawn masks, then 4 of the set
    with pytest.raises(StorageError, match="No space left on device") as err:
        prepare_coco(images=new / "images", annotations=new / "ann.json", out=out,
                     size=(16, 16), overwrite=True)
    assert f"{out} is as it was" in str(err.value)
    assert snapshot(out) == before


def test_a_full_temporary_folder_while_drawing_is_one_message(tmp_path, monkeypatch):
    src = _coco_set(tmp_path / "src", n=6)
    fill_disk(monkeypatch, 2)
    with pytest.raises(StorageError, match="nothing was written to .*TMPDIR") as err:
        prepare_coco(images=src / "images", annotations=src / "ann.json", out=tmp_path / "out")
    assert "imseg-drawn-masks-" in str(err.value) and ".png: No space left" in str(err.value)
    assert not (tmp_path / "out").exists()
