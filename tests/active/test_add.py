"""``imseg prepare add``: suggested pre-annotations come back as labels of the same
pixels; val/test and unknown images are refused by name; a failure changes nothing; a
run of the earlier version refuses to resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from active_helpers import prepared_from_sources, random_run
from PIL import Image

from imseg.active import add as add_module
from imseg.active.add import add_labels
from imseg.active.annotations import UNCERTAIN
from imseg.active.suggest import suggest
from imseg.cli import main
from imseg.data.layout import read_info
from imseg.data.sources.sample import prepare_sample
from imseg.errors import ConfigError, DataError, StorageError
from imseg.predict import run_models


@pytest.fixture(scope="session", params=["binary", "multiclass", "multilabel"])
def sample_set(request, tmp_path_factory) -> Path:
    """A prepared sample set of each kind (16 train images, 4 labeled), read-only."""
    out = tmp_path_factory.mktemp(f"active_{request.param}") / "data"
    prepare_sample(request.param, out, n=16, size=32, seed=3, labeled_fraction=0.25)
    return out


def tree_digest(root: Path) -> str:
    """Every file's name and bytes under ``root``."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def suggested(data: Path, tmp_path: Path, k: int = 3) -> Path:
    run = random_run(data, tmp_path / "run")
    out = tmp_path / "suggest"
    suggest(run_models(run), run, out, k=k, min_distance=0)
    return out


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


@pytest.mark.parametrize("labels", ["masks", "coco", "labelme"])
def test_suggested_masks_come_back_as_the_labels_of_the_picks(sample_set, tmp_path, labels):
    data = tmp_path / "data"
    shutil.copytree(sample_set, data)
    out = suggested(data, tmp_path)
    before = read_info(data)
    kept = {split: tree_digest(data / split) for split in ("val", "test")}
    source = {"masks": dict(masks=out / "masks"), "coco": dict(annotations=out / "coco.json"),
              "labelme": dict(annotations=out / "labelme")}[labels]
    info = add_labels(data, out / "images", **source)
    picks = pngs(out / "masks")
    labeled = pngs(data / "train_labeled" / "masks")
    assert all(np.array_equal(labeled[stem], mask) for stem, mask in picks.items())
    assert not set(picks) & {p.stem for p in (data / "train_unlabeled" / "images").iterdir()}
    assert info.counts["train_labeled"] == before.counts["train_labeled"] + 3
    assert info.counts["train_unlabeled"] == before.counts["train_unlabeled"] - 3
    assert {split: tree_digest(data / split) for split in ("val", "test")} == kept
    assert read_info(data).extra["version"] == 2
    assert read_info(data).extra["history"][-1]["added"] == sorted(picks)
    assert read_info(data).chosen_by == ["im"]  # suggest's score, read from its suggest.yaml


