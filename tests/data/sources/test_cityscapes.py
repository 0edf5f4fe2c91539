"""Cityscapes source: fake leftImg8bit/gtFine downloads, labelIds and train ids."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from imseg.data.dataset import load_dataset, load_split
from imseg.data.sources import cityscapes
from imseg.data.sources._common import split_fraction
from imseg.data.sources.cityscapes import LABELS, TRAIN_LABELS, prepare_cityscapes, scaled_size
from imseg.errors import DataError
from imseg.tasks import VOID

FRAMES = {
    "train": [("aachen", i) for i in range(6)] + [("bochum", i) for i in range(4)],
    "val": [("frankfurt", i) for i in range(5)],
}
# Top half of every mask: four 40-px quarters of labelIds 0 (unlabeled), 7 (road),
# 26 (car), 1 (ego vehicle); at 160 → 32 columns each quarter keeps 8 columns.
QUARTERS = [0, 7, 26, 1]


def key(city: str, i: int) -> str:
    return f"{city}_{i:06d}_{19 + i:06d}"


def bottom_id(k: str) -> int:
    """The labelId of a frame's bottom half: tells the frames' masks apart (21..33)."""
    return 21 + (int(k.split("_")[1]) + len(k.split("_")[0])) % 13


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def fake_files(
    size: tuple[int, int], drop_mask: str | None, bad_value: str | None
) -> dict[str, dict[str, bytes]]:
    """{"leftImg8bit": {rel: bytes}, "gtFine": {rel: bytes}} of the train and val splits."""
    h, w = size
    images: dict[str, bytes] = {"test/berlin/berlin_000000_000019_leftImg8bit.png": png(
        np.zeros((h, w, 3), np.uint8))}  # official test: no public masks, not used
    masks: dict[str, bytes] = {}
    for split, frames in FRAMES.items():
        for city, i in frames:
            k = key(city, i)
            image = np.zeros((h, w, 3), np.uint8)
            image[...] = (10 * i, len(city) * 10, 200)
            images[f"{split}/{city}/{k}_leftImg8bit.png"] = png(image)
            mask = np.full((h, w), bottom_id(k), np.uint8)
            for q, label_id in enumerate(QUARTERS):
                mask[: h // 2, q * w // 4 : (q + 1) * w // 4] = label_id
            if k == bad_value:
                mask[0, 0] = 40
            prefix = f"{split}/{city}/{k}_gtFine_"
            if k != drop_mask:
                masks[prefix + "labelIds.png"] = png(mask)
            masks[prefix + "color.png"] = png(np.zeros((h, w, 3), np.uint8))
            masks[prefix + "polygons.json"] = b"{}"
    return {"leftImg8bit": images, "gtFine": masks}


def make_download(
    root: Path,
    as_zip: bool = False,
    size: tuple[int, int] = (80, 160),
    skip: str | None = None,
    drop_mask: str | None = None,
    bad_value: str | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for part, files in fake_files(size, drop_mask, bad_value).items():
        if part == skip:
            continue
        if as_zip:
            with zipfile.ZipFile(root / f"{part}_trainvaltest.zip", "w") as zf:
                zf.writestr("license.txt", b"cityscapes licence")
                for rel, data in files.items():
                    zf.writestr(f"{part}/{rel}", data)
        else:
            for rel, data in files.items():
                path = root / part / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return root


def stems(out: Path, split: str) -> list[str]:
    return sorted(p.stem for p in (out / split / "images").glob("*.png"))


def official(split: str) -> list[str]:
    return sorted(key(c, i) for c, i in FRAMES[split])


def test_label_ids_layout_yaml_and_masks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    info = prepare_cityscapes(make_download(tmp_path / "src"), out)

    data = yaml.safe_load((out / "dataset.yaml").read_text())
    assert data["task"] == "multiclass" and data["rotate"] is False
    assert len(data["classes"]) == 34 and data["classes"][0] == "unlabeled"
    assert data["classes"][26] == "car" and data["colors"][26] == [0, 0, 142]
    assert data["classes"][33] == "bicycle" and data["colors"][7] == [128, 64, 128]
    assert data["image_size"] == [16, 32]  # 80×160 × 0.2
    # train 10 → 1 / 9; official val 5 → val 5 - ceil(2.5) = 2, test 3
    expected = {"train_labeled": 1, "train_unlabeled": 9, "val": 2, "test": 3}
    assert data["counts"] == expected == info.counts
    assert sorted(stems(out, "train_labeled") + stems(out, "train_unlabeled")) == official("train")
    assert sorted(stems(out, "val") + stems(out, "test")) == official("val")

    for split in expected:
        for stem in stems(out, split):
            mask = np.asarray(Image.open(out / split / "masks" / f"{stem}.png"))
            assert mask.shape == (16, 32)
            want = np.repeat(np.array(QUARTERS, np.uint8), 8)
            assert (mask[:8] == want).all() and (mask[8:] == bottom_id(stem)).all(), stem
            image = np.asarray(Image.open(out / split / "images" / f"{stem}.png"))
            assert image.shape == (16, 32, 3)
            i, city = int(stem.split("_")[1]), stem.split("_")[0]
            assert (image == (10 * i, len(city) * 10, 200)).all()

    # in memory every class moves up by one: labelId 0 is class 1, not the IM class 0
    test = load_split(out, "test")
    assert test.labels is not None
    assert test.labels[:, 0, 0, ::8].tolist() == [[1, 8, 27, 2]] * 3
    dataset = load_dataset(out)
    assert dataset.task.out_channels == 35


def test_train_ids_map_and_void(tmp_path: Path) -> None:
    out = tmp_path / "out"
    info = prepare_cityscapes(make_download(tmp_path / "src"), out, train_ids=True)
    assert len(info.classes) == 19 and info.classes[0] == "road" and info.classes[13] == "car"
    assert info.colors[18] == (119, 11, 32) and info.extra["labels"] == "trainIds"
    mask = np.asarray(Image.open(out / "val" / "masks" / f"{stems(out, 'val')[0]}.png"))
    # unlabeled → void, road → 0, car → 13, ego vehicle → void
    assert mask[0, ::8].tolist() == [255, 0, 13, 255]
    val = load_split(out, "val")
    assert val.labels is not None and val.labels[0, 0, 0, ::8].tolist() == [VOID, 1, 14, VOID]
    for stem, label in zip(val.stems, val.labels, strict=True):
        train_id = LABELS[bottom_id(stem)].train_id  # 21..33: 255 for caravan, trailer
        assert label[0, -1, 0] == (VOID if train_id == 255 else train_id + 1)


def test_train_label_table() -> None:
    assert [lab.train_id for lab in TRAIN_LABELS] == list(range(19))
    assert [lab.label_id for lab in LABELS] == list(range(34))
    names = [lab.name for lab in TRAIN_LABELS]
    assert names[:3] == ["road", "sidewalk", "building"] and names[-1] == "bicycle"


def test_zips_give_the_same_data_set(tmp_path: Path) -> None:
    a = prepare_cityscapes(make_download(tmp_path / "a"), tmp_path / "oa", limit=4)
    b = prepare_cityscapes(make_download(tmp_path / "b", as_zip=True), tmp_path / "ob", limit=4)
    assert not any(p.is_dir() for p in (tmp_path / "b").iterdir())
    assert a.counts == b.counts == {"train_labeled": 1, "train_unlabeled": 3, "val": 2, "test": 2}
    for split in a.counts:
        x, y = load_split(tmp_path / "oa", split), load_split(tmp_path / "ob", split)
        assert x.stems == y.stems
        assert (x.images == y.images).all() and (x.labels == y.labels).all()


def test_split_depends_on_seed_only(tmp_path: Path) -> None:
    source = make_download(tmp_path / "src")
    runs = {
        name: prepare_cityscapes(source, tmp_path / name, labeled_fraction=0.3, seed=seed)
        for name, seed in (("a", 42), ("b", 42), ("c", 1))
    }
    assert runs["a"].counts["train_labeled"] == 3
    parts = {n: [stems(tmp_path / n, s) for s in ("train_labeled", "val")] for n in runs}
    assert parts["a"] == parts["b"]
    assert parts["a"] != parts["c"]


def test_limit_takes_the_first_frames(tmp_path: Path) -> None:
    out = tmp_path / "out"
    info = prepare_cityscapes(make_download(tmp_path / "src"), out, limit=3)
    assert info.counts == {"train_labeled": 1, "train_unlabeled": 2, "val": 1, "test": 2}
    got = stems(out, "train_labeled") + stems(out, "train_unlabeled")
    assert sorted(got) == official("train")[:3]


def test_sizes_are_multiples_of_16(tmp_path: Path) -> None:
    assert scaled_size(1024, 2048, 0.2) == (208, 416)  # the paper's size
    assert scaled_size(1024, 2048, 0.25) == (256, 512)
    assert scaled_size(1024, 2048, 0.3) == (320, 624)  # 307.2, 614.4 rounded up
    assert scaled_size(80, 160, 0.2) == (16, 32)
    info = prepare_cityscapes(make_download(tmp_path / "src", size=(90, 170)), tmp_path / "o",
                              limit=2)
    assert info.image_size == (32, 48)  # 18 → 32, 34 → 48
    for split in info.counts:
        loaded = load_split(tmp_path / "o", split)
        assert loaded.images.shape[1:] == (3, 32, 48) and loaded.labels is not None
        assert loaded.labels.shape[1:] == (1, 32, 48)


def test_paper_counts() -> None:
    train = split_fraction([f"t{i}" for i in range(2975)], 0.1, 42, "labeled", "unlabeled")
    assert (len(train["labeled"]), len(train["unlabeled"])) == (297, 2678)
    val = split_fraction([f"v{i}" for i in range(500)], 0.5, 42, "val", "test")
    assert (len(val["val"]), len(val["test"])) == (250, 250)


@pytest.mark.parametrize("as_zip", [False, True])
def test_missing_part_names_folder_and_zip(tmp_path: Path, as_zip: bool) -> None:
    source = make_download(tmp_path / "src", as_zip=as_zip, skip="gtFine")
    with pytest.raises(DataError) as err:
        prepare_cityscapes(source, tmp_path / "out")
    assert str(source / "gtFine") in str(err.value)
    assert "gtFine_trainvaltest.zip" in str(err.value)


def test_missing_split_is_named(tmp_path: Path) -> None:
    source = make_download(tmp_path / "src")
    for path in sorted((source / "leftImg8bit" / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(DataError, match=r"leftImg8bit/val"):
        prepare_cityscapes(source, tmp_path / "out")


@pytest.mark.parametrize("as_zip", [False, True])
def test_image_without_mask_names_the_file(tmp_path: Path, as_zip: bool) -> None:
    frame = key("bochum", 2)
    source = make_download(tmp_path / "src", as_zip=as_zip, drop_mask=frame)
    with pytest.raises(DataError, match=rf"{frame}_leftImg8bit\.png.*{frame}_gtFine_labelIds"):
        prepare_cityscapes(source, tmp_path / "out")


def test_value_outside_label_ids_names_the_mask(tmp_path: Path) -> None:
    frame = key("aachen", 1)
    source = make_download(tmp_path / "src", bad_value=frame)
    with pytest.raises(DataError, match=rf"{frame}_gtFine_labelIds\.png: values \[40\]"):
        prepare_cityscapes(source, tmp_path / "out")


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_download(tmp_path / "src", as_zip=True)
    parser = argparse.ArgumentParser()
    cityscapes.register(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(
        ["cityscapes", "--source", str(source), "--out", str(out), "--train-ids",
         "--limit", "4", "--seed", "7"]
    )
    assert args.func(args) == 0
    assert "19 classes" in capsys.readouterr().out
    data = yaml.safe_load((out / "dataset.yaml").read_text())
    assert data["seed"] == 7 and data["extra"]["labels"] == "trainIds"