def test_images_are_matched_by_pixels_not_names_and_others_are_refused(tmp_path):
    data = prepared_from_sources(tmp_path, tile=False)  # 64×48 sources resized to 32×32
    unlabeled = sorted((data / "train_unlabeled" / "images").glob("*.png"))
    val = sorted((data / "val" / "images").glob("*.png"))[0]
    given = tmp_path / "given"
    masks = tmp_path / "given_masks"
    given.mkdir()
    masks.mkdir()
    original = tmp_path / "src" / "images" / f"{unlabeled[0].stem}.png"
    shutil.copy(original, given / "renamed.png")  # the source file, under another name
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(masks / "renamed.png")
    before = tree_digest(data)
    for name, path in [("val_copy", val), ("noise", None)]:
        image = (np.asarray(Image.open(path)) if path else
                 np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8))
        Image.fromarray(image).save(given / f"{name}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / f"{name}.png")
    with pytest.raises(DataError) as caught:
        add_labels(data, given, masks=masks)
    message = str(caught.value)
    assert f"val_copy.png: is the val image {val.stem}" in message
    assert "noise.png: not an image of" in message and "renamed.png" not in message
    assert tree_digest(data) == before
    for name in ("val_copy", "noise"):
        (given / f"{name}.png").unlink()
        (masks / f"{name}.png").unlink()
    add_labels(data, given, masks=masks)
    label = np.asarray(Image.open(data / "train_labeled" / "masks" / f"{unlabeled[0].stem}.png"))
    assert label.shape == (32, 32) and (label == 255).all()  # resized like its image
    assert read_info(data).chosen_by == ["by hand"]  # not suggest's output, no reason given


def test_a_tiled_set_gets_its_source_images_back_and_their_tiles_labeled(tmp_path):
    data = prepared_from_sources(tmp_path, tile=True)
    out = suggested(data, tmp_path, k=2)
    picks = pngs(out / "images")
    assert all(image.shape[:2] == (48, 64) for image in picks.values())  # not tiles
    masks = pngs(out / "masks")
    add_labels(data, out / "images", annotations=out / "coco.json")
    for stem, mask in masks.items():
        tiles = sorted((data / "train_labeled" / "masks").glob(f"{stem}__*.png"))
        assert len(tiles) >= 2
        for tile in tiles:
            y, x = (int(v[1:]) for v in tile.stem.split("__")[1].split("_"))
            assert np.array_equal(np.asarray(Image.open(tile)), mask[y : y + 32, x : x + 32])
    assert not list((data / "train_unlabeled" / "images").glob(f"{next(iter(masks))}__*"))


def test_bad_annotations_name_their_file_and_change_nothing(tmp_path, capsys):
    data = prepared_from_sources(tmp_path, tile=False)
    out = suggested(data, tmp_path, k=2)
    doc = json.loads((out / "coco.json").read_text())
    before = tree_digest(data)
    doc["categories"][0]["name"] = "giraffe"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["prepare", "add", "--data", str(data), "--images", str(out / "images"),
                 "--annotations", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: classes ['giraffe'] are not classes of the data set" in err
    other = json.loads((out / "coco.json").read_text())
    other["images"][0]["file_name"] = "elsewhere.png"
    bad.write_text(json.dumps(other))
    with pytest.raises(DataError, match="annotates elsewhere.png, which is not in the --images"):
        add_labels(data, out / "images", annotations=bad)
    with pytest.raises(ConfigError):
        add_labels(data, out / "images")
    assert tree_digest(data) == before
    assert any(c["name"] == UNCERTAIN for c in json.loads((out / "coco.json").read_text())[
        "categories"])


def test_a_failed_write_leaves_the_set_as_it_was(tmp_path, monkeypatch):
    data = prepared_from_sources(tmp_path, tile=False)
    out = suggested(data, tmp_path, k=2)
    before = tree_digest(data)
    calls = []

    def fail_second(path, array):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        Path(path).write_bytes(b"x")

    monkeypatch.setattr(add_module, "write_png", fail_second)
    with pytest.raises(StorageError):
        add_labels(data, out / "images", masks=out / "masks")
    assert tree_digest(data) == before
    assert not [p for p in data.iterdir() if p.name.startswith(".imseg-partial")]


def test_a_run_of_the_earlier_version_refuses_to_resume_on_the_new_one(binary_data, tmp_path,
                                                                       capsys):
    data = tmp_path / "data"
    shutil.copytree(binary_data, data)
    train = ["train", "--data", str(data), "--benchmark", "ldt", "--candidates", "1",
             "--epochs", "1", "--alpha", "0.25", "--batch-size", "8", "--device", "cpu",
             "--no-progress"]
    assert main([*train, "--out", str(tmp_path / "v1")]) == 0
    out = suggested(data, tmp_path, k=2)
    add_labels(data, out / "images", masks=out / "masks")
    capsys.readouterr()
    assert main([*train, "--out", str(tmp_path / "v1")]) == 2
    assert "data:" in capsys.readouterr().err  # the usual refusal, naming the data
    assert main([*train, "--out", str(tmp_path / "v2")]) == 0
    rows = (tmp_path / "v2" / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    pairs = int(rows[1].split(",")[header.index("n_train_pairs")])
    assert pairs == read_info(data).counts["train_labeled"]


def test_void_regions_of_a_correction_are_void_in_the_set(tmp_path):
    data = prepared_from_sources(tmp_path, tile=False)  # binary: void is 128 on disk
    out = suggested(data, tmp_path, k=1)
    (doc_path,) = (out / "labelme").glob("*.json")
    doc = json.loads(doc_path.read_text())
    doc["shapes"].append({"label": "__ignore__", "shape_type": "polygon",
                          "points": [[0, 0], [8, 0], [8, 4], [0, 4]]})
    doc_path.write_text(json.dumps(doc))
    add_labels(data, out / "images", annotations=out / "labelme")
    label = np.asarray(Image.open(data / "train_labeled" / "masks" / f"{doc_path.stem}.png"))
    assert (label[:4, :8] == 128).all() and not (label[4:] == 128).any()
    assert read_info(data).extra["history"][-1]["labels"] == str((out / "labelme").resolve())


def test_a_mask_left_at_the_target_is_replaced_in_the_copy_not_in_the_live_set(tmp_path,
                                                                              monkeypatch):
    data = prepared_from_sources(tmp_path, tile=False)
    stem = sorted((data / "train_unlabeled" / "images").glob("*.png"))[0].stem
    orphan = data / "train_labeled" / "masks" / f"{stem}.png"  # a mask without its image
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(orphan)
    kept = orphan.read_bytes()
    given, masks = tmp_path / "given", tmp_path / "given_masks"
    given.mkdir()
    masks.mkdir()
    shutil.copy(data / "train_unlabeled" / "images" / f"{stem}.png", given / "pick.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(masks / "pick.png")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(add_module, "record_addition", fail)
    with pytest.raises(OSError):
        add_labels(data, given, masks=masks)
    assert orphan.read_bytes() == kept  # the live set's file was not written through a link
    monkeypatch.undo()
    add_labels(data, given, masks=masks)
    assert (np.asarray(Image.open(orphan)) == 255).all()


def test_a_name_taken_in_the_labeled_split_is_refused_with_the_other_problems(tmp_path):
    data = prepared_from_sources(tmp_path, tile=False)
    stem = sorted((data / "train_unlabeled" / "images").glob("*.png"))[0].stem
    taken = data / "train_labeled" / "images" / f"{stem}.png"
    noise = np.random.default_rng(7).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(taken)  # another image under the same name
    given, masks = tmp_path / "given", tmp_path / "given_masks"
    given.mkdir()
    masks.mkdir()
    shutil.copy(data / "train_unlabeled" / "images" / f"{stem}.png", given / "pick.png")
    Image.fromarray(np.random.default_rng(8).integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    ).save(given / "noise.png")
    for name in ("pick", "noise"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / f"{name}.png")
    before = tree_digest(data)
    with pytest.raises(DataError) as caught:
        add_labels(data, given, masks=masks)
    message = str(caught.value)
    assert f"pick.png: the labeled split already has {taken}" in message
    assert "noise.png: not an image of" in message
    assert tree_digest(data) == before
